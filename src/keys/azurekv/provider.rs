//! Azure Key Vault: the `azurekv` RSA key provider, and the plumbing it shares with the
//! `azurekv` certificate source (`certificate/azure_key_vault.rs`).
//!
//! Upstream builds a `ClientSecretCredential` from `azureKeyvaultAdTenantId`, `...AppId` and
//! `...Secret`, reads the key's current version once (`GetKey`), and then wraps with
//! `RSA-OAEP` (SHA-1) through the SDK's `CryptographyClient`. That client encrypts locally
//! with the key's public half when it could read the key, and decrypts in the vault with the
//! versioned key id. This provider does exactly that: `GetKey` at start-up, local RSA-OAEP
//! SHA-1 with the key's modulus and exponent, `POST keys/{name}/{version}/decrypt` with
//! `alg: RSA-OAEP`. So the stored base64 is the same raw RSA ciphertext either way, and a
//! Managed HSM URI works like a vault URI.
//!
//! The clients are Microsoft's official crates (`azure_identity`, the Key Vault keys and
//! secrets clients). They discover the token scope from the vault's authentication challenge
//! and check that it belongs to the vault's domain, cache tokens, and refuse to send one
//! over anything but HTTPS. `AZURE_AUTHORITY_HOST` selects a sovereign cloud's sign-in host,
//! as in every Azure SDK. They run on this service's own HTTP client (reqwest on rustls and
//! aws-lc-rs, the system's trusted roots) with bounded waits and a few retries.
//!
//! Key material: the unwrapped key is moved into [`Zeroizing`] as soon as the SDK returns it;
//! the SDK's own copies (the response body, the client secret it holds) are outside this
//! crate's control.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents,
};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret;
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions, Transport,
};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, KeyClientGetKeyOptions, KeyOperationParameters, KeyProperties, KeyType,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::AzureKeyVaultKeySettings;
use super::{RSA_KEY_AZURE_KEYVAULT_KEY_NAME, RSA_KEY_AZURE_KEYVAULT_URI};
use crate::config::{AzureAdCredentials, SettingPath, SettingsGroup};
use crate::keys::remote::error_chain;
use crate::keys::{KeyProviderError, RsaKeyProvider};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for one HTTP attempt; the SDK retries on top of it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The SDK's retries: transient statuses (408, 429, 5xx) and connection failures.
const MAX_RETRIES: u32 = 2;
/// Bound for one operation, retries and the token request included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach Azure. The default is what production uses: the service's own HTTP client
/// with the system's trusted roots, and the sign-in host of `AZURE_AUTHORITY_HOST` or
/// Azure's public cloud.
#[derive(Clone, Default)]
pub struct AzureConnection {
    /// The HTTP client for Entra ID and the vault.
    pub http: Option<reqwest::Client>,
    /// The Entra ID sign-in host, e.g. `https://login.microsoftonline.us`.
    pub authority_host: Option<String>,
}

impl AzureConnection {
    /// Options for an SDK client (credential or vault) on this connection.
    pub(crate) fn client_options(&self) -> Result<ClientOptions, KeyProviderError> {
        let http = match &self.http {
            Some(client) => client.clone(),
            None => crate::keys::remote::http_client(CONNECT_TIMEOUT, ATTEMPT_TIMEOUT)?,
        };
        let mut options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(200),
                max_retries: MAX_RETRIES,
                max_total_elapsed: azure_core::time::Duration::seconds(
                    OPERATION_TIMEOUT.as_secs() as i64
                ),
                max_delay: azure_core::time::Duration::seconds(2),
            }),
            ..ClientOptions::default()
        };
        if let Some(host) = &self.authority_host {
            let mut cloud = CustomConfiguration::default();
            cloud.authority_host = host.clone();
            options.cloud = Some(Arc::new(CloudConfiguration::from(cloud)));
        }
        Ok(options)
    }
}

