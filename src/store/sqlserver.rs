//! The `sqlserver` store: upstream's EF Core (SqlClient) schema in a SQL Server database.
//!
//! Tables, types and the `__EFMigrationsHistory` row are exactly what upstream's
//! `20210820154908_InitialCreate` migration creates: `uniqueidentifier` ids, `nvarchar(max)`
//! keys, `datetime2` dates holding UTC with 100 ns precision. Like EF's `Migrate()`, opening
//! creates the database when it does not exist yet.
//!
//! Several replicas, one truth: SQL Server's DDL is transactional, so schema creation runs in
//! one transaction holding the application lock `sp_getapplock
//! 'bitwarden-key-connector-bootstrap'`, and so does symmetric-key creation: replicas starting
//! together do each once. User-key creation relies on the primary key (a duplicate insert,
//! error 2627, is "already exists"). Every statement is committed before the API answers.
//!
//! The driver is tiberius over rustls; connections are pooled by bb8. A statement cut short by
//! the deadline leaves its connection mid-conversation, so each connection carries a flag set
//! while a statement runs: a connection given back with the flag still set is discarded.

use std::time::Duration;

use async_trait::async_trait;
use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use secrecy::ExposeSecret;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Row, SqlBrowser, ToSql};
use time::PrimitiveDateTime;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use uuid::Uuid;

use super::recovery_wrap_rows::{
    RecoveryWrapRows, WrapChange, WrapWrite, from_columns, plan as wrap_plan,
};
use super::schema::{ColumnTypes, SchemaPlan, check_columns, schema_plan};
use super::sql::{
    BOOTSTRAP_LOCK_NAME, BOOTSTRAP_LOCK_WAIT, from_naive_utc, lock_not_granted,
    log_connection_warnings, require_key, to_naive_utc, with_deadline,
};
use super::symmetric_rows::{ChangeAnswer, KeyRow, KeyRowChange, RowWrite, SymmetricKeyRows, plan};
use super::user_key_rows::{KeyReplacement, LastAccess, Reseal, UserKeyRows};
use super::{
    CreateOutcome, MissingDatabase, PropertyStore, Refusal, StoreBackend, StoreError,
    StoredRecoveryWrap, StoredUserKey,
};
use crate::config::SqlConnection;
use crate::config::sql_connection::{SqlEndpoint, SqlTlsMode};

const SETTING: &str = "keyConnectorSettings__database__sqlServerConnectionString";

/// Upstream's SQL Server migration and the EF Core version its snapshot records.
pub const MIGRATION_ID: &str = "20210820154908_InitialCreate";
const PRODUCT_VERSION: &str = "5.0.9";

/// The DDL SqlClient's EF Core provider generates for upstream's `InitialCreate`.
pub const CREATE_HISTORY: &str = "IF OBJECT_ID(N'[__EFMigrationsHistory]') IS NULL
BEGIN
    CREATE TABLE [__EFMigrationsHistory] (
        [MigrationId] nvarchar(150) NOT NULL,
        [ProductVersion] nvarchar(32) NOT NULL,
        CONSTRAINT [PK___EFMigrationsHistory] PRIMARY KEY ([MigrationId])
    );
END";
pub const CREATE_SCHEMA: [&str; 2] = [
    "CREATE TABLE [ApplicationDatas] (
    [Id] int NOT NULL IDENTITY,
    [SymmetricKey] nvarchar(max) NULL,
    CONSTRAINT [PK_ApplicationDatas] PRIMARY KEY ([Id])
)",
    "CREATE TABLE [UserKeys] (
    [Id] uniqueidentifier NOT NULL,
    [Key] nvarchar(max) NULL,
    [CreationDate] datetime2 NOT NULL,
    [RevisionDate] datetime2 NULL,
    [LastAccessDate] datetime2 NULL,
    CONSTRAINT [PK_UserKeys] PRIMARY KEY ([Id])
)",
];

/// The `DATA_TYPE`s `INFORMATION_SCHEMA` reports for upstream's columns.
const COLUMNS: ColumnTypes = ColumnTypes::new("int", "uniqueidentifier", "nvarchar", "datetime2");

/// Which of upstream's tables the connection's default schema holds, found as EF finds its
/// history table (`OBJECT_ID`) and named as upstream spells them. Not read back from
/// `sys.tables`: Babelfish for PostgreSQL lists there PostgreSQL's lower-cased relation name
/// (`applicationdatas`), where SQL Server keeps the name as created.
const LIST_TABLES: &str = "SELECT t.name FROM (VALUES (N'ApplicationDatas'), (N'UserKeys'), \
     (N'__EFMigrationsHistory')) AS t(name) WHERE OBJECT_ID(QUOTENAME(t.name), N'U') IS NOT NULL";
const LIST_COLUMNS: &str = "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS \
     WHERE TABLE_SCHEMA = SCHEMA_NAME() AND TABLE_NAME IN ('ApplicationDatas', 'UserKeys')";

/// Takes the bootstrap lock for the current transaction; selects the result code
/// (`>= 0` granted, `-1` timed out).
const TAKE_BOOTSTRAP_LOCK: &str = "DECLARE @granted int; \
    EXEC @granted = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', \
    @LockOwner = 'Transaction', @LockTimeout = @P2; \
    SELECT @granted";

