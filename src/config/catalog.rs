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

pub const WEB_VAULT_URI: SettingPath = SettingPath::top("webVaultUri");
pub const IDENTITY_SERVER_URI: SettingPath = SettingPath::top("identityServerUri");
pub const DATABASE_PROVIDER: SettingPath = SettingPath::database("provider");
pub const DATABASE_JSON_FILE_PATH: SettingPath = SettingPath::database("jsonFilePath");
pub const DATABASE_SQLITE_CONNECTION_STRING: SettingPath =
    SettingPath::database("sqliteConnectionString");
pub const DATABASE_POSTGRESQL_CONNECTION_STRING: SettingPath =
    SettingPath::database("postgreSqlConnectionString");
pub const DATABASE_MYSQL_CONNECTION_STRING: SettingPath =
    SettingPath::database("mySqlConnectionString");
pub const DATABASE_SQLSERVER_CONNECTION_STRING: SettingPath =
    SettingPath::database("sqlServerConnectionString");
pub const RSA_KEY_PROVIDER: SettingPath = SettingPath::rsa_key("provider");
pub const RSA_KEY_AZURE_KEYVAULT_URI: SettingPath = SettingPath::rsa_key("azureKeyvaultUri");
pub const RSA_KEY_AZURE_KEYVAULT_KEY_NAME: SettingPath =
    SettingPath::rsa_key("azureKeyvaultKeyName");
pub const RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID: SettingPath =
    SettingPath::rsa_key("azureKeyvaultAdTenantId");
pub const RSA_KEY_AZURE_KEYVAULT_AD_APP_ID: SettingPath =
    SettingPath::rsa_key("azureKeyvaultAdAppId");
pub const RSA_KEY_AZURE_KEYVAULT_AD_SECRET: SettingPath =
    SettingPath::rsa_key("azureKeyvaultAdSecret");
pub const RSA_KEY_GOOGLE_CLOUD_PROJECT_ID: SettingPath =
    SettingPath::rsa_key("googleCloudProjectId");
pub const RSA_KEY_GOOGLE_CLOUD_LOCATION_ID: SettingPath =
    SettingPath::rsa_key("googleCloudLocationId");
pub const RSA_KEY_GOOGLE_CLOUD_KEYRING_ID: SettingPath =
    SettingPath::rsa_key("googleCloudKeyringId");
pub const RSA_KEY_GOOGLE_CLOUD_KEY_ID: SettingPath = SettingPath::rsa_key("googleCloudKeyId");
pub const RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID: SettingPath =
    SettingPath::rsa_key("googleCloudKeyVersionId");
pub const RSA_KEY_AWS_ACCESS_KEY_ID: SettingPath = SettingPath::rsa_key("awsAccessKeyId");
pub const RSA_KEY_AWS_ACCESS_KEY_SECRET: SettingPath = SettingPath::rsa_key("awsAccessKeySecret");
pub const RSA_KEY_AWS_REGION: SettingPath = SettingPath::rsa_key("awsRegion");
pub const RSA_KEY_AWS_KEY_ID: SettingPath = SettingPath::rsa_key("awsKeyId");
pub const RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION: SettingPath =
    SettingPath::rsa_key("awsUseSymmetricEncryption");
pub const RSA_KEY_PKCS11_PROVIDER: SettingPath = SettingPath::rsa_key("pkcs11Provider");
pub const RSA_KEY_PKCS11_LIBRARY_PATH: SettingPath = SettingPath::rsa_key("pkcs11LibraryPath");
pub const RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER: SettingPath =
    SettingPath::rsa_key("pkcs11SlotTokenSerialNumber");
pub const RSA_KEY_PKCS11_LOGIN_USER_TYPE: SettingPath = SettingPath::rsa_key("pkcs11LoginUserType");
pub const RSA_KEY_PKCS11_LOGIN_PIN: SettingPath = SettingPath::rsa_key("pkcs11LoginPin");
pub const RSA_KEY_PKCS11_PRIVATE_KEY_LABEL: SettingPath =
    SettingPath::rsa_key("pkcs11PrivateKeyLabel");
pub const RSA_KEY_PKCS11_PRIVATE_KEY_ID: SettingPath = SettingPath::rsa_key("pkcs11PrivateKeyId");
pub const CERTIFICATE_PROVIDER: SettingPath = SettingPath::certificate("provider");
pub const CERTIFICATE_FILESYSTEM_PATH: SettingPath = SettingPath::certificate("filesystemPath");
pub const CERTIFICATE_FILESYSTEM_PASSWORD: SettingPath =
    SettingPath::certificate("filesystemPassword");
