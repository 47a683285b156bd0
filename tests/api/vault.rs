//! The `vault` certificate source against a real Vault: an OpenBao server (the open-source
//! fork of HashiCorp Vault, same KV v2 API, policies and tokens) started for each test,
//! initialised and unsealed as in production. Tokens carry only the policies a test gives
//! them, so a refusal is Vault's own.
//!
//! One fault a real server cannot be made to show, a server that accepts connections and
//! never answers, is played by a socket that is never read.

use key_connector::config::SettingsGroup;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use key_connector::config::ConfigSource;
use key_connector::keys::KeyProviderError;
use key_connector::keys::RsaKeySettings;
use key_connector::keys::certificate::CertificateKeyProvider;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::pkcs12::generate_self_signed_pfx;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::openbao_or_skip;
use crate::support::openbao::{OpenBao, Transport};
use crate::support::proxy::start_up_waits_for_the_key_service;
use crate::support::{AppOptions, TestIdp, random_key, spawn_app_with};

const MOUNT: &str = "kv";
const SECRET_PATH: &str = "bitwarden/key-connector";
const DATA_KEY: &str = "certificate";
const PFX_PASSWORD: &str = "vault pfx password";
/// A policy that reads the certificate's secret and nothing else.
const READ_ONLY_THE_SECRET: &str =
    r#"path "kv/data/bitwarden/key-connector" { capabilities = ["read"] }"#;

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

/// An OpenBao server with KV v2 at [`MOUNT`], the certificate's secret written, and a token
/// whose policy reads only that secret.
pub(crate) struct VaultWithCertificate {
    pub(crate) bao: OpenBao,
    pub(crate) token: String,
}

impl VaultWithCertificate {
    pub(crate) async fn start(transport: Transport) -> Result<Self, String> {
        let bao = OpenBao::start(transport).await?;
        bao.enable_kv2(MOUNT).await;
        bao.put_secret(MOUNT, SECRET_PATH, secret_data()).await;
        bao.put_policy("key-connector", READ_ONLY_THE_SECRET).await;
        let token = bao.create_token(&["key-connector"], json!({})).await;
        Ok(Self { bao, token })
    }

    /// The source's settings for this server, as an operator writes them.
    pub(crate) fn settings(&self, overrides: &[(&str, &str)]) -> RsaKeySettings {
        settings_from_env(&self.bao.url, &self.token, overrides)
    }

    /// How many times Vault's audit log shows the certificate's secret read.
    fn secret_reads(&self) -> usize {
        self.bao
            .audited_requests("read", &format!("{MOUNT}/data/{SECRET_PATH}"))
    }
}

macro_rules! vault_or_skip {
    ($transport:expr) => {
        match VaultWithCertificate::start($transport).await {
            Ok(vault) => vault,
            Err(reason) => crate::skip_or_fail!("{reason}"),
        }
    };
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
    let loaded = key_connector::settings::load(&ConfigSource { file: None, env }).unwrap();
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
    CertificateKeyProvider::open(source, SettingsGroup::Main).await
}

