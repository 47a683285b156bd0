//! The `vault` certificate source: a PKCS#12 file kept base64-encoded under one key of a
//! HashiCorp Vault KV version 2 secret, read with a Vault token as upstream does (or after an
//! AppRole or Kubernetes login of ours: [`crate::keys::vault_login`]).
//!
//! HashiCorp publishes no Vault SDK for Rust (upstream uses the community VaultSharp library
//! for .NET), and reading a KV v2 secret is one documented HTTP call:
//! `GET {vaultServerUri}/v1/{mount}/data/{path}` with the token in `X-Vault-Token`, answered by
//! `{"data":{"data":{...},"metadata":{...}}}`. So this is that call over reqwest, which the
//! service already uses, rather than a third-party client with a wider surface.
//!
//! Like upstream, the latest version of the secret is read, and a blank mount point means
//! `secret` (VaultSharp's default for KV v2, and the mount a Vault dev server creates).

use base64::Engine;
use reqwest::Method;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::CertificateFile;
use super::VaultCertificateSettings;
use super::{
    CERTIFICATE_VAULT_SECRET_DATA_KEY, CERTIFICATE_VAULT_SECRET_FILE_PASSWORD,
    CERTIFICATE_VAULT_SECRET_MOUNT_POINT, CERTIFICATE_VAULT_SECRET_PATH,
};
use crate::config::SettingsGroup;
use crate::keys::KeyProviderError;
use crate::keys::vault_login::{VaultAnswer, VaultSession, encode_path};

/// Reads the secret and decodes the PKCS#12 file it holds.
pub(super) async fn read(
    settings: &VaultCertificateSettings,
    group: SettingsGroup,
) -> Result<CertificateFile, KeyProviderError> {
    let mount_var = CERTIFICATE_VAULT_SECRET_MOUNT_POINT.in_group(group);
    let data_key_var = CERTIFICATE_VAULT_SECRET_DATA_KEY.in_group(group);
    let location = format!(
        "Vault secret `{}` (KV v2 mount `{}`) at {}",
        settings.secret_path, settings.mount_point, settings.login.server_uri
    );
    let session = VaultSession::new(settings.login.clone())?;
    let answer = session
        .call(Method::GET, &secret_path(settings), None)
        .await?;
    if !answer.status.is_success() {
        return Err(status_error(&answer, settings, &location, group));
    }
    let mut document = answer.body;
    let data = match document.pointer_mut("/data/data") {
        Some(Value::Object(data)) => data,
        Some(Value::Null) => {
            return Err(KeyProviderError::config(format!(
                "the latest version of the {location} is deleted or destroyed; restore it or write the certificate again"
            )));
        }
        _ => {
            return Err(KeyProviderError::config(format!(
                "the {location} has no `data.data` object; is `{}` a KV version 2 mount ({mount_var})?",
                settings.mount_point
            )));
        }
    };
    let encoded = take_string(data, &settings.data_key, &location, group)?;
    // .NET's Convert.FromBase64String skips whitespace; secrets pasted from `base64` have line breaks.
    let compact: Zeroizing<String> =
        Zeroizing::new(encoded.chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| {
                KeyProviderError::config(format!(
                    "the value of `{}` in the {location} is not base64 ({data_key_var}); store the .pfx as `base64 -w0 cert.pfx`",
                    settings.data_key
                ))
            })?,
    );
    Ok(CertificateFile::new(
        bytes,
        settings.password.as_ref(),
        format!(
            "certificate from key `{}` of the {location}",
            settings.data_key
        ),
        CERTIFICATE_VAULT_SECRET_FILE_PASSWORD.in_group(group),
    ))
}

/// `{mount}/data/{path}` below `/v1/`, each segment of mount and path percent-encoded.
fn secret_path(settings: &VaultCertificateSettings) -> String {
    format!(
        "{}/data/{}",
        encode_path(&settings.mount_point),
        encode_path(&settings.secret_path)
    )
}

/// Removes the data key's string value from the secret's data, so only that copy needs wiping.
fn take_string(
    data: &mut Map<String, Value>,
    key: &str,
    location: &str,
    group: SettingsGroup,
) -> Result<Zeroizing<String>, KeyProviderError> {
    let data_key_var = CERTIFICATE_VAULT_SECRET_DATA_KEY.in_group(group);
    match data.remove(key) {
        Some(Value::String(value)) => Ok(Zeroizing::new(value)),
        Some(_) => Err(KeyProviderError::config(format!(
            "the value of `{key}` in the {location} is not a string ({data_key_var}); store the .pfx as base64 text"
        ))),
        None => {
            let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let present = if keys.is_empty() {
                "it has no keys".to_owned()
            } else {
                format!("its keys: {}", keys.join(", "))
            };
            Err(KeyProviderError::config(format!(
                "the {location} has no key `{key}` ({data_key_var}); {present}"
            )))
        }
    }
}

/// Vault's answer to a failed read, sorted: settings to fix, or Vault to wait for.
fn status_error(
    answer: &VaultAnswer,
    settings: &VaultCertificateSettings,
    location: &str,
    group: SettingsGroup,
) -> KeyProviderError {
    let path_var = CERTIFICATE_VAULT_SECRET_PATH.in_group(group);
    let mount_var = CERTIFICATE_VAULT_SECRET_MOUNT_POINT.in_group(group);
    let status = answer.status;
    // Vault explains failures as `{"errors":["..."]}`; the messages name no secrets.
    let reasons = answer.reasons();
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(": {reasons}")
    };
    if status == reqwest::StatusCode::NOT_FOUND
        && let Some(message) = deleted_version(&answer.body, location)
    {
        return KeyProviderError::config(message);
    }
    let credentials = settings.login.credentials_setting();
    match status.as_u16() {
        403 => KeyProviderError::config(format!(
            "Vault refused the token for the {location} (403{reasons}); check {credentials}: it must be valid and its policy must allow `read` on `{}/data/{}`",
            settings.mount_point, settings.secret_path
        )),
        404 => KeyProviderError::config(format!(
            "Vault has no {location} (404{reasons}); check {path_var} and {mount_var} (the mount must be a KV version 2 engine)"
        )),
        // Sealed, standby without forwarding, rate-limited, or a replica not caught up yet.
        412 | 429 | 500..=599 => {
            KeyProviderError::unavailable(format!("Vault answered {status}{reasons}"))
        }
        _ => KeyProviderError::config(format!(
            "Vault answered {status}{reasons} to reading the {location}"
        )),
    }
}

