//! `certificate:provider` and the settings of each certificate source (`filesystem`,
//! `store`, `azurestorage`, `vault`, `azurekv`), wherever a PKCS#12 file is needed: the
//! typed settings, their catalog rows and their parsing.

use std::path::PathBuf;

use secrecy::SecretString;

use crate::config::azure_key_vault::{
    AzureAdCredentials, azure_ad_credentials, azure_object_name, azure_vault_uri,
};
use crate::config::catalog::settings_catalog;
use crate::config::catalog::{GroupValues, KnownSetting};
use crate::config::{AzureStorageAccount, ConfigError, SettingPath};
use crate::keys::ProviderSettings;
use crate::keys::vault_login::{VaultLogin, VaultLoginPaths};

settings_catalog! {
    CERTIFICATE_SETTINGS in certificate;
    CERTIFICATE_PROVIDER = "provider", None, "filesystem | store | azurestorage | azurekv | vault";
    CERTIFICATE_FILESYSTEM_PATH = "filesystemPath", Some("filesystem"), "path of the PKCS#12 (.pfx) file";
    CERTIFICATE_FILESYSTEM_PASSWORD = "filesystemPassword", Some("filesystem"), "its password (optional)";
    CERTIFICATE_STORE_THUMBPRINT = "storeThumbprint", Some("store"), "SHA-1 thumbprint of the certificate in the CurrentUser\\My store";
    CERTIFICATE_STORE_DIRECTORY = "storeDirectory", Some("store"), "the store's directory (default $HOME/.dotnet/corefx/cryptography/x509stores/my)";
    CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING = "azureStorageConnectionString", Some("azurestorage"), "storage account connection string";
    CERTIFICATE_AZURE_STORAGE_CONTAINER = "azureStorageContainer", Some("azurestorage"), "blob container";
    CERTIFICATE_AZURE_STORAGE_FILE_NAME = "azureStorageFileName", Some("azurestorage"), "blob name of the .pfx";
    CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD = "azureStorageFilePassword", Some("azurestorage"), "its password (optional)";
    CERTIFICATE_AZURE_KEYVAULT_URI = "azureKeyvaultUri", Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME = "azureKeyvaultCertificateName", Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_AD_TENANT_ID = "azureKeyvaultAdTenantId", Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_AD_APP_ID = "azureKeyvaultAdAppId", Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_AD_SECRET = "azureKeyvaultAdSecret", Some("azurekv"), "";
    CERTIFICATE_VAULT_SERVER_URI = "vaultServerUri", Some("vault"), "e.g. https://vault.example.com:8200";
    CERTIFICATE_VAULT_TOKEN = "vaultToken", Some("vault"), "token with read access";
    CERTIFICATE_VAULT_SECRET_MOUNT_POINT = "vaultSecretMountPoint", Some("vault"), "KV v2 mount (default secret)";
    CERTIFICATE_VAULT_SECRET_PATH = "vaultSecretPath", Some("vault"), "the secret's path in the mount";
    CERTIFICATE_VAULT_SECRET_DATA_KEY = "vaultSecretDataKey", Some("vault"), "data key holding the base64 .pfx";
    CERTIFICATE_VAULT_SECRET_FILE_PASSWORD = "vaultSecretFilePassword", Some("vault"), "the .pfx password (optional)";
    CERTIFICATE_VAULT_NAMESPACE = "vaultNamespace", Some("vault"), "Vault namespace, sent as X-Vault-Namespace (optional; ours)";
    CERTIFICATE_VAULT_AUTH_METHOD = "vaultAuthMethod", Some("vault"), "token | approle | kubernetes (default token; ours)";
    CERTIFICATE_VAULT_APP_ROLE_ROLE_ID = "vaultAppRoleRoleId", Some("vault"), "role id for the approle method";
    CERTIFICATE_VAULT_APP_ROLE_SECRET_ID = "vaultAppRoleSecretId", Some("vault"), "secret id for the approle method";
    CERTIFICATE_VAULT_AUTH_MOUNT_POINT = "vaultAuthMountPoint", Some("vault"), "the auth method's mount (default: the method's name)";
    CERTIFICATE_VAULT_KUBERNETES_ROLE = "vaultKubernetesRole", Some("vault"), "Vault role for the kubernetes method";
    CERTIFICATE_VAULT_KUBERNETES_TOKEN_PATH = "vaultKubernetesTokenPath", Some("vault"), "service-account token file (default: the pod's)";
}

