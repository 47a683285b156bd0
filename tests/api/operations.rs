//! Operating the service: upstream's start-up `transferTo`, and the admin subcommands
//! (`check-config`, `transfer`, `stats`) of the real binary.

use key_connector::config::SettingsGroup;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use key_connector::config::DatabaseSettings;
use key_connector::keys::RsaKeySettings;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::settings::{TransferTarget, TransferToSettings};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::{AppOptions, StoreKind, TestIdp, random_key, spawn_app_with};

const BINARY: &str = env!("CARGO_BIN_EXE_key-connector");

/// A second certificate, so that the target is sealed under another RSA key.
fn target_pfx(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("target.pfx");
    if !path.exists() {
        let bytes =
            key_connector::pkcs12::generate_self_signed_pfx(2048, "target", Some("target-pw"))
                .unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    path
}

fn json_target(dir: &Path) -> TransferTarget {
    TransferTarget {
        database: DatabaseSettings::Json {
            path: dir.join("target.json"),
        },
        rsa_key: RsaKeySettings::Certificate(CertificateSettings::Filesystem {
            path: target_pfx(dir),
            password: Some("target-pw".to_owned().into()),
        }),
    }
}

/// Serves the transfer target (JSON file, target certificate) on its own.
async fn serve_target(idp: &Arc<TestIdp>, dir: &Path) -> crate::support::TestApp {
    let target_dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(target_pfx(dir), target_dir.path().join("key.pfx")).unwrap();
    std::fs::copy(dir.join("target.json"), target_dir.path().join("data.json")).unwrap();
    spawn_app_with(
        Arc::clone(idp),
        AppOptions {
            store: StoreKind::Json,
            data_dir: Some(target_dir),
            rsa_key: Some(json_target(dir).rsa_key),
            ..AppOptions::default()
        },
    )
    .await
}

async fn transfer_to_copies_every_key_once_verifies_and_records_completion() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let lockfile = dir.path().join("transfer.lock");

    // A source database with keys, served first without any transfer.
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let users = seed_users(&app, &idp, 15).await;
    app.shutdown().await;

    // Restart with transferTo: the copy runs before serving.
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            transfer_to: Some(TransferToSettings {
                lockfile_path: Some(lockfile.clone()),
                target: Some(json_target(dir.path())),
            }),
            ..AppOptions::default()
        },
    )
    .await;
    let lock = std::fs::read_to_string(&lockfile).unwrap();
    assert!(
        lock.starts_with("key-connector transfer completed"),
        "{lock}"
    );
    assert!(
        lock.contains("15 user keys: 15 copied, 0 already present, 15 verified, 0 skipped"),
        "{lock}"
    );
    // The source is still served as it was.
    for (user, key) in &users {
        assert_eq!(app.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
    }
    // A key stored after the transfer is not copied by the next start: the lock file exists.
    let late = Uuid::new_v4();
    assert_eq!(
        app.post_key(&idp.token_for(late), &random_key())
            .await
            .status(),
        StatusCode::OK
    );
    app.shutdown().await;
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            transfer_to: Some(TransferToSettings {
                lockfile_path: Some(lockfile.clone()),
                target: Some(json_target(dir.path())),
            }),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&lockfile).unwrap(),
        lock,
        "ran once"
    );
    app.shutdown().await;

    // The target, served with its own certificate, has every key transferred, sealed anew.
    let target = serve_target(&idp, dir.path()).await;
    for (user, key) in &users {
        assert_eq!(
            target.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key)
        );
    }
    assert_eq!(target.read_key(&idp.token_for(late)).await, Err(404));
    let source_text = std::fs::read_to_string(dir.path().join("target.json")).unwrap();
    assert!(
        !source_text.contains(&users[0].1),
        "keys are sealed, not copied in clear"
    );
}

