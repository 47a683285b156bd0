//! `rsaKey:pkcs11*`: the typed settings of the `pkcs11` provider, their catalog rows and
//! their parsing. Built with or without the `pkcs11` feature, so that a build without it
//! still recognises the provider and says which feature it needs.

use std::path::PathBuf;

use secrecy::SecretString;

use crate::config::catalog::settings_catalog;
use crate::config::catalog::{GroupValues, KnownSetting};
use crate::config::{ConfigError, SettingsGroup};
use crate::keys::certificate::{CERTIFICATE_PROVIDER, CertificateSettings};
use crate::keys::{KeyProviderError, ProviderSettings};

settings_catalog! {
    PKCS11_SETTINGS in rsa_key for "pkcs11";
    RSA_KEY_PKCS11_PROVIDER = "pkcs11Provider", "yubihsm | opensc";
    RSA_KEY_PKCS11_LIBRARY_PATH = "pkcs11LibraryPath", "the token's PKCS#11 library (.so)";
    RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER = "pkcs11SlotTokenSerialNumber", "serial number of the token (required)";
    RSA_KEY_PKCS11_LOGIN_USER_TYPE = "pkcs11LoginUserType", "user | so | context_specific";
    RSA_KEY_PKCS11_LOGIN_PIN = "pkcs11LoginPin", "the PIN of the login user type";
    RSA_KEY_PKCS11_PRIVATE_KEY_LABEL = "pkcs11PrivateKeyLabel", "CKA_LABEL of the private key";
    RSA_KEY_PKCS11_PRIVATE_KEY_ID = "pkcs11PrivateKeyId", "unsigned integer";
}

/// `rsaKey:pkcs11*`: which token, how to log in, which key.
#[derive(Debug)]
pub struct Pkcs11Settings {
    /// The vendor's PKCS#11 library (`pkcs11LibraryPath`, or the default of `pkcs11Provider`).
    pub library_path: PathBuf,
    /// `pkcs11SlotTokenSerialNumber`, compared case-insensitively as upstream does.
    pub token_serial: String,
    pub user_type: Pkcs11UserType,
    /// `pkcs11LoginPin`; without one the token's protected authentication path (PIN pad) is used.
    pub pin: Option<SecretString>,
    pub key: Pkcs11KeySelector,
    /// Where the public key for wrapping comes from, as upstream: the certificate provider.
    /// Without one it is read from the token.
    pub certificate: Option<CertificateSettings>,
}

/// `pkcs11LoginUserType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs11UserType {
    User,
    SecurityOfficer,
    ContextSpecific,
}

/// How the private key is found on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkcs11KeySelector {
    /// `pkcs11PrivateKeyLabel`: `CKA_LABEL`.
    Label(String),
    /// `pkcs11PrivateKeyId`: `CKA_ID` holding this number as a native `CK_ULONG`.
    Id(u64),
}

impl ProviderSettings for Pkcs11Settings {
    const CATALOG_ROWS: &'static [KnownSetting] = PKCS11_SETTINGS;
    const UPSTREAM_ORDER: u8 = 4;

