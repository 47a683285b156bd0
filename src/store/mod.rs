//! Where sealed user keys and the wrapped symmetric key live.
//!
//! Two aggregates, two traits: [`SymmetricKeyStore`] holds the wrapped symmetric key (and the
//! pending one of a rotation), [`UserKeyStore`] the sealed user keys; beside them
//! [`RecoveryWrapStore`] keeps the symmetric keys' wraps under the offline recovery key, and
//! [`PropertyStore`] the few facts of this service's own (whether unbound user keys are
//! still accepted, [`USER_KEYS_BOUND`]). All stand on [`StoreBackend`] (name, ping, close), and [`KeyStore`] is a backend holding
//! them all, which is what [`open_store`] (and [`open_store_read_only`], for copies being
//! checked), the only place that knows every backend, returns. A store never sees
//! a key in clear: it keeps the base64 text of what [`crate::crypto`] sealed, exactly as
//! upstream stores it.
//!
//! A backend does not write the protocols itself: it implements
//! [`symmetric_rows::SymmetricKeyRows`] (read the `ApplicationDatas` rows, apply a planned
//! change under its lock), [`user_key_rows::UserKeyRows`] (single-row reads and writes) and
//! [`recovery_wrap_rows::RecoveryWrapRows`] (read the wraps, apply a planned change
//! atomically), and gets [`SymmetricKeyStore`], [`UserKeyStore`] and [`RecoveryWrapStore`]
//! from the plans of [`symmetric_rows`], [`user_key_rows`] and [`recovery_wrap_rows`].
//!
//! Errors are split by what the caller must do: [`StoreError::Unavailable`] is a transient
//! fault (answer 503, never "no key"), [`StoreError::Corrupt`] is data that cannot be read,
//! [`StoreError::Config`] a [`Refusal`] an operator must act on. Each keeps the driver or I/O
//! error it came from as its source; text is made only where it is shown.

pub mod json;
pub mod last_access;
#[cfg(any(feature = "postgresql", feature = "mysql"))]
pub mod postgres_mysql;
pub mod recovery_wrap_rows;
pub mod schema;
#[cfg(any(feature = "postgresql", feature = "mysql", feature = "sqlserver"))]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqlserver")]
pub mod sqlserver;
pub mod symmetric_rows;
pub mod user_key_rows;

use std::borrow::Cow;
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

impl StoredUserKey {
    /// A row as a first write makes it: created at `creation_date`, never revised or read.
    pub fn fresh(id: Uuid, sealed_key: String, creation_date: OffsetDateTime) -> Self {
        Self {
            id,
            sealed_key,
            creation_date,
            revision_date: None,
            last_access_date: None,
        }
    }
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

/// Any error a driver, the file system or the runtime hands back.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not answer now (locked, unreachable, I/O error). Retrying may help.
    #[error("the key store is unavailable: {0}")]
    Unavailable(#[source] Fault),
    /// The backend answered with data this service cannot read.
    #[error("the key store holds data that cannot be read: {0}")]
    Corrupt(#[source] Fault),
    /// The store cannot be used as configured (wrong path, wrong schema, ...).
    #[error(transparent)]
    Config(Refusal),
}

impl StoreError {
    /// A transient fault caused by `source`.
    pub fn unavailable(source: impl Into<SourceError>) -> Self {
        Self::Unavailable(Fault::from_source(source))
    }

    /// A transient fault this service noticed itself (a deadline, a lock held too long).
    pub fn unavailable_because(what: impl Into<String>) -> Self {
        Self::Unavailable(Fault::new(what))
    }

    /// Stored data that cannot be read, described.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt(Fault::new(what))
    }

    /// Stored data that the driver could not decode.
    pub fn corrupt_from(source: impl Into<SourceError>) -> Self {
        Self::Corrupt(Fault::from_source(source))
    }

    /// The error with its refusal, if it names where a connection string came from, naming
    /// `named_by` instead: a SQL server's refusals name the service's setting, and a command
    /// given the connection string as an argument says so.
    pub fn named_by(mut self, named_by: NamedBy) -> Self {
        if let (
            NamedBy::Argument(argument),
            Self::Config(
                Refusal::Rejected { origin, .. }
                | Refusal::DatabaseNotCreated { origin, .. }
                | Refusal::NoDatabase { origin, .. },
            ),
        ) = (named_by, &mut self)
        {
            *origin = given_to(argument);
        }
        self
    }
}

impl From<Refusal> for StoreError {
    fn from(refusal: Refusal) -> Self {
        Self::Config(refusal)
    }
}

/// What went wrong: a description, the error underneath, or both (`what: source`).
#[derive(Debug)]
pub struct Fault {
    what: Option<String>,
    source: Option<SourceError>,
}

impl Fault {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: Some(what.into()),
            source: None,
        }
    }

    pub fn from_source(source: impl Into<SourceError>) -> Self {
        Self {
            what: None,
            source: Some(source.into()),
        }
    }

    /// `what`, caused by `source`.
    pub fn caused(what: impl Into<String>, source: impl Into<SourceError>) -> Self {
        Self {
            what: Some(what.into()),
            source: Some(source.into()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.what, &self.source) {
            (Some(what), Some(source)) => write!(f, "{what}: {source}"),
            (Some(what), None) => f.write_str(what),
            (None, Some(source)) => write!(f, "{source}"),
            (None, None) => f.write_str("unknown fault"),
        }
    }
}

