//! The `pkcs11` RSA key provider against a real SoftHSM2 token.
//!
//! A PKCS#11 library keeps its state per process (`C_Initialize`, logins) and SoftHSM reads
//! its configuration (`SOFTHSM2_CONF`) once, so each test runs in a child process of this
//! test binary with its own configuration and token directory: tests never share a token,
//! and no test changes the environment of another. The parent half checks that the child
//! ran exactly that test and passed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use key_connector::config::{DatabaseSettings, SettingsGroup};
use key_connector::keys::certificate::CertificateSettings;
use key_connector::keys::pkcs11::{Pkcs11KeyProvider, private_key_id_bytes};
use key_connector::keys::pkcs11::{Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType};
use key_connector::keys::{KeyProviderError, RsaKeyProvider, RsaKeySettings};
use key_connector::settings::{TransferTarget, TransferToSettings};
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::{
    AppOptions, StoreKind, TestIdp, random_key, spawn_app_with, try_spawn_app_with,
};

const SO_PIN: &str = "so-pin-1234";
pub(crate) const USER_PIN: &str = "user-pin-5678";
/// Set in the child process: the directory holding its SoftHSM configuration and tokens.
const CHILD_DIR_ENV: &str = "KC_TEST_SOFTHSM_DIR";

/// Where Debian's softhsm2 package puts the library; `KC_SOFTHSM2_LIBRARY` overrides it.
fn library_path() -> PathBuf {
    std::env::var_os("KC_SOFTHSM2_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

pub(crate) enum Role {
    /// This process is the isolated child: run the test body.
    Child(SoftHsm),
    /// This process ran the test in a child, which passed.
    ParentDone,
    /// SoftHSM is not installed.
    Missing(String),
}

/// Runs one test in a child process with a private SoftHSM (see the module comment).
pub(crate) async fn isolated(test_name: &str) -> Role {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        return Role::Child(SoftHsm::attach(PathBuf::from(dir)));
    }
    if !library_path().exists() {
        return Role::Missing(format!(
            "SoftHSM2 library {} not found (apt-get install softhsm2)",
            library_path().display()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let config = dir.path().join("softhsm2.conf");
    std::fs::write(
        &config,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )
    .unwrap();
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &config)
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test_name} in its own process:\n{stdout}\n{stderr}"
    );
    Role::ParentDone
}

/// Declares a test that runs in its own process with its own SoftHSM.
macro_rules! softhsm_test {
    ($(#[$meta:meta])* async fn $name:ident($hsm:ident) $body:block) => {
        $(#[$meta])*
        async fn $name() {
            let $hsm = match isolated(concat!("pkcs11::", stringify!($name))).await {
                Role::Child(hsm) => hsm,
                Role::ParentDone => return,
                Role::Missing(reason) => skip_or_fail!("{reason}"),
            };
            $body
        }
    };
}

/// The child's SoftHSM: a context for setting tokens up, and a scratch directory.
pub(crate) struct SoftHsm {
    pub(crate) dir: PathBuf,
    pub(crate) context: Pkcs11,
}

/// A token made for one test.
pub(crate) struct TestToken {
    serial: String,
}

impl SoftHsm {
    fn attach(dir: PathBuf) -> Self {
        let context = Pkcs11::new(library_path()).unwrap();
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("SoftHSM initialisation: {e}"),
        }
        Self { dir, context }
    }

    /// Initialises the free token with `label`, the SO PIN and the user PIN.
    pub(crate) fn init_token(&self, label: &str) -> TestToken {
        let free = self
            .context
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|slot| {
                !self
                    .context
                    .get_token_info(*slot)
                    .unwrap()
                    .token_initialized()
            })
            .expect("SoftHSM offers a free token");
        self.context
            .init_token(free, &AuthPin::from(SO_PIN), label)
            .unwrap();
        // SoftHSM gives an initialised token a new slot id.
        let slot = self.slot_labelled(label);
        let session = self.context.open_rw_session(slot).unwrap();
        session
            .login(UserType::So, Some(&AuthPin::from(SO_PIN)))
            .unwrap();
        session.init_pin(&AuthPin::from(USER_PIN)).unwrap();
        session.logout().unwrap();
        let serial = self
            .context
            .get_token_info(slot)
            .unwrap()
            .serial_number()
            .trim()
            .to_owned();
        TestToken { serial }
    }

    fn slot_labelled(&self, label: &str) -> cryptoki::slot::Slot {
        self.context
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|slot| self.context.get_token_info(*slot).unwrap().label().trim() == label)
            .expect("the token just initialised")
    }

    pub(crate) fn slot_of(&self, token: &TestToken) -> cryptoki::slot::Slot {
        self.context
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|slot| {
                self.context
                    .get_token_info(*slot)
                    .unwrap()
                    .serial_number()
                    .trim()
                    == token.serial
            })
            .expect("the test token")
    }

    /// Generates an RSA-2048 pair in the token. `private: false` makes the private key visible
    /// to the security officer, as SoftHSM shows private objects to the user only.
    pub(crate) fn generate_key(&self, token: &TestToken, label: &str, id: &[u8], private: bool) {
        self.generate_key_with(token, label, id, private, false);
    }

    fn generate_key_with(
        &self,
        token: &TestToken,
        label: &str,
        id: &[u8],
        private: bool,
        always_authenticate: bool,
    ) {
        let session = self.context.open_rw_session(self.slot_of(token)).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
            .unwrap();
        let public = [
            Attribute::Token(true),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Encrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::AlwaysAuthenticate(always_authenticate),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        session
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private_template)
            .unwrap();
        session.logout().unwrap();
    }

    /// Removes every public-key object, so the provider must read the private key's modulus.
    fn delete_public_keys(&self, token: &TestToken) {
        let session = self.context.open_rw_session(self.slot_of(token)).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
            .unwrap();
        let found = session
            .find_objects(&[Attribute::Class(cryptoki::object::ObjectClass::PUBLIC_KEY)])
            .unwrap();
        assert!(!found.is_empty());
        for object in found {
            session.destroy_object(object).unwrap();
        }
        session.logout().unwrap();
    }

    /// An RSA key made by OpenSSL (`key.pem`, `public.pem` in the scratch directory),
    /// imported with `softhsm2-util` the way operators load an existing key.
    fn import_openssl_key(&self, token: &TestToken, label: &str, id_hex: &str) {
        openssl(
            &self.dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "key.pem",
            ],
        );
        openssl(
            &self.dir,
            &["pkey", "-in", "key.pem", "-pubout", "-out", "public.pem"],
        );
        run(
            &self.dir,
            "softhsm2-util",
            &[
                "--import",
                "key.pem",
                "--serial",
                &token.serial,
                "--label",
                label,
                "--id",
                id_hex,
                "--pin",
                USER_PIN,
            ],
        );
    }

    pub(crate) fn settings(&self, token: &TestToken, key: Pkcs11KeySelector) -> Pkcs11Settings {
        Pkcs11Settings {
            library_path: library_path(),
            token_serial: token.serial.clone(),
            user_type: Pkcs11UserType::User,
            pin: Some(USER_PIN.to_owned().into()),
            key,
            certificate: None,
        }
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(dir, "openssl", args);
}