pub const SELECT_USER_KEY: &str = "SELECT [Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate] FROM [UserKeys] WHERE [Id] = @P1";
/// Upstream's row insert, by which of the two optional dates the row has. A missing date is
/// the literal `NULL`, never a NULL parameter: SqlClient sends one as a NULL of the column's
/// type, tiberius as TDS's untyped NULL (type 0x1F), which SQL Server takes and Babelfish for
/// PostgreSQL refuses ("Data type 0x1F is unknown", error 8009).
const INSERT_USER_KEY: [[&str; 2]; 2] = [
    [
        "INSERT INTO [UserKeys] ([Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate]) VALUES (@P1, @P2, @P3, NULL, NULL)",
        "INSERT INTO [UserKeys] ([Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate]) VALUES (@P1, @P2, @P3, NULL, @P4)",
    ],
    [
        "INSERT INTO [UserKeys] ([Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate]) VALUES (@P1, @P2, @P3, @P4, NULL)",
        "INSERT INTO [UserKeys] ([Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate]) VALUES (@P1, @P2, @P3, @P4, @P5)",
    ],
];
pub const REPLACE_USER_KEY: &str =
    "UPDATE [UserKeys] SET [Key] = @P1, [RevisionDate] = @P2 WHERE [Id] = @P3";
const SELECT_ALL_USER_KEYS: &str = "SELECT [Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate] FROM [UserKeys] ORDER BY [CreationDate], [Id]";
const SELECT_KEY_ROWS: &str = "SELECT [Id], [SymmetricKey] FROM [ApplicationDatas] ORDER BY [Id]";

/// SQL Server error numbers.
const LOGIN_FAILED: u32 = 18456;
const CANNOT_OPEN_DATABASE: u32 = 4060;
const DATABASE_DOES_NOT_EXIST: u32 = 911;
const DATABASE_EXISTS: u32 = 1801;
const PERMISSION_DENIED: u32 = 262;
const PRIMARY_KEY_VIOLATION: u32 = 2627;
const UNIQUE_INDEX_VIOLATION: u32 = 2601;

type TdsClient = Client<Compat<TcpStream>>;

/// A pooled connection and whether a statement was cut short on it.
pub struct TdsConnection {
    client: TdsClient,
    in_flight: bool,
}

fn named_instance(connection: &SqlConnection) -> bool {
    matches!(
        &connection.endpoint,
        SqlEndpoint::Tcp {
            instance: Some(_),
            ..
        }
    )
}

/// Builds tiberius' configuration from the connection string.
pub fn tiberius_config(connection: &SqlConnection, database: &str) -> Config {
    let mut config = Config::new();
    match &connection.endpoint {
        SqlEndpoint::Tcp {
            host,
            port,
            instance,
        } => {
            config.host(host);
            if let Some(port) = port {
                config.port(*port);
            }
            if let Some(instance) = instance {
                config.instance_name(instance);
            }
        }
        // The parser only produces TCP endpoints for SQL Server.
        SqlEndpoint::Socket(_) => {}
    }
    config.database(database);
    config.application_name(
        connection
            .application_name
            .as_deref()
            .unwrap_or("bitwarden-key-connector"),
    );
    config.authentication(AuthMethod::sql_server(
        connection.user.as_deref().unwrap_or_default(),
        connection
            .password
            .as_ref()
            .map(|p| p.expose_secret())
            .unwrap_or_default(),
    ));
    match connection.tls.mode {
        SqlTlsMode::Disable => config.encryption(EncryptionLevel::NotSupported),
        // SqlClient's `Encrypt=false`: the login is encrypted, the certificate not checked.
        SqlTlsMode::Prefer => {
            config.encryption(EncryptionLevel::Off);
            config.trust_cert();
        }
        SqlTlsMode::Require => {
            config.encryption(EncryptionLevel::Required);
            config.trust_cert();
        }
        SqlTlsMode::VerifyCa | SqlTlsMode::VerifyFull => {
            config.encryption(EncryptionLevel::Required);
        }
    }
    config.handshake_timeout(Some(connection.pool.connect_timeout));
    config
}

/// Opens one connection, following an Azure SQL gateway redirect once. A named instance is
/// found through the SQL Browser, as SqlClient does.
async fn connect(
    config: Config,
    named_instance: bool,
    timeout: Duration,
) -> Result<TdsClient, tiberius::error::Error> {
    let attempt = async {
        let mut config = config;
        for _ in 0..2 {
            let tcp = if named_instance {
                TcpStream::connect_named(&config).await?
            } else {
                TcpStream::connect(config.get_addr()).await?
            };
            tcp.set_nodelay(true)?;
            match Client::connect(config.clone(), tcp.compat_write()).await {
                Err(tiberius::error::Error::Routing { host, port }) => {
                    config.host(&host);
                    config.port(port);
                }
                other => return other,
            }
        }
        Err(tiberius::error::Error::Protocol(
            "the server redirected the connection more than once".into(),
        ))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(tiberius::error::Error::Io {
                kind: std::io::ErrorKind::TimedOut,
                message: format!("no connection within {} s", timeout.as_secs()),
            })
        })
}

pub struct ConnectionManager {
    config: Config,
    named_instance: bool,
    connect_timeout: Duration,
}

impl ManageConnection for ConnectionManager {
    type Connection = TdsConnection;
    type Error = tiberius::error::Error;

    async fn connect(&self) -> Result<TdsConnection, Self::Error> {
        Ok(TdsConnection {
            client: connect(
                self.config.clone(),
                self.named_instance,
                self.connect_timeout,
            )
            .await?,
            in_flight: false,
        })
    }

