//! The `mysql` store: upstream's EF Core (Pomelo) schema in MySQL or MariaDB.
//!
//! Tables, types and the `__EFMigrationsHistory` row are exactly what upstream's
//! `20210820155954_InitialCreate` migration creates: utf8mb4 tables, ids as lower-case
//! `char(36)` text with the case-insensitive `ascii_general_ci` collation, `longtext` keys,
//! `datetime(6)` dates holding UTC. Like EF's `Migrate()`, opening creates the database when it
//! does not exist yet.
//!
//! Several replicas, one truth: MySQL commits DDL implicitly, so a transaction cannot make
//! schema creation atomic. Instead, schema creation and symmetric-key creation each run while
//! holding the server-wide named lock `GET_LOCK('bitwarden-key-connector-bootstrap')` on one
//! connection, so replicas starting together do each once; the lock is released with the
//! connection if this process dies. User-key creation relies on the primary key (a duplicate
//! insert is "already exists"), so two replicas creating one user's key give one winner.
//! Statements run in autocommit mode: a 200 means the row is committed.

use async_trait::async_trait;
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlSslMode,
};
use sqlx::{ConnectOptions, Connection};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use super::sql::sqlx_support::{retry_idempotent, store_error, tls_failure};
use super::sql::{
    BOOTSTRAP_LOCK_NAME, SchemaPlan, from_naive_utc, log_connection_warnings, require_key,
    schema_plan, to_naive_utc_micros, with_deadline,
};
use super::{CreateOutcome, PutOutcome, StoreError, StoredUserKey, UserKeyStore};
use crate::config::SqlConnection;
use crate::config::sql_connection::{SqlEndpoint, SqlTlsMode};

const SETTING: &str = "keyConnectorSettings__database__mySqlConnectionString";

/// Upstream's MySQL migration and the EF Core version its snapshot records.
const MIGRATION_ID: &str = "20210820155954_InitialCreate";
const PRODUCT_VERSION: &str = "5.0.9";

/// How long a starting instance waits for another one holding the bootstrap lock.
const BOOTSTRAP_LOCK_WAIT_SECONDS: i64 = 30;

const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS `__EFMigrationsHistory` (
    `MigrationId` varchar(150) CHARACTER SET utf8mb4 NOT NULL,
    `ProductVersion` varchar(32) CHARACTER SET utf8mb4 NOT NULL,
    CONSTRAINT `PK___EFMigrationsHistory` PRIMARY KEY (`MigrationId`)
) CHARACTER SET=utf8mb4";

/// The DDL Pomelo's EF Core provider generates for upstream's `InitialCreate`.
const CREATE_SCHEMA: [&str; 3] = [
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

/// Columns upstream's schema has, with the `DATA_TYPE` `information_schema` reports.
const EXPECTED_COLUMNS: &[(&str, &str, &str)] = &[
    ("ApplicationDatas", "Id", "int"),
    ("ApplicationDatas", "SymmetricKey", "longtext"),
    ("UserKeys", "Id", "char"),
    ("UserKeys", "Key", "longtext"),
    ("UserKeys", "CreationDate", "datetime"),
    ("UserKeys", "RevisionDate", "datetime"),
    ("UserKeys", "LastAccessDate", "datetime"),
];

pub struct MySqlStore {
    pool: MySqlPool,
    deadline: std::time::Duration,
}

fn connect_options(connection: &SqlConnection) -> MySqlConnectOptions {
    let mut options = MySqlConnectOptions::new().database(&connection.database);
    options = match &connection.endpoint {
        SqlEndpoint::Tcp { host, port, .. } => options.host(host).port(port.unwrap_or(3306)),
        SqlEndpoint::Socket(path) => options.socket(path),
    };
    if let Some(user) = &connection.user {
        options = options.username(user);
    }
    if let Some(password) = non_empty_password(connection) {
        options = options.password(password);
    }
    options = options.ssl_mode(match connection.tls.mode {
        SqlTlsMode::Disable => MySqlSslMode::Disabled,
        SqlTlsMode::Prefer => MySqlSslMode::Preferred,
        SqlTlsMode::Require => MySqlSslMode::Required,
        SqlTlsMode::VerifyCa => MySqlSslMode::VerifyCa,
        SqlTlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
    });
    if let Some(root) = &connection.tls.root_certificate {
        options = options.ssl_ca(root);
    }
    if let (Some(cert), Some(key)) = (
        &connection.tls.client_certificate,
        &connection.tls.client_key,
    ) {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
    }
    options.charset("utf8mb4").disable_statement_logging()
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

/// Server error numbers that mean the settings are wrong, not that the server is away.
fn configuration_error(error: &sqlx::Error) -> Option<String> {
    let code = error.as_database_error()?.code()?;
    let message = match code.as_ref() {
        // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR (SQLSTATE 28000 / 42000).
        "28000" => "the database refused the user name or password",
        "42000" if error.to_string().contains("denied") => {
            "the database user lacks a permission the key connector needs"
        }
        _ => return None,
    };
    Some(format!("{message} ({SETTING}): {error}"))
}

fn open_error(error: sqlx::Error) -> StoreError {
    if let Some(tls) = tls_failure(&error) {
        // A certificate that does not verify, or a server without TLS when TLS is required,
        // will not fix itself: stop start-up and say so.
        return StoreError::Config(format!(
            "TLS to MySQL failed as `SslMode` requires ({SETTING}): {tls}"
        ));
    }
    match configuration_error(&error) {
        Some(message) => StoreError::Config(message),
        None => store_error(error),
    }
}

/// MySQL's error number, where sqlx has it.
fn error_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|e| e.number())
}