/// Upstream's credential: an Entra ID application and its client secret.
pub(crate) fn credential(
    settings: &AzureAdCredentials,
    connection: &AzureConnection,
    setting_prefix: SettingPath,
) -> Result<Arc<ClientSecretCredential>, KeyProviderError> {
    let options = ClientSecretCredentialOptions {
        client_options: connection.client_options()?,
    };
    ClientSecretCredential::new(
        &settings.tenant_id,
        settings.client_id.clone(),
        Secret::new(settings.client_secret.expose_secret().to_owned()),
        Some(options),
    )
    .map_err(|e| {
        KeyProviderError::config(format!(
            "cannot use the Entra ID application ({setting_prefix}TenantId, {setting_prefix}AppId, \
             {setting_prefix}Secret): {}",
            error_chain(&e)
        ))
        .caused_by(e)
    })
}

/// A vault URL the SDK refuses, naming the setting that holds it.
pub(crate) fn unusable_vault_uri(
    setting: SettingPath,
    vault_uri: &str,
    reason: impl std::fmt::Display,
) -> KeyProviderError {
    KeyProviderError::config(format!("{setting} `{vault_uri}` is not usable: {reason}"))
}

/// The settings to check when a vault object cannot be used: `{uri} and {name}, and
/// {credential_prefix}*`.
pub(crate) fn vault_settings_hint(
    uri: SettingPath,
    name: SettingPath,
    credential_prefix: SettingPath,
) -> String {
    format!("{uri} and {name}, and {credential_prefix}*")
}

/// What an operation was, for wording its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Reading the key, secret or certificate.
    Read,
    /// Decrypting the stored symmetric key.
    Decrypt,
}

/// Runs an SDK call under the whole-operation bound.
pub(crate) async fn bounded<T>(
    call: impl Future<Output = azure_core::Result<T>>,
) -> Result<azure_core::Result<T>, KeyProviderError> {
    tokio::time::timeout(OPERATION_TIMEOUT, call)
        .await
        .map_err(|_| {
            KeyProviderError::unavailable(format!(
                "Azure Key Vault did not answer within {} s",
                OPERATION_TIMEOUT.as_secs()
            ))
        })
}

/// Sorts an SDK failure into what an operator must fix, what may pass, and a stored key this
/// vault key cannot decrypt. `object` names what was asked for; `settings` names the
/// settings that select it.
pub(crate) fn classify(
    operation: Operation,
    error: &azure_core::Error,
    object: &str,
    settings: &str,
) -> KeyProviderError {
    let detail = error_chain(error);
    if let Some(reason) = crate::keys::remote::untrusted_certificate(error) {
        return KeyProviderError::config(format!(
            "Azure presented a TLS certificate this host does not trust ({reason}) for {object}; {}",
            crate::keys::remote::TRUST_HINT
        ));
    }
    if caused_by_no_answer(error) {
        return KeyProviderError::unavailable(format!("Azure did not answer: {detail}"));
    }
    match error.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let code = error_code.as_deref().unwrap_or("");
            match status {
                400 if operation == Operation::Decrypt => KeyProviderError::unwrap_failed(format!(
                    "{object} cannot decrypt the stored symmetric key ({detail}): it was wrapped by another key \
                     or another version of this key; check {settings}"
                )),
                401 => KeyProviderError::config(format!(
                    "Azure Key Vault rejected the token for {object} ({detail}); check that the application's tenant \
                     is the vault's tenant ({settings})"
                )),
                403 => KeyProviderError::config(format!(
                    "Azure Key Vault denied access to {object} ({detail}); give the application the permissions \
                     listed in docs/key-providers.md (access policy or Azure RBAC role) and check the vault's firewall"
                )),
                404 => KeyProviderError::config(format!(
                    "{object} does not exist ({code}); check {settings}"
                )),
                408 | 429 | 500..=599 => KeyProviderError::unavailable(format!(
                    "Azure Key Vault answered HTTP {status} for {object}: {detail}"
                )),
                _ => KeyProviderError::config(format!(
                    "Azure Key Vault refused the request for {object} (HTTP {status}): {detail}; check {settings}"
                )),
            }
        }
        ErrorKind::Connection | ErrorKind::Io => {
            KeyProviderError::unavailable(format!("Azure did not answer: {detail}"))
        }
        ErrorKind::Credential if let Some(refusal) = entra_refusal(error) => {
            KeyProviderError::config(format!(
                "Entra ID refused to issue a token for {object}: {refusal}; check {settings}"
            ))
        }
        ErrorKind::Credential if entra_was_unavailable(error) => KeyProviderError::unavailable(
            format!("Entra ID could not issue a token for {object} now: {detail}"),
        ),
        ErrorKind::Credential => KeyProviderError::config(format!(
            "Entra ID did not issue a token for {object}: {detail}; check {settings}"
        )),
        _ => KeyProviderError::config(format!(
            "cannot call Azure Key Vault for {object}: {detail}; check {settings}"
        )),
    }
}