    async fn is_valid(&self, connection: &mut TdsConnection) -> Result<(), Self::Error> {
        connection
            .client
            .simple_query("SELECT 1")
            .await?
            .into_results()
            .await?;
        Ok(())
    }

    fn has_broken(&self, connection: &mut TdsConnection) -> bool {
        connection.in_flight
    }
}

pub struct SqlServerStore {
    pool: Pool<ConnectionManager>,
    deadline: Duration,
}

/// Classifies a driver error; anything but a positive answer is "unavailable".
fn store_error(error: tiberius::error::Error) -> StoreError {
    match error {
        tiberius::error::Error::Conversion(_)
        | tiberius::error::Error::Utf8
        | tiberius::error::Error::Utf16 => StoreError::corrupt_from(error),
        other => StoreError::unavailable(other),
    }
}

/// A certificate this host does not trust, and any other TLS failure `Encrypt` meets.
const UNTRUSTED_CERTIFICATE: &str = "SQL Server presented a TLS certificate this host does not trust \
     (`Encrypt` checks it unless `TrustServerCertificate=true`): add the issuing CA to the system's \
     trusted certificates (/usr/local/share/ca-certificates and update-ca-certificates), or name a \
     PEM file of trusted CAs in SSL_CERT_FILE";
const TLS_FAILED: &str = "TLS to SQL Server failed as `Encrypt` requires";

/// Where tiberius' text after a rejected certificate turns to advice on its own API
/// (`Config::trust_cert_ca` and the like), which names nothing an operator can set.
const TIBERIUS_ADVICE: &str = " To connect anyway";

/// The TLS failure in `error`, if it is one, as the problem and its reason: the certificate
/// (unknown CA, wrong name, expired), the handshake, or a server that offers no encryption
/// where `Encrypt` requires it. Waiting fixes none of them.
fn tls_failure(error: &tiberius::error::Error) -> Option<(&'static str, String)> {
    match error {
        tiberius::error::Error::Tls(text) => {
            let reason = text.split(TIBERIUS_ADVICE).next().unwrap_or_default();
            let problem = if text.contains("certificate") {
                UNTRUSTED_CERTIFICATE
            } else {
                TLS_FAILED
            };
            Some((problem, reason.trim().to_owned()))
        }
        tiberius::error::Error::Protocol(text) if text.contains("requested encryption level") => {
            Some((TLS_FAILED, text.to_string()))
        }
        _ => None,
    }
}

/// At open, a refused login or a failing TLS handshake is a setting to fix, not an outage.
fn open_error(error: tiberius::error::Error) -> StoreError {
    if let Some((problem, reason)) = tls_failure(&error) {
        return Refusal::Rejected {
            problem,
            origin: SETTING.into(),
            source: reason.into(),
        }
        .into();
    }
    if error.code() == Some(LOGIN_FAILED) {
        return Refusal::Rejected {
            problem: "SQL Server refused the login: check the user name and password",
            origin: SETTING.into(),
            source: Box::new(error),
        }
        .into();
    }
    store_error(error)
}

fn pool_error(error: RunError<tiberius::error::Error>) -> StoreError {
    match error {
        RunError::User(error) => store_error(error),
        RunError::TimedOut => {
            StoreError::unavailable_because("no connection to SQL Server could be had in time")
        }
    }
}

fn is_duplicate_key(error: &tiberius::error::Error) -> bool {
    matches!(
        error.code(),
        Some(PRIMARY_KEY_VIOLATION | UNIQUE_INDEX_VIOLATION)
    )
}

/// Runs `work` on a pooled connection, marking it so that a cut-short statement discards it.
macro_rules! on_connection {
    ($pool:expr, |$client:ident| $work:expr) => {{
        let mut pooled: PooledConnection<'_, ConnectionManager> =
            $pool.get().await.map_err(pool_error)?;
        pooled.in_flight = true;
        let result = {
            let $client = &mut pooled.client;
            $work
        };
        // An error from the server leaves the conversation in order; one from the
        // connection does not.
        pooled.in_flight = matches!(&result, Err(e) if !matches!(e, tiberius::error::Error::Server(_)));
        result.map_err(store_error)
    }};
}

type LockedWork<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

impl SqlServerStore {
    /// The rows `statement` selects.
    async fn select(
        &self,
        deadline: Duration,
        statement: &'static str,
        params: &[&dyn ToSql],
    ) -> Result<Vec<Row>, StoreError> {
        with_deadline(deadline, async {
            on_connection!(self.pool, |client| async {
                client
                    .query(statement, params)
                    .await?
                    .into_first_result()
                    .await
            }
            .await)
        })
        .await
    }

    /// Runs a statement that changes rows; returns how many.
    async fn execute(
        &self,
        statement: &'static str,
        params: &[&dyn ToSql],
    ) -> Result<u64, StoreError> {
        with_deadline(self.deadline, async {
            on_connection!(self.pool, |client| client
                .execute(statement, params)
                .await
                .map(|result| result.total()))
        })
        .await
    }

