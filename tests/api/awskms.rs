//! The `awskms` RSA key provider against moto's KMS server (a real HTTP peer speaking the
//! KMS JSON protocol), started by each test on a free port and killed at its end.
//!
//! Moto implements `Encrypt`/`Decrypt` for every key with its own AES-GCM envelope, RSA keys
//! included, so it proves the protocol, key ids, modes, errors and the service wiring, not
//! RSA-OAEP itself; `rsa_wrapping_is_raw_oaep_sha256_on_the_wire` proves that part against a
//! fake KMS that does real RSA-OAEP SHA-256.

use key_connector::config::SettingsGroup;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use key_connector::keys::awskms::AwsKmsKeyProvider;
use key_connector::keys::awskms::{AwsKmsSettings, AwsStaticCredentials};
use key_connector::keys::{KeyProviderError, RsaKeyProvider};
use key_connector::store::open_store;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::binary::{Service, free_port, service_command};
use crate::support::{LocalTlsStandIn, TestIdp, keys_survive_a_restart_with};

const REGION: &str = "us-east-1";

/// A moto server process; killed when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) url: String,
}

impl Moto {
    /// Starts moto, or `None` when it is not installed.
    pub(crate) fn start() -> Option<Self> {
        let installed = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    pub(crate) fn client(&self) -> aws_sdk_kms::Client {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    pub(crate) async fn create_key(&self, spec: KeySpec) -> String {
        self.client()
            .create_key()
            .key_spec(spec)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .send()
            .await
            .expect("moto creates a key")
            .key_metadata
            .expect("key metadata")
            .key_id
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

macro_rules! moto_or_skip {
    () => {
        match Moto::start() {
            Some(moto) => moto,
            None => crate::skip_or_fail!(
                "moto is not installed (pip install 'moto[server]'): AWS KMS tests skipped"
            ),
        }
    };
}

pub(crate) fn settings(key_id: &str, symmetric: bool) -> AwsKmsSettings {
    AwsKmsSettings {
        credentials: Some(AwsStaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".to_owned().into(),
        }),
        region: Some(REGION.into()),
        key_id: key_id.into(),
        use_symmetric_encryption: symmetric,
    }
}

async fn round_trip(moto: &Moto, spec: KeySpec, symmetric: bool) {
    let key_id = moto.create_key(spec).await;
    let provider = AwsKmsKeyProvider::open_with(
        &settings(&key_id, symmetric),
        SettingsGroup::Main,
        &moto.url,
    )
    .await
    .expect("provider opens");
    assert!(provider.describe().contains(&key_id));
    let key = [7u8; 32];
    let wrapped = provider.wrap_symmetric_key(&key).await.unwrap();
    assert_ne!(&wrapped[..], &key[..]);
    let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
    assert_eq!(&unwrapped[..], &key[..]);
    provider.check_health().await.expect("healthy");
}

async fn rsa_kms_key_wraps_and_unwraps() {
    let moto = moto_or_skip!();
    round_trip(&moto, KeySpec::Rsa2048, false).await;
}

async fn symmetric_kms_key_wraps_and_unwraps() {
    let moto = moto_or_skip!();
    round_trip(&moto, KeySpec::SymmetricDefault, true).await;
}

async fn an_unknown_key_id_is_a_config_error_naming_the_setting() {
    let moto = moto_or_skip!();
    for symmetric in [false, true] {
        let missing = Uuid::new_v4().to_string();
        let error = AwsKmsKeyProvider::open_with(
            &settings(&missing, symmetric),
            SettingsGroup::Main,
            &moto.url,
        )
        .await
        .err()
        .expect("an unknown key is refused");
        assert!(
            matches!(error, KeyProviderError::Config { message: ref m, .. }
                if m.contains("keyConnectorSettings__rsaKey__awsKeyId") && m.contains(&missing)),
            "{error:?}"
        );
    }
}

async fn a_key_of_the_other_mode_is_a_config_error_naming_the_mode_setting() {
    let moto = moto_or_skip!();
    let symmetric_key = moto.create_key(KeySpec::SymmetricDefault).await;
    let rsa_key = moto.create_key(KeySpec::Rsa2048).await;
    for (key_id, symmetric) in [(symmetric_key, false), (rsa_key, true)] {
        let error = AwsKmsKeyProvider::open_with(
            &settings(&key_id, symmetric),
            SettingsGroup::Main,
            &moto.url,
        )
        .await
        .err()
        .expect("a key of the other kind is refused");
        assert!(
            matches!(error, KeyProviderError::Config { message: ref m, .. }
                if m.contains("keyConnectorSettings__rsaKey__awsUseSymmetricEncryption")),
            "{key_id} symmetric={symmetric}: {error:?}"
        );
    }
}

async fn a_ciphertext_of_another_key_or_garbage_is_unwrap_failed() {
    let moto = moto_or_skip!();
    let first = moto.create_key(KeySpec::SymmetricDefault).await;
    let second = moto.create_key(KeySpec::SymmetricDefault).await;
    let first =
        AwsKmsKeyProvider::open_with(&settings(&first, true), SettingsGroup::Main, &moto.url)
            .await
            .unwrap();
    let second =
        AwsKmsKeyProvider::open_with(&settings(&second, true), SettingsGroup::Main, &moto.url)
            .await
            .unwrap();
    let wrapped = first.wrap_symmetric_key(&[1u8; 32]).await.unwrap();
    let error = second.unwrap_symmetric_key(&wrapped).await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::UnwrapFailed { .. }),
        "{error:?}"
    );
    let mut damaged = wrapped.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x55;
    let error = first.unwrap_symmetric_key(&damaged).await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::UnwrapFailed { message: ref m, .. } if m.contains("InvalidCiphertext")),
        "{error:?}"
    );
}