/// Entra ID's own refusal (`AADSTS…`: a wrong secret, an unknown tenant or application)
/// when the SDK could not read Entra's error body. `azure_identity` 1.0 reads its
/// description as a borrowed string, which fails on the escaped CRLFs that Entra puts in
/// every description; the description is then only in the parse error's text.
fn entra_refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    crate::keys::remote::causes(error)
        .filter_map(|e| e.downcast_ref::<azure_core::Error>())
        .filter(|e| matches!(e.kind(), ErrorKind::DataConversion))
        .find_map(|e| {
            let text = e.to_string();
            let start = text.find("AADSTS")?;
            let description = &text[start..];
            // The first line of the description, quoted and escaped as the parse error has it.
            let end = ["\"", "\r", "\n", "\\r", "\\n"]
                .iter()
                .filter_map(|stop| description.find(stop))
                .min()
                .unwrap_or(description.len());
            Some(description[..end].trim_end().to_owned())
        })
}

/// Whether a token request failed for a reason that may pass: Entra ID answered 408, 429 or
/// 5xx (after the SDK's retries), or answered something that is not its JSON (an outage
/// page from a proxy or load balancer). Entra's refusals are sorted out before, by
/// [`entra_refusal`], and stay configuration errors.
fn entra_was_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::keys::remote::causes(error)
        .filter_map(|e| e.downcast_ref::<azure_core::Error>())
        .any(|e| match e.kind() {
            ErrorKind::HttpResponse { status, .. } => {
                matches!(u16::from(*status), 408 | 429 | 500..=599)
            }
            ErrorKind::DataConversion => true,
            _ => false,
        })
}

/// Whether a connection failure or timeout lies anywhere in the error's causes (a token
/// request that could not reach Entra ID arrives as a credential error).
fn caused_by_no_answer(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::keys::remote::causes(error).any(|e| {
        e.downcast_ref::<reqwest::Error>()
            .is_some_and(|http| http.is_connect() || http.is_timeout())
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::TimedOut
                )
            })
    })
}

/// The `azurekv` RSA key provider.
pub struct AzureKeyVaultKeyProvider {
    client: KeyClient,
    key_name: String,
    /// The version tried first to decrypt, and read by `/health`: the current one at
    /// start-up, as upstream's key id, or the older version found to open the stored key
    /// (see `unwrap_with_older_version`).
    key_version: std::sync::RwLock<String>,
    /// The current version at start-up, whose public half wraps.
    current_version: String,
    public_key: OaepPublicEncryptingKey,
    vault_uri: String,
    settings_hint: String,
}

/// The start of the names of the Entra ID settings (`...TenantId`, `...AppId`, `...Secret`).
const KEY_CREDENTIAL_PREFIX: SettingPath = SettingPath::rsa_key("azureKeyvaultAd");

