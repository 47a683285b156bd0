//! The `store` certificate source against a directory laid out as .NET keeps the
//! `CurrentUser\My` store on Linux: one password-less PKCS#12 file per certificate, named
//! `{THUMBPRINT}.pfx`.

use key_connector::config::SettingsGroup;
use std::path::Path;

use key_connector::config::ConfigSource;
use key_connector::keys::RsaKeySettings;
use key_connector::keys::certificate::CertificateKeyProvider;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::keys::{KeyProviderError, RsaKeyProvider};
use key_connector::pkcs12::{certificates, generate_self_signed_pfx};

/// Writes a new certificate into the store as .NET does; returns its thumbprint.
fn add_to_store(store: &Path, common_name: &str) -> String {
    let pfx = generate_self_signed_pfx(2048, common_name, None).unwrap();
    let thumbprint = certificates(&pfx, None).unwrap()[0].thumbprint.clone();
    std::fs::write(store.join(format!("{thumbprint}.pfx")), pfx).unwrap();
    thumbprint
}

/// Settings as an operator writes them in the environment.
fn store_settings(thumbprint: &str, directory: &Path) -> CertificateSettings {
    let env: Vec<(String, String)> = [
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
        ("keyConnectorSettings__certificate__provider", "store"),
        (
            "keyConnectorSettings__certificate__storeThumbprint",
            thumbprint,
        ),
        (
            "keyConnectorSettings__certificate__storeDirectory",
            directory.to_str().unwrap(),
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    match key_connector::settings::load(&ConfigSource { file: None, env })
        .unwrap()
        .settings
        .rsa_key
    {
        RsaKeySettings::Certificate(certificate) => certificate,
        other => panic!("a certificate provider, not {other:?}"),
    }
}

/// Whether `provider` holds the key of the store file `thumbprint.pfx`.
async fn holds_key_of(provider: &CertificateKeyProvider, store: &Path, thumbprint: &str) -> bool {
    let file = CertificateKeyProvider::open(
        &CertificateSettings::Filesystem {
            path: store.join(format!("{thumbprint}.pfx")),
            password: None,
        },
        SettingsGroup::Main,
    )
    .await
    .unwrap();
    let secret = [7u8; 32];
    let wrapped = provider.wrap_symmetric_key(&secret).await.unwrap();
    file.unwrap_symmetric_key(&wrapped)
        .await
        .is_ok_and(|unwrapped| unwrapped[..] == secret)
}

async fn the_certificate_is_found_by_thumbprint_in_any_spelling() {
    let store = tempfile::tempdir().unwrap();
    let first = add_to_store(store.path(), "first");
    let second = add_to_store(store.path(), "second");

    let colons = |t: &str| {
        t.as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":")
    };
    for (thumbprint, other) in [(&first, &second), (&second, &first)] {
        for spelling in [
            thumbprint.clone(),
            thumbprint.to_ascii_lowercase(),
            colons(thumbprint),
            colons(&thumbprint.to_ascii_lowercase()).replace(':', " "),
            format!("\u{200e}{thumbprint}"),
        ] {
            let provider = CertificateKeyProvider::open(
                &store_settings(&spelling, store.path()),
                SettingsGroup::Main,
            )
            .await
            .unwrap_or_else(|e| panic!("{spelling}: {e}"));
            assert!(provider.describe().contains(thumbprint.as_str()));
            assert!(holds_key_of(&provider, store.path(), thumbprint).await);
            assert!(!holds_key_of(&provider, store.path(), other).await);
        }
    }
}

async fn a_file_is_matched_by_its_certificate_not_its_name() {
    let store = tempfile::tempdir().unwrap();
    let thumbprint = add_to_store(store.path(), "renamed");
    // .NET names a second file for a taken name `{THUMBPRINT}.1.pfx`; any name is read.
    std::fs::rename(
        store.path().join(format!("{thumbprint}.pfx")),
        store.path().join("copied-from-windows.PFX"),
    )
    .unwrap();
    let provider = CertificateKeyProvider::open(
        &store_settings(&thumbprint, store.path()),
        SettingsGroup::Main,
    )
    .await
    .unwrap();
    assert!(provider.describe().contains("copied-from-windows.PFX"));
}

async fn an_unknown_thumbprint_is_a_config_error_listing_the_store() {
    let store = tempfile::tempdir().unwrap();
    let first = add_to_store(store.path(), "first");
    let second = add_to_store(store.path(), "second");
    std::fs::write(store.path().join("broken.pfx"), b"not a pfx").unwrap();
    std::fs::write(store.path().join("notes.txt"), b"ignored").unwrap();

    let unknown = "00".repeat(20);
    match CertificateKeyProvider::open(&store_settings(&unknown, store.path()), SettingsGroup::Main)
        .await
    {
        Err(KeyProviderError::Config { message, .. }) => {
            assert!(message.contains(&unknown), "{message}");
            assert!(
                message.contains("keyConnectorSettings__certificate__storeThumbprint"),
                "{message}"
            );
            assert!(message.contains(&format!("{first} CN=first")), "{message}");
            assert!(
                message.contains(&format!("{second} CN=second")),
                "{message}"
            );
            assert!(message.contains("broken.pfx: unreadable"), "{message}");
            assert!(!message.contains("notes.txt"), "{message}");
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("no such certificate in the store"),
    }
}

async fn a_missing_store_directory_is_a_config_error_naming_the_setting() {
    let store = tempfile::tempdir().unwrap();
    let missing = store.path().join("x509stores/my");
    match CertificateKeyProvider::open(
        &store_settings(&"AB".repeat(20), &missing),
        SettingsGroup::Main,
    )
    .await
    {
        Err(KeyProviderError::Config { message, .. }) => {
            assert!(
                message.contains("keyConnectorSettings__certificate__storeDirectory"),
                "{message}"
            );
            assert!(message.contains("x509stores/my"), "{message}");
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("the store does not exist"),
    }
}

async fn a_store_file_named_for_the_thumbprint_that_cannot_be_opened_is_named() {
    let store = tempfile::tempdir().unwrap();
    let pfx = generate_self_signed_pfx(2048, "protected", Some("a password")).unwrap();
    let thumbprint = certificates(&pfx, Some("a password")).unwrap()[0]
        .thumbprint
        .clone();
    std::fs::write(store.path().join(format!("{thumbprint}.pfx")), pfx).unwrap();
    match CertificateKeyProvider::open(
        &store_settings(&thumbprint, store.path()),
        SettingsGroup::Main,
    )
    .await
    {
        Err(KeyProviderError::Config { message, .. }) => {
            assert!(
                message.contains(&format!("{thumbprint}.pfx is named for thumbprint")),
                "{message}"
            );
            assert!(message.contains("re-export"), "{message}");
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("the file needs a password"),
    }
}

/// `tests/compat/absent_password_pfx.py`: writes a PFX under the absent password via libcrypto.
fn absent_password_pfx(dir: &Path, mac: &str) -> Option<std::path::PathBuf> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/absent_password_pfx.py"
    );
    let out = dir.join(format!("absent-{mac}.pfx"));
    let status = std::process::Command::new("python3")
        .arg(script)
        .args(["key.pem", "cert.pem"])
        .arg(&out)
        .arg(mac)
        .current_dir(dir)
        .status()
        .ok()?;
    status.success().then_some(out)
}

async fn a_store_file_written_as_dotnet_writes_it_is_read() {
    use crate::skip_or_fail;
    use crate::support::tls::{export_pfx, openssl, openssl_available};
    if !openssl_available() {
        skip_or_fail!("openssl is not installed");
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=dotnet store",
            "-days",
            "30",
        ],
    );
    // The thumbprint as OpenSSL computes it, in OpenSSL's colon spelling.
    let fingerprint = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-in", "cert.pem", "-noout", "-fingerprint", "-sha1"])
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(fingerprint.stdout).unwrap();
    let fingerprint = fingerprint.trim().rsplit('=').next().unwrap().to_owned();
    // A password-protected copy made by OpenSSL, to compare keys with.
    export_pfx(
        dir,
        "key.pem",
        "cert.pem",
        "reference.pfx",
        "reference",
        &[],
    );
    let reference = CertificateKeyProvider::open(
        &CertificateSettings::Filesystem {
            path: dir.join("reference.pfx"),
            password: Some("reference".to_owned().into()),
        },
        SettingsGroup::Main,
    )
    .await
    .unwrap();

    for mac in ["sha1", "sha256"] {
        let Some(pfx) = absent_password_pfx(dir, mac) else {
            skip_or_fail!("python3 with libcrypto cannot write an absent-password PKCS#12 file");
        };
        let store = tempfile::tempdir().unwrap();
        let name = format!("{}.pfx", fingerprint.replace(':', ""));
        std::fs::copy(&pfx, store.path().join(&name)).unwrap();
        let provider = CertificateKeyProvider::open(
            &store_settings(&fingerprint, store.path()),
            SettingsGroup::Main,
        )
        .await
        .unwrap_or_else(|e| panic!("{mac}: {e}"));
        let secret = [3u8; 32];
        let wrapped = provider.wrap_symmetric_key(&secret).await.unwrap();
        assert_eq!(
            &reference.unwrap_symmetric_key(&wrapped).await.unwrap()[..],
            &secret,
            "{mac}"
        );
        // A password given for such a file is wrong: it has none.
        let with_password = CertificateKeyProvider::open(
            &CertificateSettings::Filesystem {
                path: store.path().join(&name),
                password: Some("anything".to_owned().into()),
            },
            SettingsGroup::Main,
        )
        .await;
        assert!(
            matches!(with_password, Err(KeyProviderError::Config { message: ref m, .. }) if m.contains("password")),
            "{mac}"
        );
    }
}

crate::tests! {
    current_thread: [
        the_certificate_is_found_by_thumbprint_in_any_spelling,
        a_file_is_matched_by_its_certificate_not_its_name,
        an_unknown_thumbprint_is_a_config_error_listing_the_store,
        a_missing_store_directory_is_a_config_error_naming_the_setting,
        a_store_file_named_for_the_thumbprint_that_cannot_be_opened_is_named,
        a_store_file_written_as_dotnet_writes_it_is_read,
    ],
}
