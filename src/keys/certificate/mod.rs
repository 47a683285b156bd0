//! The `certificate` RSA key provider: the private key of a PKCS#12 certificate file.
//!
//! The certificate comes from a certificate source (`certificate:provider`): a file
//! (`filesystem`), the .NET certificate store (`dotnet_store`), an Azure Storage blob
//! ([`azure_storage`]), an Azure Key Vault certificate (`azure_key_vault`) or a HashiCorp Vault
//! secret (`vault`). Each yields the PKCS#12 bytes and their password; decoding and the key
//! are the same whatever the source. Wrapping is RSA-OAEP with SHA-1 and MGF1-SHA-1, exactly
//! as upstream's .NET `RSAEncryptionPadding.OaepSHA1`, so databases written by either side
//! unwrap on the other.

#[cfg(feature = "azurekv")]
mod azure_key_vault;
pub mod azure_storage;
mod dotnet_store;
mod remote;
mod settings;
mod vault;

use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

pub use settings::*;

use super::{KeyProviderError, RsaKeyProvider};
use crate::config::SettingsGroup;
use crate::pkcs12;

/// An RSA key pair held in memory for OAEP-SHA-1 wrapping.
pub struct CertificateKeyProvider {
    description: String,
    key: Arc<OaepKeyPair>,
}

struct OaepKeyPair {
    private: OaepPrivateDecryptingKey,
    public: OaepPublicEncryptingKey,
}

impl OaepKeyPair {
    fn from_pkcs8(der: &[u8]) -> Result<Self, KeyProviderError> {
        let private = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| {
            KeyProviderError::config(format!(
                "the certificate's private key is not a usable RSA key ({e}; {})",
                super::RSA_KEY_SIZES
            ))
            .caused_by(e)
        })?;
        let public = OaepPublicEncryptingKey::new(private.public_key()).map_err(|e| {
            KeyProviderError::config(format!(
                "unusable RSA public key ({e}; {})",
                super::RSA_KEY_SIZES
            ))
            .caused_by(e)
        })?;
        let private = OaepPrivateDecryptingKey::new(private).map_err(|e| {
            KeyProviderError::config(format!("unusable RSA private key: {e}")).caused_by(e)
        })?;
        Ok(Self { private, public })
    }
}

impl CertificateKeyProvider {
    /// Loads the certificate named by settings of `group` and keeps its private key; messages
    /// name that group's settings.
    pub async fn open(
        source: &CertificateSettings,
        group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        let file = CertificateFile::read(source, group).await?;
        Self::from_file(file).await
    }

    /// Loads a certificate from Azure Key Vault, reaching Azure as `connection` says
    /// (production uses [`CertificateKeyProvider::open`]).
    #[cfg(feature = "azurekv")]
    pub async fn open_azure_key_vault(
        settings: &AzureKeyVaultCertificateSettings,
        connection: crate::keys::azurekv::AzureConnection,
    ) -> Result<Self, KeyProviderError> {
        Self::from_file(azure_key_vault::read_with(settings, connection).await?).await
    }

    async fn from_file(file: CertificateFile) -> Result<Self, KeyProviderError> {
        let password = file.password.clone();
        let bytes = file.bytes.clone();
        let pkcs8 = tokio::task::spawn_blocking(move || {
            pkcs12::private_key_pkcs8(&bytes, password.as_deref().map(|p| p.as_str()))
        })
        .await
        .map_err(|e| {
            KeyProviderError::config(format!("certificate loading failed: {e}")).caused_by(e)
        })?
        .map_err(|e| file.error(e))?;
        let key = OaepKeyPair::from_pkcs8(&pkcs8)?;
        let bits = key.public.key_size_bits();
        Ok(Self {
            description: format!("{} (RSA {bits}-bit, OAEP SHA-1)", file.description),
            key: Arc::new(key),
        })
    }

