//! The container image itself: built with podman from the Dockerfile's `prebuilt` target
//! around the binary CI built (so the service is not compiled twice), then run the way
//! Bitwarden's installer runs the official image, with the compose files in `docker/`
//! supplying the mounts and environment files.
//!
//! Needs podman, a `debian:bookworm-slim` base image in its store (`.ci/container-base`
//! makes one with debootstrap) and the binary (`cargo build --profile dist`, or the file
//! named by `KC_IMAGE_BINARY`). Without them the tests skip with the reason, and fail in CI.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::TestIdp;
use crate::support::binary::{free_port, read_key, stores_and_serves_a_key_at};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const IMAGE_TAG: &str = "localhost/key-connector:test";
const BASE_IMAGE: &str = "debian:bookworm-slim";
/// The ids Bitwarden's installer would write into `env/uid.env` for the host user.
const INSTALL_UID: u32 = 4321;
const PFX_PASSWORD: &str = "installer-made-password";

/// Settings podman needs on these machines (no ulimit changes, runc), unless the caller
/// already points CONTAINERS_CONF at its own.
pub(crate) fn containers_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        if let Some(own) = std::env::var_os("CONTAINERS_CONF") {
            return PathBuf::from(own);
        }
        let path = std::env::temp_dir().join("key-connector-tests-containers.conf");
        std::fs::write(
            &path,
            "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        path
    })
}

pub(crate) fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .expect("podman runs")
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) fn podman_ok(args: &[&str]) -> String {
    let output = podman(args);
    assert!(
        output.status.success(),
        "podman {args:?} failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The binary the image is built around: the `dist` profile's, as the Dockerfile builds it.
fn image_binary() -> PathBuf {
    std::env::var_os("KC_IMAGE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target/dist/key-connector"))
}

/// Builds the image once per test run; `Err` is the reason it cannot be built here.
pub(crate) fn image() -> Result<&'static str, String> {
    static IMAGE: OnceLock<Result<&'static str, String>> = OnceLock::new();
    IMAGE.get_or_init(build_image).clone()
}

fn build_image() -> Result<&'static str, String> {
    if Command::new("podman").arg("--version").output().is_err() {
        return Err("podman is not installed (apt-get install podman runc)".into());
    }
    if !podman(&["image", "exists", BASE_IMAGE]).status.success() {
        return Err(format!(
            "no {BASE_IMAGE} image in podman's store (run .ci/container-base to make one)"
        ));
    }
    let binary = image_binary();
    if !binary.is_file() {
        return Err(format!(
            "no binary at {} (cargo build --profile dist, as the image builds it, or set KC_IMAGE_BINARY)",
            binary.display()
        ));
    }
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(MANIFEST_DIR).join("Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .unwrap();
    std::fs::create_dir(context.path().join("docker")).unwrap();
    for file in ["appsettings.json", "entrypoint.sh"] {
        std::fs::copy(
            Path::new(MANIFEST_DIR).join("docker").join(file),
            context.path().join("docker").join(file),
        )
        .unwrap();
    }
    std::fs::copy(&binary, context.path().join("key-connector")).unwrap();
    let yubihsm = std::env::var("KC_IMAGE_YUBIHSM").unwrap_or_else(|_| "1".into());
    let started = Instant::now();
    let output = podman(&[
        "build",
        "--pull=never",
        "--network=host",
        "--format=docker",
        "--target=prebuilt",
        &format!("--build-arg=YUBIHSM_PKCS11={yubihsm}"),
        &format!("--tag={IMAGE_TAG}"),
        &context.path().display().to_string(),
    ]);
    if !output.status.success() {
        panic!("the image does not build: {}", text(&output));
    }
    eprintln!("image built in {:.0?}", started.elapsed());
    Ok(IMAGE_TAG)
}

macro_rules! image_or_skip {
    () => {
        match image() {
            Ok(image) => image,
            Err(reason) => {
                skip_or_fail!("{reason}");
            }
        }
    };
}

/// A container started with `podman run -d`, removed when dropped.
struct Container {
    name: String,
    port: u16,
}

