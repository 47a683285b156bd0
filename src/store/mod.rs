//! Where sealed user keys and the wrapped symmetric key live.
//!
//! [`UserKeyStore`] is one of the two seams of the service: every backend (JSON file,
//! SQLite, ...) implements it in its own file, and [`open_store`] is the only place that
//! knows them all. A store never sees a key in clear: it keeps the base64 text of what
//! [`crate::crypto`] sealed, exactly as upstream stores it.
//!
//! Errors are split by what the caller must do: [`StoreError::Unavailable`] is a transient
//! fault (answer 503, never "no key"), [`StoreError::Corrupt`] is data that cannot be read.

pub mod json;
pub mod last_access;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgresql")]
pub mod postgres;
#[cfg(any(feature = "postgresql", feature = "mysql", feature = "sqlserver"))]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqlserver")]
pub mod sqlserver;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::DatabaseSettings;

/// One row of `UserKeys`: a user's key, sealed, with upstream's bookkeeping dates.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredUserKey {
    pub id: Uuid,
    /// base64(ciphertext || tag || nonce), as upstream stores it. Never the clear key.
    pub sealed_key: String,
    pub creation_date: OffsetDateTime,
    pub revision_date: Option<OffsetDateTime>,
    pub last_access_date: Option<OffsetDateTime>,
}

impl std::fmt::Debug for StoredUserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sealed key is not secret on its own, but there is no reason to print it.
        f.debug_struct("StoredUserKey")
            .field("id", &self.id)
            .field("creation_date", &self.creation_date)
            .field("revision_date", &self.revision_date)
            .field("last_access_date", &self.last_access_date)
            .finish_non_exhaustive()
    }
}

/// What a create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The user already had a key; nothing was changed.
    AlreadyExists,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not answer now (locked, unreachable, I/O error). Retrying may help.
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with data this service cannot read.
    #[error("the key store holds data that cannot be read: {0}")]
    Corrupt(String),
    /// The store cannot be opened as configured (wrong path, wrong schema, ...).
    #[error("{0}")]
    Config(String),
}

/// The storage seam. Implementations must make every acknowledged write durable before
/// returning `Ok`, and must be safe under concurrent calls.
#[async_trait]
pub trait UserKeyStore: Send + Sync + 'static {
    /// A short name for logs and reports, such as `sqlite` or `json`.
    fn kind(&self) -> &'static str;

    /// The wrapped symmetric key (base64), if one was ever saved. With several rows (an
    /// upstream race can create them) this is the first one, as upstream reads it.
    async fn read_symmetric_key(&self) -> Result<Option<String>, StoreError>;

    /// Saves `wrapped` unless a symmetric key exists already, atomically. Returns the key
    /// stored afterwards: `wrapped` itself, or the one another instance saved first.
    async fn insert_symmetric_key_if_absent(&self, wrapped: &str) -> Result<String, StoreError>;

    /// Replaces the stored wrapped symmetric key `expected` by `replacement` (the same key
    /// wrapped by another RSA key), atomically; `false` when `expected` is no longer stored.
    async fn replace_symmetric_key(
        &self,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError>;

    /// The wrapped symmetric key a rotation is moving user keys to, if one is under way
    /// (a second `ApplicationDatas` row; `pendingSymmetricKey` in the JSON document).
    async fn read_pending_symmetric_key(&self) -> Result<Option<String>, StoreError>;

    /// Saves `wrapped` as the pending key unless there is one; returns the one stored.
    /// Requires a current symmetric key.
    async fn save_pending_symmetric_key_if_absent(
        &self,
        wrapped: &str,
    ) -> Result<String, StoreError>;

    /// Makes the pending key the current one and forgets the old, atomically, if the
    /// current key is still `expected_current`; `false` otherwise (nothing changed).
    async fn promote_pending_symmetric_key(
        &self,
        expected_current: &str,
    ) -> Result<bool, StoreError>;

    /// Replaces a user's sealed key if it is still `expected` (dates unchanged); `false`
    /// when it changed meanwhile or the row is gone.
    async fn reseal_user_key(
        &self,
        id: Uuid,
        expected: &str,
        resealed: &str,
    ) -> Result<bool, StoreError>;

    async fn read_user_key(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError>;

    /// Inserts a new row unless the user already has one (then nothing changes).
    async fn create_user_key(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError>;

    /// Creates the row (creation date `now`) or replaces its sealed key and sets
    /// `RevisionDate = now`, keeping the other dates, as upstream's PUT does.
    async fn put_user_key(
        &self,
        id: Uuid,
        sealed_key: &str,
        now: OffsetDateTime,
    ) -> Result<PutOutcome, StoreError>;

    /// Sets `LastAccessDate` of each existing row to the given time (later wins); rows that
    /// do not exist are ignored.
    async fn record_last_access(
        &self,
        accesses: &[(Uuid, OffsetDateTime)],
    ) -> Result<(), StoreError>;

    /// Every row, for transfers and reports.
    async fn list_user_keys(&self) -> Result<Vec<StoredUserKey>, StoreError>;

    /// A cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes and releases resources; called once on shutdown.
    async fn close(&self);
}

/// Opens (and creates or migrates, like upstream) the configured store.
pub async fn open_store(settings: &DatabaseSettings) -> Result<Arc<dyn UserKeyStore>, StoreError> {
    match settings {
        DatabaseSettings::Json { path } => Ok(Arc::new(json::JsonFileStore::open(path).await?)),
        #[cfg(feature = "sqlite")]
        DatabaseSettings::Sqlite { connection } => {
            Ok(Arc::new(sqlite::SqliteStore::open(connection).await?))
        }
        #[cfg(feature = "postgresql")]
        DatabaseSettings::PostgreSql { connection } => {
            Ok(Arc::new(postgres::PostgresStore::open(connection).await?))
        }
        #[cfg(feature = "mysql")]
        DatabaseSettings::MySql { connection } => {
            Ok(Arc::new(mysql::MySqlStore::open(connection).await?))
        }
        #[cfg(feature = "sqlserver")]
        DatabaseSettings::SqlServer { connection } => {
            Ok(Arc::new(sqlserver::SqlServerStore::open(connection).await?))
        }
        #[allow(unreachable_patterns)]
        other => Err(not_built(other.provider_name())),
    }
}

/// A provider left out of this build with `--no-default-features`.
#[allow(dead_code)]
fn not_built(provider: &str) -> StoreError {
    StoreError::Config(format!(
        "database provider `{provider}` (keyConnectorSettings__database__provider) is not compiled into this build: \
         rebuild with `--features {provider}` (the default build has every provider)"
    ))
}
