//! The real `key-connector` binary as a child process, configured only through environment
//! variables as the official container is: which binary, starting it in its own directory
//! (SQLite database, PKCS#12 certificate), waiting until `/alive` answers, stopping it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long start-up may take before a test fails. It takes a second or two (a few more
/// when the identity server is down: the service retries it before listening).
const START_UP_LIMIT: Duration = Duration::from_secs(60);

/// The binary under test: `KC_BINARY` if set (CI points it at the optimised `dist` build),
/// else the debug build that the repository's `cargo test` makes.
fn binary() -> PathBuf {
    let path = match std::env::var_os("KC_BINARY") {
        Some(path) => PathBuf::from(path),
        None => debug_build_dir().join("key-connector"),
    };
    assert!(
        path.is_file(),
        "no key-connector binary at {}: build it first with `cargo build` (or `cargo test`) \
         at the repository root, or set KC_BINARY to the path of a built binary",
        path.display()
    );
    path
}

/// `target/debug` of the repository, or of `CARGO_TARGET_DIR` when that is set to an
/// absolute path (where the repository's own builds then go).
fn debug_build_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug")
}

/// A running `key-connector`; it is killed when dropped.
pub struct Service {
    child: Child,
    /// The Key Connector URL a Bitwarden client is given (`keyConnectorUrl`).
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts the service with a new SQLite database, trusting the identity server at
    /// `identity_server_url`, and waits until it answers.
    pub async fn start(identity_server_url: &str) -> Self {
        let binary = binary();
        let dir = tempfile::tempdir().unwrap();
        let pfx = dir.path().join("key.pfx");
        let certificate =
            key_connector::pkcs12::generate_self_signed_pfx(2048, "sdk test", Some("pw")).unwrap();
        std::fs::write(&pfx, certificate).unwrap();
        let port = free_port();

        let mut child = Command::new(binary)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("ASPNETCORE_URLS", format!("http://127.0.0.1:{port}"))
            .env(
                "keyConnectorSettings__webVaultUri",
                "https://vault.example.test",
            )
            .env(
                "keyConnectorSettings__identityServerUri",
                identity_server_url,
            )
            .env("keyConnectorSettings__database__provider", "sqlite")
            .env(
                "keyConnectorSettings__database__sqliteConnectionString",
                format!("Data Source={}", dir.path().join("keys.db").display()),
            )
            .env("keyConnectorSettings__rsaKey__provider", "certificate")
            .env("keyConnectorSettings__certificate__provider", "filesystem")
            .env("keyConnectorSettings__certificate__filesystemPath", &pfx)
            .env(
                "keyConnectorSettings__certificate__filesystemPassword",
                "pw",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drained so the child never blocks on a full pipe; shown with a failing test's output.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[service] {line}");
            }
        });

        let mut service = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        service.wait_until_alive().await;
        service
    }

    async fn wait_until_alive(&mut self) {
        let client = reqwest::Client::new();
        let alive = format!("{}/alive", self.url);
        let deadline = Instant::now() + START_UP_LIMIT;
        loop {
            if let Ok(response) = client.get(&alive).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("key-connector exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "key-connector did not answer /alive within {START_UP_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports as the API tests take them: below the kernel's ephemeral range, each handed out once.
#[path = "../../../api/support/ports.rs"]
mod ports;
pub(super) use ports::free_port;