const OAEP_SHA1: &[&str] = &[
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha1",
    "-pkeyopt",
    "rsa_mgf1_md:sha1",
];

pub(crate) fn label(text: &str) -> Pkcs11KeySelector {
    Pkcs11KeySelector::Label(text.to_owned())
}

async fn open(settings: &Pkcs11Settings) -> Result<Pkcs11KeyProvider, KeyProviderError> {
    Pkcs11KeyProvider::open(settings, SettingsGroup::Main).await
}

async fn config_error(settings: &Pkcs11Settings) -> String {
    match open(settings).await {
        Err(KeyProviderError::Config { message, .. }) => message,
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(provider) => panic!("expected an error, opened {}", provider.describe()),
    }
}

/// Wraps with the provider, unwraps in the token, and checks the health check.
async fn assert_round_trip(provider: &Pkcs11KeyProvider) {
    let secret: Vec<u8> = (0..32).map(|i| i * 7).collect();
    let wrapped = provider.wrap_symmetric_key(&secret).await.unwrap();
    assert_eq!(wrapped.len(), 256);
    assert_ne!(&wrapped[..32], &secret[..]);
    let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
    assert_eq!(&unwrapped[..], &secret[..]);
    provider.check_health().await.unwrap();
}

softhsm_test! {
    /// OpenSSL wraps with the public key, the token unwraps; and the other way round.
    async fn openssl_wrapped_keys_unwrap_in_the_token_and_back(hsm) {
        let token = hsm.init_token("compat");
        hsm.import_openssl_key(&token, "kc-key", "01");
        let provider = open(&hsm.settings(&token, label("kc-key"))).await.unwrap();
        assert!(provider.describe().contains(&token.serial));
        assert!(!provider.describe().contains(USER_PIN));

        let secret: Vec<u8> = (100u8..132).collect();
        std::fs::write(hsm.dir.join("secret.bin"), &secret).unwrap();
        let mut args = vec![
            "pkeyutl", "-encrypt", "-pubin", "-inkey", "public.pem", "-in", "secret.bin",
            "-out", "wrapped.bin",
        ];
        args.extend_from_slice(OAEP_SHA1);
        openssl(&hsm.dir, &args);
        let wrapped = std::fs::read(hsm.dir.join("wrapped.bin")).unwrap();
        let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
        assert_eq!(&unwrapped[..], &secret[..]);

        let ours = provider.wrap_symmetric_key(&secret).await.unwrap();
        std::fs::write(hsm.dir.join("ours.bin"), ours).unwrap();
        let mut args = vec![
            "pkeyutl", "-decrypt", "-inkey", "key.pem", "-in", "ours.bin", "-out", "back.bin",
        ];
        args.extend_from_slice(OAEP_SHA1);
        openssl(&hsm.dir, &args);
        assert_eq!(std::fs::read(hsm.dir.join("back.bin")).unwrap(), secret);

        // A ciphertext for another key is refused as an unwrap failure, not an outage.
        let mut tampered = wrapped.clone();
        tampered[10] ^= 0x55;
        assert!(matches!(
            provider.unwrap_symmetric_key(&tampered).await,
            Err(KeyProviderError::UnwrapFailed { .. })
        ));
        provider.check_health().await.unwrap();
    }
}