impl MySqlStore {
    /// Connects, creates the database and upstream's schema if needed, and checks the schema.
    pub async fn open(connection: &SqlConnection) -> Result<Self, StoreError> {
        log_connection_warnings("mysql", connection);
        let options = connect_options(connection);
        ensure_database_exists(&options, connection).await?;
        let pool = MySqlPoolOptions::new()
            .max_connections(connection.pool.max_connections)
            .min_connections(connection.pool.min_connections)
            .acquire_timeout(connection.pool.connect_timeout)
            // A ping per request would cost a round trip; dead connections are retried instead.
            .test_before_acquire(false)
            .idle_timeout(std::time::Duration::from_secs(300))
            .connect_lazy_with(options);
        let store = Self {
            pool,
            deadline: connection.pool.command_timeout,
        };
        let bootstrap_deadline = std::time::Duration::from_secs(BOOTSTRAP_LOCK_WAIT_SECONDS as u64)
            + connection.pool.connect_timeout * 2;
        with_deadline(bootstrap_deadline, store.migrate()).await?;
        Ok(store)
    }

    /// Like EF's `Migrate()`: creates upstream's tables and records the migration, holding
    /// the bootstrap lock so that replicas starting together do it once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(open_error)?;
        let result = async {
            take_bootstrap_lock(&mut conn).await?;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME IN ('ApplicationDatas', 'UserKeys', '__EFMigrationsHistory')",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(open_error)?;
            let has = |name: &str| tables.iter().any(|t| t == name);
            let recorded = has("__EFMigrationsHistory")
                && sqlx::query("SELECT 1 FROM `__EFMigrationsHistory` WHERE `MigrationId` = ?")
                    .bind(MIGRATION_ID)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(open_error)?
                    .is_some();
            match schema_plan(has("ApplicationDatas"), has("UserKeys"), recorded)? {
                SchemaPlan::Create => {
                    sqlx::raw_sql(CREATE_HISTORY)
                        .execute(&mut *conn)
                        .await
                        .map_err(open_error)?;
                    for statement in CREATE_SCHEMA {
                        sqlx::raw_sql(statement)
                            .execute(&mut *conn)
                            .await
                            .map_err(open_error)?;
                    }
                    record_migration(&mut conn).await?;
                    tracing::info!("created the key connector schema in the MySQL database");
                }
                SchemaPlan::RecordMigration => {
                    sqlx::raw_sql(CREATE_HISTORY)
                        .execute(&mut *conn)
                        .await
                        .map_err(open_error)?;
                    record_migration(&mut conn).await?;
                }
                SchemaPlan::UpToDate => {}
            }
            check_columns(&mut conn).await
        }
        .await;
        release_bootstrap_lock(&mut conn).await;
        result
    }
}

type LockedWork<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

impl MySqlStore {
    /// Runs `work` on one connection holding the bootstrap lock, released afterwards.
    async fn under_bootstrap_lock<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut MySqlConnection) -> LockedWork<'c, T> + Send,
        T: Send,
    {
        let deadline =
            self.deadline + std::time::Duration::from_secs(BOOTSTRAP_LOCK_WAIT_SECONDS as u64);
        with_deadline(deadline, async {
            let mut conn = self.pool.acquire().await.map_err(store_error)?;
            take_bootstrap_lock(&mut conn).await?;
            let result = work(&mut conn).await;
            release_bootstrap_lock(&mut conn).await;
            result
        })
        .await
    }
}

