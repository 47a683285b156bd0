//! The `azurekv` RSA key provider and certificate source against a stand-in for Entra ID and
//! Azure Key Vault.
//!
//! No Key Vault can run here, so the stand-in answers as the REST reference documents: an
//! unauthenticated request gets `401` with a `WWW-Authenticate: Bearer authorization=…,
//! resource=…` challenge; the client-credentials grant at `/{tenant}/oauth2/v2.0/token`
//! issues the token (and the tenant's OpenID configuration names that endpoint);
//! `GET /keys/{name}/{version}`, `GET /keys/{name}/versions`,
//! `POST /keys/{name}/{version}/decrypt` (`{"alg":"RSA-OAEP","value":base64url}`),
//! `GET /secrets/{name}/` and `GET /certificates/{name}/` answer as Key Vault does, errors
//! (403, 404, 429, 5xx, and 401 for another tenant's token) as
//! `{"error":{"code","message"}}`. It decrypts with real RSA-OAEP SHA-1. The SDK sends
//! tokens only over HTTPS and only to a vault whose host lies under the challenge's
//! resource, so the stand-in serves TLS under a test CA as `kv.vault.test` and `login.test`,
//! names the test's HTTP client resolves to the stand-in; the real binary resolves them
//! through a hosts file of its own (a private mount namespace) and trusts the CA through
//! `SSL_CERT_FILE`.
//!
//! Microsoft's own Python SDK checks the stand-in (`tests/vendor/azure_keyvault_check.py`):
//! it makes the provider's calls, and must accept every answer, while the stand-in must
//! accept its requests.

use key_connector::config::SettingsGroup;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use key_connector::config::AzureAdCredentials;
use key_connector::keys::azurekv::AzureKeyVaultKeySettings;
use key_connector::keys::azurekv::{AzureConnection, AzureKeyVaultKeyProvider};
use key_connector::keys::certificate::CertificateKeyProvider;
use key_connector::keys::certificate::{AzureKeyVaultCertificateSettings, CertificateSettings};
use key_connector::keys::{KeyProviderError, RsaKeyProvider};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::binary::{
    Service, a_private_ca_is_refused_then_trusted_through_ssl_cert_file, free_port, run_to_end,
    service_command, stored_symmetric_key, with_hosts_file,
};
use crate::support::keys_survive_a_restart_with;
use crate::support::vendor::{missing_python_modules, run_vendor_script};

const VAULT_HOST: &str = "kv.vault.test";
const LOGIN_HOST: &str = "login.test";
const RESOURCE: &str = "https://vault.test";
const TENANT: &str = "8f0b2b3c-4d5e-4f60-8a1b-2c3d4e5f6a7b";
const APP_ID: &str = "0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d";
const APP_SECRET: &str = "Xy8Q~stand-in-client-secret";
const KEY_NAME: &str = "key-connector";
const CERT_NAME: &str = "key-connector-cert";
/// The certificate's one version, which its secret and key share.
const CERT_VERSION: &str = "5f0e6d4c3b2a41908f7e6d5c4b3a2910";

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    host: String,
    method: Method,
    path: String,
    query: String,
    authorization: Option<String>,
    body: String,
}

struct KeyVersion {
    private: OaepPrivateDecryptingKey,
    public: PublicEncryptingKey,
    /// Modulus and exponent, as Key Vault's JSON Web Key carries them.
    n: Vec<u8>,
    e: Vec<u8>,
}

struct AzureState {
    /// Versions of [`KEY_NAME`], oldest first; the last is current.
    versions: Mutex<Vec<(String, Arc<KeyVersion>)>>,
    enabled: AtomicBool,
    /// The key's `key_ops`.
    key_ops: Mutex<Vec<&'static str>>,
    /// Key reads answer 403, as without the `get` permission.
    deny_reads: AtomicBool,
    /// Version listings answer 403, as without the `list` permission.
    deny_list: AtomicBool,
    /// Answer this many vault requests with [`AzureState::fault`] first.
    fail_next: AtomicUsize,
    /// The status of those answers: 503 unless a test says otherwise.
    fault: Mutex<StatusCode>,
    /// Sign-in is down: token requests answer 503 with a proxy's HTML page.
    entra_down: AtomicBool,
    /// The certificate secret: content type and value.
    secret: Mutex<Option<(String, String)>>,
    issued_tokens: Mutex<Vec<String>>,
    seen: Mutex<Vec<Seen>>,
}

pub(crate) struct AzureStandIn {
    address: SocketAddr,
    ca_der: Vec<u8>,
    ca_pem: String,
    state: Arc<AzureState>,
    stop: CancellationToken,
}

