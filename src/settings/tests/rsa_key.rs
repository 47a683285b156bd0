//! Every RSA key provider's settings, and every mistake naming its setting.

use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::keys::RsaKeySettings;
use crate::keys::awskms::AwsKmsSettings;
use crate::keys::certificate::CertificateSettings;
use crate::keys::pkcs11::{MULTIARCH_LIB, Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType};
use crate::settings::test_env::{load_env, minimal, with, without};

#[test]
fn not_yet_built_providers_are_recognised_and_type_checked() {
    let env = with(
        minimal(),
        "keyConnectorSettings__rsaKey__provider",
        "AwsKms",
    );
    let env = with(
        env,
        "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
        " True ",
    );
    let env = with(env, "keyConnectorSettings__rsaKey__provider", "GcpKms");
    let env = gcp_env(env);
    let loaded = load_env(env).unwrap();
    assert!(matches!(loaded.settings.rsa_key, RsaKeySettings::GcpKms(_)));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let env = with(
        minimal(),
        "keyConnectorSettings__database__provider",
        "postgresql",
    );
    let error = load_env(env).unwrap_err();
    assert_eq!(
        error.env_var,
        "keyConnectorSettings__database__postgreSqlConnectionString"
    );
}

fn pkcs11_env() -> Vec<(String, String)> {
    let mut env = minimal();
    for (name, value) in [
        ("keyConnectorSettings__rsaKey__provider", "PKCS11"),
        (
            "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
            "/opt/hsm/libpkcs11.so",
        ),
        (
            "keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber",
            " 0012AB ",
        ),
        ("KEYCONNECTORSETTINGS__RSAKEY__PKCS11LOGINUSERTYPE", "SO"),
        ("keyConnectorSettings__rsaKey__pkcs11LoginPin", "1234"),
        (
            "keyConnectorSettings__rsaKey__pkcs11PrivateKeyLabel",
            "kc key",
        ),
    ] {
        env = with(env, name, value);
    }
    without(env, "keyConnectorSettings__certificate__provider")
}

fn pkcs11(env: Vec<(String, String)>) -> Pkcs11Settings {
    match load_env(env).unwrap().settings.rsa_key {
        RsaKeySettings::Pkcs11(settings) => settings,
        other => panic!("not pkcs11: {other:?}"),
    }
}

fn awskms(pairs: &[(&str, &str)]) -> Result<AwsKmsSettings, ConfigError> {
    let mut env = with(
        minimal(),
        "keyConnectorSettings__rsaKey__provider",
        "awskms",
    );
    for (name, value) in pairs {
        env = with(env, name, value);
    }
    match load_env(env)?.settings.rsa_key {
        RsaKeySettings::AwsKms(settings) => Ok(settings),
        other => panic!("not awskms: {other:?}"),
    }
}

#[test]
fn pkcs11_settings_are_read_case_insensitively_from_the_environment() {
    let loaded = load_env(pkcs11_env()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let settings = pkcs11(pkcs11_env());
    assert_eq!(settings.library_path, Path::new("/opt/hsm/libpkcs11.so"));
    assert_eq!(settings.token_serial, "0012AB");
    assert_eq!(settings.user_type, Pkcs11UserType::SecurityOfficer);
    assert_eq!(settings.pin.as_ref().unwrap().expose_secret(), "1234");
    assert_eq!(settings.key, Pkcs11KeySelector::Label("kc key".into()));
    assert!(settings.certificate.is_none());
    assert!(!format!("{settings:?}").contains("1234"));

    // Upstream looks up by id whenever one is set.
    let settings = pkcs11(with(
        pkcs11_env(),
        "keyConnectorSettings__rsaKey__pkcs11PrivateKeyId",
        " 18446744073709551615 ",
    ));
    assert_eq!(settings.key, Pkcs11KeySelector::Id(u64::MAX));

    for (user_type, expected) in [
        ("user", Pkcs11UserType::User),
        ("Context_Specific", Pkcs11UserType::ContextSpecific),
    ] {
        let env = with(
            pkcs11_env(),
            "keyConnectorSettings__rsaKey__pkcs11LoginUserType",
            user_type,
        );
        assert_eq!(pkcs11(env).user_type, expected);
    }
    let env = without(
        pkcs11_env(),
        "keyConnectorSettings__rsaKey__pkcs11LoginUserType",
    );
    assert_eq!(pkcs11(env).user_type, Pkcs11UserType::User);
}

#[test]
fn pkcs11_provider_picks_upstreams_library_and_a_certificate_is_optional() {
    let env = without(
        pkcs11_env(),
        "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
    );
    for (provider, file) in [
        ("yubihsm", "/pkcs11/yubihsm_pkcs11.so"),
        ("OpenSC", "/opensc-pkcs11.so"),
    ] {
        let env = with(
            env.clone(),
            "keyConnectorSettings__rsaKey__pkcs11Provider",
            provider,
        );
        let path = pkcs11(env).library_path;
        assert_eq!(path, PathBuf::from(format!("{MULTIARCH_LIB}{file}")));
    }
    let env = with(
        pkcs11_env(),
        "keyConnectorSettings__certificate__provider",
        "filesystem",
    );
    let env = with(
        env,
        "keyConnectorSettings__certificate__filesystemPath",
        "/etc/bitwarden/cert.pfx",
    );
    assert!(matches!(
        pkcs11(env).certificate,
        Some(CertificateSettings::Filesystem { ref path, .. }) if path == Path::new("/etc/bitwarden/cert.pfx")
    ));
}

#[test]
fn pkcs11_errors_name_the_setting() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
            None,
            "rsaKey:pkcs11LibraryPath",
        ),
        (
            "keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber",
            None,
            "rsaKey:pkcs11SlotTokenSerialNumber",
        ),
        (
            "keyConnectorSettings__rsaKey__pkcs11LoginUserType",
            Some("admin"),
            "rsaKey:pkcs11LoginUserType",
        ),
        (
            "keyConnectorSettings__rsaKey__pkcs11PrivateKeyLabel",
            None,
            "rsaKey:pkcs11PrivateKeyLabel",
        ),
        (
            "keyConnectorSettings__rsaKey__pkcs11PrivateKeyId",
            Some("0x10"),
            "rsaKey:pkcs11PrivateKeyId",
        ),
        (
            "keyConnectorSettings__certificate__provider",
            Some("cloud"),
            "certificate:provider",
        ),
    ];
    for (name, value, path) in cases {
        let env = match value {
            Some(value) => with(pkcs11_env(), name, value),
            None => without(pkcs11_env(), name),
        };
        let error = load_env(env).unwrap_err();
        assert_eq!(
            error.setting,
            format!("keyConnectorSettings:{path}"),
            "{name}: {error}"
        );
    }
    let env = without(
        pkcs11_env(),
        "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
    );
    let env = with(
        env,
        "keyConnectorSettings__rsaKey__pkcs11Provider",
        "thales",
    );
    let error = load_env(env).unwrap_err();
    assert_eq!(
        error.env_var,
        "keyConnectorSettings__rsaKey__pkcs11Provider"
    );
}

