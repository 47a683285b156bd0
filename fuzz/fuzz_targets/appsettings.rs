//! `appsettings.json` as operators write it (comments, trailing commas, any casing), read
//! and validated in full as the service reads it at start-up, with the logging and
//! connection-limit sections beside the settings.
#![no_main]

use std::sync::OnceLock;

use key_connector::config::{self, ConfigSource};
use key_connector::settings;
use libfuzzer_sys::fuzz_target;

fn folder() -> &'static tempfile::TempDir {
    static FOLDER: OnceLock<tempfile::TempDir> = OnceLock::new();
    FOLDER.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let path = folder().path().join("appsettings.json");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let source = ConfigSource {
        file: Some(path),
        env: Vec::new(),
    };
    let _ = settings::load(&source);
    let _ = config::logging::load(&source);
    let _ = config::connection_limits::load(&source);
});
