//! Connection strings of the SQL server stores, in the .NET forms operators already have.
//!
//! Upstream hands `postgreSqlConnectionString` to Npgsql, `mySqlConnectionString` to
//! MySqlConnector and `sqlServerConnectionString` to Microsoft.Data.SqlClient. Each driver has
//! its own keywords (and aliases); this module reads each dialect into one neutral
//! [`SqlConnection`] that the stores turn into driver options.
//!
//! Keywords are case-insensitive and spaces inside them do not matter (`User Id`, `UserID`).
//! A keyword that changes how we would authenticate or where data goes and that we cannot
//! honour (`Integrated Security`, Kerberos, ...) is refused with a message naming it; a
//! keyword that only tunes the .NET driver is accepted and reported as ignored, so a string
//! that works with the official container also starts this one.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::connection_string::ConnectionString;

mod keywords;

use keywords::{Meaning, table};

/// How long opening a connection may take unless the string says (`Timeout`,
/// `Connect Timeout`). Shorter than the .NET drivers' 15 s so that a request during an outage
/// is answered within about 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one store operation (waiting for a pooled connection included) may take unless
/// the string says (`Command Timeout`).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections per instance unless the string says (`Maximum Pool Size`).
pub const DEFAULT_MAX_POOL_SIZE: u32 = 10;

/// Where the database server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlEndpoint {
    Tcp {
        host: String,
        /// `None`: the driver's default port.
        port: Option<u16>,
        /// SQL Server named instance (`host\instance`), found through the SQL Browser.
        instance: Option<String>,
    },
    /// A Unix-domain socket (Npgsql: a `Host` that is a directory; MySqlConnector:
    /// `Protocol=Unix` with the socket path as `Server`).
    Socket(PathBuf),
}

/// Whether and how the connection is encrypted, in libpq's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlTlsMode {
    /// Never.
    Disable,
    /// If the server offers it, without checking its certificate.
    Prefer,
    /// Always, without checking the certificate.
    Require,
    /// Always, the certificate must chain to a trusted root.
    VerifyCa,
    /// Always, chain and host name checked.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTls {
    pub mode: SqlTlsMode,
    /// A PEM file of the roots to trust instead of the built-in ones.
    pub root_certificate: Option<PathBuf>,
    /// Client certificate and key (PEM), when the server asks for one.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlPool {
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// A SQL server connection string, read.
#[derive(Debug, Clone)]
pub struct SqlConnection {
    pub endpoint: SqlEndpoint,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub tls: SqlTls,
    pub pool: SqlPool,
    pub application_name: Option<String>,
    /// Keywords accepted but not acted on, to be logged when the store opens.
    pub warnings: Vec<String>,
}

/// Which driver's keywords the string is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    /// Npgsql (`postgreSqlConnectionString`).
    PostgreSql,
    /// MySqlConnector (`mySqlConnectionString`).
    MySql,
    /// Microsoft.Data.SqlClient (`sqlServerConnectionString`).
    SqlServer,
}

