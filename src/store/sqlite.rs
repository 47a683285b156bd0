//! The `sqlite` store: upstream's EF Core schema in a SQLite file.
//!
//! The file stays exactly what upstream's EF Core SQLite provider reads and writes: tables
//! `ApplicationDatas`, `UserKeys` and `__EFMigrationsHistory` (with the `InitialCreate` row),
//! GUIDs as upper-case TEXT, dates as `yyyy-MM-dd HH:mm:ss.FFFFFFF` TEXT. So either service can
//! open a database the other created.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit is on disk before the API
//! answers 200 and survives `kill -9` or power loss. Every read-modify-write runs in a
//! `BEGIN IMMEDIATE` transaction on the single writer connection, which takes SQLite's write
//! lock up front: writers, even from other processes, queue (bounded by the busy timeout)
//! instead of deadlocking. Writes run on the blocking thread pool, since they fsync.
//!
//! Reads: WAL lets readers proceed while a write commits. A primary-key lookup on a warm page
//! cache takes microseconds, less than handing it to another thread and back, which was most
//! of the cost of `GET /user-keys`. So a read runs on the calling thread when one of the
//! reader connections is free, and on the blocking pool otherwise. On the calling thread it
//! never waits for a lock: one that another process holds sends the read to the blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::recovery_wrap_rows::{
    RecoveryWrapRows, WrapChange, WrapWrite, from_columns, plan as wrap_plan,
};
use super::schema::{ColumnTypes, SchemaPlan, check_columns, schema_plan};
use super::symmetric_rows::{ChangeAnswer, KeyRow, KeyRowChange, RowWrite, SymmetricKeyRows, plan};
use super::user_key_rows::{KeyReplacement, LastAccess, Reseal, UserKeyRows};
use super::{
    CreateOutcome, Fault, MissingDatabase, NamedBy, PropertyStore, Refusal, StoreBackend,
    StoreError, StoredRecoveryWrap, StoredUserKey,
};
use crate::config::SqliteConnection;
use crate::dotnet_time;
use crate::private_file::owner_only;

/// The setting naming the service's SQLite database.
const SETTING: &str = "keyConnectorSettings__database__sqliteConnectionString";

/// Upstream's SQLite migration and the EF Core version its snapshot records.
const MIGRATION_ID: &str = "20210820155938_InitialCreate";
const PRODUCT_VERSION: &str = "5.0.9";

/// The DDL EF Core generates for upstream's `InitialCreate` migration on SQLite.
const CREATE_APPLICATION_DATAS: &str = r#"CREATE TABLE "ApplicationDatas" (
    "Id" INTEGER NOT NULL CONSTRAINT "PK_ApplicationDatas" PRIMARY KEY AUTOINCREMENT,
    "SymmetricKey" TEXT NULL
)"#;
const CREATE_USER_KEYS: &str = r#"CREATE TABLE "UserKeys" (
    "Id" TEXT NOT NULL CONSTRAINT "PK_UserKeys" PRIMARY KEY,
    "Key" TEXT NULL,
    "CreationDate" TEXT NOT NULL,
    "RevisionDate" TEXT NULL,
    "LastAccessDate" TEXT NULL
)"#;
const CREATE_MIGRATIONS_HISTORY: &str = r#"CREATE TABLE IF NOT EXISTS "__EFMigrationsHistory" (
    "MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY,
    "ProductVersion" TEXT NOT NULL
)"#;

/// `SELECT` of every `UserKeys` column, followed by the given clause (a literal).
macro_rules! select_user_key {
    ($clause:literal) => {
        concat!(
            r#"SELECT "Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate" FROM "UserKeys" "#,
            $clause
        )
    };
}

/// How long a statement waits for another writer's lock before the request fails with 503.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader connections: one per core of the machines this usually runs on.
const READERS: usize = 2;

pub struct SqliteStore {
    shared: Arc<Connections>,
}

struct Connections {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
}

/// Creates a new database file owner-only (0600) before SQLite opens it. SQLite gives the
/// `-wal`, `-shm` and `-journal` files it makes the database file's permissions, so all of
/// them stay unreadable to other local users. An existing file keeps the operator's choice.
fn create_private_if_absent(path: &std::path::Path) -> std::io::Result<()> {
    match owner_only(std::fs::OpenOptions::new().write(true).create_new(true)).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::unavailable(error)
}

