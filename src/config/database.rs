//! `database:provider` and its connection setting, for the main store and for `transferTo`.

use std::path::PathBuf;

use super::catalog::{
    DATABASE_JSON_FILE_PATH, DATABASE_MYSQL_CONNECTION_STRING,
    DATABASE_POSTGRESQL_CONNECTION_STRING, DATABASE_PROVIDER, DATABASE_SQLITE_CONNECTION_STRING,
    DATABASE_SQLSERVER_CONNECTION_STRING, SettingValues,
};
use super::connection_string::ConnectionString;
use super::setting_path::{SettingPath, SettingsGroup};
use super::sql_connection;
use super::{ConfigError, DatabaseSettings, SqlConnection, SqlDialect, SqliteConnection};

/// The names `database:provider` accepts, for messages.
pub(crate) const DATABASE_PROVIDERS: &str = "sqlite, json, postgresql, mysql or sqlserver";

/// `database:provider` (in `group`) and its connection setting; `None` if no provider is set.
pub(crate) fn database_settings(
    values: &SettingValues,
    group: SettingsGroup,
) -> Result<Option<DatabaseSettings>, ConfigError> {
    let at = |path: SettingPath| path.in_group(group);
    let Some(provider) = values.setting(at(DATABASE_PROVIDER)) else {
        return Ok(None);
    };
    let sql =
        |key: SettingPath, dialect: SqlDialect, what: &str| -> Result<SqlConnection, ConfigError> {
            let text = values.require_setting(at(key), what)?;
            sql_connection::parse(dialect, text)
                .map_err(|message| ConfigError::at(at(key), message))
        };
    let settings = match provider.trim().to_ascii_lowercase().as_str() {
        "json" => DatabaseSettings::Json {
            path: PathBuf::from(
                values.require_setting(at(DATABASE_JSON_FILE_PATH), "the JSON document's path")?,
            ),
        },
        "sqlite" => {
            let text = values.require_setting(
                at(DATABASE_SQLITE_CONNECTION_STRING),
                "e.g. `Data Source=/etc/bitwarden/keys.db`",
            )?;
            DatabaseSettings::Sqlite {
                connection: parse_sqlite_connection_string(text).map_err(|message| {
                    ConfigError::at(at(DATABASE_SQLITE_CONNECTION_STRING), message)
                })?,
            }
        }
        "postgresql" => DatabaseSettings::PostgreSql {
            connection: sql(
                DATABASE_POSTGRESQL_CONNECTION_STRING,
                SqlDialect::PostgreSql,
                "an Npgsql connection string, e.g. `Host=db;Port=5432;Database=keyconnector;Username=kc;Password=...`",
            )?,
        },
        "mysql" => DatabaseSettings::MySql {
            connection: sql(
                DATABASE_MYSQL_CONNECTION_STRING,
                SqlDialect::MySql,
                "a MySqlConnector connection string, e.g. `Server=db;Port=3306;Database=keyconnector;Uid=kc;Pwd=...`",
            )?,
        },
        "sqlserver" => DatabaseSettings::SqlServer {
            connection: sql(
                DATABASE_SQLSERVER_CONNECTION_STRING,
                SqlDialect::SqlServer,
                "a SqlClient connection string, e.g. `Server=tcp:db,1433;Database=keyconnector;User Id=kc;Password=...`",
            )?,
        },
        "mongo" => {
            return Err(ConfigError::at(
                at(DATABASE_PROVIDER),
                "MongoDB is no longer a supported database provider for Key Connector (upstream removed it too). \
                 Migrate your data to sqlserver, postgresql, mysql or sqlite and change this setting",
            ));
        }
        _ => {
            return Err(ConfigError::at(
                at(DATABASE_PROVIDER),
                format!("is not a database provider; use {DATABASE_PROVIDERS}"),
            ));
        }
    };
    Ok(Some(settings))
}