impl std::error::Error for Fault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// What named the file a file store opens, so that a refusal points at what the operator
/// gave: the service's setting, or the argument of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// The service's database setting (`keyConnectorSettings:database`).
    Setting,
    /// A command-line argument, such as `backup --verify`.
    Argument(&'static str),
}

impl NamedBy {
    /// How a message names the origin of the file: `setting` (the environment variable of
    /// the store's setting), or the command-line argument it was given to.
    pub fn origin(self, setting: &'static str) -> Cow<'static, str> {
        match self {
            NamedBy::Setting => Cow::Borrowed(setting),
            NamedBy::Argument(argument) => given_to(argument),
        }
    }
}

fn given_to(argument: &str) -> Cow<'static, str> {
    Cow::Owned(format!("given to {argument}"))
}

/// Why a store refuses to work as configured: something an operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("there is no symmetric key to rotate from")]
    NoSymmetricKeyToRotate,
    #[error(
        "the database records upstream's InitialCreate migration but its tables are missing; refusing to guess"
    )]
    MigrationWithoutTables,
    #[error(
        "the database has only one of the tables `ApplicationDatas` and `UserKeys`; it is not a key connector database"
    )]
    PartialSchema,
    #[error("table `{table}` has no {kind} column `{column}`; this is not upstream's schema")]
    ForeignColumn {
        table: &'static str,
        column: &'static str,
        kind: &'static str,
    },
    #[error(
        "the database `{database}` does not exist and could not be created ({origin}): {source}"
    )]
    DatabaseNotCreated {
        database: String,
        /// The setting or argument that named the database ([`NamedBy::origin`]).
        origin: Cow<'static, str>,
        #[source]
        source: SourceError,
    },
    /// A command (or a copy being checked) named a database that is not there. Only the
    /// service creates a missing database, so that a mistyped path or name in a command's
    /// settings is an error, never a new empty database.
    #[error("the database {database} does not exist ({origin}); nothing was created")]
    NoDatabase {
        /// The file's path or the database's name.
        database: String,
        /// The setting or argument that named it ([`NamedBy::origin`]).
        origin: Cow<'static, str>,
    },
    /// The server refused the connection in a way that will not fix itself (wrong password,
    /// missing permission, TLS that does not verify).
    #[error("{problem} ({origin}): {source}")]
    Rejected {
        problem: &'static str,
        /// The setting or argument that gave the connection string ([`NamedBy::origin`]).
        origin: Cow<'static, str>,
        #[source]
        source: SourceError,
    },
    #[error(
        "database provider `{0}` (keyConnectorSettings__database__provider) is not compiled into this build: \
         rebuild with `--features {0}` (the default build has every provider)"
    )]
    NotBuilt(&'static str),
    /// A database opened only to be read (a restored copy) has none of upstream's tables.
    #[error(
        "the database `{0}` has neither `ApplicationDatas` nor `UserKeys`: it is not a key connector database (was the dump restored into it?)"
    )]
    NoKeyTables(String),
    /// The file or database named by the settings cannot be used.
    #[error("{0}")]
    Unusable(#[source] Fault),
    /// The document named by `origin` (a setting or an argument, [`NamedBy::origin`])
    /// cannot be read; it was not overwritten.
    #[error("{fault} ({origin}); the file was left untouched")]
    UnreadableFile {
        #[source]
        fault: Fault,
        origin: Cow<'static, str>,
    },
}

