//! The `gcpkms` RSA key provider against a stand-in for Cloud KMS's REST API.
//!
//! No Google Cloud KMS can run here, so the stand-in answers as the API reference documents
//! `projects.locations.keyRings.cryptoKeys.cryptoKeyVersions.getPublicKey` (`GET
//! /v1/{name}/publicKey`), `.asymmetricDecrypt` (`POST /v1/{name}:asymmetricDecrypt`) and
//! `.get` (`GET /v1/{name}`): proto3 JSON with base64 bytes, int64 CRC32C values as strings
//! and enums as numbers when the client asks so (`$alt=json;enum-encoding=int`, as Google's
//! clients do), errors (401, 403, 404, 429, 5xx) as `{"error":{"code","message","status"}}`.
//! It holds a real RSA key and decrypts with real RSA-OAEP SHA-256, and it accepts only a
//! bearer token that is a JWT signed by the test's service-account key for Cloud KMS (what
//! Google's credentials send for a service account), or a token its OAuth endpoint granted
//! for such a JWT, so the credential discovery, the request shapes and the wrapping format
//! are all checked.
//!
//! Google's own Python SDK checks the stand-in (`tests/vendor/google_kms_check.py`): it
//! makes the provider's calls, and must accept every answer, while the stand-in must accept
//! its requests.

use key_connector::config::SettingsGroup;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use key_connector::keys::gcpkms::GcpKmsSettings;
use key_connector::keys::gcpkms::{GcpKmsConnection, GcpKmsKeyProvider};
use key_connector::keys::{KeyProviderError, RsaKeyProvider};
use serde_json::{Value, json};

use crate::support::binary::{
    Service, free_port, run_to_end, service_command, stored_symmetric_key,
};
use crate::support::vendor::{missing_python_modules, run_vendor_script};
use crate::support::{LocalTlsStandIn, TestIdp};

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const SERVICE_ACCOUNT: &str = "key-connector@acme-prod.iam.gserviceaccount.com";

fn crc32c(bytes: &[u8]) -> String {
    CRC32C.checksum(bytes).to_string()
}

