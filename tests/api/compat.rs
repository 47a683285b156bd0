//! Compatibility with upstream's storage formats, proved by an independent implementation.
//!
//! `tests/compat/upstream_format.py` re-implements upstream's algorithm (RSA-OAEP-SHA1
//! wrapping, AES-256-GCM sealing, EF Core's schemas on SQLite and the SQL servers,
//! JsonFlatFileDataStore's file) with Python's `cryptography` and each server's own Python
//! driver. Here it writes databases the server must serve, and reads what the server wrote.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::databases::{Engine, TestDatabase};
use crate::support::{AppOptions, StoreKind, TestIdp, random_key, spawn_app_with};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/compat/upstream_format.py"
);
const PFX_PASSWORD: &str = "test-password";

/// `None` when Python with `cryptography` is not available.
fn python() -> Option<&'static str> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-c", "import cryptography"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(candidate);
        }
    }
    None
}

fn run_script(python: &str, args: &[&str]) -> BTreeMap<String, String> {
    let output = Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "upstream_format.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "manifest is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    manifest["users"]
        .as_object()
        .expect("manifest has users")
        .iter()
        .map(|(id, key)| (id.clone(), key.as_str().unwrap().to_owned()))
        .collect()
}

fn write_test_pfx(dir: &Path) -> String {
    let pfx = dir.join("key.pfx");
    let bytes = key_connector::pkcs12::generate_self_signed_pfx(2048, "compat", Some(PFX_PASSWORD))
        .unwrap();
    std::fs::write(&pfx, bytes).unwrap();
    pfx.display().to_string()
}

