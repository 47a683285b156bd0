//! The `vault` certificate source: a PKCS#12 file kept base64-encoded under one key of a
//! HashiCorp Vault KV version 2 secret, read with a Vault token as upstream does.
//!
//! HashiCorp publishes no Vault SDK for Rust (upstream uses the community VaultSharp library
//! for .NET), and reading a KV v2 secret is one documented HTTP call:
//! `GET {vaultServerUri}/v1/{mount}/data/{path}` with the token in `X-Vault-Token`, answered by
//! `{"data":{"data":{...},"metadata":{...}}}`. So this is that call over reqwest, which the
//! service already uses, rather than a third-party client with a wider surface.
//!
//! Like upstream, the latest version of the secret is read, and a blank mount point means
//! `secret` (VaultSharp's default for KV v2, and the mount a Vault dev server creates).

use std::fmt::Write as _;

use base64::Engine;
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::VaultCertificateSettings;
use super::{
    CERTIFICATE_VAULT_SECRET_DATA_KEY, CERTIFICATE_VAULT_SECRET_FILE_PASSWORD,
    CERTIFICATE_VAULT_SECRET_MOUNT_POINT, CERTIFICATE_VAULT_SECRET_PATH, CERTIFICATE_VAULT_TOKEN,
};
use super::{CertificateFile, remote};
use crate::config::SettingsGroup;
use crate::keys::KeyProviderError;

/// Reads the secret and decodes the PKCS#12 file it holds.
pub(super) async fn read(
    settings: &VaultCertificateSettings,
    group: SettingsGroup,
) -> Result<CertificateFile, KeyProviderError> {
    let token_var = CERTIFICATE_VAULT_TOKEN.in_group(group);
    let mount_var = CERTIFICATE_VAULT_SECRET_MOUNT_POINT.in_group(group);
    let data_key_var = CERTIFICATE_VAULT_SECRET_DATA_KEY.in_group(group);
    let url = secret_url(settings);
    let location = format!(
        "Vault secret `{}` (KV v2 mount `{}`) at {}",
        settings.secret_path, settings.mount_point, settings.server_uri
    );
    let mut token = HeaderValue::from_str(settings.token.expose_secret()).map_err(|_| {
        KeyProviderError::config(format!(
            "the Vault token ({token_var}) has characters an HTTP header cannot carry"
        ))
    })?;
    token.set_sensitive(true);

    let response = remote::client()?
        .get(&url)
        .header("X-Vault-Token", token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| remote::unreachable(&format!("Vault at {}", settings.server_uri), e))?;
    let status = response.status();
    let body = remote::read_body(response, "Vault").await?;
    if !status.is_success() {
        return Err(status_error(status, &body, settings, &location, group));
    }

    let mut document: Value = serde_json::from_slice(&body).map_err(|e| {
        KeyProviderError::config(format!(
            "the {location} is not a KV version 2 answer ({e}); is `{}` a KV version 2 mount ({mount_var})?",
            settings.mount_point
        ))
        .caused_by(e)
    })?;
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

/// `{server}/v1/{mount}/data/{path}`, each segment of mount and path percent-encoded.
fn secret_url(settings: &VaultCertificateSettings) -> String {
    format!(
        "{}/v1/{}/data/{}",
        settings.server_uri,
        encode_path(&settings.mount_point),
        encode_path(&settings.secret_path)
    )
}

/// Percent-encodes everything but unreserved characters and the `/` between segments.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
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
    status: reqwest::StatusCode,
    body: &[u8],
    settings: &VaultCertificateSettings,
    location: &str,
    group: SettingsGroup,
) -> KeyProviderError {
    let token_var = CERTIFICATE_VAULT_TOKEN.in_group(group);
    let path_var = CERTIFICATE_VAULT_SECRET_PATH.in_group(group);
    let mount_var = CERTIFICATE_VAULT_SECRET_MOUNT_POINT.in_group(group);
    // Vault explains failures as `{"errors":["..."]}`; the messages name no secrets.
    let reasons = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errors").and_then(Value::as_array).map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match status.as_u16() {
        403 => KeyProviderError::config(format!(
            "Vault refused the token for the {location} (403{reasons}); check {token_var}: it must be valid and its policy must allow `read` on `{}/data/{}`",
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(mount: &str, path: &str) -> VaultCertificateSettings {
        VaultCertificateSettings {
            server_uri: "https://vault.example.com:8200".into(),
            token: SecretString::from("hvs.secret-token"),
            mount_point: mount.into(),
            secret_path: path.into(),
            data_key: "pfx".into(),
            password: None,
        }
    }

    #[test]
    fn the_url_is_the_kv2_data_path_with_segments_encoded() {
        assert_eq!(
            secret_url(&settings("secret", "key-connector/cert")),
            "https://vault.example.com:8200/v1/secret/data/key-connector/cert"
        );
        assert_eq!(
            secret_url(&settings("team kv", "a b/ü")),
            "https://vault.example.com:8200/v1/team%20kv/data/a%20b/%C3%BC"
        );
    }

    #[test]
    fn statuses_are_sorted_into_settings_and_outages() {
        let s = settings("secret", "cert");
        let denied = status_error(
            reqwest::StatusCode::FORBIDDEN,
            br#"{"errors":["permission denied"]}"#,
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
            reqwest::StatusCode::NOT_FOUND,
            br#"{"errors":[]}"#,
            &s,
            "x",
            SettingsGroup::Main,
        );
        assert!(
            matches!(&missing, KeyProviderError::Config { message: m, .. } if m.contains("keyConnectorSettings__certificate__vaultSecretPath")),
            "{missing}"
        );
        let sealed = status_error(
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            br#"{"errors":["Vault is sealed"]}"#,
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