async fn an_interrupted_transfer_resumes_and_an_upstream_lock_file_is_respected() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let lockfile = dir.path().join("transfer.lock");
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let key = random_key();
    assert_eq!(
        app.post_key(&idp.token_for(user), &key).await.status(),
        StatusCode::OK
    );
    app.shutdown().await;

    // Upstream writes the lock file with a .NET date before copying: never run then.
    std::fs::write(&lockfile, "11/25/2026 6:30:00 AM").unwrap();
    let options = || AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        transfer_to: Some(TransferToSettings {
            lockfile_path: Some(lockfile.clone()),
            target: Some(json_target(dir.path())),
        }),
        ..AppOptions::default()
    };
    spawn_app_with(Arc::clone(&idp), options())
        .await
        .shutdown()
        .await;
    assert!(
        !dir.path().join("target.json").exists(),
        "no transfer under upstream's lock file"
    );

    // Our own marker of an unfinished copy: the next start runs it again.
    std::fs::write(
        &lockfile,
        "key-connector transfer in progress since 2026-11-25T06:30:00Z\n",
    )
    .unwrap();
    spawn_app_with(Arc::clone(&idp), options())
        .await
        .shutdown()
        .await;
    let lock = std::fs::read_to_string(&lockfile).unwrap();
    assert!(lock.contains("1 user keys: 1 copied"), "{lock}");
    // And once more after a (simulated) crash right after copying: nothing copied twice.
    std::fs::write(
        &lockfile,
        "key-connector transfer in progress since 2026-11-25T06:31:00Z\n",
    )
    .unwrap();
    spawn_app_with(Arc::clone(&idp), options())
        .await
        .shutdown()
        .await;
    let lock = std::fs::read_to_string(&lockfile).unwrap();
    assert!(
        lock.contains("1 user keys: 0 copied, 1 already present"),
        "{lock}"
    );
    let target = serve_target(&idp, dir.path()).await;
    assert_eq!(target.read_key(&idp.token_for(user)).await, Ok(key));
}

/// Stores a key for each of `count` new users through the API; returns them.
async fn seed_users(
    app: &crate::support::TestApp,
    idp: &TestIdp,
    count: usize,
) -> Vec<(Uuid, String)> {
    let mut users = Vec::new();
    for _ in 0..count {
        let user = Uuid::new_v4();
        let key = random_key();
        assert_eq!(
            app.post_key(&idp.token_for(user), &key).await.status(),
            StatusCode::OK
        );
        users.push((user, key));
    }
    users
}

// ---- the admin subcommands of the binary ----

/// The binary with settings for the SQLite database and certificate in `dir`, as the
/// helpers write them, plus `extra` environment variables.
fn admin(
    dir: &Path,
    identity: &str,
    args: &[&str],
    extra: &[(&str, String)],
) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        )
        .env("keyConnectorSettings__identityServerUri", identity)
        .env("keyConnectorSettings__database__provider", "sqlite")
        .env(
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source={}", dir.join("keys.db").display()),
        )
        .env("keyConnectorSettings__rsaKey__provider", "certificate")
        .env("keyConnectorSettings__certificate__provider", "filesystem")
        .env(
            "keyConnectorSettings__certificate__filesystemPath",
            dir.join("key.pfx"),
        )
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "test-password",
        )
        .args(args);
    for (name, value) in extra {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn transfer_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "keyConnectorSettings__transferTo__database__provider",
            "json".into(),
        ),
        (
            "keyConnectorSettings__transferTo__database__jsonFilePath",
            dir.join("target.json").display().to_string(),
        ),
        (
            "keyConnectorSettings__transferTo__rsaKey__provider",
            "certificate".into(),
        ),
        (
            "keyConnectorSettings__transferTo__certificate__provider",
            "filesystem".into(),
        ),
        (
            "keyConnectorSettings__transferTo__certificate__filesystemPath",
            target_pfx(dir).display().to_string(),
        ),
        (
            "keyConnectorSettings__transferTo__certificate__filesystemPassword",
            "target-pw".into(),
        ),
    ]
}

