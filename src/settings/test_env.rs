//! Settings environments for the tests of the settings modules: a minimal valid one, and
//! ways to add or remove a variable.

use super::{LoadedSettings, load};
use crate::config::{ConfigError, ConfigSource};

pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn minimal() -> Vec<(String, String)> {
    env(&[
        (
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.com/",
        ),
        (
            "keyConnectorSettings__identityServerUri",
            "http://identity:5000",
        ),
        ("keyConnectorSettings__database__provider", "sqlite"),
        (
            "keyConnectorSettings__database__sqliteConnectionString",
            "Data Source=/data/keys.db",
        ),
        ("keyConnectorSettings__rsaKey__provider", "certificate"),
        ("keyConnectorSettings__certificate__provider", "filesystem"),
        (
            "keyConnectorSettings__certificate__filesystemPath",
            "/data/key.pfx",
        ),
    ])
}

pub(crate) fn load_env(env: Vec<(String, String)>) -> Result<LoadedSettings, ConfigError> {
    load(&ConfigSource { file: None, env })
}

pub(crate) fn with(
    mut env: Vec<(String, String)>,
    name: &str,
    value: &str,
) -> Vec<(String, String)> {
    env.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    env.push((name.to_owned(), value.to_owned()));
    env
}

pub(crate) fn without(mut env: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    env
}