    /// Runs `work` in a transaction holding the bootstrap application lock; commits when it
    /// succeeds, rolls back otherwise. `driver_error` classifies what the server answers.
    async fn in_locked_transaction<T, F>(
        &self,
        driver_error: fn(tiberius::error::Error) -> StoreError,
        work: F,
    ) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut TdsClient) -> LockedWork<'c, T> + Send,
        T: Send,
    {
        with_deadline(self.deadline + BOOTSTRAP_LOCK_WAIT, async {
            let mut pooled = self.pool.get().await.map_err(|e| match e {
                RunError::User(e) => driver_error(e),
                RunError::TimedOut => pool_error(RunError::TimedOut),
            })?;
            pooled.in_flight = true;
            let client = &mut pooled.client;
            run_batch(client, "SET XACT_ABORT ON; BEGIN TRANSACTION").await?;
            let result = match take_bootstrap_lock(client).await {
                Ok(()) => work(client).await,
                Err(error) => Err(error),
            };
            let end = if result.is_ok() {
                "COMMIT TRANSACTION"
            } else {
                "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"
            };
            run_batch(client, end).await?;
            pooled.in_flight = false;
            result
        })
        .await
    }

    /// Connects, creates the database (unless `missing` refuses it) and upstream's schema if
    /// needed, and checks the schema.
    pub async fn open(
        connection: &SqlConnection,
        missing: MissingDatabase,
    ) -> Result<Self, StoreError> {
        log_connection_warnings("sqlserver", connection);
        ensure_database_exists(connection, missing).await?;
        let store = Self::pooled(connection);
        let bootstrap_deadline = BOOTSTRAP_LOCK_WAIT + connection.pool.connect_timeout * 2;
        with_deadline(bootstrap_deadline, store.migrate()).await?;
        Ok(store)
    }

    /// Connects only to read (a restored copy being checked): never creates the database or
    /// the schema and never records a migration; upstream's tables must be there as they are.
    pub async fn open_read_only(connection: &SqlConnection) -> Result<Self, StoreError> {
        log_connection_warnings("sqlserver", connection);
        let database = connection.database.clone();
        // Checked on a connection of its own: the pool never hands out why it could not
        // connect (a refused login would wait out the pool's timeout as "unavailable").
        let check = async {
            let mut client = connect(
                tiberius_config(connection, &connection.database),
                named_instance(connection),
                connection.pool.connect_timeout,
            )
            .await
            .map_err(|error| missing_or_open_error(error, connection))?;
            let checked = async {
                let tables = table_names(&mut client).await?;
                let has = |name: &str| tables.iter().any(|t| t == name);
                if schema_plan(has("ApplicationDatas"), has("UserKeys"), false)?
                    == SchemaPlan::Create
                {
                    return Err(Refusal::NoKeyTables(database).into());
                }
                check_columns(&column_types(&mut client).await?, &COLUMNS)
            }
            .await;
            let _ = client.close().await;
            checked
        };
        with_deadline(connection.pool.connect_timeout * 2, check).await?;
        Ok(Self::pooled(connection))
    }

    /// The pool for `connection`; connects lazily.
    fn pooled(connection: &SqlConnection) -> Self {
        let manager = ConnectionManager {
            config: tiberius_config(connection, &connection.database),
            named_instance: named_instance(connection),
            connect_timeout: connection.pool.connect_timeout,
        };
        let pool = Pool::builder()
            .max_size(connection.pool.max_connections)
            .min_idle(Some(connection.pool.min_connections).filter(|n| *n > 0))
            .connection_timeout(connection.pool.connect_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            // A check per request would cost a round trip; a broken connection is discarded.
            .test_on_check_out(false)
            .retry_connection(false)
            .build_unchecked(manager);
        Self {
            pool,
            deadline: connection.pool.command_timeout,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.in_locked_transaction(open_error, |client| {
            Box::pin(migrate_in_transaction(client))
        })
        .await
    }
}

/// The rows of the first result `sql` answers; `driver_error` classifies a failure.
async fn rows_of(
    client: &mut TdsClient,
    sql: &str,
    driver_error: fn(tiberius::error::Error) -> StoreError,
) -> Result<Vec<Row>, StoreError> {
    client
        .simple_query(sql)
        .await
        .map_err(driver_error)?
        .into_first_result()
        .await
        .map_err(driver_error)
}

async fn run_batch(client: &mut TdsClient, sql: &str) -> Result<(), StoreError> {
    rows_of(client, sql, open_error).await.map(drop)
}

async fn take_bootstrap_lock(client: &mut TdsClient) -> Result<(), StoreError> {
    let timeout_ms = BOOTSTRAP_LOCK_WAIT.as_millis() as i32;
    let row = client
        .query(TAKE_BOOTSTRAP_LOCK, &[&BOOTSTRAP_LOCK_NAME, &timeout_ms])
        .await
        .map_err(store_error)?
        .into_row()
        .await
        .map_err(store_error)?;
    let granted: Option<i32> = row
        .as_ref()
        .map(|r| r.try_get::<i32, _>(0))
        .transpose()
        .map_err(store_error)?
        .flatten();
    match granted {
        Some(code) if code >= 0 => Ok(()),
        _ => Err(lock_not_granted(BOOTSTRAP_LOCK_NAME)),
    }
}

async fn migrate_in_transaction(client: &mut TdsClient) -> Result<(), StoreError> {
    let tables = table_names(client).await?;
    let has = |name: &str| tables.iter().any(|t| t == name);
    let recorded = has("__EFMigrationsHistory")
        && client
            .query(
                "SELECT 1 FROM [__EFMigrationsHistory] WHERE [MigrationId] = @P1",
                &[&MIGRATION_ID],
            )
            .await
            .map_err(open_error)?
            .into_row()
            .await
            .map_err(open_error)?
            .is_some();
    let plan = schema_plan(has("ApplicationDatas"), has("UserKeys"), recorded)?;
    let statements: &[&str] = match plan {
        SchemaPlan::Create => &[CREATE_HISTORY, CREATE_SCHEMA[0], CREATE_SCHEMA[1]],
        SchemaPlan::RecordMigration => &[CREATE_HISTORY],
        SchemaPlan::UpToDate => &[],
    };
    for statement in statements {
        run_batch(client, statement).await?;
    }
    if plan != SchemaPlan::UpToDate {
        client
            .execute(
                "INSERT INTO [__EFMigrationsHistory] ([MigrationId], [ProductVersion]) VALUES (@P1, @P2)",
                &[&MIGRATION_ID, &PRODUCT_VERSION],
            )
            .await
            .map_err(open_error)?;
    }
    if plan == SchemaPlan::Create {
        tracing::info!("created the key connector schema in the SQL Server database");
    }
    check_columns(&column_types(client).await?, &COLUMNS)
}

/// The tables of the connection's schema.
async fn table_names(client: &mut TdsClient) -> Result<Vec<String>, StoreError> {
    Ok(rows_of(client, LIST_TABLES, open_error)
        .await?
        .iter()
        .filter_map(|r| r.get::<&str, _>(0).map(str::to_owned))
        .collect())
}

/// `(table, column, type)` of upstream's two tables.
async fn column_types(client: &mut TdsClient) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(rows_of(client, LIST_COLUMNS, open_error)
        .await?
        .iter()
        .map(|r| {
            let text = |i: usize| r.get::<&str, _>(i).unwrap_or_default().to_owned();
            (text(0), text(1), text(2))
        })
        .collect())
}

