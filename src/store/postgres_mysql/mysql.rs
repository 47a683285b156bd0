//! The MySQL/MariaDB dialect: upstream's EF Core (Pomelo) schema and a named lock.
//!
//! Tables, types and the `__EFMigrationsHistory` row are exactly what upstream's
//! `20210820155954_InitialCreate` migration creates: utf8mb4 tables, ids as lower-case
//! `char(36)` text with the case-insensitive `ascii_general_ci` collation, `longtext` keys,
//! `datetime(6)` dates holding UTC.
//!
//! Locks: MySQL commits DDL implicitly, so a transaction cannot make schema creation atomic.
//! Instead, schema creation and `ApplicationDatas` changes each run while holding the
//! server-wide named lock `GET_LOCK('bitwarden-key-connector-bootstrap')` on one connection,
//! so replicas starting together do each once; the lock is released with the connection if
//! this process dies.

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::{ConnectOptions, Connection, MySql, Transaction};
use uuid::Uuid;

use super::{DatabaseCreation, by_tls_mode, store_error};
use crate::config::SqlConnection;
use crate::config::sql_connection::SqlEndpoint;
use crate::store::StoreError;
use crate::store::schema::ColumnTypes;
use crate::store::sql::{BOOTSTRAP_LOCK_NAME, BOOTSTRAP_LOCK_WAIT, lock_not_granted};

pub const KIND: &str = "mysql";
pub const SERVER: &str = "MySQL";
const SETTING: &str = "keyConnectorSettings__database__mySqlConnectionString";

/// Upstream's MySQL migration.
pub const MIGRATION_ID: &str = "20210820155954_InitialCreate";

/// MySQL's ER_BAD_DB_ERROR.
const UNKNOWN_DATABASE: u16 = 1049;

/// The DDL Pomelo's EF Core provider generates for upstream's `InitialCreate`; the history
/// table comes first (alone, it is what recording the migration needs).
pub const CREATE_SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS `__EFMigrationsHistory` (
    `MigrationId` varchar(150) CHARACTER SET utf8mb4 NOT NULL,
    `ProductVersion` varchar(32) CHARACTER SET utf8mb4 NOT NULL,
    CONSTRAINT `PK___EFMigrationsHistory` PRIMARY KEY (`MigrationId`)
) CHARACTER SET=utf8mb4",
    "ALTER DATABASE CHARACTER SET utf8mb4",
    "CREATE TABLE `ApplicationDatas` (
    `Id` int NOT NULL AUTO_INCREMENT,
    `SymmetricKey` longtext CHARACTER SET utf8mb4 NULL,
    CONSTRAINT `PK_ApplicationDatas` PRIMARY KEY (`Id`)
) CHARACTER SET=utf8mb4",
    "CREATE TABLE `UserKeys` (
    `Id` char(36) COLLATE ascii_general_ci NOT NULL,
    `Key` longtext CHARACTER SET utf8mb4 NULL,
    `CreationDate` datetime(6) NOT NULL,
    `RevisionDate` datetime(6) NULL,
    `LastAccessDate` datetime(6) NULL,
    CONSTRAINT `PK_UserKeys` PRIMARY KEY (`Id`)
) CHARACTER SET=utf8mb4",
];

pub const LIST_TABLES: &str = "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() \
     AND TABLE_NAME IN ('ApplicationDatas', 'UserKeys', '__EFMigrationsHistory')";

/// A row when this service's recovery-wrap table exists.
pub const RECOVERY_WRAPS_EXIST: &str = "SELECT 1 FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'KeyConnectorRecoveryWraps'";

/// This service's own table of recovery wraps (not upstream's; created on the first write).
pub const CREATE_RECOVERY_WRAPS: &str = "CREATE TABLE IF NOT EXISTS `KeyConnectorRecoveryWraps` (
    `KeyCheck` varchar(64) CHARACTER SET ascii NOT NULL,
    `Fingerprint` varchar(64) CHARACTER SET ascii NOT NULL,
    `WrappedKey` longtext CHARACTER SET utf8mb4 NOT NULL,
    CONSTRAINT `PK_KeyConnectorRecoveryWraps` PRIMARY KEY (`KeyCheck`)
) CHARACTER SET=utf8mb4";

/// A row when this service's property table exists.
pub const PROPERTIES_EXIST: &str = "SELECT 1 FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'KeyConnectorProperties'";

/// This service's own table of properties (not upstream's; created on the first write).
pub const CREATE_PROPERTIES: &str = "CREATE TABLE IF NOT EXISTS `KeyConnectorProperties` (
    `Name` varchar(64) CHARACTER SET ascii NOT NULL,
    `Value` longtext CHARACTER SET utf8mb4 NOT NULL,
    CONSTRAINT `PK_KeyConnectorProperties` PRIMARY KEY (`Name`)
) CHARACTER SET=utf8mb4";

pub const LIST_COLUMNS: &str = "SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) \
     FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('ApplicationDatas', 'UserKeys')";

/// The `DATA_TYPE`s `information_schema` reports for upstream's columns.
pub const COLUMNS: ColumnTypes = ColumnTypes::new("int", "char", "longtext", "datetime");

/// A statement in PostgreSQL's notation, in MySQL's: `` `names` `` and `?` placeholders.
/// The statements number their placeholders in the order they appear, as `?` needs.
pub fn rewrite(statement: &str) -> String {
    let mut rewritten = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => rewritten.push('`'),
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                rewritten.push('?');
            }
            other => rewritten.push(other),
        }
    }
    rewritten
}