/// The provider's settings as environment variables, as the container takes them.
fn gcpkms_env() -> Vec<(String, String)> {
    let gcp = settings();
    [
        (
            "KEYCONNECTORSETTINGS__RSAKEY__PROVIDER",
            "gcpkms".to_owned(),
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudProjectId",
            gcp.project_id,
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudLocationId",
            gcp.location_id,
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudKeyringId",
            gcp.key_ring_id,
        ),
        ("keyConnectorSettings__rsaKey__googleCloudKeyId", gcp.key_id),
        (
            "keyConnectorSettings__rsaKey__googleCloudKeyVersionId",
            gcp.key_version_id,
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

pub(crate) fn settings() -> GcpKmsSettings {
    GcpKmsSettings {
        project_id: "acme-prod".into(),
        location_id: "europe-west1".into(),
        key_ring_id: "bitwarden".into(),
        key_id: "key-connector".into(),
        key_version_id: "1".into(),
        endpoint: None,
    }
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
    /// The claims of the verified service-account JWT: the bearer token itself, or the
    /// assertion the bearer token was granted for.
    claims: Value,
}

struct KmsState {
    key_version: String,
    algorithm: &'static str,
    private: OaepPrivateDecryptingKey,
    public: aws_lc_rs::rsa::PublicEncryptingKey,
    public_pem: String,
    service_account: RsaKeyPair,
    /// Answer this many requests with [`KmsState::fault`] before serving.
    fail_next: AtomicUsize,
    /// The HTTP status of those answers: 503 unless a test says otherwise.
    fault: Mutex<StatusCode>,
    /// Access tokens the token endpoint granted, with the claims of their assertions.
    granted: Mutex<Vec<(String, Value)>>,
    seen: Mutex<Vec<Seen>>,
}

/// Cloud KMS for one key version, and the service account allowed to use it.
pub(crate) struct KmsStandIn {
    url: String,
    state: Arc<KmsState>,
    serving: Serving,
}

/// How the stand-in is served: plain HTTP, or HTTPS under a private CA.
enum Serving {
    Http(tokio::task::JoinHandle<()>),
    Https(LocalTlsStandIn),
}

impl KmsStandIn {
    pub(crate) async fn start(algorithm: &'static str) -> Self {
        Self::start_serving(algorithm, false).await
    }

    async fn start_serving(algorithm: &'static str, https: bool) -> Self {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let spki = private.public_key().as_der().unwrap();
        let state = Arc::new(KmsState {
            key_version: settings().key_version_name(),
            algorithm,
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
            public: private.public_key(),
            private: OaepPrivateDecryptingKey::new(private).unwrap(),
            service_account: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            fail_next: AtomicUsize::new(0),
            fault: Mutex::new(StatusCode::SERVICE_UNAVAILABLE),
            granted: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .route("/token", axum::routing::post(token_grant))
            .fallback(answer)
            .with_state(Arc::clone(&state));
        if https {
            let tls = LocalTlsStandIn::serve(router).await;
            return Self {
                url: tls.url.clone(),
                state,
                serving: Serving::Https(tls),
            };
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            state,
            serving: Serving::Http(task),
        }
    }

    /// The service-account key file, as the Cloud console downloads it.
    fn service_account_json(&self) -> Value {
        let pkcs8 = self.state.service_account.as_der().unwrap();
        json!({
            "type": "service_account",
            "project_id": "acme-prod",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": pem("PRIVATE KEY", pkcs8.as_ref()),
            "client_email": SERVICE_ACCOUNT,
            "client_id": "112233445566778899000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            // Google's libraries for Rust sign their own JWTs for Cloud APIs; the OAuth
            // grant here is the one the vendor check makes (google-auth's refresh).
            "token_uri": format!("{}/token", self.url),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/key-connector%40acme-prod.iam.gserviceaccount.com",
            "universe_domain": "googleapis.com"
        })
    }

    /// What the binary needs to reach the stand-in as Cloud KMS: the service-account key file
    /// (written into `dir`) in `GOOGLE_APPLICATION_CREDENTIALS`, and the endpoint.
    fn binary_env(&self, dir: &std::path::Path) -> Vec<(String, String)> {
        let credentials = dir.join("service-account.json");
        std::fs::write(
            &credentials,
            serde_json::to_vec(&self.service_account_json()).unwrap(),
        )
        .unwrap();
        vec![
            (
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                credentials.display().to_string(),
            ),
            ("KEY_CONNECTOR_GCP_KMS_ENDPOINT".into(), self.url.clone()),
            ("HOME".into(), dir.display().to_string()),
        ]
    }

    pub(crate) fn connection(&self) -> GcpKmsConnection {
        let credentials = google_cloud_auth::credentials::service_account::Builder::new(
            self.service_account_json(),
        )
        .build()
        .unwrap();
        GcpKmsConnection {
            endpoint: Some(self.url.clone()),
            credentials: Some(credentials),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// What upstream stores: RSA-OAEP SHA-256 with the key version's public key.
    fn encrypt_as_upstream(&self, plaintext: &[u8]) -> Vec<u8> {
        let public = OaepPublicEncryptingKey::new(self.state.public.clone()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .unwrap()
            .len();
        out.truncate(n);
        out
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.state.private.min_output_size()];
        self.state
            .private
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .ok()
            .map(|p| p.to_vec())
    }
}

impl Drop for KmsStandIn {
    fn drop(&mut self) {
        if let Serving::Http(task) = &self.serving {
            task.abort();
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The number of a `CryptoKeyVersionAlgorithm` in Cloud KMS's protocol buffers.
fn algorithm_number(name: &str) -> u32 {
    match name {
        "RSA_SIGN_PSS_2048_SHA256" => 2,
        "RSA_DECRYPT_OAEP_2048_SHA256" => 8,
        "RSA_DECRYPT_OAEP_3072_SHA256" => 9,
        "RSA_DECRYPT_OAEP_4096_SHA256" => 10,
        "RSA_DECRYPT_OAEP_4096_SHA512" => 17,
        "RSA_DECRYPT_OAEP_2048_SHA1" => 37,
        other => panic!("no number for algorithm {other}"),
    }
}

/// `text` with its `%XX` escapes decoded (the query's `$`, `=` and `;` may arrive escaped).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn google_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": { "code": status.as_u16(), "message": message, "status": code }
        })),
    )
        .into_response()
}

/// The bearer token's claims: a token the token endpoint granted, or a JWT the service
/// account signed itself for Cloud KMS: for an OAuth scope that covers it, or with the
/// service as its audience (Google's self-signed JWTs, AIP-4111).
fn verify_bearer(state: &KmsState, headers: &HeaderMap) -> Option<Value> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let granted = state.granted.lock().unwrap();
    if let Some((_, claims)) = granted.iter().find(|(t, _)| t == token) {
        return Some(claims.clone());
    }
    drop(granted);
    let claims = verify_service_account_jwt(state, token)?;
    let for_cloud_kms =
        scopes_cover_cloud_kms(&claims) || claims["aud"] == "https://cloudkms.googleapis.com/";
    for_cloud_kms.then_some(claims)
}

/// Whether the JWT's `scope` claim names a scope that allows Cloud KMS.
fn scopes_cover_cloud_kms(claims: &Value) -> bool {
    claims["scope"].as_str().is_some_and(|scopes| {
        scopes.split(' ').any(|scope| {
            scope == "https://www.googleapis.com/auth/cloud-platform"
                || scope == "https://www.googleapis.com/auth/cloudkms"
        })
    })
}

/// The claims of `token` if it is a current RS256 JWT the service account signed.
fn verify_service_account_jwt(state: &KmsState, token: &str) -> Option<Value> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (header, claims) = signed.split_once('.')?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "RS256" {
        return None;
    }
    let public = state.service_account.public_key();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public.as_ref())
        .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).ok()?)
        .ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (claims["iss"] == SERVICE_ACCOUNT && claims["exp"].as_u64()? > now).then_some(claims)
}

