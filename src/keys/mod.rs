//! Who wraps the symmetric key: the organisation's RSA key.
//!
//! [`RsaKeyProvider`] is the second seam of the service. A provider wraps the 256-bit
//! symmetric key once when a database is new and unwraps it once at start-up; it never sees
//! a user key. Each provider lives in its own module; [`open_rsa_key_provider`] is the only
//! place that knows them all. The wrapping algorithm is fixed per provider by upstream's
//! choice (certificate and PKCS#11: RSA-OAEP with SHA-1), so that existing databases unwrap.

#[cfg(feature = "awskms")]
pub mod awskms;
#[cfg(feature = "azurekv")]
pub mod azurekv;
pub mod certificate;
#[cfg(feature = "gcpkms")]
pub mod gcpkms;
pub mod health;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub(crate) mod remote;

use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

#[cfg(not(all(feature = "pkcs11", feature = "awskms")))]
use crate::config::catalog::RSA_KEY_PROVIDER;
use crate::config::{RsaKeySettings, SettingsGroup};

#[derive(Debug, thiserror::Error)]
pub enum KeyProviderError {
    /// The provider is configured wrongly (missing file, wrong password, ...).
    #[error("{0}")]
    Config(String),
    /// The provider could not be reached now; retrying may help.
    #[error("the RSA key provider is unavailable: {0}")]
    Unavailable(String),
    /// The wrapped key could not be unwrapped with this RSA key.
    #[error("{0}")]
    UnwrapFailed(String),
}

#[async_trait]
pub trait RsaKeyProvider: Send + Sync + 'static {
    /// Names the provider and key for logs and reports, without secrets.
    fn describe(&self) -> String;

    /// Encrypts the symmetric key for storage.
    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError>;

    /// Decrypts a stored symmetric key.
    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError>;

    /// Proves the provider can still produce its public key (upstream's `/health`).
    async fn check_health(&self) -> Result<(), KeyProviderError>;
}

/// Builds the configured provider, loading its key material. Its calls are measured
/// (see [`crate::metrics`]).
/// `group` is where the settings came from; messages name the settings in that group.
pub async fn open_rsa_key_provider(
    settings: &RsaKeySettings,
    group: SettingsGroup,
) -> Result<Arc<dyn RsaKeyProvider>, KeyProviderError> {
    let provider = open_uninstrumented(settings, group).await?;
    Ok(Arc::new(Measured { provider }))
}

/// A provider whose calls are counted and timed.
struct Measured {
    provider: Arc<dyn RsaKeyProvider>,
}

impl Measured {
    fn finish<T>(
        &self,
        operation: &'static str,
        started: std::time::Instant,
        result: Result<T, KeyProviderError>,
    ) -> Result<T, KeyProviderError> {
        crate::metrics::rsa_key_operation(operation, result.is_ok(), started);
        result
    }
}

#[async_trait]
impl RsaKeyProvider for Measured {
    fn describe(&self) -> String {
        self.provider.describe()
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        let started = std::time::Instant::now();
        let result = self.provider.wrap_symmetric_key(key).await;
        self.finish("wrap", started, result)
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let started = std::time::Instant::now();
        let result = self.provider.unwrap_symmetric_key(wrapped).await;
        self.finish("unwrap", started, result)
    }

    async fn check_health(&self) -> Result<(), KeyProviderError> {
        let started = std::time::Instant::now();
        let result = self.provider.check_health().await;
        self.finish("health", started, result)
    }
}

