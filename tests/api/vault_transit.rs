//! The `vaulttransit` key provider and the Vault logins (token, AppRole, Kubernetes) against a
//! real Vault: an OpenBao server per test, with the Transit engine, policies, namespaces and
//! auth methods set up through its own API. Kubernetes' side of a Kubernetes login (the
//! TokenReview API that Vault asks whether a service-account token is valid) is a
//! request-checking stand-in: no Kubernetes API server runs here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use key_connector::config::{ConfigSource, SettingsGroup};
use key_connector::keys::RsaKeySettings;
use key_connector::keys::vaulttransit::VaultTransitKeyProvider;
use key_connector::keys::{KeyProviderError, RsaKeyProvider};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::openbao_or_skip;
use crate::support::binary::{
    Service, free_port, run_to_end, service_command, stored_symmetric_key,
};
use crate::support::openbao::{OpenBao, Transport};
use crate::support::proxy::{Mode, Proxy, start_up_waits_for_the_key_service};
use crate::support::{AppOptions, LocalTlsStandIn, TestIdp, random_key, spawn_app_with};

const KEY: &str = "key-connector";
/// Encrypt, decrypt and read on the one key: all the provider needs.
const TRANSIT_POLICY: &str = r#"
path "transit/encrypt/key-connector" { capabilities = ["update"] }
path "transit/decrypt/key-connector" { capabilities = ["update"] }
path "transit/keys/key-connector" { capabilities = ["read"] }
"#;

/// OpenBao with Transit at `transit`, a key of `key_type` named [`KEY`], and a token whose
/// policy allows only what the provider needs.
struct Transit {
    bao: OpenBao,
    token: String,
}

impl Transit {
    async fn start(key_type: &str) -> Result<Self, String> {
        let bao = OpenBao::start(Transport::Http).await?;
        bao.call(
            Method::POST,
            "sys/mounts/transit",
            Some(json!({ "type": "transit" })),
        )
        .await;
        bao.call(
            Method::POST,
            &format!("transit/keys/{KEY}"),
            Some(json!({ "type": key_type })),
        )
        .await;
        bao.put_policy("kc-transit", TRANSIT_POLICY).await;
        let token = bao.create_token(&["kc-transit"], json!({})).await;
        Ok(Self { bao, token })
    }

    /// The provider's settings with this server and token, as an operator writes them.
    fn settings(&self, overrides: &[(&str, &str)]) -> RsaKeySettings {
        let mut pairs = vec![
            ("vaultServerUri", self.bao.url.clone()),
            ("vaultToken", self.token.clone()),
            ("vaultTransitKeyName", KEY.to_owned()),
        ];
        for (name, value) in overrides {
            pairs.retain(|(n, _)| n != name);
            pairs.push((name, value.to_string()));
        }
        settings_from_env(&pairs)
    }

    fn env(&self) -> Vec<(String, String)> {
        transit_env(&[
            ("vaultServerUri", self.bao.url.clone()),
            ("vaultToken", self.token.clone()),
            ("vaultTransitKeyName", KEY.to_owned()),
        ])
    }
}

macro_rules! transit_or_skip {
    ($key_type:expr) => {
        match Transit::start($key_type).await {
            Ok(transit) => transit,
            Err(reason) => crate::skip_or_fail!("{reason}"),
        }
    };
}

/// `keyConnectorSettings__rsaKey__*` for `pairs`, provider `vaulttransit`.
fn transit_env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![(
        "keyConnectorSettings__rsaKey__provider".to_owned(),
        "vaulttransit".to_owned(),
    )];
    for (name, value) in pairs {
        env.push((
            format!("keyConnectorSettings__rsaKey__{name}"),
            value.clone(),
        ));
    }
    env
}