    /// Builds a provider from a PKCS#8 private key already in memory (development and tests).
    pub fn from_pkcs8(
        der: &[u8],
        description: impl Into<String>,
    ) -> Result<Self, KeyProviderError> {
        Ok(Self {
            description: description.into(),
            key: Arc::new(OaepKeyPair::from_pkcs8(der)?),
        })
    }
}

/// A PKCS#12 file fetched from its certificate source, not yet decoded.
pub(crate) struct CertificateFile {
    pub bytes: Arc<Zeroizing<Vec<u8>>>,
    pub password: Option<Zeroizing<String>>,
    /// Where it came from, for logs (no secrets).
    pub description: String,
    /// The setting that holds the password (or why there is none), for error messages.
    password_setting: String,
}

impl CertificateFile {
    fn new(
        bytes: Zeroizing<Vec<u8>>,
        password: Option<&SecretString>,
        description: String,
        password_setting: impl std::fmt::Display,
    ) -> Self {
        Self {
            bytes: Arc::new(bytes),
            password: password.map(|p| Zeroizing::new(p.expose_secret().to_owned())),
            description,
            password_setting: password_setting.to_string(),
        }
    }

    /// Fetches the file named by the certificate settings of `group`.
    pub async fn read(
        source: &CertificateSettings,
        group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        match source {
            CertificateSettings::Filesystem { path, password } => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    KeyProviderError::config(format!(
                        "cannot read the certificate file {} ({}): {e}",
                        path.display(),
                        CERTIFICATE_FILESYSTEM_PATH.in_group(group)
                    ))
                    .caused_by(e)
                })?;
                Ok(Self::new(
                    Zeroizing::new(bytes),
                    password.as_ref(),
                    format!("certificate from file {}", path.display()),
                    CERTIFICATE_FILESYSTEM_PASSWORD.in_group(group),
                ))
            }
            CertificateSettings::Store(settings) => dotnet_store::read(settings, group).await,
            CertificateSettings::AzureStorage(settings) => {
                azure_storage::download(settings, group).await
            }
            CertificateSettings::Vault(settings) => vault::read(settings, group).await,
            #[cfg(feature = "azurekv")]
            CertificateSettings::AzureKeyVault(settings) => {
                azure_key_vault::read(settings, group).await
            }
            #[cfg(not(feature = "azurekv"))]
            CertificateSettings::AzureKeyVault(_) => Err(super::missing_feature("azurekv")),
        }
    }

    /// A decoding error as a configuration error naming the file and its password setting.
    pub fn error(&self, error: pkcs12::Pkcs12Error) -> KeyProviderError {
        KeyProviderError::config(format!(
            "cannot use the {}: {error} ({})",
            self.description, self.password_setting
        ))
        .caused_by(error)
    }
}

#[async_trait]
impl RsaKeyProvider for CertificateKeyProvider {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        let pair = Arc::clone(&self.key);
        let plain = Zeroizing::new(key.to_vec());
        on_blocking_pool(move || super::oaep_encrypt(&pair.public, &OAEP_SHA1_MGF1SHA1, &plain))
            .await
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let pair = Arc::clone(&self.key);
        let wrapped = wrapped.to_vec();
        on_blocking_pool(move || {
            let mut out = Zeroizing::new(vec![0u8; pair.private.min_output_size()]);
            let written = pair
                .private
                .decrypt(&OAEP_SHA1_MGF1SHA1, &wrapped, &mut out, None)
                .map_err(|_| {
                    KeyProviderError::unwrap_failed(
                        "RSA-OAEP decryption failed: the stored symmetric key was not wrapped by this certificate's key",
                    )
                })?
                .len();
            out.truncate(written);
            Ok(out)
        })
        .await
    }

    async fn check_health(&self) -> Result<(), KeyProviderError> {
        // The key pair is held in memory since start-up, as upstream caches its certificate.
        Ok(())
    }
}

/// Runs RSA work on the blocking pool, off the async workers.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KeyProviderError> + Send + 'static,
) -> Result<T, KeyProviderError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KeyProviderError::unavailable(format!("RSA task failed: {e}")).caused_by(e))?
}
