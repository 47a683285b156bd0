//! Reading `keyConnectorSettings` the way ASP.NET configuration reads it for upstream.
//!
//! Sources, later ones winning: `appsettings.json` (or `--config PATH`), then
//! `appsettings.{Environment}.json` beside it, then environment variables
//! `keyConnectorSettings__a__b`. Names are case-insensitive; JSON may carry comments and
//! trailing commas, as ASP.NET's JSON provider allows. Everything is flattened into
//! `section:key` paths first, then [`validate`] turns the paths into typed [`Settings`].

use std::path::PathBuf;

use secrecy::SecretString;

use super::connection_string::ConnectionString;
use super::layers::{Section, Values, read_section};
use super::sql_connection;
use super::{
    AwsKmsSettings, AwsStaticCredentials, AzureAdCredentials, AzureKeyVaultCertificateSettings,
    AzureKeyVaultKeySettings, AzureStorageAccount, AzureStorageCertificateSettings,
    CertificateSettings, ConfigError, ConfigSource, DatabaseSettings, GcpKmsSettings,
    LoadedSettings, Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType, RsaKeySettings, Settings,
    SqlConnection, SqlDialect, SqliteConnection, StoreCertificateSettings, TransferTarget,
    TransferToSettings, VaultCertificateSettings,
};

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

fn is_known(path_lower: &str) -> bool {
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

/// Reads and validates the settings from files and environment.
pub fn load(source: &ConfigSource) -> Result<LoadedSettings, ConfigError> {
    let Section { values, base_file } = read_section(source, SECTION)?;
    let mut warnings = Vec::new();

    for (lower, (path, _)) in &values.entries {
        if !is_known(lower) {
            let suggestion = closest_known(lower)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            warnings.push(format!(
                "unknown setting `{SECTION}:{path}` (environment variable `{SECTION}__{}`) is ignored{suggestion}",
                path.replace(':', "__")
            ));
        }
    }

    let settings = validate(&values, &mut warnings)?;
    Ok(LoadedSettings {
        settings,
        warnings,
        config_file: base_file,
    })
}

fn closest_known(path_lower: &str) -> Option<String> {
    let candidates = KNOWN_SETTINGS.iter().map(|s| s.path.to_owned()).chain(
        KNOWN_SETTINGS
            .iter()
            .filter(|s| {
                s.path.starts_with("database:")
                    || s.path.starts_with("certificate:")
                    || s.path.starts_with("rsaKey:")
            })
            .map(|s| format!("transferTo:{}", s.path)),
    );
    candidates
        .map(|c| (edit_distance(&c.to_ascii_lowercase(), path_lower), c))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("{SECTION}:{c}"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            previous = current;
        }
    }
    row[b.len()]
}

fn validate(values: &Values, warnings: &mut Vec<String>) -> Result<Settings, ConfigError> {
    let web_vault_uri = values.require(
        "webVaultUri",
        "the web vault URL, e.g. https://vault.example.com",
    )?;
    check_http_url("webVaultUri", web_vault_uri)?;
    let web_vault_origin = web_vault_uri.trim().trim_end_matches('/').to_owned();
    if web_vault_origin.matches('/').count() > 2 {
        warnings.push(format!(
            "setting `{SECTION}:webVaultUri` has a path; browsers send CORS origins without one, so requests from `{web_vault_origin}` would never match"
        ));
    }
    let identity_server_uri = values
        .require(
            "identityServerUri",
            "the Bitwarden identity server URL, e.g. http://identity:5000",
        )?
        .trim()
        .to_owned();
    check_http_url("identityServerUri", &identity_server_uri)?;

    let database = database_settings(values, "database")?
        .ok_or_else(|| ConfigError::new("database:provider", "is required: sqlite or json"))?;
    let rsa_key = rsa_key_settings(values, "")?;

    // Upstream runs a transfer only when both the target database and RSA key are set.
    let target = match database_settings(values, "transferTo:database")? {
        Some(database) if values.get("transferTo:rsaKey:provider").is_some() => {
            Some(TransferTarget {
                database,
                rsa_key: rsa_key_settings(values, "transferTo:")?,
            })
        }
        _ => None,
    };
    let lockfile_path = values
        .get("transferTo:lockfilePath")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let transfer_to = (lockfile_path.is_some() || target.is_some()).then_some(TransferToSettings {
        lockfile_path,
        target,
    });

    let rotate_to = match values.get("rotateTo:rsaKey:provider") {
        Some(_) => Some(rsa_key_settings(values, "rotateTo:")?),
        None => None,
    };

    Ok(Settings {
        rotate_to,
        web_vault_origin,
        identity_server_uri,
        database,
        rsa_key,
        transfer_to,
    })
}

fn check_http_url(path: &str, value: &str) -> Result<(), ConfigError> {
    let value = value.trim();
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .or_else(|| {
            let lower = value.to_ascii_lowercase();
            if lower.starts_with("https://") {
                Some(&value[8..])
            } else if lower.starts_with("http://") {
                Some(&value[7..])
            } else {
                None
            }
        })
        .ok_or_else(|| {
            ConfigError::new(
                path,
                format!("`{value}` is not an absolute http:// or https:// URL"),
            )
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(ConfigError::new(path, format!("`{value}` has no host")));
    }
    Ok(())
}

/// `{group}:provider` and its connection setting; `None` if no provider is set.
fn database_settings(
    values: &Values,
    group: &str,
) -> Result<Option<DatabaseSettings>, ConfigError> {
    let at = |key: &str| format!("{group}:{key}");
    let Some(provider) = values.get(&at("provider")) else {
        return Ok(None);
    };
    let sql = |key: &str, dialect: SqlDialect, what: &str| -> Result<SqlConnection, ConfigError> {
        let text = values.require(&at(key), what)?;
        sql_connection::parse(dialect, text).map_err(|message| ConfigError::new(&at(key), message))
    };
    let settings = match provider.trim().to_ascii_lowercase().as_str() {
        "json" => DatabaseSettings::Json {
            path: PathBuf::from(values.require(&at("jsonFilePath"), "the JSON document's path")?),
        },
        "sqlite" => {
            let text = values.require(
                &at("sqliteConnectionString"),
                "e.g. `Data Source=/etc/bitwarden/keys.db`",
            )?;
            DatabaseSettings::Sqlite {
                connection: parse_sqlite_connection_string(text)
                    .map_err(|message| ConfigError::new(&at("sqliteConnectionString"), message))?,
            }
        }
        "postgresql" => DatabaseSettings::PostgreSql {
            connection: sql(
                "postgreSqlConnectionString",
                SqlDialect::PostgreSql,
                "an Npgsql connection string, e.g. `Host=db;Port=5432;Database=keyconnector;Username=kc;Password=...`",
            )?,
        },
        "mysql" => DatabaseSettings::MySql {
            connection: sql(
                "mySqlConnectionString",
                SqlDialect::MySql,
                "a MySqlConnector connection string, e.g. `Server=db;Port=3306;Database=keyconnector;Uid=kc;Pwd=...`",
            )?,
        },
        "sqlserver" => DatabaseSettings::SqlServer {
            connection: sql(
                "sqlServerConnectionString",
                SqlDialect::SqlServer,
                "a SqlClient connection string, e.g. `Server=tcp:db,1433;Database=keyconnector;User Id=kc;Password=...`",
            )?,
        },
        "mongo" => {
            return Err(ConfigError::new(
                &at("provider"),
                "MongoDB is no longer a supported database provider for Key Connector (upstream removed it too). \
                 Migrate your data to sqlserver, postgresql, mysql or sqlite and change this setting",
            ));
        }
        other => {
            return Err(ConfigError::new(
                &at("provider"),
                format!(
                    "`{other}` is not a database provider; use sqlite, json, postgresql, mysql or sqlserver"
                ),
            ));
        }
    };
    Ok(Some(settings))
}

/// Microsoft.Data.Sqlite's keywords.
fn parse_sqlite_connection_string(text: &str) -> Result<SqliteConnection, String> {
    let parsed = ConnectionString::parse(text)?;
    for keyword in parsed.keywords() {
        match keyword {
            "data source" | "datasource" | "filename" | "mode" | "cache" | "foreign keys"
            | "pooling" | "default timeout" | "command timeout" | "recursive triggers" => {}
            "password" => {
                return Err("`Password` (SQLCipher encryption) is not supported; keys are already encrypted at rest".into());
            }
            other => return Err(format!("keyword `{other}` is not supported")),
        }
    }
    let path = parsed
        .get(&["data source", "datasource", "filename"])
        .filter(|p| !p.is_empty())
        .ok_or("`Data Source` is missing")?;
    if path == ":memory:" || path.starts_with("file::memory:") {
        return Err("an in-memory database would lose every key at restart; use a file".into());
    }
    let read_only = match parsed
        .get(&["mode"])
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("readwritecreate" | "readwrite") => false,
        Some("readonly") => true,
        Some("memory") => {
            return Err("`Mode=Memory` would lose every key at restart; use a file".into());
        }
        Some(other) => {
            return Err(format!(
                "`Mode={other}` is not a mode; use ReadWriteCreate, ReadWrite or ReadOnly"
            ));
        }
    };
    Ok(SqliteConnection {
        path: PathBuf::from(path),
        read_only,
    })
}