fn settings_from_env(pairs: &[(&str, String)]) -> RsaKeySettings {
    let mut env: Vec<(String, String)> = vec![
        (
            "keyConnectorSettings__webVaultUri".into(),
            "https://vault.example.test".into(),
        ),
        (
            "keyConnectorSettings__identityServerUri".into(),
            "http://identity.example.test".into(),
        ),
        (
            "keyConnectorSettings__database__provider".into(),
            "json".into(),
        ),
        (
            "keyConnectorSettings__database__jsonFilePath".into(),
            "/nonexistent/data.json".into(),
        ),
    ];
    env.extend(transit_env(pairs));
    let loaded = key_connector::settings::load(&ConfigSource { file: None, env }).unwrap();
    assert!(matches!(
        loaded.settings.rsa_key,
        RsaKeySettings::VaultTransit(_)
    ));
    loaded.settings.rsa_key
}

async fn open(settings: &RsaKeySettings) -> Result<VaultTransitKeyProvider, KeyProviderError> {
    let RsaKeySettings::VaultTransit(settings) = settings else {
        unreachable!("a vaulttransit provider");
    };
    VaultTransitKeyProvider::open(settings, SettingsGroup::Main).await
}

fn config_error(result: Result<VaultTransitKeyProvider, KeyProviderError>, secret: &str) -> String {
    match result {
        Err(KeyProviderError::Config { message, .. }) => {
            assert!(!message.contains(secret), "a secret leaked: {message}");
            message
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("expected a configuration error, the provider opened"),
    }
}

async fn transit_keys_of_every_usable_type_wrap_and_unwrap_inside_vault() {
    for key_type in ["rsa-2048", "rsa-3072", "rsa-4096", "aes256-gcm96"] {
        let transit = transit_or_skip!(key_type);
        let provider = open(&transit.settings(&[])).await.unwrap();
        let symmetric_key = [7u8; 32];
        let wrapped = provider.wrap_symmetric_key(&symmetric_key).await.unwrap();
        let text = String::from_utf8(wrapped.clone()).unwrap();
        assert!(text.starts_with("vault:v1:"), "{key_type}: {text}");
        assert_eq!(
            provider
                .unwrap_symmetric_key(&wrapped)
                .await
                .unwrap()
                .as_slice(),
            symmetric_key
        );
        let described = provider.describe();
        assert!(
            described.contains(key_type)
                && described.contains("not exportable")
                && described.contains("token login"),
            "{described}"
        );
        assert!(!described.contains(&transit.token), "{described}");
        provider.check_health().await.unwrap();
    }
}

async fn a_key_of_a_type_that_cannot_wrap_is_refused_naming_it() {
    let transit = transit_or_skip!("ecdsa-p256");
    let message = config_error(open(&transit.settings(&[])).await, &transit.token);
    assert!(
        message.contains("ecdsa-p256")
            && message.contains("keyConnectorSettings__rsaKey__vaultTransitKeyName"),
        "{message}"
    );
}

async fn the_service_keeps_user_keys_under_a_transit_wrapped_symmetric_key() {
    let transit = transit_or_skip!("rsa-2048");
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            rsa_key: Some(transit.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    let data_dir = app.shutdown().await;
    let app = spawn_app_with(
        idp,
        AppOptions {
            data_dir: Some(data_dir),
            rsa_key: Some(transit.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.read_key(&token).await, Ok(key));
}

async fn a_key_rotated_inside_vault_still_unwraps_what_older_versions_wrapped() {
    let transit = transit_or_skip!("rsa-2048");
    let provider = open(&transit.settings(&[])).await.unwrap();
    let old_wrap = provider.wrap_symmetric_key(&[1u8; 32]).await.unwrap();
    transit
        .bao
        .call(Method::POST, &format!("transit/keys/{KEY}/rotate"), None)
        .await;
    let provider = open(&transit.settings(&[])).await.unwrap();
    assert!(provider.describe().contains("latest version 2"));
    let new_wrap = provider.wrap_symmetric_key(&[2u8; 32]).await.unwrap();
    assert!(new_wrap.starts_with(b"vault:v2:"));
    assert_eq!(
        provider
            .unwrap_symmetric_key(&old_wrap)
            .await
            .unwrap()
            .as_slice(),
        [1u8; 32]
    );
    assert_eq!(
        provider
            .unwrap_symmetric_key(&new_wrap)
            .await
            .unwrap()
            .as_slice(),
        [2u8; 32]
    );
}

async fn a_wrap_of_another_provider_or_another_key_is_unwrap_failed() {
    let transit = transit_or_skip!("rsa-2048");
    let provider = open(&transit.settings(&[])).await.unwrap();
    let foreign = provider.unwrap_symmetric_key(&[0x30; 256]).await;
    assert!(
        matches!(&foreign, Err(KeyProviderError::UnwrapFailed { message, .. }) if message.contains("another RSA key provider")),
        "{:?}",
        foreign.err()
    );
    // Another Transit key's ciphertext: Vault cannot decrypt it with this key.
    transit
        .bao
        .call(
            Method::POST,
            "transit/keys/other",
            Some(json!({ "type": "rsa-2048" })),
        )
        .await;
    let other = transit
        .bao
        .call(
            Method::POST,
            "transit/encrypt/other",
            Some(json!({ "plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" })),
        )
        .await;
    let other_wrap = other["data"]["ciphertext"].as_str().unwrap().as_bytes();
    let result = provider.unwrap_symmetric_key(other_wrap).await;
    assert!(
        matches!(result, Err(KeyProviderError::UnwrapFailed { .. })),
        "{:?}",
        result.err()
    );
}

async fn a_policy_without_decrypt_stops_opening_naming_the_token_setting() {
    let transit = transit_or_skip!("rsa-2048");
    transit
        .bao
        .put_policy(
            "encrypt-only",
            r#"
path "transit/encrypt/key-connector" { capabilities = ["update"] }
path "transit/keys/key-connector" { capabilities = ["read"] }
"#,
        )
        .await;
    let token = transit.bao.create_token(&["encrypt-only"], json!({})).await;
    let message = config_error(
        open(&transit.settings(&[("vaultToken", &token)])).await,
        &token,
    );
    assert!(
        message.contains("decrypt")
            && message.contains("keyConnectorSettings__rsaKey__vaultToken")
            && message.contains("transit/decrypt/key-connector"),
        "{message}"
    );
}

async fn an_unknown_key_or_mount_is_a_config_error_naming_the_setting() {
    let transit = transit_or_skip!("rsa-2048");
    let root = transit.bao.root_token.clone();
    let message = config_error(
        open(&transit.settings(&[("vaultToken", &root), ("vaultTransitKeyName", "absent")])).await,
        &root,
    );
    assert!(
        message.contains("keyConnectorSettings__rsaKey__vaultTransitKeyName")
            && message.contains("absent"),
        "{message}"
    );
    let message = config_error(
        open(&transit.settings(&[
            ("vaultToken", &root),
            ("vaultTransitMountPoint", "elsewhere"),
        ]))
        .await,
        &root,
    );
    assert!(
        message.contains("keyConnectorSettings__rsaKey__vaultTransitMountPoint"),
        "{message}"
    );
}

/// AppRole at its default mount for the provider: tokens with the Transit policy, of `ttl`
/// and `max_ttl` seconds; its role id and a secret id.
async fn app_role(bao: &OpenBao, ttl: u64, max_ttl: u64) -> (String, String) {
    bao.app_role(
        "approle",
        &["kc-transit"],
        json!({ "token_ttl": ttl, "token_max_ttl": max_ttl }),
    )
    .await
}

async fn an_approle_login_is_renewed_and_replaced_as_its_tokens_expire() {
    let transit = transit_or_skip!("rsa-2048");
    let bao = &transit.bao;
    // Tokens of 3 s, renewable up to 6 s from login: within seconds the provider must renew
    // one and then log in again.
    let (role_id, secret_id) = app_role(bao, 3, 6).await;
    let settings = transit.settings(&[
        ("vaultAuthMethod", "approle"),
        ("vaultToken", ""),
        ("vaultAppRoleRoleId", &role_id),
        ("vaultAppRoleSecretId", &secret_id),
    ]);
    let provider = open(&settings).await.unwrap();
    let wrapped = provider.wrap_symmetric_key(&[9u8; 32]).await.unwrap();
    assert!(provider.describe().contains("approle login"));

    // Vault is called now and then, as /health and admin commands do; every call succeeds
    // while the tokens underneath are renewed and replaced.
    let logins = || bao.audited_requests("update", "auth/approle/login");
    let renewals = || bao.audited_requests("update", "auth/token/renew-self");
    tokio::time::timeout(Duration::from_secs(60), async {
        while logins() < 2 || renewals() < 1 {
            provider.check_health().await.unwrap();
            assert_eq!(
                provider
                    .unwrap_symmetric_key(&wrapped)
                    .await
                    .unwrap()
                    .as_slice(),
                [9u8; 32]
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "within a minute: {} logins and {} renewals",
            logins(),
            renewals()
        )
    });
    let log = std::fs::read_to_string(bao.dir().join("audit.log")).unwrap();
    assert!(
        !log.contains(&secret_id),
        "Vault's audit log hashes secrets"
    );
}

async fn a_revoked_approle_token_is_replaced_by_a_new_login() {
    let transit = transit_or_skip!("rsa-2048");
    let bao = &transit.bao;
    let (role_id, secret_id) = app_role(bao, 3600, 7200).await;
    let provider = open(&transit.settings(&[
        ("vaultAuthMethod", "approle"),
        ("vaultAppRoleRoleId", &role_id),
        ("vaultAppRoleSecretId", &secret_id),
    ]))
    .await
    .unwrap();
    assert_eq!(bao.audited_requests("update", "auth/approle/login"), 1);
    // Every token AppRole issued is revoked, as an operator does after a leak.
    bao.call(Method::PUT, "sys/leases/revoke-prefix/auth/approle", None)
        .await;
    provider.check_health().await.unwrap();
    assert_eq!(bao.audited_requests("update", "auth/approle/login"), 2);
}

async fn a_wrong_secret_id_stops_opening_naming_the_approle_settings() {
    let transit = transit_or_skip!("rsa-2048");
    let (role_id, _) = app_role(&transit.bao, 60, 120).await;
    let message = config_error(
        open(&transit.settings(&[
            ("vaultAuthMethod", "approle"),
            ("vaultAppRoleRoleId", &role_id),
            ("vaultAppRoleSecretId", "not-the-secret-id"),
        ]))
        .await,
        "not-the-secret-id",
    );
    assert!(
        message.contains("keyConnectorSettings__rsaKey__vaultAppRoleSecretId")
            && message.contains("approle"),
        "{message}"
    );
    assert!(!message.contains(&role_id), "{message}");
}

async fn a_key_in_a_namespace_is_reached_with_the_namespace_setting() {
    let bao = openbao_or_skip!(Transport::Http);
    bao.call(Method::POST, "sys/namespaces/team-a", None).await;
    bao.call_in(
        "team-a",
        Method::POST,
        "sys/mounts/transit",
        Some(json!({ "type": "transit" })),
    )
    .await;
    bao.call_in(
        "team-a",
        Method::POST,
        &format!("transit/keys/{KEY}"),
        Some(json!({ "type": "rsa-2048" })),
    )
    .await;
    let pairs = |namespace: Option<&str>| {
        let mut pairs = vec![
            ("vaultServerUri", bao.url.clone()),
            ("vaultToken", bao.root_token.clone()),
            ("vaultTransitKeyName", KEY.to_owned()),
        ];
        if let Some(namespace) = namespace {
            pairs.push(("vaultNamespace", namespace.to_owned()));
        }
        pairs
    };
    let provider = open(&settings_from_env(&pairs(Some("team-a"))))
        .await
        .unwrap();
    assert!(provider.describe().contains("namespace `team-a`"));
    provider.wrap_symmetric_key(&[3u8; 32]).await.unwrap();
    // Outside the namespace there is no such key.
    let message = config_error(
        open(&settings_from_env(&pairs(None))).await,
        &bao.root_token,
    );
    assert!(message.contains("vaultTransitKeyName"), "{message}");
}

/// A Kubernetes API server's TokenReview, as Vault's Kubernetes auth method calls it: it
/// accepts exactly `jwt` as the service account `namespace/name`.
fn token_review_stand_in(
    jwt: String,
    namespace: &'static str,
    name: &'static str,
    seen: Arc<Mutex<Vec<Value>>>,
) -> axum::Router {
    axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        axum::routing::post(move |body: axum::Json<Value>| {
            let jwt = jwt.clone();
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(body.0.clone());
                let authenticated = body.0["spec"]["token"] == jwt.as_str();
                let status = if authenticated {
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{namespace}:{name}"),
                            "uid": "5f0a6c3e-9a51-4d7e-8c1b-2f3a4b5c6d7e",
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}")],
                        },
                        "audiences": ["https://kubernetes.default.svc"],
                    })
                } else {
                    json!({ "authenticated": false, "error": "invalid bearer token" })
                };
                (
                    StatusCode::CREATED,
                    axum::Json(json!({
                        "kind": "TokenReview",
                        "apiVersion": "authentication.k8s.io/v1",
                        "spec": body.0["spec"],
                        "status": status,
                    })),
                )
            }
        }),
    )
}