/// Google's OAuth 2.0 token endpoint for a service account's JWT-bearer grant (RFC 7523): an
/// RS256 assertion the service account signed, asking for scopes, no longer than an hour.
/// Its audience is always Google's token endpoint, wherever the grant is sent.
async fn token_grant(
    State(state): State<Arc<KmsState>>,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> Response {
    let oauth_error = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "Invalid grant_type: ");
    }
    let Some(claims) = form
        .get("assertion")
        .and_then(|assertion| verify_service_account_jwt(&state, assertion))
    else {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    };
    state.seen.lock().unwrap().push(Seen {
        method: Method::POST,
        path: "/token".into(),
        query: String::new(),
        body: Value::Null,
        claims: claims.clone(),
    });
    let for_google = claims["aud"] == "https://oauth2.googleapis.com/token";
    let lifetime = claims["exp"].as_u64().zip(claims["iat"].as_u64());
    if !for_google || !lifetime.is_some_and(|(exp, iat)| exp > iat && exp - iat <= 3600) {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. \
             Check your iat and exp values in the JWT claim.",
        );
    }
    if !scopes_cover_cloud_kms(&claims) {
        return oauth_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let token = format!("ya29.stand-in-{}", uuid::Uuid::new_v4().simple());
    state.granted.lock().unwrap().push((token.clone(), claims));
    axum::Json(json!({ "access_token": token, "expires_in": 3599, "token_type": "Bearer" }))
        .into_response()
}

/// Cloud KMS's answer when it refuses a request: `status` with its canonical code and a
/// message as Cloud KMS words it.
fn kms_fault(status: StatusCode, name: &str) -> Response {
    let (code, message) = match status {
        StatusCode::UNAUTHORIZED => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
             cookie or other valid authentication credential."
                .to_owned(),
        ),
        StatusCode::FORBIDDEN => (
            "PERMISSION_DENIED",
            format!(
                "Permission 'cloudkms.cryptoKeyVersions.viewPublicKey' denied on resource '{name}' (or it may not exist)."
            ),
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' \
             of service 'cloudkms.googleapis.com' for consumer 'project_number:123456789012'."
                .to_owned(),
        ),
        StatusCode::INTERNAL_SERVER_ERROR => ("INTERNAL", "Internal error encountered.".to_owned()),
        _ => (
            "UNAVAILABLE",
            "The service is currently unavailable.".to_owned(),
        ),
    };
    google_error(status, code, &message)
}