/// `{prefix}rsaKey:provider` and what it needs.
fn rsa_key_settings(values: &Values, prefix: &str) -> Result<RsaKeySettings, ConfigError> {
    let at = |key: &str| format!("{prefix}{key}");
    let provider = values.require(
        &at("rsaKey:provider"),
        "certificate, pkcs11, awskms, azurekv or gcpkms",
    )?;
    let use_symmetric_encryption = match values.get(&at("rsaKey:awsUseSymmetricEncryption")) {
        Some(value) => parse_dotnet_bool(value).ok_or_else(|| {
            ConfigError::new(
                &at("rsaKey:awsUseSymmetricEncryption"),
                format!("`{value}` is not true or false"),
            )
        })?,
        None => false,
    };
    let private_key_id = match values.get(&at("rsaKey:pkcs11PrivateKeyId")) {
        Some(value) => Some(value.trim().parse::<u64>().map_err(|_| {
            ConfigError::new(
                &at("rsaKey:pkcs11PrivateKeyId"),
                format!("`{value}` is not an unsigned integer"),
            )
        })?),
        None => None,
    };
    match provider.trim().to_ascii_lowercase().as_str() {
        "certificate" => Ok(RsaKeySettings::Certificate(certificate_settings(
            values, prefix,
        )?)),
        "pkcs11" => Ok(RsaKeySettings::Pkcs11(pkcs11_settings(
            values,
            prefix,
            private_key_id,
        )?)),
        "awskms" => Ok(RsaKeySettings::AwsKms(aws_kms_settings(
            values,
            prefix,
            use_symmetric_encryption,
        )?)),
        "azurekv" => {
            let at = |key: &str| format!("{prefix}rsaKey:{key}");
            Ok(RsaKeySettings::AzureKeyVault(AzureKeyVaultKeySettings {
                vault_uri: azure_vault_uri(values, &at("azureKeyvaultUri"))?,
                key_name: azure_object_name(
                    values,
                    &at("azureKeyvaultKeyName"),
                    "the name of the RSA key in the vault",
                )?,
                credentials: azure_ad_credentials(values, &at("azureKeyvaultAd"))?,
            }))
        }
        "gcpkms" => Ok(RsaKeySettings::GcpKms(gcp_kms_settings(values, prefix)?)),
        other => Err(ConfigError::new(
            &at("rsaKey:provider"),
            format!(
                "`{other}` is not an RSA key provider; use certificate, pkcs11, awskms, azurekv or gcpkms"
            ),
        )),
    }
}

/// Upstream's default library locations for `pkcs11Provider` (Debian/Ubuntu multiarch paths).
#[cfg(target_arch = "aarch64")]
const MULTIARCH_LIB: &str = "/usr/lib/aarch64-linux-gnu";
#[cfg(not(target_arch = "aarch64"))]
const MULTIARCH_LIB: &str = "/usr/lib/x86_64-linux-gnu";

fn pkcs11_settings(
    values: &Values,
    prefix: &str,
    private_key_id: Option<u64>,
) -> Result<Pkcs11Settings, ConfigError> {
    let at = |key: &str| format!("{prefix}rsaKey:{key}");
    let library_path = match values.get(&at("pkcs11LibraryPath")).map(str::trim) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => match values
            .get(&at("pkcs11Provider"))
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("yubihsm") => PathBuf::from(format!("{MULTIARCH_LIB}/pkcs11/yubihsm_pkcs11.so")),
            Some("opensc") => PathBuf::from(format!("{MULTIARCH_LIB}/opensc-pkcs11.so")),
            Some(other) if !other.is_empty() => {
                return Err(ConfigError::new(
                    &at("pkcs11Provider"),
                    format!(
                        "`{other}` is not a known PKCS#11 provider (yubihsm, opensc); set pkcs11LibraryPath instead"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    &at("pkcs11LibraryPath"),
                    "is required: the path of the token's PKCS#11 library, or set pkcs11Provider to yubihsm or opensc",
                ));
            }
        },
    };
    let token_serial = values
        .require(
            &at("pkcs11SlotTokenSerialNumber"),
            "the serial number of the token holding the key",
        )?
        .trim()
        .to_owned();
    let user_type = match values
        .get(&at("pkcs11LoginUserType"))
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "user") => Pkcs11UserType::User,
        Some("so") => Pkcs11UserType::SecurityOfficer,
        Some("context_specific") => Pkcs11UserType::ContextSpecific,
        Some(other) => {
            return Err(ConfigError::new(
                &at("pkcs11LoginUserType"),
                format!("`{other}` is not a login user type; use user, so or context_specific"),
            ));
        }
    };
    let key = match (private_key_id, values.get(&at("pkcs11PrivateKeyLabel"))) {
        // Upstream looks the key up by id whenever one is set.
        (Some(id), _) => Pkcs11KeySelector::Id(id),
        (None, Some(label)) if !label.is_empty() => Pkcs11KeySelector::Label(label.to_owned()),
        _ => {
            return Err(ConfigError::new(
                &at("pkcs11PrivateKeyLabel"),
                format!(
                    "is required (or keyConnectorSettings__{}rsaKey__pkcs11PrivateKeyId): which private key on the token to use",
                    prefix.replace(':', "__")
                ),
            ));
        }
    };
    let certificate = match values.get(&format!("{prefix}certificate:provider")) {
        Some(_) => Some(certificate_settings(values, prefix)?),
        None => None,
    };
    Ok(Pkcs11Settings {
        library_path,
        token_serial,
        user_type,
        pin: values
            .get(&at("pkcs11LoginPin"))
            .map(|pin| SecretString::from(pin.to_owned())),
        key,
        certificate,
    })
}