/// Appends a wrapped symmetric key row (the current key on a new database, or the pending
/// key of a rotation).
async fn insert_wrapped_key(conn: &mut MySqlConnection, wrapped: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO `ApplicationDatas` (`SymmetricKey`) VALUES (?)")
        .bind(wrapped)
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Waits for the server-wide bootstrap lock on this connection.
async fn take_bootstrap_lock(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    let granted: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(BOOTSTRAP_LOCK_NAME)
        .bind(BOOTSTRAP_LOCK_WAIT_SECONDS)
        .fetch_one(&mut *conn)
        .await
        .map_err(store_error)?;
    if granted == Some(1) {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "another instance held the `{BOOTSTRAP_LOCK_NAME}` lock for over {BOOTSTRAP_LOCK_WAIT_SECONDS} s"
        )))
    }
}

async fn release_bootstrap_lock(conn: &mut MySqlConnection) {
    if let Err(error) = sqlx::query("DO RELEASE_LOCK(?)")
        .bind(BOOTSTRAP_LOCK_NAME)
        .execute(&mut *conn)
        .await
    {
        // The connection is most likely dead, and the lock went with it.
        tracing::debug!(%error, "releasing the bootstrap lock failed");
    }
}

async fn record_migration(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO `__EFMigrationsHistory` (`MigrationId`, `ProductVersion`) VALUES (?, ?)",
    )
    .bind(MIGRATION_ID)
    .bind(PRODUCT_VERSION)
    .execute(conn)
    .await
    .map_err(open_error)?;
    Ok(())
}

async fn check_columns(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('ApplicationDatas', 'UserKeys')",
    )
    .fetch_all(conn)
    .await
    .map_err(open_error)?;
    for (table, column, kind) in EXPECTED_COLUMNS {
        if !columns
            .iter()
            .any(|(t, c, k)| t == table && c == column && k.eq_ignore_ascii_case(kind))
        {
            return Err(StoreError::Config(format!(
                "table `{table}` has no {kind} column `{column}`; this is not upstream's schema"
            )));
        }
    }
    Ok(())
}

/// EF's `Migrate()` creates a missing database; so do we.
async fn ensure_database_exists(
    options: &MySqlConnectOptions,
    connection: &SqlConnection,
) -> Result<(), StoreError> {
    let timeout = connection.pool.connect_timeout;
    let unreachable = || {
        StoreError::Unavailable(format!(
            "no connection to MySQL within {} s",
            timeout.as_secs()
        ))
    };
    let error = match tokio::time::timeout(timeout, options.connect()).await {
        Err(_) => return Err(unreachable()),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Ok(Err(error)) => error,
    };
    // ER_BAD_DB_ERROR
    if error_number(&error) != Some(1049) {
        return Err(open_error(error));
    }
    tracing::info!(database = %connection.database, "the MySQL database does not exist; creating it");
    let mut server = MySqlConnectOptions::new();
    server = match &connection.endpoint {
        SqlEndpoint::Tcp { host, port, .. } => server.host(host).port(port.unwrap_or(3306)),
        SqlEndpoint::Socket(path) => server.socket(path),
    };
    server = server
        .username(options.get_username())
        .ssl_mode(options.get_ssl_mode())
        .disable_statement_logging();
    if let Some(password) = non_empty_password(connection) {
        server = server.password(password);
    }
    let server = match &connection.tls.root_certificate {
        Some(root) => server.ssl_ca(root),
        None => server,
    };
    let mut conn = tokio::time::timeout(timeout, server.connect())
        .await
        .map_err(|_| unreachable())?
        .map_err(open_error)?;
    let statement = format!(
        "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
        connection.database.replace('`', "``")
    );
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    created.map(|_| ()).map_err(|error| {
        StoreError::Config(format!(
            "the database `{}` does not exist and could not be created ({SETTING}): {error}",
            connection.database
        ))
    })
}

/// GUIDs as Pomelo writes them (`char(36)`, lower case).
fn guid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

type RawRow = (
    String,
    Option<String>,
    PrimitiveDateTime,
    Option<PrimitiveDateTime>,
    Option<PrimitiveDateTime>,
);

fn user_key(row: RawRow) -> Result<StoredUserKey, StoreError> {
    let (id, key, creation, revision, last_access) = row;
    let id = Uuid::parse_str(&id).map_err(|_| {
        StoreError::Corrupt(format!("a UserKeys row has the id `{id}`, not a GUID"))
    })?;
    Ok(StoredUserKey {
        id,
        sealed_key: require_key(id, key)?,
        creation_date: from_naive_utc(creation),
        revision_date: revision.map(from_naive_utc),
        last_access_date: last_access.map(from_naive_utc),
    })
}

