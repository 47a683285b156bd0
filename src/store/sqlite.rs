//! The `sqlite` store: upstream's EF Core schema in a SQLite file.
//!
//! The file stays exactly what upstream's EF Core SQLite provider reads and writes: tables
//! `ApplicationDatas`, `UserKeys` and `__EFMigrationsHistory` (with the `InitialCreate` row),
//! GUIDs as upper-case TEXT, dates as `yyyy-MM-dd HH:mm:ss.FFFFFFF` TEXT. So either service can
//! open a database the other created.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit is on disk before the API
//! answers 200 and survives `kill -9` or power loss; WAL also lets reads run while a write
//! commits. Every read-modify-write runs in a `BEGIN IMMEDIATE` transaction, which takes the
//! write lock up front: concurrent writers, even from other processes, queue instead of
//! deadlocking, and the busy timeout bounds the wait.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{CreateOutcome, PutOutcome, StoreError, StoredUserKey, UserKeyStore};
use crate::config::SqliteConnection;
use crate::dotnet_time;

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

/// How long a statement waits for another writer's lock before the request fails with 503.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and schema if needed, as upstream's migration would) the
    /// database named by the connection string.
    pub async fn open(connection: &SqliteConnection) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(&connection.path)
            .create_if_missing(!connection.read_only)
            .read_only(connection.read_only)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Config(format!(
                    "cannot open the SQLite database {} (keyConnectorSettings__database__sqliteConnectionString): {e}",
                    connection.path.display()
                ))
            })?;
        let store = Self { pool };
        store.migrate(connection.read_only).await?;
        Ok(store)
    }

    /// Creates upstream's schema in an empty database, or checks an existing one.
    async fn migrate(&self, read_only: bool) -> Result<(), StoreError> {
        let mut tx = if read_only {
            self.pool.begin().await.map_err(unavailable)?
        } else {
            self.pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(unavailable)?
        };
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
        let has = |name: &str| tables.iter().any(|t| t == name);
        let history_row: Option<String> = if has("__EFMigrationsHistory") {
            sqlx::query_scalar(
                r#"SELECT "MigrationId" FROM "__EFMigrationsHistory" WHERE "MigrationId" = ?"#,
            )
            .bind(MIGRATION_ID)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        } else {
            None
        };

        match (has("ApplicationDatas"), has("UserKeys")) {
            (false, false) => {
                if history_row.is_some() {
                    return Err(StoreError::Config(
                        "the database records upstream's InitialCreate migration but its tables are missing; refusing to guess"
                            .into(),
                    ));
                }
                if read_only {
                    return Err(StoreError::Config(
                        "the database is empty and opened read-only (Mode=ReadOnly)".into(),
                    ));
                }
                for statement in [
                    CREATE_APPLICATION_DATAS,
                    CREATE_USER_KEYS,
                    CREATE_MIGRATIONS_HISTORY,
                ] {
                    sqlx::query(statement)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                record_migration(&mut tx).await?;
                tracing::info!("created the key connector schema in a new SQLite database");
            }
            (true, true) => {
                check_columns(
                    &mut tx,
                    "ApplicationDatas",
                    &[("Id", "INTEGER"), ("SymmetricKey", "TEXT")],
                )
                .await?;
                check_columns(
                    &mut tx,
                    "UserKeys",
                    &[
                        ("Id", "TEXT"),
                        ("Key", "TEXT"),
                        ("CreationDate", "TEXT"),
                        ("RevisionDate", "TEXT"),
                        ("LastAccessDate", "TEXT"),
                    ],
                )
                .await?;
                if history_row.is_none() && !read_only {
                    // Tables without EF's record would make upstream try to create them
                    // again and fail; record the migration they correspond to.
                    sqlx::query(CREATE_MIGRATIONS_HISTORY)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    record_migration(&mut tx).await?;
                }
            }
            _ => {
                return Err(StoreError::Config(
                    "the database has only one of the tables `ApplicationDatas` and `UserKeys`; it is not a key connector database"
                        .into(),
                ));
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn write_transaction(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)
    }
}

async fn record_migration(tx: &mut Transaction<'static, Sqlite>) -> Result<(), StoreError> {
    sqlx::query(
        r#"INSERT INTO "__EFMigrationsHistory" ("MigrationId", "ProductVersion") VALUES (?, ?)"#,
    )
    .bind(MIGRATION_ID)
    .bind(PRODUCT_VERSION)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

async fn check_columns(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
    expected: &[(&str, &str)],
) -> Result<(), StoreError> {
    let rows = sqlx::query(&format!(r#"PRAGMA table_info("{table}")"#))
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?;
    for (column, kind) in expected {
        let found = rows.iter().any(|row| {
            row.try_get::<String, _>("name").is_ok_and(|n| n == *column)
                && row
                    .try_get::<String, _>("type")
                    .is_ok_and(|t| t.eq_ignore_ascii_case(kind))
        });
        if !found {
            return Err(StoreError::Config(format!(
                "table `{table}` has no {kind} column `{column}`; this is not upstream's schema"
            )));
        }
    }
    Ok(())
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

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn parse_row(row: &SqliteRow) -> Result<StoredUserKey, StoreError> {
    let id_text: String = row
        .try_get("Id")
        .map_err(|e| StoreError::Corrupt(format!("a UserKeys row has an unreadable Id: {e}")))?;
    let id = Uuid::from_str(&id_text)
        .map_err(|_| StoreError::Corrupt(format!("UserKeys row `{id_text}`: Id is not a GUID")))?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("UserKeys row {id}: {what}"));
    let sealed_key: Option<String> = row.try_get("Key").map_err(|_| corrupt("Key is not text"))?;
    let sealed_key = sealed_key.ok_or_else(|| corrupt("Key is NULL"))?;
    let date = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        let text: Option<String> = row
            .try_get(column)
            .map_err(|_| corrupt(&format!("{column} is not text")))?;
        text.map(|t| dotnet_time::parse(&t).map_err(|e| corrupt(&format!("{column}: {e}"))))
            .transpose()
    };
    Ok(StoredUserKey {
        id,
        sealed_key,
        creation_date: date("CreationDate")?.ok_or_else(|| corrupt("CreationDate is NULL"))?,
        revision_date: date("RevisionDate")?,
        last_access_date: date("LastAccessDate")?,
    })
}

const SELECT_USER_KEY: &str =
    r#"SELECT "Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate" FROM "UserKeys""#;

#[async_trait]
impl UserKeyStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn read_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        let key: Option<Option<String>> = sqlx::query_scalar(
            r#"SELECT "SymmetricKey" FROM "ApplicationDatas" ORDER BY "Id" LIMIT 1"#,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(key.flatten().filter(|k| !k.is_empty()))
    }

    async fn insert_symmetric_key_if_absent(&self, wrapped: &str) -> Result<String, StoreError> {
        let mut tx = self.write_transaction().await?;
        let first: Option<(i64, Option<String>)> = sqlx::query_as(
            r#"SELECT "Id", "SymmetricKey" FROM "ApplicationDatas" ORDER BY "Id" LIMIT 1"#,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        match first {
            Some((_, Some(existing))) if !existing.is_empty() => {
                tx.commit().await.map_err(unavailable)?;
                return Ok(existing);
            }
            Some((id, _)) => {
                sqlx::query(r#"UPDATE "ApplicationDatas" SET "SymmetricKey" = ? WHERE "Id" = ?"#)
                    .bind(wrapped)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            None => {
                sqlx::query(r#"INSERT INTO "ApplicationDatas" ("SymmetricKey") VALUES (?)"#)
                    .bind(wrapped)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(wrapped.to_owned())
    }

    async fn read_user_key(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        // Upstream writes upper case; a lower-case row (from other tooling) is found too.
        let row = sqlx::query(&format!(
            r#"{SELECT_USER_KEY} WHERE "Id" IN (?, ?) LIMIT 1"#
        ))
        .bind(guid_text(id))
        .bind(lower_guid_text(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(parse_row).transpose()
    }

    async fn create_user_key(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.write_transaction().await?;
        let exists: Option<String> =
            sqlx::query_scalar(r#"SELECT "Id" FROM "UserKeys" WHERE "Id" IN (?, ?)"#)
                .bind(guid_text(key.id))
                .bind(lower_guid_text(key.id))
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if exists.is_some() {
            return Ok(CreateOutcome::AlreadyExists);
        }
        let inserted = sqlx::query(
            r#"INSERT INTO "UserKeys" ("Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate") VALUES (?, ?, ?, ?, ?)"#,
        )
        .bind(guid_text(key.id))
        .bind(&key.sealed_key)
        .bind(dotnet_time::format_sqlite(key.creation_date))
        .bind(key.revision_date.map(dotnet_time::format_sqlite))
        .bind(key.last_access_date.map(dotnet_time::format_sqlite))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await.map_err(unavailable)?;
                Ok(CreateOutcome::Created)
            }
            Err(error) if is_unique_violation(&error) => Ok(CreateOutcome::AlreadyExists),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn put_user_key(
        &self,
        id: Uuid,
        sealed_key: &str,
        now: OffsetDateTime,
    ) -> Result<PutOutcome, StoreError> {
        let now_text = dotnet_time::format_sqlite(now);
        let mut tx = self.write_transaction().await?;
        let updated = sqlx::query(
            r#"UPDATE "UserKeys" SET "Key" = ?, "RevisionDate" = ? WHERE "Id" IN (?, ?)"#,
        )
        .bind(sealed_key)
        .bind(&now_text)
        .bind(guid_text(id))
        .bind(lower_guid_text(id))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let outcome = if updated.rows_affected() > 0 {
            PutOutcome::Replaced
        } else {
            sqlx::query(
                r#"INSERT INTO "UserKeys" ("Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate") VALUES (?, ?, ?, NULL, NULL)"#,
            )
            .bind(guid_text(id))
            .bind(sealed_key)
            .bind(&now_text)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            PutOutcome::Created
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(outcome)
    }

    async fn record_last_access(
        &self,
        accesses: &[(Uuid, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        if accesses.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_transaction().await?;
        for (id, when) in accesses {
            sqlx::query(r#"UPDATE "UserKeys" SET "LastAccessDate" = ? WHERE "Id" IN (?, ?)"#)
                .bind(dotnet_time::format_sqlite(*when))
                .bind(guid_text(*id))
                .bind(lower_guid_text(*id))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn list_user_keys(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        let rows = sqlx::query(&format!(r#"{SELECT_USER_KEY} ORDER BY "CreationDate""#))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(parse_row).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
