//! The catalog of settings: each setting below `keyConnectorSettings` declared once, with
//! its typed path (both spellings), the provider it belongs to and its help text.
//!
//! This module holds the rows of the settings every configuration has (the general ones,
//! the recovery key's, `transferTo:lockfilePath`), the macro other modules declare their own
//! rows with (each key provider in its `settings` module), and [`Catalog`], a table of rows
//! that answers `--help`, the unknown-setting warnings and the did-you-mean suggestions.
//! Which rows make up the service's whole catalog is decided above every module that
//! declares some (the service's `settings` module), never here. Validation reads a setting
//! only through `SettingValues`, by a path of that catalog (a debug build refuses any
//! other), so help, warnings and validation cannot drift apart.

use std::path::{Path, PathBuf};

use super::layers::{Section, Values, read_section};
use super::setting_path::{SECTION, SettingPath, SettingsGroup};
use super::suggestion::closest_known;
use super::{ConfigError, ConfigSource};

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

/// Declares settings once each: its constant (the typed path validation and messages use),
/// the provider it belongs to and its help text, and the slice `$rows` listing them in this
/// order. The rows here, the key provider registry's and each key provider's `settings`
/// module use it; the service's whole [`Catalog`] joins their slices into one table.
macro_rules! settings_catalog {
    ($rows:ident; $($name:ident = $path:expr, $provider:expr, $help:expr;)*) => {
        $(pub const $name: $crate::config::SettingPath = $path;)*

        /// These settings, in the order `--help` shows them.
        pub const $rows: &[$crate::config::catalog::KnownSetting] = &[
            $($crate::config::catalog::KnownSetting { path: $name, provider: $provider, help: $help },)*
        ];
    };
    // The settings of one section (`rsa_key`, `certificate`, ...), each naming its provider.
    ($rows:ident in $section:ident; $($name:ident = $key:literal, $provider:expr, $help:expr;)*) => {
        $crate::config::catalog::settings_catalog! {
            $rows; $($name = $crate::config::SettingPath::$section($key), $provider, $help;)*
        }
    };
    // The settings of one provider in one section, without help text of their own.
    ($rows:ident in $section:ident for $provider:literal; $($name:ident = $key:literal;)*) => {
        $crate::config::catalog::settings_catalog! {
            $rows in $section for $provider; $($name = $key, "";)*
        }
    };
    // The settings of one provider in one section.
    ($rows:ident in $section:ident for $provider:literal; $($name:ident = $key:literal, $help:expr;)*) => {
        $crate::config::catalog::settings_catalog! {
            $rows; $($name = $crate::config::SettingPath::$section($key), Some($provider), $help;)*
        }
    };
}
pub(crate) use settings_catalog;

settings_catalog! {
    GENERAL_SETTINGS;
    WEB_VAULT_URI = SettingPath::top("webVaultUri"), None, "web vault URL; the only CORS origin (required)";
    IDENTITY_SERVER_URI = SettingPath::top("identityServerUri"), None, "Bitwarden identity server URL (required)";
    DATABASE_PROVIDER = SettingPath::database("provider"), None, "sqlite | json | postgresql | mysql | sqlserver";
    DATABASE_JSON_FILE_PATH = SettingPath::database("jsonFilePath"), Some("json"), "path of the JSON document";
    DATABASE_SQLITE_CONNECTION_STRING = SettingPath::database("sqliteConnectionString"), Some("sqlite"), "`Data Source=/path/keys.db`";
    DATABASE_POSTGRESQL_CONNECTION_STRING = SettingPath::database("postgreSqlConnectionString"), Some("postgresql"), "Npgsql connection string";
    DATABASE_MYSQL_CONNECTION_STRING = SettingPath::database("mySqlConnectionString"), Some("mysql"), "MySqlConnector connection string";
    DATABASE_SQLSERVER_CONNECTION_STRING = SettingPath::database("sqlServerConnectionString"), Some("sqlserver"), "SqlClient connection string";
}

settings_catalog! {
    RECOVERY_SETTINGS;
    RECOVERY_KEY_PUBLIC_KEY_PATH = SettingPath::top("recoveryKey:publicKeyPath"), None, "break-glass recovery key: RSA (3072+ bits) public key or certificate file, PEM or DER (off when unset)";
    USER_KEY_BINDING = SettingPath::top("userKeyBinding"), None, "off | on: seal new user keys bound to their user, then run bind-user-keys (default off; the official service cannot read bound keys)";
}

settings_catalog! {
    TRANSFER_SETTINGS;
    TRANSFER_TO_LOCKFILE_PATH = SettingPath::top("lockfilePath").in_group(SettingsGroup::TransferTo), None, "one-shot transfer lock file";
}

