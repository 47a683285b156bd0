//! The catalog of settings: every setting below `keyConnectorSettings` with its help text.
//! `--help`, the unknown-setting warnings and the did-you-mean suggestions all read this one
//! table, so they cannot drift apart.

/// The section of the configuration this service reads.
pub const SECTION: &str = "keyConnectorSettings";

/// One known setting below `keyConnectorSettings`.
pub struct KnownSetting {
    pub path: &'static str,
    pub help: &'static str,
}

const fn known(path: &'static str, help: &'static str) -> KnownSetting {
    KnownSetting { path, help }
}

/// Every setting of upstream's `KeyConnectorSettings`, in one place. `transferTo:` accepts
/// the `database:`, `certificate:` and `rsaKey:` groups again.
pub const KNOWN_SETTINGS: &[KnownSetting] = &[
    known(
        "webVaultUri",
        "web vault URL; the only CORS origin (required)",
    ),
    known(
        "identityServerUri",
        "Bitwarden identity server URL (required)",
    ),
    known(
        "database:provider",
        "sqlite | json | postgresql | mysql | sqlserver",
    ),
    known("database:jsonFilePath", "json: path of the JSON document"),
    known(
        "database:sqliteConnectionString",
        "sqlite: `Data Source=/path/keys.db`",
    ),
    known(
        "database:postgreSqlConnectionString",
        "postgresql: Npgsql connection string",
    ),
    known(
        "database:mySqlConnectionString",
        "mysql: MySqlConnector connection string",
    ),
    known(
        "database:sqlServerConnectionString",
        "sqlserver: SqlClient connection string",
    ),
    known(
        "rsaKey:provider",
        "certificate | pkcs11 | awskms | azurekv | gcpkms",
    ),
    known("rsaKey:azureKeyvaultUri", "azurekv"),
    known("rsaKey:azureKeyvaultKeyName", "azurekv"),
    known("rsaKey:azureKeyvaultAdTenantId", "azurekv"),
    known("rsaKey:azureKeyvaultAdAppId", "azurekv"),
    known("rsaKey:azureKeyvaultAdSecret", "azurekv"),
    known("rsaKey:googleCloudProjectId", "gcpkms"),
    known("rsaKey:googleCloudLocationId", "gcpkms"),
    known("rsaKey:googleCloudKeyringId", "gcpkms"),
    known("rsaKey:googleCloudKeyId", "gcpkms"),
    known("rsaKey:googleCloudKeyVersionId", "gcpkms"),
    known(
        "rsaKey:awsAccessKeyId",
        "awskms: IAM access key id (empty: AWS default credential chain)",
    ),
    known(
        "rsaKey:awsAccessKeySecret",
        "awskms: its secret (empty: AWS default credential chain)",
    ),
    known(
        "rsaKey:awsRegion",
        "awskms: e.g. eu-west-1 (empty: AWS_REGION or the AWS profile)",
    ),
    known(
        "rsaKey:awsKeyId",
        "awskms: key id, key ARN or alias/NAME (required)",
    ),
    known("rsaKey:awsUseSymmetricEncryption", "awskms: true | false"),
    known("rsaKey:pkcs11Provider", "pkcs11: yubihsm | opensc"),
    known(
        "rsaKey:pkcs11LibraryPath",
        "pkcs11: the token's PKCS#11 library (.so)",
    ),
    known(
        "rsaKey:pkcs11SlotTokenSerialNumber",
        "pkcs11: serial number of the token (required)",
    ),
    known(
        "rsaKey:pkcs11LoginUserType",
        "pkcs11: user | so | context_specific",
    ),
    known(
        "rsaKey:pkcs11LoginPin",
        "pkcs11: the PIN of the login user type",
    ),
    known(
        "rsaKey:pkcs11PrivateKeyLabel",
        "pkcs11: CKA_LABEL of the private key",
    ),
    known("rsaKey:pkcs11PrivateKeyId", "pkcs11: unsigned integer"),
    known(
        "certificate:provider",
        "filesystem | store | azurestorage | azurekv | vault",
    ),
    known(
        "certificate:filesystemPath",
        "filesystem: path of the PKCS#12 (.pfx) file",
    ),
    known(
        "certificate:filesystemPassword",
        "filesystem: its password (optional)",
    ),
    known(
        "certificate:storeThumbprint",
        "store: SHA-1 thumbprint of the certificate in the CurrentUser\\My store",
    ),
    known(
        "certificate:storeDirectory",
        "store: the store's directory (default $HOME/.dotnet/corefx/cryptography/x509stores/my)",
    ),
    known(
        "certificate:azureStorageConnectionString",
        "azurestorage: storage account connection string",
    ),
    known(
        "certificate:azureStorageContainer",
        "azurestorage: blob container",
    ),
    known(
        "certificate:azureStorageFileName",
        "azurestorage: blob name of the .pfx",
    ),
    known(
        "certificate:azureStorageFilePassword",
        "azurestorage: its password (optional)",
    ),
    known("certificate:azureKeyvaultUri", "azurekv"),
    known("certificate:azureKeyvaultCertificateName", "azurekv"),
    known("certificate:azureKeyvaultAdTenantId", "azurekv"),
    known("certificate:azureKeyvaultAdAppId", "azurekv"),
    known("certificate:azureKeyvaultAdSecret", "azurekv"),
    known(
        "certificate:vaultServerUri",
        "vault: e.g. https://vault.example.com:8200",
    ),
    known("certificate:vaultToken", "vault: token with read access"),
    known(
        "certificate:vaultSecretMountPoint",
        "vault: KV v2 mount (default secret)",
    ),
    known(
        "certificate:vaultSecretPath",
        "vault: the secret's path in the mount",
    ),
    known(
        "certificate:vaultSecretDataKey",
        "vault: data key holding the base64 .pfx",
    ),
    known(
        "certificate:vaultSecretFilePassword",
        "vault: the .pfx password (optional)",
    ),
    known("transferTo:lockfilePath", "one-shot transfer lock file"),
];

/// The `--help` text listing every setting with its environment-variable spelling.
pub fn settings_help() -> String {
    let mut text = String::from(
        "Settings (appsettings.json section `keyConnectorSettings`, or environment variables):\n",
    );
    for setting in KNOWN_SETTINGS {
        text.push_str(&format!(
            "  {SECTION}__{:<42} {}\n",
            setting.path.replace(':', "__"),
            setting.help
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

pub(super) fn is_known(path_lower: &str) -> bool {
    let relative = path_lower
        .strip_prefix("transferto:")
        .filter(|rest| {
            ["database:", "certificate:", "rsakey:"]
                .iter()
                .any(|group| rest.starts_with(group))
        })
        .or_else(|| {
            path_lower.strip_prefix("rotateto:").filter(|rest| {
                ["certificate:", "rsakey:"]
                    .iter()
                    .any(|group| rest.starts_with(group))
            })
        })
        .unwrap_or(path_lower);
    KNOWN_SETTINGS
        .iter()
        .any(|s| s.path.eq_ignore_ascii_case(relative))
}