/// Whether a refused login names a database that does not exist. SQL Server answers 4060
/// ("cannot open database requested by the login"); Babelfish for PostgreSQL answers 911
/// ("database does not exist"), SQL Server's own number for a `USE` of a missing database.
fn is_missing_database(code: Option<u32>) -> bool {
    matches!(code, Some(CANNOT_OPEN_DATABASE | DATABASE_DOES_NOT_EXIST))
}

/// A refused login as a [`Refusal::NoDatabase`] when it names a missing database.
fn missing_or_open_error(error: tiberius::error::Error, connection: &SqlConnection) -> StoreError {
    if is_missing_database(error.code()) {
        Refusal::NoDatabase {
            database: connection.database.clone(),
            origin: SETTING.into(),
        }
        .into()
    } else {
        open_error(error)
    }
}

/// EF's `Migrate()` creates a missing database; so do we, through `master`, unless
/// `missing` refuses it.
async fn ensure_database_exists(
    connection: &SqlConnection,
    missing: MissingDatabase,
) -> Result<(), StoreError> {
    let timeout = connection.pool.connect_timeout;
    let named = named_instance(connection);
    let error = match connect(
        tiberius_config(connection, &connection.database),
        named,
        timeout,
    )
    .await
    {
        Ok(client) => {
            let _ = client.close().await;
            return Ok(());
        }
        Err(error) => error,
    };
    if !is_missing_database(error.code()) || missing == MissingDatabase::Refuse {
        return Err(missing_or_open_error(error, connection));
    }
    tracing::info!(database = %connection.database, "the SQL Server database does not exist; creating it");
    let mut client = connect(tiberius_config(connection, "master"), named, timeout)
        .await
        .map_err(open_error)?;
    let outcome = create_database(&mut client, &connection.database).await;
    let _ = client.close().await;
    outcome
}

/// How often `CREATE DATABASE` is tried, and the pause after the first failure (doubled
/// after each further one).
const CREATE_ATTEMPTS: u32 = 3;
const CREATE_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What follows a `CREATE DATABASE` the server refused.
#[derive(Debug, PartialEq, Eq)]
enum AfterFailedCreate {
    /// Another instance created it meanwhile.
    Exists,
    TryAgain,
    Refuse,
}

/// Decides after `CREATE DATABASE` failed on its `attempt`th try. Whether the database now
/// exists is asked, not read from the error: SQL Server answers a lost race with 1801,
/// Babelfish for PostgreSQL with 2627 (a duplicate in its own catalog) or a message without
/// a SQL Server number. A missing permission is final; anything else is tried again, since
/// creating databases at the same moment fails transiently: SQL Server's 1807 (`model` is
/// locked), Babelfish's "tuple concurrently updated" (another database being created).
fn after_failed_create(exists: bool, code: Option<u32>, attempt: u32) -> AfterFailedCreate {
    if exists || code == Some(DATABASE_EXISTS) {
        AfterFailedCreate::Exists
    } else if code == Some(PERMISSION_DENIED) || attempt >= CREATE_ATTEMPTS {
        AfterFailedCreate::Refuse
    } else {
        AfterFailedCreate::TryAgain
    }
}

/// Creates `database` through a connection to `master`, as EF's `Migrate()` does.
async fn create_database(client: &mut TdsClient, database: &str) -> Result<(), StoreError> {
    let statement = format!("CREATE DATABASE [{}]", database.replace(']', "]]"));
    let mut pause = CREATE_RETRY_PAUSE;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match client.simple_query(statement.as_str()).await {
            Ok(stream) => match stream.into_results().await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            },
            Err(error) => error,
        };
        // Only the server's answer leaves the connection fit to ask again.
        if !matches!(error, tiberius::error::Error::Server(_)) {
            return Err(open_error(error));
        }
        let exists = database_exists(client, database).await?;
        match after_failed_create(exists, error.code(), attempt) {
            AfterFailedCreate::Exists => return Ok(()),
            AfterFailedCreate::TryAgain => {
                tracing::info!(database, attempt, error = %error, "creating the SQL Server database failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            AfterFailedCreate::Refuse => {
                return Err(Refusal::DatabaseNotCreated {
                    database: database.to_owned(),
                    origin: SETTING.into(),
                    source: Box::new(error),
                }
                .into());
            }
        }
    }
}