/// A blocking task that panicked or was cancelled.
fn task_failed(error: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(Fault::caused("SQLite task failed", error))
}

fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    connection.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteStore {
    /// Opens the database named by the connection string, creating the file and schema if
    /// needed (as upstream's migration would) or refusing a missing file, as `missing` says
    /// (a read-only connection always refuses it). A refusal names `named_by` as its origin.
    pub async fn open(
        connection: &SqliteConnection,
        named_by: NamedBy,
        missing: MissingDatabase,
    ) -> Result<Self, StoreError> {
        let settings = connection.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(&settings, named_by, missing))
            .await
            .map_err(StoreError::unavailable)?
    }

    fn open_blocking(
        settings: &SqliteConnection,
        named_by: NamedBy,
        missing: MissingDatabase,
    ) -> Result<Self, StoreError> {
        let path = settings.path.clone();
        let origin = named_by.origin(SETTING);
        if (settings.read_only || missing == MissingDatabase::Refuse) && !path.exists() {
            return Err(Refusal::NoDatabase {
                database: path.display().to_string(),
                origin,
            }
            .into());
        }
        let config_error = |e: rusqlite::Error| {
            StoreError::Config(Refusal::Unusable(Fault::caused(
                format!(
                    "cannot open the SQLite database {} ({origin})",
                    path.display()
                ),
                e,
            )))
        };
        let base = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let writer_flags = if settings.read_only {
            base | OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            base | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        if !settings.read_only {
            create_private_if_absent(&path).map_err(|e| {
                StoreError::Config(Refusal::Unusable(Fault::caused(
                    format!(
                        "cannot create the SQLite database {} ({origin})",
                        path.display()
                    ),
                    e,
                )))
            })?;
        }
        let writer = Connection::open_with_flags(&path, writer_flags).map_err(config_error)?;
        configure(&writer, !settings.read_only, BUSY_TIMEOUT).map_err(config_error)?;
        migrate(&writer, settings.read_only)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader =
                    Connection::open_with_flags(&path, base | OpenFlags::SQLITE_OPEN_READ_ONLY)
                        .map_err(config_error)?;
                // Zero: see [`SqliteStore::read`].
                configure(&reader, false, Duration::ZERO).map_err(config_error)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            shared: Arc::new(Connections {
                path,
                writer: Mutex::new(writer),
                readers,
            }),
        })
    }

    /// Runs a read on the calling thread if a reader is free, else on the blocking pool.
    ///
    /// On the calling thread SQLite may not wait for a lock (readers' busy timeout is zero):
    /// a lock held by another process (a `sqlite3` shell inside a transaction, a database in
    /// exclusive locking mode) would otherwise put a Tokio worker to sleep for up to
    /// [`BUSY_TIMEOUT`], and with it every connection that worker serves. A read turned away
    /// that way is run again on the blocking pool, where it waits as long as a write does.
    async fn read<T: Send + 'static>(
        &self,
        query: impl Fn(&Connection) -> Result<T, StoreError> + Clone + Send + 'static,
    ) -> Result<T, StoreError> {
        for reader in &self.shared.readers {
            if let Ok(connection) = reader.try_lock() {
                match query(&connection) {
                    Err(error) if is_busy(&error) => break,
                    answer => return answer,
                }
            }
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let connection = lock(&shared.readers[0]);
            connection.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
            let answer = query(&connection);
            connection
                .busy_timeout(Duration::ZERO)
                .map_err(unavailable)?;
            answer
        })
        .await
        .map_err(task_failed)?
    }

    /// Runs a write transaction (`BEGIN IMMEDIATE`) on the blocking pool. It completes even
    /// if the request that started it goes away, so nothing is left half done.
    async fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut connection = lock(&shared.writer);
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let result = change(&transaction)?;
            transaction.commit().map_err(unavailable)?;
            Ok(result)
        })
        .await
        .map_err(task_failed)?
    }
}

/// Whether `error` is SQLite's answer that another connection holds a lock it needs.
fn is_busy(error: &StoreError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            error.downcast_ref::<rusqlite::Error>()
        {
            return matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            );
        }
        cause = error.source();
    }
    false
}

