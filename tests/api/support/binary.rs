//! The real `key-connector` binary as a child process, configured only through environment
//! variables as the official container is: starting it, waiting for it, talking to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::{TestIdp, random_key};

const BINARY: &str = env!("CARGO_BIN_EXE_key-connector");

pub use super::ports::free_port;

/// A `key-connector` child process configured only through environment variables, as the
/// official container is.
pub struct Service {
    child: Child,
    pub base_url: String,
    /// Every line the service has written to stderr so far, shown only if the test fails
    /// (the harness does not capture output, so a passing test's service stays quiet).
    log: Arc<Mutex<Vec<String>>>,
}

/// The command for `store` (`sqlite` and `json` get a file in `dir`; other providers need
/// their connection string added by the caller).
pub fn service_command(dir: &Path, store: &str, idp_url: &str, port: u16) -> Command {
    let pfx = dir.join("key.pfx");
    if !pfx.exists() {
        let bytes =
            key_connector::pkcs12::generate_self_signed_pfx(2048, "binary test", Some("pw"))
                .unwrap();
        std::fs::write(&pfx, bytes).unwrap();
    }
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("ASPNETCORE_URLS", format!("http://127.0.0.1:{port}"))
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test/",
        )
        .env("keyConnectorSettings__identityServerUri", idp_url)
        .env("KEYCONNECTORSETTINGS__RSAKEY__PROVIDER", "certificate")
        .env("keyConnectorSettings__certificate__provider", "filesystem")
        .env("keyConnectorSettings__certificate__filesystemPath", &pfx)
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "pw",
        )
        .env("keyConnectorSettings__database__provider", store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match store {
        "sqlite" => command.env(
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source={}", dir.join("keys.db").display()),
        ),
        "json" => command.env(
            "keyConnectorSettings__database__jsonFilePath",
            dir.join("data.json"),
        ),
        _ => &mut command,
    };
    command
}

impl Service {
    pub async fn start(dir: &Path, store: &str, idp_url: &str) -> Self {
        let port = free_port();
        Self::spawn(service_command(dir, store, idp_url, port), port)
            .wait_ready()
            .await
    }

    /// Starts `command` (made by [`service_command`] for `port`) without waiting.
    pub fn spawn(mut command: Command, port: u16) -> Self {
        let mut child = command.spawn().unwrap();
        // Drain stderr so the child never blocks on a full pipe, keeping each line for
        // `wait_for_log`.
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// How many lines containing `text` the service has written to stderr so far.
    pub fn log_lines_with(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|line| line.contains(text)).count()
    }

