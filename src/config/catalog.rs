//! The catalog of settings: every setting below `keyConnectorSettings`, its typed path
//! (both spellings), the provider it belongs to and its help text. `--help`, the
//! unknown-setting warnings, the did-you-mean suggestions and validation all read this one
//! table (validation looks settings up only by these paths, and a debug build refuses any
//! other), so they cannot drift apart.

use super::layers::Values;
use super::setting_path::{SECTION, SettingPath, SettingsGroup};
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
/// order. The catalog here and each key provider's `settings` module use it; [`known_settings`]
/// joins their slices into the one table.
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
    RSA_KEY_PROVIDER = SettingPath::rsa_key("provider"), None, crate::keys::PROVIDER_CHOICES;
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

/// Every setting of upstream's `KeyConnectorSettings` (and ours), in one table: the general
/// ones, each key provider's (in the order the key provider registry gives), the recovery
/// key's, then `transferTo`'s.
/// `transferTo:` accepts the `database:`, `certificate:` and `rsaKey:` groups again,
/// `rotateTo:` the `certificate:` and `rsaKey:` groups.
pub fn known_settings() -> impl Iterator<Item = &'static KnownSetting> {
    GENERAL_SETTINGS
        .iter()
        .chain(crate::keys::provider_settings())
        .chain(RECOVERY_SETTINGS)
        .chain(TRANSFER_SETTINGS)
}

/// The `--help` text listing every setting with its environment-variable spelling.
pub fn settings_help() -> String {
    let mut text = String::from(
        "Settings (appsettings.json section `keyConnectorSettings`, or environment variables):\n",
    );
    for setting in known_settings() {
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
    known_settings().flat_map(|setting| {
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

/// The values of one settings group (the main one, `transferTo` or `rotateTo`) as a key
/// provider parses them: paths are named as in the main group and read in this one.
#[derive(Clone, Copy)]
pub(crate) struct GroupValues<'a> {
    pub values: &'a Values,
    pub source: &'a ConfigSource,
    pub group: SettingsGroup,
}

impl<'a> GroupValues<'a> {
    /// The values of `group` among `values` (read from `source`).
    pub fn of(values: &'a Values, source: &'a ConfigSource, group: SettingsGroup) -> Self {
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

    /// [`Values::setting`] of `path` in this group.
    pub fn setting(&self, path: SettingPath) -> Option<&'a str> {
        self.values.setting(self.at(path))
    }

    /// [`Values::require_setting`] of `path` in this group.
    pub fn require_setting(&self, path: SettingPath, what: &str) -> Result<&'a str, ConfigError> {
        self.values.require_setting(self.at(path), what)
    }
}

impl Values {
    /// The non-empty value of the catalog setting `path`. Validation reads settings only
    /// through here, so a setting it reads cannot be missing from the catalog (and so from
    /// `--help` and the unknown-setting warnings): a debug build refuses one that is.
    pub(crate) fn setting(&self, path: SettingPath) -> Option<&str> {
        debug_assert!(
            lists(path),
            "{} is not in the settings catalog",
            path.setting()
        );
        self.get(&path.relative())
    }

    /// [`Values::setting`], or an error saying it is required and `what` it is.
    pub(crate) fn require_setting(
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
    use crate::keys::awskms::RSA_KEY_AWS_KEY_ID;

    #[test]
    fn every_setting_is_listed_once_and_shown_in_help() {
        let help = settings_help();
        let settings: Vec<_> = known_settings().collect();
        for (index, setting) in settings.iter().enumerate() {
            assert!(
                !settings[..index].iter().any(|s| s.path == setting.path),
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
