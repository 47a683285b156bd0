//! `rsaKey:azureKeyvault*`: the typed settings of the `azurekv` provider, their catalog rows
//! and their parsing. Built with or without the `azurekv` feature, so that a build without
//! it still recognises the provider and says which feature it needs.

use crate::config::ConfigError;
use crate::config::azure_key_vault::{
    AzureAdCredentials, azure_ad_credentials, azure_object_name, azure_vault_uri,
};
use crate::config::catalog::settings_catalog;
use crate::config::catalog::{GroupValues, KnownSetting};
use crate::keys::ProviderSettings;

settings_catalog! {
    AZURE_KEY_VAULT_SETTINGS in rsa_key for "azurekv";
    RSA_KEY_AZURE_KEYVAULT_URI = "azureKeyvaultUri";
    RSA_KEY_AZURE_KEYVAULT_KEY_NAME = "azureKeyvaultKeyName";
    RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID = "azureKeyvaultAdTenantId";
    RSA_KEY_AZURE_KEYVAULT_AD_APP_ID = "azureKeyvaultAdAppId";
    RSA_KEY_AZURE_KEYVAULT_AD_SECRET = "azureKeyvaultAdSecret";
}

/// `rsaKey:azureKeyvault*`.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultKeySettings {
    /// `azureKeyvaultUri`, e.g. `https://contoso.vault.azure.net/`.
    pub vault_uri: String,
    /// `azureKeyvaultKeyName`: the key's name; its current version is used, as upstream.
    pub key_name: String,
    pub credentials: AzureAdCredentials,
}

impl ProviderSettings for AzureKeyVaultKeySettings {
    const CATALOG_ROWS: &'static [KnownSetting] = AZURE_KEY_VAULT_SETTINGS;
    const UPSTREAM_ORDER: u8 = 1;

    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError> {
        Ok(AzureKeyVaultKeySettings {
            vault_uri: azure_vault_uri(input.values, input.at(RSA_KEY_AZURE_KEYVAULT_URI))?,
            key_name: azure_object_name(
                input.values,
                input.at(RSA_KEY_AZURE_KEYVAULT_KEY_NAME),
                "the name of the RSA key in the vault",
            )?,
            credentials: azure_ad_credentials(
                input.values,
                [
                    RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID,
                    RSA_KEY_AZURE_KEYVAULT_AD_APP_ID,
                    RSA_KEY_AZURE_KEYVAULT_AD_SECRET,
                ]
                .map(|path| input.at(path)),
            )?,
        })
    }
}