    /// Waits until the service has written `count` lines containing `text` to stderr (what
    /// a test of the real binary waits on, its clock being out of reach); panics after
    /// `within`.
    pub async fn wait_for_log(&self, text: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log_lines_with(text) < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} lines with {text:?} within {within:?}",
                self.log_lines_with(text)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/alive` answers.
    pub async fn wait_ready(mut self) -> Self {
        let base_url = self.base_url.clone();
        let child = &mut self.child;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{base_url}/alive")).send().await
                && response.status() == StatusCode::OK
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("service exited early: {status}");
            }
            assert!(Instant::now() < deadline, "service did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "service did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            for line in self.log.lock().map(|log| log.clone()).unwrap_or_default() {
                eprintln!("[service] {line}");
            }
        }
    }
}

pub async fn read_key(client: &reqwest::Client, base: &str, token: &str) -> Result<String, u16> {
    let response = client
        .get(format!("{base}/user-keys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if response.status() != StatusCode::OK {
        return Err(response.status().as_u16());
    }
    let body: serde_json::Value = response.json().await.unwrap();
    Ok(body["key"].as_str().unwrap().to_owned())
}

/// Stores a key for a new user at the service at `base_url`, reads it back and checks
/// `/health`; returns the user's token and key.
pub async fn stores_and_serves_a_key_at(base_url: &str, idp: &TestIdp) -> (String, String) {
    let client = reqwest::Client::new();
    let token = idp.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(
        post_key_at(&client, base_url, &token, &key).await,
        StatusCode::OK
    );
    assert_eq!(read_key(&client, base_url, &token).await.as_ref(), Ok(&key));
    let health = client
        .get(format!("{base_url}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    (token, key)
}

/// `POST /user-keys` of `key` for the user of `token`; the answer's status.
pub async fn post_key_at(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    key: &str,
) -> StatusCode {
    client
        .post(format!("{base_url}/user-keys"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap()
        .status()
}

impl Service {
    /// Stores a key for a new user, reads it back and checks `/health`; returns the user's
    /// token and key.
    pub async fn stores_and_serves_a_key(&self, idp: &TestIdp) -> (String, String) {
        stores_and_serves_a_key_at(&self.base_url, idp).await
    }

    /// Whether the process has ended (start-up gave up, or it was stopped).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// `POST /user-keys` of `key` for the user of `token`; the answer's status.
    pub async fn post_key(&self, client: &reqwest::Client, token: &str, key: &str) -> StatusCode {
        post_key_at(client, &self.base_url, token, key).await
    }

    /// What `GET /user-keys` answers for `token`: the key, or the status.
    pub async fn key_of(&self, token: &str) -> Result<String, u16> {
        read_key(&reqwest::Client::new(), &self.base_url, token).await
    }
}

/// The wrapped symmetric key stored in the SQLite database `keys.db` in `dir`, decoded.
pub fn stored_symmetric_key(dir: &Path) -> Vec<u8> {
    use base64::Engine;
    let stored: String = rusqlite::Connection::open(dir.join("keys.db"))
        .unwrap()
        .query_row("SELECT SymmetricKey FROM ApplicationDatas", [], |row| {
            row.get(0)
        })
        .unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(stored)
        .unwrap()
}

/// Runs a command (an admin command, or a start-up expected to fail) to its end, off the
/// async runtime; returns its exit status and everything it printed.
pub async fn run_to_end(mut command: Command) -> (std::process::ExitStatus, String) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status, said)
}

/// Starts `command` and expects it to exit unsuccessfully within 30 s (start-up refusing a
/// configuration instead of retrying it); returns what it wrote to stderr. Panics with
/// `why` if it is still running then.
pub async fn start_up_stops(mut command: Command, why: &str) -> String {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{why}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// The binary started by `command_for(port)` talks to a server whose certificate comes from
/// the private CA `ca_pem`: without trusting it, start-up stops at once saying how to trust
/// it (no endless retry); with `SSL_CERT_FILE` naming it, the service stores and serves a key.
pub async fn a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
    dir: &Path,
    ca_pem: &str,
    idp: &TestIdp,
    command_for: impl Fn(u16) -> Command,
) {
    let port = free_port();
    let stderr = start_up_stops(
        command_for(port),
        "an untrusted server certificate must stop start-up, not be retried",
    )
    .await;
    assert!(
        stderr.contains("does not trust") && stderr.contains("SSL_CERT_FILE"),
        "{stderr}"
    );

    let ca_file = dir.join("private-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut command = command_for(port);
    command.env("SSL_CERT_FILE", &ca_file);
    let service = Service::spawn(command, port).wait_ready().await;
    service.stores_and_serves_a_key(idp).await;
}

/// `command` run with `/etc/hosts` replaced by `hosts` inside a private mount namespace, so
/// the real binary resolves a stand-in's names (e.g. `kv.vault.test`) to this host, as DNS
/// would resolve the real service's. `None` where mount namespaces are not allowed (not
/// root, no `unshare`).
pub fn with_hosts_file(command: &Command, hosts: &Path) -> Option<Command> {
    let allowed = Command::new("unshare")
        .args(["--mount", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !allowed {
        return None;
    }
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#)
        .arg("with-hosts-file")
        .arg(hosts)
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(name, value);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    Some(wrapped)
}
