//! The Azure Key Vault settings shared by the `azurekv` RSA key provider and the `azurekv`
//! certificate source: the vault's URL, an object name, and the Entra ID credentials.

use secrecy::SecretString;

use super::ConfigError;
use super::catalog::SettingValues;
use super::setting_path::SettingPath;
use super::top_level::check_http_url;

/// An Entra ID (Azure AD) application that may use the vault: `azureKeyvaultAd*`.
#[derive(Debug, Clone)]
pub struct AzureAdCredentials {
    /// `azureKeyvaultAdTenantId`.
    pub tenant_id: String,
    /// `azureKeyvaultAdAppId`: the application (client) id.
    pub client_id: String,
    /// `azureKeyvaultAdSecret`: the application's client secret.
    pub client_secret: SecretString,
}

/// `azureKeyvaultUri`: an https URL; the SDK sends tokens over nothing else.
pub(crate) fn azure_vault_uri(
    values: &SettingValues,
    path: SettingPath,
) -> Result<String, ConfigError> {
    let uri = values
        .require_setting(
            path,
            "the vault's URL, e.g. https://contoso.vault.azure.net/",
        )?
        .trim();
    check_http_url(path, uri)?;
    if !uri.to_ascii_lowercase().starts_with("https://") {
        return Err(ConfigError::at(
            path,
            format!("`{uri}` is not an https:// URL; Azure Key Vault is only reached over HTTPS"),
        ));
    }
    Ok(uri.to_owned())
}

/// A Key Vault object name: 1 to 127 letters, digits and hyphens (Key Vault's own rule).
pub(crate) fn azure_object_name(
    values: &SettingValues,
    path: SettingPath,
    what: &str,
) -> Result<String, ConfigError> {
    let name = values.require_setting(path, what)?.trim();
    if name.len() > 127 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ConfigError::at(
            path,
            "is not a Key Vault name: 1 to 127 letters, digits and hyphens",
        ));
    }
    Ok(name.to_owned())
}

/// `azureKeyvaultAdTenantId`, `azureKeyvaultAdAppId` and `azureKeyvaultAdSecret` (in that
/// order in `paths`): upstream's client-secret credential.
pub(crate) fn azure_ad_credentials(
    values: &SettingValues,
    paths: [SettingPath; 3],
) -> Result<AzureAdCredentials, ConfigError> {
    let [tenant_path, app_path, secret_path] = paths;
    let tenant_id = values
        .require_setting(tenant_path, "the Entra ID (Azure AD) tenant id")?
        .trim();
    if tenant_id.is_empty()
        || !tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(ConfigError::at(
            tenant_path,
            format!("`{tenant_id}` is not a tenant id or domain"),
        ));
    }
    let client_id = values
        .require_setting(
            app_path,
            "the application (client) id registered in Entra ID",
        )?
        .trim();
    let client_secret =
        values.require_setting(secret_path, "a client secret of that application")?;
    Ok(AzureAdCredentials {
        tenant_id: tenant_id.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: SecretString::from(client_secret.trim().to_owned()),
    })
}