const SELECT_USER_KEY: &str = "SELECT `Id`, `Key`, `CreationDate`, `RevisionDate`, `LastAccessDate` FROM `UserKeys` WHERE `Id` = ?";
const INSERT_USER_KEY: &str = "INSERT INTO `UserKeys` (`Id`, `Key`, `CreationDate`, `RevisionDate`, `LastAccessDate`) VALUES (?, ?, ?, ?, ?)";
const REPLACE_USER_KEY: &str = "UPDATE `UserKeys` SET `Key` = ?, `RevisionDate` = ? WHERE `Id` = ?";

#[async_trait]
impl UserKeyStore for MySqlStore {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn read_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        with_deadline(self.deadline, async {
            let key: Option<Option<String>> = retry_idempotent(|| {
                sqlx::query_scalar(
                    "SELECT `SymmetricKey` FROM `ApplicationDatas` ORDER BY `Id` LIMIT 1",
                )
                .fetch_optional(&self.pool)
            })
            .await?;
            Ok(key.flatten().filter(|k| !k.is_empty()))
        })
        .await
    }

    async fn insert_symmetric_key_if_absent(&self, wrapped: &str) -> Result<String, StoreError> {
        let wrapped = wrapped.to_owned();
        self.under_bootstrap_lock(|conn| {
            Box::pin(async move {
                let first: Option<(i32, Option<String>)> = sqlx::query_as(
                    "SELECT `Id`, `SymmetricKey` FROM `ApplicationDatas` ORDER BY `Id` LIMIT 1",
                )
                .fetch_optional(&mut *conn)
                .await
                .map_err(store_error)?;
                match first {
                    Some((_, Some(existing))) if !existing.is_empty() => Ok(existing),
                    Some((id, _)) => {
                        sqlx::query(
                            "UPDATE `ApplicationDatas` SET `SymmetricKey` = ? WHERE `Id` = ?",
                        )
                        .bind(&wrapped)
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .map_err(store_error)?;
                        Ok(wrapped)
                    }
                    None => {
                        insert_wrapped_key(conn, &wrapped).await?;
                        Ok(wrapped)
                    }
                }
            })
        })
        .await
    }

    async fn replace_symmetric_key(
        &self,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        with_deadline(self.deadline, async {
            let result = sqlx::query(
                "UPDATE `ApplicationDatas` SET `SymmetricKey` = ? WHERE `SymmetricKey` = ?",
            )
            .bind(replacement)
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn read_pending_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        with_deadline(self.deadline, async {
            let key: Option<Option<String>> = retry_idempotent(|| {
                sqlx::query_scalar(
                    "SELECT `SymmetricKey` FROM `ApplicationDatas` ORDER BY `Id` LIMIT 1 OFFSET 1",
                )
                .fetch_optional(&self.pool)
            })
            .await?;
            Ok(key.flatten().filter(|k| !k.is_empty()))
        })
        .await
    }

    async fn save_pending_symmetric_key_if_absent(
        &self,
        wrapped: &str,
    ) -> Result<String, StoreError> {
        let wrapped = wrapped.to_owned();
        self.under_bootstrap_lock(|conn| {
            Box::pin(async move {
                let keys: Vec<Option<String>> = sqlx::query_scalar(
                    "SELECT `SymmetricKey` FROM `ApplicationDatas` ORDER BY `Id` LIMIT 2",
                )
                .fetch_all(&mut *conn)
                .await
                .map_err(store_error)?;
                match keys.as_slice() {
                    [] => Err(StoreError::Config(
                        "there is no symmetric key to rotate from".into(),
                    )),
                    [_, Some(pending)] if !pending.is_empty() => Ok(pending.clone()),
                    _ => {
                        insert_wrapped_key(conn, &wrapped).await?;
                        Ok(wrapped)
                    }
                }
            })
        })
        .await
    }

    async fn promote_pending_symmetric_key(
        &self,
        expected_current: &str,
    ) -> Result<bool, StoreError> {
        with_deadline(self.deadline, async {
            let mut tx = self.pool.begin().await.map_err(store_error)?;
            let rows: Vec<(i32, Option<String>)> = sqlx::query_as(
                "SELECT `Id`, `SymmetricKey` FROM `ApplicationDatas` ORDER BY `Id` LIMIT 2 FOR UPDATE",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            let [(first, Some(current)), (_, Some(pending))] = rows.as_slice() else {
                return Ok(false);
            };
            if current != expected_current || pending.is_empty() {
                return Ok(false);
            }
            sqlx::query("UPDATE `ApplicationDatas` SET `SymmetricKey` = ? WHERE `Id` = ?")
                .bind(pending)
                .bind(first)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query("DELETE FROM `ApplicationDatas` WHERE `Id` <> ?")
                .bind(first)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    async fn reseal_user_key(
        &self,
        id: Uuid,
        expected: &str,
        resealed: &str,
    ) -> Result<bool, StoreError> {
        let id_text = guid_text(id);
        with_deadline(self.deadline, async {
            let result = retry_idempotent(|| {
                sqlx::query("UPDATE `UserKeys` SET `Key` = ? WHERE `Id` = ? AND `Key` = ?")
                    .bind(resealed)
                    .bind(&id_text)
                    .bind(expected)
                    .execute(&self.pool)
            })
            .await?;
            Ok(result.rows_affected() > 0)
        })
        .await
    }

    async fn read_user_key(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        let id_text = guid_text(id);
        with_deadline(self.deadline, async {
            let row: Option<RawRow> = retry_idempotent(|| {
                sqlx::query_as(SELECT_USER_KEY)
                    .bind(&id_text)
                    .fetch_optional(&self.pool)
            })
            .await?;
            row.map(user_key).transpose()
        })
        .await
    }

    async fn create_user_key(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        // Not retried: if the first try committed and only the answer was lost, a retry would
        // report "already exists" for the key it just stored.
        with_deadline(self.deadline, async {
            let result = sqlx::query(INSERT_USER_KEY)
                .bind(guid_text(key.id))
                .bind(&key.sealed_key)
                .bind(to_naive_utc_micros(key.creation_date))
                .bind(key.revision_date.map(to_naive_utc_micros))
                .bind(key.last_access_date.map(to_naive_utc_micros))
                .execute(&self.pool)
                .await;
            match result {
                Ok(_) => Ok(CreateOutcome::Created),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    Ok(CreateOutcome::AlreadyExists)
                }
                Err(error) => Err(store_error(error)),
            }
        })
        .await
    }

    async fn put_user_key(
        &self,
        id: Uuid,
        sealed_key: &str,
        now: OffsetDateTime,
    ) -> Result<PutOutcome, StoreError> {
        let now = to_naive_utc_micros(now);
        let id_text = guid_text(id);
        with_deadline(self.deadline, async {
            // The connection reports matched rows (CLIENT_FOUND_ROWS), not changed rows.
            let replace = || {
                sqlx::query(REPLACE_USER_KEY)
                    .bind(sealed_key)
                    .bind(now)
                    .bind(&id_text)
                    .execute(&self.pool)
            };
            if retry_idempotent(replace).await?.rows_affected() > 0 {
                return Ok(PutOutcome::Replaced);
            }
            let inserted = sqlx::query(INSERT_USER_KEY)
                .bind(&id_text)
                .bind(sealed_key)
                .bind(now)
                .bind(None::<PrimitiveDateTime>)
                .bind(None::<PrimitiveDateTime>)
                .execute(&self.pool)
                .await;
            match inserted {
                Ok(_) => Ok(PutOutcome::Created),
                // Another request created it meanwhile: replace that row.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    retry_idempotent(replace).await?;
                    Ok(PutOutcome::Replaced)
                }
                Err(error) => Err(store_error(error)),
            }
        })
        .await
    }

    async fn record_last_access(
        &self,
        accesses: &[(Uuid, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        if accesses.is_empty() {
            return Ok(());
        }
        with_deadline(self.deadline * 2, async {
            let mut tx = self.pool.begin().await.map_err(store_error)?;
            for (id, when) in accesses {
                sqlx::query("UPDATE `UserKeys` SET `LastAccessDate` = ? WHERE `Id` = ?")
                    .bind(to_naive_utc_micros(*when))
                    .bind(guid_text(*id))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
            tx.commit().await.map_err(store_error)
        })
        .await
    }

    async fn list_user_keys(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        // A listing can be long: the deadline is for a stalled database, not a big one.
        with_deadline(self.deadline * 12, async {
            let rows: Vec<RawRow> = retry_idempotent(|| {
                sqlx::query_as(
                    "SELECT `Id`, `Key`, `CreationDate`, `RevisionDate`, `LastAccessDate` FROM `UserKeys` ORDER BY `CreationDate`, `Id`",
                )
                .fetch_all(&self.pool)
            })
            .await?;
            rows.into_iter().map(user_key).collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        with_deadline(self.deadline, async {
            retry_idempotent(|| sqlx::query("SELECT 1").execute(&self.pool)).await?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
