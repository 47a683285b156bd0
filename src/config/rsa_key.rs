//! `rsaKey:provider` and the settings of each RSA key provider (`pkcs11`, `awskms`,
//! `azurekv`, `gcpkms`; `certificate` is read by [`super::certificate`]), for the main key
//! and for the `transferTo` and `rotateTo` groups.

use std::path::PathBuf;

use secrecy::SecretString;

use super::azure_key_vault::{azure_ad_credentials, azure_object_name, azure_vault_uri};
use super::catalog::{
    CERTIFICATE_PROVIDER, RSA_KEY_AWS_ACCESS_KEY_ID, RSA_KEY_AWS_ACCESS_KEY_SECRET,
    RSA_KEY_AWS_KEY_ID, RSA_KEY_AWS_REGION, RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION,
    RSA_KEY_AZURE_KEYVAULT_AD_APP_ID, RSA_KEY_AZURE_KEYVAULT_AD_SECRET,
    RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID, RSA_KEY_AZURE_KEYVAULT_KEY_NAME,
    RSA_KEY_AZURE_KEYVAULT_URI, RSA_KEY_GOOGLE_CLOUD_KEY_ID, RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID,
    RSA_KEY_GOOGLE_CLOUD_KEYRING_ID, RSA_KEY_GOOGLE_CLOUD_LOCATION_ID,
    RSA_KEY_GOOGLE_CLOUD_PROJECT_ID, RSA_KEY_PKCS11_LIBRARY_PATH, RSA_KEY_PKCS11_LOGIN_PIN,
    RSA_KEY_PKCS11_LOGIN_USER_TYPE, RSA_KEY_PKCS11_PRIVATE_KEY_ID,
    RSA_KEY_PKCS11_PRIVATE_KEY_LABEL, RSA_KEY_PKCS11_PROVIDER,
    RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER, RSA_KEY_PROVIDER,
};
use super::certificate::certificate_settings;
use super::layers::Values;
use super::raw::parse_dotnet_bool;
use super::setting_path::{SettingPath, SettingsGroup};
use super::{
    AwsKmsSettings, AwsStaticCredentials, AzureKeyVaultKeySettings, ConfigError, ConfigSource,
    GCP_KMS_ENDPOINT_VAR, GcpKmsSettings, Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType,
    RsaKeySettings,
};

/// `rsaKey:provider` (in `group`) and what it needs.
pub(super) fn rsa_key_settings(
    values: &Values,
    source: &ConfigSource,
    group: SettingsGroup,
) -> Result<RsaKeySettings, ConfigError> {
    let at = |path: SettingPath| path.in_group(group);
    let provider = values.require_setting(
        at(RSA_KEY_PROVIDER),
        "certificate, pkcs11, awskms, azurekv or gcpkms",
    )?;
    let use_symmetric_encryption = match values.setting(at(RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION)) {
        Some(value) => parse_dotnet_bool(value).ok_or_else(|| {
            ConfigError::at(
                at(RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION),
                format!("`{value}` is not true or false"),
            )
        })?,
        None => false,
    };
    let private_key_id = match values.setting(at(RSA_KEY_PKCS11_PRIVATE_KEY_ID)) {
        Some(value) => Some(value.trim().parse::<u64>().map_err(|_| {
            ConfigError::at(
                at(RSA_KEY_PKCS11_PRIVATE_KEY_ID),
                format!("`{value}` is not an unsigned integer"),
            )
        })?),
        None => None,
    };
    match provider.trim().to_ascii_lowercase().as_str() {
        "certificate" => Ok(RsaKeySettings::Certificate(certificate_settings(
            values, source, group,
        )?)),
        "pkcs11" => Ok(RsaKeySettings::Pkcs11(pkcs11_settings(
            values,
            source,
            group,
            private_key_id,
        )?)),
        "awskms" => Ok(RsaKeySettings::AwsKms(aws_kms_settings(
            values,
            group,
            use_symmetric_encryption,
        )?)),
        "azurekv" => Ok(RsaKeySettings::AzureKeyVault(AzureKeyVaultKeySettings {
            vault_uri: azure_vault_uri(values, at(RSA_KEY_AZURE_KEYVAULT_URI))?,
            key_name: azure_object_name(
                values,
                at(RSA_KEY_AZURE_KEYVAULT_KEY_NAME),
                "the name of the RSA key in the vault",
            )?,
            credentials: azure_ad_credentials(
                values,
                [
                    RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID,
                    RSA_KEY_AZURE_KEYVAULT_AD_APP_ID,
                    RSA_KEY_AZURE_KEYVAULT_AD_SECRET,
                ]
                .map(at),
            )?,
        })),
        "gcpkms" => Ok(RsaKeySettings::GcpKms(gcp_kms_settings(
            values, source, group,
        )?)),
        other => Err(ConfigError::at(
            at(RSA_KEY_PROVIDER),
            format!(
                "`{other}` is not an RSA key provider; use certificate, pkcs11, awskms, azurekv or gcpkms"
            ),
        )),
    }
}

/// Upstream's default library locations for `pkcs11Provider` (Debian/Ubuntu multiarch paths).
#[cfg(target_arch = "aarch64")]
pub(super) const MULTIARCH_LIB: &str = "/usr/lib/aarch64-linux-gnu";
#[cfg(not(target_arch = "aarch64"))]
pub(super) const MULTIARCH_LIB: &str = "/usr/lib/x86_64-linux-gnu";