impl AzureKeyVaultKeyProvider {
    /// Signs in, reads the key's current version and keeps its public half. Messages name
    /// the settings of `group`, where the key was configured.
    pub async fn open(
        settings: &AzureKeyVaultKeySettings,
        group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        Self::open_with(settings, group, AzureConnection::default()).await
    }

    /// Like [`AzureKeyVaultKeyProvider::open`], reaching Azure as `connection` says.
    pub async fn open_with(
        settings: &AzureKeyVaultKeySettings,
        group: SettingsGroup,
        connection: AzureConnection,
    ) -> Result<Self, KeyProviderError> {
        let credential_prefix = KEY_CREDENTIAL_PREFIX.in_group(group);
        let credential = credential(&settings.credentials, &connection, credential_prefix)?;
        let options = KeyClientOptions {
            client_options: connection.client_options()?,
            ..KeyClientOptions::default()
        };
        let client =
            KeyClient::new(&settings.vault_uri, credential, Some(options)).map_err(|e| {
                unusable_vault_uri(
                    RSA_KEY_AZURE_KEYVAULT_URI.in_group(group),
                    &settings.vault_uri,
                    error_chain(&e),
                )
            })?;
        let object = format!(
            "key `{}` in Azure Key Vault {}",
            settings.key_name, settings.vault_uri
        );
        let settings_hint = vault_settings_hint(
            RSA_KEY_AZURE_KEYVAULT_URI.in_group(group),
            RSA_KEY_AZURE_KEYVAULT_KEY_NAME.in_group(group),
            credential_prefix,
        );
        let (key_version, public_key) =
            read_key(&client, &settings.key_name, None, &object, &settings_hint).await?;
        Ok(Self {
            client,
            key_name: settings.key_name.clone(),
            vault_uri: settings.vault_uri.clone(),
            key_version: std::sync::RwLock::new(key_version.clone()),
            current_version: key_version,
            public_key,
            settings_hint,
        })
    }
}