/// A command never creates the service's database: with a mistyped path each one refuses,
/// naming the setting, and leaves no file; `check-config` only warns (a new deployment has
/// no database before the service's first start) and still checks the RSA key.
async fn commands_on_a_database_that_is_not_there_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::app::key_pfx_in(dir.path());
    let idp = "http://127.0.0.1:9";
    let transfer = transfer_env(dir.path());
    let refused = [
        (&["stats"][..], vec![]),
        (&["rotate-symmetric-key", "--service-stopped"][..], vec![]),
        (
            &["bind-user-keys"][..],
            vec![("keyConnectorSettings__userKeyBinding", "on".to_owned())],
        ),
        (&["unbind-user-keys", "--service-stopped"][..], vec![]),
        (&["transfer"][..], transfer),
    ];
    for (args, extra) in refused {
        let output = admin(dir.path(), idp, args, &extra);
        assert!(!output.status.success(), "{args:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "{} does not exist (keyConnectorSettings__database__sqliteConnectionString)",
                dir.path().join("keys.db").display()
            )),
            "{args:?}: {}",
            text(&output)
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["key.pfx", "target.pfx"],
            "{args:?} left files behind"
        );
    }

    let output = admin(dir.path(), idp, &["check-config"], &[]);
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "warn  database",
        "does not exist (keyConnectorSettings__database__sqliteConnectionString); nothing was created; the service creates it at its first start",
        "ok    RSA key            certificate",
        "ok    RSA key health     answers",
    ] {
        assert!(report.contains(expected), "{expected}:\n{}", text(&output));
    }
    assert!(!dir.path().join("keys.db").exists(), "{}", text(&output));
}

async fn admin_commands_check_transfer_and_report() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let users = seed_users(&app, &idp, 7).await;
    app.shutdown().await;
    let dir_path = dir.path().to_owned();
    let idp_url = idp.url.clone();
    let run = move |args: &'static [&'static str], extra: Vec<(&'static str, String)>| {
        let dir = dir_path.clone();
        let idp_url = idp_url.clone();
        tokio::task::spawn_blocking(move || admin(&dir, &idp_url, args, &extra))
    };

    // check-config: everything fine.
    let output = run(&["check-config"], vec![]).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "ok    database",
        "sqlite store",
        "ok    symmetric key",
        "7 stored; 7 sampled, all decrypt",
        "ok    identity server",
        "all checks passed",
    ] {
        assert!(report.contains(expected), "{expected}:\n{report}");
    }
    // check-config: a wrong certificate is a failure, and nothing is written.
    let before = std::fs::read(dir.path().join("keys.db")).unwrap();
    let output = run(
        &["check-config"],
        vec![
            (
                "keyConnectorSettings__certificate__filesystemPath",
                target_pfx(dir.path()).display().to_string(),
            ),
            (
                "keyConnectorSettings__certificate__filesystemPassword",
                "target-pw".into(),
            ),
        ],
    )
    .await
    .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("FAIL"),
        "{}",
        text(&output)
    );
    assert_eq!(std::fs::read(dir.path().join("keys.db")).unwrap(), before);

    // stats
    let output = run(&["stats"], vec![]).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stats = String::from_utf8_lossy(&output.stdout);
    assert!(stats.contains("users with a key:     7"), "{stats}");

    // transfer --dry-run writes nothing; transfer copies; a second transfer finds them all.
    let output = run(&["transfer", "--dry-run"], transfer_env(dir.path()))
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("7 user keys: 7 would copy"),
        "{}",
        text(&output)
    );
    // Opening the target may create its empty store, as the service would; no key is written.
    if let Ok(text) = std::fs::read_to_string(dir.path().join("target.json")) {
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(document["symmetricKey"].is_null(), "{document}");
        assert_eq!(
            document["userKey"].as_array().map_or(0, Vec::len),
            0,
            "{document}"
        );
    }
    let output = run(&["transfer"], transfer_env(dir.path())).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("7 copied, 0 already present, 7 verified"),
        "{}",
        text(&output)
    );
    let output = run(&["transfer"], transfer_env(dir.path())).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("0 copied, 7 already present"),
        "{}",
        text(&output)
    );
    let target = serve_target(&idp, dir.path()).await;
    for (user, key) in &users {
        assert_eq!(
            target.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key)
        );
    }

    // transfer without a target says what to set.
    let output = run(&["transfer"], vec![]).await.unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("keyConnectorSettings__transferTo__database__provider"),
        "{}",
        text(&output)
    );
}