/// `{prefix}rsaKey:aws*`. Upstream builds static credentials unless both access-key settings
/// are blank; giving only one of them can never authenticate, so it is refused here.
fn aws_kms_settings(
    values: &Values,
    prefix: &str,
    use_symmetric_encryption: bool,
) -> Result<AwsKmsSettings, ConfigError> {
    let at = |key: &str| format!("{prefix}rsaKey:{key}");
    let key_id = values
        .require(
            &at("awsKeyId"),
            "the KMS key: key id, key ARN, alias/NAME or alias ARN",
        )?
        .trim();
    let credentials = match (
        values.get(&at("awsAccessKeyId")),
        values.get(&at("awsAccessKeySecret")),
    ) {
        (None, None) => None,
        (Some(id), Some(secret)) => Some(AwsStaticCredentials {
            access_key_id: id.trim().to_owned(),
            secret_access_key: SecretString::from(secret.trim().to_owned()),
        }),
        (Some(_), None) => {
            return Err(ConfigError::new(
                &at("awsAccessKeySecret"),
                "is missing while awsAccessKeyId is set; give both, or neither to use the AWS default credential chain",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                &at("awsAccessKeyId"),
                "is missing while awsAccessKeySecret is set; give both, or neither to use the AWS default credential chain",
            ));
        }
    };
    Ok(AwsKmsSettings {
        credentials,
        region: values.get(&at("awsRegion")).map(|r| r.trim().to_owned()),
        key_id: key_id.to_owned(),
        use_symmetric_encryption,
    })
}

/// `azureKeyvaultUri`: an https URL; the SDK sends tokens over nothing else.
fn azure_vault_uri(values: &Values, path: &str) -> Result<String, ConfigError> {
    let uri = values
        .require(
            path,
            "the vault's URL, e.g. https://contoso.vault.azure.net/",
        )?
        .trim();
    check_http_url(path, uri)?;
    if !uri.to_ascii_lowercase().starts_with("https://") {
        return Err(ConfigError::new(
            path,
            format!("`{uri}` is not an https:// URL; Azure Key Vault is only reached over HTTPS"),
        ));
    }
    Ok(uri.to_owned())
}

/// A Key Vault object name: 1 to 127 letters, digits and hyphens (Key Vault's own rule).
fn azure_object_name(values: &Values, path: &str, what: &str) -> Result<String, ConfigError> {
    let name = values.require(path, what)?.trim();
    if name.len() > 127 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ConfigError::new(
            path,
            format!("`{name}` is not a Key Vault name: 1 to 127 letters, digits and hyphens"),
        ));
    }
    Ok(name.to_owned())
}

/// `{path}TenantId`, `{path}AppId` and `{path}Secret`: upstream's client-secret credential.
fn azure_ad_credentials(values: &Values, path: &str) -> Result<AzureAdCredentials, ConfigError> {
    let tenant_id = values
        .require(
            &format!("{path}TenantId"),
            "the Entra ID (Azure AD) tenant id",
        )?
        .trim();
    if tenant_id.is_empty()
        || !tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(ConfigError::new(
            &format!("{path}TenantId"),
            format!("`{tenant_id}` is not a tenant id or domain"),
        ));
    }
    let client_id = values
        .require(
            &format!("{path}AppId"),
            "the application (client) id registered in Entra ID",
        )?
        .trim();
    let client_secret = values.require(
        &format!("{path}Secret"),
        "a client secret of that application",
    )?;
    Ok(AzureAdCredentials {
        tenant_id: tenant_id.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: SecretString::from(client_secret.trim().to_owned()),
    })
}

/// `{prefix}rsaKey:googleCloud*`: each part of the key version's resource name.
fn gcp_kms_settings(values: &Values, prefix: &str) -> Result<GcpKmsSettings, ConfigError> {
    let part = |key: &str, what: &str| -> Result<String, ConfigError> {
        let path = format!("{prefix}rsaKey:{key}");
        let value = values.require(&path, what)?.trim();
        if value.is_empty() || value.contains(['/', ' ', '?', '#']) {
            return Err(ConfigError::new(
                &path,
                format!("`{value}` is not a resource id: it must not be empty nor contain `/`"),
            ));
        }
        Ok(value.to_owned())
    };
    Ok(GcpKmsSettings {
        project_id: part("googleCloudProjectId", "the Google Cloud project id")?,
        location_id: part(
            "googleCloudLocationId",
            "the key ring's location, e.g. global or europe-west1",
        )?,
        key_ring_id: part("googleCloudKeyringId", "the key ring's name")?,
        key_id: part("googleCloudKeyId", "the key's name")?,
        key_version_id: part(
            "googleCloudKeyVersionId",
            "the key version's number, e.g. 1",
        )?,
    })
}