/// KV v2 answers a read of a deleted or destroyed latest version with 404 and the version's
/// metadata (`{"data":{"data":null,"metadata":{"deletion_time":"…","destroyed":…}}}`), not
/// with an error: that 404 says the secret is there but its latest version is gone.
fn deleted_version(body: &Value, location: &str) -> Option<String> {
    let metadata = body.pointer("/data/metadata")?;
    let version = metadata
        .get("version")
        .and_then(Value::as_u64)
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    if metadata.get("destroyed").and_then(Value::as_bool) == Some(true) {
        return Some(format!(
            "the latest version{version} of the {location} is destroyed; write the certificate again as a new version"
        ));
    }
    let deleted = metadata
        .get("deletion_time")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    deleted.then(|| {
        format!(
            "the latest version{version} of the {location} is deleted; undelete it (`vault kv undelete`) or write the certificate again"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::certificate::CERTIFICATE_VAULT_LOGIN_PATHS;
    use crate::keys::vault_login::{VaultAuthMethod, VaultLogin};
    use secrecy::SecretString;

    fn settings(mount: &str, path: &str) -> VaultCertificateSettings {
        VaultCertificateSettings {
            login: VaultLogin {
                server_uri: "https://vault.example.com:8200".into(),
                namespace: None,
                method: VaultAuthMethod::Token(SecretString::from("hvs.secret-token")),
                paths: &CERTIFICATE_VAULT_LOGIN_PATHS,
                group: SettingsGroup::Main,
            },
            mount_point: mount.into(),
            secret_path: path.into(),
            data_key: "pfx".into(),
            password: None,
        }
    }

    #[test]
    fn the_url_is_the_kv2_data_path_with_segments_encoded() {
        assert_eq!(
            secret_path(&settings("secret", "key-connector/cert")),
            "secret/data/key-connector/cert"
        );
        assert_eq!(
            secret_path(&settings("team kv", "a b/ü")),
            "team%20kv/data/a%20b/%C3%BC"
        );
    }

    fn answer(status: reqwest::StatusCode, body: &str) -> VaultAnswer {
        VaultAnswer {
            status,
            body: serde_json::from_str(body).unwrap(),
        }
    }

    #[test]
    fn statuses_are_sorted_into_settings_and_outages() {
        let s = settings("secret", "cert");
        let denied = status_error(
            &answer(
                reqwest::StatusCode::FORBIDDEN,
                r#"{"errors":["permission denied"]}"#,
            ),
            &s,
            "x",
            SettingsGroup::Main,
        );
        assert!(
            matches!(&denied, KeyProviderError::Config { message: m, .. } if m.contains("permission denied") && m.contains("keyConnectorSettings__certificate__vaultToken")),
            "{denied}"
        );
        assert!(!denied.to_string().contains("hvs.secret-token"));
        let missing = status_error(
            &answer(reqwest::StatusCode::NOT_FOUND, r#"{"errors":[]}"#),
            &s,
            "x",
            SettingsGroup::Main,
        );
        assert!(
            matches!(&missing, KeyProviderError::Config { message: m, .. } if m.contains("keyConnectorSettings__certificate__vaultSecretPath")),
            "{missing}"
        );
        // Vault's answer to a deleted latest version, as a real server sends it.
        let deleted = status_error(
            &answer(
                reqwest::StatusCode::NOT_FOUND,
                r#"{"request_id":"cd8f23a5","lease_id":"","renewable":false,"lease_duration":0,"data":{"data":null,"metadata":{"created_time":"2026-12-06T16:01:13.714919044Z","custom_metadata":null,"deletion_time":"2026-12-06T16:01:13.732485523Z","destroyed":false,"version":1}},"wrap_info":null,"warnings":null,"auth":null}"#,
            ),
            &s,
            "x",
            SettingsGroup::Main,
        );
        assert!(
            matches!(&deleted, KeyProviderError::Config { message: m, .. } if m.contains("latest version (1)") && m.contains("deleted") && !m.contains("vaultSecretPath")),
            "{deleted}"
        );
        let destroyed = status_error(
            &answer(
                reqwest::StatusCode::NOT_FOUND,
                r#"{"data":{"data":null,"metadata":{"deletion_time":"","destroyed":true,"version":4}}}"#,
            ),
            &s,
            "x",
            SettingsGroup::Main,
        );
        assert!(
            matches!(&destroyed, KeyProviderError::Config { message: m, .. } if m.contains("latest version (4)") && m.contains("destroyed")),
            "{destroyed}"
        );
        let sealed = status_error(
            &answer(
                reqwest::StatusCode::SERVICE_UNAVAILABLE,
                r#"{"errors":["Vault is sealed"]}"#,
            ),
            &s,
            "x",
            SettingsGroup::Main,
        );
        assert!(
            matches!(&sealed, KeyProviderError::Unavailable { message: m, .. } if m.contains("sealed")),
            "{sealed}"
        );
    }
}