impl AzureStandIn {
    pub(crate) async fn start() -> Self {
        let server = crate::support::PrivateCaServer::for_names(&[VAULT_HOST, LOGIN_HOST]);

        let state = Arc::new(AzureState {
            versions: Mutex::new(Vec::new()),
            enabled: AtomicBool::new(true),
            key_ops: Mutex::new(vec!["encrypt", "decrypt", "wrapKey", "unwrapKey"]),
            deny_reads: AtomicBool::new(false),
            deny_list: AtomicBool::new(false),
            fail_next: AtomicUsize::new(0),
            fault: Mutex::new(StatusCode::SERVICE_UNAVAILABLE),
            entra_down: AtomicBool::new(false),
            secret: Mutex::new(None),
            issued_tokens: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stand_in = Self {
            address: listener.local_addr().unwrap(),
            ca_der: server.ca_der,
            ca_pem: server.ca_pem,
            state: Arc::clone(&state),
            stop: CancellationToken::new(),
        };
        stand_in.rotate_key();
        let router = axum::Router::new().fallback(answer).with_state(state);
        tokio::spawn(crate::support::tls::serve_tls(
            listener,
            server.config,
            router,
            stand_in.stop.clone(),
        ));
        stand_in
    }

    /// Adds a new current version of the key, as Key Vault's "rotate" or "new version" does.
    fn rotate_key(&self) -> String {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
        let components: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> =
            aws_lc_rs::signature::KeyPair::public_key(&pair).into();
        let private = PrivateDecryptingKey::from_pkcs8(pair.as_der().unwrap().as_ref()).unwrap();
        let public = private.public_key();
        let version = Uuid::new_v4().simple().to_string();
        self.state.versions.lock().unwrap().push((
            version.clone(),
            Arc::new(KeyVersion {
                private: OaepPrivateDecryptingKey::new(private).unwrap(),
                public,
                n: components.n,
                e: components.e,
            }),
        ));
        version
    }

    fn current(&self) -> (String, Arc<KeyVersion>) {
        self.state.versions.lock().unwrap().last().unwrap().clone()
    }

    fn vault_uri(&self) -> String {
        format!("https://{VAULT_HOST}:{}/", self.address.port())
    }

    /// What production builds, but trusting the test CA and resolving the test names here.
    pub(crate) fn connection(&self) -> AzureConnection {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_der(&self.ca_der).unwrap())
            .resolve(VAULT_HOST, self.address)
            .resolve(LOGIN_HOST, self.address)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        AzureConnection {
            http: Some(http),
            authority_host: Some(format!("https://{LOGIN_HOST}:{}", self.address.port())),
        }
    }

    fn credentials(&self) -> AzureAdCredentials {
        AzureAdCredentials {
            tenant_id: TENANT.into(),
            client_id: APP_ID.into(),
            client_secret: APP_SECRET.to_owned().into(),
        }
    }

    /// The provider on the stand-in's key, opened with the main settings group.
    pub(crate) async fn open_key(&self) -> Result<AzureKeyVaultKeyProvider, KeyProviderError> {
        AzureKeyVaultKeyProvider::open_with(
            &self.key_settings(),
            SettingsGroup::Main,
            self.connection(),
        )
        .await
    }

    pub(crate) fn key_settings(&self) -> AzureKeyVaultKeySettings {
        AzureKeyVaultKeySettings {
            vault_uri: self.vault_uri(),
            key_name: KEY_NAME.into(),
            credentials: self.credentials(),
        }
    }

    fn certificate_settings(&self) -> AzureKeyVaultCertificateSettings {
        AzureKeyVaultCertificateSettings {
            vault_uri: self.vault_uri(),
            certificate_name: CERT_NAME.into(),
            credentials: self.credentials(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn token_requests(&self) -> usize {
        self.seen().iter().filter(|s| s.host == LOGIN_HOST).count()
    }
}

impl Drop for AzureStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What upstream's .NET `CryptographyClient` stores: RSA-OAEP (SHA-1) under the public key.
fn encrypt_oaep_sha1(public: &PublicEncryptingKey, plaintext: &[u8]) -> Vec<u8> {
    let public = OaepPublicEncryptingKey::new(public.clone()).unwrap();
    let mut out = vec![0u8; public.ciphertext_size()];
    let n = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
        .unwrap()
        .len();
    out.truncate(n);
    out
}

fn decrypt_oaep_sha1(version: &KeyVersion, ciphertext: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; version.private.min_output_size()];
    version
        .private
        .decrypt(&OAEP_SHA1_MGF1SHA1, ciphertext, &mut out, None)
        .ok()
        .map(|p| p.to_vec())
}

fn vault_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn challenge(port: u16) -> Response {
    let mut response = vault_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
    );
    response.headers_mut().insert(
        "www-authenticate",
        format!(
            "Bearer authorization=\"https://{LOGIN_HOST}:{port}/{TENANT}\", resource=\"{RESOURCE}\""
        )
        .parse()
        .unwrap(),
    );
    response
}

/// Key Vault's answer when it will not serve a request now, or (401) when the token is for
/// another tenant than the vault's.
fn vault_fault(status: StatusCode, port: u16) -> Response {
    match status {
        StatusCode::UNAUTHORIZED => {
            let mut response = challenge(port);
            *response.body_mut() = axum::body::Body::from(
                json!({ "error": { "code": "Unauthorized", "message": format!(
                    "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{TENANT}/, \
                     found https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/."
                ) } })
                .to_string(),
            );
            response
        }
        StatusCode::TOO_MANY_REQUESTS => {
            let mut response = vault_error(
                status,
                "Throttled",
                "Request was not processed because too many requests were received. \
                 Reason: A single client has exceeded the maximum number of requests per 10 seconds.",
            );
            response
                .headers_mut()
                .insert("retry-after", "1".parse().unwrap());
            response
        }
        StatusCode::INTERNAL_SERVER_ERROR => vault_error(
            status,
            "InternalServerError",
            "An unexpected error occurred while processing the request.",
        ),
        _ => vault_error(
            status,
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
    }
}

fn key_bundle(host: &str, version: &str, key: &KeyVersion, state: &AzureState) -> Value {
    json!({
        "key": {
            "kid": format!("https://{host}/keys/{KEY_NAME}/{version}"),
            "kty": "RSA-HSM",
            "key_ops": *state.key_ops.lock().unwrap(),
            "n": URL_SAFE_NO_PAD.encode(&key.n),
            "e": URL_SAFE_NO_PAD.encode(&key.e),
        },
        "attributes": {
            "enabled": state.enabled.load(Ordering::SeqCst),
            "created": 1764000000,
            "updated": 1764000000,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
            "exportable": false
        }
    })
}

/// `GET /certificates/{name}`: the certificate of the PFX in the certificate's secret, as Key
/// Vault describes a self-issued certificate whose key may be exported.
fn certificate_bundle(authority: &str, state: &AzureState) -> Option<Value> {
    let (content_type, value) = state.secret.lock().unwrap().clone()?;
    let pfx = STANDARD.decode(&value).ok()?;
    let der = key_connector::pkcs12::tls_identity(&pfx, None)
        .ok()?
        .chain
        .into_iter()
        .next()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).ok()?;
    let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let url =
        |collection: &str| format!("https://{authority}/{collection}/{CERT_NAME}/{CERT_VERSION}");
    Some(json!({
        "id": url("certificates"),
        "kid": url("keys"),
        "sid": url("secrets"),
        "x5t": URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
        "cer": STANDARD.encode(&der),
        "attributes": {
            "enabled": true,
            "nbf": certificate.validity().not_before.timestamp(),
            "exp": certificate.validity().not_after.timestamp(),
            "created": 1764000000,
            "updated": 1764000000,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90
        },
        "policy": {
            "id": format!("https://{authority}/certificates/{CERT_NAME}/policy"),
            "key_props": { "exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false },
            "secret_props": { "contentType": content_type },
            "x509_props": {
                "subject": certificate.subject().to_string(),
                "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
                "key_usage": ["digitalSignature", "keyEncipherment"],
                "validity_months": 12,
                "basic_constraints": { "ca": false }
            },
            "lifetime_actions": [
                { "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "AutoRenew" } }
            ],
            "issuer": { "name": "Self" },
            "attributes": { "enabled": true, "created": 1764000000, "updated": 1764000000 }
        }
    }))
}

/// Entra ID's token endpoint and Key Vault's behaviour for the calls the service makes.
async fn answer(
    State(state): State<Arc<AzureState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse().unwrap_or(443)))
        .unwrap_or((authority.clone(), 443));
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.seen.lock().unwrap().push(Seen {
        host: host.clone(),
        method: method.clone(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        authorization: authorization.clone(),
        body: body.clone(),
    });

    if host == LOGIN_HOST {
        return token_endpoint(&state, &method, uri.path(), &body, &authority);
    }
    assert_eq!(host, VAULT_HOST, "unexpected host");
    let issued = state.issued_tokens.lock().unwrap().clone();
    let authorized = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|token| issued.iter().any(|t| t == token));
    if !authorized {
        return challenge(port);
    }
    if !uri.query().unwrap_or_default().contains("api-version=") {
        return vault_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing.",
        );
    }
    if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return vault_fault(*state.fault.lock().unwrap(), port);
    }
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["keys", name, "versions"]) => {
            if state.deny_list.load(Ordering::SeqCst) {
                return vault_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!(
                        "The user, group or application 'appid={APP_ID}' does not have keys list permission on key vault 'kv'."
                    ),
                );
            }
            if *name != KEY_NAME {
                return vault_error(
                    StatusCode::NOT_FOUND,
                    "KeyNotFound",
                    &format!("A key with (name/id) {name} was not found in this key vault."),
                );
            }
            let versions = state.versions.lock().unwrap();
            let value: Vec<Value> = versions
                .iter()
                .enumerate()
                .map(|(i, (version, _))| {
                    json!({
                        "kid": format!("https://{authority}/keys/{KEY_NAME}/{version}"),
                        "attributes": {
                            "enabled": true,
                            "created": 1764000000 + i as i64,
                            "updated": 1764000000 + i as i64,
                            "recoveryLevel": "Recoverable+Purgeable"
                        },
                        "managed": null
                    })
                })
                .collect();
            axum::Json(json!({ "value": value, "nextLink": null })).into_response()
        }
        (Method::GET, ["keys", name, rest @ ..]) if rest.len() <= 1 => {
            if state.deny_reads.load(Ordering::SeqCst) {
                return vault_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!(
                        "The user, group or application 'appid={APP_ID}' does not have keys get permission on key vault 'kv'."
                    ),
                );
            }
            let versions = state.versions.lock().unwrap();
            let found = match rest.first().filter(|v| !v.is_empty()) {
                _ if *name != KEY_NAME => None,
                None => versions.last(),
                Some(version) => versions.iter().find(|(v, _)| v == version),
            };
            match found {
                Some((version, key)) => {
                    axum::Json(key_bundle(&authority, version, key, &state)).into_response()
                }
                None => vault_error(
                    StatusCode::NOT_FOUND,
                    "KeyNotFound",
                    &format!("A key with (name/id) {name} was not found in this key vault."),
                ),
            }
        }
        (Method::POST, ["keys", name, version, "decrypt"]) => {
            let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if request["alg"] != "RSA-OAEP" {
                return vault_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "Invalid algorithm.",
                );
            }
            let key = state
                .versions
                .lock()
                .unwrap()
                .iter()
                .find(|(v, _)| v == version)
                .map(|(_, k)| Arc::clone(k));
            let (Some(key), true) = (key, *name == KEY_NAME) else {
                return vault_error(
                    StatusCode::NOT_FOUND,
                    "KeyNotFound",
                    &format!(
                        "A key with (name/id) {name}/{version} was not found in this key vault."
                    ),
                );
            };
            let ciphertext = request["value"]
                .as_str()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
                .unwrap_or_default();
            match decrypt_oaep_sha1(&key, &ciphertext) {
                Some(plaintext) => axum::Json(json!({
                    "kid": format!("https://{authority}/keys/{name}/{version}"),
                    "value": URL_SAFE_NO_PAD.encode(plaintext),
                }))
                .into_response(),
                None => vault_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The parameter is incorrect.\r\n",
                ),
            }
        }
        (Method::GET, ["certificates", name, rest @ ..]) if rest.len() <= 1 => {
            match (*name == CERT_NAME)
                .then(|| certificate_bundle(&authority, &state))
                .flatten()
            {
                Some(bundle) => axum::Json(bundle).into_response(),
                None => vault_error(
                    StatusCode::NOT_FOUND,
                    "CertificateNotFound",
                    &format!(
                        "A certificate with (name/id) {name} was not found in this key vault."
                    ),
                ),
            }
        }
        (Method::GET, ["secrets", name, ..]) => match &*state.secret.lock().unwrap() {
            Some((content_type, value)) if *name == CERT_NAME => axum::Json(json!({
                "value": value,
                "contentType": content_type,
                "id": format!("https://{authority}/secrets/{name}/{CERT_VERSION}"),
                "kid": format!("https://{authority}/keys/{name}/{CERT_VERSION}"),
                "managed": true,
                "attributes": { "enabled": true, "created": 1764000000, "updated": 1764000000 }
            }))
            .into_response(),
            _ => vault_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!("A secret with (name/id) {name} was not found in this key vault."),
            ),
        },
        _ => vault_error(StatusCode::NOT_FOUND, "NotFound", "unknown operation"),
    }
}