async fn an_unreachable_kms_is_unavailable_within_bounded_time() {
    // A port nothing listens on: connection refused on every attempt.
    let url = format!("http://127.0.0.1:{}", free_port());
    let settings = settings("alias/any", false);
    let opening = AwsKmsKeyProvider::open_with(&settings, SettingsGroup::Main, &url);
    let error = tokio::time::timeout(Duration::from_secs(15), opening)
        .await
        .expect("unavailable within 15 s")
        .err()
        .expect("nothing answers");
    assert!(
        matches!(error, KeyProviderError::Unavailable { .. }),
        "{error:?}"
    );
}

async fn the_service_keeps_user_keys_under_a_kms_wrapped_symmetric_key() {
    let moto = moto_or_skip!();
    let key_id = moto.create_key(KeySpec::Rsa2048).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = keys_survive_a_restart_with(dir.path(), || async {
        let provider = AwsKmsKeyProvider::open_with(
            &self::settings(&key_id, false),
            SettingsGroup::Main,
            &moto.url,
        )
        .await
        .unwrap();
        Arc::new(provider) as Arc<dyn RsaKeyProvider>
    })
    .await;
    let wrapped = open_store(&settings.database)
        .await
        .unwrap()
        .read_symmetric_key()
        .await
        .unwrap()
        .expect("the wrapped key is stored");
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&wrapped)
        .expect("stored as base64 of the ciphertext blob");
    assert!(blob.len() > 32);
}

/// The binary's command with the KMS key `key_id` (symmetric or RSA); credentials, region
/// and endpoint are the caller's to add.
fn kms_service(dir: &Path, idp_url: &str, port: u16, key_id: &str, symmetric: bool) -> Command {
    let mut command = service_command(dir, "sqlite", idp_url, port);
    command
        .env("KEYCONNECTORSETTINGS__RSAKEY__PROVIDER", "awskms")
        .env("keyConnectorSettings__rsaKey__awsKeyId", key_id)
        .env(
            "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            symmetric.to_string(),
        );
    command
}

async fn the_binary_uses_aws_endpoint_url_and_the_default_credential_chain() {
    let moto = moto_or_skip!();
    let key_id = moto.create_key(KeySpec::SymmetricDefault).await;
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = kms_service(dir.path(), &idp.url, port, &key_id, true);
    command
        .env("keyConnectorSettings__rsaKey__awsAccessKeyId", "")
        .env("keyConnectorSettings__rsaKey__awsAccessKeySecret", "")
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir.path());
    let service = Service::spawn(command, port).wait_ready().await;
    service.stores_and_serves_a_key(&idp).await;
}