async fn rotate_rsa_key_rewraps_the_symmetric_key_and_keeps_every_user_key() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let users = seed_users(&app, &idp, 5).await;
    app.shutdown().await;
    let new_key = target_pfx(dir.path()).display().to_string();
    let rotate_env = vec![
        (
            "keyConnectorSettings__rotateTo__rsaKey__provider",
            "certificate".to_string(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__provider",
            "filesystem".into(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPath",
            new_key.clone(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPassword",
            "target-pw".into(),
        ),
    ];
    let (dir_path, idp_url) = (dir.path().to_owned(), idp.url.clone());
    let output = tokio::task::spawn_blocking(move || {
        admin(&dir_path, &idp_url, &["rotate-rsa-key"], &rotate_env)
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("user keys unchanged"),
        "{}",
        text(&output)
    );
    assert!(
        !text(&output).contains("unknown setting"),
        "rotateTo is a known group: {}",
        text(&output)
    );

    // The old certificate no longer opens the database; the new one serves every key.
    let error = crate::support::try_spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await
    .err()
    .expect("the old RSA key is refused");
    assert!(error.to_string().contains("cannot be unwrapped"), "{error}");
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            rsa_key: Some(json_target(dir.path()).rsa_key),
            ..AppOptions::default()
        },
    )
    .await;
    for (user, key) in &users {
        assert_eq!(app.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
    }

    // Without rotateTo settings it says what to set.
    let (dir_path, idp_url) = (dir.path().to_owned(), idp.url.clone());
    let output =
        tokio::task::spawn_blocking(move || admin(&dir_path, &idp_url, &["rotate-rsa-key"], &[]))
            .await
            .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("keyConnectorSettings__rotateTo__rsaKey__provider"),
        "{}",
        text(&output)
    );

    // A wrong password for the new key names the rotateTo setting, not the current key's.
    let (dir_path, idp_url) = (dir.path().to_owned(), idp.url.clone());
    let wrong_password = vec![
        (
            "keyConnectorSettings__rotateTo__rsaKey__provider",
            "certificate".to_string(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__provider",
            "filesystem".into(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPath",
            new_key,
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPassword",
            "not-the-password".into(),
        ),
    ];
    let output = tokio::task::spawn_blocking(move || {
        admin(&dir_path, &idp_url, &["rotate-rsa-key"], &wrong_password)
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let said = text(&output);
    assert!(
        said.contains("keyConnectorSettings__rotateTo__certificate__filesystemPassword"),
        "{said}"
    );
    assert!(
        !said.contains("keyConnectorSettings__certificate__filesystemPassword"),
        "{said}"
    );
}

async fn rotate_symmetric_key_is_resumable_and_every_key_stays_readable_throughout() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = || AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        ..AppOptions::default()
    };
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    let users = seed_users(&app, &idp, 10).await;
    app.shutdown().await;
    let db = dir.path().join("keys.db");
    let symmetric_rows = || {
        let connection = rusqlite::Connection::open(&db).unwrap();
        let mut statement = connection
            .prepare(r#"SELECT "SymmetricKey" FROM "ApplicationDatas" ORDER BY "Id""#)
            .unwrap();
        statement
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let before = symmetric_rows();
    assert_eq!(before.len(), 1);
    let run = |args: &'static [&'static str]| {
        let (dir, idp_url) = (dir.path().to_owned(), idp.url.clone());
        tokio::task::spawn_blocking(move || admin(&dir, &idp_url, args, &[]))
    };

    // Refused unless the operator confirms the service is stopped.
    let output = run(&["rotate-symmetric-key"]).await.unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("--service-stopped"),
        "{}",
        text(&output)
    );

    // An interrupted rotation (4 keys re-sealed, then stopped): the service serves every
    // key, under either symmetric key.
    let output = run(&["rotate-symmetric-key", "--service-stopped", "--batch", "4"])
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("10 user keys: 4 re-sealed now, 0 already re-sealed"),
        "{}",
        text(&output)
    );
    assert!(text(&output).contains("not finished"), "{}", text(&output));
    assert_eq!(symmetric_rows().len(), 2, "current and pending keys");
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    for (user, key) in &users {
        assert_eq!(app.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
    }
    app.shutdown().await;

    // Resumed: the rest is re-sealed, the new key becomes current, the old one is gone.
    let output = run(&["rotate-symmetric-key", "--service-stopped"])
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("6 re-sealed now, 4 already re-sealed"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("rotation completed"),
        "{}",
        text(&output)
    );
    let after = symmetric_rows();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new symmetric key");
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    for (user, key) in &users {
        assert_eq!(app.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
    }
    app.shutdown().await;

    // Upstream's format is kept: one key row, every user key sealed under it.
    let output = run(&["check-config"]).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

async fn rotate_symmetric_key_killed_midway_loses_nothing() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = || AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        ..AppOptions::default()
    };
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    let users = seed_users(&app, &idp, 300).await;
    app.shutdown().await;

    // kill -9 while it re-seals (each re-seal is a durable write): once a pending key is
    // saved and some, not all, user keys are sealed under it.
    let sealed_before = sealed_user_keys(dir.path());
    let mut child = Command::new(BINARY)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        )
        .env("keyConnectorSettings__identityServerUri", &idp.url)
        .env("keyConnectorSettings__database__provider", "sqlite")
        .env(
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source={}", dir.path().join("keys.db").display()),
        )
        .env("keyConnectorSettings__rsaKey__provider", "certificate")
        .env("keyConnectorSettings__certificate__provider", "filesystem")
        .env(
            "keyConnectorSettings__certificate__filesystemPath",
            dir.path().join("key.pfx"),
        )
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "test-password",
        )
        .args(["rotate-symmetric-key", "--service-stopped"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let midway = |(key_rows, resealed): (usize, usize)| {
        key_rows == 2 && resealed > 0 && resealed < sealed_before.len()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !midway(rotation_progress(dir.path(), &sealed_before)) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the rotation ended before it could be interrupted midway"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let at_kill = rotation_progress(dir.path(), &sealed_before);
    assert!(
        midway(at_kill),
        "the kill landed mid-rotation: (key rows, re-sealed) = {at_kill:?} of {}",
        sealed_before.len()
    );

    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    for (user, key) in &users {
        assert_eq!(
            app.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key),
            "user {user}"
        );
    }
    app.shutdown().await;
    let (dir_path, idp_url) = (dir.path().to_owned(), idp.url.clone());
    let output = tokio::task::spawn_blocking(move || {
        admin(
            &dir_path,
            &idp_url,
            &["rotate-symmetric-key", "--service-stopped"],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("rotation completed"),
        "{}",
        text(&output)
    );
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    for (user, key) in &users {
        assert_eq!(
            app.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key),
            "user {user}"
        );
    }
}

/// Upstream's `transferTo` from a SQLite database into a (missing) database on `server`.
async fn transfer_into(server: crate::support::databases::Engine) {
    let database = crate::database_or_skip!(server);
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let users = seed_users(&app, &idp, 8).await;
    app.shutdown().await;
    let target_key = json_target(dir.path()).rsa_key;
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            transfer_to: Some(TransferToSettings {
                lockfile_path: Some(dir.path().join("transfer.lock")),
                target: Some(TransferTarget {
                    database: database.settings(),
                    rsa_key: target_key,
                }),
            }),
            ..AppOptions::default()
        },
    )
    .await;
    app.shutdown().await;
    let lock = std::fs::read_to_string(dir.path().join("transfer.lock")).unwrap();
    assert!(
        lock.contains("8 user keys: 8 copied, 0 already present, 8 verified"),
        "{server:?}: {lock}"
    );
    // The target database, served with the target key, has every key.
    let target = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            database: Some(database.settings()),
            rsa_key: Some(json_target(dir.path()).rsa_key),
            ..AppOptions::default()
        },
    )
    .await;
    for (user, key) in &users {
        assert_eq!(
            target.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key),
            "{server:?}"
        );
    }
}

