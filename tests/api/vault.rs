//! The `vault` certificate source against a stand-in for HashiCorp Vault's KV version 2 API.
//!
//! No Vault server runs here, so the stand-in answers as Vault's API reference documents
//! (`GET /v1/{mount}/data/{path}`, token in `X-Vault-Token`, `{"data":{"data":{...},
//! "metadata":{...}}}`, errors as `{"errors":[...]}` with 403 for a bad token and 404 for
//! a missing secret), and records every request so the tests check its exact shape.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use key_connector::config::{ConfigSource, RsaKeySettings};
use key_connector::keys::KeyProviderError;
use key_connector::keys::certificate::CertificateKeyProvider;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::pkcs12::generate_self_signed_pfx;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{AppOptions, LocalTlsStandIn, TestIdp, random_key, spawn_app_with};

pub(crate) const TOKEN: &str = "hvs.CAESIJ-stand-in-token";
const MOUNT: &str = "kv";
const SECRET_PATH: &str = "bitwarden/key-connector";
const DATA_KEY: &str = "certificate";
const PFX_PASSWORD: &str = "vault pfx password";

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct SeenRequest {
    method: Method,
    path: String,
    token: Option<String>,
}

struct VaultState {
    /// The secret's `data`, or `None` for a secret whose latest version was deleted.
    data: Option<Value>,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A KV version 2 engine mounted at [`MOUNT`] holding one secret at [`SECRET_PATH`].
pub(crate) struct VaultStandIn {
    pub(crate) url: String,
    state: Arc<VaultState>,
    task: tokio::task::JoinHandle<()>,
}

impl VaultStandIn {
    pub(crate) async fn start(data: Option<Value>) -> Self {
        let state = Arc::new(VaultState {
            data,
            seen: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state, task }
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for VaultStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn vault_error(status: StatusCode, errors: &[&str]) -> Response {
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

/// Vault's behaviour for the routes the source uses.
async fn answer(
    State(state): State<Arc<VaultState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.seen.lock().unwrap().push(SeenRequest {
        method: method.clone(),
        path: uri.path().to_owned(),
        token: token.clone(),
    });
    if token.as_deref() != Some(TOKEN) {
        return vault_error(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    let Some(path) = uri.path().strip_prefix(&format!("/v1/{MOUNT}/data/")) else {
        return vault_error(
            StatusCode::NOT_FOUND,
            &[&format!(
                "no handler for route \"{}\". route entry not found.",
                uri.path().trim_start_matches("/v1/")
            )],
        );
    };
    if method != Method::GET {
        return vault_error(StatusCode::METHOD_NOT_ALLOWED, &["unsupported operation"]);
    }
    if path != SECRET_PATH {
        return vault_error(StatusCode::NOT_FOUND, &[]);
    }
    let metadata = json!({
        "created_time": "2026-11-24T15:33:59.123456789Z",
        "custom_metadata": null,
        "deletion_time": if state.data.is_some() { "" } else { "2026-11-25T08:00:00.000000000Z" },
        "destroyed": false,
        "version": 3
    });
    match &state.data {
        Some(data) => axum::Json(json!({
            "request_id": Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": { "data": data, "metadata": metadata },
            "wrap_info": null,
            "warnings": null,
            "auth": null,
            "mount_type": "kv"
        }))
        .into_response(),
        // A deleted latest version: 404 with the metadata and null data.
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "request_id": Uuid::new_v4().to_string(),
                "data": { "data": null, "metadata": metadata },
                "errors": []
            })),
        )
            .into_response(),
    }
}

fn pfx() -> &'static [u8] {
    static PFX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PFX.get_or_init(|| generate_self_signed_pfx(2048, "vault", Some(PFX_PASSWORD)).unwrap())
}

/// The PFX as `base64` writes it by default: lines of 76 characters.
fn wrapped_base64(bytes: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    flat.as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn secret_data() -> Value {
    json!({ DATA_KEY: wrapped_base64(pfx()), "note": "key connector certificate" })
}

/// Settings exactly as an operator writes them in the environment.
pub(crate) fn settings_from_env(
    url: &str,
    token: &str,
    overrides: &[(&str, &str)],
) -> RsaKeySettings {
    let mut env: Vec<(String, String)> = [
        (
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        ),
        (
            "keyConnectorSettings__identityServerUri",
            "http://identity.example.test",
        ),
        ("keyConnectorSettings__database__provider", "json"),
        (
            "keyConnectorSettings__database__jsonFilePath",
            "/nonexistent/data.json",
        ),
        ("keyConnectorSettings__rsaKey__provider", "certificate"),
        ("keyConnectorSettings__certificate__provider", "vault"),
        ("keyConnectorSettings__certificate__vaultServerUri", url),
        ("keyConnectorSettings__certificate__vaultToken", token),
        (
            "keyConnectorSettings__certificate__vaultSecretMountPoint",
            MOUNT,
        ),
        (
            "keyConnectorSettings__certificate__vaultSecretPath",
            SECRET_PATH,
        ),
        (
            "keyConnectorSettings__certificate__vaultSecretDataKey",
            DATA_KEY,
        ),
        (
            "keyConnectorSettings__certificate__vaultSecretFilePassword",
            PFX_PASSWORD,
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (name, value) in overrides {
        let name = format!("keyConnectorSettings__certificate__{name}");
        env.retain(|(k, _)| *k != name);
        env.push((name, value.to_string()));
    }
    let loaded = key_connector::config::load(&ConfigSource { file: None, env }).unwrap();
    assert!(matches!(
        loaded.settings.rsa_key,
        RsaKeySettings::Certificate(CertificateSettings::Vault(_))
    ));
    loaded.settings.rsa_key
}

async fn open(settings: &RsaKeySettings) -> Result<CertificateKeyProvider, KeyProviderError> {
    let RsaKeySettings::Certificate(source) = settings else {
        unreachable!("a certificate provider");
    };
    CertificateKeyProvider::open(source).await
}

fn config_error(result: Result<CertificateKeyProvider, KeyProviderError>) -> String {
    match result {
        Err(KeyProviderError::Config { message, .. }) => {
            assert!(!message.contains(TOKEN), "the token leaked: {message}");
            assert!(
                !message.contains(PFX_PASSWORD),
                "the password leaked: {message}"
            );
            message
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("expected a configuration error, the certificate loaded"),
    }
}

#[tokio::test]
async fn a_vault_sourced_certificate_serves_user_keys() {
    let vault = VaultStandIn::start(Some(secret_data())).await;
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            rsa_key: Some(settings_from_env(&format!("{}/", vault.url), TOKEN, &[])),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    assert_eq!(app.read_key(&token).await, Ok(key.clone()));

    // Exactly one read, shaped as Vault's KV v2 API wants it.
    let seen = vault.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, format!("/v1/{MOUNT}/data/{SECRET_PATH}"));
    assert_eq!(seen[0].token.as_deref(), Some(TOKEN));

    // A restart reads the certificate again and unwraps the stored symmetric key with it.
    let data_dir = app.shutdown().await;
    let app = spawn_app_with(
        idp,
        AppOptions {
            data_dir: Some(data_dir),
            rsa_key: Some(settings_from_env(&vault.url, TOKEN, &[])),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.read_key(&token).await, Ok(key));
}

#[tokio::test]
async fn a_blank_mount_point_reads_from_the_secret_mount() {
    let vault = VaultStandIn::start(Some(secret_data())).await;
    let settings = settings_from_env(&vault.url, TOKEN, &[("vaultSecretMountPoint", " ")]);
    // The stand-in mounts KV at `kv`, so this read misses, but its path shows the default.
    let message = config_error(open(&settings).await);
    assert!(message.contains("vaultSecretPath"), "{message}");
    assert_eq!(
        vault.seen()[0].path,
        format!("/v1/secret/data/{SECRET_PATH}")
    );
}

#[tokio::test]
async fn a_wrong_token_is_a_config_error_naming_the_token_setting() {
    let vault = VaultStandIn::start(Some(secret_data())).await;
    let settings = settings_from_env(&vault.url, "hvs.wrong-token", &[]);
    let message = config_error(open(&settings).await);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultToken"),
        "{message}"
    );
    assert!(message.contains("permission denied"), "{message}");
    assert!(!message.contains("hvs.wrong-token"), "{message}");
    assert_eq!(vault.seen()[0].token.as_deref(), Some("hvs.wrong-token"));
}

#[tokio::test]
async fn a_missing_secret_is_a_config_error_naming_path_and_mount() {
    let vault = VaultStandIn::start(Some(secret_data())).await;
    let settings = settings_from_env(&vault.url, TOKEN, &[("vaultSecretPath", "bitwarden/other")]);
    let message = config_error(open(&settings).await);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultSecretPath")
            && message.contains("vaultSecretMountPoint")
            && message.contains("bitwarden/other"),
        "{message}"
    );
}

#[tokio::test]
async fn a_deleted_latest_version_is_a_config_error() {
    let vault = VaultStandIn::start(None).await;
    let message = config_error(open(&settings_from_env(&vault.url, TOKEN, &[])).await);
    assert!(message.contains("404"), "{message}");
}

#[tokio::test]
async fn a_missing_data_key_is_a_config_error_listing_the_keys_there() {
    let vault = VaultStandIn::start(Some(secret_data())).await;
    let settings = settings_from_env(&vault.url, TOKEN, &[("vaultSecretDataKey", "pfx")]);
    let message = config_error(open(&settings).await);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultSecretDataKey"),
        "{message}"
    );
    assert!(message.contains("certificate, note"), "{message}");
}

#[tokio::test]
async fn a_value_that_is_not_a_base64_pfx_is_a_config_error() {
    let vault = VaultStandIn::start(Some(json!({ DATA_KEY: "not base64 at all!" }))).await;
    let message = config_error(open(&settings_from_env(&vault.url, TOKEN, &[])).await);
    assert!(message.contains("not base64"), "{message}");

    let vault = VaultStandIn::start(Some(json!({ DATA_KEY: "aGVsbG8=" }))).await;
    let message = config_error(open(&settings_from_env(&vault.url, TOKEN, &[])).await);
    assert!(message.contains("not a PKCS#12"), "{message}");
}

#[tokio::test]
async fn a_wrong_pfx_password_is_a_config_error_naming_the_password_setting() {
    let vault = VaultStandIn::start(Some(secret_data())).await;
    let settings = settings_from_env(
        &vault.url,
        TOKEN,
        &[("vaultSecretFilePassword", "not the password")],
    );
    let message = config_error(open(&settings).await);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultSecretFilePassword"),
        "{message}"
    );
    assert!(!message.contains("not the password"), "{message}");
}

#[tokio::test]
async fn an_unreachable_vault_is_unavailable_within_bounded_time() {
    let port = crate::support::binary::free_port();
    let settings = settings_from_env(&format!("http://127.0.0.1:{port}"), TOKEN, &[]);
    let started = Instant::now();
    match open(&settings).await {
        Err(KeyProviderError::Unavailable { message, .. }) => {
            assert!(message.contains("Vault"), "{message}");
            assert!(!message.contains(TOKEN), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("nothing listens there"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_vault_that_never_answers_times_out_as_unavailable() {
    // Accepts connections and never answers, like a hung server behind a load balancer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open_connections = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open_connections.push(socket);
        }
    });
    let started = Instant::now();
    let result = open(&settings_from_env(&url, TOKEN, &[])).await;
    hold.abort();
    assert!(
        matches!(result, Err(KeyProviderError::Unavailable { .. })),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_vault_that_comes_up_late_is_waited_for_at_start_up() {
    // Start-up retries while the certificate source is down, then serves.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let settings = settings_from_env(&format!("http://{address}"), TOKEN, &[]);
    let idp = Arc::new(TestIdp::start().await);
    let starting = tokio::spawn(async move {
        crate::support::try_spawn_app_with(
            idp,
            AppOptions {
                rsa_key: Some(settings),
                ..AppOptions::default()
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!starting.is_finished(), "start-up must wait for Vault");
    let state = Arc::new(VaultState {
        data: Some(secret_data()),
        seen: Mutex::new(Vec::new()),
    });
    let router = axum::Router::new()
        .fallback(answer)
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let app = tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("start-up finishes once Vault answers")
        .unwrap()
        .unwrap_or_else(|e| panic!("start-up failed: {e}"));
    let token = app.token_for(Uuid::new_v4());
    assert_eq!(app.post_key(&token, &random_key()).await.status(), 200);
    server.abort();
}

/// Vault over HTTPS under a private CA, reached by the real binary.
#[tokio::test]
async fn an_https_vault_under_a_private_ca_is_trusted_through_ssl_cert_file() {
    let state = Arc::new(VaultState {
        data: Some(secret_data()),
        seen: Mutex::new(Vec::new()),
    });
    let vault =
        LocalTlsStandIn::serve(axum::Router::new().fallback(answer).with_state(state)).await;
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let command_for = |port: u16| {
        let mut command =
            crate::support::binary::service_command(dir.path(), "sqlite", &idp.url, port);
        command
            .env("keyConnectorSettings__certificate__provider", "vault")
            .env(
                "keyConnectorSettings__certificate__vaultServerUri",
                &vault.url,
            )
            .env("keyConnectorSettings__certificate__vaultToken", TOKEN)
            .env(
                "keyConnectorSettings__certificate__vaultSecretMountPoint",
                MOUNT,
            )
            .env(
                "keyConnectorSettings__certificate__vaultSecretPath",
                SECRET_PATH,
            )
            .env(
                "keyConnectorSettings__certificate__vaultSecretDataKey",
                DATA_KEY,
            )
            .env(
                "keyConnectorSettings__certificate__vaultSecretFilePassword",
                PFX_PASSWORD,
            );
        command
    };
    crate::support::binary::a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
        dir.path(),
        &vault.ca_pem,
        &idp,
        command_for,
    )
    .await;
}