/// Cloud KMS's behaviour for the methods the provider calls, and `GetCryptoKeyVersion`.
async fn answer(
    State(state): State<Arc<KmsState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(claims) = verify_bearer(&state, &headers) else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    };
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query = uri.query().unwrap_or_default().to_owned();
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: query.clone(),
        body: body_json.clone(),
        claims,
    });
    let path = uri.path().trim_start_matches("/v1/");
    if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return kms_fault(*state.fault.lock().unwrap(), path);
    }
    // Google's clients ask for enums as numbers (the system parameter
    // `$alt=json;enum-encoding=int`), so that a value added later does not break them.
    let enums_as_numbers = percent_decoded(&query).contains("enum-encoding=int");
    let algorithm = if enums_as_numbers {
        json!(algorithm_number(state.algorithm))
    } else {
        json!(state.algorithm)
    };
    let hsm = if enums_as_numbers {
        json!(2)
    } else {
        json!("HSM")
    };
    if method == Method::GET && path == state.key_version {
        return axum::Json(json!({
            "name": path,
            "state": if enums_as_numbers { json!(1) } else { json!("ENABLED") },
            "createTime": "2026-11-24T15:33:59.123456789Z",
            "generateTime": "2026-11-24T15:33:59.123456789Z",
            "protectionLevel": hsm,
            "algorithm": algorithm,
            "reimportEligible": false
        }))
        .into_response();
    }
    if method == Method::GET
        && let Some(name) = path.strip_suffix("/publicKey")
    {
        if name != state.key_version {
            return google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("{name} not found."),
            );
        }
        return axum::Json(json!({
            "pem": state.public_pem,
            "algorithm": algorithm,
            "pemCrc32c": crc32c(state.public_pem.as_bytes()),
            "name": name,
            "protectionLevel": hsm
        }))
        .into_response();
    }
    if method == Method::POST
        && let Some(name) = path.strip_suffix(":asymmetricDecrypt")
    {
        if name != state.key_version {
            return google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("{name} not found."),
            );
        }
        let Some(ciphertext) = body_json["ciphertext"]
            .as_str()
            .and_then(|c| STANDARD.decode(c).ok())
        else {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "ciphertext is required",
            );
        };
        let verified = match body_json["ciphertextCrc32c"].as_str() {
            Some(crc) if crc != crc32c(&ciphertext) => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.",
                );
            }
            Some(_) => true,
            None => false,
        };
        let mut out = vec![0u8; state.private.min_output_size()];
        let Ok(plaintext) =
            state
                .private
                .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
        else {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Decryption failed: the ciphertext is invalid.",
            );
        };
        return axum::Json(json!({
            "plaintext": STANDARD.encode(&*plaintext),
            "plaintextCrc32c": crc32c(plaintext),
            "verifiedCiphertextCrc32c": verified,
            "protectionLevel": hsm
        }))
        .into_response();
    }
    google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown method")
}

async fn wraps_locally_with_oaep_sha256_and_unwraps_with_asymmetric_decrypt() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let provider = GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
        .await
        .expect("provider opens");
    assert!(
        provider
            .describe()
            .contains("projects/acme-prod/locations/europe-west1/keyRings/bitwarden/cryptoKeys/key-connector/cryptoKeyVersions/1"),
        "{}",
        provider.describe()
    );
    let key = [0x5au8; 32];
    let wrapped = provider.wrap_symmetric_key(&key).await.unwrap();
    assert_eq!(wrapped.len(), 256, "raw RSA-2048 ciphertext");
    assert_eq!(
        kms.decrypt(&wrapped).as_deref(),
        Some(&key[..]),
        "what we store is RSA-OAEP SHA-256 under the key version's public key"
    );
    let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
    assert_eq!(&unwrapped[..], &key[..]);

    let seen = kms.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let name = settings().key_version_name();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, format!("/v1/{name}/publicKey"));
    assert_eq!(seen[1].method, Method::POST);
    assert_eq!(seen[1].path, format!("/v1/{name}:asymmetricDecrypt"));
    assert_eq!(seen[1].body["ciphertext"], STANDARD.encode(&wrapped));
    assert_eq!(seen[1].body["ciphertextCrc32c"], crc32c(&wrapped));
    assert_eq!(seen[1].claims["sub"], SERVICE_ACCOUNT);
    assert!(
        seen.iter()
            .all(|s| percent_decoded(&s.query).contains("$alt=json;enum-encoding=int")),
        "the client asks for enums as numbers, and the stand-in answers so, as Cloud KMS does: {seen:?}"
    );
    assert!(
        seen[1].claims["scope"]
            .as_str()
            .is_some_and(|s| s.contains("https://www.googleapis.com/auth/cloud-platform"))
            || seen[1].claims["aud"].is_string(),
        "{:?}",
        seen[1].claims
    );

    provider.check_health().await.expect("healthy");
    assert_eq!(kms.seen().len(), 3, "health asks for the public key");
}

