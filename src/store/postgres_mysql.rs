//! The `postgresql` and `mysql` stores: one sqlx-based store, two small dialects.
//!
//! Everything the two servers do alike is written here once: the statements (in PostgreSQL's
//! notation, rewritten for MySQL by `mysql::rewrite`), the `ApplicationDatas` protocol
//! through [`super::symmetric_rows`], user-key reads and writes, the EF-style migration,
//! retries of dead pooled connections and error classification. The dialects
//! (`postgres_mysql/postgres.rs`, `postgres_mysql/mysql.rs`) supply what truly differs: connect options, upstream's DDL and
//! migration id, GUID columns (`uuid` or `char(36)` text), the locks, and which server
//! errors mean "fix the settings".
//!
//! Several replicas, one truth: schema creation and every `ApplicationDatas` change run
//! under a lock every instance takes (see each dialect), so replicas starting together
//! create the schema and the symmetric key once. User-key creation relies on the primary key
//! (a duplicate insert is "already exists"), so two replicas creating one user's key give one
//! winner. Every write is committed before the API answers.
//!
//! Error classification is the safety rule of the whole service: anything that is not a
//! positive answer from the database is [`StoreError::Unavailable`], which the API turns into
//! 503 with `Retry-After`, never into "no key".

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgresql")]
mod postgres;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use time::PrimitiveDateTime;
use uuid::Uuid;

use super::recovery_wrap_rows::{
    RecoveryWrapRows, WrapChange, WrapWrite, from_columns, plan as wrap_plan,
};
use super::schema::{SchemaPlan, check_columns, schema_plan};
use super::sql::{
    BOOTSTRAP_LOCK_WAIT, from_naive_utc, log_connection_warnings, require_key, to_naive_utc_micros,
    with_deadline,
};
use super::symmetric_rows::{ChangeAnswer, KeyRow, KeyRowChange, RowWrite, SymmetricKeyRows, plan};
use super::user_key_rows::{KeyReplacement, LastAccess, Reseal, UserKeyRows};
use super::{
    CreateOutcome, MissingDatabase, PropertyStore, Refusal, SourceError, StoreBackend, StoreError,
    StoredRecoveryWrap, StoredUserKey,
};
use crate::config::SqlConnection;
use crate::config::sql_connection::SqlTlsMode;

/// Upstream's migrations on both servers record this EF Core version.
const PRODUCT_VERSION: &str = "5.0.9";

/// The pool of whichever server the settings name.
enum ServerPool {
    #[cfg(feature = "postgresql")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// Runs `$body` once per server type, with `$pool` the concrete pool and `$dialect` the
/// dialect module, so one body is compiled against each driver.
macro_rules! on_server {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "postgresql")]
            ServerPool::Postgres($p) => $body,
            #[cfg(feature = "mysql")]
            ServerPool::MySql($p) => $body,
        }
    };
    ($pool:expr, |$p:ident, $dialect:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "postgresql")]
            ServerPool::Postgres($p) => {
                use $crate::store::postgres_mysql::postgres as $dialect;
                $body
            }
            #[cfg(feature = "mysql")]
            ServerPool::MySql($p) => {
                use $crate::store::postgres_mysql::mysql as $dialect;
                $body
            }
        }
    };
}

pub struct PostgresMysqlStore {
    kind: &'static str,
    pool: ServerPool,
    statements: Statements,
    deadline: Duration,
}

/// Every statement the store runs, in the server's notation, prepared once at open.
#[derive(Clone)]
struct Statements {
    select_key_rows: Arc<str>,
    insert_key_row: Arc<str>,
    update_key_row: Arc<str>,
    delete_other_key_rows: Arc<str>,
    select_user_key: Arc<str>,
    select_all_user_keys: Arc<str>,
    insert_user_key: Arc<str>,
    replace_user_key: Arc<str>,
    reseal_user_key: Arc<str>,
    record_last_access: Arc<str>,
    migration_recorded: Arc<str>,
    record_migration: Arc<str>,
    select_recovery_wraps: Arc<str>,
    delete_recovery_wrap: Arc<str>,
    insert_recovery_wrap: Arc<str>,
    select_property: Arc<str>,
    delete_property: Arc<str>,
    insert_property: Arc<str>,
}

const USER_KEY_COLUMNS: &str = r#""Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate""#;

