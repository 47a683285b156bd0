//! `rsaKey:googleCloud*`: the typed settings of the `gcpkms` provider, their catalog rows
//! and their parsing. Built with or without the `gcpkms` feature, so that a build without
//! it still recognises the provider and says which feature it needs.

use crate::config::catalog::settings_catalog;
use crate::config::catalog::{GroupValues, KnownSetting};
use crate::config::{ConfigError, SettingPath};
use crate::keys::ProviderSettings;

settings_catalog! {
    GCP_KMS_SETTINGS in rsa_key for "gcpkms";
    RSA_KEY_GOOGLE_CLOUD_PROJECT_ID = "googleCloudProjectId";
    RSA_KEY_GOOGLE_CLOUD_LOCATION_ID = "googleCloudLocationId";
    RSA_KEY_GOOGLE_CLOUD_KEYRING_ID = "googleCloudKeyringId";
    RSA_KEY_GOOGLE_CLOUD_KEY_ID = "googleCloudKeyId";
    RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID = "googleCloudKeyVersionId";
}

/// The variable naming another Cloud KMS endpoint than Google's (tests, private endpoints).
pub const GCP_KMS_ENDPOINT_VAR: &str = "KEY_CONNECTOR_GCP_KMS_ENDPOINT";

/// `rsaKey:googleCloud*`: the five parts of a CryptoKeyVersion resource name. Credentials
/// are Google's Application Default Credentials, as upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpKmsSettings {
    pub project_id: String,
    pub location_id: String,
    pub key_ring_id: String,
    pub key_id: String,
    pub key_version_id: String,
    /// The KMS endpoint of `KEY_CONNECTOR_GCP_KMS_ENDPOINT` (a stand-in or a private
    /// endpoint); `None` for Google's.
    pub endpoint: Option<String>,
}

impl GcpKmsSettings {
    /// `projects/…/locations/…/keyRings/…/cryptoKeys/…/cryptoKeyVersions/…`.
    pub fn key_version_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/keyRings/{}/cryptoKeys/{}/cryptoKeyVersions/{}",
            self.project_id, self.location_id, self.key_ring_id, self.key_id, self.key_version_id
        )
    }
}

impl ProviderSettings for GcpKmsSettings {
    const CATALOG_ROWS: &'static [KnownSetting] = GCP_KMS_SETTINGS;
    const UPSTREAM_ORDER: u8 = 2;

    /// `rsaKey:googleCloud*` (in `group`): each part of the key version's resource name.
    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError> {
        let part = |key: SettingPath, what: &str| -> Result<String, ConfigError> {
            let path = input.at(key);
            let value = input.values.require_setting(path, what)?.trim();
            if value.is_empty() || value.contains(['/', ' ', '?', '#']) {
                return Err(ConfigError::at(
                    path,
                    "is not a resource id: it must not be empty nor contain `/`",
                ));
            }
            Ok(value.to_owned())
        };
        Ok(GcpKmsSettings {
            project_id: part(
                RSA_KEY_GOOGLE_CLOUD_PROJECT_ID,
                "the Google Cloud project id",
            )?,
            location_id: part(
                RSA_KEY_GOOGLE_CLOUD_LOCATION_ID,
                "the key ring's location, e.g. global or europe-west1",
            )?,
            key_ring_id: part(RSA_KEY_GOOGLE_CLOUD_KEYRING_ID, "the key ring's name")?,
            key_id: part(RSA_KEY_GOOGLE_CLOUD_KEY_ID, "the key's name")?,
            key_version_id: part(
                RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID,
                "the key version's number, e.g. 1",
            )?,
            endpoint: input
                .source
                .var(GCP_KMS_ENDPOINT_VAR)
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty()),
        })
    }
}

#[cfg(all(test, not(feature = "gcpkms")))]
mod tests {
    use super::*;
    use crate::keys::{RsaKeySettings, configuration_refusal};

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
        let message = configuration_refusal(&settings).await;
        assert!(message.contains("Cargo feature `gcpkms`"), "{message}");
    }
}
