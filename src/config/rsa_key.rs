//! `rsaKey:provider` and the settings of each RSA key provider (`pkcs11`, `awskms`,
//! `azurekv`, `gcpkms`; `certificate` is read by [`super::certificate`]), for the main key
//! and for the `transferTo` and `rotateTo` groups.

use std::path::PathBuf;

use secrecy::SecretString;

use super::azure_key_vault::{azure_ad_credentials, azure_object_name, azure_vault_uri};
use super::certificate::certificate_settings;
use super::layers::Values;
use super::raw::parse_dotnet_bool;
use super::{
    AwsKmsSettings, AwsStaticCredentials, AzureKeyVaultKeySettings, ConfigError, GcpKmsSettings,
    Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType, RsaKeySettings,
};

/// `{prefix}rsaKey:provider` and what it needs.
pub(super) fn rsa_key_settings(
    values: &Values,
    prefix: &str,
) -> Result<RsaKeySettings, ConfigError> {
    let at = |key: &str| format!("{prefix}{key}");
    let provider = values.require(
        &at("rsaKey:provider"),
        "certificate, pkcs11, awskms, azurekv or gcpkms",
    )?;
    let use_symmetric_encryption = match values.get(&at("rsaKey:awsUseSymmetricEncryption")) {
        Some(value) => parse_dotnet_bool(value).ok_or_else(|| {
            ConfigError::new(
                &at("rsaKey:awsUseSymmetricEncryption"),
                format!("`{value}` is not true or false"),
            )
        })?,
        None => false,
    };
    let private_key_id = match values.get(&at("rsaKey:pkcs11PrivateKeyId")) {
        Some(value) => Some(value.trim().parse::<u64>().map_err(|_| {
            ConfigError::new(
                &at("rsaKey:pkcs11PrivateKeyId"),
                format!("`{value}` is not an unsigned integer"),
            )
        })?),
        None => None,
    };
    match provider.trim().to_ascii_lowercase().as_str() {
        "certificate" => Ok(RsaKeySettings::Certificate(certificate_settings(
            values, prefix,
        )?)),
        "pkcs11" => Ok(RsaKeySettings::Pkcs11(pkcs11_settings(
            values,
            prefix,
            private_key_id,
        )?)),
        "awskms" => Ok(RsaKeySettings::AwsKms(aws_kms_settings(
            values,
            prefix,
            use_symmetric_encryption,
        )?)),
        "azurekv" => {
            let at = |key: &str| format!("{prefix}rsaKey:{key}");
            Ok(RsaKeySettings::AzureKeyVault(AzureKeyVaultKeySettings {
                vault_uri: azure_vault_uri(values, &at("azureKeyvaultUri"))?,
                key_name: azure_object_name(
                    values,
                    &at("azureKeyvaultKeyName"),
                    "the name of the RSA key in the vault",
                )?,
                credentials: azure_ad_credentials(values, &at("azureKeyvaultAd"))?,
            }))
        }
        "gcpkms" => Ok(RsaKeySettings::GcpKms(gcp_kms_settings(values, prefix)?)),
        other => Err(ConfigError::new(
            &at("rsaKey:provider"),
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
    prefix: &str,
    private_key_id: Option<u64>,
) -> Result<Pkcs11Settings, ConfigError> {
    let at = |key: &str| format!("{prefix}rsaKey:{key}");
    let library_path = match values.get(&at("pkcs11LibraryPath")).map(str::trim) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => match values
            .get(&at("pkcs11Provider"))
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("yubihsm") => PathBuf::from(format!("{MULTIARCH_LIB}/pkcs11/yubihsm_pkcs11.so")),
            Some("opensc") => PathBuf::from(format!("{MULTIARCH_LIB}/opensc-pkcs11.so")),
            Some(other) if !other.is_empty() => {
                return Err(ConfigError::new(
                    &at("pkcs11Provider"),
                    format!(
                        "`{other}` is not a known PKCS#11 provider (yubihsm, opensc); set pkcs11LibraryPath instead"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    &at("pkcs11LibraryPath"),
                    "is required: the path of the token's PKCS#11 library, or set pkcs11Provider to yubihsm or opensc",
                ));
            }
        },
    };
    let token_serial = values
        .require(
            &at("pkcs11SlotTokenSerialNumber"),
            "the serial number of the token holding the key",
        )?
        .trim()
        .to_owned();
    let user_type = match values
        .get(&at("pkcs11LoginUserType"))
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "user") => Pkcs11UserType::User,
        Some("so") => Pkcs11UserType::SecurityOfficer,
        Some("context_specific") => Pkcs11UserType::ContextSpecific,
        Some(other) => {
            return Err(ConfigError::new(
                &at("pkcs11LoginUserType"),
                format!("`{other}` is not a login user type; use user, so or context_specific"),
            ));
        }
    };
    let key = match (private_key_id, values.get(&at("pkcs11PrivateKeyLabel"))) {
        // Upstream looks the key up by id whenever one is set.
        (Some(id), _) => Pkcs11KeySelector::Id(id),
        (None, Some(label)) if !label.is_empty() => Pkcs11KeySelector::Label(label.to_owned()),
        _ => {
            return Err(ConfigError::new(
                &at("pkcs11PrivateKeyLabel"),
                format!(
                    "is required (or keyConnectorSettings__{}rsaKey__pkcs11PrivateKeyId): which private key on the token to use",
                    prefix.replace(':', "__")
                ),
            ));
        }
    };
    let certificate = match values.get(&format!("{prefix}certificate:provider")) {
        Some(_) => Some(certificate_settings(values, prefix)?),
        None => None,
    };
    Ok(Pkcs11Settings {
        library_path,
        token_serial,
        user_type,
        pin: values
            .get(&at("pkcs11LoginPin"))
            .map(|pin| SecretString::from(pin.to_owned())),
        key,
        certificate,
    })
}