impl Statements {
    /// Writes each statement in PostgreSQL's notation and lets `rewrite` adapt it.
    fn new(rewrite: fn(&str) -> String) -> Self {
        let sql = |text: &str| Arc::<str>::from(rewrite(text));
        Self {
            select_key_rows: sql(
                r#"SELECT "Id", "SymmetricKey" FROM "ApplicationDatas" ORDER BY "Id""#,
            ),
            insert_key_row: sql(r#"INSERT INTO "ApplicationDatas" ("SymmetricKey") VALUES ($1)"#),
            update_key_row: sql(
                r#"UPDATE "ApplicationDatas" SET "SymmetricKey" = $1 WHERE "Id" = $2"#,
            ),
            delete_other_key_rows: sql(r#"DELETE FROM "ApplicationDatas" WHERE "Id" <> $1"#),
            select_user_key: sql(&format!(
                r#"SELECT {USER_KEY_COLUMNS} FROM "UserKeys" WHERE "Id" = $1"#
            )),
            select_all_user_keys: sql(&format!(
                r#"SELECT {USER_KEY_COLUMNS} FROM "UserKeys" ORDER BY "CreationDate", "Id""#
            )),
            insert_user_key: sql(&format!(
                r#"INSERT INTO "UserKeys" ({USER_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"#
            )),
            replace_user_key: sql(
                r#"UPDATE "UserKeys" SET "Key" = $1, "RevisionDate" = $2 WHERE "Id" = $3"#,
            ),
            reseal_user_key: sql(
                r#"UPDATE "UserKeys" SET "Key" = $1 WHERE "Id" = $2 AND "Key" = $3"#,
            ),
            record_last_access: sql(
                r#"UPDATE "UserKeys" SET "LastAccessDate" = $1 WHERE "Id" = $2"#,
            ),
            migration_recorded: sql(
                r#"SELECT 1 FROM "__EFMigrationsHistory" WHERE "MigrationId" = $1"#,
            ),
            record_migration: sql(
                r#"INSERT INTO "__EFMigrationsHistory" ("MigrationId", "ProductVersion") VALUES ($1, $2)"#,
            ),
            select_recovery_wraps: sql(
                r#"SELECT "KeyCheck", "Fingerprint", "WrappedKey" FROM "KeyConnectorRecoveryWraps""#,
            ),
            delete_recovery_wrap: sql(
                r#"DELETE FROM "KeyConnectorRecoveryWraps" WHERE "KeyCheck" = $1"#,
            ),
            insert_recovery_wrap: sql(
                r#"INSERT INTO "KeyConnectorRecoveryWraps" ("KeyCheck", "Fingerprint", "WrappedKey") VALUES ($1, $2, $3)"#,
            ),
            select_property: sql(
                r#"SELECT "Value" FROM "KeyConnectorProperties" WHERE "Name" = $1"#,
            ),
            delete_property: sql(r#"DELETE FROM "KeyConnectorProperties" WHERE "Name" = $1"#),
            insert_property: sql(
                r#"INSERT INTO "KeyConnectorProperties" ("Name", "Value") VALUES ($1, $2)"#,
            ),
        }
    }
}

/// A prepared statement, as sqlx takes it. The text is this module's own, never input.
fn run(statement: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(statement))
}

/// A `UserKeys` row as the driver decodes it, with the dialect's GUID column type.
type RawUserKey<Guid> = (
    Guid,
    Option<String>,
    PrimitiveDateTime,
    Option<PrimitiveDateTime>,
    Option<PrimitiveDateTime>,
);

fn user_key<Guid>(
    (id, key, creation, revision, last_access): RawUserKey<Guid>,
    parse_guid: fn(Guid) -> Result<Uuid, StoreError>,
) -> Result<StoredUserKey, StoreError> {
    let id = parse_guid(id)?;
    Ok(StoredUserKey {
        id,
        sealed_key: require_key(id, key)?,
        creation_date: from_naive_utc(creation),
        revision_date: revision.map(from_naive_utc),
        last_access_date: last_access.map(from_naive_utc),
    })
}

/// Whether the statement surely did not reach the database through a live session: the
/// pooled connection was dead (the server restarted) or none could be had.
fn is_connection_error(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)
    )
}

/// Classifies a driver error; see the module docs.
fn store_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::corrupt_from(error),
        other => StoreError::unavailable(other),
    }
}