async fn transfer_to_moves_a_sqlite_database_into_postgresql() {
    transfer_into(crate::support::databases::Engine::PostgreSql).await;
}

async fn transfer_to_moves_a_sqlite_database_into_mysql() {
    transfer_into(crate::support::databases::Engine::MySql).await;
}

async fn transfer_to_moves_a_sqlite_database_into_sql_server() {
    transfer_into(crate::support::databases::Engine::SqlServer).await;
}

/// Both rotations on a SQL Server database, through the binary: the symmetric key's
/// (interrupted, then resumed: the pending key is row 2 of `ApplicationDatas` meanwhile) and
/// the RSA key's; the service serves every key after each step.
async fn rotations_on_sql_server_keep_every_user_key() {
    use crate::support::databases::Engine;
    let database = crate::database_or_skip!(Engine::SqlServer);
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = |rsa_key: Option<RsaKeySettings>| AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        database: Some(database.settings()),
        rsa_key,
        ..AppOptions::default()
    };
    let serves_every_key = |users: Vec<(Uuid, String)>, rsa_key: Option<RsaKeySettings>| {
        let (idp, options) = (Arc::clone(&idp), options(rsa_key));
        async move {
            let app = spawn_app_with(Arc::clone(&idp), options).await;
            for (user, key) in &users {
                assert_eq!(app.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
            }
            app.shutdown().await;
        }
    };
    let app = spawn_app_with(Arc::clone(&idp), options(None)).await;
    let users = seed_users(&app, &idp, 10).await;
    app.shutdown().await;
    let on_sql_server = vec![
        (
            "keyConnectorSettings__database__provider",
            "sqlserver".to_string(),
        ),
        (
            Engine::SqlServer.connection_string_variable(),
            database.connection_string(),
        ),
    ];
    let run = |args: &'static [&'static str], extra: Vec<(&'static str, String)>| {
        let (dir, idp_url) = (dir.path().to_owned(), idp.url.clone());
        let mut env = on_sql_server.clone();
        env.extend(extra);
        tokio::task::spawn_blocking(move || admin(&dir, &idp_url, args, &env))
    };
    let symmetric_rows = || database.column("SELECT [SymmetricKey] FROM [ApplicationDatas]");
    let before = symmetric_rows().await;
    assert_eq!(before.len(), 1);

    let output = run(
        &["rotate-symmetric-key", "--service-stopped", "--batch", "4"],
        vec![],
    )
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("10 user keys: 4 re-sealed now, 0 already re-sealed"),
        "{}",
        text(&output)
    );
    assert_eq!(symmetric_rows().await.len(), 2, "current and pending keys");
    serves_every_key(users.clone(), None).await;

    let output = run(&["rotate-symmetric-key", "--service-stopped"], vec![])
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("6 re-sealed now, 4 already re-sealed"),
        "{}",
        text(&output)
    );
    let after = symmetric_rows().await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new symmetric key");
    serves_every_key(users.clone(), None).await;

    let new_key = target_pfx(dir.path()).display().to_string();
    let rotate_to = vec![
        (
            "keyConnectorSettings__rotateTo__rsaKey__provider",
            "certificate".to_string(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__provider",
            "filesystem".into(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPath",
            new_key,
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPassword",
            "target-pw".into(),
        ),
    ];
    let output = run(&["rotate-rsa-key"], rotate_to).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("user keys unchanged"),
        "{}",
        text(&output)
    );
    serves_every_key(users, Some(json_target(dir.path()).rsa_key)).await;
}