async fn a_symmetric_key_upstream_wrapped_unwraps() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let provider = GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
        .await
        .unwrap();
    let key: Vec<u8> = (0u8..32).collect();
    let stored = kms.encrypt_as_upstream(&key);
    assert_eq!(
        &provider.unwrap_symmetric_key(&stored).await.unwrap()[..],
        &key[..]
    );
}

async fn a_key_version_with_another_algorithm_is_refused_naming_it() {
    for algorithm in [
        "RSA_DECRYPT_OAEP_2048_SHA1",
        "RSA_DECRYPT_OAEP_4096_SHA512",
        "RSA_SIGN_PSS_2048_SHA256",
    ] {
        let kms = KmsStandIn::start(algorithm).await;
        let error =
            GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
                .await
                .err()
                .expect("refused");
        assert!(
            matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains(algorithm) && m.contains("SHA256")),
            "{error:?}"
        );
    }
}

async fn an_unknown_key_version_is_a_config_error_naming_the_settings() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let mut other = settings();
    other.key_version_id = "7".into();
    let error = GcpKmsKeyProvider::open_with(&other, SettingsGroup::Main, kms.connection())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. }
            if m.contains("cryptoKeyVersions/7") && m.contains("googleCloudKeyVersionId")),
        "{error:?}"
    );
}

async fn a_ciphertext_of_another_key_is_unwrap_failed() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let other = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let provider = GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
        .await
        .unwrap();
    let foreign = other.encrypt_as_upstream(&[9u8; 32]);
    let error = provider.unwrap_symmetric_key(&foreign).await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::UnwrapFailed { message: ref m, .. } if m.contains("cannot decrypt")),
        "{error:?}"
    );
}

async fn a_transient_unavailable_is_retried() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let provider = GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
        .await
        .unwrap();
    let wrapped = provider.wrap_symmetric_key(&[3u8; 32]).await.unwrap();
    kms.state.fail_next.store(1, Ordering::SeqCst);
    let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
    assert_eq!(&unwrapped[..], &[3u8; 32]);
    let decrypts = kms
        .seen()
        .iter()
        .filter(|s| s.path.ends_with(":asymmetricDecrypt"))
        .count();
    assert_eq!(decrypts, 2, "one 503, then the retry");

    kms.state.fail_next.store(100, Ordering::SeqCst);
    let error = provider.check_health().await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::Unavailable { .. }),
        "{error:?}"
    );
}

async fn an_unreachable_kms_is_unavailable_within_bounded_time() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let mut connection = kms.connection();
    connection.endpoint = Some(format!("http://127.0.0.1:{}", free_port()));
    let settings = settings();
    let opening = GcpKmsKeyProvider::open_with(&settings, SettingsGroup::Main, connection);
    let error = tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .expect("unavailable within 30 s")
        .err()
        .expect("nothing answers");
    assert!(
        matches!(error, KeyProviderError::Unavailable { .. }),
        "{error:?}"
    );
}

async fn the_binary_finds_credentials_the_google_way_and_serves_keys() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
    command.envs(gcpkms_env()).envs(kms.binary_env(dir.path()));
    let service = Service::spawn(command, port).wait_ready().await;
    service.stores_and_serves_a_key(&idp).await;
    drop(service);

    // The stored symmetric key is upstream's format: base64 of the raw RSA-OAEP SHA-256
    // ciphertext under the key version's public key.
    let plain = kms
        .decrypt(&stored_symmetric_key(dir.path()))
        .expect("the stand-in's private key opens the stored key");
    assert_eq!(plain.len(), 32);
}

fn without_google_credentials_start_up_stops_naming_them() {
    let dir = tempfile::tempdir().unwrap();

    // A credentials file that is not there, and no credentials at all on a host that is not
    // on Google Cloud (the metadata server's name does not resolve): both stop start-up
    // instead of retrying forever.
    for credentials_file in [Some(dir.path().join("missing.json")), None] {
        let mut command = service_command(dir.path(), "sqlite", "http://127.0.0.1:9", free_port());
        command.envs(gcpkms_env()).env("HOME", dir.path());
        if let Some(file) = &credentials_file {
            command.env("GOOGLE_APPLICATION_CREDENTIALS", file);
        }
        let started = Instant::now();
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{credentials_file:?}: gave up after {:?}",
            started.elapsed()
        );
    }
}