fn pkcs11_settings(
    values: &Values,
    source: &ConfigSource,
    group: SettingsGroup,
    private_key_id: Option<u64>,
) -> Result<Pkcs11Settings, ConfigError> {
    let at = |path: SettingPath| path.in_group(group);
    let library_path = match values
        .setting(at(RSA_KEY_PKCS11_LIBRARY_PATH))
        .map(str::trim)
    {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => match values
            .setting(at(RSA_KEY_PKCS11_PROVIDER))
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("yubihsm") => PathBuf::from(format!("{MULTIARCH_LIB}/pkcs11/yubihsm_pkcs11.so")),
            Some("opensc") => PathBuf::from(format!("{MULTIARCH_LIB}/opensc-pkcs11.so")),
            Some(other) if !other.is_empty() => {
                return Err(ConfigError::at(
                    at(RSA_KEY_PKCS11_PROVIDER),
                    format!(
                        "`{other}` is not a known PKCS#11 provider (yubihsm, opensc); set pkcs11LibraryPath instead"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::at(
                    at(RSA_KEY_PKCS11_LIBRARY_PATH),
                    "is required: the path of the token's PKCS#11 library, or set pkcs11Provider to yubihsm or opensc",
                ));
            }
        },
    };
    let token_serial = values
        .require_setting(
            at(RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER),
            "the serial number of the token holding the key",
        )?
        .trim()
        .to_owned();
    let user_type = match values
        .setting(at(RSA_KEY_PKCS11_LOGIN_USER_TYPE))
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "user") => Pkcs11UserType::User,
        Some("so") => Pkcs11UserType::SecurityOfficer,
        Some("context_specific") => Pkcs11UserType::ContextSpecific,
        Some(other) => {
            return Err(ConfigError::at(
                at(RSA_KEY_PKCS11_LOGIN_USER_TYPE),
                format!("`{other}` is not a login user type; use user, so or context_specific"),
            ));
        }
    };
    let key = match (
        private_key_id,
        values.setting(at(RSA_KEY_PKCS11_PRIVATE_KEY_LABEL)),
    ) {
        // Upstream looks the key up by id whenever one is set.
        (Some(id), _) => Pkcs11KeySelector::Id(id),
        (None, Some(label)) if !label.is_empty() => Pkcs11KeySelector::Label(label.to_owned()),
        _ => {
            return Err(ConfigError::at(
                at(RSA_KEY_PKCS11_PRIVATE_KEY_LABEL),
                format!(
                    "is required (or {}): which private key on the token to use",
                    at(RSA_KEY_PKCS11_PRIVATE_KEY_ID)
                ),
            ));
        }
    };
    let certificate = match values.setting(at(CERTIFICATE_PROVIDER)) {
        Some(_) => Some(certificate_settings(values, source, group)?),
        None => None,
    };
    Ok(Pkcs11Settings {
        library_path,
        token_serial,
        user_type,
        pin: values
            .setting(at(RSA_KEY_PKCS11_LOGIN_PIN))
            .map(|pin| SecretString::from(pin.to_owned())),
        key,
        certificate,
    })
}

/// `rsaKey:aws*` (in `group`). Upstream builds static credentials unless both access-key settings
/// are blank; giving only one of them can never authenticate, so it is refused here.
fn aws_kms_settings(
    values: &Values,
    group: SettingsGroup,
    use_symmetric_encryption: bool,
) -> Result<AwsKmsSettings, ConfigError> {
    let at = |path: SettingPath| path.in_group(group);
    let key_id = values
        .require_setting(
            at(RSA_KEY_AWS_KEY_ID),
            "the KMS key: key id, key ARN, alias/NAME or alias ARN",
        )?
        .trim();
    let credentials = match (
        values.setting(at(RSA_KEY_AWS_ACCESS_KEY_ID)),
        values.setting(at(RSA_KEY_AWS_ACCESS_KEY_SECRET)),
    ) {
        (None, None) => None,
        (Some(id), Some(secret)) => Some(AwsStaticCredentials {
            access_key_id: id.trim().to_owned(),
            secret_access_key: SecretString::from(secret.trim().to_owned()),
        }),
        (Some(_), None) => {
            return Err(ConfigError::at(
                at(RSA_KEY_AWS_ACCESS_KEY_SECRET),
                "is missing while awsAccessKeyId is set; give both, or neither to use the AWS default credential chain",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::at(
                at(RSA_KEY_AWS_ACCESS_KEY_ID),
                "is missing while awsAccessKeySecret is set; give both, or neither to use the AWS default credential chain",
            ));
        }
    };
    Ok(AwsKmsSettings {
        credentials,
        region: values
            .setting(at(RSA_KEY_AWS_REGION))
            .map(|r| r.trim().to_owned()),
        key_id: key_id.to_owned(),
        use_symmetric_encryption,
    })
}

/// `rsaKey:googleCloud*` (in `group`): each part of the key version's resource name.
fn gcp_kms_settings(
    values: &Values,
    source: &ConfigSource,
    group: SettingsGroup,
) -> Result<GcpKmsSettings, ConfigError> {
    let part = |key: SettingPath, what: &str| -> Result<String, ConfigError> {
        let path = key.in_group(group);
        let value = values.require_setting(path, what)?.trim();
        if value.is_empty() || value.contains(['/', ' ', '?', '#']) {
            return Err(ConfigError::at(
                path,
                format!("`{value}` is not a resource id: it must not be empty nor contain `/`"),
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
        endpoint: source
            .var(GCP_KMS_ENDPOINT_VAR)
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty()),
    })
}

#[cfg(test)]
mod tests;