/// The factory: the one place that knows every provider. Each opens with `group`, so its
/// messages name the settings the operator set.
async fn open_uninstrumented(
    settings: &RsaKeySettings,
    group: SettingsGroup,
) -> Result<Arc<dyn RsaKeyProvider>, KeyProviderError> {
    match settings {
        RsaKeySettings::Certificate(source) => Ok(Arc::new(
            certificate::CertificateKeyProvider::open_in(source, group).await?,
        )),
        #[cfg(feature = "pkcs11")]
        RsaKeySettings::Pkcs11(pkcs11_settings) => Ok(Arc::new(
            pkcs11::Pkcs11KeyProvider::open(pkcs11_settings, group).await?,
        )),
        #[cfg(not(feature = "pkcs11"))]
        RsaKeySettings::Pkcs11(_) => Err(KeyProviderError::Config(format!(
            "RSA key provider `pkcs11` ({}) needs the `pkcs11` \
             Cargo feature, which this build left out; rebuild with `--features pkcs11`",
            RSA_KEY_PROVIDER.in_group(group)
        ))),
        #[cfg(feature = "awskms")]
        RsaKeySettings::AwsKms(aws) => {
            Ok(Arc::new(awskms::AwsKmsKeyProvider::open(aws, group).await?))
        }
        #[cfg(not(feature = "awskms"))]
        RsaKeySettings::AwsKms(_) => Err(KeyProviderError::Config(format!(
            "RSA key provider `awskms` ({}) needs the Cargo feature `awskms`, \
             which this build was made without; rebuild with `--features awskms`",
            RSA_KEY_PROVIDER.in_group(group)
        ))),
        #[cfg(feature = "azurekv")]
        RsaKeySettings::AzureKeyVault(azure) => Ok(Arc::new(
            azurekv::AzureKeyVaultKeyProvider::open(azure, group).await?,
        )),
        #[cfg(not(feature = "azurekv"))]
        RsaKeySettings::AzureKeyVault(_) => Err(missing_feature("azurekv")),
        #[cfg(feature = "gcpkms")]
        RsaKeySettings::GcpKms(gcp) => {
            Ok(Arc::new(gcpkms::GcpKmsKeyProvider::open(gcp, group).await?))
        }
        #[cfg(not(feature = "gcpkms"))]
        RsaKeySettings::GcpKms(_) => Err(missing_feature("gcpkms")),
    }
}

/// A provider configured in a build made without its Cargo feature.
#[cfg(not(all(feature = "azurekv", feature = "gcpkms")))]
pub(crate) fn missing_feature(feature: &str) -> KeyProviderError {
    KeyProviderError::Config(format!(
        "provider `{feature}` is configured, but this build was made without the Cargo feature `{feature}`; \
         rebuild with `--features {feature}` (the default build has every provider)"
    ))
}

/// RSA-OAEP encryption with a public key, as every provider that wraps locally does.
pub(crate) fn oaep_encrypt(
    public: &aws_lc_rs::rsa::OaepPublicEncryptingKey,
    algorithm: &'static aws_lc_rs::rsa::OaepAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyProviderError> {
    let mut out = vec![0u8; public.ciphertext_size()];
    let written = public
        .encrypt(algorithm, plaintext, &mut out, None)
        .map_err(|_| KeyProviderError::Config("RSA-OAEP encryption failed".into()))?
        .len();
    out.truncate(written);
    Ok(out)
}

/// Said where an RSA key is refused: the sizes the RSA implementation accepts.
pub(crate) const RSA_KEY_SIZES: &str = "RSA keys of 2048 to 8192 bits are supported";

#[cfg(all(test, not(feature = "pkcs11")))]
mod tests {
    use super::*;
    use crate::config::{Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType};

    #[tokio::test]
    async fn a_build_without_the_pkcs11_feature_names_it() {
        let settings = RsaKeySettings::Pkcs11(Pkcs11Settings {
            library_path: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_serial: "0123".into(),
            user_type: Pkcs11UserType::User,
            pin: None,
            key: Pkcs11KeySelector::Label("key".into()),
            certificate: None,
        });
        let Err(KeyProviderError::Config(message)) =
            open_rsa_key_provider(&settings, SettingsGroup::Main).await
        else {
            panic!("a pkcs11 configuration must be refused");
        };
        assert!(message.contains("`pkcs11` Cargo feature"), "{message}");
    }
}

#[cfg(all(test, not(feature = "gcpkms")))]
mod without_gcpkms {
    use super::*;
    use crate::config::GcpKmsSettings;

    #[tokio::test]
    async fn a_build_without_the_gcpkms_feature_names_it() {
        let settings = RsaKeySettings::GcpKms(GcpKmsSettings {
            project_id: "p".into(),
            location_id: "l".into(),
            key_ring_id: "r".into(),
            key_id: "k".into(),
            key_version_id: "1".into(),
            endpoint: None,
        });
        let Err(KeyProviderError::Config(message)) =
            open_rsa_key_provider(&settings, SettingsGroup::Main).await
        else {
            panic!("a gcpkms configuration must be refused");
        };
        assert!(message.contains("Cargo feature `gcpkms`"), "{message}");
    }
}