/// The TLS failure in `error`, if it is one: sqlx reports a certificate that does not verify
/// as an I/O error wrapping the rustls error.
fn into_tls_failure(error: sqlx::Error) -> Result<SourceError, sqlx::Error> {
    match error {
        sqlx::Error::Tls(tls) => Ok(tls),
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            io.into_inner()
                .ok_or_else(|| sqlx::Error::Protocol("TLS failure without detail".into()))
        }
        other => Err(other),
    }
}

/// At open, a failing TLS handshake, a wrong password or a missing permission is a setting
/// to fix, not an outage: stop start-up and say so. `rejection` names the server errors
/// that mean so.
fn open_error(
    error: sqlx::Error,
    tls_problem: &'static str,
    setting: &'static str,
    rejection: fn(&sqlx::Error) -> Option<&'static str>,
) -> StoreError {
    let error = match into_tls_failure(error) {
        Ok(tls) => {
            return Refusal::Rejected {
                problem: tls_problem,
                origin: setting.into(),
                source: tls,
            }
            .into();
        }
        Err(other) => other,
    };
    match rejection(&error) {
        Some(problem) => Refusal::Rejected {
            problem,
            origin: setting.into(),
            source: Box::new(error),
        }
        .into(),
        None => store_error(error),
    }
}

/// Runs an idempotent operation, once more if the first try failed on a dead connection:
/// after a database restart every pooled connection is dead, and the first request on each
/// would otherwise fail although the database is back.
async fn retry_idempotent<T, F, Fut>(mut operation: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    match operation().await {
        Err(error) if is_connection_error(&error) => {
            tracing::debug!(%error, "pooled connection failed; retrying once on a new one");
            operation().await.map_err(store_error)
        }
        other => other.map_err(store_error),
    }
}

/// Whether this service's own table, asked about by the dialect's `exists` query (a row
/// when it exists), was created by a first write.
async fn table_exists<DB>(pool: &sqlx::Pool<DB>, exists: &'static str) -> Result<bool, StoreError>
where
    DB: sqlx::Database,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    Ok(
        retry_idempotent(|| sqlx::query(exists).fetch_optional(pool))
            .await?
            .is_some(),
    )
}

/// How a dialect creates a missing database, as EF's `Migrate()` does.
struct DatabaseCreation<O> {
    server: &'static str,
    setting: &'static str,
    /// Options for a database that always exists (`postgres`, or none on MySQL).
    maintenance: O,
    statement: String,
    is_missing: fn(&sqlx::Error) -> bool,
    /// Another replica created it first.
    already_exists: fn(&sqlx::Error) -> bool,
    open_error: fn(sqlx::Error) -> StoreError,
}