async fn a_kubernetes_login_through_vaults_kubernetes_auth_reaches_the_key() {
    let transit = transit_or_skip!("rsa-2048");
    let bao = &transit.bao;
    // The pod's service-account token: a signed JWT as Kubernetes issues them.
    let issuer = TestIdp::start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let jwt = issuer.issuer.mint(
        "https://kubernetes.default.svc",
        json!({
            "iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:bitwarden:key-connector",
            "aud": ["https://kubernetes.default.svc"], "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": { "namespace": "bitwarden", "serviceaccount": { "name": "key-connector", "uid": "5f0a6c3e-9a51-4d7e-8c1b-2f3a4b5c6d7e" } },
        }),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kubernetes = LocalTlsStandIn::serve(token_review_stand_in(
        jwt.clone(),
        "bitwarden",
        "key-connector",
        Arc::clone(&seen),
    ))
    .await;
    bao.call(
        Method::POST,
        "sys/auth/kubernetes",
        Some(json!({ "type": "kubernetes" })),
    )
    .await;
    bao.call(
        Method::POST,
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": kubernetes.url,
            "kubernetes_ca_cert": kubernetes.ca_pem,
            "token_reviewer_jwt": "reviewer-token",
            "disable_local_ca_jwt": true,
        })),
    )
    .await;
    bao.call(
        Method::POST,
        "auth/kubernetes/role/key-connector",
        Some(json!({
            "bound_service_account_names": ["key-connector"],
            "bound_service_account_namespaces": ["bitwarden"],
            "token_policies": ["kc-transit"],
            "token_ttl": 60,
        })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &jwt).unwrap();
    let token_path = token_file.display().to_string();
    let provider = open(&transit.settings(&[
        ("vaultAuthMethod", "kubernetes"),
        ("vaultKubernetesRole", "key-connector"),
        ("vaultKubernetesTokenPath", &token_path),
    ]))
    .await
    .unwrap();
    assert!(provider.describe().contains("kubernetes login"));
    let reviews = seen.lock().unwrap().clone();
    assert!(!reviews.is_empty());
    assert_eq!(reviews[0]["spec"]["token"], jwt.as_str());

    // A token of another service account is refused, naming the role setting.
    std::fs::write(&token_file, "not.a.token").unwrap();
    let message = config_error(
        open(&transit.settings(&[
            ("vaultAuthMethod", "kubernetes"),
            ("vaultKubernetesRole", "key-connector"),
            ("vaultKubernetesTokenPath", &token_path),
        ]))
        .await,
        "not.a.token",
    );
    assert!(
        message.contains("keyConnectorSettings__rsaKey__vaultKubernetesRole"),
        "{message}"
    );
}

