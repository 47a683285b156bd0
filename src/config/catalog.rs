//! The catalog of settings: every setting below `keyConnectorSettings`, its typed path
//! (both spellings), the provider it belongs to and its help text. `--help`, the
//! unknown-setting warnings, the did-you-mean suggestions and validation all read this one
//! table (validation looks settings up only by these paths, and a debug build refuses any
//! other), so they cannot drift apart.

use super::ConfigError;
use super::layers::Values;
use super::setting_path::{SECTION, SettingPath, SettingsGroup};

/// One known setting below `keyConnectorSettings`.
pub struct KnownSetting {
    /// Where it is, in the main group (`transferTo:lockfilePath` in its own).
    pub path: SettingPath,
    /// The store, key provider or certificate source it configures; `None` for the
    /// settings every configuration has.
    pub provider: Option<&'static str>,
    pub help: &'static str,
}

impl KnownSetting {
    /// `provider: help`, as `--help` shows it.
    fn described(&self) -> String {
        match (self.provider, self.help) {
            (Some(provider), "") => provider.to_owned(),
            (Some(provider), help) => format!("{provider}: {help}"),
            (None, help) => help.to_owned(),
        }
    }
}

/// Declares every setting once: its constant (the typed path validation and messages use),
/// the provider it belongs to and its help text; [`KNOWN_SETTINGS`] lists them in this order.
macro_rules! settings_catalog {
    ($($name:ident = $path:expr, $provider:expr, $help:expr;)*) => {
        $(pub const $name: SettingPath = $path;)*

        /// Every setting of upstream's `KeyConnectorSettings` (and ours), in one place.
        /// `transferTo:` accepts the `database:`, `certificate:` and `rsaKey:` groups again,
        /// `rotateTo:` the `certificate:` and `rsaKey:` groups.
        pub const KNOWN_SETTINGS: &[KnownSetting] = &[
            $(KnownSetting { path: $name, provider: $provider, help: $help },)*
        ];
    };
}

