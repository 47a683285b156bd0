//! Every file the service creates is owner-only (0600), whatever the umask: the SQLite
//! database with its `-wal` and `-shm` files, the JSON store and its lock, the `transferTo`
//! lock file. Keys are sealed, but a copy of the database is half of what an attacker needs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use key_connector::config::DatabaseSettings;
use key_connector::keys::RsaKeySettings;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::settings::{TransferTarget, TransferToSettings};
use uuid::Uuid;

use crate::support::{AppOptions, StoreKind, TestIdp, random_key, spawn_app_with};

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every regular file directly in `dir` except `skip`, with its mode.
fn files_in(dir: &Path, skip: &[&str]) -> Vec<(String, u32)> {
    let mut files: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !skip.contains(&name.as_str()))
        .map(|name| {
            let mode = mode_of(&dir.join(&name));
            (name, mode)
        })
        .collect();
    files.sort();
    files
}

async fn the_sqlite_database_and_its_wal_and_shm_files_are_owner_only() {
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(Arc::clone(&idp), AppOptions::default()).await;
    let token = idp.token_for(Uuid::new_v4());
    assert_eq!(app.post_key(&token, &random_key()).await.status(), 200);
    let dir = app.data_dir.path().to_owned();
    let files = files_in(&dir, &["key.pfx"]);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    for expected in ["keys.db", "keys.db-wal", "keys.db-shm"] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for (name, mode) in &files {
        assert_eq!(*mode, 0o600, "{name} is {mode:o}");
    }
    app.shutdown().await;
}

async fn the_json_store_its_lock_and_the_transfer_lock_file_are_owner_only() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store: StoreKind::Json,
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let token = idp.token_for(Uuid::new_v4());
    assert_eq!(app.post_key(&token, &random_key()).await.status(), 200);
    app.shutdown().await;

    // A start with transferTo writes the lock file (and the target store) too.
    let lockfile = dir.path().join("transfer.lock");
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store: StoreKind::Json,
            data_dir: Some(Arc::clone(&dir)),
            transfer_to: Some(TransferToSettings {
                lockfile_path: Some(lockfile.clone()),
                target: Some(TransferTarget {
                    database: DatabaseSettings::Json {
                        path: target.join("target.json"),
                    },
                    // The same certificate as the source: only the files matter here.
                    rsa_key: RsaKeySettings::Certificate(CertificateSettings::Filesystem {
                        path: dir.path().join("key.pfx"),
                        password: Some("test-password".to_owned().into()),
                    }),
                }),
            }),
            ..AppOptions::default()
        },
    )
    .await;
    app.shutdown().await;
    assert!(lockfile.exists());
    let mut files = files_in(dir.path(), &["key.pfx"]);
    files.extend(files_in(&target, &["key.pfx"]));
    assert!(files.len() >= 3, "{files:?}");
    for (name, mode) in &files {
        assert_eq!(*mode, 0o600, "{name} is {mode:o}");
    }
}

crate::tests! {
    current_thread: [
        the_sqlite_database_and_its_wal_and_shm_files_are_owner_only,
        the_json_store_its_lock_and_the_transfer_lock_file_are_owner_only,
    ],
}