impl AzureKeyVaultKeyProvider {
    fn decrypting_version(&self) -> String {
        self.key_version
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `POST keys/{name}/{version}/decrypt` with `RSA-OAEP`.
    async fn decrypt_with(
        &self,
        version: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let parameters = KeyOperationParameters {
            algorithm: Some(EncryptionAlgorithm::RsaOaep),
            value: Some(wrapped.to_vec()),
            ..KeyOperationParameters::default()
        };
        let body: RequestContent<KeyOperationParameters> =
            parameters.try_into().map_err(|e: azure_core::Error| {
                KeyProviderError::config(format!("cannot encode the decrypt request: {e}"))
                    .caused_by(e)
            })?;
        let object = format!("version {version} of key `{}`", self.key_name);
        let result = bounded(self.client.decrypt(&self.key_name, version, body, None))
            .await?
            .and_then(|response| response.into_model())
            .map_err(|e| classify(Operation::Decrypt, &e, &object, &self.settings_hint))?;
        match result.result {
            Some(plaintext) => Ok(Zeroizing::new(plaintext)),
            None => Err(KeyProviderError::unavailable(
                "Azure Key Vault answered the decryption without a result",
            )),
        }
    }

    /// Upstream decrypts only with the version current at start, so a new version made in
    /// the vault (by hand or by a rotation policy) locks it out of its database. Here the
    /// older enabled versions are tried, newest first, and the one that opens the stored key
    /// is used for decryption from then on. Listing versions needs the `list` permission;
    /// without it the original failure stands, saying so.
    ///
    /// `tried` (besides the current version) has already failed. A version that cannot be
    /// used (disabled since, or not allowed to decrypt) is passed over; an outage ends the
    /// search.
    async fn unwrap_with_older_version(
        &self,
        wrapped: &[u8],
        current_failure: String,
        tried: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        use futures_util::TryStreamExt;
        let object = format!("the versions of key `{}`", self.key_name);
        let pager = self
            .client
            .list_key_properties_versions(&self.key_name, None)
            .map_err(|e| classify(Operation::Read, &e, &object, &self.settings_hint))?;
        let listed: Result<Vec<KeyProperties>, azure_core::Error> =
            match tokio::time::timeout(OPERATION_TIMEOUT, pager.try_collect()).await {
                Ok(listed) => listed,
                Err(_) => {
                    return Err(KeyProviderError::unavailable(format!(
                        "Azure Key Vault did not list {object} within {} s",
                        OPERATION_TIMEOUT.as_secs()
                    )));
                }
            };
        let mut versions = match listed {
            Ok(versions) => versions,
            Err(error) => {
                return match classify(Operation::Read, &error, &object, &self.settings_hint) {
                    KeyProviderError::Config {
                        message: reason, ..
                    } => Err(KeyProviderError::unwrap_failed(format!(
                        "{current_failure}. Older versions of the key were not tried, because they cannot be listed: {reason}"
                    ))),
                    other => Err(other),
                };
            }
        };
        versions.sort_by_key(|v| std::cmp::Reverse(v.attributes.as_ref().and_then(|a| a.created)));
        let mut unusable: Option<String> = None;
        for properties in versions {
            let enabled = properties
                .attributes
                .as_ref()
                .and_then(|a| a.enabled)
                .unwrap_or(true);
            let Some(version) = properties.kid.as_deref().and_then(version_of_key_id) else {
                continue;
            };
            if !enabled || version == self.current_version || version == tried {
                continue;
            }
            match self.decrypt_with(&version, wrapped).await {
                Ok(plaintext) => {
                    tracing::warn!(
                        key = %self.key_name,
                        current_version = %self.current_version,
                        version = %version,
                        "the stored symmetric key was wrapped by an older version of the Key Vault key; \
                         decrypting with that version (do not disable or delete it)"
                    );
                    *self
                        .key_version
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = version;
                    return Ok(plaintext);
                }
                Err(KeyProviderError::UnwrapFailed { .. }) => continue,
                Err(KeyProviderError::Config {
                    message: reason, ..
                }) => {
                    unusable.get_or_insert(reason);
                }
                Err(outage) => return Err(outage),
            }
        }
        Err(KeyProviderError::unwrap_failed(match unusable {
            None => {
                format!("{current_failure}. No other enabled version of the key opens it either")
            }
            Some(reason) => format!(
                "{current_failure}. No other enabled version of the key opens it either; one could not be used: {reason}"
            ),
        }))
    }
}

/// `GetKey`: the version and public half of an enabled RSA key that may decrypt.
async fn read_key(
    client: &KeyClient,
    name: &str,
    version: Option<&str>,
    object: &str,
    settings: &str,
) -> Result<(String, OaepPublicEncryptingKey), KeyProviderError> {
    let options = KeyClientGetKeyOptions {
        key_version: version.map(str::to_owned),
        ..KeyClientGetKeyOptions::default()
    };
    let key = bounded(client.get_key(name, Some(options)))
        .await?
        .and_then(|response| response.into_model())
        .map_err(|e| classify(Operation::Read, &e, object, settings))?;
    if key
        .attributes
        .as_ref()
        .and_then(|a| a.enabled)
        .is_some_and(|enabled| !enabled)
    {
        return Err(KeyProviderError::config(format!(
            "{object} is disabled; enable it in the vault"
        )));
    }
    let Some(jwk) = key.key else {
        return Err(KeyProviderError::unavailable(format!(
            "Azure Key Vault returned {object} without its key material"
        )));
    };
    if !matches!(jwk.kty, Some(KeyType::Rsa | KeyType::RsaHsm)) {
        return Err(KeyProviderError::config(format!(
            "{object} is not an RSA key (type {:?}); the symmetric key is wrapped with RSA-OAEP, as upstream does",
            jwk.kty
        )));
    }
    if let Some(operations) = &jwk.key_ops
        && !operations.iter().any(|op| op == "decrypt")
    {
        return Err(KeyProviderError::config(format!(
            "{object} does not allow the decrypt operation (it allows {}); add `decrypt` to its permitted operations",
            operations.join(", ")
        )));
    }
    let key_version = jwk
        .kid
        .as_deref()
        .and_then(version_of_key_id)
        .ok_or_else(|| {
            KeyProviderError::unavailable(format!(
                "Azure Key Vault returned {object} without a versioned key id"
            ))
        })?;
    let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
        return Err(KeyProviderError::unavailable(format!(
            "Azure Key Vault returned {object} without its modulus and exponent"
        )));
    };
    // JWK allows (and some producers send) a leading zero byte; the RSA parser does not.
    let unpadded = |bytes: &[u8]| -> Vec<u8> {
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        bytes[first..].to_vec()
    };
    let (n, e) = (unpadded(n), unpadded(e));
    let public: PublicEncryptingKey = PublicKeyComponents { n, e }.try_into().map_err(|_| {
        KeyProviderError::config(format!(
            "the public half of {object} is not a usable RSA key ({})",
            crate::keys::RSA_KEY_SIZES
        ))
    })?;
    let public = OaepPublicEncryptingKey::new(public).map_err(|e| {
        KeyProviderError::config(format!(
            "the public half of {object} cannot do RSA-OAEP: {e}"
        ))
        .caused_by(e)
    })?;
    Ok((key_version, public))
}