softhsm_test! {
    /// `pkcs11PrivateKeyId` 42 is `CKA_ID` = 42 as 8 native-endian bytes, as upstream sends it;
    /// a key whose id is the single byte 42 is a different key.
    async fn id_lookup_uses_upstreams_native_ulong_encoding(hsm) {
        let token = hsm.init_token("by-id");
        let id = private_key_id_bytes(42).unwrap();
        assert_eq!(id.len(), std::mem::size_of::<std::ffi::c_ulong>());
        hsm.generate_key(&token, "same-label", &id, true);
        hsm.generate_key(&token, "same-label", &[42], true);
        let provider = open(&hsm.settings(&token, Pkcs11KeySelector::Id(42))).await.unwrap();
        assert_round_trip(&provider).await;
        // The label is shared by both keys: looking up by it is refused.
        let message = config_error(&hsm.settings(&token, label("same-label"))).await;
        assert!(message.contains("2 private keys"), "{message}");
        assert!(message.contains("pkcs11PrivateKeyLabel"), "{message}");
        let message = config_error(&hsm.settings(&token, Pkcs11KeySelector::Id(43))).await;
        assert!(message.contains("no private key with id 43"), "{message}");
        assert!(message.contains("pkcs11PrivateKeyId"), "{message}");
    }
}

