//! The `azurestorage` certificate source against Azurite, Microsoft's Azure Storage emulator
//! (`npm install -g azurite`), which checks Shared Key signatures as Azure does. Each test
//! starts its own `azurite-blob` on a free port with its own data directory, uploads the PFX
//! with a request signed the same way, and stops it at the end.

use key_connector::config::SettingsGroup;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use key_connector::config::ConfigSource;
use key_connector::config::azure_storage::{DEVELOPMENT_ACCOUNT_KEY, DEVELOPMENT_ACCOUNT_NAME};
use key_connector::keys::RsaKeySettings;
use key_connector::keys::certificate::CertificateKeyProvider;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::keys::certificate::azure_storage::{
    API_VERSION, SignedHeaders, blob_url, canonicalized_resource, http_date,
    shared_key_authorization, string_to_sign,
};
use key_connector::keys::{KeyProviderError, RsaKeyProvider};
use key_connector::pkcs12::generate_self_signed_pfx;
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::{AppOptions, TestIdp, random_key, spawn_app_with};

const CONTAINER: &str = "key-connector";
const BLOB: &str = "certificates/key connector.pfx";
const PFX_PASSWORD: &str = "azure pfx password";

/// An `azurite-blob` process; killed when dropped.
struct Azurite {
    child: Child,
    port: u16,
    /// Azurite's data, removed with the process.
    _data: tempfile::TempDir,
}

impl Azurite {
    fn installed() -> bool {
        Command::new("azurite-blob")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts Azurite on `port` with an empty data directory.
    fn start_on(port: u16) -> Self {
        let data = tempfile::tempdir().unwrap();
        let child = Command::new("azurite-blob")
            .args(["--silent", "--location"])
            .arg(data.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-blob starts");
        let azurite = Self {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        azurite
    }

    fn start() -> Self {
        Self::start_on(crate::support::binary::free_port())
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEVELOPMENT_ACCOUNT_NAME}", self.port)
    }

    /// A connection string naming the emulator's account explicitly.
    fn connection_string(&self, account_key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEVELOPMENT_ACCOUNT_NAME};AccountKey={account_key};BlobEndpoint={}/;",
            self.endpoint()
        )
    }