fn compact(keyword: &str) -> String {
    keyword
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Reads `text` as `dialect`'s connection string. Errors never contain values.
pub fn parse(dialect: SqlDialect, text: &str) -> Result<SqlConnection, String> {
    let parsed = ConnectionString::parse(text)?;
    let mut values: Vec<(Meaning, &str, &str)> = Vec::new();
    let mut warnings = Vec::new();
    for (index, (keyword, value)) in parsed.pairs().enumerate() {
        let key = compact(keyword);
        let Some(entry) = table(dialect)
            .iter()
            .find(|k| k.names.contains(&key.as_str()))
        else {
            // Not repeated: an unknown "keyword" is most often a piece of a value that held
            // an unquoted `;`, such as a password.
            warnings.push(format!(
                "part {} of the connection string has a keyword that is not known and is ignored{}",
                index + 1,
                super::connection_string::QUOTE_HINT
            ));
            continue;
        };
        match entry.meaning {
            // `Integrated Security=false` asks for nothing.
            Meaning::Refused(_) if is_false(value) => {}
            Meaning::Refused(reason) => return Err(format!("`{keyword}`: {reason}")),
            Meaning::Ignored => warnings.push(format!(
                "connection string keyword `{keyword}` only tunes the .NET driver and is ignored"
            )),
            meaning => values.push((meaning, keyword, value)),
        }
    }
    // The last occurrence wins, as in .NET.
    let find = |wanted: fn(&Meaning) -> bool| {
        values
            .iter()
            .rev()
            .find(|(m, _, _)| wanted(m))
            .map(|(_, k, v)| (*k, *v))
    };

    let (host_keyword, host_text) = find(|m| matches!(m, Meaning::Host))
        .ok_or_else(|| "has no server: add `Host=` (or `Server=`)".to_string())?;
    let port = match find(|m| matches!(m, Meaning::Port)) {
        Some((keyword, value)) => Some(parse_port(keyword, value)?),
        None => None,
    };
    let unix_protocol = match find(|m| matches!(m, Meaning::Protocol)) {
        Some((keyword, value)) => match compact(value).as_str() {
            "socket" | "tcp" | "tcpip" => false,
            "unix" | "unixsocket" => true,
            _ => {
                return Err(format!(
                    "`{keyword}`: only `Tcp` and `Unix` are supported (named pipes and shared memory need Windows)"
                ));
            }
        },
        None => false,
    };
    let endpoint = endpoint(dialect, host_keyword, host_text, port, unix_protocol)?;

    let database = match find(|m| matches!(m, Meaning::Database)) {
        Some((_, value)) if !value.is_empty() => value.to_owned(),
        _ => return Err("has no database: add `Database=`".to_string()),
    };
    let user = find(|m| matches!(m, Meaning::User)).map(|(_, v)| v.to_owned());
    let password = find(|m| matches!(m, Meaning::Password)).map(|(_, v)| SecretString::from(v));
    if user.is_none() && dialect != SqlDialect::PostgreSql {
        return Err("has no user: add `User Id=` (and `Password=`)".to_string());
    }
    if user.is_none() && matches!(endpoint, SqlEndpoint::Tcp { .. }) {
        return Err("has no user: add `Username=` (and `Password=`)".to_string());
    }

    if let Some((keyword, value)) = find(|m| matches!(m, Meaning::GuidFormat))
        && !matches!(compact(value).as_str(), "default" | "char36")
    {
        return Err(format!(
            "`{keyword}`: upstream's MySQL schema stores GUIDs as char(36); only `Char36` (or `Default`) is supported"
        ));
    }

    let mode = match dialect {
        SqlDialect::PostgreSql | SqlDialect::MySql => match find(|m| matches!(m, Meaning::TlsMode))
        {
            None => SqlTlsMode::Prefer,
            Some((keyword, value)) => match compact(value).replace(['-', '_'], "").as_str() {
                "disable" | "disabled" | "none" => SqlTlsMode::Disable,
                "allow" | "prefer" | "preferred" => SqlTlsMode::Prefer,
                "require" | "required" => SqlTlsMode::Require,
                "verifyca" => SqlTlsMode::VerifyCa,
                "verifyfull" => SqlTlsMode::VerifyFull,
                _ => {
                    return Err(format!(
                        "`{keyword}` must be one of Disable, Prefer, Require, VerifyCA, VerifyFull"
                    ));
                }
            },
        },
        // Microsoft.Data.SqlClient encrypts and checks the certificate unless told otherwise.
        SqlDialect::SqlServer => {
            let encrypt = match find(|m| matches!(m, Meaning::Encrypt)) {
                None => true,
                Some((keyword, value)) => match compact(value).as_str() {
                    "true" | "yes" | "mandatory" => true,
                    "false" | "no" | "optional" => false,
                    "strict" => {
                        return Err(format!(
                            "`{keyword}=Strict` (TDS 8) is not supported; use `Encrypt=Mandatory`"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "`{keyword}` must be true, false, mandatory or optional"
                        ));
                    }
                },
            };
            let trust = match find(|m| matches!(m, Meaning::TrustServerCertificate)) {
                Some((keyword, value)) => parse_bool(keyword, value)?,
                None => false,
            };
            match (encrypt, trust) {
                (false, _) => SqlTlsMode::Prefer,
                (true, true) => SqlTlsMode::Require,
                (true, false) => SqlTlsMode::VerifyFull,
            }
        }
    };
    let path = |wanted: fn(&Meaning) -> bool| {
        find(wanted)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let tls = SqlTls {
        mode,
        root_certificate: path(|m| matches!(m, Meaning::RootCertificate)),
        client_certificate: path(|m| matches!(m, Meaning::ClientCertificate)),
        client_key: path(|m| matches!(m, Meaning::ClientKey)),
    };
    if tls.client_certificate.is_some() != tls.client_key.is_some() {
        return Err("a client certificate needs both the certificate and the key file".to_string());
    }

    let seconds = |keyword: &str, value: &str| -> Result<Duration, String> {
        match value.trim().parse::<u64>() {
            Ok(0) => Err(format!(
                "`{keyword}` must be at least 1 second (0 would mean wait forever)"
            )),
            Ok(s) if s <= 3600 => Ok(Duration::from_secs(s)),
            _ => Err(format!(
                "`{keyword}` must be a number of seconds between 1 and 3600"
            )),
        }
    };
    let count = |keyword: &str, value: &str| -> Result<u32, String> {
        value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| format!("`{keyword}` must be a whole number between 0 and 1000"))
    };
    let mut pool = SqlPool {
        max_connections: DEFAULT_MAX_POOL_SIZE,
        min_connections: 0,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        command_timeout: DEFAULT_COMMAND_TIMEOUT,
    };
    if let Some((k, v)) = find(|m| matches!(m, Meaning::ConnectTimeout)) {
        pool.connect_timeout = seconds(k, v)?;
    }
    if let Some((k, v)) = find(|m| matches!(m, Meaning::CommandTimeout)) {
        pool.command_timeout = seconds(k, v)?;
    }
    if let Some((k, v)) = find(|m| matches!(m, Meaning::MaxPoolSize)) {
        pool.max_connections = count(k, v)?;
        if pool.max_connections == 0 {
            return Err(format!("`{k}` must be at least 1"));
        }
    }
    if let Some((k, v)) = find(|m| matches!(m, Meaning::MinPoolSize)) {
        pool.min_connections = count(k, v)?;
    }
    if pool.min_connections > pool.max_connections {
        return Err("the minimum pool size is larger than the maximum pool size".to_string());
    }
    if let Some((k, v)) = find(|m| matches!(m, Meaning::Pooling))
        && !parse_bool(k, v)?
    {
        warnings.push(format!(
            "`{k}=false` is ignored: connections are always pooled (at most {} per instance)",
            pool.max_connections
        ));
    }
    let application_name =
        find(|m| matches!(m, Meaning::ApplicationName)).map(|(_, v)| v.to_owned());

    Ok(SqlConnection {
        endpoint,
        database,
        user,
        password,
        tls,
        pool,
        application_name,
        warnings,
    })
}

fn parse_port(keyword: &str, value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{keyword}` must be a port number between 1 and 65535"))
}

fn endpoint(
    dialect: SqlDialect,
    keyword: &str,
    text: &str,
    port: Option<u16>,
    unix_protocol: bool,
) -> Result<SqlEndpoint, String> {
    let text = text.trim();
    if text.contains(',') && dialect != SqlDialect::SqlServer {
        return Err(format!(
            "`{keyword}` lists several hosts; only one is supported: point it at the primary"
        ));
    }
    match dialect {
        SqlDialect::PostgreSql => {
            if text.starts_with('/') || text.starts_with('@') {
                return Ok(SqlEndpoint::Socket(PathBuf::from(text)));
            }
            // Npgsql also accepts `host:port`.
            let (host, inline_port) = split_host_port(keyword, text)?;
            Ok(SqlEndpoint::Tcp {
                host,
                port: port.or(inline_port),
                instance: None,
            })
        }
        SqlDialect::MySql => {
            if unix_protocol || text.starts_with('/') {
                return Ok(SqlEndpoint::Socket(PathBuf::from(text)));
            }
            if text.is_empty() {
                return Err(format!("`{keyword}` is empty"));
            }
            Ok(SqlEndpoint::Tcp {
                host: text.to_owned(),
                port,
                instance: None,
            })
        }
        SqlDialect::SqlServer => sql_server_endpoint(keyword, text),
    }
}

fn split_host_port(keyword: &str, text: &str) -> Result<(String, Option<u16>), String> {
    if text.is_empty() {
        return Err(format!("`{keyword}` is empty"));
    }
    // An IPv6 literal has several colons: only `[addr]:port` carries a port.
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{keyword}` has an unclosed `[`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(keyword, p)?),
            None if after.is_empty() => None,
            None => return Err(format!("`{keyword}` has text after `]`")),
        };
        return Ok((address.to_owned(), port));
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => {
            Ok((host.to_owned(), Some(parse_port(keyword, port)?)))
        }
        _ => Ok((text.to_owned(), None)),
    }
}