/// `"UserKeysBound"` in the SQLite database of `dir`, if the table and the row exist.
fn bound_property(dir: &Path) -> Option<String> {
    let connection = rusqlite::Connection::open(dir.join("keys.db")).unwrap();
    connection
        .query_row(
            r#"SELECT "Value" FROM "KeyConnectorProperties" WHERE "Name" = 'UserKeysBound'"#,
            [],
            |row| row.get(0),
        )
        .ok()
}

/// How many `Key` values of the SQLite database in `dir` are bound (`kc1:`) and unbound.
fn key_forms(dir: &Path) -> (usize, usize) {
    let connection = rusqlite::Connection::open(dir.join("keys.db")).unwrap();
    let mut statement = connection
        .prepare(r#"SELECT "Key" FROM "UserKeys""#)
        .unwrap();
    let keys: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let bound = keys.iter().filter(|k| k.starts_with("kc1:")).count();
    (bound, keys.len() - bound)
}

fn binding(on: bool) -> Vec<(&'static str, String)> {
    vec![(
        "keyConnectorSettings__userKeyBinding",
        if on { "on" } else { "off" }.into(),
    )]
}

async fn bind_user_keys_is_resumable_and_unbind_user_keys_restores_upstreams_form() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = |on: bool| AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        user_key_binding: if on {
            key_connector::config::UserKeyBinding::On
        } else {
            key_connector::config::UserKeyBinding::Off
        },
        ..AppOptions::default()
    };
    let app = spawn_app_with(Arc::clone(&idp), options(false)).await;
    let users = seed_users(&app, &idp, 10).await;
    app.shutdown().await;
    let run = |args: &'static [&'static str], on: bool| {
        let (dir, idp_url) = (dir.path().to_owned(), idp.url.clone());
        tokio::task::spawn_blocking(move || admin(&dir, &idp_url, args, &binding(on)))
    };
    let reads_every_key = async |on: bool| {
        let app = spawn_app_with(Arc::clone(&idp), options(on)).await;
        for (user, key) in &users {
            assert_eq!(app.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
        }
        app.shutdown().await;
    };

    // Refused while the setting is off: instances would keep writing unbound keys.
    let output = run(&["bind-user-keys"], false).await.unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("userKeyBinding=on"),
        "{}",
        text(&output)
    );

    // Interrupted after 4 keys: nothing is refused yet, every key reads.
    let output = run(&["bind-user-keys", "--batch", "4"], true)
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("10 user keys: 4 bound now, 0 already bound"),
        "{}",
        text(&output)
    );
    assert_eq!(key_forms(dir.path()), (4, 6));
    assert_eq!(
        bound_property(dir.path()),
        None,
        "recorded only when all are bound"
    );
    reads_every_key(true).await;

    // Resumed: the rest is bound, then the database records it.
    let output = run(&["bind-user-keys"], true).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("6 bound now, 4 already bound"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("refuses unbound keys"),
        "{}",
        text(&output)
    );
    assert_eq!(key_forms(dir.path()), (10, 0));
    assert_eq!(bound_property(dir.path()).as_deref(), Some("true"));
    reads_every_key(true).await;

    // check-config and stats report the state.
    let output = run(&["check-config"], true).await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("10 bound to their user, 0 unbound"),
        "{}",
        text(&output)
    );
    let output = run(&["stats"], true).await.unwrap();
    assert!(
        text(&output).contains("user key binding:     10 bound to their user, 0 unbound")
            && text(&output).contains("unbound keys refused"),
        "{}",
        text(&output)
    );

    // Unbinding: only with the service stopped and the setting off.
    let output = run(&["unbind-user-keys"], false).await.unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("--service-stopped"),
        "{}",
        text(&output)
    );
    let output = run(&["unbind-user-keys", "--service-stopped"], true)
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("userKeyBinding=off"),
        "{}",
        text(&output)
    );
    assert_eq!(key_forms(dir.path()), (10, 0), "nothing changed");

    // Interrupted after 3: the record went first, so the mix is readable.
    let output = run(
        &["unbind-user-keys", "--service-stopped", "--batch", "3"],
        false,
    )
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(bound_property(dir.path()), None);
    assert_eq!(key_forms(dir.path()), (7, 3));
    reads_every_key(false).await;
    let output = run(&["unbind-user-keys", "--service-stopped"], false)
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("the official service can read this database"),
        "{}",
        text(&output)
    );
    assert_eq!(key_forms(dir.path()), (0, 10));
    reads_every_key(false).await;
}