/// What every backend is, whatever it stores.
#[async_trait]
pub trait StoreBackend: Send + Sync + 'static {
    /// A short name for logs and reports, such as `sqlite` or `json`.
    fn kind(&self) -> &'static str;

    /// A cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes and releases resources; called once on shutdown.
    async fn close(&self);
}

/// The wrapped symmetric key and the pending one of a rotation. Implemented for every
/// [`symmetric_rows::SymmetricKeyRows`] backend by the plans of [`symmetric_rows`].
#[async_trait]
pub trait SymmetricKeyStore: StoreBackend {
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
}

/// The sealed user keys (`UserKeys`). Implementations must make every acknowledged write
/// durable before returning `Ok`, and must be safe under concurrent calls.
#[async_trait]
pub trait UserKeyStore: StoreBackend {
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
}

/// A wrap of a symmetric key under the offline recovery key, as stored (see
/// [`crate::crypto::recovery`]). None of it is secret without the recovery private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecoveryWrap {
    /// HMAC-SHA256 of a fixed label keyed by the symmetric key, hex: which key this wraps.
    pub key_check: String,
    /// SHA-256 of the recovery key's `SubjectPublicKeyInfo`, hex: which key it is wrapped by.
    pub fingerprint: String,
    /// base64 of RSA-OAEP-SHA256 of the symmetric key.
    pub wrapped_key: String,
}