/// The client-credentials grant of Entra ID's v2.0 token endpoint, and the tenant's OpenID
/// configuration that names it (read by MSAL, which Microsoft's Python SDK signs in with).
fn token_endpoint(
    state: &AzureState,
    method: &Method,
    path: &str,
    body: &str,
    authority: &str,
) -> Response {
    if state.entra_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/html")],
            "<html><body>503 Service Unavailable</body></html>",
        )
            .into_response();
    }
    let form: BTreeMap<String, String> = url_form(body);
    // Entra's descriptions end in CRLF-separated trace lines, so the JSON has escapes.
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        let description = format!(
            "{description}\r\nTrace ID: 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9\r\nCorrelation ID: \
             5f6a7b8c-9d0e-4f1a-8b2c-3d4e5f6a7b8c\r\nTimestamp: 2026-11-26 12:00:00Z"
        );
        (
            status,
            axum::Json(json!({
                "error": error,
                "error_description": description,
                "error_codes": [7000215],
                "timestamp": "2026-11-26 12:00:00Z",
                "trace_id": "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
                "correlation_id": "5f6a7b8c-9d0e-4f1a-8b2c-3d4e5f6a7b8c"
            })),
        )
            .into_response()
    };
    if *method == Method::GET && path == format!("/{TENANT}/v2.0/.well-known/openid-configuration")
    {
        let authority = format!("https://{authority}/{TENANT}");
        return axum::Json(json!({
            "token_endpoint": format!("{authority}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{authority}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{authority}/v2.0"),
            "authorization_endpoint": format!("{authority}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{authority}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{authority}/oauth2/v2.0/logout"),
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com"
        }))
        .into_response();
    }
    if *method != Method::POST || path != format!("/{TENANT}/oauth2/v2.0/token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some(&format!("{RESOURCE}/.default"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    if form.get("client_id").map(String::as_str) != Some(APP_ID)
        || form.get("client_secret").map(String::as_str) != Some(APP_SECRET)
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    let token = format!("eyJ0eXAi.stand-in.{}", Uuid::new_v4().simple());
    state.issued_tokens.lock().unwrap().push(token.clone());
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": token
    }))
    .into_response()
}