/// Connects once with `options`; creates the database first if the server says it is missing.
async fn ensure_database_exists<O>(
    options: &O,
    connection: &SqlConnection,
    creation: DatabaseCreation<O>,
    missing: MissingDatabase,
) -> Result<(), StoreError>
where
    O: ConnectOptions,
    O::Connection: Sized,
    for<'c> &'c mut O::Connection:
        sqlx::Executor<'c, Database = <O::Connection as Connection>::Database>,
{
    let timeout = connection.pool.connect_timeout;
    let unreachable = || {
        StoreError::unavailable_because(format!(
            "no connection to {} within {} s",
            creation.server,
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
    if !(creation.is_missing)(&error) {
        return Err((creation.open_error)(error));
    }
    if missing == MissingDatabase::Refuse {
        return Err(Refusal::NoDatabase {
            database: connection.database.clone(),
            origin: creation.setting.into(),
        }
        .into());
    }
    tracing::info!(database = %connection.database, "the {} database does not exist; creating it", creation.server);
    let mut conn = tokio::time::timeout(timeout, creation.maintenance.connect())
        .await
        .map_err(|_| unreachable())?
        .map_err(creation.open_error)?;
    let created = sqlx::raw_sql(AssertSqlSafe(creation.statement))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => Ok(()),
        Err(error) if (creation.already_exists)(&error) => Ok(()),
        Err(error) => Err(Refusal::DatabaseNotCreated {
            database: connection.database.clone(),
            origin: creation.setting.into(),
            source: Box::new(error),
        }
        .into()),
    }
}

/// The driver's value for `mode`, from `values` in the order of [`SqlTlsMode`]'s variants
/// (disable, prefer, require, verify CA, verify full).
fn by_tls_mode<T>(
    mode: SqlTlsMode,
    [disable, prefer, require, verify_ca, verify_full]: [T; 5],
) -> T {
    match mode {
        SqlTlsMode::Disable => disable,
        SqlTlsMode::Prefer => prefer,
        SqlTlsMode::Require => require,
        SqlTlsMode::VerifyCa => verify_ca,
        SqlTlsMode::VerifyFull => verify_full,
    }
}

/// Pool settings both servers share.
fn pool_options<DB: sqlx::Database>(connection: &SqlConnection) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(connection.pool.max_connections)
        .min_connections(connection.pool.min_connections)
        .acquire_timeout(connection.pool.connect_timeout)
        // A ping per request would cost a round trip; dead connections are retried instead.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(300))
}

impl PostgresMysqlStore {
    /// Connects to PostgreSQL, creates the database (unless `missing` refuses it) and
    /// upstream's schema if needed, and checks the schema.
    #[cfg(feature = "postgresql")]
    pub async fn open_postgres(
        connection: &SqlConnection,
        missing: MissingDatabase,
    ) -> Result<Self, StoreError> {
        log_connection_warnings(postgres::KIND, connection);
        let options = postgres::connect_options(connection);
        let creation = postgres::creation(&options, connection);
        ensure_database_exists(&options, connection, creation, missing).await?;
        let pool = ServerPool::Postgres(pool_options(connection).connect_lazy_with(options));
        Self::new(postgres::KIND, pool, connection, postgres::rewrite)
            .migrated(connection)
            .await
    }

    /// Connects to MySQL or MariaDB, creates the database (unless `missing` refuses it) and
    /// upstream's schema if needed, and checks the schema.
    #[cfg(feature = "mysql")]
    pub async fn open_mysql(
        connection: &SqlConnection,
        missing: MissingDatabase,
    ) -> Result<Self, StoreError> {
        log_connection_warnings(mysql::KIND, connection);
        let options = mysql::connect_options(connection);
        let creation = mysql::creation(&options, connection);
        ensure_database_exists(&options, connection, creation, missing).await?;
        let pool = ServerPool::MySql(pool_options(connection).connect_lazy_with(options));
        Self::new(mysql::KIND, pool, connection, mysql::rewrite)
            .migrated(connection)
            .await
    }

    /// Connects to a PostgreSQL database only to read it (a restored copy being checked):
    /// never creates the database or the schema, never records a migration, and every
    /// session is read-only on the server's side (`default_transaction_read_only`).
    #[cfg(feature = "postgresql")]
    pub async fn open_postgres_read_only(connection: &SqlConnection) -> Result<Self, StoreError> {
        log_connection_warnings(postgres::KIND, connection);
        let options = postgres::connect_options(connection);
        let creation = postgres::creation(&options, connection);
        ensure_database_exists(&options, connection, creation, MissingDatabase::Refuse).await?;
        let options = options.options([("default_transaction_read_only", "on")]);
        let pool = ServerPool::Postgres(pool_options(connection).connect_lazy_with(options));
        Self::new(postgres::KIND, pool, connection, postgres::rewrite)
            .checked_read_only(connection)
            .await
    }

    /// Connects to a MySQL or MariaDB database only to read it, as
    /// [`Self::open_postgres_read_only`] does (`SET SESSION TRANSACTION READ ONLY`).
    #[cfg(feature = "mysql")]
    pub async fn open_mysql_read_only(connection: &SqlConnection) -> Result<Self, StoreError> {
        log_connection_warnings(mysql::KIND, connection);
        let options = mysql::connect_options(connection);
        let creation = mysql::creation(&options, connection);
        ensure_database_exists(&options, connection, creation, MissingDatabase::Refuse).await?;
        let pool = pool_options(connection)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, "SET SESSION TRANSACTION READ ONLY")
                        .await
                        .map(drop)
                })
            })
            .connect_lazy_with(options);
        Self::new(
            mysql::KIND,
            ServerPool::MySql(pool),
            connection,
            mysql::rewrite,
        )
        .checked_read_only(connection)
        .await
    }

    /// A store on `pool` with its statements written for the server by `rewrite`; nothing is
    /// checked or run yet.
    fn new(
        kind: &'static str,
        pool: ServerPool,
        connection: &SqlConnection,
        rewrite: fn(&str) -> String,
    ) -> Self {
        Self {
            kind,
            pool,
            statements: Statements::new(rewrite),
            deadline: connection.pool.command_timeout,
        }
    }

    /// This store once its schema is checked without changing anything: upstream's two
    /// tables with their columns must be there.
    async fn checked_read_only(self, connection: &SqlConnection) -> Result<Self, StoreError> {
        let database = connection.database.clone();
        let check = async {
            on_server!(&self.pool, |pool, dialect| {
                let mut conn = pool.acquire().await.map_err(dialect::open_error)?;
                let tables: Vec<String> = sqlx::query_scalar(dialect::LIST_TABLES)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(dialect::open_error)?;
                let has = |name: &str| tables.iter().any(|t| t == name);
                if schema_plan(has("ApplicationDatas"), has("UserKeys"), false)?
                    == SchemaPlan::Create
                {
                    return Err(Refusal::NoKeyTables(database).into());
                }
                let columns: Vec<(String, String, String)> = sqlx::query_as(dialect::LIST_COLUMNS)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(dialect::open_error)?;
                check_columns(&columns, &dialect::COLUMNS)
            })
        };
        with_deadline(connection.pool.connect_timeout * 2, check).await?;
        Ok(self)
    }

    /// This store once upstream's schema is created or checked ([`Self::migrate`]).
    async fn migrated(self, connection: &SqlConnection) -> Result<Self, StoreError> {
        let deadline = BOOTSTRAP_LOCK_WAIT + connection.pool.connect_timeout * 2;
        with_deadline(deadline, self.migrate()).await?;
        Ok(self)
    }

    /// Like EF's `Migrate()`: creates upstream's tables and records the migration, under the
    /// bootstrap lock so that replicas starting together do it once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let sql = &self.statements;
        on_server!(&self.pool, |pool, dialect| {
            let mut conn = pool.acquire().await.map_err(dialect::open_error)?;
            let result = async {
                let mut tx = dialect::lock_schema(&mut conn).await?;
                let tables: Vec<String> = sqlx::query_scalar(dialect::LIST_TABLES)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(dialect::open_error)?;
                let has = |name: &str| tables.iter().any(|t| t == name);
                let recorded = has("__EFMigrationsHistory")
                    && sqlx::query(run(&sql.migration_recorded))
                        .bind(dialect::MIGRATION_ID)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(dialect::open_error)?
                        .is_some();
                let plan = schema_plan(has("ApplicationDatas"), has("UserKeys"), recorded)?;
                let statements: &[&'static str] = match plan {
                    SchemaPlan::Create => &dialect::CREATE_SCHEMA,
                    SchemaPlan::RecordMigration => &dialect::CREATE_SCHEMA[..1],
                    SchemaPlan::UpToDate => &[],
                };
                for statement in statements {
                    sqlx::raw_sql(*statement)
                        .execute(&mut *tx)
                        .await
                        .map_err(dialect::open_error)?;
                }
                if plan != SchemaPlan::UpToDate {
                    sqlx::query(run(&sql.record_migration))
                        .bind(dialect::MIGRATION_ID)
                        .bind(PRODUCT_VERSION)
                        .execute(&mut *tx)
                        .await
                        .map_err(dialect::open_error)?;
                }
                if plan == SchemaPlan::Create {
                    tracing::info!(
                        "created the key connector schema in the {} database",
                        dialect::SERVER
                    );
                }
                let columns: Vec<(String, String, String)> = sqlx::query_as(dialect::LIST_COLUMNS)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(dialect::open_error)?;
                check_columns(&columns, &dialect::COLUMNS)?;
                tx.commit().await.map_err(dialect::open_error)
            }
            .await;
            dialect::unlock(&mut conn).await;
            result
        })
    }
}