    fn check_typed_values(input: &GroupValues<'_>) -> Result<(), ConfigError> {
        private_key_id(input).map(drop)
    }

    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError> {
        let library_path = match input.setting(RSA_KEY_PKCS11_LIBRARY_PATH).map(str::trim) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => match input
                .setting(RSA_KEY_PKCS11_PROVIDER)
                .map(|p| p.trim().to_ascii_lowercase())
                .as_deref()
            {
                Some("yubihsm") => {
                    PathBuf::from(format!("{MULTIARCH_LIB}/pkcs11/yubihsm_pkcs11.so"))
                }
                Some("opensc") => PathBuf::from(format!("{MULTIARCH_LIB}/opensc-pkcs11.so")),
                Some(other) if !other.is_empty() => {
                    return Err(ConfigError::at(
                        input.at(RSA_KEY_PKCS11_PROVIDER),
                        format!(
                            "`{other}` is not a known PKCS#11 provider (yubihsm, opensc); set pkcs11LibraryPath instead"
                        ),
                    ));
                }
                _ => {
                    return Err(ConfigError::at(
                        input.at(RSA_KEY_PKCS11_LIBRARY_PATH),
                        "is required: the path of the token's PKCS#11 library, or set pkcs11Provider to yubihsm or opensc",
                    ));
                }
            },
        };
        let token_serial = input
            .require_setting(
                RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER,
                "the serial number of the token holding the key",
            )?
            .trim()
            .to_owned();
        let user_type = match input
            .setting(RSA_KEY_PKCS11_LOGIN_USER_TYPE)
            .map(|t| t.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("" | "user") => Pkcs11UserType::User,
            Some("so") => Pkcs11UserType::SecurityOfficer,
            Some("context_specific") => Pkcs11UserType::ContextSpecific,
            Some(_) => {
                return Err(ConfigError::at(
                    input.at(RSA_KEY_PKCS11_LOGIN_USER_TYPE),
                    "is not a login user type; use user, so or context_specific",
                ));
            }
        };
        let key = match (
            private_key_id(input)?,
            input.setting(RSA_KEY_PKCS11_PRIVATE_KEY_LABEL),
        ) {
            // Upstream looks the key up by id whenever one is set.
            (Some(id), _) => Pkcs11KeySelector::Id(id),
            (None, Some(label)) if !label.is_empty() => Pkcs11KeySelector::Label(label.to_owned()),
            _ => {
                return Err(ConfigError::at(
                    input.at(RSA_KEY_PKCS11_PRIVATE_KEY_LABEL),
                    format!(
                        "is required (or {}): which private key on the token to use",
                        input.at(RSA_KEY_PKCS11_PRIVATE_KEY_ID)
                    ),
                ));
            }
        };
        let certificate = match input.setting(CERTIFICATE_PROVIDER) {
            Some(_) => Some(CertificateSettings::parse(input)?),
            None => None,
        };
        Ok(Pkcs11Settings {
            library_path,
            token_serial,
            user_type,
            pin: input
                .setting(RSA_KEY_PKCS11_LOGIN_PIN)
                .map(|pin| SecretString::from(pin.to_owned())),
            key,
            certificate,
        })
    }

    fn left_out_of_build(_feature: &str, group: SettingsGroup) -> KeyProviderError {
        KeyProviderError::config(format!(
            "RSA key provider `pkcs11` ({}) needs the `pkcs11` \
             Cargo feature, which this build left out; rebuild with `--features pkcs11`",
            crate::keys::RSA_KEY_PROVIDER.in_group(group)
        ))
    }
}

/// `pkcs11PrivateKeyId`, an unsigned integer; checked whichever provider is configured, as
/// upstream's typed settings are.
fn private_key_id(input: &GroupValues<'_>) -> Result<Option<u64>, ConfigError> {
    let path = input.at(RSA_KEY_PKCS11_PRIVATE_KEY_ID);
    match input.values.setting(path) {
        Some(value) => Some(
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| ConfigError::at(path, "is not an unsigned integer")),
        )
        .transpose(),
        None => Ok(None),
    }
}

/// Upstream's default library locations for `pkcs11Provider` (Debian/Ubuntu multiarch paths).
#[cfg(target_arch = "aarch64")]
pub(crate) const MULTIARCH_LIB: &str = "/usr/lib/aarch64-linux-gnu";
#[cfg(not(target_arch = "aarch64"))]
pub(crate) const MULTIARCH_LIB: &str = "/usr/lib/x86_64-linux-gnu";

#[cfg(all(test, not(feature = "pkcs11")))]
mod tests {
    use super::*;
    use crate::keys::{RsaKeySettings, configuration_refusal};

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
        let message = configuration_refusal(&settings).await;
        assert!(message.contains("`pkcs11` Cargo feature"), "{message}");
    }
}
