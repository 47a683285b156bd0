//! Every certificate source's settings, and every mistake naming its setting.

use secrecy::ExposeSecret;
use std::path::PathBuf;

use crate::config::*;
use crate::keys::RsaKeySettings;
use crate::keys::certificate::*;
use crate::keys::vault_login::VaultAuthMethod;
use crate::settings::test_env::{load_env, minimal, with, without};

fn certificate_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = without(
        without(minimal(), "keyConnectorSettings__certificate__provider"),
        "keyConnectorSettings__certificate__filesystemPath",
    );
    for (name, value) in pairs {
        env = with(
            env,
            &format!("keyConnectorSettings__certificate__{name}"),
            value,
        );
    }
    env
}

fn certificate(pairs: &[(&str, &str)]) -> Result<CertificateSettings, ConfigError> {
    match load_env(certificate_env(pairs))?.settings.rsa_key {
        RsaKeySettings::Certificate(certificate) => Ok(certificate),
        other => panic!("a certificate provider, not {other:?}"),
    }
}

#[test]
fn vault_settings_are_typed_with_upstreams_default_mount() {
    let vault = |mount: &str| {
        certificate(&[
            ("PROVIDER", "Vault"),
            ("vaultServerUri", "https://vault.example.com:8200/"),
            ("vaultToken", "hvs.token"),
            ("vaultSecretMountPoint", mount),
            ("vaultSecretPath", "/key-connector/cert/"),
            ("vaultSecretDataKey", "pfx"),
            ("vaultSecretFilePassword", "hunter2"),
        ])
        .unwrap()
    };
    let CertificateSettings::Vault(settings) = vault("  ") else {
        panic!("vault settings");
    };
    assert_eq!(settings.login.server_uri, "https://vault.example.com:8200");
    assert_eq!(settings.mount_point, "secret");
    assert_eq!(settings.secret_path, "key-connector/cert");
    assert_eq!(settings.data_key, "pfx");
    assert!(
        matches!(&settings.login.method, VaultAuthMethod::Token(token) if token.expose_secret() == "hvs.token")
    );
    assert_eq!(settings.password.unwrap().expose_secret(), "hunter2");
    let CertificateSettings::Vault(settings) = vault("kv/") else {
        panic!("vault settings");
    };
    assert_eq!(settings.mount_point, "kv");
    assert!(!format!("{:?}", vault("kv")).contains("hvs.token"));
    assert!(!format!("{:?}", vault("kv")).contains("hunter2"));
}

#[test]
fn vault_errors_name_the_setting() {
    let complete = [
        ("provider", "vault"),
        ("vaultServerUri", "http://vault:8200"),
        ("vaultToken", "hvs.token"),
        ("vaultSecretPath", "cert"),
        ("vaultSecretDataKey", "pfx"),
    ];
    for missing in [
        "vaultServerUri",
        "vaultToken",
        "vaultSecretPath",
        "vaultSecretDataKey",
    ] {
        let pairs: Vec<_> = complete
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let error = certificate(&pairs).unwrap_err();
        assert_eq!(
            error.env_var,
            format!("keyConnectorSettings__certificate__{missing}"),
            "{error}"
        );
    }
    let mut pairs = complete.to_vec();
    pairs[1] = ("vaultServerUri", "vault:8200");
    let error = certificate(&pairs).unwrap_err();
    assert_eq!(
        error.env_var,
        "keyConnectorSettings__certificate__vaultServerUri"
    );
}

#[test]
fn store_thumbprints_are_cleaned_as_upstream_does() {
    let expected = "3A1F0C9B8E7D6C5B4A39281706F5E4D3C2B1A098";
    for written in [
        "3A1F0C9B8E7D6C5B4A39281706F5E4D3C2B1A098",
        "3a1f0c9b8e7d6c5b4a39281706f5e4d3c2b1a098",
        "3A:1F:0C:9B:8E:7D:6C:5B:4A:39:28:17:06:F5:E4:D3:C2:B1:A0:98",
        "\u{200e}3a 1f 0c 9b 8e 7d 6c 5b 4a 39 28 17 06 f5 e4 d3 c2 b1 a0 98",
    ] {
        let settings = certificate(&[("provider", "store"), ("storeThumbprint", written)]).unwrap();
        let CertificateSettings::Store(settings) = settings else {
            panic!("store settings");
        };
        assert_eq!(
            settings,
            StoreCertificateSettings {
                thumbprint: expected.into(),
                directory: None,
                home: None,
            },
            "{written:?}"
        );
    }
    let settings = certificate(&[
        ("provider", "store"),
        ("storeThumbprint", expected),
        ("storeDirectory", "/srv/dotnet-store/my"),
    ])
    .unwrap();
    assert!(
        matches!(settings, CertificateSettings::Store(ref s) if s.directory == Some(PathBuf::from("/srv/dotnet-store/my")))
    );
    for (pairs, var) in [
        (vec![("provider", "store")], "storeThumbprint"),
        (
            vec![("provider", "store"), ("storeThumbprint", "3A1F")],
            "storeThumbprint",
        ),
    ] {
        let error = certificate(&pairs).unwrap_err();
        assert_eq!(
            error.env_var,
            format!("keyConnectorSettings__certificate__{var}")
        );
    }
}

