//! `rsaKey:vault*`: the typed settings of the `vaulttransit` provider (ours, not upstream's),
//! their catalog rows and their parsing.

use crate::config::catalog::settings_catalog;
use crate::config::catalog::{GroupValues, KnownSetting};
use crate::config::{ConfigError, SettingPath};
use crate::keys::ProviderSettings;
use crate::keys::vault_login::{VaultLogin, VaultLoginPaths};

settings_catalog! {
    VAULT_TRANSIT_SETTINGS in rsa_key for "vaulttransit";
    RSA_KEY_VAULT_SERVER_URI = "vaultServerUri", "e.g. https://vault.example.com:8200 (required)";
    RSA_KEY_VAULT_TRANSIT_MOUNT_POINT = "vaultTransitMountPoint", "the Transit engine's mount (default transit)";
    RSA_KEY_VAULT_TRANSIT_KEY_NAME = "vaultTransitKeyName", "the Transit key: rsa-2048, rsa-3072, rsa-4096 or aes256-gcm96 (required)";
    RSA_KEY_VAULT_NAMESPACE = "vaultNamespace", "Vault namespace, sent as X-Vault-Namespace (optional)";
    RSA_KEY_VAULT_AUTH_METHOD = "vaultAuthMethod", "token | approle | kubernetes (default token)";
    RSA_KEY_VAULT_TOKEN = "vaultToken", "token for the token method";
    RSA_KEY_VAULT_APP_ROLE_ROLE_ID = "vaultAppRoleRoleId", "role id for the approle method";
    RSA_KEY_VAULT_APP_ROLE_SECRET_ID = "vaultAppRoleSecretId", "secret id for the approle method";
    RSA_KEY_VAULT_AUTH_MOUNT_POINT = "vaultAuthMountPoint", "the auth method's mount (default: the method's name)";
    RSA_KEY_VAULT_KUBERNETES_ROLE = "vaultKubernetesRole", "Vault role for the kubernetes method";
    RSA_KEY_VAULT_KUBERNETES_TOKEN_PATH = "vaultKubernetesTokenPath", "service-account token file (default: the pod's)";
}

/// The login settings' names in the `rsaKey:` group.
pub const LOGIN_PATHS: VaultLoginPaths = VaultLoginPaths {
    server_uri: RSA_KEY_VAULT_SERVER_URI,
    namespace: RSA_KEY_VAULT_NAMESPACE,
    auth_method: RSA_KEY_VAULT_AUTH_METHOD,
    token: RSA_KEY_VAULT_TOKEN,
    app_role_role_id: RSA_KEY_VAULT_APP_ROLE_ROLE_ID,
    app_role_secret_id: RSA_KEY_VAULT_APP_ROLE_SECRET_ID,
    auth_mount_point: RSA_KEY_VAULT_AUTH_MOUNT_POINT,
    kubernetes_role: RSA_KEY_VAULT_KUBERNETES_ROLE,
    kubernetes_token_path: RSA_KEY_VAULT_KUBERNETES_TOKEN_PATH,
};

/// `rsaKey:vault*`: which Transit key wraps the symmetric key, and how to log in.
#[derive(Debug, Clone)]
pub struct VaultTransitSettings {
    pub login: VaultLogin,
    /// `vaultTransitMountPoint`, `transit` when blank.
    pub mount_point: String,
    /// `vaultTransitKeyName`.
    pub key_name: String,
    /// The names of the two settings above, in the group they were read in.
    pub mount_point_setting: SettingPath,
    pub key_name_setting: SettingPath,
}

impl ProviderSettings for VaultTransitSettings {
    const CATALOG_ROWS: &'static [KnownSetting] = VAULT_TRANSIT_SETTINGS;
    /// Not upstream's: after every provider upstream declares.
    const UPSTREAM_ORDER: u8 = 6;

    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError> {
        let login = VaultLogin::parse(
            input,
            &LOGIN_PATHS,
            "a Vault token whose policy may encrypt and decrypt with the Transit key and read it",
        )?;
        let key_name = input
            .require_setting(
                RSA_KEY_VAULT_TRANSIT_KEY_NAME,
                "the name of the Transit key that wraps the symmetric key",
            )?
            .trim()
            .trim_matches('/');
        let mount_point = input
            .setting(RSA_KEY_VAULT_TRANSIT_MOUNT_POINT)
            .map(|m| m.trim().trim_matches('/'))
            .filter(|m| !m.is_empty())
            .unwrap_or("transit");
        Ok(Self {
            login,
            mount_point: mount_point.to_owned(),
            key_name: key_name.to_owned(),
            mount_point_setting: input.at(RSA_KEY_VAULT_TRANSIT_MOUNT_POINT),
            key_name_setting: input.at(RSA_KEY_VAULT_TRANSIT_KEY_NAME),
        })
    }
}
