//! The break-glass recovery key: a database whose RSA key is lost (its PFX deleted, its HSM
//! key destroyed, its KMS key disabled) is recovered with the offline recovery PFX onto a
//! new RSA key, and the service then serves every key. Also: the wrap is written at first
//! start, kept current by both rotations, a mismatching recovery key makes start-up warn
//! (naming both fingerprints) and is replaced only on request, and bad settings give
//! precise errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::process::Command;

use key_connector::config::{DatabaseSettings, RecoveryKeySettings, SettingsGroup};
use key_connector::crypto::recovery::{RecoveryPrivateKey, RecoveryPublicKey, fingerprint};
use key_connector::keys::certificate::CertificateSettings;
use key_connector::keys::{RsaKeyProvider, RsaKeySettings, open_rsa_key_provider};
use key_connector::operations::break_glass::{RecoverReport, recover};
use key_connector::settings::Settings;
use key_connector::startup::{Application, StartupError};
use key_connector::store::{StoredRecoveryWrap, open_store};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::support::binary::{Service, free_port, run_to_end, service_command};
use crate::support::{StoreKind, TestIdp, loopback_port_zero, random_key, settings_for};

const RECOVERY_PASSWORD: &str = "offline-secret";

/// A recovery key pair in `dir`: the offline PFX and the public key the service is given.
struct RecoveryPair {
    pfx: PathBuf,
    public_pem: PathBuf,
    fingerprint: String,
}

impl RecoveryPair {
    fn new(dir: &Path, name: &str, bits: usize) -> Self {
        let pfx_bytes = key_connector::pkcs12::generate_self_signed_pfx(
            bits,
            "recovery",
            Some(RECOVERY_PASSWORD),
        )
        .unwrap();
        let spki = key_connector::pkcs12::rsa_public_key_spki(&pfx_bytes, Some(RECOVERY_PASSWORD))
            .unwrap();
        let pfx = dir.join(format!("{name}.pfx"));
        std::fs::write(&pfx, &pfx_bytes).unwrap();
        let public_pem = dir.join(format!("{name}.pem"));
        std::fs::write(&public_pem, pem("PUBLIC KEY", &spki)).unwrap();
        Self {
            pfx,
            public_pem,
            fingerprint: fingerprint(&spki),
        }
    }

    fn settings(&self) -> RecoveryKeySettings {
        RecoveryKeySettings {
            public_key_path: self.public_pem.clone(),
        }
    }

    fn private(&self) -> RecoveryPrivateKey {
        RecoveryPrivateKey::from_pfx(&std::fs::read(&self.pfx).unwrap(), Some(RECOVERY_PASSWORD))
            .unwrap()
    }