#[test]
fn azure_storage_settings_are_typed_and_errors_name_the_setting() {
    let settings = certificate(&[
        ("provider", "azurestorage"),
        ("azureStorageConnectionString", "UseDevelopmentStorage=true"),
        ("azureStorageContainer", "certificates"),
        ("azureStorageFileName", "kc/key.pfx"),
        ("azureStorageFilePassword", "hunter2"),
    ])
    .unwrap();
    let CertificateSettings::AzureStorage(settings) = settings else {
        panic!("azurestorage settings");
    };
    assert_eq!(
        settings.account.blob_endpoint,
        "http://127.0.0.1:10000/devstoreaccount1"
    );
    assert_eq!(settings.container, "certificates");
    assert_eq!(settings.file_name, "kc/key.pfx");
    assert!(!format!("{settings:?}").contains("hunter2"));
    for (pairs, var) in [
        (
            vec![
                ("provider", "azurestorage"),
                (
                    "azureStorageConnectionString",
                    "AccountName=a;AccountKey=c2VjcmV0",
                ),
                ("azureStorageFileName", "key.pfx"),
            ],
            "azureStorageContainer",
        ),
        (
            vec![
                ("provider", "azurestorage"),
                (
                    "azureStorageConnectionString",
                    "AccountName=a;AccountKey=c2VjcmV0",
                ),
                ("azureStorageContainer", "Certs_Upper"),
                ("azureStorageFileName", "key.pfx"),
            ],
            "azureStorageContainer",
        ),
        (
            vec![
                ("provider", "azurestorage"),
                ("azureStorageConnectionString", "AccountKey=c2VjcmV0"),
                ("azureStorageContainer", "certs"),
                ("azureStorageFileName", "key.pfx"),
            ],
            "azureStorageConnectionString",
        ),
        (
            vec![
                ("provider", "azurestorage"),
                ("azureStorageConnectionString", "UseDevelopmentStorage=true"),
                ("azureStorageContainer", "certs"),
            ],
            "azureStorageFileName",
        ),
    ] {
        let error = certificate(&pairs).unwrap_err();
        assert_eq!(
            error.env_var,
            format!("keyConnectorSettings__certificate__{var}"),
            "{error}"
        );
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
    }
}

#[test]
fn vault_logins_beyond_a_token_are_typed_and_name_their_settings() {
    let base = [
        ("provider", "vault"),
        ("vaultServerUri", "https://vault:8200"),
        ("vaultSecretPath", "cert"),
        ("vaultSecretDataKey", "pfx"),
    ];
    let with_login = |extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        certificate(&pairs)
    };
    let Ok(CertificateSettings::Vault(settings)) = with_login(&[
        ("vaultAuthMethod", "AppRole"),
        ("vaultAppRoleRoleId", "role-1"),
        ("vaultAppRoleSecretId", "secret-1"),
        ("vaultNamespace", "/team-a/"),
    ]) else {
        panic!("approle settings");
    };
    assert!(matches!(
        &settings.login.method,
        VaultAuthMethod::AppRole { mount, .. } if mount == "approle"
    ));
    assert_eq!(settings.login.namespace.as_deref(), Some("team-a"));
    assert!(!format!("{settings:?}").contains("secret-1"));

    let Ok(CertificateSettings::Vault(settings)) = with_login(&[
        ("vaultAuthMethod", "kubernetes"),
        ("vaultKubernetesRole", "key-connector"),
        ("vaultAuthMountPoint", "k8s-prod"),
    ]) else {
        panic!("kubernetes settings");
    };
    assert!(matches!(
        &settings.login.method,
        VaultAuthMethod::Kubernetes { role, token_path, mount }
            if role == "key-connector" && mount == "k8s-prod"
                && token_path == std::path::Path::new(crate::keys::vault_login::KUBERNETES_TOKEN_PATH)
    ));

    let missing = with_login(&[("vaultAuthMethod", "approle"), ("vaultAppRoleRoleId", "r")])
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("keyConnectorSettings__certificate__vaultAppRoleSecretId"),
        "{missing}"
    );
    let unknown = with_login(&[("vaultAuthMethod", "ldap")])
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("keyConnectorSettings__certificate__vaultAuthMethod")
            && unknown.contains("ldap"),
        "{unknown}"
    );
}