async fn upstream_written_store_is_served(store: StoreKind) {
    let Some(python) = python() else {
        skip_or_fail!("python3 with the `cryptography` package is not installed");
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let pfx = write_test_pfx(dir.path());
    let users = match store {
        StoreKind::Sqlite => {
            let db = dir.path().join("keys.db").display().to_string();
            run_script(
                python,
                &[
                    "make-sqlite",
                    "--pfx",
                    &pfx,
                    "--password",
                    PFX_PASSWORD,
                    "--db",
                    &db,
                    "--users",
                    "25",
                ],
            )
        }
        StoreKind::Json => {
            let file = dir.path().join("data.json").display().to_string();
            run_script(
                python,
                &[
                    "make-json",
                    "--pfx",
                    &pfx,
                    "--password",
                    PFX_PASSWORD,
                    "--file",
                    &file,
                    "--users",
                    "25",
                ],
            )
        }
    };
    assert_eq!(users.len(), 25);

    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    for (id, key) in &users {
        let user: Uuid = id.parse().unwrap();
        assert_eq!(
            app.read_key(&idp.token_for(user)).await.as_ref(),
            Ok(key),
            "user {id}"
        );
    }
    // Writing into an upstream database keeps it readable by upstream's algorithm.
    let newcomer = Uuid::new_v4();
    let newcomer_key = random_key();
    assert_eq!(
        app.post_key(&idp.token_for(newcomer), &newcomer_key)
            .await
            .status(),
        StatusCode::OK
    );
    let (first_id, _) = users.iter().next().unwrap();
    let replaced_key = random_key();
    let first_user: Uuid = first_id.parse().unwrap();
    assert_eq!(
        app.put_key(&idp.token_for(first_user), &replaced_key)
            .await
            .status(),
        StatusCode::OK
    );
    app.shutdown().await;

    let read_back = read_with_script(python, store, dir.path(), &pfx);
    assert_eq!(read_back.len(), 26);
    assert_eq!(read_back.get(&newcomer.to_string()), Some(&newcomer_key));
    assert_eq!(read_back.get(first_id), Some(&replaced_key));
    for (id, key) in users.iter().skip(1) {
        assert_eq!(read_back.get(id), Some(key), "user {id} unchanged");
    }
}

fn read_with_script(
    python: &str,
    store: StoreKind,
    dir: &Path,
    pfx: &str,
) -> BTreeMap<String, String> {
    match store {
        StoreKind::Sqlite => {
            let db = dir.join("keys.db").display().to_string();
            run_script(
                python,
                &[
                    "read-sqlite",
                    "--pfx",
                    pfx,
                    "--password",
                    PFX_PASSWORD,
                    "--db",
                    &db,
                ],
            )
        }
        StoreKind::Json => {
            let file = dir.join("data.json").display().to_string();
            run_script(
                python,
                &[
                    "read-json",
                    "--pfx",
                    pfx,
                    "--password",
                    PFX_PASSWORD,
                    "--file",
                    &file,
                ],
            )
        }
    }
}

async fn sqlite_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable() {
    upstream_written_store_is_served(StoreKind::Sqlite).await;
}

async fn json_file_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable() {
    upstream_written_store_is_served(StoreKind::Json).await;
}

async fn server_created_store_is_upstream_readable(store: StoreKind) {
    let Some(python) = python() else {
        skip_or_fail!("python3 with the `cryptography` package is not installed");
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let pfx = write_test_pfx(dir.path());
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let mut written = BTreeMap::new();
    for _ in 0..10 {
        let user = Uuid::new_v4();
        let key = random_key();
        assert_eq!(
            app.post_key(&idp.token_for(user), &key).await.status(),
            StatusCode::OK
        );
        assert!(app.read_key(&idp.token_for(user)).await.is_ok());
        written.insert(user.to_string(), key);
    }
    app.shutdown().await;
    assert_eq!(read_with_script(python, store, dir.path(), &pfx), written);
}

async fn sqlite_database_created_by_the_server_is_read_by_upstreams_algorithm() {
    server_created_store_is_upstream_readable(StoreKind::Sqlite).await;
}

async fn json_file_created_by_the_server_is_read_by_upstreams_algorithm() {
    server_created_store_is_upstream_readable(StoreKind::Json).await;
}

/// A store the server wrote with a recovery key configured: upstream's algorithm still
/// reads it (the wrap is in a table, or a top-level property, of its own), and the wrap,
/// checked by the same independent implementation, holds the symmetric key.
async fn server_store_with_a_recovery_wrap_is_upstream_readable(store: StoreKind) {
    let Some(python) = python() else {
        skip_or_fail!("python3 with the `cryptography` package is not installed");
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let pfx = write_test_pfx(dir.path());
    let recovery_pfx = dir.path().join("recovery.pfx");
    let recovery_bytes =
        key_connector::pkcs12::generate_self_signed_pfx(3072, "recovery", Some("recovery-pw"))
            .unwrap();
    std::fs::write(&recovery_pfx, &recovery_bytes).unwrap();
    let spki =
        key_connector::pkcs12::rsa_public_key_spki(&recovery_bytes, Some("recovery-pw")).unwrap();
    let public_key = dir.path().join("recovery.der");
    std::fs::write(&public_key, &spki).unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            data_dir: Some(Arc::clone(&dir)),
            recovery_key: Some(key_connector::config::RecoveryKeySettings {
                public_key_path: public_key,
            }),
            ..AppOptions::default()
        },
    )
    .await;
    let mut written = BTreeMap::new();
    for _ in 0..5 {
        let (user, key) = (Uuid::new_v4(), random_key());
        assert_eq!(
            app.post_key(&idp.token_for(user), &key).await.status(),
            StatusCode::OK
        );
        written.insert(user.to_string(), key);
    }
    app.shutdown().await;
    assert_eq!(read_with_script(python, store, dir.path(), &pfx), written);

    let (command, location) = match store {
        StoreKind::Sqlite => ("read-sqlite", ["--db", "keys.db"]),
        StoreKind::Json => ("read-json", ["--file", "data.json"]),
    };
    let output = Command::new(python)
        .current_dir(dir.path())
        .arg(SCRIPT)
        .args([command, "--pfx", &pfx, "--password", PFX_PASSWORD])
        .args(location)
        .args([
            "--recovery-pfx",
            "recovery.pfx",
            "--recovery-password",
            "recovery-pw",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        manifest["recoveryFingerprint"].as_str(),
        Some(key_connector::crypto::recovery::fingerprint(&spki).as_str())
    );
}

async fn sqlite_database_with_a_recovery_wrap_is_read_by_upstreams_algorithm() {
    server_store_with_a_recovery_wrap_is_upstream_readable(StoreKind::Sqlite).await;
}

async fn json_file_with_a_recovery_wrap_is_read_by_upstreams_algorithm() {
    server_store_with_a_recovery_wrap_is_upstream_readable(StoreKind::Json).await;
}

// ---- PostgreSQL, MySQL/MariaDB and SQL Server: databases as upstream's EF Core providers make them ----

/// Python with `cryptography` and the server's driver module, or why not.
fn python_with(module: &str) -> Result<&'static str, String> {
    let python = python().ok_or("python3 with the `cryptography` package is not installed")?;
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(python)
    } else {
        Err(format!("the Python module `{module}` is not installed"))
    }
}