/// `busy_timeout` is how long a statement on this connection waits for another's lock.
fn configure(
    connection: &Connection,
    writer: bool,
    busy_timeout: Duration,
) -> rusqlite::Result<()> {
    connection.busy_timeout(busy_timeout)?;
    if writer {
        let mode: String =
            connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite could not switch to WAL; writes still durable, reads may wait");
        }
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// The types `PRAGMA table_info` reports for upstream's columns.
const COLUMNS: ColumnTypes = ColumnTypes::new("INTEGER", "TEXT", "TEXT", "TEXT");

/// Creates upstream's schema in an empty database, or checks an existing one. A read-only
/// database is only checked.
fn migrate(connection: &Connection, read_only: bool) -> Result<(), StoreError> {
    if read_only {
        if current_schema_plan(connection)? != SchemaPlan::Create {
            check_columns(&columns(connection)?, &COLUMNS)?;
        }
        return Ok(());
    }
    // `BEGIN IMMEDIATE` so that two instances starting on one new file create it once.
    connection
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(unavailable)?;
    let result = (|| {
        let plan = current_schema_plan(connection)?;
        let statements: &[&str] = match plan {
            SchemaPlan::Create => &[
                CREATE_APPLICATION_DATAS,
                CREATE_USER_KEYS,
                CREATE_MIGRATIONS_HISTORY,
            ],
            // Tables without EF's record would make upstream try to create them again and
            // fail; record the migration they correspond to.
            SchemaPlan::RecordMigration => &[CREATE_MIGRATIONS_HISTORY],
            SchemaPlan::UpToDate => &[],
        };
        for statement in statements {
            connection.execute(statement, []).map_err(unavailable)?;
        }
        if plan != SchemaPlan::UpToDate {
            connection
                .execute(
                    r#"INSERT INTO "__EFMigrationsHistory" ("MigrationId", "ProductVersion") VALUES (?1, ?2)"#,
                    [MIGRATION_ID, PRODUCT_VERSION],
                )
                .map_err(unavailable)?;
        }
        if plan == SchemaPlan::Create {
            tracing::info!("created the key connector schema in a new SQLite database");
        }
        check_columns(&columns(connection)?, &COLUMNS)
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    connection.execute_batch(end).map_err(unavailable)?;
    result
}

fn current_schema_plan(connection: &Connection) -> Result<SchemaPlan, StoreError> {
    let mut statement = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .map_err(unavailable)?;
    let tables: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .map_err(unavailable)?
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
    let has = |name: &str| tables.iter().any(|t| t == name);
    let recorded = has("__EFMigrationsHistory")
        && connection
            .query_row(
                r#"SELECT 1 FROM "__EFMigrationsHistory" WHERE "MigrationId" = ?1"#,
                [MIGRATION_ID],
                |_| Ok(()),
            )
            .optional()
            .map_err(unavailable)?
            .is_some();
    schema_plan(has("ApplicationDatas"), has("UserKeys"), recorded)
}

/// `(table, column, type)` of upstream's two tables, as `PRAGMA table_info` reports them.
fn columns(connection: &Connection) -> Result<Vec<(String, String, String)>, StoreError> {
    let mut columns = Vec::new();
    for table in ["ApplicationDatas", "UserKeys"] {
        let mut statement = connection
            .prepare(&format!(r#"PRAGMA table_info("{table}")"#))
            .map_err(unavailable)?;
        let rows = statement
            .query_map([], |row| {
                Ok((table.to_owned(), row.get("name")?, row.get("type")?))
            })
            .map_err(unavailable)?;
        for row in rows {
            columns.push(row.map_err(unavailable)?);
        }
    }
    Ok(columns)
}

/// GUIDs as EF Core's SQLite provider writes them.
fn guid_text(id: Uuid) -> String {
    id.hyphenated()
        .encode_upper(&mut Uuid::encode_buffer())
        .to_owned()
}

fn lower_guid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// A row as it comes out of SQLite, before its text is interpreted.
type RawRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn raw_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn parse_row(
    (id_text, key, created, revised, accessed): RawRow,
) -> Result<StoredUserKey, StoreError> {
    let id = Uuid::try_parse(&id_text)
        .map_err(|_| StoreError::corrupt(format!("UserKeys row `{id_text}`: Id is not a GUID")))?;
    let corrupt = |what: String| StoreError::corrupt(format!("UserKeys row {id}: {what}"));
    let date = |column: &str, text: Option<String>| {
        text.map(|t| dotnet_time::parse(&t).map_err(|e| corrupt(format!("{column}: {e}"))))
            .transpose()
    };
    Ok(StoredUserKey {
        id,
        sealed_key: key.ok_or_else(|| corrupt("Key is NULL".into()))?,
        creation_date: date("CreationDate", created)?
            .ok_or_else(|| corrupt("CreationDate is NULL".into()))?,
        revision_date: date("RevisionDate", revised)?,
        last_access_date: date("LastAccessDate", accessed)?,
    })
}

fn key_rows(connection: &Connection) -> Result<Vec<KeyRow<i64>>, StoreError> {
    connection
        .prepare_cached(r#"SELECT "Id", "SymmetricKey" FROM "ApplicationDatas" ORDER BY "Id""#)
        .and_then(|mut s| {
            s.query_map([], |row| {
                Ok(KeyRow {
                    id: row.get(0)?,
                    key: row.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(unavailable)
}

fn write_key_row(connection: &Connection, write: &RowWrite<i64>) -> rusqlite::Result<usize> {
    match write {
        RowWrite::Insert { key } => connection.execute(
            r#"INSERT INTO "ApplicationDatas" ("SymmetricKey") VALUES (?1)"#,
            [key],
        ),
        RowWrite::Update { id, key } => connection.execute(
            r#"UPDATE "ApplicationDatas" SET "SymmetricKey" = ?1 WHERE "Id" = ?2"#,
            params![key, id],
        ),
        RowWrite::DeleteAllBut { keep } => {
            connection.execute(r#"DELETE FROM "ApplicationDatas" WHERE "Id" <> ?1"#, [keep])
        }
    }
}

#[async_trait]
impl StoreBackend for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|connection| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }

    async fn close(&self) {
        // Checkpoint the WAL into the main file so the database is a single file again for
        // whoever opens it next (the official service included).
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || {
            let writer = lock(&shared.writer);
            if let Err(error) = writer.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::debug!(%error, path = %shared.path.display(), "WAL checkpoint on close failed");
            }
        })
        .await;
    }
}

#[async_trait]
impl UserKeyRows for SqliteStore {
    async fn read_row(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        // Upstream writes upper case; a lower-case row (from other tooling) is found too.
        // Two equality lookups rather than one `IN (?1, ?2)`: the upper-case one almost
        // always answers, and an `IN` list costs SQLite a temporary set on every read.
        let raw = self
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(select_user_key!(r#"WHERE "Id" = ?1"#))
                    .map_err(unavailable)?;
                match statement.query_row([guid_text(id)], raw_row).optional() {
                    Ok(None) => statement
                        .query_row([lower_guid_text(id)], raw_row)
                        .optional(),
                    found => found,
                }
                .map_err(unavailable)
            })
            .await?;
        raw.map(parse_row).transpose()
    }

    async fn list_rows(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        let rows = self
            .read(|connection| {
                let mut statement = connection
                    .prepare(select_user_key!(r#"ORDER BY "CreationDate""#))
                    .map_err(unavailable)?;
                let rows = statement
                    .query_map([], raw_row)
                    .map_err(unavailable)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)?;
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(parse_row).collect()
    }

    async fn insert_row(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        let key = key.clone();
        self.write(move |tx| {
            let exists = tx
                .prepare_cached(r#"SELECT 1 FROM "UserKeys" WHERE "Id" IN (?1, ?2)"#)
                .and_then(|mut s| {
                    s.query_row([guid_text(key.id), lower_guid_text(key.id)], |_| Ok(()))
                        .optional()
                })
                .map_err(unavailable)?;
            if exists.is_some() {
                return Ok(CreateOutcome::AlreadyExists);
            }
            tx.execute(
                r#"INSERT INTO "UserKeys" ("Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate") VALUES (?1, ?2, ?3, ?4, ?5)"#,
                params![
                    guid_text(key.id),
                    key.sealed_key,
                    dotnet_time::format_sqlite(key.creation_date),
                    key.revision_date.map(dotnet_time::format_sqlite),
                    key.last_access_date.map(dotnet_time::format_sqlite),
                ],
            )
            .map_err(unavailable)?;
            Ok(CreateOutcome::Created)
        })
        .await
    }

    async fn replace_key(&self, change: &KeyReplacement<'_>) -> Result<bool, StoreError> {
        let (id, sealed_key) = (change.id, change.sealed_key.to_owned());
        let now = dotnet_time::format_sqlite(change.now);
        self.write(move |tx| {
            let replaced = tx
                .execute(
                    r#"UPDATE "UserKeys" SET "Key" = ?1, "RevisionDate" = ?2 WHERE "Id" IN (?3, ?4)"#,
                    params![sealed_key, now, guid_text(id), lower_guid_text(id)],
                )
                .map_err(unavailable)?;
            Ok(replaced > 0)
        })
        .await
    }

    async fn reseal_key(&self, change: &Reseal<'_>) -> Result<bool, StoreError> {
        let id = change.id;
        let (expected, resealed) = (change.expected.to_owned(), change.resealed.to_owned());
        self.write(move |tx| {
            let changed = tx
                .execute(
                    r#"UPDATE "UserKeys" SET "Key" = ?1 WHERE "Id" IN (?2, ?3) AND "Key" = ?4"#,
                    params![resealed, guid_text(id), lower_guid_text(id), expected],
                )
                .map_err(unavailable)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn write_last_access(&self, accesses: &[LastAccess]) -> Result<(), StoreError> {
        let accesses = accesses.to_vec();
        self.write(move |tx| {
            let mut statement = tx
                .prepare_cached(
                    r#"UPDATE "UserKeys" SET "LastAccessDate" = ?1 WHERE "Id" IN (?2, ?3)"#,
                )
                .map_err(unavailable)?;
            for (id, when) in accesses {
                statement
                    .execute(params![
                        dotnet_time::format_sqlite(when),
                        guid_text(id),
                        lower_guid_text(id)
                    ])
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SymmetricKeyRows for SqliteStore {
    async fn read_key_rows(&self) -> Result<Vec<Option<String>>, StoreError> {
        self.read(|connection| {
            Ok(key_rows(connection)?
                .into_iter()
                .map(|row| row.key)
                .collect())
        })
        .await
    }

    async fn change_key_rows(&self, change: KeyRowChange) -> Result<ChangeAnswer, StoreError> {
        self.write(move |tx| {
            let plan = plan(&change, &key_rows(tx)?)?;
            for write in &plan.writes {
                write_key_row(tx, write).map_err(unavailable)?;
            }
            Ok(plan.answer)
        })
        .await
    }
}

/// This service's own table of recovery wraps, created on the first write.
const CREATE_RECOVERY_WRAPS: &str = r#"CREATE TABLE IF NOT EXISTS "KeyConnectorRecoveryWraps" (
    "KeyCheck" TEXT NOT NULL CONSTRAINT "PK_KeyConnectorRecoveryWraps" PRIMARY KEY,
    "Fingerprint" TEXT NOT NULL,
    "WrappedKey" TEXT NOT NULL
)"#;

/// Whether this service's own table `name` was created (by a first write).
fn table_exists(connection: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()
        .map_err(unavailable)?
        .is_some())
}

fn recovery_wraps(connection: &Connection) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
    if !table_exists(connection, super::RECOVERY_WRAPS_TABLE)? {
        return Ok(Vec::new());
    }
    connection
        .prepare_cached(
            r#"SELECT "KeyCheck", "Fingerprint", "WrappedKey" FROM "KeyConnectorRecoveryWraps""#,
        )
        .and_then(|mut s| {
            s.query_map([], |row| {
                Ok(from_columns((row.get(0)?, row.get(1)?, row.get(2)?)))
            })?
            .collect()
        })
        .map_err(unavailable)
}

#[async_trait]
impl RecoveryWrapRows for SqliteStore {
    async fn read_wrap_rows(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
        self.read(recovery_wraps).await
    }

    async fn change_wrap_rows(&self, change: WrapChange) -> Result<(), StoreError> {
        self.write(move |tx| {
            if change.adds_a_wrap() {
                tx.execute(CREATE_RECOVERY_WRAPS, []).map_err(unavailable)?;
            }
            for write in wrap_plan(&change, &recovery_wraps(tx)?) {
                match write {
                    WrapWrite::Delete { key_check } => tx.execute(
                        r#"DELETE FROM "KeyConnectorRecoveryWraps" WHERE "KeyCheck" = ?1"#,
                        [key_check],
                    ),
                    WrapWrite::Insert(wrap) => tx.execute(
                        r#"INSERT INTO "KeyConnectorRecoveryWraps" ("KeyCheck", "Fingerprint", "WrappedKey") VALUES (?1, ?2, ?3)"#,
                        params![wrap.key_check, wrap.fingerprint, wrap.wrapped_key],
                    ),
                }
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

/// This service's own table of properties, created on the first write.
const CREATE_PROPERTIES: &str = r#"CREATE TABLE IF NOT EXISTS "KeyConnectorProperties" (
    "Name" TEXT NOT NULL CONSTRAINT "PK_KeyConnectorProperties" PRIMARY KEY,
    "Value" TEXT NOT NULL
)"#;

fn property(connection: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    if !table_exists(connection, super::PROPERTIES_TABLE)? {
        return Ok(None);
    }
    connection
        .query_row(
            r#"SELECT "Value" FROM "KeyConnectorProperties" WHERE "Name" = ?1"#,
            [name],
            |row| row.get(0),
        )
        .optional()
        .map_err(unavailable)
}

#[async_trait]
impl PropertyStore for SqliteStore {
    async fn read_property(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.read(move |connection| property(connection, &name))
            .await
    }

    async fn write_property(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.map(str::to_owned));
        self.write(move |tx| {
            tx.execute(CREATE_PROPERTIES, []).map_err(unavailable)?;
            tx.execute(
                r#"DELETE FROM "KeyConnectorProperties" WHERE "Name" = ?1"#,
                [&name],
            )
            .map_err(unavailable)?;
            if let Some(value) = value {
                tx.execute(
                    r#"INSERT INTO "KeyConnectorProperties" ("Name", "Value") VALUES (?1, ?2)"#,
                    params![name, value],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NamedBy, UserKeyStore};

    /// Rows written by other tooling with a lower-case `Id` are read like upstream's
    /// upper-case ones; an upper-case row wins when both exist.
    #[tokio::test]
    async fn reads_upper_case_ids_first_and_lower_case_ones_too() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SqliteConnection {
            path: dir.path().join("keys.db"),
            read_only: false,
        };
        let store = SqliteStore::open(&settings, NamedBy::Setting, MissingDatabase::Create)
            .await
            .unwrap();
        let (lower_only, both, absent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let insert = |id: String, key: &str| {
            let connection = Connection::open(&settings.path).unwrap();
            connection
                .execute(
                    r#"INSERT INTO "UserKeys" ("Id", "Key", "CreationDate") VALUES (?1, ?2, '2024-01-02 03:04:05')"#,
                    params![id, key],
                )
                .unwrap();
        };
        insert(lower_guid_text(lower_only), "lower");
        insert(lower_guid_text(both), "lower");
        insert(guid_text(both), "upper");

        let read = |id| store.read_user_key(id);
        assert_eq!(read(lower_only).await.unwrap().unwrap().sealed_key, "lower");
        assert_eq!(read(both).await.unwrap().unwrap().sealed_key, "upper");
        assert!(read(absent).await.unwrap().is_none());
    }

    /// A read that meets another connection's lock waits for it on the blocking pool and
    /// reads once the lock is gone. On this single-threaded runtime the spawned read runs
    /// when the test yields; had it waited inside SQLite on the async thread, the test would
    /// get the thread back only once the busy timeout ran out and the read had failed with
    /// the lock still held, so the read would be finished. Held off the thread, it cannot
    /// finish while the lock is held, however long that takes.
    #[tokio::test]
    async fn a_read_waiting_for_a_lock_leaves_the_async_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let writable = SqliteConnection {
            path: path.clone(),
            read_only: false,
        };
        let store = SqliteStore::open(&writable, NamedBy::Setting, MissingDatabase::Create)
            .await
            .unwrap();
        store.close().await;
        drop(store);
        // A rollback-journal database, as another tool may leave it: there a writer's
        // EXCLUSIVE lock keeps every reader out (WAL would let them in).
        let blocker = Connection::open(&path).unwrap();
        let mode: String = blocker
            .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let read_only = SqliteConnection {
            path,
            read_only: true,
        };
        let store = Arc::new(
            SqliteStore::open(&read_only, NamedBy::Setting, MissingDatabase::Refuse)
                .await
                .unwrap(),
        );
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let reader = Arc::clone(&store);
        let read = tokio::spawn(async move { reader.read_user_key(Uuid::new_v4()).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !read.is_finished(),
            "the read is still waiting for the lock, off the async thread"
        );
        blocker.execute_batch("COMMIT").unwrap();
        assert!(read.await.unwrap().unwrap().is_none(), "then it reads");

        // Later reads answer as before.
        assert!(store.read_user_key(Uuid::new_v4()).await.unwrap().is_none());
    }
}
