//! The `azurekv` certificate source: a certificate in Azure Key Vault, read with its private
//! key.
//!
//! Key Vault keeps a certificate's private key in the secret of the same name; for a
//! certificate created with content type `application/x-pkcs12` the secret's value is the
//! base64 PFX without a password. Upstream reads the certificate first (to learn the secret's
//! name and that its policy is exportable RSA) and then that secret; the secret of a Key
//! Vault certificate always has the certificate's name, so this reads the secret directly,
//! which needs only the `secrets/get` permission. A non-PKCS#12 content type, a
//! non-exportable key or a non-RSA key fails start-up with a message saying which.
//!
//! Credentials, transport and error handling are those of the `azurekv` key provider
//! ([`crate::keys::azurekv`]).

use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use base64::Engine;
use zeroize::Zeroizing;

use super::AzureKeyVaultCertificateSettings;
use super::CertificateFile;
use super::{CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME, CERTIFICATE_AZURE_KEYVAULT_URI};
use crate::config::{SettingPath, SettingsGroup};
use crate::keys::KeyProviderError;
use crate::keys::azurekv::{
    AzureConnection, Operation, bounded, classify, credential, unusable_vault_uri,
    vault_settings_hint,
};

/// The start of the names of the Entra ID settings (`...TenantId`, `...AppId`, `...Secret`).
const CREDENTIAL_PREFIX: SettingPath = SettingPath::certificate("azureKeyvaultAd");
const PKCS12_CONTENT_TYPE: &str = "application/x-pkcs12";

/// Reads the certificate's secret and decodes the PFX it holds.
pub(super) async fn read(
    settings: &AzureKeyVaultCertificateSettings,
    group: SettingsGroup,
) -> Result<CertificateFile, KeyProviderError> {
    read_in(settings, AzureConnection::default(), group).await
}

/// Like [`read`], reaching Azure as `connection` says.
pub(crate) async fn read_with(
    settings: &AzureKeyVaultCertificateSettings,
    connection: AzureConnection,
) -> Result<CertificateFile, KeyProviderError> {
    read_in(settings, connection, SettingsGroup::Main).await
}

/// Like [`read_with`] for settings of `group`; messages name that group's settings.
async fn read_in(
    settings: &AzureKeyVaultCertificateSettings,
    connection: AzureConnection,
    group: SettingsGroup,
) -> Result<CertificateFile, KeyProviderError> {
    let credential_prefix = CREDENTIAL_PREFIX.in_group(group);
    let credential = credential(&settings.credentials, &connection, credential_prefix)?;
    let options = SecretClientOptions {
        client_options: connection.client_options()?,
        ..SecretClientOptions::default()
    };
    let client =
        SecretClient::new(&settings.vault_uri, credential, Some(options)).map_err(|e| {
            unusable_vault_uri(
                CERTIFICATE_AZURE_KEYVAULT_URI.in_group(group),
                &settings.vault_uri,
                e,
            )
        })?;
    let object = format!(
        "certificate `{}` in Azure Key Vault {}",
        settings.certificate_name, settings.vault_uri
    );
    let (uri_setting, name_setting) = (
        CERTIFICATE_AZURE_KEYVAULT_URI.in_group(group),
        CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME.in_group(group),
    );
    let settings_names = format!("{uri_setting} and {name_setting}");
    let hint = vault_settings_hint(uri_setting, name_setting, credential_prefix);
    let secret = bounded(client.get_secret(&settings.certificate_name, None))
        .await?
        .and_then(|response| response.into_model())
        .map_err(|e| classify(Operation::Read, &e, &object, &hint))?;
    let content_type = secret.content_type.as_deref().unwrap_or("");
    if !content_type.eq_ignore_ascii_case(PKCS12_CONTENT_TYPE) {
        return Err(KeyProviderError::config(format!(
            "{object} is stored as `{content_type}`, not as {PKCS12_CONTENT_TYPE}; create it with the \
             PKCS #12 content type (as upstream requires), with an exportable RSA key"
        )));
    }
    if secret.kid.is_none() {
        return Err(KeyProviderError::config(format!(
            "the secret `{}` is not the secret of a Key Vault certificate; check {settings_names}",
            settings.certificate_name
        )));
    }
    let value = Zeroizing::new(secret.value.unwrap_or_default());
    let cleaned: Zeroizing<String> =
        Zeroizing::new(value.chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| KeyProviderError::config(format!("the secret of {object} is not base64")))?;
    Ok(CertificateFile::new(
        Zeroizing::new(bytes),
        None,
        object,
        "(none: Key Vault exports certificates without a password)",
    ))
}