#[async_trait]
impl StoreBackend for PostgresMysqlStore {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn ping(&self) -> Result<(), StoreError> {
        with_deadline(self.deadline, async {
            on_server!(&self.pool, |pool| {
                retry_idempotent(|| sqlx::query("SELECT 1").execute(pool)).await?;
            });
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        on_server!(&self.pool, |pool| pool.close().await)
    }
}

#[async_trait]
impl SymmetricKeyRows for PostgresMysqlStore {
    async fn read_key_rows(&self) -> Result<Vec<Option<String>>, StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline, async {
            let rows: Vec<(i32, Option<String>)> = on_server!(&self.pool, |pool| {
                retry_idempotent(|| sqlx::query_as(run(&sql.select_key_rows)).fetch_all(pool))
                    .await?
            });
            Ok(rows.into_iter().map(|(_, key)| key).collect())
        })
        .await
    }

    async fn change_key_rows(&self, change: KeyRowChange) -> Result<ChangeAnswer, StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline + BOOTSTRAP_LOCK_WAIT, async {
            on_server!(&self.pool, |pool, dialect| {
                let mut conn = pool.acquire().await.map_err(store_error)?;
                let result = async {
                    let mut tx = dialect::lock_key_rows(&mut conn).await?;
                    let rows: Vec<(i32, Option<String>)> =
                        sqlx::query_as(run(&sql.select_key_rows))
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(store_error)?;
                    let rows: Vec<KeyRow<i32>> = rows
                        .into_iter()
                        .map(|(id, key)| KeyRow { id, key })
                        .collect();
                    let plan = plan(&change, &rows)?;
                    for write in &plan.writes {
                        let statement = match write {
                            RowWrite::Insert { key } => {
                                sqlx::query(run(&sql.insert_key_row)).bind(key)
                            }
                            RowWrite::Update { id, key } => {
                                sqlx::query(run(&sql.update_key_row)).bind(key).bind(*id)
                            }
                            RowWrite::DeleteAllBut { keep } => {
                                sqlx::query(run(&sql.delete_other_key_rows)).bind(*keep)
                            }
                        };
                        statement.execute(&mut *tx).await.map_err(store_error)?;
                    }
                    tx.commit().await.map_err(store_error)?;
                    Ok(plan.answer)
                }
                .await;
                dialect::unlock(&mut conn).await;
                result
            })
        })
        .await
    }
}