    fn public(&self) -> RecoveryPublicKey {
        RecoveryPublicKey::load(&self.public_pem).unwrap()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A certificate RSA key of its own in `dir/name.pfx`.
fn certificate(dir: &Path, name: &str) -> RsaKeySettings {
    let path = dir.join(format!("{name}.pfx"));
    let bytes = key_connector::pkcs12::generate_self_signed_pfx(2048, name, Some("pw")).unwrap();
    std::fs::write(&path, bytes).unwrap();
    RsaKeySettings::Certificate(CertificateSettings::Filesystem {
        path,
        password: Some("pw".to_owned().into()),
    })
}

/// The service's settings for `store` in `dir`, with `recovery` as its recovery key.
fn settings_with_recovery(
    store: StoreKind,
    dir: &Path,
    idp: &TestIdp,
    recovery: &RecoveryPair,
) -> Settings {
    let mut settings = settings_for(store, dir, &idp.url);
    settings.recovery_key = Some(recovery.settings());
    settings
}

/// The real service with its sqlite store in `dir`, listening on `port`, given
/// `recovery`'s public key.
fn service_with_recovery(dir: &Path, idp: &TestIdp, recovery: &RecoveryPair, port: u16) -> Command {
    let mut command = service_command(dir, "sqlite", &idp.url, port);
    command.env(
        "keyConnectorSettings__recoveryKey__publicKeyPath",
        &recovery.public_pem,
    );
    command
}

/// The recovery wraps stored in `database`.
async fn recovery_wraps_in(database: &DatabaseSettings) -> Vec<StoredRecoveryWrap> {
    open_store(database)
        .await
        .unwrap()
        .read_recovery_wraps()
        .await
        .unwrap()
}

/// The service, built in-process with `provider`, serving until stopped.
struct Served {
    base: String,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(
        settings: &Settings,
        provider: Arc<dyn RsaKeyProvider>,
    ) -> Result<Self, StartupError> {
        let store = open_store(&settings.database).await.unwrap();
        let app = Application::build_with(store, provider, settings, &loopback_port_zero()).await?;
        let base = format!("http://{}", app.local_addrs()[0]);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self { base, stop, server })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
    }

    /// Serves with `settings` and `provider` just long enough to store `count` new keys,
    /// returned with their users; `provider` is dropped with the service.
    async fn stored_keys(
        settings: &Settings,
        provider: Arc<dyn RsaKeyProvider>,
        idp: &TestIdp,
        count: usize,
    ) -> Vec<(Uuid, String)> {
        let served = Self::start(settings, provider).await.unwrap();
        let users = served.store_keys(idp, count).await;
        served.stop().await;
        users
    }

    async fn store_keys(&self, idp: &TestIdp, count: usize) -> Vec<(Uuid, String)> {
        let client = reqwest::Client::new();
        let mut users = Vec::new();
        for _ in 0..count {
            let (user, key) = (Uuid::new_v4(), random_key());
            let response = client
                .post(format!("{}/user-keys", self.base))
                .bearer_auth(idp.token_for(user))
                .json(&serde_json::json!({ "key": key }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            users.push((user, key));
        }
        users
    }

    async fn serves_every_key(&self, idp: &TestIdp, users: &[(Uuid, String)]) {
        let client = reqwest::Client::new();
        for (user, key) in users {
            assert_eq!(
                crate::support::binary::read_key(&client, &self.base, &idp.token_for(*user))
                    .await
                    .as_ref(),
                Ok(key),
                "user {user}"
            );
        }
    }
}

async fn provider_for(settings: &RsaKeySettings) -> Arc<dyn RsaKeyProvider> {
    open_rsa_key_provider(settings, SettingsGroup::Main)
        .await
        .expect("the RSA key opens")
}

/// Recovers `settings.database` with `recovery` onto `new_key` (`context` says at which
/// step, if it fails), which then becomes the configured RSA key; the service started
/// with it serves every key of `users`.
async fn recover_onto(
    settings: &mut Settings,
    recovery: &RecoveryPair,
    new_key: RsaKeySettings,
    idp: &TestIdp,
    users: &[(Uuid, String)],
    context: &str,
) -> RecoverReport {
    let report = recover(
        &settings.database,
        &recovery.private(),
        &new_key,
        SettingsGroup::RotateTo,
        false,
    )
    .await
    .expect(context);
    settings.rsa_key = new_key;
    let served = Served::start(settings, provider_for(&settings.rsa_key).await)
        .await
        .expect("starts with the new RSA key");
    served.serves_every_key(idp, users).await;
    served.stop().await;
    report
}

/// Stores keys under `rsa_key` with a recovery key, loses the RSA key with `lose`, recovers
/// onto a new certificate and serves every key with it.
async fn recovered_after_losing<L, F>(
    store: StoreKind,
    database: Option<DatabaseSettings>,
    dir: &Path,
    provider: Arc<dyn RsaKeyProvider>,
    lose: L,
) where
    L: FnOnce() -> F,
    F: std::future::Future<Output = ()>,
{
    let idp = TestIdp::start().await;
    let recovery = RecoveryPair::new(dir, "recovery", 3072);
    let mut settings = settings_with_recovery(store, dir, &idp, &recovery);
    if let Some(database) = database {
        settings.database = database;
    }

    let users = Served::stored_keys(&settings, provider, &idp, 6).await;
    let wraps = recovery_wraps_in(&settings.database).await;
    assert_eq!(
        wraps.len(),
        1,
        "written with the symmetric key at first start"
    );
    assert_eq!(wraps[0].fingerprint, recovery.fingerprint);

    lose().await;

    let new_key = certificate(dir, "new-rsa-key");
    let report = recover_onto(&mut settings, &recovery, new_key, &idp, &users, "recovers").await;
    assert_eq!(report.user_keys, 6);
    assert_eq!(report.fingerprint, recovery.fingerprint);
    assert!(!report.pending_recovered);
}

/// [`recovered_after_losing`] with `store`'s file in a directory of its own.
async fn recovered_in_a_new_directory<L, F>(
    store: StoreKind,
    provider: Arc<dyn RsaKeyProvider>,
    lose: L,
) where
    L: FnOnce() -> F,
    F: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    recovered_after_losing(store, None, dir.path(), provider, lose).await;
}

/// [`recovered_after_losing`] with a certificate lost by deleting its PFX, in a directory of
/// its own (returned) holding `store`'s file, or with `database` when given.
async fn recovered_after_deleting_a_certificate(
    store: StoreKind,
    database: Option<DatabaseSettings>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lost = certificate(dir.path(), "lost");
    let lost_path = dir.path().join("lost.pfx");
    recovered_after_losing(
        store,
        database,
        dir.path(),
        provider_for(&lost).await,
        || async {
            std::fs::remove_file(&lost_path).unwrap();
        },
    )
    .await;
    dir
}

async fn a_lost_certificate_is_recovered_onto_a_new_one_with_sqlite() {
    recovered_after_deleting_a_certificate(StoreKind::Sqlite, None).await;
}

async fn a_lost_certificate_is_recovered_onto_a_new_one_with_json() {
    let dir = recovered_after_deleting_a_certificate(StoreKind::Json, None).await;
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("data.json")).unwrap()).unwrap();
    assert!(document["recoveryKeyWraps"][0]["wrappedKey"].is_string());
    assert!(document["symmetricKey"].is_string());
}