fn url_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn wraps_with_rsa_oaep_and_unwraps_in_the_vault_with_the_versioned_key() {
    let azure = AzureStandIn::start().await;
    let provider = azure.open_key().await.expect("provider opens");
    let (version, key) = azure.current();
    assert!(
        provider.describe().contains(&version),
        "{}",
        provider.describe()
    );

    let symmetric = [0x42u8; 32];
    let wrapped = provider.wrap_symmetric_key(&symmetric).await.unwrap();
    assert_eq!(wrapped.len(), 256);
    assert_eq!(
        decrypt_oaep_sha1(&key, &wrapped).as_deref(),
        Some(&symmetric[..]),
        "stored as raw RSA-OAEP (SHA-1) under the key's public half"
    );
    let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
    assert_eq!(&unwrapped[..], &symmetric[..]);
    provider.check_health().await.expect("healthy");

    let seen = azure.seen();
    let vault: Vec<&Seen> = seen.iter().filter(|s| s.host == VAULT_HOST).collect();
    // The first request goes without a token (and without a body) to get the challenge.
    assert!(vault[0].authorization.is_none(), "{:?}", vault[0]);
    let authorized: Vec<&&Seen> = vault.iter().filter(|s| s.authorization.is_some()).collect();
    assert_eq!(authorized[0].method, Method::GET);
    assert_eq!(authorized[0].path, format!("/keys/{KEY_NAME}/"));
    let decrypt = authorized
        .iter()
        .find(|s| s.method == Method::POST)
        .expect("a decrypt request");
    assert_eq!(decrypt.path, format!("/keys/{KEY_NAME}/{version}/decrypt"));
    assert!(decrypt.query.contains("api-version="), "{}", decrypt.query);
    let body: Value = serde_json::from_str(&decrypt.body).unwrap();
    assert_eq!(body["alg"], "RSA-OAEP");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(body["value"].as_str().unwrap().trim_end_matches('='))
            .unwrap(),
        wrapped
    );
    let health = authorized.last().unwrap();
    assert_eq!(health.path, format!("/keys/{KEY_NAME}/{version}"));
    assert_eq!(azure.token_requests(), 1, "the token is cached");
    let token_request = seen.iter().find(|s| s.host == LOGIN_HOST).unwrap();
    assert_eq!(token_request.path, format!("/{TENANT}/oauth2/v2.0/token"));
}