async fn database_exists(client: &mut TdsClient, database: &str) -> Result<bool, StoreError> {
    let row = client
        .query(
            "SELECT CASE WHEN DB_ID(@P1) IS NULL THEN 0 ELSE 1 END",
            &[&database],
        )
        .await
        .map_err(open_error)?
        .into_row()
        .await
        .map_err(open_error)?;
    Ok(row.and_then(|r| r.get::<i32, _>(0)) == Some(1))
}

fn user_key(row: &Row) -> Result<StoredUserKey, StoreError> {
    let id: Uuid = row
        .try_get(0)
        .map_err(store_error)?
        .ok_or_else(|| StoreError::corrupt("a UserKeys row has no id"))?;
    let key: Option<&str> = row.try_get(1).map_err(store_error)?;
    let creation: PrimitiveDateTime = row.try_get(2).map_err(store_error)?.ok_or_else(|| {
        StoreError::corrupt(format!("the UserKeys row of {id} has no creation date"))
    })?;
    let revision: Option<PrimitiveDateTime> = row.try_get(3).map_err(store_error)?;
    let last_access: Option<PrimitiveDateTime> = row.try_get(4).map_err(store_error)?;
    Ok(StoredUserKey {
        id,
        sealed_key: require_key(id, key.map(str::to_owned))?,
        creation_date: from_naive_utc(creation),
        revision_date: revision.map(from_naive_utc),
        last_access_date: last_access.map(from_naive_utc),
    })
}

/// The insert of `key` and the dates it binds after the id and the key: the creation date,
/// then whichever of the other two the row has (see [`INSERT_USER_KEY`]).
fn user_key_insert(key: &StoredUserKey) -> (&'static str, Vec<PrimitiveDateTime>) {
    let statement = INSERT_USER_KEY[usize::from(key.revision_date.is_some())]
        [usize::from(key.last_access_date.is_some())];
    let dates = [
        Some(key.creation_date),
        key.revision_date,
        key.last_access_date,
    ]
    .into_iter()
    .flatten()
    .map(to_naive_utc)
    .collect();
    (statement, dates)
}

fn key_rows(rows: &[Row]) -> Vec<KeyRow<i32>> {
    rows.iter()
        .map(|r| KeyRow {
            id: r.get::<i32, _>(0).unwrap_or_default(),
            key: r.get::<&str, _>(1).map(str::to_owned),
        })
        .collect()
}

#[async_trait]
impl StoreBackend for SqlServerStore {
    fn kind(&self) -> &'static str {
        "sqlserver"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        with_deadline(self.deadline, async {
            on_connection!(self.pool, |client| async {
                client.simple_query("SELECT 1").await?.into_results().await
            }
            .await)?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        // bb8 closes idle connections when the pool is dropped; nothing is buffered.
    }
}

#[async_trait]
impl SymmetricKeyRows for SqlServerStore {
    async fn read_key_rows(&self) -> Result<Vec<Option<String>>, StoreError> {
        let rows = self.select(self.deadline, SELECT_KEY_ROWS, &[]).await?;
        Ok(key_rows(&rows).into_iter().map(|row| row.key).collect())
    }

    async fn change_key_rows(&self, change: KeyRowChange) -> Result<ChangeAnswer, StoreError> {
        self.in_locked_transaction(store_error, |client| {
            Box::pin(async move {
                let rows = rows_of(client, SELECT_KEY_ROWS, store_error).await?;
                let plan = plan(&change, &key_rows(&rows))?;
                for write in &plan.writes {
                    match write {
                        RowWrite::Insert { key } => {
                            client
                                .execute(
                                    "INSERT INTO [ApplicationDatas] ([SymmetricKey]) VALUES (@P1)",
                                    &[&key.as_str()],
                                )
                                .await
                        }
                        RowWrite::Update { id, key } => {
                            client
                                .execute(
                                    "UPDATE [ApplicationDatas] SET [SymmetricKey] = @P1 WHERE [Id] = @P2",
                                    &[&key.as_str(), id],
                                )
                                .await
                        }
                        RowWrite::DeleteAllBut { keep } => {
                            client
                                .execute("DELETE FROM [ApplicationDatas] WHERE [Id] <> @P1", &[keep])
                                .await
                        }
                    }
                    .map_err(store_error)?;
                }
                Ok(plan.answer)
            })
        })
        .await
    }
}

/// This service's own table of recovery wraps (not upstream's), created on the first write.
const CREATE_RECOVERY_WRAPS: &str = "IF OBJECT_ID(N'[KeyConnectorRecoveryWraps]', N'U') IS NULL \
     CREATE TABLE [KeyConnectorRecoveryWraps] (\
     [KeyCheck] nvarchar(64) NOT NULL CONSTRAINT [PK_KeyConnectorRecoveryWraps] PRIMARY KEY, \
     [Fingerprint] nvarchar(64) NOT NULL, [WrappedKey] nvarchar(max) NOT NULL)";
/// The wraps, or no result at all while the table does not exist.
const SELECT_RECOVERY_WRAPS: &str = "IF OBJECT_ID(N'[KeyConnectorRecoveryWraps]', N'U') IS NOT NULL \
     SELECT [KeyCheck], [Fingerprint], [WrappedKey] FROM [KeyConnectorRecoveryWraps]";

fn recovery_wrap(row: &Row) -> Result<StoredRecoveryWrap, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get::<&str, _>(index)
            .map_err(StoreError::corrupt_from)?
            .map(str::to_owned)
            .ok_or_else(|| StoreError::corrupt("a recovery wrap has a NULL column"))
    };
    Ok(from_columns((text(0)?, text(1)?, text(2)?)))
}