/// The SQL servers keep the wraps in a table of their own, created on the first write;
/// the database then still opens as upstream's schema (the service restarts on it).
async fn a_lost_certificate_is_recovered_on(server: crate::support::databases::Engine) {
    let database = crate::database_or_skip!(server);
    recovered_after_deleting_a_certificate(StoreKind::Sqlite, Some(database.settings())).await;
}

async fn a_lost_certificate_is_recovered_onto_a_new_one_with_postgresql() {
    a_lost_certificate_is_recovered_on(crate::support::databases::Engine::PostgreSql).await;
}

async fn a_lost_certificate_is_recovered_onto_a_new_one_with_mysql() {
    a_lost_certificate_is_recovered_on(crate::support::databases::Engine::MySql).await;
}

async fn a_lost_certificate_is_recovered_onto_a_new_one_with_sql_server() {
    a_lost_certificate_is_recovered_on(crate::support::databases::Engine::SqlServer).await;
}

#[cfg(feature = "awskms")]
async fn a_disabled_aws_kms_key_is_recovered_onto_a_certificate() {
    use key_connector::keys::awskms::AwsKmsKeyProvider;
    let Some(moto) = crate::awskms::Moto::start() else {
        crate::skip_or_fail!(
            "moto is not installed (pip install 'moto[server]'): AWS KMS recovery skipped"
        );
    };
    let key_id = moto.create_key(aws_sdk_kms::types::KeySpec::Rsa2048).await;
    let provider = AwsKmsKeyProvider::open_with(
        &crate::awskms::settings(&key_id, false),
        SettingsGroup::Main,
        &moto.url,
    )
    .await
    .unwrap();
    let client = moto.client();
    recovered_in_a_new_directory(StoreKind::Sqlite, Arc::new(provider), || async {
        client.disable_key().key_id(&key_id).send().await.unwrap();
        let lost = AwsKmsKeyProvider::open_with(
            &crate::awskms::settings(&key_id, false),
            SettingsGroup::Main,
            &moto.url,
        )
        .await;
        let unwrapped = match lost {
            Ok(provider) => provider.unwrap_symmetric_key(&[1u8; 64]).await.is_ok(),
            Err(_) => false,
        };
        assert!(!unwrapped, "the disabled key unwraps nothing");
    })
    .await;
}