async fn a_symmetric_key_upstream_wrapped_unwraps_also_after_new_key_versions() {
    let azure = AzureStandIn::start().await;
    let (first_version, first) = azure.current();
    let symmetric: Vec<u8> = (0u8..32).collect();
    let stored = encrypt_oaep_sha1(&first.public, &symmetric);
    let provider = azure.open_key().await.unwrap();
    assert_eq!(
        &provider.unwrap_symmetric_key(&stored).await.unwrap()[..],
        &symmetric[..]
    );

    // A new key version made while running: this instance keeps the version it read.
    let second = azure.rotate_key();
    assert_eq!(
        &provider.unwrap_symmetric_key(&stored).await.unwrap()[..],
        &symmetric[..]
    );
    // A new start reads the new current version, as upstream does. That version cannot open
    // what the old one wrapped (upstream stops there); the older versions are tried and the
    // one that opens it is used from then on.
    let restarted = azure.open_key().await.unwrap();
    assert!(restarted.describe().contains(&second));
    let third = azure.rotate_key();
    let restarted = azure.open_key().await.unwrap();
    assert!(restarted.describe().contains(&third));
    assert_eq!(
        &restarted.unwrap_symmetric_key(&stored).await.unwrap()[..],
        &symmetric[..]
    );
    let decrypts: Vec<String> = azure
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::POST)
        .map(|s| s.path)
        .collect();
    let tail = &decrypts[decrypts.len() - 3..];
    assert_eq!(
        tail,
        [
            format!("/keys/{KEY_NAME}/{third}/decrypt"),
            format!("/keys/{KEY_NAME}/{second}/decrypt"),
            format!("/keys/{KEY_NAME}/{first_version}/decrypt"),
        ],
        "current first, then the older versions newest first"
    );
    // From then on the version that worked is used, health included.
    assert_eq!(
        &restarted.unwrap_symmetric_key(&stored).await.unwrap()[..],
        &symmetric[..]
    );
    restarted.check_health().await.unwrap();
    let seen = azure.seen();
    let last_two: Vec<&String> = seen.iter().rev().take(2).map(|s| &s.path).collect();
    assert_eq!(
        last_two,
        [
            &format!("/keys/{KEY_NAME}/{first_version}"),
            &format!("/keys/{KEY_NAME}/{first_version}/decrypt"),
        ]
    );

    // What this instance wraps now (under the current version, e.g. the pending key of
    // `rotate-symmetric-key`) unwraps too, though decryption is pinned to the older version.
    assert!(
        restarted.describe().contains(&first_version),
        "{}",
        restarted.describe()
    );
    let pending: Vec<u8> = (32u8..64).collect();
    let wrapped = restarted.wrap_symmetric_key(&pending).await.unwrap();
    assert!(decrypt_oaep_sha1(&azure.current().1, &wrapped).is_some());
    assert_eq!(
        &restarted.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
        &pending[..]
    );
    assert_eq!(
        &restarted.unwrap_symmetric_key(&stored).await.unwrap()[..],
        &symmetric[..]
    );

    // Without the `list` permission the failure says what was not tried.
    azure.state.deny_list.store(true, Ordering::SeqCst);
    let locked_out = azure.open_key().await.unwrap();
    let error = locked_out.unwrap_symmetric_key(&stored).await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::UnwrapFailed { message: ref m, .. }
            if m.contains("another version") && m.contains("cannot be listed")),
        "{error:?}"
    );

    // A ciphertext no version opens is refused after trying them all.
    azure.state.deny_list.store(false, Ordering::SeqCst);
    let foreign = encrypt_oaep_sha1(
        &PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .unwrap()
            .public_key(),
        &symmetric,
    );
    let error = locked_out.unwrap_symmetric_key(&foreign).await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::UnwrapFailed { message: ref m, .. } if m.contains("No other enabled version")),
        "{error:?}"
    );
}

async fn a_wrong_client_secret_is_a_config_error_that_never_shows_the_secret() {
    let azure = AzureStandIn::start().await;
    let mut settings = azure.key_settings();
    settings.credentials.client_secret = "Wr0ng~Secret-Value".to_owned().into();
    let error =
        AzureKeyVaultKeyProvider::open_with(&settings, SettingsGroup::Main, azure.connection())
            .await
            .err()
            .expect("refused");
    let KeyProviderError::Config { message, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        message.contains("AADSTS7000215: Invalid client secret provided.")
            && !message.contains("Trace ID"),
        "Entra's reason, without its trace lines: {message}"
    );
    assert!(
        message.contains("keyConnectorSettings__rsaKey__azureKeyvaultAd"),
        "{message}"
    );
    assert!(!message.contains("Wr0ng"), "{message}");
}

/// An Entra ID outage is waited out (start-up retries), not taken for wrong settings.
async fn a_sign_in_outage_is_unavailable_and_passes() {
    let azure = AzureStandIn::start().await;
    azure.state.entra_down.store(true, Ordering::SeqCst);
    let error = azure.open_key().await.err().expect("no token, no key");
    assert!(
        matches!(error, KeyProviderError::Unavailable { message: ref m, .. } if m.contains("Entra ID")),
        "{error:?}"
    );
    azure.state.entra_down.store(false, Ordering::SeqCst);
    azure.open_key().await.expect("served once sign-in is back");
}

async fn key_problems_are_config_errors_that_say_what_to_fix() {
    let azure = AzureStandIn::start().await;

    let mut unknown = azure.key_settings();
    unknown.key_name = "no-such-key".into();
    let error =
        AzureKeyVaultKeyProvider::open_with(&unknown, SettingsGroup::Main, azure.connection())
            .await
            .err()
            .unwrap();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("does not exist") && m.contains("azureKeyvaultKeyName")),
        "{error:?}"
    );

    azure.state.deny_reads.store(true, Ordering::SeqCst);
    let error = azure.open_key().await.err().unwrap();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("denied access") && m.contains("permissions")),
        "{error:?}"
    );
    azure.state.deny_reads.store(false, Ordering::SeqCst);

    azure.state.enabled.store(false, Ordering::SeqCst);
    let error = azure.open_key().await.err().unwrap();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("disabled")),
        "{error:?}"
    );
    azure.state.enabled.store(true, Ordering::SeqCst);

    *azure.state.key_ops.lock().unwrap() = vec!["sign", "verify"];
    let error = azure.open_key().await.err().unwrap();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("decrypt")),
        "{error:?}"
    );
}

async fn transient_vault_errors_are_retried_and_outages_are_unavailable() {
    let azure = AzureStandIn::start().await;
    let provider = azure.open_key().await.unwrap();
    let wrapped = provider.wrap_symmetric_key(&[7u8; 32]).await.unwrap();
    azure.state.fail_next.store(1, Ordering::SeqCst);
    assert_eq!(
        &provider.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
        &[7u8; 32]
    );
    let decrypts = azure
        .seen()
        .iter()
        .filter(|s| s.method == Method::POST && s.host == VAULT_HOST)
        .count();
    assert_eq!(decrypts, 2, "one 503, then the retry");

    azure.state.fail_next.store(100, Ordering::SeqCst);
    let error = provider.check_health().await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::Unavailable { .. }),
        "{error:?}"
    );
    azure.state.fail_next.store(0, Ordering::SeqCst);

    let port = free_port();
    let mut nowhere = azure.key_settings();
    nowhere.vault_uri = format!("https://{VAULT_HOST}:{port}/");
    let mut connection = azure.connection();
    connection.http = Some(
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_der(&azure.ca_der).unwrap())
            .resolve(VAULT_HOST, SocketAddr::from(([127, 0, 0, 1], port)))
            .resolve(LOGIN_HOST, azure.address)
            .build()
            .unwrap(),
    );
    let opening = AzureKeyVaultKeyProvider::open_with(&nowhere, SettingsGroup::Main, connection);
    let error = tokio::time::timeout(Duration::from_secs(40), opening)
        .await
        .expect("unavailable within 40 s")
        .err()
        .unwrap();
    assert!(
        matches!(error, KeyProviderError::Unavailable { .. }),
        "{error:?}"
    );
}