pub const CERTIFICATE_STORE_THUMBPRINT: SettingPath = SettingPath::certificate("storeThumbprint");
pub const CERTIFICATE_STORE_DIRECTORY: SettingPath = SettingPath::certificate("storeDirectory");
pub const CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING: SettingPath =
    SettingPath::certificate("azureStorageConnectionString");
pub const CERTIFICATE_AZURE_STORAGE_CONTAINER: SettingPath =
    SettingPath::certificate("azureStorageContainer");
pub const CERTIFICATE_AZURE_STORAGE_FILE_NAME: SettingPath =
    SettingPath::certificate("azureStorageFileName");
pub const CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD: SettingPath =
    SettingPath::certificate("azureStorageFilePassword");
pub const CERTIFICATE_AZURE_KEYVAULT_URI: SettingPath =
    SettingPath::certificate("azureKeyvaultUri");
pub const CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME: SettingPath =
    SettingPath::certificate("azureKeyvaultCertificateName");
pub const CERTIFICATE_AZURE_KEYVAULT_AD_TENANT_ID: SettingPath =
    SettingPath::certificate("azureKeyvaultAdTenantId");
pub const CERTIFICATE_AZURE_KEYVAULT_AD_APP_ID: SettingPath =
    SettingPath::certificate("azureKeyvaultAdAppId");
pub const CERTIFICATE_AZURE_KEYVAULT_AD_SECRET: SettingPath =
    SettingPath::certificate("azureKeyvaultAdSecret");
pub const CERTIFICATE_VAULT_SERVER_URI: SettingPath = SettingPath::certificate("vaultServerUri");
pub const CERTIFICATE_VAULT_TOKEN: SettingPath = SettingPath::certificate("vaultToken");
pub const CERTIFICATE_VAULT_SECRET_MOUNT_POINT: SettingPath =
    SettingPath::certificate("vaultSecretMountPoint");
pub const CERTIFICATE_VAULT_SECRET_PATH: SettingPath = SettingPath::certificate("vaultSecretPath");
pub const CERTIFICATE_VAULT_SECRET_DATA_KEY: SettingPath =
    SettingPath::certificate("vaultSecretDataKey");
pub const CERTIFICATE_VAULT_SECRET_FILE_PASSWORD: SettingPath =
    SettingPath::certificate("vaultSecretFilePassword");
pub const TRANSFER_TO_LOCKFILE_PATH: SettingPath =
    SettingPath::top("lockfilePath").in_group(SettingsGroup::TransferTo);