async fn a_deleted_vault_transit_key_is_recovered_onto_a_certificate() {
    use crate::support::openbao::{OpenBao, Transport};
    use reqwest::Method;
    let bao = match OpenBao::start(Transport::Http).await {
        Ok(bao) => bao,
        Err(reason) => crate::skip_or_fail!("{reason}"),
    };
    bao.call(
        Method::POST,
        "sys/mounts/transit",
        Some(serde_json::json!({ "type": "transit" })),
    )
    .await;
    bao.call(
        Method::POST,
        "transit/keys/key-connector",
        Some(serde_json::json!({ "type": "rsa-2048" })),
    )
    .await;
    let env = [
        (
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test".to_owned(),
        ),
        (
            "keyConnectorSettings__identityServerUri",
            "http://identity.example.test".to_owned(),
        ),
        (
            "keyConnectorSettings__database__provider",
            "json".to_owned(),
        ),
        (
            "keyConnectorSettings__database__jsonFilePath",
            "/nonexistent/data.json".to_owned(),
        ),
        (
            "keyConnectorSettings__rsaKey__provider",
            "vaulttransit".to_owned(),
        ),
        (
            "keyConnectorSettings__rsaKey__vaultServerUri",
            bao.url.clone(),
        ),
        (
            "keyConnectorSettings__rsaKey__vaultToken",
            bao.root_token.clone(),
        ),
        (
            "keyConnectorSettings__rsaKey__vaultTransitKeyName",
            "key-connector".to_owned(),
        ),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let settings = key_connector::settings::load(&key_connector::config::ConfigSource {
        file: None,
        env: env.to_vec(),
    })
    .unwrap()
    .settings
    .rsa_key;
    recovered_in_a_new_directory(StoreKind::Sqlite, provider_for(&settings).await, || async {
        // Deleted in Vault, as a mistaken cleanup would.
        bao.call(
            Method::POST,
            "transit/keys/key-connector/config",
            Some(serde_json::json!({ "deletion_allowed": true })),
        )
        .await;
        bao.call(Method::DELETE, "transit/keys/key-connector", None)
            .await;
        assert!(
            open_rsa_key_provider(&settings, SettingsGroup::Main)
                .await
                .is_err(),
            "the Transit key is gone"
        );
    })
    .await;
}

#[cfg(feature = "gcpkms")]
async fn a_destroyed_google_cloud_kms_key_is_recovered_onto_a_certificate() {
    use key_connector::keys::gcpkms::GcpKmsKeyProvider;
    let kms = crate::gcpkms::KmsStandIn::start("RSA_DECRYPT_OAEP_2048_SHA256").await;
    let provider = GcpKmsKeyProvider::open_with(
        &crate::gcpkms::settings(),
        SettingsGroup::Main,
        kms.connection(),
    )
    .await
    .unwrap();
    recovered_in_a_new_directory(StoreKind::Sqlite, Arc::new(provider), || async {
        // The key version is destroyed with the stand-in that held it.
        drop(kms);
    })
    .await;
}

#[cfg(feature = "azurekv")]
async fn a_deleted_azure_key_vault_key_is_recovered_onto_a_certificate() {
    let azure = crate::azurekv::AzureStandIn::start().await;
    let provider = azure.open_key().await.unwrap();
    recovered_in_a_new_directory(StoreKind::Sqlite, Arc::new(provider), || async {
        // The vault, and the key in it, are gone with the stand-in.
        drop(azure);
    })
    .await;
}

async fn a_certificate_lost_with_its_vault_secret_is_recovered_onto_a_new_one() {
    use crate::support::openbao::Transport;
    let vault = match crate::vault::VaultWithCertificate::start(Transport::Http).await {
        Ok(vault) => vault,
        Err(reason) => crate::skip_or_fail!("{reason}"),
    };
    let in_vault = vault.settings(&[]);
    recovered_in_a_new_directory(StoreKind::Json, provider_for(&in_vault).await, || async {
        drop(vault);
        assert!(
            open_rsa_key_provider(&in_vault, SettingsGroup::Main)
                .await
                .is_err(),
            "the secret is gone"
        );
    })
    .await;
}

#[cfg(feature = "pkcs11")]
async fn a_destroyed_hsm_key_is_recovered_onto_a_certificate() {
    use crate::pkcs11::{Role, USER_PIN, isolated, label};
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let hsm = match isolated("recovery::a_destroyed_hsm_key_is_recovered_onto_a_certificate").await
    {
        Role::Child(hsm) => hsm,
        Role::ParentDone => return,
        Role::Missing(reason) => crate::skip_or_fail!("{reason}"),
    };
    let token = hsm.init_token("recovery");
    hsm.generate_key(&token, "kc", &[3], true);
    let hsm_key = RsaKeySettings::Pkcs11(hsm.settings(&token, label("kc")));
    recovered_in_a_new_directory(StoreKind::Sqlite, provider_for(&hsm_key).await, || async {
        let session = hsm.context.open_rw_session(hsm.slot_of(&token)).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
            .unwrap();
        let objects = session
            .find_objects(&[Attribute::Label(b"kc".to_vec())])
            .unwrap();
        assert!(!objects.is_empty());
        for object in objects {
            session.destroy_object(object).unwrap();
        }
        session.logout().unwrap();
        assert!(
            open_rsa_key_provider(&hsm_key, SettingsGroup::Main)
                .await
                .is_err(),
            "the HSM key is gone"
        );
    })
    .await;
}

async fn both_rotations_keep_the_wrap_current_and_recovery_follows_them() {
    use key_connector::operations::rotate::{rotate_rsa_key, rotate_symmetric_key};
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let recovery = RecoveryPair::new(dir.path(), "recovery", 3072);
    let mut settings = settings_with_recovery(StoreKind::Sqlite, dir.path(), &idp, &recovery);
    settings.rsa_key = certificate(dir.path(), "first");
    let provider = provider_for(&settings.rsa_key).await;
    let users = Served::stored_keys(&settings, provider, &idp, 5).await;
    let database = settings.database.clone();
    let wraps = || recovery_wraps_in(&database);
    let first = wraps().await;

    // rotate-rsa-key: the symmetric key, so its wrap, is unchanged.
    let second = certificate(dir.path(), "second");
    rotate_rsa_key(
        &settings.database,
        &settings.rsa_key,
        &second,
        Some(&recovery.public()),
    )
    .await
    .unwrap();
    settings.rsa_key = second;
    assert_eq!(wraps().await, first);

    // A completed symmetric rotation: the new key's wrap replaces the old one's.
    let report = rotate_symmetric_key(
        &settings.database,
        &settings.rsa_key,
        None,
        false,
        Some(&recovery.public()),
    )
    .await
    .unwrap();
    assert!(report.completed);
    let rotated = wraps().await;
    assert_eq!(rotated.len(), 1);
    assert_ne!(rotated, first, "a new symmetric key, a new wrap");

    // An interrupted symmetric rotation: both keys have a wrap.
    let report = rotate_symmetric_key(
        &settings.database,
        &settings.rsa_key,
        Some(2),
        false,
        Some(&recovery.public()),
    )
    .await
    .unwrap();
    assert!(!report.completed);
    assert_eq!(wraps().await.len(), 2, "the current and the pending key");

    // The RSA key is lost in the middle of the rotation: recover both keys.
    std::fs::remove_file(dir.path().join("second.pfx")).unwrap();
    let third = certificate(dir.path(), "third");
    let recovered = recover_onto(
        &mut settings,
        &recovery,
        third,
        &idp,
        &users,
        "recovers mid-rotation",
    )
    .await;
    assert!(recovered.pending_recovered);

    // Finishing the rotation leaves the new key's wrap only.
    let report = rotate_symmetric_key(
        &settings.database,
        &settings.rsa_key,
        None,
        false,
        Some(&recovery.public()),
    )
    .await
    .unwrap();
    assert!(report.completed);
    assert_eq!(
        wraps().await.len(),
        1,
        "only the current key's wrap is left"
    );

    // And recovery works from the rotated key.
    std::fs::remove_file(dir.path().join("third.pfx")).unwrap();
    let fourth = certificate(dir.path(), "fourth");
    let recovered = recover_onto(
        &mut settings,
        &recovery,
        fourth,
        &idp,
        &users,
        "recovers after a completed rotation",
    )
    .await;
    assert!(!recovered.pending_recovered);
}

async fn a_small_or_unreadable_recovery_key_stops_start_up_naming_the_setting() {
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let small = RecoveryPair::new(dir.path(), "small", 2048);
    let mut settings = settings_with_recovery(StoreKind::Sqlite, dir.path(), &idp, &small);
    let provider = provider_for(&settings.rsa_key).await;
    let error = Served::start(&settings, Arc::clone(&provider))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("keyConnectorSettings__recoveryKey__publicKeyPath"),
        "{error}"
    );
    assert!(
        error.contains("2048 bits; a recovery key must have at least 3072"),
        "{error}"
    );

    settings.recovery_key = Some(RecoveryKeySettings {
        public_key_path: dir.path().join("small.pfx"),
    });
    let error = Served::start(&settings, provider)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("keyConnectorSettings:recoveryKey:publicKeyPath"),
        "{error}"
    );
}