impl Container {
    fn run(image: &str, port: u16, args: &[String]) -> Self {
        let name = format!("kc-test-{}", Uuid::new_v4().simple());
        let mut command = vec![
            "run".to_owned(),
            "--detach".into(),
            format!("--name={name}"),
            "--network=host".into(),
            format!("--env=ASPNETCORE_URLS=http://+:{port}"),
        ];
        command.extend(args.iter().cloned());
        command.push(image.to_owned());
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        podman_ok(&command);
        Self { name, port }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn logs(&self) -> String {
        text(&podman(&["logs", &self.name]))
    }

    fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
            .trim()
            .to_owned()
    }

    /// The service's process as the host sees it.
    fn pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().unwrap()
    }

    fn exec(&self, command: &[&str]) -> Output {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(command);
        podman(&args)
    }

    async fn wait_until_alive(&self) -> Duration {
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            if client
                .get(format!("{}/alive", self.base_url()))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
            {
                return started.elapsed();
            }
            if self.inspect("{{.State.Running}}") != "true" {
                panic!("the container stopped: {}", self.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the container did not come up: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--volumes", "--time=0", &self.name]);
    }
}

/// `Uid:` of a process's status: real, effective, saved, filesystem.
fn process_uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

fn process_env(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// What Bitwarden's installer lays out in `bwdata` for Key Connector: the env files, the
/// generated certificate, the data and logs directories, and its generated compose file.
struct Bwdata {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Bwdata {
    fn new(idp: &TestIdp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bwdata");
        for sub in [
            "docker",
            "env",
            "key-connector",
            "logs/key-connector",
            "ca-certificates",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // The env file as the installer writes it (identityServerUri points at the test
        // identity server here instead of http://identity:5000).
        std::fs::write(
            root.join("env/key-connector.override.env"),
            format!(
                "keyConnectorSettings__webVaultUri=https://vault.example.test\n\
                 keyConnectorSettings__identityServerUri={}\n\
                 keyConnectorSettings__database__provider=json\n\
                 keyConnectorSettings__database__jsonFilePath=/etc/bitwarden/key-connector/data.json\n\
                 keyConnectorSettings__rsaKey__provider=certificate\n\
                 keyConnectorSettings__certificate__provider=filesystem\n\
                 keyConnectorSettings__certificate__filesystemPath=/etc/bitwarden/key-connector/bwkc.pfx\n\
                 keyConnectorSettings__certificate__filesystemPassword={PFX_PASSWORD}\n",
                idp.url
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("env/uid.env"),
            format!("LOCAL_UID={INSTALL_UID}\nLOCAL_GID={INSTALL_UID}\n"),
        )
        .unwrap();
        let pfx = key_connector::pkcs12::generate_self_signed_pfx(
            2048,
            "Bitwarden Key Connector",
            Some(PFX_PASSWORD),
        )
        .unwrap();
        std::fs::write(root.join("key-connector/bwkc.pfx"), pfx).unwrap();
        std::fs::copy(
            Path::new(MANIFEST_DIR).join("tests/fixtures/bitwarden-docker-compose.yml"),
            root.join("docker/docker-compose.yml"),
        )
        .unwrap();
        std::fs::copy(
            Path::new(MANIFEST_DIR).join("docker/docker-compose.override.yml"),
            root.join("docker/docker-compose.override.yml"),
        )
        .unwrap();
        Self { _dir: dir, root }
    }
}

/// The `key-connector` service as podman-compose resolves `files` (run in `dir`), turned
/// into `podman run` arguments: its env files, environment and volumes. Its image is
/// returned beside them (the tests run the image built here instead).
fn compose_run_args(dir: &Path, files: &[&str]) -> Result<(String, Vec<String>), String> {
    let mut command = Command::new("podman-compose");
    command
        .current_dir(dir)
        .env("CONTAINERS_CONF", containers_conf());
    for file in files {
        command.args(["-f", file]);
    }
    let Ok(output) = command.arg("config").output() else {
        return Err("podman-compose is not installed (pip install podman-compose)".into());
    };
    assert!(output.status.success(), "{}", text(&output));
    // podman-compose prints YAML; its own dependency PyYAML turns it into JSON.
    let mut to_json = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    to_json
        .stdin
        .take()
        .unwrap()
        .write_all(&output.stdout)
        .unwrap();
    let json = to_json.wait_with_output().unwrap();
    let config: Value = serde_json::from_slice(&json.stdout).unwrap();
    let service = &config["services"]["key-connector"];
    let resolve = |path: &str| {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    };
    let mut args = Vec::new();
    for env_file in service["env_file"].as_array().into_iter().flatten() {
        let path = env_file
            .as_str()
            .or_else(|| env_file["path"].as_str())
            .unwrap();
        args.push(format!("--env-file={}", resolve(path).display()));
    }
    match &service["environment"] {
        Value::Object(map) => {
            for (name, value) in map {
                let value = value
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| value.to_string());
                args.push(format!("--env={name}={value}"));
            }
        }
        Value::Array(items) => {
            for item in items {
                args.push(format!("--env={}", item.as_str().unwrap()));
            }
        }
        _ => {}
    }
    for volume in service["volumes"].as_array().into_iter().flatten() {
        let spec = volume.as_str().unwrap();
        let (source, target) = spec.split_once(':').unwrap();
        args.push(format!("--volume={}:{target}", resolve(source).display()));
    }
    for option in service["security_opt"].as_array().into_iter().flatten() {
        args.push(format!("--security-opt={}", option.as_str().unwrap()));
    }
    let image = service["image"].as_str().unwrap_or_default().to_owned();
    Ok((image, args))
}

async fn the_image_runs_as_bitwarden_installer_runs_the_official_one() {
    let image = image_or_skip!();
    let idp = Arc::new(TestIdp::start().await);
    let bwdata = Bwdata::new(&idp);
    let (compose_image, args) = match compose_run_args(
        &bwdata.root.join("docker"),
        &["docker-compose.yml", "docker-compose.override.yml"],
    ) {
        Ok(run) => run,
        Err(reason) => {
            skip_or_fail!("{reason}");
        }
    };
    // The override swaps the image and nothing else: the installer's mounts and env files.
    assert!(!compose_image.starts_with("bitwarden/"), "{compose_image}");
    for expected in [
        "/env/uid.env",
        "/env/key-connector.override.env",
        "/key-connector:/etc/bitwarden/key-connector",
        "/logs/key-connector:/etc/bitwarden/logs",
    ] {
        assert!(
            args.iter().any(|a| a.ends_with(expected)),
            "{expected} missing from {args:?}"
        );
    }

    let container = Container::run(image, free_port(), &args);
    let ready_in = container.wait_until_alive().await;
    let base = container.base_url();
    let (token, key) = stores_and_serves_a_key_at(&base, &idp).await;

    // The service runs as LOCAL_UID, with the home directory of the image's user.
    let pid = container.pid();
    assert!(
        process_uids(pid).iter().all(|uid| *uid == INSTALL_UID),
        "{:?}",
        process_uids(pid)
    );
    assert_eq!(process_env(pid, "HOME").as_deref(), Some("/home/bitwarden"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "setpriv --no-new-privs");
    assert!(
        status.contains("CapEff:\t0000000000000000"),
        "no capabilities"
    );
    let home_owner = container.exec(&["stat", "-c", "%u", "/home/bitwarden"]);
    assert_eq!(
        String::from_utf8_lossy(&home_owner.stdout).trim(),
        INSTALL_UID.to_string(),
        "the home directory is the service user's"
    );
    let whoami = container.exec(&["id", "-un", &INSTALL_UID.to_string()]);
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "bitwarden");
    let data = bwdata.root.join("key-connector/data.json");
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), INSTALL_UID);

    // The log file, as the official image writes it, in the installer's logs directory.
    let today = time::OffsetDateTime::now_utc();
    let log_file = bwdata.root.join(format!(
        "logs/key-connector/log{:04}{:02}{:02}.txt",
        today.year(),
        u8::from(today.month()),
        today.day()
    ));
    let log = std::fs::read_to_string(&log_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; container log: {}",
            log_file.display(),
            container.logs()
        )
    });
    assert!(log.contains("[INF] "), "{log}");
    assert!(log.contains("symmetric key"), "{log}");
    assert_eq!(std::fs::metadata(&log_file).unwrap().uid(), INSTALL_UID);
    for secret in [key.as_str(), PFX_PASSWORD, &token] {
        assert!(!log.contains(secret), "the log file holds a secret");
        assert!(
            !container.logs().contains(secret),
            "the console log holds a secret"
        );
    }

    // The image's HEALTHCHECK, and upstream's, which operators may have kept.
    let health = podman(&["healthcheck", "run", &container.name]);
    assert!(health.status.success(), "{}", text(&health));
    let curl = container.exec(&[
        "curl",
        "-fsS",
        &format!("http://localhost:{}/health", container.port),
    ]);
    assert!(curl.status.success(), "{}", text(&curl));

    // `docker stop`: SIGTERM, exit 0 well within the 10 s grace period.
    let stopping = Instant::now();
    podman_ok(&["stop", "--time=10", &container.name]);
    let stopped_in = stopping.elapsed();
    assert!(stopped_in < Duration::from_secs(10), "{stopped_in:?}");
    assert_eq!(
        container.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        container.logs()
    );

    // A restart serves the same keys.
    podman_ok(&["start", &container.name]);
    container.wait_until_alive().await;
    let client = reqwest::Client::new();
    assert_eq!(read_key(&client, &base, &token).await, Ok(key));
    let restarted = container.pid();
    eprintln!(
        "container ready in {ready_in:.1?}, stopped in {stopped_in:.1?}, idle resident memory {} KiB",
        std::fs::read_to_string(format!("/proc/{restarted}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap_or("?")
            .trim()
            .trim_end_matches(" kB")
    );
}

async fn read_only_mounts_and_a_read_only_root_do_not_stop_the_image() {
    let image = image_or_skip!();
    let idp = Arc::new(TestIdp::start().await);
    let bwdata = Bwdata::new(&idp);
    let pfx = bwdata.root.join("key-connector/bwkc.pfx");
    // A private CA in the ca-certificates directory, mounted read-only like a ConfigMap.
    let ca = crate::support::PrivateCaServer::for_names(&["identity.example.test"]);
    std::fs::write(
        bwdata.root.join("ca-certificates/private-ca.crt"),
        &ca.ca_pem,
    )
    .unwrap();
    let root = bwdata.root.display().to_string();
    let args = vec![
        "--read-only".to_owned(),
        format!("--env-file={root}/env/uid.env"),
        format!("--env-file={root}/env/key-connector.override.env"),
        format!("--volume={root}/key-connector:/etc/bitwarden/key-connector"),
        // The certificate as a Kubernetes Secret or a `:ro` bind: inside the writable volume.
        format!(
            "--volume={}:/etc/bitwarden/key-connector/bwkc.pfx:ro",
            pfx.display()
        ),
        format!("--volume={root}/ca-certificates:/etc/bitwarden/ca-certificates:ro"),
        format!("--volume={root}/logs/key-connector:/etc/bitwarden/logs"),
    ];
    let container = Container::run(image, free_port(), &args);
    container.wait_until_alive().await;
    stores_and_serves_a_key_at(&container.base_url(), &idp).await;
    let logs = container.logs();
    // One line each for what was left alone (the certificate, the CA directory and its
    // file; the home directory; /etc/passwd), and no error.
    assert!(
        logs.contains("left 3 path(s) under /etc/bitwarden to their owner (read-only)"),
        "{logs}"
    );
    assert!(
        logs.contains("left 1 path(s) under /home/bitwarden to their owner (read-only)"),
        "{logs}"
    );
    assert!(
        logs.contains("the service runs as 4321:4321 unnamed"),
        "{logs}"
    );
    assert!(
        logs.contains("SSL_CERT_FILE=/tmp/key-connector-ca-bundle.crt"),
        "{logs}"
    );
    assert!(!logs.contains("Read-only file system"), "{logs}");
    let pid = container.pid();
    assert!(process_uids(pid).iter().all(|uid| *uid == INSTALL_UID));
    assert_eq!(
        process_env(pid, "SSL_CERT_FILE").as_deref(),
        Some("/tmp/key-connector-ca-bundle.crt")
    );
    let bundle = container.exec(&["cat", "/tmp/key-connector-ca-bundle.crt"]);
    let bundle = String::from_utf8_lossy(&bundle.stdout);
    assert!(
        bundle.contains(ca.ca_pem.trim()),
        "the private CA is trusted"
    );
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 10,
        "with the system's roots"
    );
    // The read-only certificate kept its owner; what the service writes is LOCAL_UID's.
    assert_eq!(std::fs::metadata(&pfx).unwrap().uid(), 0);
    assert_eq!(
        std::fs::metadata(bwdata.root.join("key-connector/data.json"))
            .unwrap()
            .uid(),
        INSTALL_UID
    );
}

async fn the_image_runs_as_a_non_root_user_given_by_the_orchestrator() {
    let image = image_or_skip!();
    let idp = Arc::new(TestIdp::start().await);
    let bwdata = Bwdata::new(&idp);
    // Kubernetes `runAsUser`/`fsGroup`: the volume is the user's, the root filesystem is
    // read-only, and the entrypoint never runs as root.
    for dir in ["key-connector", "logs/key-connector"] {
        let path = bwdata.root.join(dir);
        std::os::unix::fs::chown(&path, Some(INSTALL_UID), Some(INSTALL_UID)).unwrap();
    }
    std::os::unix::fs::chown(
        bwdata.root.join("key-connector/bwkc.pfx"),
        Some(INSTALL_UID),
        Some(INSTALL_UID),
    )
    .unwrap();
    let root = bwdata.root.display().to_string();
    let args = vec![
        "--read-only".to_owned(),
        format!("--user={INSTALL_UID}:{INSTALL_UID}"),
        format!("--env-file={root}/env/key-connector.override.env"),
        format!("--volume={root}/key-connector:/etc/bitwarden/key-connector"),
        format!("--volume={root}/logs/key-connector:/etc/bitwarden/logs"),
    ];
    let container = Container::run(image, free_port(), &args);
    container.wait_until_alive().await;
    stores_and_serves_a_key_at(&container.base_url(), &idp).await;
    let pid = container.pid();
    assert!(process_uids(pid).iter().all(|uid| *uid == INSTALL_UID));
    assert_eq!(process_env(pid, "HOME").as_deref(), Some("/home/bitwarden"));
    let logs = std::fs::read_dir(bwdata.root.join("logs/key-connector"))
        .unwrap()
        .count();
    assert_eq!(logs, 1, "one log file");
}

async fn an_unwritable_log_directory_is_one_warning_and_the_service_runs() {
    let image = image_or_skip!();
    let idp = Arc::new(TestIdp::start().await);
    let bwdata = Bwdata::new(&idp);
    let root = bwdata.root.display().to_string();
    let args = vec![
        format!("--env-file={root}/env/uid.env"),
        format!("--env-file={root}/env/key-connector.override.env"),
        format!("--volume={root}/key-connector:/etc/bitwarden/key-connector"),
        format!("--volume={root}/logs/key-connector:/etc/bitwarden/logs:ro"),
    ];
    let container = Container::run(image, free_port(), &args);
    container.wait_until_alive().await;
    stores_and_serves_a_key_at(&container.base_url(), &idp).await;
    let logs = container.logs();
    assert_eq!(
        logs.matches("cannot write log files in /etc/bitwarden/logs")
            .count(),
        1,
        "{logs}"
    );
}

async fn the_image_carries_the_pkcs11_modules_and_stays_lean() {
    let image = image_or_skip!();
    // Upstream's default module paths, and the YubiHSM module really loads: with no
    // connector there is no token, and start-up says exactly that.
    let modules = podman(&[
        "run",
        "--rm",
        "--entrypoint=/bin/sh",
        image,
        "-c",
        "ls -l /usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so \
         && test -z \"$(find /var/lib/apt/lists /var/cache/apt -mindepth 1)\" && command -v curl setpriv",
    ]);
    assert!(modules.status.success(), "{}", text(&modules));
    // Without its configuration Yubico's module refuses to initialise, and start-up says
    // what it needs; with one naming a connector (none answers here), it loads, asks the
    // connector and finds no token.
    let yubihsm_check = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--rm",
            "--network=host",
            "--env=keyConnectorSettings__webVaultUri=https://vault.example.test",
            "--env=keyConnectorSettings__identityServerUri=http://127.0.0.1:9",
            "--env=keyConnectorSettings__database__provider=json",
            "--env=keyConnectorSettings__database__jsonFilePath=/tmp/data.json",
            "--env=keyConnectorSettings__rsaKey__provider=pkcs11",
            "--env=keyConnectorSettings__rsaKey__pkcs11Provider=yubihsm",
            "--env=keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber=0012345678",
            "--env=keyConnectorSettings__rsaKey__pkcs11LoginPin=0001password",
            "--env=keyConnectorSettings__rsaKey__pkcs11PrivateKeyLabel=kc",
            // The image's appsettings.json names a certificate file: the public key comes
            // from the token instead.
            "--env=keyConnectorSettings__certificate__provider=",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, "check-config"]);
        let output = podman(&args);
        assert!(!output.status.success(), "{}", text(&output));
        text(&output)
    };
    let said = yubihsm_check(&[]);
    assert!(said.contains("set YUBIHSM_PKCS11_CONF"), "{said}");
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("yubihsm_pkcs11.conf"),
        format!("connector = http://127.0.0.1:{}\n", free_port()),
    )
    .unwrap();
    let mount = format!("--volume={}:/etc/yubihsm:ro", conf.path().display());
    let said = yubihsm_check(&[
        &mount,
        "--env=YUBIHSM_PKCS11_CONF=/etc/yubihsm/yubihsm_pkcs11.conf",
    ]);
    assert!(
        said.contains("no PKCS#11 token with serial number `0012345678`"),
        "{said}"
    );

    // Layers: the project's add at most 50 MiB to the base, and the binary is in one.
    let binary_size = std::fs::metadata(image_binary()).unwrap().len();
    let history: Value =
        serde_json::from_str(&podman_ok(&["history", "--format=json", image])).unwrap();
    let base_layers =
        serde_json::from_str::<Value>(&podman_ok(&["history", "--format=json", BASE_IMAGE]))
            .unwrap()
            .as_array()
            .unwrap()
            .len();
    let layers = history.as_array().unwrap();
    let ours = &layers[..layers.len() - base_layers];
    let sizes: Vec<u64> = ours
        .iter()
        .map(|l| l["size"].as_u64().unwrap_or(0))
        .collect();
    let total: u64 = sizes.iter().sum();
    eprintln!(
        "image layers over the base: {sizes:?} = {:.1} MiB (binary {:.1} MiB)",
        total as f64 / 1048576.0,
        binary_size as f64 / 1048576.0
    );
    assert!(total <= 50 * 1024 * 1024, "{total} bytes over the base");
    // One layer holds the binary (its size plus the archive's headers), and all the others
    // together are smaller than it: no second copy anywhere.
    let binary_layers: Vec<u64> = sizes
        .iter()
        .copied()
        .filter(|size| (binary_size..binary_size + 1024 * 1024).contains(size))
        .collect();
    assert_eq!(binary_layers.len(), 1, "the binary's layer: {sizes:?}");
    assert!(
        total - binary_layers[0] < binary_size,
        "the binary is stored once: {sizes:?}"
    );
}