/// GUIDs as Pomelo writes them (`char(36)`, lower case).
pub type Guid = String;

pub fn guid(id: Uuid) -> Guid {
    id.hyphenated().to_string()
}

pub fn parse_guid(id: Guid) -> Result<Uuid, StoreError> {
    Uuid::parse_str(&id)
        .map_err(|_| StoreError::corrupt(format!("a UserKeys row has the id `{id}`, not a GUID")))
}

/// Where the server is and how to reach it, without a database.
fn server_options(connection: &SqlConnection) -> MySqlConnectOptions {
    use MySqlSslMode::{Disabled, Preferred, Required, VerifyCa, VerifyIdentity};
    let modes = [Disabled, Preferred, Required, VerifyCa, VerifyIdentity];
    let mut options = MySqlConnectOptions::new()
        .ssl_mode(by_tls_mode(connection.tls.mode, modes))
        .disable_statement_logging();
    if let Some(root) = &connection.tls.root_certificate {
        options = options.ssl_ca(root);
    }
    options = match &connection.endpoint {
        SqlEndpoint::Tcp { host, port, .. } => options.host(host).port(port.unwrap_or(3306)),
        SqlEndpoint::Socket(path) => options.socket(path),
    };
    if let Some(password) = non_empty_password(connection) {
        options = options.password(password);
    }
    match &connection.user {
        Some(user) => options.username(user),
        None => options,
    }
}

pub fn connect_options(connection: &SqlConnection) -> MySqlConnectOptions {
    let mut options = server_options(connection).database(&connection.database);
    if let (Some(cert), Some(key)) = (
        &connection.tls.client_certificate,
        &connection.tls.client_key,
    ) {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
    }
    options.charset("utf8mb4")
}

/// The password to send. An empty one is sent as no password at all, as MySqlConnector
/// does: a scrambled empty string would not match an account without a password.
fn non_empty_password(connection: &SqlConnection) -> Option<&str> {
    connection
        .password
        .as_ref()
        .map(secrecy::ExposeSecret::expose_secret)
        .filter(|p| !p.is_empty())
}

/// Server errors that mean the settings are wrong, not that the server is away.
fn rejection(error: &sqlx::Error) -> Option<&'static str> {
    let code = error.as_database_error()?.code()?;
    match code.as_ref() {
        // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR (SQLSTATE 28000 / 42000).
        "28000" => Some("the database refused the user name or password"),
        "42000" if error.to_string().contains("denied") => {
            Some("the database user lacks a permission the key connector needs")
        }
        _ => None,
    }
}

pub fn open_error(error: sqlx::Error) -> StoreError {
    super::open_error(
        error,
        "TLS to MySQL failed as `SslMode` requires",
        SETTING,
        rejection,
    )
}

/// MySQL's error number, where sqlx has it.
fn error_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|e| e.number())
}

/// A missing database is created on a connection to the server without one.
pub fn creation(
    _options: &MySqlConnectOptions,
    connection: &SqlConnection,
) -> DatabaseCreation<MySqlConnectOptions> {
    DatabaseCreation {
        server: SERVER,
        setting: SETTING,
        maintenance: server_options(connection),
        statement: format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
            connection.database.replace('`', "``")
        ),
        is_missing: |error| error_number(error) == Some(UNKNOWN_DATABASE),
        already_exists: |_| false,
        open_error,
    }
}

/// Waits for the server-wide bootstrap lock on this connection, then opens a transaction.
async fn lock(
    conn: &mut MySqlConnection,
    map: fn(sqlx::Error) -> StoreError,
) -> Result<Transaction<'_, MySql>, StoreError> {
    let granted: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(BOOTSTRAP_LOCK_NAME)
        .bind(BOOTSTRAP_LOCK_WAIT.as_secs() as i64)
        .fetch_one(&mut *conn)
        .await
        .map_err(map)?;
    if granted != Some(1) {
        return Err(lock_not_granted(BOOTSTRAP_LOCK_NAME));
    }
    conn.begin().await.map_err(map)
}

pub async fn lock_schema(conn: &mut MySqlConnection) -> Result<Transaction<'_, MySql>, StoreError> {
    lock(conn, open_error).await
}

pub async fn lock_key_rows(
    conn: &mut MySqlConnection,
) -> Result<Transaction<'_, MySql>, StoreError> {
    lock(conn, store_error).await
}

/// Releases the bootstrap lock taken by [`lock_schema`] or [`lock_key_rows`].
pub async fn unlock(conn: &mut MySqlConnection) {
    if let Err(error) = sqlx::query("DO RELEASE_LOCK(?)")
        .bind(BOOTSTRAP_LOCK_NAME)
        .execute(&mut *conn)
        .await
    {
        // The connection is most likely dead, and the lock went with it.
        tracing::debug!(%error, "releasing the bootstrap lock failed");
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn statements_are_rewritten_with_backticks_and_positional_placeholders() {
        assert_eq!(
            rewrite(r#"UPDATE "UserKeys" SET "Key" = $1 WHERE "Id" = $2 AND "Key" = $10"#),
            "UPDATE `UserKeys` SET `Key` = ? WHERE `Id` = ? AND `Key` = ?"
        );
    }
}