/// Starts `command` (the service), collects its standard error until a line contains
/// `until` (or 30 s pass), then kills it.
async fn stderr_until(mut command: std::process::Command, until: &'static str) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut text = String::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                    if line.contains(until) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        text
    })
    .await
    .unwrap()
}

async fn a_mismatching_recovery_key_is_warned_about_kept_and_replaced_only_on_request_then_recovered()
 {
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = RecoveryPair::new(dir.path(), "first-recovery", 3072);
    let second = RecoveryPair::new(dir.path(), "second-recovery", 3072);
    let with_recovery =
        |pair: &RecoveryPair, port: u16| service_with_recovery(dir.path(), &idp, pair, port);
    let port = free_port();
    let service = Service::spawn(with_recovery(&first, port), port)
        .wait_ready()
        .await;
    let (token, key) = service.stores_and_serves_a_key(&idp).await;
    drop(service);

    let said = stderr_until(with_recovery(&second, free_port()), "another recovery key").await;
    assert!(said.contains("another recovery key"), "{said}");
    assert!(
        said.contains(&first.fingerprint),
        "the stored wrap's fingerprint: {said}"
    );
    assert!(
        said.contains(&second.fingerprint),
        "the configured one: {said}"
    );
    assert!(!said.contains(RECOVERY_PASSWORD));

    let database = settings_for(StoreKind::Sqlite, dir.path(), &idp.url).database;
    let stored = || recovery_wraps_in(&database);
    assert_eq!(stored().await[0].fingerprint, first.fingerprint, "kept");

    let mut check = with_recovery(&second, free_port());
    check.arg("check-config");
    let (status, said) = run_to_end(check).await;
    assert!(status.success(), "a mismatch is a warning: {said}");
    assert!(said.contains("stored for ANOTHER recovery key"), "{said}");
    assert!(said.contains(&first.fingerprint), "{said}");

    let mut replace = with_recovery(&second, free_port());
    replace.arg("replace-recovery-wrap");
    let (status, said) = run_to_end(replace).await;
    assert!(status.success(), "{said}");
    let wraps = stored().await;
    assert_eq!(wraps.len(), 1);
    assert_eq!(
        wraps[0].fingerprint, second.fingerprint,
        "replaced as asked"
    );

    // The RSA key is lost; the first recovery key no longer opens anything; the second does.
    std::fs::remove_file(dir.path().join("key.pfx")).unwrap();
    let recover_with = |pair: &RecoveryPair, password: &str| {
        let mut command = with_recovery(pair, free_port());
        let new_key = dir.path().join("new.pfx");
        if !new_key.exists() {
            let bytes =
                key_connector::pkcs12::generate_self_signed_pfx(2048, "new", Some("new-pw"))
                    .unwrap();
            std::fs::write(&new_key, bytes).unwrap();
        }
        command
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
                &new_key,
            )
            .env(
                "keyConnectorSettings__rotateTo__certificate__filesystemPassword",
                "new-pw",
            )
            .env("KEY_CONNECTOR_RECOVERY_KEY_PASSWORD", password)
            .arg("recover")
            .arg("--recovery-key")
            .arg(&pair.pfx)
            .args(["--to-rsa-key", "rotate-to"]);
        command
    };
    let (status, said) = run_to_end(recover_with(&first, RECOVERY_PASSWORD)).await;
    assert!(!status.success());
    assert!(
        said.contains(&format!(
            "no recovery wrap for this recovery key (fingerprint {})",
            first.fingerprint
        )),
        "{said}"
    );
    let (status, said) = run_to_end(recover_with(&second, "wrong")).await;
    assert!(!status.success());
    assert!(
        said.contains("the password does not open this PKCS#12 file"),
        "{said}"
    );
    assert!(
        said.contains("KEY_CONNECTOR_RECOVERY_KEY_PASSWORD"),
        "{said}"
    );
    let (status, said) = run_to_end(recover_with(&second, RECOVERY_PASSWORD)).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 1 user keys verified"), "{said}");
    assert!(!said.contains(RECOVERY_PASSWORD), "{said}");

    // The service on the new key serves the key stored before the loss.
    let port = free_port();
    let mut command = with_recovery(&second, port);
    command
        .env(
            "keyConnectorSettings__certificate__filesystemPath",
            dir.path().join("new.pfx"),
        )
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "new-pw",
        );
    let service = Service::spawn(command, port).wait_ready().await;
    assert_eq!(service.key_of(&token).await, Ok(key));
}