async fn vault_cut_off_makes_health_503_while_keys_are_served_then_it_recovers() {
    let transit = transit_or_skip!("rsa-2048");
    let upstream = format!("127.0.0.1:{}", transit.bao.port()).parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let through_proxy = format!("http://{}", proxy.address);
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            rsa_key: Some(transit.settings(&[("vaultServerUri", &through_proxy)])),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    let health = || async {
        app.client
            .get(format!("{}/health", app.base_url))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(health().await, StatusCode::OK);

    proxy.set(Mode::Down);
    tokio::time::timeout(Duration::from_secs(30), async {
        while health().await != StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("/health turns 503 while Vault is cut off");
    // The symmetric key is in memory: keys are still read and written.
    assert_eq!(app.read_key(&token).await, Ok(key.clone()));
    let other = app.token_for(Uuid::new_v4());
    assert_eq!(app.post_key(&other, &random_key()).await.status(), 200);

    proxy.set(Mode::Forward);
    tokio::time::timeout(Duration::from_secs(30), async {
        while health().await != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("/health recovers without a restart");
}

async fn start_up_with_vault_down_waits_and_retries() {
    let transit = transit_or_skip!("rsa-2048");
    let upstream = format!("127.0.0.1:{}", transit.bao.port()).parse().unwrap();
    start_up_waits_for_the_key_service(upstream, |url| {
        transit.settings(&[("vaultServerUri", url)])
    })
    .await;
}

/// The operator's path: a database sealed under a PFX moves into Transit with
/// `rotate-rsa-key`, is served, checked and verified there, and moves back to a PFX, which
/// the official service can open again; every user key stays readable at each step.
async fn rotate_rsa_key_moves_a_database_into_transit_and_back_to_a_pfx() {
    let transit = transit_or_skip!("rsa-2048");
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |in_transit: bool| {
        let port = free_port();
        let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
        if in_transit {
            command.envs(transit.env());
        }
        Service::spawn(command, port).wait_ready()
    };
    let (token, key) = start(false).await.stores_and_serves_a_key(&idp).await;
    let pfx_wrap = stored_symmetric_key(dir.path());

    // PFX -> Transit.
    let rotate_to_transit = transit.env().into_iter().map(|(name, value)| {
        (
            name.replace(
                "keyConnectorSettings__rsaKey__",
                "keyConnectorSettings__rotateTo__rsaKey__",
            ),
            value,
        )
    });
    let mut rotate = service_command(dir.path(), "sqlite", &idp.url, free_port());
    rotate.arg("rotate-rsa-key").envs(rotate_to_transit);
    let (status, said) = run_to_end(rotate).await;
    assert!(status.success(), "{said}");
    assert!(stored_symmetric_key(dir.path()).starts_with(b"vault:v1:"));
    assert_eq!(start(true).await.key_of(&token).await.as_ref(), Ok(&key));

    // check-config names the key, its type and versions, that it stays in Vault, the login.
    let mut check = service_command(dir.path(), "sqlite", &idp.url, free_port());
    check.arg("check-config").envs(transit.env());
    let (status, said) = run_to_end(check).await;
    assert!(status.success(), "{said}");
    for expected in [
        "Vault Transit key `key-connector`",
        "rsa-2048",
        "latest version 1",
        "not exportable",
        "token login",
        "all checks passed",
    ] {
        assert!(said.contains(expected), "{expected}:\n{said}");
    }
    assert!(!said.contains(&transit.token), "{said}");

    // backup --verify decrypts every user key of a copy through Transit.
    let backup = dir.path().join("keys.backup");
    let mut take = service_command(dir.path(), "sqlite", &idp.url, free_port());
    take.envs(transit.env())
        .args(["backup", "--to"])
        .arg(&backup);
    let (status, said) = run_to_end(take).await;
    assert!(status.success(), "{said}");
    let mut verify = service_command(dir.path(), "sqlite", &idp.url, free_port());
    verify
        .envs(transit.env())
        .args(["backup", "--verify"])
        .arg(&backup);
    let (status, said) = run_to_end(verify).await;
    assert!(status.success(), "{said}");

    // Transit -> PFX: wrapped again by RSA-OAEP SHA-1 under the certificate.
    let mut rotate = service_command(dir.path(), "sqlite", &idp.url, free_port());
    rotate
        .arg("rotate-rsa-key")
        .envs(transit.env())
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
    let back = stored_symmetric_key(dir.path());
    assert!(!back.starts_with(b"vault:"));
    assert_ne!(back, pfx_wrap, "a fresh OAEP wrap");
    assert_eq!(start(false).await.key_of(&token).await, Ok(key));
}

/// Upstream's `transferTo` copies every user key into a database whose symmetric key Transit
/// wraps, and that database is served with the Transit key.
async fn transfer_to_copies_every_key_into_a_transit_wrapped_database() {
    use key_connector::config::DatabaseSettings;
    use key_connector::settings::{TransferTarget, TransferToSettings};
    let transit = transit_or_skip!("rsa-2048");
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            ..AppOptions::default()
        },
    )
    .await;
    let mut users = Vec::new();
    for _ in 0..5 {
        let user = Uuid::new_v4();
        let key = random_key();
        assert_eq!(app.post_key(&idp.token_for(user), &key).await.status(), 200);
        users.push((user, key));
    }
    app.shutdown().await;
    let target_file = dir.path().join("target.json");
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            transfer_to: Some(TransferToSettings {
                lockfile_path: Some(dir.path().join("transfer.lock")),
                target: Some(TransferTarget {
                    database: DatabaseSettings::Json {
                        path: target_file.clone(),
                    },
                    rsa_key: transit.settings(&[]),
                }),
            }),
            ..AppOptions::default()
        },
    )
    .await;
    app.shutdown().await;
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(&target_file).unwrap()).unwrap();
    let wrapped = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        document["symmetricKey"].as_str().unwrap(),
    )
    .unwrap();
    assert!(wrapped.starts_with(b"vault:v1:"));
    let target = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            database: Some(DatabaseSettings::Json { path: target_file }),
            rsa_key: Some(transit.settings(&[])),
            ..AppOptions::default()
        },
    )
    .await;
    for (user, key) in &users {
        assert_eq!(
            target.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key)
        );
    }
}