#[async_trait]
impl RecoveryWrapRows for PostgresMysqlStore {
    async fn read_wrap_rows(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline, async {
            let rows: Vec<(String, String, String)> = on_server!(&self.pool, |pool, dialect| {
                if !table_exists(pool, dialect::RECOVERY_WRAPS_EXIST).await? {
                    return Ok(Vec::new());
                }
                retry_idempotent(|| sqlx::query_as(run(&sql.select_recovery_wraps)).fetch_all(pool))
                    .await?
            });
            Ok(rows.into_iter().map(from_columns).collect())
        })
        .await
    }

    async fn change_wrap_rows(&self, change: WrapChange) -> Result<(), StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline + BOOTSTRAP_LOCK_WAIT, async {
            on_server!(&self.pool, |pool, dialect| {
                if change.adds_a_wrap() {
                    // DDL commits on its own on MySQL: create the table first, then change
                    // the wraps in one transaction.
                    sqlx::raw_sql(dialect::CREATE_RECOVERY_WRAPS)
                        .execute(pool)
                        .await
                        .map_err(store_error)?;
                } else if !table_exists(pool, dialect::RECOVERY_WRAPS_EXIST).await? {
                    return Ok(());
                }
                // Under the key rows' lock, as replicas may save wraps at once: the plan is
                // made from what no one else changes until it is written.
                let mut conn = pool.acquire().await.map_err(store_error)?;
                let result = async {
                    let mut tx = dialect::lock_key_rows(&mut conn).await?;
                    let stored: Vec<(String, String, String)> =
                        sqlx::query_as(run(&sql.select_recovery_wraps))
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(store_error)?;
                    let stored: Vec<_> = stored.into_iter().map(from_columns).collect();
                    for write in wrap_plan(&change, &stored) {
                        let statement = match &write {
                            WrapWrite::Delete { key_check } => {
                                sqlx::query(run(&sql.delete_recovery_wrap)).bind(key_check)
                            }
                            WrapWrite::Insert(wrap) => sqlx::query(run(&sql.insert_recovery_wrap))
                                .bind(&wrap.key_check)
                                .bind(&wrap.fingerprint)
                                .bind(&wrap.wrapped_key),
                        };
                        statement.execute(&mut *tx).await.map_err(store_error)?;
                    }
                    tx.commit().await.map_err(store_error)
                }
                .await;
                dialect::unlock(&mut conn).await;
                result
            })
        })
        .await
    }
}