async fn the_transfer_target_gets_a_recovery_wrap_of_its_own_symmetric_key() {
    use key_connector::settings::{TransferTarget, TransferToSettings};
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let recovery = RecoveryPair::new(dir.path(), "recovery", 3072);
    let target_database = DatabaseSettings::Json {
        path: dir.path().join("target.json"),
    };
    let target_key = certificate(dir.path(), "target");
    let app = crate::support::spawn_app_with(
        Arc::clone(&idp),
        crate::support::AppOptions {
            data_dir: Some(Arc::clone(&dir)),
            recovery_key: Some(recovery.settings()),
            transfer_to: Some(TransferToSettings {
                lockfile_path: Some(dir.path().join("transfer.lock")),
                target: Some(TransferTarget {
                    database: target_database.clone(),
                    rsa_key: target_key,
                }),
            }),
            ..crate::support::AppOptions::default()
        },
    )
    .await;
    app.shutdown().await;
    let source =
        recovery_wraps_in(&settings_for(StoreKind::Sqlite, dir.path(), &idp.url).database).await;
    let target = recovery_wraps_in(&target_database).await;
    assert_eq!(source.len(), 1);
    assert_eq!(target.len(), 1);
    assert_eq!(target[0].fingerprint, recovery.fingerprint);
    assert_ne!(
        target[0].key_check, source[0].key_check,
        "the target has a symmetric key of its own"
    );
    let private = recovery.private();
    assert_eq!(private.unwrap(&target[0]).unwrap().len(), 32);
}