async fn the_certificate_source_reads_the_pfx_from_the_certificates_secret() {
    let azure = AzureStandIn::start().await;
    let pfx =
        key_connector::pkcs12::generate_self_signed_pfx(2048, "kv certificate", None).unwrap();
    *azure.state.secret.lock().unwrap() =
        Some(("application/x-pkcs12".into(), STANDARD.encode(&pfx)));
    let provider = CertificateKeyProvider::open_azure_key_vault(
        &azure.certificate_settings(),
        azure.connection(),
    )
    .await
    .expect("the certificate loads");
    assert!(
        provider.describe().contains(CERT_NAME),
        "{}",
        provider.describe()
    );

    // The same file on disk is the same key.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kv.pfx"), &pfx).unwrap();
    let from_file = CertificateKeyProvider::open(
        &CertificateSettings::Filesystem {
            path: dir.path().join("kv.pfx"),
            password: None,
        },
        SettingsGroup::Main,
    )
    .await
    .unwrap();
    let wrapped = provider.wrap_symmetric_key(&[1u8; 32]).await.unwrap();
    assert_eq!(
        &from_file.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
        &[1u8; 32]
    );
    let secret_reads: Vec<Seen> = azure
        .seen()
        .into_iter()
        .filter(|s| s.host == VAULT_HOST && s.authorization.is_some())
        .collect();
    assert_eq!(secret_reads.len(), 1);
    assert_eq!(secret_reads[0].path, format!("/secrets/{CERT_NAME}/"));

    *azure.state.secret.lock().unwrap() =
        Some(("application/x-pem-file".into(), "-----BEGIN".into()));
    let error = CertificateKeyProvider::open_azure_key_vault(
        &azure.certificate_settings(),
        azure.connection(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("application/x-pem-file") && m.contains("application/x-pkcs12")),
        "{error:?}"
    );

    let mut missing = azure.certificate_settings();
    missing.certificate_name = "other-cert".into();
    let error = CertificateKeyProvider::open_azure_key_vault(&missing, azure.connection())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("does not exist") && m.contains("azureKeyvaultCertificateName")),
        "{error:?}"
    );
}

async fn the_service_keeps_user_keys_under_a_key_vault_wrapped_symmetric_key() {
    let azure = AzureStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    keys_survive_a_restart_with(dir.path(), || async {
        let provider = azure.open_key().await.unwrap();
        Arc::new(provider) as Arc<dyn RsaKeyProvider>
    })
    .await;
}

async fn a_vault_certificate_this_host_does_not_trust_is_a_config_error() {
    let azure = AzureStandIn::start().await;
    let mut connection = azure.connection();
    connection.http = Some(
        reqwest::Client::builder()
            .resolve(VAULT_HOST, azure.address)
            .resolve(LOGIN_HOST, azure.address)
            .build()
            .unwrap(),
    );
    let error =
        AzureKeyVaultKeyProvider::open_with(&azure.key_settings(), SettingsGroup::Main, connection)
            .await
            .err()
            .expect("refused");
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. }
            if m.contains("does not trust") && m.contains("SSL_CERT_FILE")),
        "{error:?}"
    );
}