fn certificate_settings(values: &Values, prefix: &str) -> Result<CertificateSettings, ConfigError> {
    let at = |key: &str| format!("{prefix}certificate:{key}");
    let provider = values.require(
        &at("provider"),
        "filesystem, store, azurestorage, azurekv or vault",
    )?;
    let password = |key: &str| {
        values
            .get(&at(key))
            .map(|p| SecretString::from(p.to_owned()))
    };
    match provider.trim().to_ascii_lowercase().as_str() {
        "filesystem" => Ok(CertificateSettings::Filesystem {
            path: PathBuf::from(
                values.require(&at("filesystemPath"), "the PKCS#12 (.pfx) file's path")?,
            ),
            password: password("filesystemPassword"),
        }),
        "store" => {
            let written = values.require(
                &at("storeThumbprint"),
                "the SHA-1 thumbprint of the certificate (40 hex digits)",
            )?;
            Ok(CertificateSettings::Store(StoreCertificateSettings {
                thumbprint: clean_thumbprint(written)
                    .map_err(|message| ConfigError::new(&at("storeThumbprint"), message))?,
                directory: values
                    .get(&at("storeDirectory"))
                    .map(|d| PathBuf::from(d.trim())),
            }))
        }
        "azurestorage" => {
            let text = values.require(
                &at("azureStorageConnectionString"),
                "e.g. `DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net`",
            )?;
            let account = AzureStorageAccount::parse(text).map_err(|message| {
                ConfigError::new(&at("azureStorageConnectionString"), message)
            })?;
            let container = values
                .require(&at("azureStorageContainer"), "the blob container's name")?
                .trim();
            if !is_container_name(container) {
                return Err(ConfigError::new(
                    &at("azureStorageContainer"),
                    format!(
                        "`{container}` is not a container name: 3 to 63 lower-case letters, digits and single hyphens"
                    ),
                ));
            }
            let file_name = values
                .require(
                    &at("azureStorageFileName"),
                    "the blob name of the .pfx file",
                )?
                .trim_start_matches('/');
            Ok(CertificateSettings::AzureStorage(
                AzureStorageCertificateSettings {
                    account,
                    container: container.to_owned(),
                    file_name: file_name.to_owned(),
                    password: password("azureStorageFilePassword"),
                },
            ))
        }
        "vault" => {
            let server_uri = values
                .require(
                    &at("vaultServerUri"),
                    "the Vault server URL, e.g. https://vault.example.com:8200",
                )?
                .trim();
            check_http_url(&at("vaultServerUri"), server_uri)?;
            let token =
                values.require(&at("vaultToken"), "a Vault token that may read the secret")?;
            let mount_point = values
                .get(&at("vaultSecretMountPoint"))
                .map(|m| m.trim().trim_matches('/'))
                .filter(|m| !m.is_empty())
                .unwrap_or("secret");
            let secret_path = values
                .require(
                    &at("vaultSecretPath"),
                    "the secret's path inside the KV v2 mount",
                )?
                .trim()
                .trim_matches('/');
            let data_key = values.require(
                &at("vaultSecretDataKey"),
                "the key in the secret's data that holds the base64 .pfx",
            )?;
            Ok(CertificateSettings::Vault(VaultCertificateSettings {
                server_uri: server_uri.trim_end_matches('/').to_owned(),
                token: SecretString::from(token.trim().to_owned()),
                mount_point: mount_point.to_owned(),
                secret_path: secret_path.to_owned(),
                data_key: data_key.to_owned(),
                password: password("vaultSecretFilePassword"),
            }))
        }
        "azurekv" => Ok(CertificateSettings::AzureKeyVault(
            AzureKeyVaultCertificateSettings {
                vault_uri: azure_vault_uri(values, &at("azureKeyvaultUri"))?,
                certificate_name: azure_object_name(
                    values,
                    &at("azureKeyvaultCertificateName"),
                    "the name of the certificate in the vault",
                )?,
                credentials: azure_ad_credentials(values, &at("azureKeyvaultAd"))?,
            },
        )),
        other => Err(ConfigError::new(
            &at("provider"),
            format!(
                "`{other}` is not a certificate provider; use filesystem, store, azurestorage, azurekv or vault"
            ),
        )),
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

/// .NET's `bool.Parse`: `true`/`false` in any case, surrounding whitespace allowed.
fn parse_dotnet_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::layers::strip_json_comments;
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::Value;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn minimal() -> Vec<(String, String)> {
        env(&[
            (
                "keyConnectorSettings__webVaultUri",
                "https://vault.example.com/",
            ),
            (
                "keyConnectorSettings__identityServerUri",
                "http://identity:5000",
            ),
            ("keyConnectorSettings__database__provider", "sqlite"),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "Data Source=/data/keys.db",
            ),
            ("keyConnectorSettings__rsaKey__provider", "certificate"),
            ("keyConnectorSettings__certificate__provider", "filesystem"),
            (
                "keyConnectorSettings__certificate__filesystemPath",
                "/data/key.pfx",
            ),
        ])
    }

    fn load_env(env: Vec<(String, String)>) -> Result<LoadedSettings, ConfigError> {
        load(&ConfigSource { file: None, env })
    }

    fn with(mut env: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
        env.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        env.push((name.to_owned(), value.to_owned()));
        env
    }

    fn without(mut env: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
        env.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        env
    }

    #[test]
    fn environment_alone_configures_everything() {
        let loaded = load_env(minimal()).unwrap();
        let s = loaded.settings;
        assert_eq!(s.web_vault_origin, "https://vault.example.com");
        assert_eq!(s.identity_server_uri, "http://identity:5000");
        assert!(
            matches!(s.database, DatabaseSettings::Sqlite { ref connection } if connection.path == Path::new("/data/keys.db") && !connection.read_only)
        );
        assert!(
            matches!(s.rsa_key, RsaKeySettings::Certificate(CertificateSettings::Filesystem { ref path, password: None }) if path == Path::new("/data/key.pfx"))
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn names_are_case_insensitive() {
        let env = with(
            without(minimal(), "keyConnectorSettings__database__provider"),
            "KEYCONNECTORSETTINGS__DATABASE__PROVIDER",
            "JSON",
        );
        let env = with(
            env,
            "keyconnectorsettings__database__jsonfilepath",
            "/data/data.json",
        );
        let s = load_env(env).unwrap().settings;
        assert!(
            matches!(s.database, DatabaseSettings::Json { ref path } if path == Path::new("/data/data.json"))
        );
    }

    #[test]
    fn each_missing_required_setting_is_named_in_both_spellings() {
        for (name, path) in [
            ("keyConnectorSettings__webVaultUri", "webVaultUri"),
            (
                "keyConnectorSettings__identityServerUri",
                "identityServerUri",
            ),
            (
                "keyConnectorSettings__database__provider",
                "database:provider",
            ),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "database:sqliteConnectionString",
            ),
            ("keyConnectorSettings__rsaKey__provider", "rsaKey:provider"),
            (
                "keyConnectorSettings__certificate__provider",
                "certificate:provider",
            ),
            (
                "keyConnectorSettings__certificate__filesystemPath",
                "certificate:filesystemPath",
            ),
        ] {
            let error = load_env(without(minimal(), name)).unwrap_err();
            assert_eq!(error.env_var, name, "{error}");
            assert_eq!(error.setting, format!("keyConnectorSettings:{path}"));
            assert!(error.to_string().contains(name));
        }
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            (
                "keyConnectorSettings__webVaultUri",
                "vault.example.com",
                "webVaultUri",
            ),
            (
                "keyConnectorSettings__identityServerUri",
                "ftp://identity",
                "identityServerUri",
            ),
            (
                "keyConnectorSettings__database__provider",
                "oracle",
                "database:provider",
            ),
            (
                "keyConnectorSettings__database__provider",
                "mongo",
                "database:provider",
            ),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "Data Source=:memory:",
                "database:sqliteConnectionString",
            ),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "Data Source=a.db;Password=x",
                "database:sqliteConnectionString",
            ),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "Data Source=a.db;Mode=Memory",
                "database:sqliteConnectionString",
            ),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "Data Source=a.db;Bogus=1",
                "database:sqliteConnectionString",
            ),
            (
                "keyConnectorSettings__database__sqliteConnectionString",
                "Mode=ReadOnly",
                "database:sqliteConnectionString",
            ),
            (
                "keyConnectorSettings__rsaKey__provider",
                "hsm",
                "rsaKey:provider",
            ),
            (
                "keyConnectorSettings__certificate__provider",
                "cloud",
                "certificate:provider",
            ),
            (
                "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
                "yes",
                "rsaKey:awsUseSymmetricEncryption",
            ),
            (
                "keyConnectorSettings__rsaKey__pkcs11PrivateKeyId",
                "-1",
                "rsaKey:pkcs11PrivateKeyId",
            ),
        ];
        for (name, value, path) in cases {
            let error = load_env(with(minimal(), name, value)).unwrap_err();
            assert_eq!(
                error.setting,
                format!("keyConnectorSettings:{path}"),
                "{name}={value}: {error}"
            );
        }
        let mongo = load_env(with(
            minimal(),
            "keyConnectorSettings__database__provider",
            "mongo",
        ))
        .unwrap_err();
        assert!(mongo.message.contains("no longer"), "{mongo}");
    }

    #[test]
    fn sqlite_connection_strings_parse_like_microsoft_data_sqlite() {
        let parse = |s: &str| parse_sqlite_connection_string(s).unwrap();
        assert_eq!(parse("Data Source=/a/b.db").path, Path::new("/a/b.db"));
        assert_eq!(
            parse("datasource='/a/my keys.db';Cache=Shared").path,
            Path::new("/a/my keys.db")
        );
        assert_eq!(parse("Filename=x.db").path, Path::new("x.db"));
        assert!(parse("Data Source=x.db;Mode=ReadOnly").read_only);
        assert!(!parse("Data Source=x.db;Mode=ReadWriteCreate;Foreign Keys=True").read_only);
    }

    #[test]
    fn not_yet_built_providers_are_recognised_and_type_checked() {
        let env = with(
            minimal(),
            "keyConnectorSettings__rsaKey__provider",
            "AwsKms",
        );
        let env = with(
            env,
            "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            " True ",
        );
        let env = with(env, "keyConnectorSettings__rsaKey__provider", "GcpKms");
        let env = gcp_env(env);
        let loaded = load_env(env).unwrap();
        assert!(matches!(loaded.settings.rsa_key, RsaKeySettings::GcpKms(_)));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let env = with(
            minimal(),
            "keyConnectorSettings__database__provider",
            "postgresql",
        );
        let error = load_env(env).unwrap_err();
        assert_eq!(
            error.env_var,
            "keyConnectorSettings__database__postgreSqlConnectionString"
        );
    }

    #[test]
    fn unknown_settings_warn_with_a_suggestion() {
        let env = with(
            minimal(),
            "keyConnectorSettings__database__jsonFilPath",
            "/x.json",
        );
        let loaded = load_env(env).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        let warning = &loaded.warnings[0];
        assert!(
            warning.contains("keyConnectorSettings__database__jsonFilPath"),
            "{warning}"
        );
        assert!(
            warning.contains("keyConnectorSettings:database:jsonFilePath"),
            "{warning}"
        );
    }

    #[test]
    fn the_file_is_read_with_comments_and_overridden_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("appsettings.json");
        std::fs::write(
            &file,
            r#"{
  // upstream's shipped defaults, plus a comment
  "Serilog": { "MinimumLevel": "Information" },
  "KeyConnectorSettings": {
    "webVaultUri": "https://vault.bitwarden.com/",
    "identityServerUri": "https://identity.bitwarden.com/", /* trailing */
    "database": { "provider": "json", "jsonFilePath": "/etc/bitwarden/data.json", },
    "rsaKey": { "provider": "certificate" },
    "certificate": { "provider": "filesystem", "filesystemPath": "/etc/bitwarden/key.pfx", "filesystemPassword": "http://not-a-comment" },
    "transferTo": { "lockfilePath": "/etc/bitwarden/transfer.lock" },
  },
}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("appsettings.Staging.json"),
            r#"{"keyConnectorSettings": {"webVaultUri": "https://staging.example.com"}}"#,
        )
        .unwrap();
        let source = ConfigSource {
            file: Some(file.clone()),
            env: env(&[
                (
                    "keyConnectorSettings__identityServerUri",
                    "http://identity:5000",
                ),
                ("ASPNETCORE_ENVIRONMENT", "Staging"),
            ]),
        };
        let loaded = load(&source).unwrap();
        let s = &loaded.settings;
        assert_eq!(s.web_vault_origin, "https://staging.example.com");
        assert_eq!(s.identity_server_uri, "http://identity:5000");
        assert!(
            matches!(s.database, DatabaseSettings::Json { ref path } if path == Path::new("/etc/bitwarden/data.json"))
        );
        match &s.rsa_key {
            RsaKeySettings::Certificate(CertificateSettings::Filesystem {
                password: Some(p),
                ..
            }) => {
                assert_eq!(p.expose_secret(), "http://not-a-comment");
            }
            other => panic!("{other:?}"),
        }
        let transfer = s.transfer_to.as_ref().unwrap();
        assert!(transfer.target.is_none());
        assert_eq!(
            transfer.lockfile_path.as_deref(),
            Some(Path::new("/etc/bitwarden/transfer.lock"))
        );
        assert_eq!(loaded.config_file.as_deref(), Some(file.as_path()));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn a_missing_or_broken_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ConfigSource {
            file: Some(dir.path().join("nope.json")),
            env: minimal(),
        };
        assert!(
            load(&missing)
                .unwrap_err()
                .to_string()
                .contains("nope.json")
        );
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{ not json").unwrap();
        let error = load(&ConfigSource {
            file: Some(broken),
            env: minimal(),
        })
        .unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn a_transfer_target_is_detected() {
        let env = with(
            minimal(),
            "keyConnectorSettings__transferTo__lockfilePath",
            "/x.lock",
        );
        let env = with(
            env,
            "keyConnectorSettings__transferTo__database__provider",
            "json",
        );
        let env = with(
            env,
            "keyConnectorSettings__transferTo__database__jsonFilePath",
            "/t.json",
        );
        let env = with(
            env,
            "keyConnectorSettings__transferTo__rsaKey__provider",
            "certificate",
        );
        let env = with(
            env,
            "keyConnectorSettings__transferTo__certificate__provider",
            "filesystem",
        );
        let env = with(
            env,
            "keyConnectorSettings__transferTo__certificate__filesystemPath",
            "/t.pfx",
        );
        let loaded = load_env(env).unwrap();
        let target = loaded.settings.transfer_to.unwrap().target.unwrap();
        assert!(matches!(
            target.database,
            DatabaseSettings::Sqlite { .. } | DatabaseSettings::Json { .. }
        ));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    fn certificate_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = without(
            without(minimal(), "keyConnectorSettings__certificate__provider"),
            "keyConnectorSettings__certificate__filesystemPath",
        );
        for (name, value) in pairs {
            env = with(
                env,
                &format!("keyConnectorSettings__certificate__{name}"),
                value,
            );
        }
        env
    }

    fn certificate(pairs: &[(&str, &str)]) -> Result<CertificateSettings, ConfigError> {
        match load_env(certificate_env(pairs))?.settings.rsa_key {
            RsaKeySettings::Certificate(certificate) => Ok(certificate),
            other => panic!("a certificate provider, not {other:?}"),
        }
    }

    #[test]
    fn vault_settings_are_typed_with_upstreams_default_mount() {
        let vault = |mount: &str| {
            certificate(&[
                ("PROVIDER", "Vault"),
                ("vaultServerUri", "https://vault.example.com:8200/"),
                ("vaultToken", "hvs.token"),
                ("vaultSecretMountPoint", mount),
                ("vaultSecretPath", "/key-connector/cert/"),
                ("vaultSecretDataKey", "pfx"),
                ("vaultSecretFilePassword", "hunter2"),
            ])
            .unwrap()
        };
        let CertificateSettings::Vault(settings) = vault("  ") else {
            panic!("vault settings");
        };
        assert_eq!(settings.server_uri, "https://vault.example.com:8200");
        assert_eq!(settings.mount_point, "secret");
        assert_eq!(settings.secret_path, "key-connector/cert");
        assert_eq!(settings.data_key, "pfx");
        assert_eq!(settings.token.expose_secret(), "hvs.token");
        assert_eq!(settings.password.unwrap().expose_secret(), "hunter2");
        let CertificateSettings::Vault(settings) = vault("kv/") else {
            panic!("vault settings");
        };
        assert_eq!(settings.mount_point, "kv");
        assert!(!format!("{:?}", vault("kv")).contains("hvs.token"));
        assert!(!format!("{:?}", vault("kv")).contains("hunter2"));
    }

    #[test]
    fn vault_errors_name_the_setting() {
        let complete = [
            ("provider", "vault"),
            ("vaultServerUri", "http://vault:8200"),
            ("vaultToken", "hvs.token"),
            ("vaultSecretPath", "cert"),
            ("vaultSecretDataKey", "pfx"),
        ];
        for missing in [
            "vaultServerUri",
            "vaultToken",
            "vaultSecretPath",
            "vaultSecretDataKey",
        ] {
            let pairs: Vec<_> = complete
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let error = certificate(&pairs).unwrap_err();
            assert_eq!(
                error.env_var,
                format!("keyConnectorSettings__certificate__{missing}"),
                "{error}"
            );
        }
        let mut pairs = complete.to_vec();
        pairs[1] = ("vaultServerUri", "vault:8200");
        let error = certificate(&pairs).unwrap_err();
        assert_eq!(
            error.env_var,
            "keyConnectorSettings__certificate__vaultServerUri"
        );
    }

    #[test]
    fn store_thumbprints_are_cleaned_as_upstream_does() {
        let expected = "3A1F0C9B8E7D6C5B4A39281706F5E4D3C2B1A098";
        for written in [
            "3A1F0C9B8E7D6C5B4A39281706F5E4D3C2B1A098",
            "3a1f0c9b8e7d6c5b4a39281706f5e4d3c2b1a098",
            "3A:1F:0C:9B:8E:7D:6C:5B:4A:39:28:17:06:F5:E4:D3:C2:B1:A0:98",
            "\u{200e}3a 1f 0c 9b 8e 7d 6c 5b 4a 39 28 17 06 f5 e4 d3 c2 b1 a0 98",
        ] {
            let settings =
                certificate(&[("provider", "store"), ("storeThumbprint", written)]).unwrap();
            let CertificateSettings::Store(settings) = settings else {
                panic!("store settings");
            };
            assert_eq!(
                settings,
                StoreCertificateSettings {
                    thumbprint: expected.into(),
                    directory: None
                },
                "{written:?}"
            );
        }
        let settings = certificate(&[
            ("provider", "store"),
            ("storeThumbprint", expected),
            ("storeDirectory", "/srv/dotnet-store/my"),
        ])
        .unwrap();
        assert!(
            matches!(settings, CertificateSettings::Store(ref s) if s.directory == Some(PathBuf::from("/srv/dotnet-store/my")))
        );
        for (pairs, var) in [
            (vec![("provider", "store")], "storeThumbprint"),
            (
                vec![("provider", "store"), ("storeThumbprint", "3A1F")],
                "storeThumbprint",
            ),
        ] {
            let error = certificate(&pairs).unwrap_err();
            assert_eq!(
                error.env_var,
                format!("keyConnectorSettings__certificate__{var}")
            );
        }
    }

    #[test]
    fn azure_storage_settings_are_typed_and_errors_name_the_setting() {
        let settings = certificate(&[
            ("provider", "azurestorage"),
            ("azureStorageConnectionString", "UseDevelopmentStorage=true"),
            ("azureStorageContainer", "certificates"),
            ("azureStorageFileName", "kc/key.pfx"),
            ("azureStorageFilePassword", "hunter2"),
        ])
        .unwrap();
        let CertificateSettings::AzureStorage(settings) = settings else {
            panic!("azurestorage settings");
        };
        assert_eq!(
            settings.account.blob_endpoint,
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(settings.container, "certificates");
        assert_eq!(settings.file_name, "kc/key.pfx");
        assert!(!format!("{settings:?}").contains("hunter2"));
        for (pairs, var) in [
            (
                vec![
                    ("provider", "azurestorage"),
                    (
                        "azureStorageConnectionString",
                        "AccountName=a;AccountKey=c2VjcmV0",
                    ),
                    ("azureStorageFileName", "key.pfx"),
                ],
                "azureStorageContainer",
            ),
            (
                vec![
                    ("provider", "azurestorage"),
                    (
                        "azureStorageConnectionString",
                        "AccountName=a;AccountKey=c2VjcmV0",
                    ),
                    ("azureStorageContainer", "Certs_Upper"),
                    ("azureStorageFileName", "key.pfx"),
                ],
                "azureStorageContainer",
            ),
            (
                vec![
                    ("provider", "azurestorage"),
                    ("azureStorageConnectionString", "AccountKey=c2VjcmV0"),
                    ("azureStorageContainer", "certs"),
                    ("azureStorageFileName", "key.pfx"),
                ],
                "azureStorageConnectionString",
            ),
            (
                vec![
                    ("provider", "azurestorage"),
                    ("azureStorageConnectionString", "UseDevelopmentStorage=true"),
                    ("azureStorageContainer", "certs"),
                ],
                "azureStorageFileName",
            ),
        ] {
            let error = certificate(&pairs).unwrap_err();
            assert_eq!(
                error.env_var,
                format!("keyConnectorSettings__certificate__{var}"),
                "{error}"
            );
            assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
        }
    }

    #[test]
    fn secrets_never_show_in_errors_or_debug() {
        let env = with(
            minimal(),
            "keyConnectorSettings__certificate__filesystemPassword",
            "hunter2",
        );
        let loaded = load_env(env).unwrap();
        assert!(!format!("{loaded:?}").contains("hunter2"));
        let env = with(
            minimal(),
            "keyConnectorSettings__database__sqliteConnectionString",
            "Data Source=a.db;Password=hunter2",
        );
        assert!(!load_env(env).unwrap_err().to_string().contains("hunter2"));
    }

    #[test]
    fn comment_stripping_respects_strings() {
        let text = r#"{"a": "x // y", /* c */ "b": "/* z */", "c": [1, 2,], }"#;
        let value: Value = serde_json::from_str(&strip_json_comments(text)).unwrap();
        assert_eq!(value["a"], "x // y");
        assert_eq!(value["b"], "/* z */");
        assert_eq!(value["c"], serde_json::json!([1, 2]));
    }

    fn pkcs11_env() -> Vec<(String, String)> {
        let mut env = minimal();
        for (name, value) in [
            ("keyConnectorSettings__rsaKey__provider", "PKCS11"),
            (
                "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
                "/opt/hsm/libpkcs11.so",
            ),
            (
                "keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber",
                " 0012AB ",
            ),
            ("KEYCONNECTORSETTINGS__RSAKEY__PKCS11LOGINUSERTYPE", "SO"),
            ("keyConnectorSettings__rsaKey__pkcs11LoginPin", "1234"),
            (
                "keyConnectorSettings__rsaKey__pkcs11PrivateKeyLabel",
                "kc key",
            ),
        ] {
            env = with(env, name, value);
        }
        without(env, "keyConnectorSettings__certificate__provider")
    }

    fn pkcs11(env: Vec<(String, String)>) -> Pkcs11Settings {
        match load_env(env).unwrap().settings.rsa_key {
            RsaKeySettings::Pkcs11(settings) => settings,
            other => panic!("not pkcs11: {other:?}"),
        }
    }

    fn awskms(pairs: &[(&str, &str)]) -> Result<AwsKmsSettings, ConfigError> {
        let mut env = with(
            minimal(),
            "keyConnectorSettings__rsaKey__provider",
            "awskms",
        );
        for (name, value) in pairs {
            env = with(env, name, value);
        }
        match load_env(env)?.settings.rsa_key {
            RsaKeySettings::AwsKms(settings) => Ok(settings),
            other => panic!("not awskms: {other:?}"),
        }
    }

    #[test]
    fn pkcs11_settings_are_read_case_insensitively_from_the_environment() {
        let loaded = load_env(pkcs11_env()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let settings = pkcs11(pkcs11_env());
        assert_eq!(settings.library_path, Path::new("/opt/hsm/libpkcs11.so"));
        assert_eq!(settings.token_serial, "0012AB");
        assert_eq!(settings.user_type, Pkcs11UserType::SecurityOfficer);
        assert_eq!(settings.pin.as_ref().unwrap().expose_secret(), "1234");
        assert_eq!(settings.key, Pkcs11KeySelector::Label("kc key".into()));
        assert!(settings.certificate.is_none());
        assert!(!format!("{settings:?}").contains("1234"));

        // Upstream looks up by id whenever one is set.
        let settings = pkcs11(with(
            pkcs11_env(),
            "keyConnectorSettings__rsaKey__pkcs11PrivateKeyId",
            " 18446744073709551615 ",
        ));
        assert_eq!(settings.key, Pkcs11KeySelector::Id(u64::MAX));

        for (user_type, expected) in [
            ("user", Pkcs11UserType::User),
            ("Context_Specific", Pkcs11UserType::ContextSpecific),
        ] {
            let env = with(
                pkcs11_env(),
                "keyConnectorSettings__rsaKey__pkcs11LoginUserType",
                user_type,
            );
            assert_eq!(pkcs11(env).user_type, expected);
        }
        let env = without(
            pkcs11_env(),
            "keyConnectorSettings__rsaKey__pkcs11LoginUserType",
        );
        assert_eq!(pkcs11(env).user_type, Pkcs11UserType::User);
    }

    #[test]
    fn pkcs11_provider_picks_upstreams_library_and_a_certificate_is_optional() {
        let env = without(
            pkcs11_env(),
            "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
        );
        for (provider, file) in [
            ("yubihsm", "/pkcs11/yubihsm_pkcs11.so"),
            ("OpenSC", "/opensc-pkcs11.so"),
        ] {
            let env = with(
                env.clone(),
                "keyConnectorSettings__rsaKey__pkcs11Provider",
                provider,
            );
            let path = pkcs11(env).library_path;
            assert_eq!(path, PathBuf::from(format!("{MULTIARCH_LIB}{file}")));
        }
        let env = with(
            pkcs11_env(),
            "keyConnectorSettings__certificate__provider",
            "filesystem",
        );
        let env = with(
            env,
            "keyConnectorSettings__certificate__filesystemPath",
            "/etc/bitwarden/cert.pfx",
        );
        assert!(matches!(
            pkcs11(env).certificate,
            Some(CertificateSettings::Filesystem { ref path, .. }) if path == Path::new("/etc/bitwarden/cert.pfx")
        ));
    }

    #[test]
    fn pkcs11_errors_name_the_setting() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
                None,
                "rsaKey:pkcs11LibraryPath",
            ),
            (
                "keyConnectorSettings__rsaKey__pkcs11SlotTokenSerialNumber",
                None,
                "rsaKey:pkcs11SlotTokenSerialNumber",
            ),
            (
                "keyConnectorSettings__rsaKey__pkcs11LoginUserType",
                Some("admin"),
                "rsaKey:pkcs11LoginUserType",
            ),
            (
                "keyConnectorSettings__rsaKey__pkcs11PrivateKeyLabel",
                None,
                "rsaKey:pkcs11PrivateKeyLabel",
            ),
            (
                "keyConnectorSettings__rsaKey__pkcs11PrivateKeyId",
                Some("0x10"),
                "rsaKey:pkcs11PrivateKeyId",
            ),
            (
                "keyConnectorSettings__certificate__provider",
                Some("cloud"),
                "certificate:provider",
            ),
        ];
        for (name, value, path) in cases {
            let env = match value {
                Some(value) => with(pkcs11_env(), name, value),
                None => without(pkcs11_env(), name),
            };
            let error = load_env(env).unwrap_err();
            assert_eq!(
                error.setting,
                format!("keyConnectorSettings:{path}"),
                "{name}: {error}"
            );
        }
        let env = without(
            pkcs11_env(),
            "keyConnectorSettings__rsaKey__pkcs11LibraryPath",
        );
        let env = with(
            env,
            "keyConnectorSettings__rsaKey__pkcs11Provider",
            "thales",
        );
        let error = load_env(env).unwrap_err();
        assert_eq!(
            error.env_var,
            "keyConnectorSettings__rsaKey__pkcs11Provider"
        );
    }

    fn gcp_env(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
        for (name, value) in [
            (
                "keyConnectorSettings__rsaKey__googleCloudProjectId",
                "acme-prod",
            ),
            (
                "keyConnectorSettings__rsaKey__googleCloudLocationId",
                "europe-west1",
            ),
            (
                "keyConnectorSettings__rsaKey__googleCloudKeyringId",
                "bitwarden",
            ),
            (
                "keyConnectorSettings__rsaKey__googleCloudKeyId",
                "key-connector",
            ),
            (
                "keyConnectorSettings__rsaKey__googleCloudKeyVersionId",
                " 3 ",
            ),
        ] {
            env = with(env, name, value);
        }
        env
    }

    #[test]
    fn gcpkms_settings_make_the_key_version_name() {
        let env = gcp_env(with(
            minimal(),
            "keyConnectorSettings__rsaKey__provider",
            "gcpkms",
        ));
        let RsaKeySettings::GcpKms(settings) = load_env(env).unwrap().settings.rsa_key else {
            panic!("not gcpkms");
        };
        assert_eq!(
            settings.key_version_name(),
            "projects/acme-prod/locations/europe-west1/keyRings/bitwarden/cryptoKeys/key-connector/cryptoKeyVersions/3"
        );
    }

    #[test]
    fn gcpkms_mistakes_name_the_setting() {
        let base = gcp_env(with(
            minimal(),
            "keyConnectorSettings__rsaKey__provider",
            "gcpkms",
        ));
        let missing = without(
            base.clone(),
            "keyConnectorSettings__rsaKey__googleCloudKeyringId",
        );
        let error = load_env(missing).unwrap_err();
        assert_eq!(
            error.env_var,
            "keyConnectorSettings__rsaKey__googleCloudKeyringId"
        );
        let slashed = with(
            base,
            "keyConnectorSettings__rsaKey__googleCloudKeyId",
            "keys/other",
        );
        let error = load_env(slashed).unwrap_err();
        assert_eq!(
            error.env_var,
            "keyConnectorSettings__rsaKey__googleCloudKeyId"
        );
        assert!(error.to_string().contains("`/`"), "{error}");
    }

    fn azure_key_env() -> Vec<(String, String)> {
        let mut env = with(
            minimal(),
            "keyConnectorSettings__rsaKey__provider",
            "AzureKv",
        );
        for (name, value) in [
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultUri",
                "https://contoso.vault.azure.net/",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultKeyName",
                "key-connector",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultAdTenantId",
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultAdAppId",
                "00000000-1111-2222-3333-444444444444",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultAdSecret",
                "s3cr3t~value",
            ),
        ] {
            env = with(env, name, value);
        }
        env
    }

    #[test]
    fn azurekv_key_settings_read_upstream_names_and_keep_the_secret_out_of_debug() {
        let loaded = load_env(azure_key_env()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let RsaKeySettings::AzureKeyVault(settings) = &loaded.settings.rsa_key else {
            panic!("not azurekv");
        };
        assert_eq!(settings.vault_uri, "https://contoso.vault.azure.net/");
        assert_eq!(settings.key_name, "key-connector");
        assert_eq!(
            settings.credentials.client_id,
            "00000000-1111-2222-3333-444444444444"
        );
        assert_eq!(
            settings.credentials.client_secret.expose_secret(),
            "s3cr3t~value"
        );
        assert!(!format!("{settings:?}").contains("s3cr3t"));
    }

    #[test]
    fn azurekv_mistakes_name_the_setting() {
        let cases = [
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultUri",
                Some("http://contoso.vault.azure.net/"),
                "https://",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultKeyName",
                Some("my_key"),
                "letters, digits and hyphens",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultAdSecret",
                None,
                "client secret",
            ),
            (
                "keyConnectorSettings__rsaKey__azureKeyvaultAdTenantId",
                None,
                "tenant",
            ),
        ];
        for (name, value, expected) in cases {
            let env = match value {
                Some(value) => with(azure_key_env(), name, value),
                None => without(azure_key_env(), name),
            };
            let error = load_env(env).unwrap_err();
            assert_eq!(error.env_var, name, "{error}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn azurekv_certificate_settings_read_upstream_names() {
        let mut env = with(
            minimal(),
            "keyConnectorSettings__certificate__provider",
            "azurekv",
        );
        for (name, value) in [
            (
                "keyConnectorSettings__certificate__azureKeyvaultUri",
                "https://contoso.vault.azure.net",
            ),
            (
                "keyConnectorSettings__certificate__azureKeyvaultCertificateName",
                "kc-cert",
            ),
            (
                "keyConnectorSettings__certificate__azureKeyvaultAdTenantId",
                "contoso.onmicrosoft.com",
            ),
            (
                "keyConnectorSettings__certificate__azureKeyvaultAdAppId",
                "app",
            ),
            (
                "keyConnectorSettings__certificate__azureKeyvaultAdSecret",
                "secret",
            ),
        ] {
            env = with(env, name, value);
        }
        let loaded = load_env(env).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let RsaKeySettings::Certificate(CertificateSettings::AzureKeyVault(settings)) =
            &loaded.settings.rsa_key
        else {
            panic!("not an azurekv certificate");
        };
        assert_eq!(settings.certificate_name, "kc-cert");
        assert_eq!(settings.credentials.tenant_id, "contoso.onmicrosoft.com");
    }

    #[test]
    fn awskms_settings_read_upstream_names() {
        let settings = awskms(&[
            ("keyConnectorSettings__rsaKey__awsKeyId", " alias/kc "),
            ("KEYCONNECTORSETTINGS__RSAKEY__AWSREGION", "eu-west-1"),
            (
                "keyConnectorSettings__rsaKey__awsAccessKeyId",
                "AKIAEXAMPLE",
            ),
            (
                "keyConnectorSettings__rsaKey__awsAccessKeySecret",
                "s3cret/value",
            ),
            (
                "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
                "True",
            ),
        ])
        .unwrap();
        assert_eq!(settings.key_id, "alias/kc");
        assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
        assert!(settings.use_symmetric_encryption);
        let credentials = settings.credentials.as_ref().unwrap();
        assert_eq!(credentials.access_key_id, "AKIAEXAMPLE");
        assert_eq!(
            credentials.secret_access_key.expose_secret(),
            "s3cret/value"
        );
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "the secret must not appear in Debug output"
        );
    }

    #[test]
    fn awskms_without_access_keys_uses_the_default_chain_and_rsa_mode() {
        let settings = awskms(&[
            (
                "keyConnectorSettings__rsaKey__awsKeyId",
                "1234abcd-12ab-34cd-56ef-1234567890ab",
            ),
            ("keyConnectorSettings__rsaKey__awsAccessKeyId", " "),
            ("keyConnectorSettings__rsaKey__awsAccessKeySecret", ""),
        ])
        .unwrap();
        assert!(settings.credentials.is_none());
        assert!(settings.region.is_none());
        assert!(!settings.use_symmetric_encryption);
    }

    #[test]
    fn awskms_mistakes_name_the_setting() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[], "keyConnectorSettings__rsaKey__awsKeyId"),
            (
                &[
                    ("keyConnectorSettings__rsaKey__awsKeyId", "k"),
                    ("keyConnectorSettings__rsaKey__awsAccessKeyId", "AKIA"),
                ],
                "keyConnectorSettings__rsaKey__awsAccessKeySecret",
            ),
            (
                &[
                    ("keyConnectorSettings__rsaKey__awsKeyId", "k"),
                    (
                        "keyConnectorSettings__rsaKey__awsAccessKeySecret",
                        "SECRETVALUE",
                    ),
                ],
                "keyConnectorSettings__rsaKey__awsAccessKeyId",
            ),
            (
                &[
                    ("keyConnectorSettings__rsaKey__awsKeyId", "k"),
                    (
                        "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
                        "1",
                    ),
                ],
                "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            ),
        ];
        for (pairs, env_var) in cases {
            let error = awskms(pairs).unwrap_err();
            assert_eq!(error.env_var, env_var, "{error}");
            assert!(!error.to_string().contains("SECRETVALUE"), "{error}");
        }
    }
}