/// The recovery wraps of the symmetric keys, one per symmetric key, kept where the
/// official service never looks: a table of this service's own in the SQL stores
/// (`KeyConnectorRecoveryWraps`, created on the first write, so databases without a
/// recovery key are left exactly as upstream made them), a top-level property of its own
/// (`recoveryKeyWraps`) in the JSON document. Implemented for every
/// [`recovery_wrap_rows::RecoveryWrapRows`] backend by the plans of [`recovery_wrap_rows`].
#[async_trait]
pub trait RecoveryWrapStore: StoreBackend {
    /// Every stored wrap, in key-check order; none when there is no table (or property) yet.
    async fn read_recovery_wraps(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError>;

    /// Saves `wrap` in place of any wrap of the same symmetric key, durably and atomically.
    async fn save_recovery_wrap(&self, wrap: &StoredRecoveryWrap) -> Result<(), StoreError>;

    /// Deletes every wrap whose key check is not in `keep`.
    async fn retain_recovery_wraps(&self, keep: &[String]) -> Result<(), StoreError>;
}

/// The table of recovery wraps in the SQL stores: not upstream's, and no EF migration of
/// upstream's names it, so its migrations never see it.
pub const RECOVERY_WRAPS_TABLE: &str = "KeyConnectorRecoveryWraps";

/// Named values of this service's own, kept where the official service never looks, as
/// the recovery wraps are: a table `KeyConnectorProperties` ("Name", "Value") in the SQL
/// stores, created on the first write (so that a database that never had one is left as
/// upstream made it, and upstream's migrations never see it), and a top-level object
/// `keyConnectorProperties` in the JSON document.
#[async_trait]
pub trait PropertyStore: StoreBackend {
    /// The value of `name`; `None` when it was never set (or there is no table yet).
    async fn read_property(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Sets `name` to `value`, or removes it (`None`), durably and atomically.
    async fn write_property(&self, name: &str, value: Option<&str>) -> Result<(), StoreError>;
}

/// The table of [`PropertyStore`] in the SQL stores: not upstream's.
pub const PROPERTIES_TABLE: &str = "KeyConnectorProperties";

/// The property saying that every user key is bound to its user and unbound ones are no
/// longer accepted (value `true`; see [`crate::crypto::binding`]).
pub const USER_KEYS_BOUND: &str = "UserKeysBound";

/// A backend holding every aggregate, as every store of this service does.
pub trait KeyStore: SymmetricKeyStore + UserKeyStore + RecoveryWrapStore + PropertyStore {}

impl<T: SymmetricKeyStore + UserKeyStore + RecoveryWrapStore + PropertyStore + ?Sized> KeyStore
    for T
{
}

/// What opening a store does when its file or database is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDatabase {
    /// Created, with upstream's schema, as upstream's migration does at start-up: the
    /// service, and a transfer into a new database.
    Create,
    /// Refused with [`Refusal::NoDatabase`]: the commands that work on the service's own
    /// database.
    Refuse,
}

/// Opens (and creates or migrates, like upstream) the configured store, as the service does.
pub async fn open_store(settings: &DatabaseSettings) -> Result<Arc<dyn KeyStore>, StoreError> {
    open_store_if(settings, MissingDatabase::Create).await
}

/// Opens (and migrates) the configured store, or creates it only when `missing` says so.
pub async fn open_store_if(
    settings: &DatabaseSettings,
    missing: MissingDatabase,
) -> Result<Arc<dyn KeyStore>, StoreError> {
    match settings {
        DatabaseSettings::Json { path } => {
            Ok(Arc::new(json::JsonFileStore::open(path, missing).await?))
        }
        #[cfg(feature = "sqlite")]
        DatabaseSettings::Sqlite { connection } => Ok(Arc::new(
            sqlite::SqliteStore::open(connection, NamedBy::Setting, missing).await?,
        )),
        #[cfg(feature = "postgresql")]
        DatabaseSettings::PostgreSql { connection } => Ok(Arc::new(
            postgres_mysql::PostgresMysqlStore::open_postgres(connection, missing).await?,
        )),
        #[cfg(feature = "mysql")]
        DatabaseSettings::MySql { connection } => Ok(Arc::new(
            postgres_mysql::PostgresMysqlStore::open_mysql(connection, missing).await?,
        )),
        #[cfg(feature = "sqlserver")]
        DatabaseSettings::SqlServer { connection } => Ok(Arc::new(
            sqlserver::SqlServerStore::open(connection, missing).await?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(Refusal::NotBuilt(other.provider_name()).into()),
    }
}

/// Opens the store named by `settings` only to read it (a backup or a restored copy being
/// checked): nothing is created, migrated or written, and a missing file or database is an
/// error rather than a new empty store. A refusal names `named_by` as what gave the file or
/// the connection string.
pub async fn open_store_read_only(
    settings: &DatabaseSettings,
    named_by: NamedBy,
) -> Result<Arc<dyn KeyStore>, StoreError> {
    match settings {
        DatabaseSettings::Json { path } => Ok(Arc::new(
            json::JsonFileStore::open_read_only(path, named_by).await?,
        )),
        #[cfg(feature = "sqlite")]
        DatabaseSettings::Sqlite { connection } => {
            let connection = crate::config::SqliteConnection {
                read_only: true,
                ..connection.clone()
            };
            Ok(Arc::new(
                sqlite::SqliteStore::open(&connection, named_by, MissingDatabase::Refuse).await?,
            ))
        }
        #[cfg(feature = "postgresql")]
        DatabaseSettings::PostgreSql { connection } => Ok(Arc::new(
            postgres_mysql::PostgresMysqlStore::open_postgres_read_only(connection)
                .await
                .map_err(|e| e.named_by(named_by))?,
        )),
        #[cfg(feature = "mysql")]
        DatabaseSettings::MySql { connection } => Ok(Arc::new(
            postgres_mysql::PostgresMysqlStore::open_mysql_read_only(connection)
                .await
                .map_err(|e| e.named_by(named_by))?,
        )),
        #[cfg(feature = "sqlserver")]
        DatabaseSettings::SqlServer { connection } => Ok(Arc::new(
            sqlserver::SqlServerStore::open_read_only(connection)
                .await
                .map_err(|e| e.named_by(named_by))?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(Refusal::NotBuilt(other.provider_name()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected() -> StoreError {
        Refusal::Rejected {
            problem: "the database refused the user name or password",
            origin: "keyConnectorSettings__database__mySqlConnectionString".into(),
            source: "access denied".into(),
        }
        .into()
    }

    #[test]
    fn a_refusal_names_the_argument_that_gave_the_connection_string() {
        let said = rejected()
            .named_by(NamedBy::Argument("backup --verify"))
            .to_string();
        assert_eq!(
            said,
            "the database refused the user name or password (given to backup --verify): access denied"
        );
        let kept = rejected().named_by(NamedBy::Setting).to_string();
        assert!(kept.contains("(keyConnectorSettings__database__mySqlConnectionString)"));
        let unavailable = StoreError::unavailable_because("down").named_by(NamedBy::Argument("x"));
        assert!(matches!(unavailable, StoreError::Unavailable(_)));
    }
}