#[async_trait]
impl PropertyStore for PostgresMysqlStore {
    async fn read_property(&self, name: &str) -> Result<Option<String>, StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline, async {
            Ok(on_server!(&self.pool, |pool, dialect| {
                if !table_exists(pool, dialect::PROPERTIES_EXIST).await? {
                    return Ok(None);
                }
                retry_idempotent(|| {
                    sqlx::query_scalar(run(&sql.select_property))
                        .bind(name)
                        .fetch_optional(pool)
                })
                .await?
            }))
        })
        .await
    }

    async fn write_property(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline, async {
            on_server!(&self.pool, |pool, dialect| {
                // DDL commits on its own on MySQL: create the table first, then change the
                // row in one transaction.
                sqlx::raw_sql(dialect::CREATE_PROPERTIES)
                    .execute(pool)
                    .await
                    .map_err(store_error)?;
                let mut tx = pool.begin().await.map_err(store_error)?;
                sqlx::query(run(&sql.delete_property))
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                if let Some(value) = value {
                    sqlx::query(run(&sql.insert_property))
                        .bind(name)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)
            })
        })
        .await
    }
}

#[async_trait]
impl UserKeyRows for PostgresMysqlStore {
    async fn read_row(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline, async {
            on_server!(&self.pool, |pool, dialect| {
                let row: Option<RawUserKey<dialect::Guid>> = retry_idempotent(|| {
                    sqlx::query_as(run(&sql.select_user_key))
                        .bind(dialect::guid(id))
                        .fetch_optional(pool)
                })
                .await?;
                row.map(|row| user_key(row, dialect::parse_guid))
                    .transpose()
            })
        })
        .await
    }

    async fn list_rows(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        let sql = &self.statements;
        // A listing can be long: the deadline is for a stalled database, not a big one.
        with_deadline(self.deadline * 12, async {
            on_server!(&self.pool, |pool, dialect| {
                let rows: Vec<RawUserKey<dialect::Guid>> = retry_idempotent(|| {
                    sqlx::query_as(run(&sql.select_all_user_keys)).fetch_all(pool)
                })
                .await?;
                rows.into_iter()
                    .map(|row| user_key(row, dialect::parse_guid))
                    .collect()
            })
        })
        .await
    }

    async fn insert_row(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        let sql = &self.statements;
        // Not retried: if the first try committed and only the answer was lost, a retry would
        // report "already exists" for the key it just stored.
        with_deadline(self.deadline, async {
            let result = on_server!(&self.pool, |pool, dialect| {
                sqlx::query(run(&sql.insert_user_key))
                    .bind(dialect::guid(key.id))
                    .bind(&key.sealed_key)
                    .bind(to_naive_utc_micros(key.creation_date))
                    .bind(key.revision_date.map(to_naive_utc_micros))
                    .bind(key.last_access_date.map(to_naive_utc_micros))
                    .execute(pool)
                    .await
                    .map(|_| ())
            });
            match result {
                Ok(()) => Ok(CreateOutcome::Created),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    Ok(CreateOutcome::AlreadyExists)
                }
                Err(error) => Err(store_error(error)),
            }
        })
        .await
    }

    async fn replace_key(&self, change: &KeyReplacement<'_>) -> Result<bool, StoreError> {
        let sql = &self.statements;
        let now = to_naive_utc_micros(change.now);
        // Idempotent, so a dead pooled connection is retried. MySQL connections report
        // matched rows (CLIENT_FOUND_ROWS), not changed rows.
        with_deadline(self.deadline, async {
            let replaced = on_server!(&self.pool, |pool, dialect| {
                retry_idempotent(|| {
                    sqlx::query(run(&sql.replace_user_key))
                        .bind(change.sealed_key)
                        .bind(now)
                        .bind(dialect::guid(change.id))
                        .execute(pool)
                })
                .await?
                .rows_affected()
            });
            Ok(replaced > 0)
        })
        .await
    }

    async fn reseal_key(&self, change: &Reseal<'_>) -> Result<bool, StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline, async {
            let resealed = on_server!(&self.pool, |pool, dialect| {
                retry_idempotent(|| {
                    sqlx::query(run(&sql.reseal_user_key))
                        .bind(change.resealed)
                        .bind(dialect::guid(change.id))
                        .bind(change.expected)
                        .execute(pool)
                })
                .await?
                .rows_affected()
            });
            Ok(resealed > 0)
        })
        .await
    }

    async fn write_last_access(&self, accesses: &[LastAccess]) -> Result<(), StoreError> {
        let sql = &self.statements;
        with_deadline(self.deadline * 2, async {
            on_server!(&self.pool, |pool, dialect| {
                let mut tx = pool.begin().await.map_err(store_error)?;
                for (id, when) in accesses {
                    sqlx::query(run(&sql.record_last_access))
                        .bind(to_naive_utc_micros(*when))
                        .bind(dialect::guid(*id))
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)
            })
        })
        .await
    }
}