softhsm_test! {
    async fn a_missing_label_is_a_configuration_error_naming_the_setting(hsm) {
        let token = hsm.init_token("missing");
        hsm.generate_key(&token, "present", &[1], true);
        let message = config_error(&hsm.settings(&token, label("absent"))).await;
        assert!(message.contains("no private key labelled `absent`"), "{message}");
        assert!(
            message.contains("keyConnectorSettings__rsaKey__pkcs11PrivateKeyLabel"),
            "{message}"
        );
    }
}

softhsm_test! {
    /// The SO sees only public objects in SoftHSM, so the key is made with `CKA_PRIVATE` false.
    async fn security_officer_login_unwraps_with_a_key_it_can_see(hsm) {
        let token = hsm.init_token("so");
        hsm.generate_key(&token, "so-key", &[7], false);
        let mut settings = hsm.settings(&token, label("so-key"));
        settings.user_type = Pkcs11UserType::SecurityOfficer;
        settings.pin = Some(SO_PIN.to_owned().into());
        let provider = open(&settings).await.unwrap();
        assert_round_trip(&provider).await;
        drop(provider);
        // The user's PIN is not the SO's.
        settings.pin = Some(USER_PIN.to_owned().into());
        let message = config_error(&settings).await;
        assert!(message.contains("wrong PIN?"), "{message}");
    }
}

softhsm_test! {
    /// SoftHSM, like the standard, accepts a CKU_CONTEXT_SPECIFIC login only inside an
    /// operation; the provider then logs the user in with the same PIN.
    async fn context_specific_login_works_with_the_user_pin(hsm) {
        let token = hsm.init_token("ctx");
        hsm.generate_key(&token, "ctx-key", &[9], true);
        let mut settings = hsm.settings(&token, label("ctx-key"));
        settings.user_type = Pkcs11UserType::ContextSpecific;
        let provider = open(&settings).await.unwrap();
        assert_round_trip(&provider).await;
    }
}

softhsm_test! {
    /// A key that wants the PIN again inside every decryption is refused at start-up with
    /// a reason, not retried as if the token were away.
    async fn a_key_demanding_a_login_per_use_is_refused_with_a_reason(hsm) {
        let token = hsm.init_token("always");
        hsm.generate_key_with(&token, "k", &[1], true, true);
        for user_type in [Pkcs11UserType::User, Pkcs11UserType::ContextSpecific] {
            let mut settings = hsm.settings(&token, label("k"));
            settings.user_type = user_type;
            let message = config_error(&settings).await;
            assert!(message.contains("CKA_ALWAYS_AUTHENTICATE"), "{message}");
        }
    }
}

softhsm_test! {
    async fn a_wrong_pin_fails_fast_and_names_the_setting(hsm) {
        let token = hsm.init_token("pin");
        hsm.generate_key(&token, "k", &[1], true);
        let mut settings = hsm.settings(&token, label("k"));
        settings.pin = Some("not-the-pin-9999".to_owned().into());
        let message = tokio::time::timeout(Duration::from_secs(5), config_error(&settings))
            .await
            .expect("refused within 5 s");
        assert!(message.contains("PKCS#11 login failed: wrong PIN?"), "{message}");
        assert!(
            message.contains("keyConnectorSettings__rsaKey__pkcs11LoginPin"),
            "{message}"
        );
        assert!(!message.contains("not-the-pin-9999"));
        assert!(!format!("{settings:?}").contains("not-the-pin-9999"));

        // The service refuses to start, quickly, with the same message.
        let idp = Arc::new(TestIdp::start().await);
        let error = tokio::time::timeout(
            Duration::from_secs(5),
            try_spawn_app_with(
                idp,
                AppOptions { rsa_key: Some(RsaKeySettings::Pkcs11(settings)), ..AppOptions::default() },
            ),
        )
        .await
        .expect("start-up stops within 5 s")
        .err()
        .expect("start-up fails");
        assert!(error.to_string().contains("wrong PIN?"), "{error}");
    }
}