fn gcp_env(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    for (name, value) in [
        (
            "keyConnectorSettings__rsaKey__googleCloudProjectId",
            "acme-prod",
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudLocationId",
            "europe-west1",
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudKeyringId",
            "bitwarden",
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudKeyId",
            "key-connector",
        ),
        (
            "keyConnectorSettings__rsaKey__googleCloudKeyVersionId",
            " 3 ",
        ),
    ] {
        env = with(env, name, value);
    }
    env
}

#[test]
fn gcpkms_settings_make_the_key_version_name() {
    let env = gcp_env(with(
        minimal(),
        "keyConnectorSettings__rsaKey__provider",
        "gcpkms",
    ));
    let RsaKeySettings::GcpKms(settings) = load_env(env).unwrap().settings.rsa_key else {
        panic!("not gcpkms");
    };
    assert_eq!(
        settings.key_version_name(),
        "projects/acme-prod/locations/europe-west1/keyRings/bitwarden/cryptoKeys/key-connector/cryptoKeyVersions/3"
    );
}

#[test]
fn gcpkms_mistakes_name_the_setting() {
    let base = gcp_env(with(
        minimal(),
        "keyConnectorSettings__rsaKey__provider",
        "gcpkms",
    ));
    let missing = without(
        base.clone(),
        "keyConnectorSettings__rsaKey__googleCloudKeyringId",
    );
    let error = load_env(missing).unwrap_err();
    assert_eq!(
        error.env_var,
        "keyConnectorSettings__rsaKey__googleCloudKeyringId"
    );
    let slashed = with(
        base,
        "keyConnectorSettings__rsaKey__googleCloudKeyId",
        "keys/other",
    );
    let error = load_env(slashed).unwrap_err();
    assert_eq!(
        error.env_var,
        "keyConnectorSettings__rsaKey__googleCloudKeyId"
    );
    assert!(error.to_string().contains("`/`"), "{error}");
}

fn azure_key_env() -> Vec<(String, String)> {
    let mut env = with(
        minimal(),
        "keyConnectorSettings__rsaKey__provider",
        "AzureKv",
    );
    for (name, value) in [
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultUri",
            "https://contoso.vault.azure.net/",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultKeyName",
            "key-connector",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultAdTenantId",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultAdAppId",
            "00000000-1111-2222-3333-444444444444",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultAdSecret",
            "s3cr3t~value",
        ),
    ] {
        env = with(env, name, value);
    }
    env
}

