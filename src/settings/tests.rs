//! Loading as a whole: sources, names, required and invalid values, warnings, transfers,
//! and the catalog they are read by.

use secrecy::ExposeSecret;
use std::path::Path;

use super::test_env::{env, load_env, minimal, with, without};
use super::*;
use crate::config::catalog::DATABASE_PROVIDER;
use crate::keys::awskms::RSA_KEY_AWS_KEY_ID;
use crate::keys::certificate::CertificateSettings;

mod rsa_key;

#[test]
fn every_setting_is_listed_once_and_shown_in_help() {
    let help = help();
    let settings: Vec<_> = catalog().rows().collect();
    for (index, setting) in settings.iter().enumerate() {
        assert!(
            !settings[..index].iter().any(|s| s.path == setting.path),
            "{} is listed twice",
            setting.path
        );
        assert!(help.contains(&setting.path.env_var()), "{}", setting.path);
    }
}

#[test]
fn transfer_and_rotate_groups_accept_their_sections_only() {
    let catalog = catalog();
    assert!(catalog.is_known("transferto:rsakey:awskeyid"));
    assert!(catalog.is_known("transferto:database:provider"));
    assert!(catalog.is_known("transferto:lockfilepath"));
    assert!(catalog.is_known("rotateto:certificate:filesystempath"));
    assert!(!catalog.is_known("rotateto:database:provider"));
    assert!(!catalog.is_known("rotateto:lockfilepath"));
    assert!(!catalog.is_known("transferto:webvaulturi"));
    assert!(catalog.lists(RSA_KEY_AWS_KEY_ID.in_group(SettingsGroup::RotateTo)));
    assert!(!catalog.lists(DATABASE_PROVIDER.in_group(SettingsGroup::RotateTo)));
}