softhsm_test! {
    async fn an_unknown_serial_lists_the_tokens_present(hsm) {
        let token = hsm.init_token("present");
        let mut settings = hsm.settings(&token, label("k"));
        settings.token_serial = "0000000000000000".to_owned();
        let message = config_error(&settings).await;
        assert!(message.contains("no PKCS#11 token with serial number `0000000000000000`"), "{message}");
        assert!(message.contains(&token.serial), "{message}");
        assert!(
            message.contains("keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber"),
            "{message}"
        );
        // Serial numbers compare case-insensitively, as upstream's do.
        hsm.generate_key(&token, "k", &[1], true);
        settings.token_serial = token.serial.to_ascii_uppercase();
        open(&settings).await.unwrap();
    }
}

softhsm_test! {
    async fn a_missing_library_is_a_configuration_error(hsm) {
        let token = hsm.init_token("lib");
        let mut settings = hsm.settings(&token, label("k"));
        settings.library_path = hsm.dir.join("no-such-pkcs11.so");
        let message = config_error(&settings).await;
        assert!(message.contains("no-such-pkcs11.so"), "{message}");
        assert!(
            message.contains("keyConnectorSettings__rsaKey__pkcs11LibraryPath"),
            "{message}"
        );
        // A file that is not a PKCS#11 library.
        std::fs::write(hsm.dir.join("not-a-library.so"), b"not an ELF file").unwrap();
        settings.library_path = hsm.dir.join("not-a-library.so");
        let message = config_error(&settings).await;
        assert!(message.contains("cannot load"), "{message}");
    }
}

softhsm_test! {
    /// Without a public-key object the provider reads the private key's modulus.
    async fn the_public_key_is_read_from_the_private_key_when_no_public_object_exists(hsm) {
        let token = hsm.init_token("nopub");
        hsm.generate_key(&token, "k", &[3], true);
        hsm.delete_public_keys(&token);
        let provider = open(&hsm.settings(&token, label("k"))).await.unwrap();
        assert_round_trip(&provider).await;
    }
}

softhsm_test! {
    /// Upstream's set-up: the key in the HSM, its certificate (no private key) in a PKCS#12
    /// from the certificate provider.
    async fn a_certificate_only_pkcs12_supplies_the_public_key(hsm) {
        let token = hsm.init_token("cert");
        hsm.import_openssl_key(&token, "kc-key", "0a");
        openssl(
            &hsm.dir,
            &["req", "-x509", "-new", "-key", "key.pem", "-subj", "/CN=key connector", "-days", "30", "-out", "cert.pem"],
        );
        openssl(
            &hsm.dir,
            &["pkcs12", "-export", "-nokeys", "-in", "cert.pem", "-out", "cert.pfx", "-passout", "pass:cert-pass"],
        );
        let mut settings = hsm.settings(&token, label("kc-key"));
        settings.certificate = Some(CertificateSettings::Filesystem {
            path: hsm.dir.join("cert.pfx"),
            password: Some("cert-pass".to_owned().into()),
        });
        let provider = open(&settings).await.unwrap();
        assert!(provider.describe().contains("cert.pfx"), "{}", provider.describe());
        assert_round_trip(&provider).await;
        // What the provider wraps is for the certificate's key: OpenSSL unwraps it.
        let ours = provider.wrap_symmetric_key(&[5u8; 32]).await.unwrap();
        std::fs::write(hsm.dir.join("ours.bin"), ours).unwrap();
        let mut args = vec![
            "pkeyutl", "-decrypt", "-inkey", "key.pem", "-in", "ours.bin", "-out", "back.bin",
        ];
        args.extend_from_slice(OAEP_SHA1);
        openssl(&hsm.dir, &args);
        assert_eq!(std::fs::read(hsm.dir.join("back.bin")).unwrap(), vec![5u8; 32]);
        drop(provider);

        // A certificate of another key would make databases nobody can open: refused.
        openssl(
            &hsm.dir,
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.pem", "-subj", "/CN=other", "-days", "30", "-out", "other.crt"],
        );
        openssl(
            &hsm.dir,
            &["pkcs12", "-export", "-nokeys", "-in", "other.crt", "-out", "other.pfx", "-passout", "pass:x"],
        );
        settings.certificate = Some(CertificateSettings::Filesystem {
            path: hsm.dir.join("other.pfx"),
            password: Some("x".to_owned().into()),
        });
        let message = config_error(&settings).await;
        assert!(message.contains("does not belong to the private key"), "{message}");
    }
}