#[test]
fn azurekv_key_settings_read_upstream_names_and_keep_the_secret_out_of_debug() {
    let loaded = load_env(azure_key_env()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let RsaKeySettings::AzureKeyVault(settings) = &loaded.settings.rsa_key else {
        panic!("not azurekv");
    };
    assert_eq!(settings.vault_uri, "https://contoso.vault.azure.net/");
    assert_eq!(settings.key_name, "key-connector");
    assert_eq!(
        settings.credentials.client_id,
        "00000000-1111-2222-3333-444444444444"
    );
    assert_eq!(
        settings.credentials.client_secret.expose_secret(),
        "s3cr3t~value"
    );
    assert!(!format!("{settings:?}").contains("s3cr3t"));
}

#[test]
fn azurekv_mistakes_name_the_setting() {
    let cases = [
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultUri",
            Some("http://contoso.vault.azure.net/"),
            "https://",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultKeyName",
            Some("my_key"),
            "letters, digits and hyphens",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultAdSecret",
            None,
            "client secret",
        ),
        (
            "keyConnectorSettings__rsaKey__azureKeyvaultAdTenantId",
            None,
            "tenant",
        ),
    ];
    for (name, value, expected) in cases {
        let env = match value {
            Some(value) => with(azure_key_env(), name, value),
            None => without(azure_key_env(), name),
        };
        let error = load_env(env).unwrap_err();
        assert_eq!(error.env_var, name, "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn azurekv_certificate_settings_read_upstream_names() {
    let mut env = with(
        minimal(),
        "keyConnectorSettings__certificate__provider",
        "azurekv",
    );
    for (name, value) in [
        (
            "keyConnectorSettings__certificate__azureKeyvaultUri",
            "https://contoso.vault.azure.net",
        ),
        (
            "keyConnectorSettings__certificate__azureKeyvaultCertificateName",
            "kc-cert",
        ),
        (
            "keyConnectorSettings__certificate__azureKeyvaultAdTenantId",
            "contoso.onmicrosoft.com",
        ),
        (
            "keyConnectorSettings__certificate__azureKeyvaultAdAppId",
            "app",
        ),
        (
            "keyConnectorSettings__certificate__azureKeyvaultAdSecret",
            "secret",
        ),
    ] {
        env = with(env, name, value);
    }
    let loaded = load_env(env).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let RsaKeySettings::Certificate(CertificateSettings::AzureKeyVault(settings)) =
        &loaded.settings.rsa_key
    else {
        panic!("not an azurekv certificate");
    };
    assert_eq!(settings.certificate_name, "kc-cert");
    assert_eq!(settings.credentials.tenant_id, "contoso.onmicrosoft.com");
}

#[test]
fn awskms_settings_read_upstream_names() {
    let settings = awskms(&[
        ("keyConnectorSettings__rsaKey__awsKeyId", " alias/kc "),
        ("KEYCONNECTORSETTINGS__RSAKEY__AWSREGION", "eu-west-1"),
        (
            "keyConnectorSettings__rsaKey__awsAccessKeyId",
            "AKIAEXAMPLE",
        ),
        (
            "keyConnectorSettings__rsaKey__awsAccessKeySecret",
            "s3cret/value",
        ),
        (
            "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            "True",
        ),
    ])
    .unwrap();
    assert_eq!(settings.key_id, "alias/kc");
    assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
    assert!(settings.use_symmetric_encryption);
    let credentials = settings.credentials.as_ref().unwrap();
    assert_eq!(credentials.access_key_id, "AKIAEXAMPLE");
    assert_eq!(
        credentials.secret_access_key.expose_secret(),
        "s3cret/value"
    );
    assert!(
        !format!("{settings:?}").contains("s3cret"),
        "the secret must not appear in Debug output"
    );
}

#[test]
fn awskms_without_access_keys_uses_the_default_chain_and_rsa_mode() {
    let settings = awskms(&[
        (
            "keyConnectorSettings__rsaKey__awsKeyId",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
        ("keyConnectorSettings__rsaKey__awsAccessKeyId", " "),
        ("keyConnectorSettings__rsaKey__awsAccessKeySecret", ""),
    ])
    .unwrap();
    assert!(settings.credentials.is_none());
    assert!(settings.region.is_none());
    assert!(!settings.use_symmetric_encryption);
}

#[test]
fn awskms_mistakes_name_the_setting() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "keyConnectorSettings__rsaKey__awsKeyId"),
        (
            &[
                ("keyConnectorSettings__rsaKey__awsKeyId", "k"),
                ("keyConnectorSettings__rsaKey__awsAccessKeyId", "AKIA"),
            ],
            "keyConnectorSettings__rsaKey__awsAccessKeySecret",
        ),
        (
            &[
                ("keyConnectorSettings__rsaKey__awsKeyId", "k"),
                (
                    "keyConnectorSettings__rsaKey__awsAccessKeySecret",
                    "SECRETVALUE",
                ),
            ],
            "keyConnectorSettings__rsaKey__awsAccessKeyId",
        ),
        (
            &[
                ("keyConnectorSettings__rsaKey__awsKeyId", "k"),
                (
                    "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
                    "1",
                ),
            ],
            "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
        ),
    ];
    for (pairs, env_var) in cases {
        let error = awskms(pairs).unwrap_err();
        assert_eq!(error.env_var, env_var, "{error}");
        assert!(!error.to_string().contains("SECRETVALUE"), "{error}");
    }
}