/// The version in `https://{vault}/keys/{name}/{version}`.
fn version_of_key_id(kid: &str) -> Option<String> {
    let path = kid.split_once("://")?.1.split_once('/')?.1;
    let mut segments = path.trim_end_matches('/').split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("keys"), Some(_), Some(version), None) if !version.is_empty() => {
            Some(version.to_owned())
        }
        _ => None,
    }
}

#[async_trait]
impl RsaKeyProvider for AzureKeyVaultKeyProvider {
    fn describe(&self) -> String {
        let decrypting = self.decrypting_version();
        let older = if decrypting == self.current_version {
            String::new()
        } else {
            format!(", the stored key decrypted by older version {decrypting}")
        };
        format!(
            "Azure Key Vault key {} version {}{older} in {} (RSA-OAEP)",
            self.key_name, self.current_version, self.vault_uri
        )
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        crate::keys::oaep_encrypt(&self.public_key, &OAEP_SHA1_MGF1SHA1, key)
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        // A database can hold keys wrapped by two versions at once: the stored key under an
        // older version (found at start-up) and a pending key that `rotate-symmetric-key`
        // wrapped under the current one. So every version is tried, the pinned one first.
        let pinned = self.decrypting_version();
        let failure = match self.decrypt_with(&pinned, wrapped).await {
            Err(KeyProviderError::UnwrapFailed { message, .. }) => message,
            other => return other,
        };
        if pinned != self.current_version {
            match self.decrypt_with(&self.current_version, wrapped).await {
                Err(KeyProviderError::UnwrapFailed { .. }) => {}
                other => return other,
            }
        }
        self.unwrap_with_older_version(wrapped, failure, &pinned)
            .await
    }

    /// Reads the key version again: proves the vault answers, the credential still works and
    /// the key is still enabled.
    async fn check_health(&self) -> Result<(), KeyProviderError> {
        let version = self.decrypting_version();
        let object = format!("version {version} of key `{}`", self.key_name);
        read_key(
            &self.client,
            &self.key_name,
            Some(&version),
            &object,
            &self.settings_hint,
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_versions_come_from_key_ids() {
        assert_eq!(
            version_of_key_id("https://contoso.vault.azure.net/keys/kc/0123abcd").as_deref(),
            Some("0123abcd")
        );
        assert_eq!(
            version_of_key_id("https://contoso.managedhsm.azure.net/keys/kc/77/").as_deref(),
            Some("77")
        );
        assert_eq!(
            version_of_key_id("https://contoso.vault.azure.net/keys/kc"),
            None
        );
        assert_eq!(
            version_of_key_id("https://contoso.vault.azure.net/secrets/kc/1"),
            None
        );
    }
}