async fn the_stand_alone_compose_file_runs_the_same_service() {
    let image = image_or_skip!();
    let idp = Arc::new(TestIdp::start().await);
    let bwdata = Bwdata::new(&idp);
    // The stand-alone file beside the same layout: ./env, ./key-connector, ./logs.
    std::fs::copy(
        Path::new(MANIFEST_DIR).join("docker/docker-compose.yml"),
        bwdata.root.join("docker-compose.yml"),
    )
    .unwrap();
    let (_, args) = match compose_run_args(&bwdata.root, &["docker-compose.yml"]) {
        Ok(run) => run,
        Err(reason) => {
            skip_or_fail!("{reason}");
        }
    };
    let container = Container::run(image, free_port(), &args);
    container.wait_until_alive().await;
    stores_and_serves_a_key_at(&container.base_url(), &idp).await;
    let pid = container.pid();
    assert!(
        process_uids(pid).iter().all(|uid| *uid == INSTALL_UID),
        "LOCAL_UID from env/uid.env"
    );
    assert!(bwdata.root.join("key-connector/data.json").is_file());
    assert_eq!(
        std::fs::read_dir(bwdata.root.join("logs/key-connector"))
            .unwrap()
            .count(),
        1
    );
}

crate::tests! {
    multi_thread(2): [
        the_image_runs_as_bitwarden_installer_runs_the_official_one,
        read_only_mounts_and_a_read_only_root_do_not_stop_the_image,
        the_image_runs_as_a_non_root_user_given_by_the_orchestrator,
        an_unwritable_log_directory_is_one_warning_and_the_service_runs,
        the_image_carries_the_pkcs11_modules_and_stays_lean,
        the_stand_alone_compose_file_runs_the_same_service,
    ],
}