fn sql_script(
    python: &str,
    command: &str,
    pfx: &str,
    database: &TestDatabase,
    extra: &[&str],
) -> BTreeMap<String, String> {
    let mut args = vec![command, "--pfx", pfx, "--password", PFX_PASSWORD];
    let location = database.script_args();
    args.extend(location.iter().map(String::as_str));
    args.extend(extra);
    run_script(python, &args)
}

fn driver_module(server: Engine) -> &'static str {
    match server {
        Engine::PostgreSql => "psycopg2",
        Engine::MySql => "pymysql",
        // python-tds: a TDS client in pure Python, nothing shared with tiberius.
        Engine::SqlServer => "pytds",
    }
}

async fn upstream_written_sql_database_is_served(server: Engine) {
    // The server first: without a configured SQL Server its tests skip, whatever Python has.
    let database = crate::database_or_skip!(server);
    let python = match python_with(driver_module(server)) {
        Ok(python) => python,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    database.create_empty().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let pfx = write_test_pfx(dir.path());
    let users = sql_script(python, "make-sql", &pfx, &database, &["--users", "25"]);
    assert_eq!(users.len(), 25);

    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            database: Some(database.settings()),
            ..AppOptions::default()
        },
    )
    .await;
    for (id, key) in &users {
        let user: Uuid = id.parse().unwrap();
        assert_eq!(
            app.read_key(&idp.token_for(user)).await.as_ref(),
            Ok(key),
            "user {id}"
        );
    }
    let newcomer = Uuid::new_v4();
    let newcomer_key = random_key();
    assert_eq!(
        app.post_key(&idp.token_for(newcomer), &newcomer_key)
            .await
            .status(),
        StatusCode::OK
    );
    let (first_id, _) = users.iter().next().unwrap();
    let first_user: Uuid = first_id.parse().unwrap();
    let replaced_key = random_key();
    assert_eq!(
        app.put_key(&idp.token_for(first_user), &replaced_key)
            .await
            .status(),
        StatusCode::OK
    );
    app.shutdown().await;

    let read_back = sql_script(python, "read-sql", &pfx, &database, &[]);
    assert_eq!(read_back.len(), 26);
    assert_eq!(read_back.get(&newcomer.to_string()), Some(&newcomer_key));
    assert_eq!(read_back.get(first_id), Some(&replaced_key));
    for (id, key) in users.iter().skip(1) {
        assert_eq!(read_back.get(id), Some(key), "user {id} unchanged");
    }
}

async fn server_created_sql_database_is_upstream_readable(server: Engine) {
    // The server first: without a configured SQL Server its tests skip, whatever Python has.
    let database = crate::database_or_skip!(server);
    let python = match python_with(driver_module(server)) {
        Ok(python) => python,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let pfx = write_test_pfx(dir.path());
    let idp = Arc::new(TestIdp::start().await);
    // The database does not exist yet: the server creates it, as upstream's migration does.
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            database: Some(database.settings()),
            ..AppOptions::default()
        },
    )
    .await;
    let mut written = BTreeMap::new();
    for _ in 0..10 {
        let user = Uuid::new_v4();
        let key = random_key();
        assert_eq!(
            app.post_key(&idp.token_for(user), &key).await.status(),
            StatusCode::OK
        );
        written.insert(user.to_string(), key);
    }
    app.shutdown().await;
    assert_eq!(
        sql_script(python, "read-sql", &pfx, &database, &[]),
        written
    );
}

