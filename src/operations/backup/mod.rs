//! `backup`: verified online backups.
//!
//! `backup --to FILE` takes a consistent copy of a file store (SQLite through its online
//! backup API, the JSON document under the store's own lock) while the service runs, writes
//! it owner-only and atomically ([`snapshot`]), then opens the copy read-only as a store of
//! the same kind and decrypts every user key in it ([`verify`]). Only a copy that passed is
//! published under FILE; one that failed is kept as `FILE.failed`, so nothing that looks like
//! a good backup is left behind, and the failure can still be examined.
//!
//! The SQL servers' own tools take their dumps (`pg_dump`, `mysqldump`, SQL Server's
//! `BACKUP DATABASE`); `backup --verify` checks a restored copy, or any copy of a file
//! store, the same way, without writing to it.

pub mod snapshot;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::snapshot::PrivateTempFile;
pub use self::verify::{
    ConfiguredRsaKey, OfflineRecoveryKey, SymmetricKeySource, Verification, VerifyProblem,
    verify_store,
};
use super::{Database, OperationError};
use crate::config::DatabaseSettings;
use crate::store::{KeyStore, NamedBy, SourceError};

/// Suffix of a backup that failed its check.
pub const FAILED_SUFFIX: &str = ".failed";

/// What `backup --to` was asked to do.
pub struct BackupRequest {
    pub destination: PathBuf,
    /// Replace an existing destination.
    pub replace: bool,
    /// Progress bars on a terminal.
    pub interactive: bool,
}

/// What `backup --to` produced.
#[derive(Debug)]
pub struct BackupReport {
    /// Where the copy is now: the destination if it passed, `<destination>.failed` if not.
    pub path: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
    pub verification: Verification,
}

/// What `backup --verify` found.
#[derive(Debug)]
pub struct VerifyReport {
    pub elapsed: Duration,
    pub verification: Verification,
}

/// The settings naming the live file of a file store, for messages.
fn file_setting(database: &DatabaseSettings) -> &'static str {
    match database {
        DatabaseSettings::Json { .. } => "keyConnectorSettings__database__jsonFilePath",
        _ => "keyConnectorSettings__database__sqliteConnectionString",
    }
}

/// The refusal for stores whose server takes the dumps.
fn use_the_servers_tool(database: &DatabaseSettings) -> OperationError {
    let tool = match database {
        DatabaseSettings::PostgreSql { .. } => {
            "pg_dump (e.g. `pg_dump -Fc -f keyconnector.dump DBNAME`), restored with pg_restore"
        }
        DatabaseSettings::MySql { .. } => {
            "mysqldump (e.g. `mysqldump --single-transaction DBNAME > keyconnector.sql`)"
        }
        _ => {
            "SQL Server's `BACKUP DATABASE ... TO DISK` (or sqlcmd), restored with `RESTORE DATABASE`"
        }
    };
    OperationError::UseTheServersDumpTool {
        provider: database.provider_name(),
        tool,
    }
}

/// `path` with its directory made absolute and symbolic links resolved (the file itself
/// need not exist).
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    if let Ok(path) = path.canonicalize() {
        return Ok(path);
    }
    let directory = snapshot::parent_of(path).canonicalize()?;
    Ok(directory.join(path.file_name().unwrap_or_default()))
}

/// Refuses a destination that is the live store or one of its companion files (`-wal`,
/// `-shm`, `-journal`, `.lock`).
fn check_destination(live: &Path, destination: &Path, replace: bool) -> Result<(), OperationError> {
    let refused = |problem| {
        Err(OperationError::BackupDestination {
            path: destination.to_path_buf(),
            problem,
        })
    };
    if destination.file_name().is_none() || destination.is_dir() {
        return refused("name a file, not a directory");
    }
    let target = resolved(destination).map_err(|source| OperationError::BackupDestinationIo {
        path: destination.to_path_buf(),
        what: "its directory cannot be used",
        source,
    })?;
    let live = resolved(live).unwrap_or_else(|_| live.to_path_buf());
    let companions = ["", "-wal", "-shm", "-journal", ".lock"];
    let is_live = companions.iter().any(|suffix| {
        let mut name = live.clone().into_os_string();
        name.push(suffix);
        name == target.as_os_str()
    });
    if is_live {
        return refused(
            "that is the live database (or one of its files); write the backup elsewhere",
        );
    }
    if !replace && destination.exists() {
        return refused("the file exists; pass --force to replace it");
    }
    Ok(())
}