async fn bind_user_keys_killed_midway_loses_nothing_and_a_rerun_completes() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = || AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        user_key_binding: key_connector::config::UserKeyBinding::On,
        ..AppOptions::default()
    };
    // Sealed unbound, as before binding was turned on.
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let users = seed_users(&app, &idp, 300).await;
    app.shutdown().await;

    let mut command = Command::new(BINARY);
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        )
        .env("keyConnectorSettings__identityServerUri", &idp.url)
        .env("keyConnectorSettings__database__provider", "sqlite")
        .env(
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source={}", dir.path().join("keys.db").display()),
        )
        .env("keyConnectorSettings__rsaKey__provider", "certificate")
        .env("keyConnectorSettings__certificate__provider", "filesystem")
        .env(
            "keyConnectorSettings__certificate__filesystemPath",
            dir.path().join("key.pfx"),
        )
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "test-password",
        )
        .env("keyConnectorSettings__userKeyBinding", "on")
        .arg("bind-user-keys")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    // kill -9 once it is re-sealing (each re-seal is a durable write of its own).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while key_forms(dir.path()).0 == 0 {
        assert!(std::time::Instant::now() < deadline, "binding never began");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let (bound, unbound) = key_forms(dir.path());
    assert_eq!(bound + unbound, 300);

    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    for (user, key) in &users {
        assert_eq!(
            app.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key),
            "user {user}"
        );
    }
    app.shutdown().await;
    let (dir_path, idp_url) = (dir.path().to_owned(), idp.url.clone());
    let output = tokio::task::spawn_blocking(move || {
        admin(&dir_path, &idp_url, &["bind-user-keys"], &binding(true))
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("every key is bound"),
        "{}",
        text(&output)
    );
    assert_eq!(key_forms(dir.path()), (300, 0));
    let app = spawn_app_with(Arc::clone(&idp), options()).await;
    for (user, key) in &users {
        assert_eq!(
            app.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key),
            "user {user}"
        );
    }
}