/// Every setting of upstream's `KeyConnectorSettings` (and ours), in one place.
/// `transferTo:` accepts the `database:`, `certificate:` and `rsaKey:` groups again,
/// `rotateTo:` the `certificate:` and `rsaKey:` groups.
pub const KNOWN_SETTINGS: &[KnownSetting] = &[
    KnownSetting {
        path: WEB_VAULT_URI,
        provider: None,
        help: "web vault URL; the only CORS origin (required)",
    },
    KnownSetting {
        path: IDENTITY_SERVER_URI,
        provider: None,
        help: "Bitwarden identity server URL (required)",
    },
    KnownSetting {
        path: DATABASE_PROVIDER,
        provider: None,
        help: "sqlite | json | postgresql | mysql | sqlserver",
    },
    KnownSetting {
        path: DATABASE_JSON_FILE_PATH,
        provider: Some("json"),
        help: "path of the JSON document",
    },
    KnownSetting {
        path: DATABASE_SQLITE_CONNECTION_STRING,
        provider: Some("sqlite"),
        help: "`Data Source=/path/keys.db`",
    },
    KnownSetting {
        path: DATABASE_POSTGRESQL_CONNECTION_STRING,
        provider: Some("postgresql"),
        help: "Npgsql connection string",
    },
    KnownSetting {
        path: DATABASE_MYSQL_CONNECTION_STRING,
        provider: Some("mysql"),
        help: "MySqlConnector connection string",
    },
    KnownSetting {
        path: DATABASE_SQLSERVER_CONNECTION_STRING,
        provider: Some("sqlserver"),
        help: "SqlClient connection string",
    },
    KnownSetting {
        path: RSA_KEY_PROVIDER,
        provider: None,
        help: "certificate | pkcs11 | awskms | azurekv | gcpkms",
    },
    KnownSetting {
        path: RSA_KEY_AZURE_KEYVAULT_URI,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_AZURE_KEYVAULT_KEY_NAME,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_AZURE_KEYVAULT_AD_TENANT_ID,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_AZURE_KEYVAULT_AD_APP_ID,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_AZURE_KEYVAULT_AD_SECRET,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_GOOGLE_CLOUD_PROJECT_ID,
        provider: Some("gcpkms"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_GOOGLE_CLOUD_LOCATION_ID,
        provider: Some("gcpkms"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_GOOGLE_CLOUD_KEYRING_ID,
        provider: Some("gcpkms"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_GOOGLE_CLOUD_KEY_ID,
        provider: Some("gcpkms"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID,
        provider: Some("gcpkms"),
        help: "",
    },
    KnownSetting {
        path: RSA_KEY_AWS_ACCESS_KEY_ID,
        provider: Some("awskms"),
        help: "IAM access key id (empty: AWS default credential chain)",
    },
    KnownSetting {
        path: RSA_KEY_AWS_ACCESS_KEY_SECRET,
        provider: Some("awskms"),
        help: "its secret (empty: AWS default credential chain)",
    },
    KnownSetting {
        path: RSA_KEY_AWS_REGION,
        provider: Some("awskms"),
        help: "e.g. eu-west-1 (empty: AWS_REGION or the AWS profile)",
    },
    KnownSetting {
        path: RSA_KEY_AWS_KEY_ID,
        provider: Some("awskms"),
        help: "key id, key ARN or alias/NAME (required)",
    },
    KnownSetting {
        path: RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION,
        provider: Some("awskms"),
        help: "true | false",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_PROVIDER,
        provider: Some("pkcs11"),
        help: "yubihsm | opensc",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_LIBRARY_PATH,
        provider: Some("pkcs11"),
        help: "the token's PKCS#11 library (.so)",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER,
        provider: Some("pkcs11"),
        help: "serial number of the token (required)",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_LOGIN_USER_TYPE,
        provider: Some("pkcs11"),
        help: "user | so | context_specific",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_LOGIN_PIN,
        provider: Some("pkcs11"),
        help: "the PIN of the login user type",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_PRIVATE_KEY_LABEL,
        provider: Some("pkcs11"),
        help: "CKA_LABEL of the private key",
    },
    KnownSetting {
        path: RSA_KEY_PKCS11_PRIVATE_KEY_ID,
        provider: Some("pkcs11"),
        help: "unsigned integer",
    },
    KnownSetting {
        path: CERTIFICATE_PROVIDER,
        provider: None,
        help: "filesystem | store | azurestorage | azurekv | vault",
    },
    KnownSetting {
        path: CERTIFICATE_FILESYSTEM_PATH,
        provider: Some("filesystem"),
        help: "path of the PKCS#12 (.pfx) file",
    },
    KnownSetting {
        path: CERTIFICATE_FILESYSTEM_PASSWORD,
        provider: Some("filesystem"),
        help: "its password (optional)",
    },
    KnownSetting {
        path: CERTIFICATE_STORE_THUMBPRINT,
        provider: Some("store"),
        help: "SHA-1 thumbprint of the certificate in the CurrentUser\\My store",
    },
    KnownSetting {
        path: CERTIFICATE_STORE_DIRECTORY,
        provider: Some("store"),
        help: "the store's directory (default $HOME/.dotnet/corefx/cryptography/x509stores/my)",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING,
        provider: Some("azurestorage"),
        help: "storage account connection string",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_STORAGE_CONTAINER,
        provider: Some("azurestorage"),
        help: "blob container",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_STORAGE_FILE_NAME,
        provider: Some("azurestorage"),
        help: "blob name of the .pfx",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD,
        provider: Some("azurestorage"),
        help: "its password (optional)",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_KEYVAULT_URI,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_KEYVAULT_CERTIFICATE_NAME,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_KEYVAULT_AD_TENANT_ID,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_KEYVAULT_AD_APP_ID,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: CERTIFICATE_AZURE_KEYVAULT_AD_SECRET,
        provider: Some("azurekv"),
        help: "",
    },
    KnownSetting {
        path: CERTIFICATE_VAULT_SERVER_URI,
        provider: Some("vault"),
        help: "e.g. https://vault.example.com:8200",
    },
    KnownSetting {
        path: CERTIFICATE_VAULT_TOKEN,
        provider: Some("vault"),
        help: "token with read access",
    },
    KnownSetting {
        path: CERTIFICATE_VAULT_SECRET_MOUNT_POINT,
        provider: Some("vault"),
        help: "KV v2 mount (default secret)",
    },
    KnownSetting {
        path: CERTIFICATE_VAULT_SECRET_PATH,
        provider: Some("vault"),
        help: "the secret's path in the mount",
    },
    KnownSetting {
        path: CERTIFICATE_VAULT_SECRET_DATA_KEY,
        provider: Some("vault"),
        help: "data key holding the base64 .pfx",
    },
    KnownSetting {
        path: CERTIFICATE_VAULT_SECRET_FILE_PASSWORD,
        provider: Some("vault"),
        help: "the .pfx password (optional)",
    },
    KnownSetting {
        path: TRANSFER_TO_LOCKFILE_PATH,
        provider: None,
        help: "one-shot transfer lock file",
    },
];

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