/// The Vault login settings' names in the `certificate:` group.
pub const CERTIFICATE_VAULT_LOGIN_PATHS: VaultLoginPaths = VaultLoginPaths {
    server_uri: CERTIFICATE_VAULT_SERVER_URI,
    namespace: CERTIFICATE_VAULT_NAMESPACE,
    auth_method: CERTIFICATE_VAULT_AUTH_METHOD,
    token: CERTIFICATE_VAULT_TOKEN,
    app_role_role_id: CERTIFICATE_VAULT_APP_ROLE_ROLE_ID,
    app_role_secret_id: CERTIFICATE_VAULT_APP_ROLE_SECRET_ID,
    auth_mount_point: CERTIFICATE_VAULT_AUTH_MOUNT_POINT,
    kubernetes_role: CERTIFICATE_VAULT_KUBERNETES_ROLE,
    kubernetes_token_path: CERTIFICATE_VAULT_KUBERNETES_TOKEN_PATH,
};

/// `certificate:provider` and its settings: where the PKCS#12 file comes from.
#[derive(Debug)]
pub enum CertificateSettings {
    /// `filesystem`: a file on disk.
    Filesystem {
        path: PathBuf,
        password: Option<SecretString>,
    },
    /// `store`: the .NET `CurrentUser\My` certificate store, as .NET keeps it on Linux.
    Store(StoreCertificateSettings),
    /// `azurestorage`: a blob in an Azure Storage account.
    AzureStorage(AzureStorageCertificateSettings),
    /// `vault`: a HashiCorp Vault KV version 2 secret holding the file as base64.
    Vault(VaultCertificateSettings),
    /// `azurekv`: an Azure Key Vault certificate, read with its private key from the
    /// certificate's secret.
    AzureKeyVault(AzureKeyVaultCertificateSettings),
}

/// `certificate:storeThumbprint` (and `storeDirectory`, not an upstream setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCertificateSettings {
    /// The SHA-1 thumbprint, 40 upper-case hex digits (separators removed as upstream does).
    pub thumbprint: String,
    /// Where the store's `.pfx` files are; `None` for .NET's own location,
    /// `$HOME/.dotnet/corefx/cryptography/x509stores/my`.
    pub directory: Option<PathBuf>,
    /// The home directory (`HOME`) that .NET's location is below, when it is set.
    pub home: Option<PathBuf>,
}

/// `certificate:azureStorage*`.
#[derive(Debug)]
pub struct AzureStorageCertificateSettings {
    pub account: AzureStorageAccount,
    /// `azureStorageContainer`.
    pub container: String,
    /// `azureStorageFileName`: the blob's name.
    pub file_name: String,
    /// `azureStorageFilePassword`.
    pub password: Option<SecretString>,
}

/// `certificate:vault*`.
#[derive(Debug)]
pub struct VaultCertificateSettings {
    /// `vaultServerUri`, `vaultNamespace` and how to log in (`vaultAuthMethod`: upstream's
    /// `vaultToken`, or ours, AppRole and Kubernetes).
    pub login: VaultLogin,
    /// `vaultSecretMountPoint`; `secret` (Vault's and VaultSharp's default) when blank.
    pub mount_point: String,
    /// `vaultSecretPath`: the secret's path inside the mount.
    pub secret_path: String,
    /// `vaultSecretDataKey`: the key of the secret's data holding the base64 PFX.
    pub data_key: String,
    /// `vaultSecretFilePassword`.
    pub password: Option<SecretString>,
}

/// `certificate:azureKeyvault*`.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultCertificateSettings {
    /// `azureKeyvaultUri`.
    pub vault_uri: String,
    /// `azureKeyvaultCertificateName`.
    pub certificate_name: String,
    pub credentials: AzureAdCredentials,
}