/// The configuration error `result` must be; it names neither the token nor the password.
fn config_error(result: Result<CertificateKeyProvider, KeyProviderError>, token: &str) -> String {
    match result {
        Err(KeyProviderError::Config { message, .. }) => {
            assert!(!message.contains(token), "the token leaked: {message}");
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

async fn a_vault_sourced_certificate_serves_user_keys() {
    let vault = vault_or_skip!(Transport::Http);
    let idp = Arc::new(TestIdp::start().await);
    let with_slash = settings_from_env(&format!("{}/", vault.bao.url), &vault.token, &[]);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            rsa_key: Some(with_slash),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    assert_eq!(app.read_key(&token).await, Ok(key.clone()));
    // One read at start-up, by a token allowed nothing else; none per request.
    assert_eq!(vault.secret_reads(), 1);

    // A restart reads the certificate again and unwraps the stored symmetric key with it.
    let data_dir = app.shutdown().await;
    let app = spawn_app_with(
        idp,
        AppOptions {
            data_dir: Some(data_dir),
            rsa_key: Some(vault.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.read_key(&token).await, Ok(key));
    assert_eq!(vault.secret_reads(), 2);
}

async fn a_blank_mount_point_reads_from_the_secret_mount() {
    let bao = openbao_or_skip!(Transport::Http);
    bao.enable_kv2("secret").await;
    bao.put_secret("secret", SECRET_PATH, secret_data()).await;
    let settings = settings_from_env(&bao.url, &bao.root_token, &[("vaultSecretMountPoint", " ")]);
    assert!(open(&settings).await.is_ok());
}

async fn a_token_vault_does_not_know_is_a_config_error_naming_the_token_setting() {
    let vault = vault_or_skip!(Transport::Http);
    let settings = settings_from_env(&vault.bao.url, "s.not-a-token-vault-issued", &[]);
    let message = config_error(open(&settings).await, "s.not-a-token-vault-issued");
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultToken"),
        "{message}"
    );
    assert!(message.contains("403"), "{message}");
}

async fn a_token_whose_policy_may_not_read_the_secret_is_a_config_error() {
    let vault = vault_or_skip!(Transport::Http);
    vault
        .bao
        .put_policy(
            "elsewhere",
            r#"path "kv/data/bitwarden/other" { capabilities = ["read"] }"#,
        )
        .await;
    let token = vault.bao.create_token(&["elsewhere"], json!({})).await;
    let settings = settings_from_env(&vault.bao.url, &token, &[]);
    let message = config_error(open(&settings).await, &token);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultToken")
            && message.contains("permission denied")
            && message.contains("kv/data/bitwarden/key-connector"),
        "{message}"
    );
}

async fn a_missing_secret_is_a_config_error_naming_path_and_mount() {
    let vault = vault_or_skip!(Transport::Http);
    // The root token may read anything, so Vault's 404 is the secret's absence.
    let settings = settings_from_env(
        &vault.bao.url,
        &vault.bao.root_token,
        &[("vaultSecretPath", "bitwarden/other")],
    );
    let message = config_error(open(&settings).await, &vault.bao.root_token);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultSecretPath")
            && message.contains("vaultSecretMountPoint")
            && message.contains("bitwarden/other"),
        "{message}"
    );
    let no_mount = settings_from_env(
        &vault.bao.url,
        &vault.bao.root_token,
        &[("vaultSecretMountPoint", "not-mounted")],
    );
    let message = config_error(open(&no_mount).await, &vault.bao.root_token);
    assert!(
        message.contains("vaultSecretMountPoint") && message.contains("not-mounted"),
        "{message}"
    );
}

async fn a_deleted_latest_version_is_named_as_deleted_and_a_new_version_is_read() {
    let vault = vault_or_skip!(Transport::Http);
    vault
        .bao
        .call(Method::DELETE, &format!("{MOUNT}/data/{SECRET_PATH}"), None)
        .await;
    let message = config_error(open(&vault.settings(&[])).await, &vault.token);
    assert!(
        message.contains("latest version (1)") && message.contains("deleted"),
        "{message}"
    );
    assert!(!message.contains("vaultSecretPath"), "{message}");

    // A new version is what the next read gets.
    let version = vault
        .bao
        .put_secret(MOUNT, SECRET_PATH, secret_data())
        .await;
    assert_eq!(version, 2);
    assert!(open(&vault.settings(&[])).await.is_ok());

    // Destroyed for good: said as such.
    vault
        .bao
        .call(
            Method::POST,
            &format!("{MOUNT}/destroy/{SECRET_PATH}"),
            Some(json!({ "versions": [2] })),
        )
        .await;
    let message = config_error(open(&vault.settings(&[])).await, &vault.token);
    assert!(
        message.contains("latest version (2)") && message.contains("destroyed"),
        "{message}"
    );
}

async fn a_new_version_holding_another_certificate_stops_start_up_instead_of_replacing_keys() {
    let vault = vault_or_skip!(Transport::Http);
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            rsa_key: Some(vault.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    let data_dir = app.shutdown().await;

    // Someone writes another certificate as the secret's latest version.
    let other = generate_self_signed_pfx(2048, "another", Some(PFX_PASSWORD)).unwrap();
    vault
        .bao
        .put_secret(
            MOUNT,
            SECRET_PATH,
            json!({ DATA_KEY: base64::engine::general_purpose::STANDARD.encode(other) }),
        )
        .await;
    let refused = crate::support::try_spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&data_dir)),
            rsa_key: Some(vault.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    let error = match refused {
        Ok(_) => panic!("another certificate must not open the database"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("unwrap"), "{error}");

    // Writing the right certificate back as a newer version opens it with every key.
    vault
        .bao
        .put_secret(MOUNT, SECRET_PATH, secret_data())
        .await;
    let app = spawn_app_with(
        idp,
        AppOptions {
            data_dir: Some(data_dir),
            rsa_key: Some(vault.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.read_key(&token).await, Ok(key));
}

async fn a_missing_data_key_is_a_config_error_listing_the_keys_there() {
    let vault = vault_or_skip!(Transport::Http);
    let message = config_error(
        open(&vault.settings(&[("vaultSecretDataKey", "pfx")])).await,
        &vault.token,
    );
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultSecretDataKey"),
        "{message}"
    );
    assert!(message.contains("certificate, note"), "{message}");
}

async fn a_value_that_is_not_a_base64_pfx_is_a_config_error() {
    let vault = vault_or_skip!(Transport::Http);
    let bao = &vault.bao;
    bao.put_secret(
        MOUNT,
        SECRET_PATH,
        json!({ DATA_KEY: "not base64 at all!" }),
    )
    .await;
    let message = config_error(open(&vault.settings(&[])).await, &vault.token);
    assert!(message.contains("not base64"), "{message}");

    bao.put_secret(MOUNT, SECRET_PATH, json!({ DATA_KEY: "aGVsbG8=" }))
        .await;
    let message = config_error(open(&vault.settings(&[])).await, &vault.token);
    assert!(message.contains("not a PKCS#12"), "{message}");
}

async fn a_wrong_pfx_password_is_a_config_error_naming_the_password_setting() {
    let vault = vault_or_skip!(Transport::Http);
    let settings = vault.settings(&[("vaultSecretFilePassword", "not the password")]);
    let message = config_error(open(&settings).await, &vault.token);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultSecretFilePassword"),
        "{message}"
    );
    assert!(!message.contains("not the password"), "{message}");
}

async fn an_unreachable_vault_is_unavailable_within_bounded_time() {
    let port = crate::support::binary::free_port();
    let settings = settings_from_env(&format!("http://127.0.0.1:{port}"), "s.token", &[]);
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&settings))
        .await
        .expect("an answer within 10 s");
    match opened {
        Err(KeyProviderError::Unavailable { message, .. }) => {
            assert!(message.contains("Vault"), "{message}");
            assert!(!message.contains("s.token"), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("nothing listens there"),
    }
}

/// A real server cannot be made to accept a connection and never answer; a socket nobody
/// reads plays that fault (a hung server behind a load balancer).
async fn a_vault_that_never_answers_times_out_as_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open_connections = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open_connections.push(socket);
        }
    });
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        open(&settings_from_env(&url, "s.token", &[])),
    )
    .await
    .expect("timed out by the service within 20 s");
    hold.abort();
    assert!(
        matches!(result, Err(KeyProviderError::Unavailable { .. })),
        "{:?}",
        result.err()
    );
}