#[async_trait]
impl RecoveryWrapRows for SqlServerStore {
    async fn read_wrap_rows(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
        let rows = self
            .select(self.deadline, SELECT_RECOVERY_WRAPS, &[])
            .await?;
        rows.iter().map(recovery_wrap).collect()
    }

    async fn change_wrap_rows(&self, change: WrapChange) -> Result<(), StoreError> {
        self.in_locked_transaction(store_error, |client| {
            Box::pin(async move {
                if change.adds_a_wrap() {
                    run_batch(client, CREATE_RECOVERY_WRAPS).await?;
                }
                let stored = rows_of(client, SELECT_RECOVERY_WRAPS, store_error).await?;
                let stored = stored.iter().map(recovery_wrap).collect::<Result<Vec<_>, _>>()?;
                for write in wrap_plan(&change, &stored) {
                    match &write {
                        WrapWrite::Delete { key_check } => {
                            client
                                .execute(
                                    "DELETE FROM [KeyConnectorRecoveryWraps] WHERE [KeyCheck] = @P1",
                                    &[&key_check.as_str()],
                                )
                                .await
                        }
                        WrapWrite::Insert(wrap) => {
                            client
                                .execute(
                                    "INSERT INTO [KeyConnectorRecoveryWraps] ([KeyCheck], [Fingerprint], [WrappedKey]) VALUES (@P1, @P2, @P3)",
                                    &[
                                        &wrap.key_check.as_str(),
                                        &wrap.fingerprint.as_str(),
                                        &wrap.wrapped_key.as_str(),
                                    ],
                                )
                                .await
                        }
                    }
                    .map_err(store_error)?;
                }
                Ok(())
            })
        })
        .await
    }
}

/// This service's own table of properties (not upstream's), created on the first write.
const CREATE_PROPERTIES: &str = "IF OBJECT_ID(N'[KeyConnectorProperties]', N'U') IS NULL \
     CREATE TABLE [KeyConnectorProperties] (\
     [Name] nvarchar(64) NOT NULL CONSTRAINT [PK_KeyConnectorProperties] PRIMARY KEY, \
     [Value] nvarchar(max) NOT NULL)";
/// The value, or no result at all while the table does not exist.
const SELECT_PROPERTY: &str = "IF OBJECT_ID(N'[KeyConnectorProperties]', N'U') IS NOT NULL \
     SELECT [Value] FROM [KeyConnectorProperties] WHERE [Name] = @P1";

#[async_trait]
impl PropertyStore for SqlServerStore {
    async fn read_property(&self, name: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .select(self.deadline, SELECT_PROPERTY, &[&name])
            .await?;
        rows.first()
            .map(|row| {
                row.try_get::<&str, _>(0)
                    .map_err(StoreError::corrupt_from)?
                    .map(str::to_owned)
                    .ok_or_else(|| StoreError::corrupt("a property has a NULL value"))
            })
            .transpose()
    }

    async fn write_property(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.map(str::to_owned));
        self.in_locked_transaction(store_error, |client| {
            Box::pin(async move {
                run_batch(client, CREATE_PROPERTIES).await?;
                client
                    .execute(
                        "DELETE FROM [KeyConnectorProperties] WHERE [Name] = @P1",
                        &[&name.as_str()],
                    )
                    .await
                    .map_err(store_error)?;
                if let Some(value) = &value {
                    client
                        .execute(
                            "INSERT INTO [KeyConnectorProperties] ([Name], [Value]) VALUES (@P1, @P2)",
                            &[&name.as_str(), &value.as_str()],
                        )
                        .await
                        .map_err(store_error)?;
                }
                Ok(())
            })
        })
        .await
    }
}

#[async_trait]
impl UserKeyRows for SqlServerStore {
    async fn read_row(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        let rows = self.select(self.deadline, SELECT_USER_KEY, &[&id]).await?;
        rows.first().map(user_key).transpose()
    }

    async fn list_rows(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        // A listing can be long: the deadline is for a stalled database, not a big one.
        let rows = self
            .select(self.deadline * 12, SELECT_ALL_USER_KEYS, &[])
            .await?;
        rows.iter().map(user_key).collect()
    }

    async fn insert_row(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        let (statement, dates) = user_key_insert(key);
        let sealed_key = key.sealed_key.as_str();
        let mut row: Vec<&dyn ToSql> = vec![&key.id, &sealed_key];
        row.extend(dates.iter().map(|d| d as &dyn ToSql));
        with_deadline(self.deadline, async {
            on_connection!(
                self.pool,
                |client| match client.execute(statement, &row).await {
                    Ok(_) => Ok(CreateOutcome::Created),
                    Err(e) if is_duplicate_key(&e) => Ok(CreateOutcome::AlreadyExists),
                    Err(e) => Err(e),
                }
            )
        })
        .await
    }

    async fn replace_key(&self, change: &KeyReplacement<'_>) -> Result<bool, StoreError> {
        let now = to_naive_utc(change.now);
        let replaced = self
            .execute(REPLACE_USER_KEY, &[&change.sealed_key, &now, &change.id])
            .await?;
        Ok(replaced > 0)
    }