softhsm_test! {
    async fn many_parallel_unwraps_share_the_token_safely(hsm) {
        let token = hsm.init_token("parallel");
        hsm.generate_key(&token, "k", &[1], true);
        let provider = Arc::new(open(&hsm.settings(&token, label("k"))).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..48u8 {
            let provider = Arc::clone(&provider);
            tasks.push(tokio::spawn(async move {
                let secret = vec![i; 32];
                let wrapped = provider.wrap_symmetric_key(&secret).await.unwrap();
                let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
                assert_eq!(&unwrapped[..], &secret[..]);
                provider.check_health().await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}

softhsm_test! {
    /// Logging out from any session of the process logs the provider's session out too (the
    /// login belongs to the application); the next call notices and logs in again.
    async fn a_lost_login_is_noticed_and_recovered(hsm) {
        let token = hsm.init_token("relogin");
        hsm.generate_key(&token, "k", &[1], true);
        let provider = open(&hsm.settings(&token, label("k"))).await.unwrap();
        assert_round_trip(&provider).await;
        let other = hsm.context.open_rw_session(hsm.slot_of(&token)).unwrap();
        other.logout().unwrap();
        drop(other);
        provider.check_health().await.unwrap();
        let other = hsm.context.open_rw_session(hsm.slot_of(&token)).unwrap();
        other.logout().unwrap();
        drop(other);
        assert_round_trip(&provider).await;
    }
}

softhsm_test! {
    /// The whole service on a token: POST and GET a user key, restart, GET again (the
    /// symmetric key in the database is unwrapped by the token), `/health` healthy.
    async fn the_application_runs_on_a_pkcs11_key(hsm) {
        let token = hsm.init_token("app");
        hsm.generate_key(&token, "kc", &private_key_id_bytes(1).unwrap(), true);
        let settings = || RsaKeySettings::Pkcs11(hsm.settings(&token, Pkcs11KeySelector::Id(1)));
        let idp = Arc::new(TestIdp::start().await);
        let app = spawn_app_with(
            Arc::clone(&idp),
            AppOptions { rsa_key: Some(settings()), ..AppOptions::default() },
        )
        .await;
        let health = app.client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let token_for_user = app.token_for(Uuid::new_v4());
        let key = random_key();
        assert_eq!(app.post_key(&token_for_user, &key).await.status(), 200);
        assert_eq!(app.read_key(&token_for_user).await, Ok(key.clone()));
        let data_dir = app.shutdown().await;

        let app = spawn_app_with(
            Arc::clone(&idp),
            AppOptions {
                rsa_key: Some(settings()),
                data_dir: Some(data_dir),
                ..AppOptions::default()
            },
        )
        .await;
        assert_eq!(app.read_key(&token_for_user).await, Ok(key));
        let health = app.client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(health.text().await.unwrap(), "Healthy");
    }
}

softhsm_test! {
    /// SoftHSM keeps a token as a directory: moving it away pulls the token out. `/health`
    /// must report that quickly, every time, and unwrapping must fail as an outage (retry
    /// later), not as a wrong key. SoftHSM never rediscovers a token while loaded, so the
    /// return of the token is not shown here; the reopening that recovers is the same path
    /// `a_lost_login_is_noticed_and_recovered` exercises.
    async fn a_token_that_goes_away_is_reported_unhealthy(hsm) {
        let token = hsm.init_token("removable");
        hsm.generate_key(&token, "k", &[1], true);
        let provider = open(&hsm.settings(&token, label("k"))).await.unwrap();
        assert_round_trip(&provider).await;
        let token_dir = std::fs::read_dir(hsm.dir.join("tokens"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.is_dir())
            .expect("the token's directory");
        std::fs::rename(&token_dir, hsm.dir.join("removed-token")).unwrap();
        for _ in 0..3 {
            let outage = tokio::time::timeout(Duration::from_secs(2), provider.check_health())
                .await
                .expect("answered within 2 s");
            assert!(matches!(outage, Err(KeyProviderError::Unavailable { .. })), "{outage:?}");
        }
        let unwrap = provider.unwrap_symmetric_key(&[1u8; 256]).await;
        assert!(matches!(unwrap, Err(KeyProviderError::Unavailable { .. })), "{unwrap:?}");
        // Wrapping needs only the public key, held since start-up.
        provider.wrap_symmetric_key(&[1u8; 32]).await.unwrap();
    }
}

softhsm_test! {
    /// Moving a certificate-wrapped database onto an HSM with upstream's `transferTo`: every
    /// key is readable from the new database, whose symmetric key only the token unwraps.
    async fn transfer_to_moves_keys_from_a_certificate_to_the_token(hsm) {
        let token = hsm.init_token("target");
        hsm.generate_key(&token, "kc", &[1], true);
        let idp = Arc::new(TestIdp::start().await);
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let app = spawn_app_with(
            Arc::clone(&idp),
            AppOptions { data_dir: Some(Arc::clone(&dir)), ..AppOptions::default() },
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

        let target_json = hsm.dir.join("target.json");
        let target = || TransferTarget {
            database: DatabaseSettings::Json { path: target_json.clone() },
            rsa_key: RsaKeySettings::Pkcs11(hsm.settings(&token, label("kc"))),
        };
        let app = spawn_app_with(
            Arc::clone(&idp),
            AppOptions {
                data_dir: Some(Arc::clone(&dir)),
                transfer_to: Some(TransferToSettings {
                    lockfile_path: Some(dir.path().join("transfer.lock")),
                    target: Some(target()),
                }),
                ..AppOptions::default()
            },
        )
        .await;
        app.shutdown().await;

        let target_dir = Arc::new(tempfile::tempdir().unwrap());
        std::fs::copy(&target_json, target_dir.path().join("data.json")).unwrap();
        let served = spawn_app_with(
            Arc::clone(&idp),
            AppOptions {
                store: StoreKind::Json,
                data_dir: Some(target_dir),
                rsa_key: Some(target().rsa_key),
                ..AppOptions::default()
            },
        )
        .await;
        for (user, key) in &users {
            assert_eq!(served.read_key(&idp.token_for(*user)).await.as_ref(), Ok(key));
        }
    }
}

/// The real binary configured only through environment variables for `token`, as a
/// container is; `pin` is the login PIN.
fn binary_command(hsm: &SoftHsm, token: &TestToken, pin: &str) -> (Command, u16) {
    let port = crate::support::binary::free_port();
    let mut command =
        crate::support::binary::service_command(&hsm.dir, "sqlite", "http://127.0.0.1:9", port);
    command
        .env("SOFTHSM2_CONF", std::env::var_os("SOFTHSM2_CONF").unwrap())
        .env("keyConnectorSettings__rsaKey__provider", "pkcs11")
        .env(
            "KEYCONNECTORSETTINGS__RSAKEY__PKCS11LIBRARYPATH",
            library_path(),
        )
        .env(
            "keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber",
            &token.serial,
        )
        .env("keyConnectorSettings__rsaKey__pkcs11LoginUserType", "user")
        .env("keyConnectorSettings__rsaKey__pkcs11LoginPin", pin)
        .env("keyConnectorSettings__rsaKey__pkcs11PrivateKeyId", "7")
        .env_remove("keyConnectorSettings__certificate__provider")
        .env_remove("keyConnectorSettings__certificate__filesystemPath")
        .env_remove("keyConnectorSettings__certificate__filesystemPassword");
    (command, port)
}

softhsm_test! {
    /// Settings in their environment-variable form: a wrong PIN stops the binary within
    /// seconds with a non-zero exit and the message; the right one serves `/health`.
    async fn the_binary_fails_fast_on_a_wrong_pin_and_serves_with_the_right_one(hsm) {
        let token = hsm.init_token("binary");
        hsm.generate_key(&token, "kc", &private_key_id_bytes(7).unwrap(), true);

        let (mut command, _) = binary_command(&hsm, &token, "wrong-pin-0000");
        let started = Instant::now();
        let output = command.output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("PKCS#11 login failed: wrong PIN?"), "{stderr}");
        assert!(stderr.contains("keyConnectorSettings__rsaKey__pkcs11LoginPin"), "{stderr}");
        assert!(!stderr.contains("wrong-pin-0000"), "the PIN is never logged: {stderr}");

        let (command, port) = binary_command(&hsm, &token, USER_PIN);
        let service = crate::support::binary::Service::spawn(command, port).wait_ready().await;
        let health = reqwest::get(format!("{}/health", service.base_url)).await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.text().await.unwrap(), "Healthy");
    }
}

softhsm_test! {
    /// A database whose symmetric key another RSA key wrapped is never "repaired": start-up
    /// stops, saying the token's key does not unwrap it.
    async fn a_database_wrapped_for_another_key_stops_start_up(hsm) {
        let token = hsm.init_token("other");
        hsm.generate_key(&token, "kc", &[1], true);
        let idp = Arc::new(TestIdp::start().await);
        let app = spawn_app_with(Arc::clone(&idp), AppOptions::default()).await;
        let data_dir = app.shutdown().await;
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            try_spawn_app_with(
                Arc::clone(&idp),
                AppOptions {
                    data_dir: Some(data_dir),
                    rsa_key: Some(RsaKeySettings::Pkcs11(hsm.settings(&token, label("kc")))),
                    ..AppOptions::default()
                },
            ),
        )
        .await
        .expect("start-up stops within 10 s")
        .err()
        .expect("start-up refuses the database");
        let message = error.to_string();
        assert!(message.contains("was not wrapped by the private key"), "{message}");
    }
}

crate::tests! {
    multi_thread(4): [
        openssl_wrapped_keys_unwrap_in_the_token_and_back,
        id_lookup_uses_upstreams_native_ulong_encoding,
        a_missing_label_is_a_configuration_error_naming_the_setting,
        security_officer_login_unwraps_with_a_key_it_can_see,
        context_specific_login_works_with_the_user_pin,
        a_key_demanding_a_login_per_use_is_refused_with_a_reason,
        a_wrong_pin_fails_fast_and_names_the_setting,
        an_unknown_serial_lists_the_tokens_present,
        a_missing_library_is_a_configuration_error,
        the_public_key_is_read_from_the_private_key_when_no_public_object_exists,
        a_certificate_only_pkcs12_supplies_the_public_key,
        many_parallel_unwraps_share_the_token_safely,
        a_lost_login_is_noticed_and_recovered,
        a_token_that_goes_away_is_reported_unhealthy,
        the_application_runs_on_a_pkcs11_key,
        transfer_to_moves_keys_from_a_certificate_to_the_token,
        the_binary_fails_fast_on_a_wrong_pin_and_serves_with_the_right_one,
        a_database_wrapped_for_another_key_stops_start_up,
    ],
}