    /// `PUT`s with a Shared Key signature, as an operator's upload tool would.
    async fn put(&self, path_and_query: &str, body: Vec<u8>, extra: &[(&str, &str)]) {
        let url = reqwest::Url::parse(&format!("{}{path_and_query}", self.endpoint())).unwrap();
        let date = http_date(time::OffsetDateTime::now_utc());
        let mut ms_headers = vec![("x-ms-date", date.as_str()), ("x-ms-version", API_VERSION)];
        ms_headers.extend_from_slice(extra);
        let content_type = (!body.is_empty()).then_some("application/x-pkcs12");
        let to_sign = string_to_sign(
            "PUT",
            &SignedHeaders {
                content_length: Some(body.len() as u64),
                content_type,
                ms_headers: &ms_headers,
            },
            &canonicalized_resource(DEVELOPMENT_ACCOUNT_NAME, &url),
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(DEVELOPMENT_ACCOUNT_KEY)
            .unwrap();
        let mut request = reqwest::Client::new()
            .put(url)
            .header(
                "authorization",
                shared_key_authorization(DEVELOPMENT_ACCOUNT_NAME, &key, &to_sign),
            )
            .header("content-length", body.len());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &ms_headers {
            request = request.header(*name, *value);
        }
        let response = request.body(body).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "PUT {path_and_query}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }

    /// Creates the container and uploads the PFX as a block blob.
    async fn upload(&self, pfx: &[u8]) {
        self.put(&format!("/{CONTAINER}?restype=container"), Vec::new(), &[])
            .await;
        let blob = blob_url(&self.endpoint(), CONTAINER, BLOB).unwrap();
        let path = blob
            .path()
            .strip_prefix(&format!("/{DEVELOPMENT_ACCOUNT_NAME}"))
            .unwrap();
        self.put(path, pfx.to_vec(), &[("x-ms-blob-type", "BlockBlob")])
            .await;
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

macro_rules! azurite_or_skip {
    () => {{
        if !Azurite::installed() {
            skip_or_fail!(
                "Azurite is not installed (npm install -g azurite): Azure Storage tests skipped"
            );
        }
        let azurite = Azurite::start();
        azurite.upload(pfx()).await;
        azurite
    }};
}

fn pfx() -> &'static [u8] {
    static PFX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PFX.get_or_init(|| generate_self_signed_pfx(2048, "azure storage", Some(PFX_PASSWORD)).unwrap())
}

/// Settings as an operator writes them in the environment.
fn settings_from_env(connection_string: &str, overrides: &[(&str, &str)]) -> RsaKeySettings {
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
        (
            "keyConnectorSettings__certificate__provider",
            "azurestorage",
        ),
        (
            "keyConnectorSettings__certificate__azureStorageConnectionString",
            connection_string,
        ),
        (
            "keyConnectorSettings__certificate__azureStorageContainer",
            CONTAINER,
        ),
        (
            "keyConnectorSettings__certificate__azureStorageFileName",
            BLOB,
        ),
        (
            "keyConnectorSettings__certificate__azureStorageFilePassword",
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
    let loaded = key_connector::settings::load(&ConfigSource { file: None, env }).unwrap();
    assert!(matches!(
        loaded.settings.rsa_key,
        RsaKeySettings::Certificate(CertificateSettings::AzureStorage(_))
    ));
    loaded.settings.rsa_key
}

async fn open(settings: &RsaKeySettings) -> Result<CertificateKeyProvider, KeyProviderError> {
    let RsaKeySettings::Certificate(source) = settings else {
        unreachable!("a certificate provider");
    };
    CertificateKeyProvider::open(source, SettingsGroup::Main).await
}

fn config_error(result: Result<CertificateKeyProvider, KeyProviderError>) -> String {
    match result {
        Err(KeyProviderError::Config { message, .. }) => {
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

/// Whether the provider holds the uploaded PFX's key.
async fn holds_the_uploaded_key(provider: &CertificateKeyProvider) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uploaded.pfx");
    std::fs::write(&path, pfx()).unwrap();
    let reference = CertificateKeyProvider::open(
        &CertificateSettings::Filesystem {
            path,
            password: Some(PFX_PASSWORD.to_owned().into()),
        },
        SettingsGroup::Main,
    )
    .await
    .unwrap();
    let secret = [42u8; 32];
    let wrapped = provider.wrap_symmetric_key(&secret).await.unwrap();
    assert_eq!(
        &reference.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
        &secret
    );
}

async fn an_azure_storage_certificate_serves_user_keys() {
    let azurite = azurite_or_skip!();
    let settings = settings_from_env(&azurite.connection_string(DEVELOPMENT_ACCOUNT_KEY), &[]);
    let app = spawn_app_with(
        Arc::new(TestIdp::start().await),
        AppOptions {
            rsa_key: Some(settings),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    assert_eq!(app.read_key(&token).await, Ok(key));
    let provider = open(&settings_from_env(
        &azurite.connection_string(DEVELOPMENT_ACCOUNT_KEY),
        &[],
    ))
    .await
    .unwrap();
    holds_the_uploaded_key(&provider).await;
}

async fn use_development_storage_reads_from_azurite_on_its_default_port() {
    if !Azurite::installed() {
        skip_or_fail!(
            "Azurite is not installed (npm install -g azurite): Azure Storage tests skipped"
        );
    }
    // `UseDevelopmentStorage=true` means port 10000; another program may hold it.
    if std::net::TcpListener::bind("127.0.0.1:10000").is_err() {
        crate::harness::skip(
            "port 10000 is taken, so UseDevelopmentStorage=true cannot be tested here \
             (the explicit devstoreaccount1 connection string is tested instead)"
                .to_owned(),
        );
    }
    let azurite = Azurite::start_on(10000);
    azurite.upload(pfx()).await;
    let provider = open(&settings_from_env("UseDevelopmentStorage=true", &[]))
        .await
        .unwrap();
    assert!(
        provider
            .describe()
            .contains("127.0.0.1:10000/devstoreaccount1"),
        "{}",
        provider.describe()
    );
    holds_the_uploaded_key(&provider).await;
}

async fn a_wrong_account_key_is_a_config_error_naming_the_connection_string() {
    let azurite = azurite_or_skip!();
    let wrong_key = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
    let message = config_error(
        open(&settings_from_env(
            &azurite.connection_string(&wrong_key),
            &[],
        ))
        .await,
    );
    assert!(
        message.contains("keyConnectorSettings__certificate__azureStorageConnectionString"),
        "{message}"
    );
    assert!(message.contains("403"), "{message}");
    assert!(!message.contains(&wrong_key), "the key leaked: {message}");
}

async fn a_missing_blob_or_container_is_a_config_error_naming_the_setting() {
    let azurite = azurite_or_skip!();
    let connection = azurite.connection_string(DEVELOPMENT_ACCOUNT_KEY);
    let message = config_error(
        open(&settings_from_env(
            &connection,
            &[("azureStorageFileName", "certificates/other.pfx")],
        ))
        .await,
    );
    assert!(
        message.contains("keyConnectorSettings__certificate__azureStorageFileName")
            && message.contains("BlobNotFound"),
        "{message}"
    );
    let message = config_error(
        open(&settings_from_env(
            &connection,
            &[("azureStorageContainer", "no-such-container")],
        ))
        .await,
    );
    assert!(
        message.contains("keyConnectorSettings__certificate__azureStorageContainer")
            && message.contains("no-such-container"),
        "{message}"
    );
}

async fn a_wrong_pfx_password_is_a_config_error_naming_the_password_setting() {
    let azurite = azurite_or_skip!();
    let message = config_error(
        open(&settings_from_env(
            &azurite.connection_string(DEVELOPMENT_ACCOUNT_KEY),
            &[("azureStorageFilePassword", "not the password")],
        ))
        .await,
    );
    assert!(
        message.contains("keyConnectorSettings__certificate__azureStorageFilePassword"),
        "{message}"
    );
    assert!(!message.contains("not the password"), "{message}");
}

async fn a_stopped_azurite_is_unavailable_and_serves_again_when_back() {
    let mut azurite = azurite_or_skip!();
    let settings = settings_from_env(&azurite.connection_string(DEVELOPMENT_ACCOUNT_KEY), &[]);
    azurite.stop();
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&settings))
        .await
        .expect("unavailable within 10 s");
    match opened {
        Err(KeyProviderError::Unavailable { message, .. }) => {
            assert!(message.contains("Azure Storage"), "{message}");
            assert!(!message.contains(DEVELOPMENT_ACCOUNT_KEY), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("Azurite is stopped"),
    }

    // Back on the same port (a killed emulator may lose unsaved data: upload again).
    let port = azurite.port;
    drop(azurite);
    let back = Azurite::start_on(port);
    back.upload(pfx()).await;
    let provider = open(&settings).await.unwrap();
    holds_the_uploaded_key(&provider).await;
}

/// An account SAS for reading blobs, signed with the emulator's key (the "Create an account
/// SAS" layout of API versions from 2020-12-06).
fn read_only_account_sas(account_key: &[u8]) -> String {
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap();
    let (permissions, services, resource_types, protocol) = ("r", "b", "o", "http");
    let to_sign = format!(
        "{DEVELOPMENT_ACCOUNT_NAME}\n{permissions}\n{services}\n{resource_types}\n\n{expiry}\n\n{protocol}\n{API_VERSION}\n\n"
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, account_key);
    let signature = base64::engine::general_purpose::STANDARD
        .encode(aws_lc_rs::hmac::sign(&key, to_sign.as_bytes()).as_ref());
    let mut url = reqwest::Url::parse("http://sas.invalid/").unwrap();
    url.query_pairs_mut()
        .append_pair("sv", API_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", permissions)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature);
    url.query().unwrap().to_owned()
}

async fn a_shared_access_signature_reads_the_blob_and_a_forged_one_is_refused() {
    let azurite = azurite_or_skip!();
    let key = base64::engine::general_purpose::STANDARD
        .decode(DEVELOPMENT_ACCOUNT_KEY)
        .unwrap();
    let sas = read_only_account_sas(&key);
    let connection = format!(
        "BlobEndpoint={};SharedAccessSignature=?{sas}",
        azurite.endpoint()
    );
    let provider = open(&settings_from_env(&connection, &[])).await.unwrap();
    holds_the_uploaded_key(&provider).await;

    let forged = read_only_account_sas(&[1u8; 64]);
    let connection = format!(
        "BlobEndpoint={};SharedAccessSignature={forged}",
        azurite.endpoint()
    );
    let message = config_error(open(&settings_from_env(&connection, &[])).await);
    assert!(
        message.contains("keyConnectorSettings__certificate__azureStorageConnectionString")
            && message.contains("403"),
        "{message}"
    );
    assert!(!message.contains("sig="), "the SAS leaked: {message}");
}

crate::tests! {
    current_thread: [
        an_azure_storage_certificate_serves_user_keys,
        use_development_storage_reads_from_azurite_on_its_default_port,
        a_wrong_account_key_is_a_config_error_naming_the_connection_string,
        a_missing_blob_or_container_is_a_config_error_naming_the_setting,
        a_wrong_pfx_password_is_a_config_error_naming_the_password_setting,
        a_stopped_azurite_is_unavailable_and_serves_again_when_back,
        a_shared_access_signature_reads_the_blob_and_a_forged_one_is_refused,
    ],
}