#[test]
fn environment_alone_configures_everything() {
    let loaded = load_env(minimal()).unwrap();
    let s = loaded.settings;
    assert_eq!(s.web_vault_origin, "https://vault.example.com");
    assert_eq!(s.identity_server_uri, "http://identity:5000");
    assert!(
        matches!(s.database, DatabaseSettings::Sqlite { ref connection } if connection.path == Path::new("/data/keys.db") && !connection.read_only)
    );
    assert!(
        matches!(s.rsa_key, RsaKeySettings::Certificate(CertificateSettings::Filesystem { ref path, password: None }) if path == Path::new("/data/key.pfx"))
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn names_are_case_insensitive() {
    let env = with(
        without(minimal(), "keyConnectorSettings__database__provider"),
        "KEYCONNECTORSETTINGS__DATABASE__PROVIDER",
        "JSON",
    );
    let env = with(
        env,
        "keyconnectorsettings__database__jsonfilepath",
        "/data/data.json",
    );
    let s = load_env(env).unwrap().settings;
    assert!(
        matches!(s.database, DatabaseSettings::Json { ref path } if path == Path::new("/data/data.json"))
    );
}

#[test]
fn each_missing_required_setting_is_named_in_both_spellings() {
    for (name, path) in [
        ("keyConnectorSettings__webVaultUri", "webVaultUri"),
        (
            "keyConnectorSettings__identityServerUri",
            "identityServerUri",
        ),
        (
            "keyConnectorSettings__database__provider",
            "database:provider",
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "database:sqliteConnectionString",
        ),
        ("keyConnectorSettings__rsaKey__provider", "rsaKey:provider"),
        (
            "keyConnectorSettings__certificate__provider",
            "certificate:provider",
        ),
        (
            "keyConnectorSettings__certificate__filesystemPath",
            "certificate:filesystemPath",
        ),
    ] {
        let error = load_env(without(minimal(), name)).unwrap_err();
        assert_eq!(error.env_var, name, "{error}");
        assert_eq!(error.setting, format!("keyConnectorSettings:{path}"));
        assert!(error.to_string().contains(name));
    }
}

#[test]
fn invalid_values_are_named() {
    let cases = [
        (
            "keyConnectorSettings__webVaultUri",
            "vault.example.com",
            "webVaultUri",
        ),
        (
            "keyConnectorSettings__identityServerUri",
            "ftp://identity",
            "identityServerUri",
        ),
        (
            "keyConnectorSettings__database__provider",
            "oracle",
            "database:provider",
        ),
        (
            "keyConnectorSettings__database__provider",
            "mongo",
            "database:provider",
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "Data Source=:memory:",
            "database:sqliteConnectionString",
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "Data Source=a.db;Password=x",
            "database:sqliteConnectionString",
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "Data Source=a.db;Mode=Memory",
            "database:sqliteConnectionString",
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "Data Source=a.db;Bogus=1",
            "database:sqliteConnectionString",
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "Mode=ReadOnly",
            "database:sqliteConnectionString",
        ),
        (
            "keyConnectorSettings__rsaKey__provider",
            "hsm",
            "rsaKey:provider",
        ),
        (
            "keyConnectorSettings__certificate__provider",
            "cloud",
            "certificate:provider",
        ),
        (
            "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            "yes",
            "rsaKey:awsUseSymmetricEncryption",
        ),
        (
            "keyConnectorSettings__rsaKey__pkcs11PrivateKeyId",
            "-1",
            "rsaKey:pkcs11PrivateKeyId",
        ),
    ];
    for (name, value, path) in cases {
        let error = load_env(with(minimal(), name, value)).unwrap_err();
        assert_eq!(
            error.setting,
            format!("keyConnectorSettings:{path}"),
            "{name}={value}: {error}"
        );
    }
    let mongo = load_env(with(
        minimal(),
        "keyConnectorSettings__database__provider",
        "mongo",
    ))
    .unwrap_err();
    assert!(mongo.message.contains("no longer"), "{mongo}");
}

#[test]
fn unknown_settings_warn_with_a_suggestion() {
    let env = with(
        minimal(),
        "keyConnectorSettings__database__jsonFilPath",
        "/x.json",
    );
    let loaded = load_env(env).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    let warning = &loaded.warnings[0];
    assert!(
        warning.contains("keyConnectorSettings__database__jsonFilPath"),
        "{warning}"
    );
    assert!(
        warning.contains("keyConnectorSettings:database:jsonFilePath"),
        "{warning}"
    );
}

#[test]
fn the_file_is_read_with_comments_and_overridden_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("appsettings.json");
    std::fs::write(
        &file,
        r#"{
  // upstream's shipped defaults, plus a comment
  "Serilog": { "MinimumLevel": "Information" },
  "KeyConnectorSettings": {
"webVaultUri": "https://vault.bitwarden.com/",
"identityServerUri": "https://identity.bitwarden.com/", /* trailing */
"database": { "provider": "json", "jsonFilePath": "/etc/bitwarden/data.json", },
"rsaKey": { "provider": "certificate" },
"certificate": { "provider": "filesystem", "filesystemPath": "/etc/bitwarden/key.pfx", "filesystemPassword": "http://not-a-comment" },
"transferTo": { "lockfilePath": "/etc/bitwarden/transfer.lock" },
  },
}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("appsettings.Staging.json"),
        r#"{"keyConnectorSettings": {"webVaultUri": "https://staging.example.com"}}"#,
    )
    .unwrap();
    let source = ConfigSource {
        file: Some(file.clone()),
        env: env(&[
            (
                "keyConnectorSettings__identityServerUri",
                "http://identity:5000",
            ),
            ("ASPNETCORE_ENVIRONMENT", "Staging"),
        ]),
    };
    let loaded = load(&source).unwrap();
    let s = &loaded.settings;
    assert_eq!(s.web_vault_origin, "https://staging.example.com");
    assert_eq!(s.identity_server_uri, "http://identity:5000");
    assert!(
        matches!(s.database, DatabaseSettings::Json { ref path } if path == Path::new("/etc/bitwarden/data.json"))
    );
    match &s.rsa_key {
        RsaKeySettings::Certificate(CertificateSettings::Filesystem {
            password: Some(p), ..
        }) => {
            assert_eq!(p.expose_secret(), "http://not-a-comment");
        }
        other => panic!("{other:?}"),
    }
    let transfer = s.transfer_to.as_ref().unwrap();
    assert!(transfer.target.is_none());
    assert_eq!(
        transfer.lockfile_path.as_deref(),
        Some(Path::new("/etc/bitwarden/transfer.lock"))
    );
    assert_eq!(loaded.config_file.as_deref(), Some(file.as_path()));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn a_missing_or_broken_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ConfigSource {
        file: Some(dir.path().join("nope.json")),
        env: minimal(),
    };
    assert!(
        load(&missing)
            .unwrap_err()
            .to_string()
            .contains("nope.json")
    );
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{ not json").unwrap();
    let error = load(&ConfigSource {
        file: Some(broken),
        env: minimal(),
    })
    .unwrap_err();
    assert!(error.to_string().contains("not valid JSON"), "{error}");
}

#[test]
fn a_transfer_target_is_detected() {
    let env = with(
        minimal(),
        "keyConnectorSettings__transferTo__lockfilePath",
        "/x.lock",
    );
    let env = with(
        env,
        "keyConnectorSettings__transferTo__database__provider",
        "json",
    );
    let env = with(
        env,
        "keyConnectorSettings__transferTo__database__jsonFilePath",
        "/t.json",
    );
    let env = with(
        env,
        "keyConnectorSettings__transferTo__rsaKey__provider",
        "certificate",
    );
    let env = with(
        env,
        "keyConnectorSettings__transferTo__certificate__provider",
        "filesystem",
    );
    let env = with(
        env,
        "keyConnectorSettings__transferTo__certificate__filesystemPath",
        "/t.pfx",
    );
    let loaded = load_env(env).unwrap();
    let target = loaded.settings.transfer_to.unwrap().target.unwrap();
    assert!(matches!(
        target.database,
        DatabaseSettings::Sqlite { .. } | DatabaseSettings::Json { .. }
    ));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn secrets_never_show_in_errors_or_debug() {
    let env = with(
        minimal(),
        "keyConnectorSettings__certificate__filesystemPassword",
        "hunter2",
    );
    let loaded = load_env(env).unwrap();
    assert!(!format!("{loaded:?}").contains("hunter2"));
    let env = with(
        minimal(),
        "keyConnectorSettings__database__sqliteConnectionString",
        "Data Source=a.db;Password=hunter2",
    );
    assert!(!load_env(env).unwrap_err().to_string().contains("hunter2"));
}

#[test]
fn a_value_in_the_wrong_place_never_comes_back_in_an_error() {
    // An operator may paste a password into the wrong setting: what is said about a value
    // names the setting (and the part of a connection string), never the text.
    let marker = "Pa55Marker";
    for (name, value) in [
        ("keyConnectorSettings__webVaultUri", marker.to_string()),
        (
            "keyConnectorSettings__identityServerUri",
            format!("ftp://{marker}"),
        ),
        (
            "keyConnectorSettings__database__provider",
            marker.to_string(),
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source=a.db;Mode={marker}"),
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source=a;{marker}=1"),
        ),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            format!("Data Source=a;{marker}"),
        ),
    ] {
        let error = load_env(with(minimal(), name, &value))
            .unwrap_err()
            .to_string();
        assert!(error.contains(name), "{error}");
        assert!(!error.contains(marker), "{name}: {error}");
    }
}

#[test]
fn user_key_binding_is_off_unless_set_on_and_a_bad_value_is_named_not_repeated() {
    assert_eq!(
        load_env(minimal()).unwrap().settings.user_key_binding,
        UserKeyBinding::Off
    );
    for (value, expected) in [("on", UserKeyBinding::On), (" ON ", UserKeyBinding::On)] {
        let env = with(minimal(), "keyConnectorSettings__userKeyBinding", value);
        let loaded = load_env(env).unwrap();
        assert_eq!(loaded.settings.user_key_binding, expected, "{value}");
        assert!(
            loaded.warnings.is_empty(),
            "a known setting: {:?}",
            loaded.warnings
        );
    }
    let env = with(
        minimal(),
        "keyConnectorSettings__userKeyBinding",
        "yes-s3cret",
    );
    let message = load_env(env).unwrap_err().to_string();
    assert!(
        message.contains("keyConnectorSettings__userKeyBinding"),
        "{message}"
    );
    assert!(message.contains("`off` or `on`"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    let env = with(minimal(), "keyConnectorSettings__userKeyBindng", "on");
    let warnings = load_env(env).unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("keyConnectorSettings:userKeyBinding")),
        "did you mean: {warnings:?}"
    );
}