/// The real binary, configured only by environment variables as the container is, with the
/// stand-in's names resolved through a hosts file (as DNS resolves Azure's), its CA trusted
/// through `SSL_CERT_FILE` and the sign-in host through `AZURE_AUTHORITY_HOST`: first the
/// `azurekv` key provider, then the `azurekv` certificate source.
async fn the_binary_uses_key_vault_with_the_operators_settings() {
    let azure = AzureStandIn::start().await;
    let idp = crate::support::TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n127.0.0.1 {VAULT_HOST} {LOGIN_HOST}\n"),
    )
    .unwrap();
    let azure_env = |command: &mut std::process::Command, group: &str| {
        let setting = |name: &str| format!("keyConnectorSettings__{group}__{name}");
        command
            .env(setting("azureKeyvaultUri"), azure.vault_uri())
            .env(setting("azureKeyvaultAdTenantId"), TENANT)
            .env(setting("azureKeyvaultAdAppId"), APP_ID)
            .env(setting("azureKeyvaultAdSecret"), APP_SECRET)
            .env(
                "AZURE_AUTHORITY_HOST",
                format!("https://{LOGIN_HOST}:{}", azure.address.port()),
            )
            .env("HOME", dir.path());
    };
    let in_namespace = |command: std::process::Command| with_hosts_file(&command, &hosts);
    if in_namespace(std::process::Command::new("true")).is_none() {
        crate::skip_or_fail!("mount namespaces (unshare --mount) are not allowed here");
    }

    // The key provider: refused until the CA is trusted, then serving keys.
    let command_for = |port: u16| {
        let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
        command
            .env("KEYCONNECTORSETTINGS__RSAKEY__PROVIDER", "azurekv")
            .env(
                "keyConnectorSettings__rsaKey__azureKeyvaultKeyName",
                KEY_NAME,
            );
        azure_env(&mut command, "rsaKey");
        in_namespace(command).unwrap()
    };
    a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
        dir.path(),
        &azure.ca_pem,
        &idp,
        command_for,
    )
    .await;
    let (_, current) = azure.current();
    assert_eq!(
        decrypt_oaep_sha1(&current, &stored_symmetric_key(dir.path()))
            .expect("wrapped under the vault key with RSA-OAEP")
            .len(),
        32
    );
    // An admin command unwraps it in the vault and reads the user key with it.
    let ca_file = dir.path().join("private-ca.pem");
    let mut check = command_for(free_port());
    check.arg("check-config").env("SSL_CERT_FILE", &ca_file);
    let (status, said) = run_to_end(check).await;
    assert!(status.success(), "{said}");
    assert!(
        azure
            .seen()
            .iter()
            .any(|s| s.host == VAULT_HOST && s.path.ends_with("/decrypt")),
        "the symmetric key was unwrapped in the vault: {said}"
    );

    // The certificate source: the PFX is the certificate's secret.
    let pfx =
        key_connector::pkcs12::generate_self_signed_pfx(2048, "kv certificate", None).unwrap();
    *azure.state.secret.lock().unwrap() =
        Some(("application/x-pkcs12".into(), STANDARD.encode(&pfx)));
    let certificate_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let with_certificate = || {
        let mut command = service_command(certificate_dir.path(), "sqlite", &idp.url, port);
        command
            .env("keyConnectorSettings__certificate__provider", "azurekv")
            .env(
                "keyConnectorSettings__certificate__azureKeyvaultCertificateName",
                CERT_NAME,
            )
            .env("SSL_CERT_FILE", &ca_file);
        azure_env(&mut command, "certificate");
        command
    };
    let service = Service::spawn(in_namespace(with_certificate()).unwrap(), port)
        .wait_ready()
        .await;
    let (token, key) = service.stores_and_serves_a_key(&idp).await;
    assert!(
        azure
            .seen()
            .iter()
            .any(|s| s.path == format!("/secrets/{CERT_NAME}/") && s.authorization.is_some()),
        "the certificate was read from the vault"
    );
    drop(service);

    // rotate-rsa-key moves that database from the vault's certificate to the vault's key.
    let mut rotate = with_certificate();
    rotate
        .arg("rotate-rsa-key")
        .env(
            "keyConnectorSettings__rotateTo__rsaKey__provider",
            "azurekv",
        )
        .env(
            "keyConnectorSettings__rotateTo__rsaKey__azureKeyvaultKeyName",
            KEY_NAME,
        );
    azure_env(&mut rotate, "rotateTo__rsaKey");
    let (status, said) = run_to_end(in_namespace(rotate).unwrap()).await;
    assert!(status.success(), "{said}");
    assert!(
        decrypt_oaep_sha1(&current, &stored_symmetric_key(certificate_dir.path())).is_some(),
        "now wrapped under the vault key"
    );
    let mut command = service_command(certificate_dir.path(), "sqlite", &idp.url, port);
    command
        .env("KEYCONNECTORSETTINGS__RSAKEY__PROVIDER", "azurekv")
        .env(
            "keyConnectorSettings__rsaKey__azureKeyvaultKeyName",
            KEY_NAME,
        )
        .env("SSL_CERT_FILE", &ca_file);
    azure_env(&mut command, "rsaKey");
    let service = Service::spawn(in_namespace(command).unwrap(), port)
        .wait_ready()
        .await;
    assert_eq!(service.key_of(&token).await, Ok(key));
}

/// Microsoft's Python packages the vendor check imports.
const MICROSOFT_SDK: &[&str] = &[
    "azure.identity",
    "azure.keyvault.keys",
    "azure.keyvault.secrets",
    "azure.keyvault.certificates",
    "cryptography",
];

impl AzureStandIn {
    /// What `tests/vendor/azure_keyvault_check.py` needs to reach the stand-in: the test CA
    /// (written into `dir`), the names to resolve, the application and the objects.
    fn vendor_env(&self, dir: &std::path::Path) -> Vec<(&'static str, String)> {
        let ca_file = dir.join("stand-in-ca.pem");
        std::fs::write(&ca_file, &self.ca_pem).unwrap();
        let ca_file = ca_file.display().to_string();
        vec![
            ("REQUESTS_CA_BUNDLE", ca_file.clone()),
            ("SSL_CERT_FILE", ca_file),
            ("STAND_IN_ADDRESS", self.address.to_string()),
            ("STAND_IN_NAMES", format!("{VAULT_HOST} {LOGIN_HOST}")),
            ("AZURE_AUTHORITY_HOST", format!("https://{LOGIN_HOST}")),
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_ID", APP_ID.into()),
            ("AZURE_CLIENT_SECRET", APP_SECRET.into()),
            ("KEY_VAULT_URL", format!("https://{VAULT_HOST}/")),
            ("KEY_VAULT_SCOPE", format!("{RESOURCE}/.default")),
            ("KEY_NAME", KEY_NAME.into()),
            ("CERTIFICATE_NAME", CERT_NAME.into()),
        ]
    }
}