/// The whole disaster: a backup checked with the offline recovery key alone (the RSA key is
/// not needed for it, and is then lost with the database), restored, recovered onto a new
/// RSA key, and every key stored before the backup is served again.
async fn a_backup_checked_with_the_recovery_key_restores_after_the_rsa_key_is_lost() {
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pair = RecoveryPair::new(dir.path(), "recovery", 3072);
    let command = |port: u16| service_with_recovery(dir.path(), &idp, &pair, port);
    let port = free_port();
    let service = Service::spawn(command(port), port).wait_ready().await;
    let mut stored = Vec::new();
    for _ in 0..3 {
        stored.push(service.stores_and_serves_a_key(&idp).await);
    }

    // The RSA key is lost (the test harness puts a new, unrelated PFX in its place).
    std::fs::remove_file(dir.path().join("key.pfx")).unwrap();
    let backup = dir.path().join("keys.backup");
    let backup_with = |recovery: bool| {
        let mut command = command(free_port());
        command.args(["backup", "--to"]).arg(&backup).arg("--force");
        if recovery {
            command
                .arg("--recovery-key")
                .arg(&pair.pfx)
                .env("KEY_CONNECTOR_RECOVERY_KEY_PASSWORD", RECOVERY_PASSWORD);
        }
        command
    };
    let (status, said) = run_to_end(backup_with(false)).await;
    assert!(!status.success(), "the new RSA key cannot open it: {said}");
    assert!(!backup.exists(), "{said}");
    let (status, said) = run_to_end(backup_with(true)).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 3 user keys"), "{said}");
    assert!(said.contains(&pair.fingerprint), "{said}");
    assert!(!said.contains(RECOVERY_PASSWORD), "{said}");
    drop(service);

    // The database is lost too: restore the backup, recover onto the configured new key.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("keys.db{suffix}")));
    }
    std::fs::copy(&backup, dir.path().join("keys.db")).unwrap();
    let mut recover = command(free_port());
    recover
        .env("KEY_CONNECTOR_RECOVERY_KEY_PASSWORD", RECOVERY_PASSWORD)
        .arg("recover")
        .arg("--recovery-key")
        .arg(&pair.pfx)
        .args(["--to-rsa-key", "rsa-key"]);
    let (status, said) = run_to_end(recover).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 3 user keys verified"), "{said}");

    let port = free_port();
    let service = Service::spawn(command(port), port).wait_ready().await;
    for (token, key) in &stored {
        assert_eq!(service.key_of(token).await, Ok(key.clone()));
    }
}