/// `rotate-rsa-key` moves a database from a certificate to Cloud KMS and back, through the
/// binary with the operator's settings, and every user key stays readable at each step.
async fn rotate_rsa_key_moves_a_database_to_cloud_kms_and_back() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let google = kms.binary_env(dir.path());
    let start = |use_kms: bool| {
        let port = free_port();
        let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
        if use_kms {
            command.envs(gcpkms_env()).envs(google.clone());
        }
        Service::spawn(command, port).wait_ready()
    };
    let decrypts = || {
        kms.seen()
            .iter()
            .filter(|seen| seen.path.ends_with(":asymmetricDecrypt"))
            .count()
    };

    // A database sealed under the certificate, with one user key.
    let (token, key) = start(false).await.stores_and_serves_a_key(&idp).await;

    // Certificate -> Cloud KMS: the new wrapping is the key version's OAEP SHA-256.
    let rotate_to_kms = gcpkms_env().into_iter().map(|(name, value)| {
        let setting = name.to_ascii_lowercase().replace(
            "keyconnectorsettings__rsakey__",
            "keyConnectorSettings__rotateTo__rsaKey__",
        );
        (setting, value)
    });
    let mut rotate = service_command(dir.path(), "sqlite", &idp.url, free_port());
    rotate
        .arg("rotate-rsa-key")
        .envs(rotate_to_kms)
        .envs(google.clone());
    let (status, said) = run_to_end(rotate).await;
    assert!(status.success(), "{said}");
    assert_eq!(
        kms.decrypt(&stored_symmetric_key(dir.path()))
            .expect("wrapped under the Cloud KMS key")
            .len(),
        32
    );
    assert_eq!(start(true).await.key_of(&token).await.as_ref(), Ok(&key));

    // Cloud KMS -> certificate: the current key is unwrapped by AsymmetricDecrypt.
    let decrypts_before = decrypts();
    let mut rotate = service_command(dir.path(), "sqlite", &idp.url, free_port());
    rotate
        .arg("rotate-rsa-key")
        .envs(gcpkms_env())
        .envs(google.clone())
        .env(
            "keyConnectorSettings__rotateTo__rsaKey__provider",
            "certificate",
        )
        .env(
            "keyConnectorSettings__rotateTo__certificate__provider",
            "filesystem",
        )
        .env(
            "keyConnectorSettings__rotateTo__certificate__filesystemPath",
            dir.path().join("key.pfx"),
        )
        .env(
            "keyConnectorSettings__rotateTo__certificate__filesystemPassword",
            "pw",
        );
    let (status, said) = run_to_end(rotate).await;
    assert!(status.success(), "{said}");
    assert!(decrypts() > decrypts_before);
    assert!(kms.decrypt(&stored_symmetric_key(dir.path())).is_none());
    assert_eq!(start(false).await.key_of(&token).await, Ok(key));
}

/// Cloud KMS reached through a private endpoint whose certificate a private CA issued.
async fn a_kms_endpoint_under_a_private_ca_is_trusted_through_ssl_cert_file() {
    let kms = KmsStandIn::start_serving("RSA_DECRYPT_OAEP_2048_SHA256", true).await;
    let Serving::Https(tls) = &kms.serving else {
        unreachable!("started over HTTPS")
    };
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let google = kms.binary_env(dir.path());
    let command_for = |port: u16| {
        let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
        command.envs(gcpkms_env()).envs(google.clone());
        command
    };
    crate::support::binary::a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
        dir.path(),
        &tls.ca_pem,
        &idp,
        command_for,
    )
    .await;
    assert!(
        kms.seen()
            .iter()
            .any(|seen| seen.path.ends_with(":asymmetricDecrypt")
                || seen.path.ends_with("/publicKey")),
        "the key was used through the HTTPS endpoint"
    );
}

