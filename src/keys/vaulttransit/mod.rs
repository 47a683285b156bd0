//! The `vaulttransit` RSA key provider (ours; upstream has none): a key in HashiCorp Vault's
//! Transit engine (or OpenBao's), which never leaves Vault. Vault encrypts and decrypts on
//! request, as an HSM or a cloud KMS does, so the service never holds the private key.
//!
//! Wrapping is Transit's `encrypt` (RSA-OAEP with SHA-256 for `rsa-2048`, `rsa-3072` and
//! `rsa-4096` keys; AES-GCM for `aes256-gcm96`) and unwrapping its `decrypt`. What is stored
//! is Transit's ciphertext text, `vault:v{version}:{base64}`: it names the key version, so a
//! key rotated inside Vault still decrypts what an older version wrapped (unless the
//! operator raises the key's `min_decryption_version` past it). The official service cannot
//! read such a wrap: `rotate-rsa-key` to a PFX first before switching back.
//!
//! Opening the provider reads the key (it must exist, support encryption and decryption and
//! be a usable type) and proves the token may encrypt and decrypt with it by a round trip
//! of random bytes, so a policy without `decrypt` stops start-up naming the setting.

mod settings;
pub use settings::*;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::vault_login::{VaultAnswer, VaultSession, encode_path};
use super::{KeyProviderError, RsaKeyProvider};
use crate::config::SettingsGroup;

/// Transit key types that can wrap the symmetric key.
const USABLE_TYPES: &[&str] = &["rsa-2048", "rsa-3072", "rsa-4096", "aes256-gcm96"];

/// A Transit key, reached through a logged-in Vault session.
pub struct VaultTransitKeyProvider {
    session: Arc<VaultSession>,
    settings: VaultTransitSettings,
    /// What the key was when opened, for `describe`.
    key: TransitKeyFacts,
}

/// What Vault says of the key (`GET {mount}/keys/{name}`).
#[derive(Debug, Clone)]
pub struct TransitKeyFacts {
    pub key_type: String,
    pub latest_version: u64,
    pub min_decryption_version: u64,
    pub exportable: bool,
}

impl VaultTransitKeyProvider {
    /// Logs in, reads the key and proves it encrypts and decrypts for this token.
    pub async fn open(
        settings: &VaultTransitSettings,
        _group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        let session = Arc::new(VaultSession::new(settings.login.clone())?);
        let key = read_key(&session, settings).await?;
        let provider = Self {
            session,
            settings: settings.clone(),
            key,
        };
        provider.prove_round_trip().await?;
        Ok(provider)
    }

    /// The key as Vault described it at opening.
    pub fn key_facts(&self) -> &TransitKeyFacts {
        &self.key
    }

    async fn prove_round_trip(&self) -> Result<(), KeyProviderError> {
        let mut probe = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(probe.as_mut_slice()).map_err(|e| {
            KeyProviderError::config(format!("no random bytes for the Transit test: {e}"))
        })?;
        let probe = probe;
        let wrapped = self.wrap_symmetric_key(probe.as_slice()).await?;
        let unwrapped = self
            .unwrap_symmetric_key(&wrapped)
            .await
            .map_err(|e| match e {
                KeyProviderError::UnwrapFailed { message, .. } => KeyProviderError::config(
                    format!("the Transit key cannot decrypt what it just encrypted ({message})"),
                ),
                other => other,
            })?;
        if unwrapped.as_slice() != probe.as_slice() {
            return Err(KeyProviderError::config(format!(
                "the Transit key `{}` decrypted a test value to something else; is {} the key meant?",
                self.settings.key_name, self.settings.key_name_setting
            )));
        }
        Ok(())
    }

    fn operation_path(&self, operation: &str) -> String {
        format!(
            "{}/{operation}/{}",
            encode_path(&self.settings.mount_point),
            encode_path(&self.settings.key_name)
        )
    }

    /// A refusal of `operation` made into the error an operator can act on.
    fn refusal(&self, operation: &str, answer: &VaultAnswer) -> KeyProviderError {
        refusal(&self.session, &self.settings, operation, answer)
    }
}

/// Reads the key's description and checks it can wrap.
async fn read_key(
    session: &VaultSession,
    settings: &VaultTransitSettings,
) -> Result<TransitKeyFacts, KeyProviderError> {
    let path = format!(
        "{}/keys/{}",
        encode_path(&settings.mount_point),
        encode_path(&settings.key_name)
    );
    let answer = session.call(Method::GET, &path, None).await?;
    if !answer.status.is_success() {
        return Err(refusal(session, settings, "read", &answer));
    }
    let data = &answer.body["data"];
    let key_type = data["type"].as_str().unwrap_or_default().to_owned();
    if !USABLE_TYPES.contains(&key_type.as_str()) {
        return Err(KeyProviderError::config(format!(
            "the Transit key `{}` ({}) is of type `{key_type}`, which cannot wrap the symmetric key; use {}",
            settings.key_name,
            settings.key_name_setting,
            USABLE_TYPES.join(", ")
        )));
    }
    for (capability, needed) in [
        ("supports_encryption", "encrypt"),
        ("supports_decryption", "decrypt"),
    ] {
        if data[capability] == Value::Bool(false) {
            return Err(KeyProviderError::config(format!(
                "the Transit key `{}` ({}) does not {needed}",
                settings.key_name, settings.key_name_setting
            )));
        }
    }
    Ok(TransitKeyFacts {
        key_type,
        latest_version: data["latest_version"].as_u64().unwrap_or(0),
        min_decryption_version: data["min_decryption_version"].as_u64().unwrap_or(0),
        exportable: data["exportable"].as_bool().unwrap_or(false),
    })
}