crate::tests! {
    multi_thread(2): [
        a_lost_certificate_is_recovered_onto_a_new_one_with_sqlite,
        a_lost_certificate_is_recovered_onto_a_new_one_with_json,
        a_lost_certificate_is_recovered_onto_a_new_one_with_postgresql,
        a_lost_certificate_is_recovered_onto_a_new_one_with_mysql,
        a_lost_certificate_is_recovered_onto_a_new_one_with_sql_server,
        #[cfg(feature = "awskms")]
        a_disabled_aws_kms_key_is_recovered_onto_a_certificate,
        a_deleted_vault_transit_key_is_recovered_onto_a_certificate,
        #[cfg(feature = "gcpkms")]
        a_destroyed_google_cloud_kms_key_is_recovered_onto_a_certificate,
        #[cfg(feature = "azurekv")]
        a_deleted_azure_key_vault_key_is_recovered_onto_a_certificate,
        a_certificate_lost_with_its_vault_secret_is_recovered_onto_a_new_one,
        both_rotations_keep_the_wrap_current_and_recovery_follows_them,
        a_small_or_unreadable_recovery_key_stops_start_up_naming_the_setting,
        a_mismatching_recovery_key_is_warned_about_kept_and_replaced_only_on_request_then_recovered,
        the_transfer_target_gets_a_recovery_wrap_of_its_own_symmetric_key,
        a_backup_checked_with_the_recovery_key_restores_after_the_rsa_key_is_lost,
    ],
    multi_thread(4): [
        #[cfg(feature = "pkcs11")]
        a_destroyed_hsm_key_is_recovered_onto_a_certificate,
    ],
}