crate::tests! {
    current_thread: [
        transit_keys_of_every_usable_type_wrap_and_unwrap_inside_vault,
        a_key_of_a_type_that_cannot_wrap_is_refused_naming_it,
        the_service_keeps_user_keys_under_a_transit_wrapped_symmetric_key,
        a_key_rotated_inside_vault_still_unwraps_what_older_versions_wrapped,
        a_wrap_of_another_provider_or_another_key_is_unwrap_failed,
        a_policy_without_decrypt_stops_opening_naming_the_token_setting,
        an_unknown_key_or_mount_is_a_config_error_naming_the_setting,
        an_approle_login_is_renewed_and_replaced_as_its_tokens_expire,
        a_revoked_approle_token_is_replaced_by_a_new_login,
        a_wrong_secret_id_stops_opening_naming_the_approle_settings,
        a_key_in_a_namespace_is_reached_with_the_namespace_setting,
        a_kubernetes_login_through_vaults_kubernetes_auth_reaches_the_key,
        rotate_rsa_key_moves_a_database_into_transit_and_back_to_a_pfx,
    ],
    multi_thread(2): [
        vault_cut_off_makes_health_503_while_keys_are_served_then_it_recovers,
        start_up_with_vault_down_waits_and_retries,
        transfer_to_copies_every_key_into_a_transit_wrapped_database,
    ],
}