/// Something that is not Cloud KMS at the endpoint (a wrong KEY_CONNECTOR_GCP_KMS_ENDPOINT,
/// a proxy's refusal) stops start-up naming the endpoint setting, instead of being waited on.
async fn an_endpoint_that_is_not_cloud_kms_is_a_config_error_naming_it() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let not_kms = axum::Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html")],
            "<html><body>Not Found</body></html>",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, not_kms).await;
    });
    let mut connection = kms.connection();
    connection.endpoint = Some(url);
    let error = GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, connection)
        .await
        .err()
        .expect("not Cloud KMS");
    server.abort();
    assert!(
        matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("KEY_CONNECTOR_GCP_KMS_ENDPOINT") && m.contains("404")),
        "{error:?}"
    );
}

/// Google's Python packages the vendor check imports.
const GOOGLE_SDK: &[&str] = &[
    "google.auth",
    "google.cloud.kms",
    "google_crc32c",
    "grpc",
    "cryptography",
];

impl KmsStandIn {
    /// What `tests/vendor/google_kms_check.py` needs: the service-account key file (written
    /// into `dir`), the endpoint and the key version.
    fn vendor_env(&self, dir: &std::path::Path) -> Vec<(&'static str, String)> {
        let credentials = dir.join("service-account.json");
        std::fs::write(
            &credentials,
            serde_json::to_vec(&self.service_account_json()).unwrap(),
        )
        .unwrap();
        vec![
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                credentials.display().to_string(),
            ),
            ("KMS_ENDPOINT", self.url.clone()),
            ("KEY_VERSION", settings().key_version_name()),
        ]
    }
}

/// The stand-in was written from the same reading of Google's reference as the provider, so
/// Google's own SDK checks it: both ways a service account signs in, the key version and its
/// public key, decrypting what the provider wrapped (and the provider unwrapping what the
/// SDK wrapped) with the CRC32C integrity fields, and a 404, all accepted both ways.
async fn googles_own_sdk_makes_the_providers_calls_against_the_stand_in() {
    if let Some(reason) = missing_python_modules(GOOGLE_SDK) {
        crate::skip_or_fail!(
            "Google's Python SDK is not installed ({reason}): pip install google-cloud-kms \
             google-auth google-crc32c"
        );
    }
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let provider = GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
        .await
        .unwrap();
    let symmetric: Vec<u8> = (200u8..232).collect();
    let wrapped = provider.wrap_symmetric_key(&symmetric).await.unwrap();
    assert_eq!(
        &provider.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
        &symmetric[..]
    );
    let ours = kms.seen();

    let dir = tempfile::tempdir().unwrap();
    let mut env = kms.vendor_env(dir.path());
    env.push(("WRAPPED_KEY", STANDARD.encode(&wrapped)));
    env.push(("SYMMETRIC_KEY", STANDARD.encode(&symmetric)));
    let run = run_vendor_script("google_kms_check.py", &["operations"], &env).await;
    assert!(run.success, "{}", run.said);
    let theirs = kms.seen().split_off(ours.len());

    // What Google's client wrapped, the provider unwraps.
    let vendor_wrapped = STANDARD.decode(run.result("vendor-wrapped")).unwrap();
    assert_eq!(
        &provider
            .unwrap_symmetric_key(&vendor_wrapped)
            .await
            .unwrap()[..],
        &symmetric[..]
    );

    // What the stand-in saw of Google's client, beside what it saw of ours.
    let name = settings().key_version_name();
    let calls: Vec<(Method, &str)> = theirs
        .iter()
        .map(|s| (s.method.clone(), s.path.as_str()))
        .collect();
    let version = format!("/v1/{name}");
    let public_key = format!("/v1/{name}/publicKey");
    let decrypt = format!("/v1/{name}:asymmetricDecrypt");
    for expected in [
        (Method::POST, "/token"),
        (Method::GET, version.as_str()),
        (Method::GET, public_key.as_str()),
        (Method::POST, decrypt.as_str()),
    ] {
        assert!(
            calls.contains(&expected),
            "{expected:?} not among {calls:?}"
        );
    }
    let grant = theirs.iter().find(|s| s.path == "/token").unwrap();
    assert_eq!(
        grant.claims["aud"], "https://oauth2.googleapis.com/token",
        "{grant:?}"
    );
    for seen in ours.iter().chain(&theirs) {
        assert_eq!(seen.claims["iss"], SERVICE_ACCOUNT, "{seen:?}");
        if seen.path.starts_with("/v1/") {
            assert!(
                percent_decoded(&seen.query).contains("$alt=json;enum-encoding=int"),
                "both clients ask for enums as numbers: {seen:?}"
            );
        }
    }
    let checksums: Vec<(String, Value)> = theirs
        .iter()
        .filter(|s| s.path == decrypt)
        .map(|s| {
            let ciphertext = STANDARD
                .decode(s.body["ciphertext"].as_str().unwrap())
                .unwrap();
            (crc32c(&ciphertext), s.body["ciphertextCrc32c"].clone())
        })
        .collect();
    assert_eq!(checksums.len(), 4, "{checksums:?}");
    assert_eq!(
        checksums[0].1,
        json!(checksums[0].0),
        "int64 as a JSON string"
    );
    assert_eq!(checksums[1].1, json!(checksums[1].0));
    assert_eq!(checksums[2].1, Value::Null, "sent without a checksum");
    assert_ne!(checksums[3].1, json!(checksums[3].0), "a damaged checksum");
}