/// SqlClient's `Server`: `[tcp:]host[\instance][,port]`, with `.`, `(local)` and `localhost`
/// meaning this machine.
fn sql_server_endpoint(keyword: &str, text: &str) -> Result<SqlEndpoint, String> {
    let lower = text.to_ascii_lowercase();
    let text = if lower.starts_with("tcp:") {
        &text[4..]
    } else if lower.starts_with("np:") || lower.starts_with("lpc:") || lower.starts_with("admin:") {
        return Err(format!(
            "`{keyword}`: only TCP connections are supported (`tcp:host,port`), not named pipes or shared memory"
        ));
    } else {
        text
    };
    let (server, port) = match text.split_once(',') {
        Some((server, port)) => (server.trim(), Some(parse_port(keyword, port)?)),
        None => (text.trim(), None),
    };
    let (host, instance) = match server.split_once('\\') {
        Some((host, instance)) if !instance.is_empty() => (host, Some(instance.to_owned())),
        Some(_) => return Err(format!("`{keyword}` has an empty instance name after `\\`")),
        None => (server, None),
    };
    let host = match host.to_ascii_lowercase().as_str() {
        "" => return Err(format!("`{keyword}` is empty")),
        "." | "(local)" | "(localdb)" => "localhost".to_owned(),
        _ => host.to_owned(),
    };
    Ok(SqlEndpoint::Tcp {
        host,
        port,
        // A port given explicitly makes SqlClient skip the browser lookup.
        instance: if port.is_some() { None } else { instance },
    })
}

fn is_false(value: &str) -> bool {
    matches!(compact(value).as_str(), "false" | "no" | "0")
}

fn parse_bool(keyword: &str, value: &str) -> Result<bool, String> {
    match compact(value).as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("`{keyword}` must be `true` or `false`")),
    }
}

#[cfg(test)]
mod tests;
