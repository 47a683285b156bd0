//! Validated settings: what the service runs with, as typed values.
//!
//! Settings are read the way ASP.NET reads them for upstream: section `keyConnectorSettings`
//! of an optional `appsettings.json`, overridden by environment variables spelled
//! `keyConnectorSettings__database__provider` (names case-insensitive, `__` nests). See
//! [`raw`] for the reading and [`load`] for the validation. Every error names the setting
//! and its environment-variable spelling.

mod azure_key_vault;
pub mod azure_storage;
pub mod catalog;
mod certificate;
pub mod connection_limits;
pub mod connection_string;
mod database;
mod layers;
pub mod listen;
pub mod logging;
pub mod raw;
mod rsa_key;
pub mod setting_path;
pub mod sql_connection;
mod suggestion;
#[cfg(test)]
mod test_env;

use std::path::PathBuf;

use secrecy::SecretString;

pub use azure_storage::{AzureStorageAccount, AzureStorageCredential};
pub use listen::{ListenHost, ListenUrl};
pub use setting_path::{SettingPath, SettingSection, SettingsGroup};
pub use sql_connection::{SqlConnection, SqlDialect};

/// Everything the service needs to start, validated.
#[derive(Debug)]
pub struct Settings {
    /// The single CORS origin allowed (trailing `/` removed).
    pub web_vault_origin: String,
    /// Where the OpenID Connect discovery document is looked up.
    pub identity_server_uri: String,
    pub database: DatabaseSettings,
    pub rsa_key: RsaKeySettings,
    pub transfer_to: Option<TransferToSettings>,
    /// `rotateTo:rsaKey` (with `rotateTo:certificate`): the new RSA key for the
    /// `rotate-rsa-key` command. Not an upstream setting; upstream ignores it.
    pub rotate_to: Option<RsaKeySettings>,
    /// Kestrel's default certificate (`Kestrel__Certificates__Default__*`), which serves the
    /// `https://` listeners; `None` when no path is set.
    pub https_certificate: Option<crate::tls::CertificateSettings>,
}

#[derive(Debug, Clone)]
pub enum DatabaseSettings {
    Json { path: PathBuf },
    Sqlite { connection: SqliteConnection },
    PostgreSql { connection: SqlConnection },
    MySql { connection: SqlConnection },
    SqlServer { connection: SqlConnection },
}

impl DatabaseSettings {
    pub fn provider_name(&self) -> &'static str {
        match self {
            DatabaseSettings::Json { .. } => "json",
            DatabaseSettings::Sqlite { .. } => "sqlite",
            DatabaseSettings::PostgreSql { .. } => "postgresql",
            DatabaseSettings::MySql { .. } => "mysql",
            DatabaseSettings::SqlServer { .. } => "sqlserver",
        }
    }
}

/// A Microsoft.Data.Sqlite connection string, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConnection {
    /// `Data Source` (also `DataSource`, `Filename`).
    pub path: PathBuf,
    /// `Mode=ReadOnly` was given.
    pub read_only: bool,
}

#[derive(Debug)]
pub enum RsaKeySettings {
    /// `certificate`: the private key of a PKCS#12 file from a certificate source.
    Certificate(CertificateSettings),
    /// `pkcs11`: a private key that never leaves a PKCS#11 token (HSM, smart card).
    Pkcs11(Pkcs11Settings),
    /// `awskms`: a key in AWS Key Management Service (or a KMS-compatible service).
    AwsKms(AwsKmsSettings),
    /// `azurekv`: a key in Azure Key Vault (or Managed HSM).
    AzureKeyVault(AzureKeyVaultKeySettings),
    /// `gcpkms`: an asymmetric-decryption key version in Google Cloud KMS.
    GcpKms(GcpKmsSettings),
}

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

/// `rsaKey:azureKeyvault*`.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultKeySettings {
    /// `azureKeyvaultUri`, e.g. `https://contoso.vault.azure.net/`.
    pub vault_uri: String,
    /// `azureKeyvaultKeyName`: the key's name; its current version is used, as upstream.
    pub key_name: String,
    pub credentials: AzureAdCredentials,
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

/// `rsaKey:googleCloud*`: the five parts of a CryptoKeyVersion resource name. Credentials
/// are Google's Application Default Credentials, as upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpKmsSettings {
    pub project_id: String,
    pub location_id: String,
    pub key_ring_id: String,
    pub key_id: String,
    pub key_version_id: String,
    /// The KMS endpoint of `KEY_CONNECTOR_GCP_KMS_ENDPOINT` (a stand-in or a private
    /// endpoint); `None` for Google's.
    pub endpoint: Option<String>,
}

impl GcpKmsSettings {
    /// `projects/…/locations/…/keyRings/…/cryptoKeys/…/cryptoKeyVersions/…`.
    pub fn key_version_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/keyRings/{}/cryptoKeys/{}/cryptoKeyVersions/{}",
            self.project_id, self.location_id, self.key_ring_id, self.key_id, self.key_version_id
        )
    }
}