/// What a fake KMS saw: the `X-Amz-Target` and the JSON body of each request.
type Recorded = Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A fake KMS's request, recorded: its operation (`X-Amz-Target`) and JSON body.
fn record(
    recorded: &Recorded,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (String, serde_json::Value) {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    recorded
        .lock()
        .unwrap()
        .push((target.clone(), request.clone()));
    (target, request)
}

/// A minimal KMS speaking the JSON protocol for one RSA_2048 key, with real RSA-OAEP
/// SHA-256 (MGF1 SHA-256), which is what AWS documents for `RSAES_OAEP_SHA_256`.
fn rsa_fake_kms(
    key_id: &'static str,
    private: Arc<aws_lc_rs::rsa::PrivateDecryptingKey>,
    recorded: Recorded,
) -> axum::Router {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{
        OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    };
    use axum::http::HeaderMap;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
        let private = Arc::clone(&private);
        let recorded = Arc::clone(&recorded);
        async move {
            let (target, request) = record(&recorded, &headers, &body);
            let fail = |kind: &str| {
                (
                    StatusCode::BAD_REQUEST,
                    json!({ "__type": kind, "message": "refused by the fake" }).to_string(),
                )
            };
            if request["KeyId"] != key_id {
                return fail("NotFoundException");
            }
            let public = private.public_key();
            match target.as_str() {
                "TrentService.GetPublicKey" => (
                    StatusCode::OK,
                    json!({
                        "KeyId": key_id,
                        "KeySpec": "RSA_2048",
                        "CustomerMasterKeySpec": "RSA_2048",
                        "KeyUsage": "ENCRYPT_DECRYPT",
                        "EncryptionAlgorithms": ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
                        "PublicKey": STANDARD.encode(public.as_der().unwrap().as_ref()),
                    })
                    .to_string(),
                ),
                _ if request["EncryptionAlgorithm"] != "RSAES_OAEP_SHA_256" => {
                    fail("InvalidKeyUsageException")
                }
                "TrentService.Encrypt" => {
                    let plain = STANDARD
                        .decode(request["Plaintext"].as_str().unwrap_or_default())
                        .unwrap();
                    let public = OaepPublicEncryptingKey::new(public).unwrap();
                    let mut out = vec![0u8; public.ciphertext_size()];
                    let blob = public
                        .encrypt(&OAEP_SHA256_MGF1SHA256, &plain, &mut out, None)
                        .unwrap();
                    (
                        StatusCode::OK,
                        json!({
                            "KeyId": key_id,
                            "CiphertextBlob": STANDARD.encode(blob),
                            "EncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                        })
                        .to_string(),
                    )
                }
                "TrentService.Decrypt" => {
                    let blob = STANDARD
                        .decode(request["CiphertextBlob"].as_str().unwrap_or_default())
                        .unwrap();
                    let der = private.as_der().unwrap();
                    let private = OaepPrivateDecryptingKey::new(
                        aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(der.as_ref()).unwrap(),
                    )
                    .unwrap();
                    let mut out = vec![0u8; private.min_output_size()];
                    match private.decrypt(&OAEP_SHA256_MGF1SHA256, &blob, &mut out, None) {
                        Ok(plain) => (
                            StatusCode::OK,
                            json!({
                                "KeyId": key_id,
                                "Plaintext": STANDARD.encode(plain),
                                "EncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                            })
                            .to_string(),
                        ),
                        Err(_) => fail("InvalidCiphertextException"),
                    }
                }
                _ => fail("UnknownOperationException"),
            }
        }
    };
    axum::Router::new().route("/", axum::routing::post(handler))
}

/// [`rsa_fake_kms`] over plain HTTP; returns its URL.
async fn start_rsa_fake_kms(
    key_id: &'static str,
    private: Arc<aws_lc_rs::rsa::PrivateDecryptingKey>,
    recorded: Recorded,
) -> String {
    let router = rsa_fake_kms(key_id, private, recorded);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

/// A KMS-compatible endpoint behind a private CA (`AWS_ENDPOINT_URL` pointing at an
/// on-premises KMS or a proxy): the SDK's own HTTPS client must honour `SSL_CERT_FILE`, and
/// an untrusted certificate is a configuration error, not an outage to wait out.
async fn a_kms_endpoint_under_a_private_ca_is_trusted_through_ssl_cert_file() {
    const KEY_ID: &str =
        "arn:aws:kms:us-east-1:111122223333:key/7d1e2c3b-4a5f-4e6d-8c7b-9a0b1c2d3e4f";
    let private = Arc::new(
        aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
    );
    let recorded = Recorded::default();
    let kms = LocalTlsStandIn::serve(rsa_fake_kms(KEY_ID, private, Arc::clone(&recorded))).await;
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let command_for = |port: u16| {
        let mut command = kms_service(dir.path(), &idp.url, port, KEY_ID, false);
        command
            .env("keyConnectorSettings__rsaKey__awsRegion", REGION)
            .env(
                "keyConnectorSettings__rsaKey__awsAccessKeyId",
                "AKIDEXAMPLE",
            )
            .env(
                "keyConnectorSettings__rsaKey__awsAccessKeySecret",
                "example-secret",
            )
            .env("AWS_ENDPOINT_URL", &kms.url)
            .env("HOME", dir.path());
        command
    };
    crate::support::binary::a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
        dir.path(),
        &kms.ca_pem,
        &idp,
        command_for,
    )
    .await;
    assert!(
        recorded
            .lock()
            .unwrap()
            .iter()
            .any(|(target, _)| target == "TrentService.Encrypt"),
        "the symmetric key was wrapped by the KMS behind the private CA"
    );
}

async fn rsa_wrapping_is_raw_oaep_sha256_on_the_wire() {
    use aws_lc_rs::rsa::{
        KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
        PrivateDecryptingKey,
    };
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    const KEY_ID: &str =
        "arn:aws:kms:us-east-1:111122223333:key/0b5b7c2e-2f8e-4c1a-9d7e-3f2a1b0c9d8e";
    let private = Arc::new(PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap());
    let recorded = Recorded::default();
    let url = start_rsa_fake_kms(KEY_ID, Arc::clone(&private), Arc::clone(&recorded)).await;
    let provider =
        AwsKmsKeyProvider::open_with(&settings(KEY_ID, false), SettingsGroup::Main, &url)
            .await
            .expect("opens against the fake");

    // Wrapping: what KMS returns is the raw RSA-OAEP ciphertext, kept as it is.
    let key = [0x42u8; 32];
    let wrapped = provider.wrap_symmetric_key(&key).await.unwrap();
    assert_eq!(wrapped.len(), 256, "an RSA-2048 ciphertext, no envelope");
    let local = OaepPrivateDecryptingKey::new(
        PrivateDecryptingKey::from_pkcs8(
            aws_lc_rs::encoding::AsDer::as_der(private.as_ref())
                .unwrap()
                .as_ref(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut out = vec![0u8; local.min_output_size()];
    let plain = local
        .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut out, None)
        .expect("decrypts locally with OAEP SHA-256");
    assert_eq!(plain, &key[..]);

    // Unwrapping: a value stored by upstream (base64 of the blob real KMS returned) unwraps.
    let public = OaepPublicEncryptingKey::new(private.public_key()).unwrap();
    let upstream_key = [0x17u8; 32];
    let mut blob = vec![0u8; public.ciphertext_size()];
    let blob = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &upstream_key, &mut blob, None)
        .unwrap()
        .to_vec();
    let stored = STANDARD.encode(&blob);
    let unwrapped = provider
        .unwrap_symmetric_key(&STANDARD.decode(&stored).unwrap())
        .await
        .unwrap();
    assert_eq!(&unwrapped[..], &upstream_key[..]);

    // A ciphertext under another RSA key is refused as such.
    let other = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let other = OaepPublicEncryptingKey::new(other.public_key()).unwrap();
    let mut foreign = vec![0u8; other.ciphertext_size()];
    let foreign = other
        .encrypt(&OAEP_SHA256_MGF1SHA256, &upstream_key, &mut foreign, None)
        .unwrap()
        .to_vec();
    let error = provider.unwrap_symmetric_key(&foreign).await.unwrap_err();
    assert!(
        matches!(error, KeyProviderError::UnwrapFailed { .. }),
        "{error:?}"
    );

    // The requests carry what upstream sends: KeyId and the algorithm on Encrypt and Decrypt.
    let recorded = recorded.lock().unwrap();
    let targets: Vec<&str> = recorded.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        targets,
        [
            "TrentService.GetPublicKey",
            "TrentService.Encrypt",
            "TrentService.Decrypt",
            "TrentService.Decrypt"
        ]
    );
    for (target, request) in &recorded[1..] {
        assert_eq!(request["KeyId"], KEY_ID, "{target}");
        assert_eq!(
            request["EncryptionAlgorithm"], "RSAES_OAEP_SHA_256",
            "{target}"
        );
    }
    assert_eq!(recorded[2].1["CiphertextBlob"], stored.as_str());
}

fn no_aws_credentials_anywhere_stops_start_up_naming_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = kms_service(
        dir.path(),
        "http://127.0.0.1:9",
        free_port(),
        "alias/key-connector",
        false,
    )
    .env("keyConnectorSettings__rsaKey__awsRegion", REGION)
    .env(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", free_port()),
    )
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .env("HOME", dir.path())
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("keyConnectorSettings__rsaKey__awsAccessKeyId")
            && stderr.contains("AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
}

async fn a_wrong_key_id_stops_start_up_naming_the_setting_and_never_the_secret() {
    let moto = moto_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let output = kms_service(
        dir.path(),
        "http://127.0.0.1:9",
        free_port(),
        "alias/no-such-key",
        false,
    )
    .env("keyConnectorSettings__rsaKey__awsRegion", REGION)
    .env(
        "keyConnectorSettings__rsaKey__awsAccessKeyId",
        "AKIDEXAMPLE",
    )
    .env(
        "keyConnectorSettings__rsaKey__awsAccessKeySecret",
        "Sup3rSecretAccessKeyValue",
    )
    .env("AWS_ENDPOINT_URL_KMS", &moto.url)
    .env("HOME", dir.path())
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("keyConnectorSettings__rsaKey__awsKeyId")
            && stderr.contains("alias/no-such-key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Sup3rSecret"),
        "the secret is never logged: {stderr}"
    );
}

/// A key policy made for the official service grants only Encrypt and Decrypt on a symmetric
/// key (it never calls DescribeKey): the service starts, serves and reports health with it.
async fn a_symmetric_key_without_describe_permission_is_checked_with_encrypt() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::{Value, json};

    const KEY_ID: &str = "alias/key-connector";
    let recorded = Recorded::default();
    let seen = Arc::clone(&recorded);
    // Symmetric KMS as far as this test needs: the "ciphertext" is the plaintext behind a
    // marker, and DescribeKey is denied as IAM denies it.
    let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let seen = Arc::clone(&seen);
        async move {
            let (target, request) = record(&seen, &headers, &body);
            let answer = |status: StatusCode, body: Value| (status, body.to_string());
            if request["KeyId"] != KEY_ID || request["EncryptionAlgorithm"] != "SYMMETRIC_DEFAULT" {
                if target == "TrentService.DescribeKey" {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "__type": "AccessDeniedException", "message": "User is not authorized to perform: kms:DescribeKey" }),
                    );
                }
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({ "__type": "ValidationException", "message": "unexpected request" }),
                );
            }
            let blob = |field: &str| STANDARD.decode(request[field].as_str().unwrap_or_default());
            match target.as_str() {
                "TrentService.Encrypt" => {
                    let mut sealed = b"sealed:".to_vec();
                    sealed.extend(blob("Plaintext").unwrap());
                    answer(
                        StatusCode::OK,
                        json!({ "KeyId": KEY_ID, "CiphertextBlob": STANDARD.encode(sealed), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
                    )
                }
                "TrentService.Decrypt" => match blob("CiphertextBlob")
                    .ok()
                    .and_then(|b| b.strip_prefix(b"sealed:").map(<[u8]>::to_vec))
                {
                    Some(plain) => answer(
                        StatusCode::OK,
                        json!({ "KeyId": KEY_ID, "Plaintext": STANDARD.encode(plain), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
                    ),
                    None => answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "__type": "InvalidCiphertextException", "message": "" }),
                    ),
                },
                _ => answer(
                    StatusCode::BAD_REQUEST,
                    json!({ "__type": "AccessDeniedException", "message": "not granted" }),
                ),
            }
        }
    };
    let router = axum::Router::new().route("/", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let provider = AwsKmsKeyProvider::open_with(&settings(KEY_ID, true), SettingsGroup::Main, &url)
        .await
        .expect("starts without kms:DescribeKey");
    let wrapped = provider.wrap_symmetric_key(&[9u8; 32]).await.unwrap();
    assert_eq!(
        &provider.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
        &[9u8; 32]
    );
    provider
        .check_health()
        .await
        .expect("healthy through Encrypt");
    let targets: Vec<String> = recorded
        .lock()
        .unwrap()
        .iter()
        .map(|(target, _)| target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "TrentService.DescribeKey",
            "TrentService.Encrypt",
            "TrentService.Encrypt",
            "TrentService.Decrypt",
            "TrentService.Encrypt",
        ],
        "DescribeKey asked once; afterwards health uses Encrypt"
    );
    server.abort();
}