settings_catalog! {
    WEB_VAULT_URI = SettingPath::top("webVaultUri"), None, "web vault URL; the only CORS origin (required)";
    IDENTITY_SERVER_URI = SettingPath::top("identityServerUri"), None, "Bitwarden identity server URL (required)";
    DATABASE_PROVIDER = SettingPath::database("provider"), None, "sqlite | json | postgresql | mysql | sqlserver";
    DATABASE_JSON_FILE_PATH = SettingPath::database("jsonFilePath"), Some("json"), "path of the JSON document";
    DATABASE_SQLITE_CONNECTION_STRING = SettingPath::database("sqliteConnectionString"), Some("sqlite"), "`Data Source=/path/keys.db`";
    DATABASE_POSTGRESQL_CONNECTION_STRING = SettingPath::database("postgreSqlConnectionString"), Some("postgresql"), "Npgsql connection string";
    DATABASE_MYSQL_CONNECTION_STRING = SettingPath::database("mySqlConnectionString"), Some("mysql"), "MySqlConnector connection string";
    DATABASE_SQLSERVER_CONNECTION_STRING = SettingPath::database("sqlServerConnectionString"), Some("sqlserver"), "SqlClient connection string";
    RSA_KEY_PROVIDER = SettingPath::rsa_key("provider"), None, "certificate | pkcs11 | awskms | azurekv | gcpkms";
    RSA_KEY_AZURE_KEYVAULT_URI = SettingPath::rsa_key("azureKeyvaultUri"), Some("azurekv"), "";
    RSA_KEY_AZURE_KEYVAULT_KEY_NAME = SettingPath::rsa_key("azureKeyvaultKeyName"), Some("azurekv"), "";
    RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID = SettingPath::rsa_key("azureKeyvaultAdTenantId"), Some("azurekv"), "";
    RSA_KEY_AZURE_KEYVAULT_AD_APP_ID = SettingPath::rsa_key("azureKeyvaultAdAppId"), Some("azurekv"), "";
    RSA_KEY_AZURE_KEYVAULT_AD_SECRET = SettingPath::rsa_key("azureKeyvaultAdSecret"), Some("azurekv"), "";
    RSA_KEY_GOOGLE_CLOUD_PROJECT_ID = SettingPath::rsa_key("googleCloudProjectId"), Some("gcpkms"), "";
    RSA_KEY_GOOGLE_CLOUD_LOCATION_ID = SettingPath::rsa_key("googleCloudLocationId"), Some("gcpkms"), "";
    RSA_KEY_GOOGLE_CLOUD_KEYRING_ID = SettingPath::rsa_key("googleCloudKeyringId"), Some("gcpkms"), "";
    RSA_KEY_GOOGLE_CLOUD_KEY_ID = SettingPath::rsa_key("googleCloudKeyId"), Some("gcpkms"), "";
    RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID = SettingPath::rsa_key("googleCloudKeyVersionId"), Some("gcpkms"), "";
    RSA_KEY_AWS_ACCESS_KEY_ID = SettingPath::rsa_key("awsAccessKeyId"), Some("awskms"), "IAM access key id (empty: AWS default credential chain)";
    RSA_KEY_AWS_ACCESS_KEY_SECRET = SettingPath::rsa_key("awsAccessKeySecret"), Some("awskms"), "its secret (empty: AWS default credential chain)";
    RSA_KEY_AWS_REGION = SettingPath::rsa_key("awsRegion"), Some("awskms"), "e.g. eu-west-1 (empty: AWS_REGION or the AWS profile)";
    RSA_KEY_AWS_KEY_ID = SettingPath::rsa_key("awsKeyId"), Some("awskms"), "key id, key ARN or alias/NAME (required)";
    RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION = SettingPath::rsa_key("awsUseSymmetricEncryption"), Some("awskms"), "true | false";
    RSA_KEY_PKCS11_PROVIDER = SettingPath::rsa_key("pkcs11Provider"), Some("pkcs11"), "yubihsm | opensc";
    RSA_KEY_PKCS11_LIBRARY_PATH = SettingPath::rsa_key("pkcs11LibraryPath"), Some("pkcs11"), "the token's PKCS#11 library (.so)";
    RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER = SettingPath::rsa_key("pkcs11SlotTokenSerialNumber"), Some("pkcs11"), "serial number of the token (required)";
    RSA_KEY_PKCS11_LOGIN_USER_TYPE = SettingPath::rsa_key("pkcs11LoginUserType"), Some("pkcs11"), "user | so | context_specific";
    RSA_KEY_PKCS11_LOGIN_PIN = SettingPath::rsa_key("pkcs11LoginPin"), Some("pkcs11"), "the PIN of the login user type";
    RSA_KEY_PKCS11_PRIVATE_KEY_LABEL = SettingPath::rsa_key("pkcs11PrivateKeyLabel"), Some("pkcs11"), "CKA_LABEL of the private key";
    RSA_KEY_PKCS11_PRIVATE_KEY_ID = SettingPath::rsa_key("pkcs11PrivateKeyId"), Some("pkcs11"), "unsigned integer";
    CERTIFICATE_PROVIDER = SettingPath::certificate("provider"), None, "filesystem | store | azurestorage | azurekv | vault";
    CERTIFICATE_FILESYSTEM_PATH = SettingPath::certificate("filesystemPath"), Some("filesystem"), "path of the PKCS#12 (.pfx) file";
    CERTIFICATE_FILESYSTEM_PASSWORD = SettingPath::certificate("filesystemPassword"), Some("filesystem"), "its password (optional)";
    CERTIFICATE_STORE_THUMBPRINT = SettingPath::certificate("storeThumbprint"), Some("store"), "SHA-1 thumbprint of the certificate in the CurrentUser\\My store";
    CERTIFICATE_STORE_DIRECTORY = SettingPath::certificate("storeDirectory"), Some("store"), "the store's directory (default $HOME/.dotnet/corefx/cryptography/x509stores/my)";
    CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING = SettingPath::certificate("azureStorageConnectionString"), Some("azurestorage"), "storage account connection string";
    CERTIFICATE_AZURE_STORAGE_CONTAINER = SettingPath::certificate("azureStorageContainer"), Some("azurestorage"), "blob container";
    CERTIFICATE_AZURE_STORAGE_FILE_NAME = SettingPath::certificate("azureStorageFileName"), Some("azurestorage"), "blob name of the .pfx";
    CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD = SettingPath::certificate("azureStorageFilePassword"), Some("azurestorage"), "its password (optional)";
    CERTIFICATE_AZURE_KEYVAULT_URI = SettingPath::certificate("azureKeyvaultUri"), Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME = SettingPath::certificate("azureKeyvaultCertificateName"), Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_AD_TENANT_ID = SettingPath::certificate("azureKeyvaultAdTenantId"), Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_AD_APP_ID = SettingPath::certificate("azureKeyvaultAdAppId"), Some("azurekv"), "";
    CERTIFICATE_AZURE_KEYVAULT_AD_SECRET = SettingPath::certificate("azureKeyvaultAdSecret"), Some("azurekv"), "";
    CERTIFICATE_VAULT_SERVER_URI = SettingPath::certificate("vaultServerUri"), Some("vault"), "e.g. https://vault.example.com:8200";
    CERTIFICATE_VAULT_TOKEN = SettingPath::certificate("vaultToken"), Some("vault"), "token with read access";
    CERTIFICATE_VAULT_SECRET_MOUNT_POINT = SettingPath::certificate("vaultSecretMountPoint"), Some("vault"), "KV v2 mount (default secret)";
    CERTIFICATE_VAULT_SECRET_PATH = SettingPath::certificate("vaultSecretPath"), Some("vault"), "the secret's path in the mount";
    CERTIFICATE_VAULT_SECRET_DATA_KEY = SettingPath::certificate("vaultSecretDataKey"), Some("vault"), "data key holding the base64 .pfx";
    CERTIFICATE_VAULT_SECRET_FILE_PASSWORD = SettingPath::certificate("vaultSecretFilePassword"), Some("vault"), "the .pfx password (optional)";
    TRANSFER_TO_LOCKFILE_PATH = SettingPath::top("lockfilePath").in_group(SettingsGroup::TransferTo), None, "one-shot transfer lock file";
}