/// The stand-in was written from the same reading of Microsoft's reference as the provider,
/// so Microsoft's own SDK checks it: signing in, the key and its versions, decrypting what
/// the provider wrapped (and the provider unwrapping what the SDK wrapped), the certificate
/// and its secret, and the 404s, all accepted both ways.
async fn microsofts_own_sdk_makes_the_providers_calls_against_the_stand_in() {
    if let Some(reason) = missing_python_modules(MICROSOFT_SDK) {
        crate::skip_or_fail!(
            "Microsoft's Python SDK is not installed ({reason}): pip install azure-identity \
             azure-keyvault-keys azure-keyvault-secrets azure-keyvault-certificates"
        );
    }
    let azure = AzureStandIn::start().await;
    let pfx =
        key_connector::pkcs12::generate_self_signed_pfx(2048, "kv certificate", None).unwrap();
    *azure.state.secret.lock().unwrap() =
        Some(("application/x-pkcs12".into(), STANDARD.encode(&pfx)));
    let provider = azure.open_key().await.unwrap();
    let symmetric: Vec<u8> = (100u8..132).collect();
    let wrapped = provider.wrap_symmetric_key(&symmetric).await.unwrap();
    let before = azure.seen().len();

    let dir = tempfile::tempdir().unwrap();
    let mut env = azure.vendor_env(dir.path());
    env.push(("WRAPPED_KEY", STANDARD.encode(&wrapped)));
    env.push(("SYMMETRIC_KEY", STANDARD.encode(&symmetric)));
    let run = run_vendor_script("azure_keyvault_check.py", &["operations"], &env).await;
    assert!(run.success, "{}", run.said);
    let seen: Vec<Seen> = azure.seen().split_off(before);

    // What Microsoft's client wrapped, the provider unwraps.
    let vendor_wrapped = STANDARD.decode(run.result("vendor-wrapped")).unwrap();
    assert_eq!(
        &provider
            .unwrap_symmetric_key(&vendor_wrapped)
            .await
            .unwrap()[..],
        &symmetric[..]
    );

    // What the stand-in saw of Microsoft's client.
    let login: Vec<(Method, &str)> = seen
        .iter()
        .filter(|s| s.host == LOGIN_HOST)
        .map(|s| (s.method.clone(), s.path.as_str()))
        .collect();
    let configuration = format!("/{TENANT}/v2.0/.well-known/openid-configuration");
    let token = format!("/{TENANT}/oauth2/v2.0/token");
    assert!(
        login.contains(&(Method::GET, &configuration)) && login.contains(&(Method::POST, &token)),
        "MSAL reads the tenant's configuration, then asks for the token: {login:?}"
    );
    let vault: Vec<&Seen> = seen.iter().filter(|s| s.host == VAULT_HOST).collect();
    assert!(
        vault[0].authorization.is_none(),
        "the first request elicits the challenge: {:?}",
        vault[0]
    );
    let authorized: Vec<&&Seen> = vault.iter().filter(|s| s.authorization.is_some()).collect();
    assert!(
        authorized.iter().all(|s| s.query.contains("api-version=")),
        "{authorized:?}"
    );
    let paths: Vec<(Method, &str)> = authorized
        .iter()
        .map(|s| (s.method.clone(), s.path.as_str()))
        .collect();
    let (version, _) = azure.current();
    for expected in [
        (Method::GET, format!("/keys/{KEY_NAME}/")),
        (Method::GET, format!("/keys/{KEY_NAME}/{version}")),
        (Method::GET, format!("/keys/{KEY_NAME}/versions")),
        (Method::POST, format!("/keys/{KEY_NAME}/{version}/decrypt")),
        (Method::GET, format!("/secrets/{CERT_NAME}/")),
        (Method::GET, format!("/certificates/{CERT_NAME}/")),
    ] {
        assert!(
            paths.contains(&(expected.0.clone(), &expected.1)),
            "{expected:?} not among {paths:?}"
        );
    }
    let decrypted: Vec<Vec<u8>> = authorized
        .iter()
        .filter(|s| s.method == Method::POST)
        .map(|s| {
            let body: Value = serde_json::from_str(&s.body).unwrap();
            assert_eq!(body["alg"], "RSA-OAEP", "{body}");
            URL_SAFE_NO_PAD
                .decode(body["value"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(decrypted, [wrapped, vendor_wrapped]);
}

/// Each refusal the provider sorts (401 for another tenant, 403, 429, 500, 503) is, by the
/// stand-in's answer, the exception Microsoft's SDK raises for that status, with Key Vault's
/// error code and message read from the body.
async fn microsofts_own_sdk_reads_each_refusal_of_the_stand_in() {
    if let Some(reason) = missing_python_modules(MICROSOFT_SDK) {
        crate::skip_or_fail!(
            "Microsoft's Python SDK is not installed ({reason}): pip install azure-identity \
             azure-keyvault-keys azure-keyvault-secrets azure-keyvault-certificates"
        );
    }
    let azure = AzureStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = azure.vendor_env(dir.path());
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        if status == StatusCode::FORBIDDEN {
            azure.state.deny_reads.store(true, Ordering::SeqCst);
        } else {
            *azure.state.fault.lock().unwrap() = status;
            azure.state.fail_next.store(usize::MAX, Ordering::SeqCst);
        }
        let run = run_vendor_script(
            "azure_keyvault_check.py",
            &["refused", status.as_str()],
            &env,
        )
        .await;
        assert!(run.success, "{status}: {}", run.said);
        azure.state.deny_reads.store(false, Ordering::SeqCst);
        azure.state.fail_next.store(0, Ordering::SeqCst);
    }
}

/// The refusals Microsoft's SDK reads from the stand-in, as the provider sorts them: a token
/// the vault rejects (issued by another tenant) is a setting to fix, throttling and server
/// errors are outages that pass.
async fn vault_refusals_are_settings_to_fix_or_outages_that_pass() {
    let azure = AzureStandIn::start().await;
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        *azure.state.fault.lock().unwrap() = status;
        azure.state.fail_next.store(usize::MAX, Ordering::SeqCst);
        let error = azure.open_key().await.err().expect("refused");
        match status {
            StatusCode::UNAUTHORIZED => assert!(
                matches!(error, KeyProviderError::Config { message: ref m, .. }
                    if m.contains("rejected the token") && m.contains("tenant")
                        && m.contains("azureKeyvaultAd")),
                "{error:?}"
            ),
            _ => assert!(
                matches!(error, KeyProviderError::Unavailable { message: ref m, .. }
                    if m.contains(status.as_str())),
                "{status}: {error:?}"
            ),
        }
    }
}

crate::tests! {
    current_thread: [
        wraps_with_rsa_oaep_and_unwraps_in_the_vault_with_the_versioned_key,
        a_symmetric_key_upstream_wrapped_unwraps_also_after_new_key_versions,
        a_wrong_client_secret_is_a_config_error_that_never_shows_the_secret,
        a_sign_in_outage_is_unavailable_and_passes,
        key_problems_are_config_errors_that_say_what_to_fix,
        transient_vault_errors_are_retried_and_outages_are_unavailable,
        the_certificate_source_reads_the_pfx_from_the_certificates_secret,
        the_service_keeps_user_keys_under_a_key_vault_wrapped_symmetric_key,
        a_vault_certificate_this_host_does_not_trust_is_a_config_error,
        the_binary_uses_key_vault_with_the_operators_settings,
        microsofts_own_sdk_makes_the_providers_calls_against_the_stand_in,
        microsofts_own_sdk_reads_each_refusal_of_the_stand_in,
        vault_refusals_are_settings_to_fix_or_outages_that_pass,
    ],
}