/// Each refusal the provider sorts (401, 403, 429, 500, 503) is, by the stand-in's answer,
/// the exception Google's SDK raises for that status, with the message from the body and a
/// canonical code that agrees with the status.
async fn googles_own_sdk_reads_each_refusal_of_the_stand_in() {
    if let Some(reason) = missing_python_modules(GOOGLE_SDK) {
        crate::skip_or_fail!(
            "Google's Python SDK is not installed ({reason}): pip install google-cloud-kms \
             google-auth google-crc32c"
        );
    }
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let dir = tempfile::tempdir().unwrap();
    let env = kms.vendor_env(dir.path());
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        *kms.state.fault.lock().unwrap() = status;
        kms.state.fail_next.store(usize::MAX, Ordering::SeqCst);
        let run =
            run_vendor_script("google_kms_check.py", &["refused", status.as_str()], &env).await;
        assert!(run.success, "{status}: {}", run.said);
        kms.state.fail_next.store(0, Ordering::SeqCst);
    }
}

/// The refusals Google's SDK reads from the stand-in, as the provider sorts them: rejected
/// credentials and a denied permission are settings to fix, exhausted quota and server
/// errors are outages that pass.
async fn kms_refusals_are_settings_to_fix_or_outages_that_pass() {
    let kms = KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    for (status, says) in [
        (StatusCode::UNAUTHORIZED, "rejected the credentials"),
        (StatusCode::FORBIDDEN, "roles/cloudkms.publicKeyViewer"),
        (StatusCode::TOO_MANY_REQUESTS, "ResourceExhausted"),
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal"),
        (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
    ] {
        *kms.state.fault.lock().unwrap() = status;
        kms.state.fail_next.store(usize::MAX, Ordering::SeqCst);
        let error =
            GcpKmsKeyProvider::open_with(&settings(), SettingsGroup::Main, kms.connection())
                .await
                .err()
                .expect("refused");
        let (KeyProviderError::Config { message, .. }
        | KeyProviderError::Unavailable { message, .. }) = &error
        else {
            panic!("{status}: {error:?}");
        };
        let outage = matches!(error, KeyProviderError::Unavailable { .. });
        assert_eq!(outage, status.as_u16() >= 429, "{status}: {error:?}");
        assert!(message.contains(says), "{status}: {message}");
    }
}

crate::tests! {
    current_thread: [
        wraps_locally_with_oaep_sha256_and_unwraps_with_asymmetric_decrypt,
        a_symmetric_key_upstream_wrapped_unwraps,
        a_key_version_with_another_algorithm_is_refused_naming_it,
        an_unknown_key_version_is_a_config_error_naming_the_settings,
        a_ciphertext_of_another_key_is_unwrap_failed,
        a_transient_unavailable_is_retried,
        an_unreachable_kms_is_unavailable_within_bounded_time,
        the_binary_finds_credentials_the_google_way_and_serves_keys,
        rotate_rsa_key_moves_a_database_to_cloud_kms_and_back,
        a_kms_endpoint_under_a_private_ca_is_trusted_through_ssl_cert_file,
        an_endpoint_that_is_not_cloud_kms_is_a_config_error_naming_it,
        googles_own_sdk_makes_the_providers_calls_against_the_stand_in,
        googles_own_sdk_reads_each_refusal_of_the_stand_in,
        kms_refusals_are_settings_to_fix_or_outages_that_pass,
    ],
    sync: [
        without_google_credentials_start_up_stops_naming_them,
    ],
}