/// With the default chain, credentials may come from an endpoint that is not up yet at boot
/// (STS for EKS web identity, IMDS, the ECS agent): start-up waits for it instead of
/// exiting, and serves once it answers. No credentials anywhere still stops start-up (see
/// `no_aws_credentials_anywhere_stops_start_up_naming_the_settings`).
async fn web_identity_credentials_are_waited_for_until_sts_answers() {
    use crate::support::proxy::{Mode, Proxy};
    let moto = moto_or_skip!();
    let key_id = moto.create_key(KeySpec::SymmetricDefault).await;
    let moto_address = moto.url.trim_start_matches("http://").parse().unwrap();
    let sts = Proxy::start(moto_address).await;
    sts.set(Mode::Down);
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("web-identity-token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrYyJ9.c2lnbmF0dXJl",
    )
    .unwrap();
    let port = free_port();
    let mut command = kms_service(dir.path(), &idp.url, port, &key_id, true);
    command
        .env("AWS_REGION", REGION)
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env(
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/key-connector",
        )
        .env("AWS_ROLE_SESSION_NAME", "key-connector")
        .env("AWS_ENDPOINT_URL_KMS", &moto.url)
        .env("AWS_ENDPOINT_URL_STS", format!("http://{}", sts.address))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir.path());
    let mut service = Service::spawn(command, port);
    // Start-up found STS down, waited, found it down again and keeps waiting.
    service
        .wait_for_log(
            "RSA key provider unavailable; retrying",
            2,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        !service.has_exited(),
        "STS not answering yet is waited out, not taken for missing credentials"
    );
    sts.set(Mode::Forward);
    let service = service.wait_ready().await;
    service.stores_and_serves_a_key(&idp).await;
}