    async fn reseal_key(&self, change: &Reseal<'_>) -> Result<bool, StoreError> {
        let resealed = self
            .execute(
                "UPDATE [UserKeys] SET [Key] = @P1 WHERE [Id] = @P2 AND [Key] = @P3",
                &[&change.resealed, &change.id, &change.expected],
            )
            .await?;
        Ok(resealed > 0)
    }

    async fn write_last_access(&self, accesses: &[LastAccess]) -> Result<(), StoreError> {
        with_deadline(self.deadline * 2, async {
            on_connection!(self.pool, |client| async {
                for (id, when) in accesses {
                    client
                        .execute(
                            "UPDATE [UserKeys] SET [LastAccessDate] = @P1 WHERE [Id] = @P2",
                            &[&to_naive_utc(*when), id],
                        )
                        .await?;
                }
                Ok(())
            }
            .await)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_to_a_missing_database_is_told_apart_from_other_refusals() {
        assert!(is_missing_database(Some(CANNOT_OPEN_DATABASE)));
        // Babelfish for PostgreSQL's answer to a login naming a missing database.
        assert!(is_missing_database(Some(DATABASE_DOES_NOT_EXIST)));
        assert!(!is_missing_database(Some(LOGIN_FAILED)));
        assert!(!is_missing_database(None));
    }

    #[test]
    fn tls_failures_at_open_are_refusals_that_name_what_to_set_not_tiberius_calls() {
        use tiberius::error::Error;
        // tiberius' own text for a certificate from an unknown CA, cut short.
        let untrusted = Error::Tls(
            "the server's certificate was rejected during the TLS handshake: UnknownIssuer. \
             To connect anyway you can: (1) trust a specific CA certificate with \
             `Config::trust_cert_ca(path)`"
                .into(),
        );
        let (problem, reason) = tls_failure(&untrusted).unwrap();
        assert_eq!(problem, UNTRUSTED_CERTIFICATE);
        assert_eq!(
            reason,
            "the server's certificate was rejected during the TLS handshake: UnknownIssuer."
        );
        let message = open_error(untrusted).to_string();
        assert!(
            message.contains("does not trust") && message.contains("SSL_CERT_FILE"),
            "{message}"
        );
        assert!(message.contains(SETTING), "{message}");
        assert!(!message.contains("Config::"), "{message}");

        let declined =
            Error::Protocol("Server does not allow the requested encryption level.".into());
        assert_eq!(tls_failure(&declined).unwrap().0, TLS_FAILED);
        assert!(matches!(open_error(declined), StoreError::Config(_)));

        let handshake = Error::Tls("received fatal alert: HandshakeFailure".into());
        assert_eq!(tls_failure(&handshake).unwrap().0, TLS_FAILED);

        // No answer at all is an outage.
        let refused = Error::Io {
            kind: std::io::ErrorKind::ConnectionRefused,
            message: "connection refused".into(),
        };
        assert!(tls_failure(&refused).is_none());
        assert!(matches!(open_error(refused), StoreError::Unavailable(_)));
    }

    #[test]
    fn a_failed_database_creation_is_retried_unless_it_exists_or_is_not_allowed() {
        use AfterFailedCreate::*;
        // Another instance won the race, whatever the server answered the loser.
        assert_eq!(after_failed_create(true, Some(2627), 1), Exists);
        assert_eq!(after_failed_create(false, Some(DATABASE_EXISTS), 1), Exists);
        assert_eq!(
            after_failed_create(true, Some(PERMISSION_DENIED), 3),
            Exists
        );
        // Concurrent creation of another database (SQL Server's `model` lock, Babelfish's
        // catalog update) is transient, up to the last attempt.
        assert_eq!(after_failed_create(false, Some(1807), 1), TryAgain);
        assert_eq!(after_failed_create(false, Some(33_557_097), 2), TryAgain);
        assert_eq!(
            after_failed_create(false, Some(1807), CREATE_ATTEMPTS),
            Refuse
        );
        assert_eq!(
            after_failed_create(false, Some(PERMISSION_DENIED), 1),
            Refuse
        );
    }

    #[test]
    fn a_user_key_insert_binds_no_null_and_each_date_to_its_column() {
        use time::macros::datetime;
        let (created, revised, accessed) = (
            datetime!(2026-01-01 00:00:00.1234567 UTC),
            datetime!(2026-01-02 00:00 UTC),
            datetime!(2026-01-03 00:00 UTC),
        );
        for (revision, last_access, values) in [
            (None, None, "(@P1, @P2, @P3, NULL, NULL)"),
            (None, Some(accessed), "(@P1, @P2, @P3, NULL, @P4)"),
            (Some(revised), None, "(@P1, @P2, @P3, @P4, NULL)"),
            (Some(revised), Some(accessed), "(@P1, @P2, @P3, @P4, @P5)"),
        ] {
            let key = StoredUserKey {
                id: Uuid::nil(),
                sealed_key: "sealed".into(),
                creation_date: created,
                revision_date: revision,
                last_access_date: last_access,
            };
            let (statement, dates) = user_key_insert(&key);
            assert!(
                statement.ends_with(&format!("VALUES {values}")),
                "{statement}"
            );
            let expected: Vec<_> = [Some(created), revision, last_access]
                .into_iter()
                .flatten()
                .map(to_naive_utc)
                .collect();
            assert_eq!(dates, expected, "{statement}");
        }
    }
}