/// The `--help` text listing every setting with its environment-variable spelling.
pub fn settings_help() -> String {
    let mut text = String::from(
        "Settings (appsettings.json section `keyConnectorSettings`, or environment variables):\n",
    );
    for setting in KNOWN_SETTINGS {
        text.push_str(&format!(
            "  {SECTION}__{:<42} {}\n",
            setting.path.relative().replace(':', "__"),
            setting.described()
        ));
    }
    text.push_str(&format!(
        "  {SECTION}__transferTo__{{database,certificate,rsaKey}}__...   transfer target, same keys as above\n"
    ));
    text.push_str(&format!(
        "  {SECTION}__rotateTo__{{certificate,rsaKey}}__...   new RSA key for `rotate-rsa-key`, same keys as above\n"
    ));
    text.push_str(
        "\nOther environment variables:\n  ASPNETCORE_URLS        listen addresses (default http://localhost:5000)\n  ASPNETCORE_HTTP_PORTS  ports on all interfaces when ASPNETCORE_URLS is unset\n  KEY_CONNECTOR_METRICS_URLS  Prometheus listener(s), off by default\n  RUST_LOG               log filter (default info; overrides Serilog__MinimumLevel__...)\n  Serilog__MinimumLevel__Default, Serilog__WriteTo__N__Args__path  the official image's log settings\n",
    );
    text.push_str(
        "\nConnection limits (Kestrel's names, also in appsettings.json under `Kestrel`):\n",
    );
    for (path, meaning) in super::connection_limits::SETTINGS {
        text.push_str(&format!(
            "  Kestrel__{:<40} {meaning}\n",
            path.replace(':', "__")
        ));
    }
    text
}

/// Whether `path_lower` (below `keyConnectorSettings`, lower case) is a setting of the
/// catalog, in any group that accepts it.
pub(super) fn is_known(path_lower: &str) -> bool {
    every_accepted_path().any(|path| path.relative().eq_ignore_ascii_case(path_lower))
}

/// Whether validation may read `path`: a setting of the catalog, in a group that accepts it.
pub(super) fn lists(path: SettingPath) -> bool {
    every_accepted_path().any(|accepted| accepted == path)
}

/// Every catalog setting in every group that accepts it again (`transferTo`, `rotateTo`).
fn every_accepted_path() -> impl Iterator<Item = SettingPath> {
    KNOWN_SETTINGS.iter().flat_map(|setting| {
        let path = setting.path;
        [
            SettingsGroup::Main,
            SettingsGroup::TransferTo,
            SettingsGroup::RotateTo,
        ]
        .into_iter()
        .filter(move |group| {
            path.group() == SettingsGroup::Main && path.section().accepted_in(*group)
        })
        .map(move |group| path.in_group(group))
        .chain((path.group() != SettingsGroup::Main).then_some(path))
    })
}

impl Values {
    /// The non-empty value of the catalog setting `path`. Validation reads settings only
    /// through here, so a setting it reads cannot be missing from the catalog (and so from
    /// `--help` and the unknown-setting warnings): a debug build refuses one that is.
    pub(super) fn setting(&self, path: SettingPath) -> Option<&str> {
        debug_assert!(
            lists(path),
            "{} is not in the settings catalog",
            path.setting()
        );
        self.get(&path.relative())
    }

    /// [`Values::setting`], or an error saying it is required and `what` it is.
    pub(super) fn require_setting(
        &self,
        path: SettingPath,
        what: &str,
    ) -> Result<&str, ConfigError> {
        self.setting(path)
            .ok_or_else(|| ConfigError::at(path, format!("is required: {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_listed_once_and_shown_in_help() {
        let help = settings_help();
        for (index, setting) in KNOWN_SETTINGS.iter().enumerate() {
            assert!(
                !KNOWN_SETTINGS[..index]
                    .iter()
                    .any(|s| s.path == setting.path),
                "{} is listed twice",
                setting.path
            );
            assert!(help.contains(&setting.path.env_var()), "{}", setting.path);
        }
    }

    #[test]
    fn transfer_and_rotate_groups_accept_their_sections_only() {
        assert!(is_known("transferto:rsakey:awskeyid"));
        assert!(is_known("transferto:database:provider"));
        assert!(is_known("transferto:lockfilepath"));
        assert!(is_known("rotateto:certificate:filesystempath"));
        assert!(!is_known("rotateto:database:provider"));
        assert!(!is_known("rotateto:lockfilepath"));
        assert!(!is_known("transferto:webvaulturi"));
        assert!(lists(RSA_KEY_AWS_KEY_ID.in_group(SettingsGroup::RotateTo)));
        assert!(!lists(DATABASE_PROVIDER.in_group(SettingsGroup::RotateTo)));
    }
}