/// `backup --to`: copies the live file store of `database`, checks the copy with `source`,
/// and publishes it (see the module docs).
pub async fn backup_to(
    database: &DatabaseSettings,
    source: &dyn SymmetricKeySource,
    request: BackupRequest,
) -> Result<BackupReport, OperationError> {
    let started = Instant::now();
    let Some(live) = database.file_path().map(Path::to_path_buf) else {
        return Err(use_the_servers_tool(database));
    };
    let destination = request.destination.clone();
    check_destination(&live, &destination, request.replace)?;
    if !live.is_file() {
        return Err(OperationError::NothingToBackUp {
            path: live,
            setting: file_setting(database),
        });
    }
    let write_error = |what, source| OperationError::BackupDestinationIo {
        path: destination.clone(),
        what,
        source,
    };
    let temp = PrivateTempFile::beside(&destination)
        .map_err(|e| write_error("cannot create a file in its directory", e))?;
    let copy_of = database
        .file_copy_at(temp.path())
        .ok_or_else(|| use_the_servers_tool(database))?;
    let temp = copy_live(database, live, temp, request.interactive).await?;

    let copy = Database::copy_at(
        "the copy just written",
        &copy_of,
        NamedBy::Argument("backup --to"),
    );
    let verification = verified(copy, source, request.interactive).await?;

    let (path, replace) = if verification.passed() {
        (destination.clone(), request.replace)
    } else {
        let mut failed = destination.clone().into_os_string();
        failed.push(FAILED_SUFFIX);
        (PathBuf::from(failed), true)
    };
    if !replace && path.exists() {
        return Err(OperationError::BackupDestination {
            path: destination.clone(),
            problem: "the file appeared while the backup ran; nothing was replaced",
        });
    }
    let published = path.clone();
    tokio::task::spawn_blocking(move || temp.publish(&published, replace))
        .await
        .map_err(OperationError::BackgroundTask)?
        .map_err(|e| write_error("cannot move the copy into place", e))?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        path,
        bytes,
        elapsed: started.elapsed(),
        verification,
    })
}

/// Writes the consistent copy of the live file store into `temp`.
async fn copy_live(
    database: &DatabaseSettings,
    live: PathBuf,
    temp: PrivateTempFile,
    interactive: bool,
) -> Result<PrivateTempFile, OperationError> {
    let setting = file_setting(database);
    let is_json = matches!(database, DatabaseSettings::Json { .. });
    let copy = move || -> Result<PrivateTempFile, OperationError> {
        let failed = |source: SourceError| OperationError::CopyFailed {
            path: live.clone(),
            setting,
            source,
        };
        if is_json {
            let bytes =
                crate::store::json::read_document_locked(&live).map_err(|e| failed(e.into()))?;
            snapshot::write_json_copy(&bytes, &temp).map_err(|e| failed(e.into()))?;
            return Ok(temp);
        }
        #[cfg(feature = "sqlite")]
        {
            snapshot::copy_sqlite(&live, &temp, interactive).map_err(|e| failed(e.into()))?;
            Ok(temp)
        }
        #[cfg(not(feature = "sqlite"))]
        {
            let _ = interactive;
            Err(OperationError::Store {
                what: "backup",
                source: crate::store::Refusal::NotBuilt("sqlite").into(),
            })
        }
    };
    tokio::task::spawn_blocking(copy)
        .await
        .map_err(OperationError::BackgroundTask)?
}

/// Opens `copy` read-only and checks it with `source`.
async fn verified(
    copy: Database<'_>,
    source: &dyn SymmetricKeySource,
    interactive: bool,
) -> Result<Verification, OperationError> {
    super::run(copy, async |store: &Arc<dyn KeyStore>| {
        Ok(verify_store(store.as_ref(), source, interactive).await)
    })
    .await
}