impl DatabaseSettings {
    /// A database of the same provider as `self` at the place `text` names, parsed as that
    /// provider's setting is: a file path for `json`; a connection string or a bare file
    /// path for `sqlite`; the server's connection string otherwise. For checking a copy (a
    /// backup, a restored dump) with the configured provider; the message says what is wrong
    /// with `text`.
    pub fn same_provider_at(&self, text: &str) -> Result<DatabaseSettings, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        let sql = |dialect| sql_connection::parse(dialect, text);
        Ok(match self {
            DatabaseSettings::Json { .. } => DatabaseSettings::Json {
                path: PathBuf::from(text),
            },
            DatabaseSettings::Sqlite { .. } => DatabaseSettings::Sqlite {
                connection: if text.contains('=') {
                    parse_sqlite_connection_string(text)?
                } else {
                    SqliteConnection {
                        path: PathBuf::from(text),
                        read_only: true,
                    }
                },
            },
            DatabaseSettings::PostgreSql { .. } => DatabaseSettings::PostgreSql {
                connection: sql(SqlDialect::PostgreSql)?,
            },
            DatabaseSettings::MySql { .. } => DatabaseSettings::MySql {
                connection: sql(SqlDialect::MySql)?,
            },
            DatabaseSettings::SqlServer { .. } => DatabaseSettings::SqlServer {
                connection: sql(SqlDialect::SqlServer)?,
            },
        })
    }

    /// The same file store with its file at `path` (read-only for SQLite); `None` for the
    /// SQL servers.
    pub fn file_copy_at(&self, path: &std::path::Path) -> Option<DatabaseSettings> {
        match self {
            DatabaseSettings::Json { .. } => Some(DatabaseSettings::Json {
                path: path.to_path_buf(),
            }),
            DatabaseSettings::Sqlite { .. } => Some(DatabaseSettings::Sqlite {
                connection: SqliteConnection {
                    path: path.to_path_buf(),
                    read_only: true,
                },
            }),
            _ => None,
        }
    }

    /// The file holding the whole store, for the providers that keep it in one file.
    pub fn file_path(&self) -> Option<&std::path::Path> {
        match self {
            DatabaseSettings::Json { path } => Some(path),
            DatabaseSettings::Sqlite { connection } => Some(&connection.path),
            _ => None,
        }
    }
}

/// Microsoft.Data.Sqlite's keywords.
pub(super) fn parse_sqlite_connection_string(text: &str) -> Result<SqliteConnection, String> {
    let parsed = ConnectionString::parse(text)?;
    for (index, keyword) in parsed.keywords().enumerate() {
        match keyword {
            "data source" | "datasource" | "filename" | "mode" | "cache" | "foreign keys"
            | "pooling" | "default timeout" | "command timeout" | "recursive triggers" => {}
            "password" => {
                return Err("`Password` (SQLCipher encryption) is not supported; keys are already encrypted at rest".into());
            }
            // Not repeated: an unknown keyword may be a piece of a value holding a `;`.
            _ => {
                return Err(format!(
                    "part {} has a keyword that is not supported{}",
                    index + 1,
                    super::connection_string::QUOTE_HINT
                ));
            }
        }
    }
    let path = parsed
        .get(&["data source", "datasource", "filename"])
        .filter(|p| !p.is_empty())
        .ok_or("`Data Source` is missing")?;
    if path == ":memory:" || path.starts_with("file::memory:") {
        return Err("an in-memory database would lose every key at restart; use a file".into());
    }
    let read_only = match parsed
        .get(&["mode"])
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("readwritecreate" | "readwrite") => false,
        Some("readonly") => true,
        Some("memory") => {
            return Err("`Mode=Memory` would lose every key at restart; use a file".into());
        }
        Some(_) => {
            return Err(
                "`Mode` is not a mode; use ReadWriteCreate, ReadWrite or ReadOnly".to_string(),
            );
        }
    };
    Ok(SqliteConnection {
        path: PathBuf::from(path),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::parse_sqlite_connection_string;

    #[test]
    fn sqlite_connection_strings_parse_like_microsoft_data_sqlite() {
        let parse = |s: &str| parse_sqlite_connection_string(s).unwrap();
        assert_eq!(parse("Data Source=/a/b.db").path, Path::new("/a/b.db"));
        assert_eq!(
            parse("datasource='/a/my keys.db';Cache=Shared").path,
            Path::new("/a/my keys.db")
        );
        assert_eq!(parse("Filename=x.db").path, Path::new("x.db"));
        assert!(parse("Data Source=x.db;Mode=ReadOnly").read_only);
        assert!(!parse("Data Source=x.db;Mode=ReadWriteCreate;Foreign Keys=True").read_only);
    }
}