/// Every user key row of the SQLite database in `dir`: id and sealed key.
fn sealed_user_keys(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    let connection = rusqlite::Connection::open(dir.join("keys.db")).unwrap();
    let mut statement = connection.prepare("SELECT Id, Key FROM UserKeys").unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// How far a symmetric-key rotation has come in `dir`'s database: the `ApplicationDatas`
/// rows (2 while a pending key waits) and how many user keys differ from `before`.
fn rotation_progress(
    dir: &std::path::Path,
    before: &std::collections::HashMap<String, String>,
) -> (usize, usize) {
    let connection = rusqlite::Connection::open(dir.join("keys.db")).unwrap();
    let key_rows: i64 = connection
        .query_row("SELECT COUNT(*) FROM ApplicationDatas", [], |row| {
            row.get(0)
        })
        .unwrap();
    let key_rows = usize::try_from(key_rows).unwrap();
    let resealed = sealed_user_keys(dir)
        .iter()
        .filter(|(id, key)| before.get(*id) != Some(*key))
        .count();
    (key_rows, resealed)
}

/// `rotate-rsa-key` unwraps the stored key as start-up does, 32-byte check included: a
/// stored key that unwraps to another length (damaged, or not a symmetric key at all) is
/// refused, never wrapped anew under the new RSA key, and nothing is written.
async fn rotate_rsa_key_refuses_a_stored_key_that_is_not_32_bytes() {
    use key_connector::keys::RsaKeyProvider;
    use key_connector::keys::certificate::{CertificateKeyProvider, CertificateSettings};
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    app.shutdown().await;
    // The database's key replaced by a valid wrapping of 16 bytes under the same certificate.
    let certificate = CertificateKeyProvider::open(
        &CertificateSettings::Filesystem {
            path: dir.path().join("key.pfx"),
            password: Some(secrecy::SecretString::from("test-password")),
        },
        SettingsGroup::Main,
    )
    .await
    .unwrap();
    let short = certificate.wrap_symmetric_key(&[7u8; 16]).await.unwrap();
    let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, short);
    rusqlite::Connection::open(dir.path().join("keys.db"))
        .unwrap()
        .execute("UPDATE ApplicationDatas SET SymmetricKey = ?1", [&short])
        .unwrap();
    let rotate_env = vec![
        (
            "keyConnectorSettings__rotateTo__rsaKey__provider",
            "certificate".to_string(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__provider",
            "filesystem".into(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPath",
            target_pfx(dir.path()).display().to_string(),
        ),
        (
            "keyConnectorSettings__rotateTo__certificate__filesystemPassword",
            "target-pw".into(),
        ),
    ];
    let (dir_path, idp_url) = (dir.path().to_owned(), idp.url.clone());
    let output = tokio::task::spawn_blocking(move || {
        admin(&dir_path, &idp_url, &["rotate-rsa-key"], &rotate_env)
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("16 bytes instead of 32"),
        "{}",
        text(&output)
    );
    let stored: String = rusqlite::Connection::open(dir.path().join("keys.db"))
        .unwrap()
        .query_row("SELECT SymmetricKey FROM ApplicationDatas", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(stored, short, "nothing was written");
}

crate::tests! {
    multi_thread(2): [
        transfer_to_copies_every_key_once_verifies_and_records_completion,
        an_interrupted_transfer_resumes_and_an_upstream_lock_file_is_respected,
        admin_commands_check_transfer_and_report,
        commands_on_a_database_that_is_not_there_create_nothing,
        rotate_rsa_key_rewraps_the_symmetric_key_and_keeps_every_user_key,
        rotate_symmetric_key_is_resumable_and_every_key_stays_readable_throughout,
        rotate_symmetric_key_killed_midway_loses_nothing,
        transfer_to_moves_a_sqlite_database_into_postgresql,
        transfer_to_moves_a_sqlite_database_into_mysql,
        transfer_to_moves_a_sqlite_database_into_sql_server,
        rotations_on_sql_server_keep_every_user_key,
        bind_user_keys_is_resumable_and_unbind_user_keys_restores_upstreams_form,
        bind_user_keys_killed_midway_loses_nothing_and_a_rerun_completes,
        rotate_rsa_key_refuses_a_stored_key_that_is_not_32_bytes,
    ],
}