/// `{prefix}rsaKey:aws*`. Upstream builds static credentials unless both access-key settings
/// are blank; giving only one of them can never authenticate, so it is refused here.
fn aws_kms_settings(
    values: &Values,
    prefix: &str,
    use_symmetric_encryption: bool,
) -> Result<AwsKmsSettings, ConfigError> {
    let at = |key: &str| format!("{prefix}rsaKey:{key}");
    let key_id = values
        .require(
            &at("awsKeyId"),
            "the KMS key: key id, key ARN, alias/NAME or alias ARN",
        )?
        .trim();
    let credentials = match (
        values.get(&at("awsAccessKeyId")),
        values.get(&at("awsAccessKeySecret")),
    ) {
        (None, None) => None,
        (Some(id), Some(secret)) => Some(AwsStaticCredentials {
            access_key_id: id.trim().to_owned(),
            secret_access_key: SecretString::from(secret.trim().to_owned()),
        }),
        (Some(_), None) => {
            return Err(ConfigError::new(
                &at("awsAccessKeySecret"),
                "is missing while awsAccessKeyId is set; give both, or neither to use the AWS default credential chain",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                &at("awsAccessKeyId"),
                "is missing while awsAccessKeySecret is set; give both, or neither to use the AWS default credential chain",
            ));
        }
    };
    Ok(AwsKmsSettings {
        credentials,
        region: values.get(&at("awsRegion")).map(|r| r.trim().to_owned()),
        key_id: key_id.to_owned(),
        use_symmetric_encryption,
    })
}

/// `{prefix}rsaKey:googleCloud*`: each part of the key version's resource name.
fn gcp_kms_settings(values: &Values, prefix: &str) -> Result<GcpKmsSettings, ConfigError> {
    let part = |key: &str, what: &str| -> Result<String, ConfigError> {
        let path = format!("{prefix}rsaKey:{key}");
        let value = values.require(&path, what)?.trim();
        if value.is_empty() || value.contains(['/', ' ', '?', '#']) {
            return Err(ConfigError::new(
                &path,
                format!("`{value}` is not a resource id: it must not be empty nor contain `/`"),
            ));
        }
        Ok(value.to_owned())
    };
    Ok(GcpKmsSettings {
        project_id: part("googleCloudProjectId", "the Google Cloud project id")?,
        location_id: part(
            "googleCloudLocationId",
            "the key ring's location, e.g. global or europe-west1",
        )?,
        key_ring_id: part("googleCloudKeyringId", "the key ring's name")?,
        key_id: part("googleCloudKeyId", "the key's name")?,
        key_version_id: part(
            "googleCloudKeyVersionId",
            "the key version's number, e.g. 1",
        )?,
    })
}

#[cfg(test)]
mod tests;