/// Vault's refusal of `operation` on the key, sorted: settings to fix, an outage, or (for
/// a decryption Vault could not do) a wrap this key cannot open.
fn refusal(
    session: &VaultSession,
    settings: &VaultTransitSettings,
    operation: &str,
    answer: &VaultAnswer,
) -> KeyProviderError {
    let reasons = answer.reasons();
    let said = if reasons.is_empty() {
        format!("{}", answer.status)
    } else {
        format!("{}: {reasons}", answer.status)
    };
    let key = format!(
        "Transit key `{}` at mount `{}` of {}",
        settings.key_name,
        settings.mount_point,
        session.peer()
    );
    let credentials = session.login().credentials_setting();
    match answer.status.as_u16() {
        403 => KeyProviderError::config(format!(
            "Vault refused to {operation} with the {key} ({said}); the policy of the token ({credentials}) must allow `update` on `{}` and `{}` and `read` on `{}`",
            format_args!("{}/encrypt/{}", settings.mount_point, settings.key_name),
            format_args!("{}/decrypt/{}", settings.mount_point, settings.key_name),
            format_args!("{}/keys/{}", settings.mount_point, settings.key_name),
        )),
        404 => KeyProviderError::config(format!(
            "Vault has no {key} ({said}); check {} and {}",
            settings.key_name_setting, settings.mount_point_setting
        )),
        // A ciphertext Vault cannot decrypt with this key: not its own, a version below
        // `min_decryption_version`, or damaged. Vault answers 400 for most of these, but 500
        // when RSA decryption itself fails ("failed to RSA decrypt the ciphertext"), which
        // no retry can change.
        400 | 500
            if operation == "decrypt" && (answer.status == 400 || said.contains("decrypt")) =>
        {
            KeyProviderError::unwrap_failed(format!(
                "the {key} cannot decrypt the stored symmetric key ({said})"
            ))
        }
        412 | 429 | 500..=599 => {
            KeyProviderError::unavailable(format!("Vault answered {said} to {operation}"))
        }
        _ => KeyProviderError::config(format!(
            "Vault answered {said} to {operation} with the {key}"
        )),
    }
}

#[async_trait]
impl RsaKeyProvider for VaultTransitKeyProvider {
    fn describe(&self) -> String {
        let login = self.session.login();
        let namespace = login
            .namespace
            .as_deref()
            .map(|n| format!(", namespace `{n}`"))
            .unwrap_or_default();
        format!(
            "Vault Transit key `{}` ({}, latest version {}, decrypts from version {}, {}) at mount `{}` of {}{namespace}, {} login",
            self.settings.key_name,
            self.key.key_type,
            self.key.latest_version,
            self.key.min_decryption_version,
            if self.key.exportable {
                "EXPORTABLE"
            } else {
                "not exportable"
            },
            self.settings.mount_point,
            login.server_uri,
            login.method.name(),
        )
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        let plaintext = Zeroizing::new(STANDARD.encode(key));
        let body = json!({ "plaintext": plaintext.as_str() });
        let answer = self
            .session
            .call(Method::POST, &self.operation_path("encrypt"), Some(&body))
            .await?;
        if !answer.status.is_success() {
            return Err(self.refusal("encrypt", &answer));
        }
        match answer.body["data"]["ciphertext"].as_str() {
            Some(ciphertext) if ciphertext.starts_with("vault:v") => {
                Ok(ciphertext.as_bytes().to_vec())
            }
            _ => Err(KeyProviderError::config(format!(
                "{} answered encrypt without a Transit ciphertext; is `{}` a Transit mount ({})?",
                self.session.peer(),
                self.settings.mount_point,
                self.settings.mount_point_setting
            ))),
        }
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let ciphertext = std::str::from_utf8(wrapped)
            .ok()
            .filter(|c| c.starts_with("vault:v"))
            .ok_or_else(|| {
                KeyProviderError::unwrap_failed(
                    "the stored symmetric key is not a Vault Transit ciphertext: another RSA key provider wrapped it",
                )
            })?;
        let body = json!({ "ciphertext": ciphertext });
        let answer = self
            .session
            .call(Method::POST, &self.operation_path("decrypt"), Some(&body))
            .await?;
        if !answer.status.is_success() {
            return Err(self.refusal("decrypt", &answer));
        }
        let plaintext = answer.body["data"]["plaintext"].as_str().ok_or_else(|| {
            KeyProviderError::unwrap_failed(format!(
                "{} answered decrypt without a plaintext",
                self.session.peer()
            ))
        })?;
        STANDARD.decode(plaintext).map(Zeroizing::new).map_err(|e| {
            KeyProviderError::unwrap_failed(format!(
                "{} answered decrypt with a plaintext that is not base64",
                self.session.peer()
            ))
            .caused_by(e)
        })
    }

    /// Reads the key: Vault answers, the login holds, the key is still there.
    async fn check_health(&self) -> Result<(), KeyProviderError> {
        read_key(&self.session, &self.settings).await.map(drop)
    }
}