async fn a_sealed_vault_is_unavailable_not_a_config_error() {
    let vault = vault_or_skip!(Transport::Http);
    vault.bao.call(Method::PUT, "sys/seal", None).await;
    match open(&vault.settings(&[])).await {
        Err(KeyProviderError::Unavailable { message, .. }) => {
            assert!(message.contains("sealed"), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("a sealed Vault serves nothing"),
    }
}

async fn a_vault_that_comes_up_late_is_waited_for_at_start_up() {
    let vault = vault_or_skip!(Transport::Http);
    let upstream = format!("127.0.0.1:{}", vault.bao.port()).parse().unwrap();
    start_up_waits_for_the_key_service(upstream, |url| vault.settings(&[("vaultServerUri", url)]))
        .await;
}

async fn keys_are_served_while_vault_restarts_and_a_restart_of_the_service_reads_it_again() {
    let mut vault = vault_or_skip!(Transport::Http);
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            rsa_key: Some(vault.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    let first = app.token_for(Uuid::new_v4());
    let first_key = random_key();
    assert_eq!(app.post_key(&first, &first_key).await.status(), 200);

    // Vault down: the certificate was read at start-up, so keys are still read and written.
    vault.bao.stop();
    let second = app.token_for(Uuid::new_v4());
    let second_key = random_key();
    assert_eq!(app.post_key(&second, &second_key).await.status(), 200);
    assert_eq!(app.read_key(&first).await, Ok(first_key.clone()));

    // Vault back (the same storage, unsealed again); the service's next start reads it.
    vault.bao.start_again().await;
    let data_dir = app.shutdown().await;
    let app = spawn_app_with(
        idp,
        AppOptions {
            data_dir: Some(data_dir),
            rsa_key: Some(vault.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.read_key(&first).await, Ok(first_key));
    assert_eq!(app.read_key(&second).await, Ok(second_key));
}

/// Vault over HTTPS under a private CA, reached by the real binary.
async fn an_https_vault_under_a_private_ca_is_trusted_through_ssl_cert_file() {
    let vault = vault_or_skip!(Transport::Https);
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let command_for = |port: u16| {
        let mut command =
            crate::support::binary::service_command(dir.path(), "sqlite", &idp.url, port);
        for (name, value) in [
            ("provider", "vault"),
            ("vaultServerUri", vault.bao.url.as_str()),
            ("vaultToken", vault.token.as_str()),
            ("vaultSecretMountPoint", MOUNT),
            ("vaultSecretPath", SECRET_PATH),
            ("vaultSecretDataKey", DATA_KEY),
            ("vaultSecretFilePassword", PFX_PASSWORD),
        ] {
            command.env(format!("keyConnectorSettings__certificate__{name}"), value);
        }
        command
    };
    crate::support::binary::a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
        dir.path(),
        vault.bao.ca_pem.as_deref().unwrap(),
        &idp,
        command_for,
    )
    .await;
}

async fn the_certificate_source_logs_in_with_approle_and_never_shows_its_ids() {
    let vault = vault_or_skip!(Transport::Http);
    let bao = &vault.bao;
    // The default mount exists but has no such role; the role is at a mount of its own
    // name, as operators often mount a second AppRole.
    bao.call(
        Method::POST,
        "sys/auth/approle",
        Some(json!({ "type": "approle" })),
    )
    .await;
    let (role_id, secret_id) = bao
        .app_role("services", &["key-connector"], json!({ "token_ttl": 60 }))
        .await;
    let (role_id, secret_id) = (role_id.as_str(), secret_id.as_str());
    let settings = vault.settings(&[
        ("vaultToken", ""),
        ("vaultAuthMethod", "approle"),
        ("vaultAuthMountPoint", "services"),
        ("vaultAppRoleRoleId", role_id),
        ("vaultAppRoleSecretId", secret_id),
    ]);
    assert!(!format!("{settings:?}").contains(secret_id));
    assert!(open(&settings).await.is_ok());

    // The default mount (`approle`) has no such role: the login is refused, naming the
    // settings to check and neither id.
    let at_default = vault.settings(&[
        ("vaultAuthMethod", "approle"),
        ("vaultAppRoleRoleId", role_id),
        ("vaultAppRoleSecretId", secret_id),
    ]);
    let message = config_error(open(&at_default).await, secret_id);
    assert!(
        message.contains("keyConnectorSettings__certificate__vaultAppRoleRoleId")
            && message.contains("keyConnectorSettings__certificate__vaultAuthMountPoint"),
        "{message}"
    );
    assert!(!message.contains(role_id), "{message}");
}

crate::tests! {
    current_thread: [
        a_vault_sourced_certificate_serves_user_keys,
        a_blank_mount_point_reads_from_the_secret_mount,
        a_token_vault_does_not_know_is_a_config_error_naming_the_token_setting,
        a_token_whose_policy_may_not_read_the_secret_is_a_config_error,
        a_missing_secret_is_a_config_error_naming_path_and_mount,
        a_deleted_latest_version_is_named_as_deleted_and_a_new_version_is_read,
        a_new_version_holding_another_certificate_stops_start_up_instead_of_replacing_keys,
        a_missing_data_key_is_a_config_error_listing_the_keys_there,
        a_value_that_is_not_a_base64_pfx_is_a_config_error,
        a_wrong_pfx_password_is_a_config_error_naming_the_password_setting,
        an_unreachable_vault_is_unavailable_within_bounded_time,
        a_vault_that_never_answers_times_out_as_unavailable,
        a_sealed_vault_is_unavailable_not_a_config_error,
        an_https_vault_under_a_private_ca_is_trusted_through_ssl_cert_file,
        the_certificate_source_logs_in_with_approle_and_never_shows_its_ids,
    ],
    multi_thread(2): [
        a_vault_that_comes_up_late_is_waited_for_at_start_up,
        keys_are_served_while_vault_restarts_and_a_restart_of_the_service_reads_it_again,
    ],
}