impl ProviderSettings for CertificateSettings {
    const CATALOG_ROWS: &'static [KnownSetting] = CERTIFICATE_SETTINGS;
    const UPSTREAM_ORDER: u8 = 5;

    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError> {
        let provider = input.require_setting(
            CERTIFICATE_PROVIDER,
            "filesystem, store, azurestorage, azurekv or vault",
        )?;
        let password =
            |key: SettingPath| input.setting(key).map(|p| SecretString::from(p.to_owned()));
        match provider.trim().to_ascii_lowercase().as_str() {
            "filesystem" => Ok(CertificateSettings::Filesystem {
                path: PathBuf::from(input.require_setting(
                    CERTIFICATE_FILESYSTEM_PATH,
                    "the PKCS#12 (.pfx) file's path",
                )?),
                password: password(CERTIFICATE_FILESYSTEM_PASSWORD),
            }),
            "store" => {
                let written = input.require_setting(
                    CERTIFICATE_STORE_THUMBPRINT,
                    "the SHA-1 thumbprint of the certificate (40 hex digits)",
                )?;
                Ok(CertificateSettings::Store(StoreCertificateSettings {
                    thumbprint: clean_thumbprint(written).map_err(|message| {
                        ConfigError::at(input.at(CERTIFICATE_STORE_THUMBPRINT), message)
                    })?,
                    directory: input
                        .setting(CERTIFICATE_STORE_DIRECTORY)
                        .map(|d| PathBuf::from(d.trim())),
                    home: input
                        .source
                        .var("HOME")
                        .filter(|home| !home.is_empty())
                        .map(PathBuf::from),
                }))
            }
            "azurestorage" => {
                let text = input.require_setting(
                    CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING,
                    "e.g. `DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net`",
                )?;
                let account = AzureStorageAccount::parse(text).map_err(|message| {
                    ConfigError::at(
                        input.at(CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING),
                        message,
                    )
                })?;
                let container = input
                    .require_setting(
                        CERTIFICATE_AZURE_STORAGE_CONTAINER,
                        "the blob container's name",
                    )?
                    .trim();
                if !is_container_name(container) {
                    return Err(ConfigError::at(
                        input.at(CERTIFICATE_AZURE_STORAGE_CONTAINER),
                        format!(
                            "`{container}` is not a container name: 3 to 63 lower-case letters, digits and single hyphens"
                        ),
                    ));
                }
                let file_name = input
                    .require_setting(
                        CERTIFICATE_AZURE_STORAGE_FILE_NAME,
                        "the blob name of the .pfx file",
                    )?
                    .trim_start_matches('/');
                Ok(CertificateSettings::AzureStorage(
                    AzureStorageCertificateSettings {
                        account,
                        container: container.to_owned(),
                        file_name: file_name.to_owned(),
                        password: password(CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD),
                    },
                ))
            }
            "vault" => {
                let login = VaultLogin::parse(
                    input,
                    &CERTIFICATE_VAULT_LOGIN_PATHS,
                    "a Vault token that may read the secret",
                )?;
                let mount_point = input
                    .setting(CERTIFICATE_VAULT_SECRET_MOUNT_POINT)
                    .map(|m| m.trim().trim_matches('/'))
                    .filter(|m| !m.is_empty())
                    .unwrap_or("secret");
                let secret_path = input
                    .require_setting(
                        CERTIFICATE_VAULT_SECRET_PATH,
                        "the secret's path inside the KV v2 mount",
                    )?
                    .trim()
                    .trim_matches('/');
                let data_key = input.require_setting(
                    CERTIFICATE_VAULT_SECRET_DATA_KEY,
                    "the key in the secret's data that holds the base64 .pfx",
                )?;
                Ok(CertificateSettings::Vault(VaultCertificateSettings {
                    login,
                    mount_point: mount_point.to_owned(),
                    secret_path: secret_path.to_owned(),
                    data_key: data_key.to_owned(),
                    password: password(CERTIFICATE_VAULT_SECRET_FILE_PASSWORD),
                }))
            }
            "azurekv" => Ok(CertificateSettings::AzureKeyVault(
                AzureKeyVaultCertificateSettings {
                    vault_uri: azure_vault_uri(
                        input.values,
                        input.at(CERTIFICATE_AZURE_KEYVAULT_URI),
                    )?,
                    certificate_name: azure_object_name(
                        input.values,
                        input.at(CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME),
                        "the name of the certificate in the vault",
                    )?,
                    credentials: azure_ad_credentials(
                        input.values,
                        [
                            CERTIFICATE_AZURE_KEYVAULT_AD_TENANT_ID,
                            CERTIFICATE_AZURE_KEYVAULT_AD_APP_ID,
                            CERTIFICATE_AZURE_KEYVAULT_AD_SECRET,
                        ]
                        .map(|path| input.at(path)),
                    )?,
                },
            )),
            other => Err(ConfigError::at(
                input.at(CERTIFICATE_PROVIDER),
                format!(
                    "`{other}` is not a certificate provider; use filesystem, store, azurestorage, azurekv or vault"
                ),
            )),
        }
    }
}

/// Upstream's cleaning of a pasted thumbprint: every character that is not a hex digit goes
/// (spaces, colons, hyphens, the invisible marks some certificate dialogs copy), then upper
/// case. Anything but a SHA-1 (40 hex digits) can never match, so it is refused here.
fn clean_thumbprint(written: &str) -> Result<String, String> {
    let cleaned: String = written
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if cleaned.len() != 40 {
        return Err(format!(
            "`{written}` is not a SHA-1 thumbprint: it has {} hex digits, 40 are needed",
            cleaned.len()
        ));
    }
    Ok(cleaned)
}

/// Azure's container naming rule; anything else would only fail later as a 400.
fn is_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        || name == "$root"
}

#[cfg(test)]
mod tests;