/// `backup --verify`: checks the copy `copy` (same provider as the service's database, at
/// another place) with `source`, reading only.
pub async fn verify_copy(
    copy: &DatabaseSettings,
    source: &dyn SymmetricKeySource,
    interactive: bool,
) -> Result<VerifyReport, OperationError> {
    let started = Instant::now();
    let copy = Database::copy_at(
        "backup --verify",
        copy,
        NamedBy::Argument("backup --verify"),
    );
    let verification = verified(copy, source, interactive).await?;
    Ok(VerifyReport {
        elapsed: started.elapsed(),
        verification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_database_and_its_files_are_refused_as_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("keys.db");
        std::fs::write(&live, b"").unwrap();
        for name in ["keys.db", "keys.db-wal", "keys.db-shm", "keys.db.lock"] {
            let error = check_destination(&live, &dir.path().join(name), true).unwrap_err();
            assert!(
                error.to_string().contains("live database"),
                "{name}: {error}"
            );
        }
        let through_dot = dir.path().join(".").join("keys.db");
        assert!(check_destination(&live, &through_dot, true).is_err());
        assert!(check_destination(&live, &dir.path().join("copy.db"), false).is_ok());
    }

    #[test]
    fn an_existing_destination_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("keys.db");
        let existing = dir.path().join("old-backup.db");
        std::fs::write(&existing, b"old").unwrap();
        let error = check_destination(&live, &existing, false).unwrap_err();
        assert!(error.to_string().contains("--force"), "{error}");
        assert!(check_destination(&live, &existing, true).is_ok());
        assert!(check_destination(&live, dir.path(), true).is_err());
    }

    #[test]
    fn a_published_copy_is_private_and_never_overwrites_without_replace() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("backup.json");
        let temp = PrivateTempFile::beside(&destination).unwrap();
        let temp_path = temp.path().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&temp_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        snapshot::write_json_copy(b"{}", &temp).unwrap();
        temp.publish(&destination, false).unwrap();
        assert!(!temp_path.exists());
        assert_eq!(std::fs::read(&destination).unwrap(), b"{}");

        let second = PrivateTempFile::beside(&destination).unwrap();
        let second_path = second.path().to_path_buf();
        snapshot::write_json_copy(b"{\"new\":1}", &second).unwrap();
        assert!(second.publish(&destination, false).is_err());
        assert!(!second_path.exists(), "a refused copy is removed");
        assert_eq!(std::fs::read(&destination).unwrap(), b"{}");
    }

    #[tokio::test]
    async fn a_copy_opened_read_only_is_never_created_locked_or_changed() {
        use crate::store::json::JsonFileStore;
        use crate::store::{SymmetricKeyStore, UserKeyStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.json");
        let named_by = NamedBy::Argument("backup --verify");
        let error = JsonFileStore::open_read_only(&path, named_by)
            .await
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("given to backup --verify"),
            "{error}"
        );
        assert!(!path.exists(), "a missing copy is not created");

        let document = br#"{"symmetricKey":"d3JhcHBlZA==","userKey":[]}"#;
        std::fs::write(&path, document).unwrap();
        let store = JsonFileStore::open_read_only(&path, named_by)
            .await
            .unwrap();
        assert_eq!(
            store.read_symmetric_key().await.unwrap().as_deref(),
            Some("d3JhcHBlZA==")
        );
        assert!(
            store
                .replace_symmetric_key("d3JhcHBlZA==", "other")
                .await
                .is_err()
        );
        let now = time::OffsetDateTime::now_utc();
        assert!(
            store
                .put_user_key(uuid::Uuid::new_v4(), "AAAA", now)
                .await
                .is_err()
        );
        assert_eq!(std::fs::read(&path).unwrap(), document);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "no lock file beside the copy");
    }

    #[test]
    fn server_stores_are_sent_to_their_own_dump_tools() {
        let settings = DatabaseSettings::PostgreSql {
            connection: crate::config::sql_connection::parse(
                crate::config::SqlDialect::PostgreSql,
                "Host=db;Database=kc;Username=kc",
            )
            .unwrap(),
        };
        let message = use_the_servers_tool(&settings).to_string();
        assert!(
            message.contains("pg_dump") && message.contains("backup --verify"),
            "{message}"
        );
    }
}