/// `rsaKey:aws*`: which KMS key wraps the symmetric key, and how to reach it.
#[derive(Debug, Clone)]
pub struct AwsKmsSettings {
    /// `awsAccessKeyId` and `awsAccessKeySecret`; `None` when both are empty, which selects
    /// the AWS default credential chain (environment, profile, web identity, ECS, IMDS).
    pub credentials: Option<AwsStaticCredentials>,
    /// `awsRegion`; when absent, the region the AWS environment names (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// `awsKeyId`: key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub key_id: String,
    /// `awsUseSymmetricEncryption`: `SYMMETRIC_DEFAULT` instead of `RSAES_OAEP_SHA_256`.
    pub use_symmetric_encryption: bool,
}

/// An IAM access key given in the settings.
#[derive(Debug, Clone)]
pub struct AwsStaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

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
    /// `vaultServerUri` without a trailing `/`, e.g. `https://vault.example.com:8200`.
    pub server_uri: String,
    /// `vaultToken`.
    pub token: SecretString,
    /// `vaultSecretMountPoint`; `secret` (Vault's and VaultSharp's default) when blank.
    pub mount_point: String,
    /// `vaultSecretPath`: the secret's path inside the mount.
    pub secret_path: String,
    /// `vaultSecretDataKey`: the key of the secret's data holding the base64 PFX.
    pub data_key: String,
    /// `vaultSecretFilePassword`.
    pub password: Option<SecretString>,
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

/// `transferTo`: upstream's one-shot copy into another database at start-up, and the
/// target of the `transfer` command.
#[derive(Debug)]
pub struct TransferToSettings {
    /// `transferTo:lockfilePath`: with a target, the copy runs at start-up unless this file
    /// exists (upstream's rule); it is written when the copy starts.
    pub lockfile_path: Option<PathBuf>,
    /// `transferTo:database` and `transferTo:rsaKey` (with `transferTo:certificate`), when
    /// both are configured.
    pub target: Option<TransferTarget>,
}

/// Where a transfer copies to.
#[derive(Debug)]
pub struct TransferTarget {
    pub database: DatabaseSettings,
    pub rsa_key: RsaKeySettings,
}

/// A setting that is missing or wrong. Names the setting in both spellings.
#[derive(Debug, thiserror::Error)]
#[error("setting `{setting}` (environment variable `{env_var}`): {message}")]
pub struct ConfigError {
    /// Path inside keyConnectorSettings, e.g. `keyConnectorSettings:database:provider`.
    pub setting: String,
    /// The same as an environment variable, e.g. `keyConnectorSettings__database__provider`.
    pub env_var: String,
    pub message: String,
    /// What went wrong underneath (reading or parsing a file), kept for callers that walk
    /// the chain; the message already says it in words.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ConfigError {
    /// `message` about the setting at `path`.
    pub fn at(path: SettingPath, message: impl Into<String>) -> Self {
        Self {
            setting: path.setting(),
            env_var: path.env_var(),
            message: message.into(),
            source: None,
        }
    }

    /// The same error, keeping `source` as its cause.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Settings plus the warnings found while reading them (unknown keys, ignored values).
#[derive(Debug)]
pub struct LoadedSettings {
    pub settings: Settings,
    pub warnings: Vec<String>,
    /// Where `appsettings.json` was read from, if one was.
    pub config_file: Option<PathBuf>,
}

/// Where settings come from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config PATH`; without it `appsettings.json` in the working directory, if present.
    pub file: Option<PathBuf>,
    /// The process environment (passed in so tests control it).
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// A variable of this source's environment (names match exactly, as on Linux).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The API listeners: `ASPNETCORE_URLS`, else `ASPNETCORE_HTTP_PORTS`, else
    /// `http://localhost:5000`, as ASP.NET reads them.
    pub fn listen_urls(&self) -> Result<Vec<ListenUrl>, listen::ListenError> {
        listen::parse_listen_urls(
            self.var("ASPNETCORE_URLS"),
            self.var("ASPNETCORE_HTTP_PORTS"),
        )
    }

    /// The opt-in Prometheus listeners of `KEY_CONNECTOR_METRICS_URLS` (ASPNETCORE_URLS
    /// syntax); `Ok(None)` when it is unset or empty.
    pub fn metrics_urls(&self) -> Result<Option<Vec<ListenUrl>>, listen::ListenError> {
        match self.var(METRICS_URLS_VAR) {
            Some(urls) if !urls.trim().is_empty() => {
                listen::parse_listen_urls(Some(urls), None).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The variable naming another Cloud KMS endpoint than Google's (tests, private endpoints).
pub const GCP_KMS_ENDPOINT_VAR: &str = "KEY_CONNECTOR_GCP_KMS_ENDPOINT";

/// The variable naming the metrics listeners.
pub const METRICS_URLS_VAR: &str = "KEY_CONNECTOR_METRICS_URLS";

/// Reads and validates the settings.
pub fn load(source: &ConfigSource) -> Result<LoadedSettings, ConfigError> {
    raw::load(source)
}