async fn postgresql_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable()
{
    upstream_written_sql_database_is_served(Engine::PostgreSql).await;
}

async fn mysql_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable() {
    upstream_written_sql_database_is_served(Engine::MySql).await;
}

async fn sqlserver_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable() {
    upstream_written_sql_database_is_served(Engine::SqlServer).await;
}

async fn postgresql_database_created_by_the_server_is_read_by_upstreams_algorithm() {
    server_created_sql_database_is_upstream_readable(Engine::PostgreSql).await;
}

async fn mysql_database_created_by_the_server_is_read_by_upstreams_algorithm() {
    server_created_sql_database_is_upstream_readable(Engine::MySql).await;
}

async fn sqlserver_database_created_by_the_server_is_read_by_upstreams_algorithm() {
    server_created_sql_database_is_upstream_readable(Engine::SqlServer).await;
}

/// Upstream's POST checks for a key, then inserts: two racing first POSTs leave a JSON file
/// holding one id twice. Upstream reads the first entry; so does every read and write here,
/// and `check-config` names the duplicates.
async fn a_json_file_holding_one_id_twice_is_served_and_updated_by_its_first_entry() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = || AppOptions {
        store: StoreKind::Json,
        data_dir: Some(Arc::clone(&dir)),
        ..AppOptions::default()
    };
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (first_key, other_key) = (random_key(), random_key());
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    assert_eq!(
        app.post_key(&idp.token_for(user), &first_key)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_key(&idp.token_for(other), &other_key)
            .await
            .status(),
        200
    );
    app.shutdown().await;

    // The second user's entry, relabelled as the first user's: a second entry for one id,
    // after the first, holding another key.
    let path = dir.path().join("data.json");
    let mut document: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entries = document["userKey"].as_array_mut().unwrap();
    let mut twin = entries
        .iter()
        .find(|entry| entry["id"] == other.to_string())
        .unwrap()
        .clone();
    twin["id"] = Value::String(user.to_string());
    entries.push(twin);
    std::fs::write(&path, serde_json::to_string(&document).unwrap()).unwrap();

    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    let token = idp.token_for(user);
    assert_eq!(app.read_key(&token).await, Ok(first_key));
    let replaced = random_key();
    assert_eq!(
        app.put_key(&token, &replaced).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.read_key(&token).await,
        Ok(replaced.clone()),
        "the PUT is seen"
    );
    app.shutdown().await;
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    assert_eq!(app.read_key(&token).await, Ok(replaced), "and kept");
    app.shutdown().await;

    let mut check = crate::support::binary::service_command(dir.path(), "json", &idp.url, 0);
    // The in-process apps used the shared test certificate in the same folder.
    check
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "test-password",
        )
        .arg("check-config");
    let (_, said) = crate::support::binary::run_to_end(check).await;
    assert!(
        said.contains(&format!(
            "1 user id(s) stand more than once: {user} (2 entries)"
        )),
        "{said}"
    );
}

crate::tests! {
    current_thread: [
        sqlite_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable,
        json_file_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable,
        sqlite_database_created_by_the_server_is_read_by_upstreams_algorithm,
        json_file_created_by_the_server_is_read_by_upstreams_algorithm,
        sqlite_database_with_a_recovery_wrap_is_read_by_upstreams_algorithm,
        json_file_with_a_recovery_wrap_is_read_by_upstreams_algorithm,
        postgresql_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable,
        mysql_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable,
        sqlserver_database_written_by_upstreams_algorithm_is_served_and_stays_upstream_readable,
        postgresql_database_created_by_the_server_is_read_by_upstreams_algorithm,
        mysql_database_created_by_the_server_is_read_by_upstreams_algorithm,
        sqlserver_database_created_by_the_server_is_read_by_upstreams_algorithm,
        a_json_file_holding_one_id_twice_is_served_and_updated_by_its_first_entry,
    ],
}
