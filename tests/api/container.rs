//! The container image's runtime, without a container engine: the real binary started
//! through `docker/entrypoint.sh` as the image starts it, with the image's
//! `appsettings.json`, user switch and data directory (relocated into temporary
//! directories), and the image's HEALTHCHECK command.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::binary::{free_port, read_key};
use crate::support::{TestIdp, random_key};

const BINARY: &str = env!("CARGO_BIN_EXE_key-connector");
const ENTRYPOINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/entrypoint.sh");
const IMAGE_SETTINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/appsettings.json");
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn open_to_all(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn the_image_entrypoint_runs_the_service_as_local_uid_with_data_in_the_volume() {
    if !is_root() {
        skip_or_fail!("the entrypoint's user switch needs root, as in the container");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip_or_fail!("setpriv (util-linux) is not installed");
    }
    let app_dir = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    open_to_all(app_dir.path());
    std::fs::copy(IMAGE_SETTINGS, app_dir.path().join("appsettings.json")).unwrap();
    let pfx = key_connector::pkcs12::generate_self_signed_pfx(2048, "image", Some("pw")).unwrap();
    std::fs::write(data_dir.path().join("key.pfx"), pfx).unwrap();

    let idp = Arc::new(TestIdp::start().await);
    let port = free_port();
    let data = data_dir.path().display().to_string();
    let mut child = Command::new("sh")
        .arg(ENTRYPOINT)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KC_APP_DIR", app_dir.path())
        .env("KC_DATA_DIR", data_dir.path())
        .env("KC_BINARY", BINARY)
        .env("LOCAL_UID", NOBODY.to_string())
        .env("LOCAL_GID", NOBODY.to_string())
        .env("ASPNETCORE_URLS", format!("http://127.0.0.1:{port}"))
        // What Bitwarden's key-connector.override.env sets; the image's appsettings.json
        // supplies the rest (json store, key.pfx), relocated from /etc/bitwarden here.
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        )
        .env("keyConnectorSettings__identityServerUri", &idp.url)
        .env("keyConnectorSettings__rsaKey__provider", "certificate")
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "pw",
        )
        .env(
            "keyConnectorSettings__certificate__filesystemPath",
            format!("{data}/key.pfx"),
        )
        .env(
            "keyConnectorSettings__database__jsonFilePath",
            format!("{data}/data.json"),
        )
        .env(
            "keyConnectorSettings__transferTo__lockfilePath",
            format!("{data}/transfer.lock"),
        )
        // The image's Serilog File sink, relocated like the data directory.
        .env(
            "Serilog__WriteTo__1__Args__path",
            format!("{data}/logs/log.txt"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/alive"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the entrypoint exited: {status}");
        }
        assert!(Instant::now() < deadline, "the service did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The service process (the entrypoint exec'd into it) runs as LOCAL_UID, not root.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|uid| uid == NOBODY.to_string()),
        "{uid_line}"
    );

    let user = Uuid::new_v4();
    let key = random_key();
    let response = client
        .post(format!("{base}/user-keys"))
        .bearer_auth(idp.token_for(user))
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        read_key(&client, &base, &idp.token_for(user)).await,
        Ok(key)
    );
    // Data lands in the volume, owned by LOCAL_UID, next to the directories upstream makes.
    let document = data_dir.path().join("data.json");
    assert_eq!(std::fs::metadata(&document).unwrap().uid(), NOBODY);
    assert_eq!(std::fs::metadata(data_dir.path()).unwrap().uid(), NOBODY);
    assert!(data_dir.path().join("logs").is_dir());
    // The log file of the image's Serilog section: `log.txt` named by the day, the user's.
    let log_files: Vec<_> = std::fs::read_dir(data_dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(log_files.len(), 1, "{log_files:?}");
    let name = log_files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.len() == "log20261201.txt".len() && name.starts_with("log2") && name.ends_with(".txt"),
        "{name}"
    );
    assert_eq!(std::fs::metadata(&log_files[0]).unwrap().uid(), NOBODY);
    assert!(data_dir.path().join("ca-certificates").is_dir());

    // The image's HEALTHCHECK command.
    let health = Command::new(BINARY)
        .arg("healthcheck")
        .env("ASPNETCORE_URLS", format!("http://+:{port}"))
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
    let health = Command::new(BINARY)
        .args(["healthcheck", "--url", &format!("{base}/health")])
        .output()
        .unwrap();
    assert!(
        !health.status.success(),
        "healthcheck fails when the service is down"
    );
}

fn the_dockerfile_builds_every_provider_and_runs_the_entrypoint() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    // The default features are every store and provider: no --no-default-features.
    assert!(dockerfile.contains("cargo build --profile dist --locked --bin key-connector"));
    assert!(!dockerfile.contains("no-default-features"));
    for expected in [
        "ENV ASPNETCORE_URLS=http://+:5000",
        "EXPOSE 5000",
        "HEALTHCHECK",
        "ENTRYPOINT [\"/entrypoint.sh\"]",
        "COPY docker/appsettings.json /app/appsettings.json",
        "WORKDIR /app",
    ] {
        assert!(dockerfile.contains(expected), "Dockerfile lacks {expected}");
    }
}

crate::tests! {
    multi_thread(2): [
        the_image_entrypoint_runs_the_service_as_local_uid_with_data_in_the_volume,
    ],
    sync: [
        the_dockerfile_builds_every_provider_and_runs_the_entrypoint,
    ],
}
