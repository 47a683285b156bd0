//! The JSON store's file (upstream's `JsonFlatFileDataStore` document), opened and read
//! as the service does at start-up and on every request.
#![no_main]

use std::sync::OnceLock;

use key_connector::store::json::JsonFileStore;
use key_connector::store::{MissingDatabase, StoreBackend, SymmetricKeyStore, UserKeyStore};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fn folder() -> &'static tempfile::TempDir {
    static FOLDER: OnceLock<tempfile::TempDir> = OnceLock::new();
    FOLDER.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let path = folder().path().join("data.json");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    runtime().block_on(async {
        let Ok(store) = JsonFileStore::open(&path, MissingDatabase::Create).await else {
            return;
        };
        let _ = store.read_symmetric_key().await;
        let _ = store.read_pending_symmetric_key().await;
        if let Ok(rows) = store.list_user_keys().await {
            for row in rows.iter().take(4) {
                let _ = store.read_user_key(row.id).await;
            }
        }
        store.close().await;
    });
});
