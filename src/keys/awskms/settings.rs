//! `rsaKey:aws*`: the typed settings of the `awskms` provider, their catalog rows and their
//! parsing. Built with or without the `awskms` feature, so that a build without it still
//! recognises the provider and says which feature it needs.

use secrecy::SecretString;

use crate::config::catalog::settings_catalog;
use crate::config::catalog::{GroupValues, KnownSetting};
use crate::config::top_level::parse_dotnet_bool;
use crate::config::{ConfigError, SettingsGroup};
use crate::keys::{KeyProviderError, ProviderSettings};

settings_catalog! {
    AWS_KMS_SETTINGS in rsa_key for "awskms";
    RSA_KEY_AWS_ACCESS_KEY_ID = "awsAccessKeyId", "IAM access key id (empty: AWS default credential chain)";
    RSA_KEY_AWS_ACCESS_KEY_SECRET = "awsAccessKeySecret", "its secret (empty: AWS default credential chain)";
    RSA_KEY_AWS_REGION = "awsRegion", "e.g. eu-west-1 (empty: AWS_REGION or the AWS profile)";
    RSA_KEY_AWS_KEY_ID = "awsKeyId", "key id, key ARN or alias/NAME (required)";
    RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION = "awsUseSymmetricEncryption", "true | false";
}

/// `rsaKey:aws*`: which KMS key wraps the symmetric key, and how to reach it.
#[derive(Debug, Clone)]
pub struct AwsKmsSettings {
    /// `awsAccessKeyId` and `awsAccessKeySecret`; `None` when both are empty, which selects
    /// the AWS default credential chain (environment, profile, web identity, ECS, IMDS).
    pub credentials: Option<AwsStaticCredentials>,
    /// `awsRegion`; when absent, the region the AWS environment names (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// `awsKeyId`: key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub key_id: String,
    /// `awsUseSymmetricEncryption`: `SYMMETRIC_DEFAULT` instead of `RSAES_OAEP_SHA_256`.
    pub use_symmetric_encryption: bool,
}

/// An IAM access key given in the settings.
#[derive(Debug, Clone)]
pub struct AwsStaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl ProviderSettings for AwsKmsSettings {
    const CATALOG_ROWS: &'static [KnownSetting] = AWS_KMS_SETTINGS;
    const UPSTREAM_ORDER: u8 = 3;

    fn check_typed_values(input: &GroupValues<'_>) -> Result<(), ConfigError> {
        use_symmetric_encryption(input).map(drop)
    }

    /// `rsaKey:aws*` (in `group`). Upstream builds static credentials unless both
    /// access-key settings are blank; giving only one of them can never authenticate, so it
    /// is refused here.
    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError> {
        let key_id = input
            .require_setting(
                RSA_KEY_AWS_KEY_ID,
                "the KMS key: key id, key ARN, alias/NAME or alias ARN",
            )?
            .trim();
        let credentials = match (
            input.setting(RSA_KEY_AWS_ACCESS_KEY_ID),
            input.setting(RSA_KEY_AWS_ACCESS_KEY_SECRET),
        ) {
            (None, None) => None,
            (Some(id), Some(secret)) => Some(AwsStaticCredentials {
                access_key_id: id.trim().to_owned(),
                secret_access_key: SecretString::from(secret.trim().to_owned()),
            }),
            (Some(_), None) => {
                return Err(ConfigError::at(
                    input.at(RSA_KEY_AWS_ACCESS_KEY_SECRET),
                    "is missing while awsAccessKeyId is set; give both, or neither to use the AWS default credential chain",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::at(
                    input.at(RSA_KEY_AWS_ACCESS_KEY_ID),
                    "is missing while awsAccessKeySecret is set; give both, or neither to use the AWS default credential chain",
                ));
            }
        };
        Ok(AwsKmsSettings {
            credentials,
            region: input
                .setting(RSA_KEY_AWS_REGION)
                .map(|r| r.trim().to_owned()),
            key_id: key_id.to_owned(),
            use_symmetric_encryption: use_symmetric_encryption(input)?,
        })
    }

    fn left_out_of_build(_feature: &str, group: SettingsGroup) -> KeyProviderError {
        KeyProviderError::config(format!(
            "RSA key provider `awskms` ({}) needs the Cargo feature `awskms`, \
             which this build was made without; rebuild with `--features awskms`",
            crate::keys::RSA_KEY_PROVIDER.in_group(group)
        ))
    }
}

/// `awsUseSymmetricEncryption`, true or false (default false); checked whichever provider
/// is configured, as upstream's typed settings are.
fn use_symmetric_encryption(input: &GroupValues<'_>) -> Result<bool, ConfigError> {
    let path = input.at(RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION);
    match input.values.setting(path) {
        Some(value) => {
            parse_dotnet_bool(value).ok_or_else(|| ConfigError::at(path, "is not true or false"))
        }
        None => Ok(false),
    }
}