/// A table of known settings, in the order `--help` lists them: what is not warned about as
/// unknown, what the did-you-mean suggestions choose from and what validation may read.
/// `transferTo:` accepts the `database:`, `certificate:` and `rsaKey:` groups of the main
/// rows again, `rotateTo:` the `certificate:` and `rsaKey:` groups.
#[derive(Clone)]
pub struct Catalog {
    rows: Vec<&'static KnownSetting>,
}

impl Catalog {
    /// The catalog of `rows`, in this order.
    pub fn new(rows: impl IntoIterator<Item = &'static KnownSetting>) -> Self {
        Self {
            rows: rows.into_iter().collect(),
        }
    }

    /// Every row, in order.
    pub fn rows(&self) -> impl Iterator<Item = &'static KnownSetting> + '_ {
        self.rows.iter().copied()
    }

    /// The `--help` text listing every setting with its environment-variable spelling.
    pub fn help(&self) -> String {
        let mut text = String::from(
            "Settings (appsettings.json section `keyConnectorSettings`, or environment variables):\n",
        );
        for setting in self.rows() {
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
    pub fn is_known(&self, path_lower: &str) -> bool {
        self.every_accepted_path()
            .any(|path| path.relative().eq_ignore_ascii_case(path_lower))
    }

    /// Whether validation may read `path`: a setting of the catalog, in a group that accepts it.
    pub fn lists(&self, path: SettingPath) -> bool {
        self.every_accepted_path().any(|accepted| accepted == path)
    }

    /// Every catalog setting in every group that accepts it again (`transferTo`, `rotateTo`).
    fn every_accepted_path(&self) -> impl Iterator<Item = SettingPath> + '_ {
        self.rows().flat_map(|setting| {
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
}

/// `keyConnectorSettings` as read from every source, looked up only by the paths of a
/// [`Catalog`].
pub(crate) struct SettingValues {
    values: Values,
    catalog: Catalog,
    /// Where `appsettings.json` was read from, if one was.
    base_file: Option<PathBuf>,
}

impl SettingValues {
    /// Reads `keyConnectorSettings` from `source`'s files and environment, to be looked up
    /// by the settings of `catalog`.
    pub(crate) fn read(source: &ConfigSource, catalog: Catalog) -> Result<Self, ConfigError> {
        let Section { values, base_file } = read_section(source, SECTION)?;
        Ok(Self {
            values,
            catalog,
            base_file,
        })
    }

    /// Where `appsettings.json` was read from, if one was.
    pub(crate) fn base_file(&self) -> Option<&Path> {
        self.base_file.as_deref()
    }

    /// A warning for each value set that is no setting of the catalog, with the closest
    /// setting that is.
    pub(crate) fn unknown_setting_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (lower, (path, _)) in &self.values.entries {
            if !self.catalog.is_known(lower) {
                let suggestion = closest_known(&self.catalog, lower)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                warnings.push(format!(
                    "unknown setting `{SECTION}:{path}` (environment variable `{SECTION}__{}`) is ignored{suggestion}",
                    path.replace(':', "__")
                ));
            }
        }
        warnings
    }

    /// The non-empty value of the catalog setting `path`. Validation reads settings only
    /// through here, so a setting it reads cannot be missing from the catalog (and so from
    /// `--help` and the unknown-setting warnings): a debug build refuses one that is.
    pub(crate) fn setting(&self, path: SettingPath) -> Option<&str> {
        debug_assert!(
            self.catalog.lists(path),
            "{} is not in the settings catalog",
            path.setting()
        );
        self.values.get(&path.relative())
    }

    /// [`SettingValues::setting`], or an error saying it is required and `what` it is.
    pub(crate) fn require_setting(
        &self,
        path: SettingPath,
        what: &str,
    ) -> Result<&str, ConfigError> {
        self.setting(path)
            .ok_or_else(|| ConfigError::at(path, format!("is required: {what}")))
    }
}

/// The values of one settings group (the main one, `transferTo` or `rotateTo`) as a key
/// provider parses them: paths are named as in the main group and read in this one.
#[derive(Clone, Copy)]
pub(crate) struct GroupValues<'a> {
    pub values: &'a SettingValues,
    pub source: &'a ConfigSource,
    pub group: SettingsGroup,
}

impl<'a> GroupValues<'a> {
    /// The values of `group` among `values` (read from `source`).
    pub fn of(values: &'a SettingValues, source: &'a ConfigSource, group: SettingsGroup) -> Self {
        Self {
            values,
            source,
            group,
        }
    }

    /// `path` in this group.
    pub fn at(&self, path: SettingPath) -> SettingPath {
        path.in_group(self.group)
    }

    /// [`SettingValues::setting`] of `path` in this group.
    pub fn setting(&self, path: SettingPath) -> Option<&'a str> {
        self.values.setting(self.at(path))
    }

    /// [`SettingValues::require_setting`] of `path` in this group.
    pub fn require_setting(&self, path: SettingPath, what: &str) -> Result<&'a str, ConfigError> {
        self.values.require_setting(self.at(path), what)
    }
}