/// A web identity token file that cannot be read is the operator's to fix (a wrong path, a
/// volume not mounted, a permission): start-up stops instead of waiting on it. (The SDK's
/// message does not name the file; the credential settings are named.)
async fn an_unreadable_web_identity_token_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = kms_service(
        dir.path(),
        "http://127.0.0.1:9",
        free_port(),
        "alias/key-connector",
        true,
    );
    command
        .env("AWS_REGION", REGION)
        .env(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            dir.path().join("no-such-token"),
        )
        .env(
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/key-connector",
        )
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir.path());
    let stderr = crate::support::binary::start_up_stops(
        command,
        "an unreadable token file must stop start-up, not be waited on",
    )
    .await;
    assert!(
        stderr.contains("No such file or directory")
            && stderr.contains("keyConnectorSettings__rsaKey__awsAccessKeyId"),
        "{stderr}"
    );
}

crate::tests! {
    current_thread: [
        rsa_kms_key_wraps_and_unwraps,
        symmetric_kms_key_wraps_and_unwraps,
        an_unknown_key_id_is_a_config_error_naming_the_setting,
        a_key_of_the_other_mode_is_a_config_error_naming_the_mode_setting,
        a_ciphertext_of_another_key_or_garbage_is_unwrap_failed,
        an_unreachable_kms_is_unavailable_within_bounded_time,
        the_service_keeps_user_keys_under_a_kms_wrapped_symmetric_key,
        the_binary_uses_aws_endpoint_url_and_the_default_credential_chain,
        a_kms_endpoint_under_a_private_ca_is_trusted_through_ssl_cert_file,
        rsa_wrapping_is_raw_oaep_sha256_on_the_wire,
        a_wrong_key_id_stops_start_up_naming_the_setting_and_never_the_secret,
        a_symmetric_key_without_describe_permission_is_checked_with_encrypt,
        web_identity_credentials_are_waited_for_until_sts_answers,
        an_unreadable_web_identity_token_file_stops_start_up,
    ],
    sync: [
        no_aws_credentials_anywhere_stops_start_up_naming_the_settings,
    ],
}
