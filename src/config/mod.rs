//! Settings as data, and their parsing: the bottom layer of the service.
//!
//! Settings are read the way ASP.NET reads them for upstream: section `keyConnectorSettings`
//! of an optional `appsettings.json`, overridden by environment variables spelled
//! `keyConnectorSettings__database__provider` (names case-insensitive, `__` nests). This
//! module owns where they come from ([`ConfigSource`], `layers.rs`), how a setting is named
//! ([`SettingPath`]), the catalog rows and the typed values of the groups that need nothing
//! else (the top-level settings in `top_level.rs`, the store's in `database.rs`, listeners,
//! logging, connection limits, connection strings), and [`ConfigError`]. Every error names
//! the setting and its environment-variable spelling.
//!
//! It imports no other module of the service. A group whose parsing needs a module above
//! (the RSA key providers' registry, Kestrel's certificate) is parsed by that module from
//! `catalog::GroupValues` or [`ConfigSource`], and the whole validated settings are
//! assembled above them all, in the service's `settings` module.

pub(crate) mod azure_key_vault;
pub mod azure_storage;
pub mod catalog;
pub mod connection_limits;
pub mod connection_string;
pub(crate) mod database;
pub mod intervals;
pub(crate) mod layers;
pub mod listen;
pub mod logging;
pub mod setting_path;
pub mod sql_connection;
mod suggestion;
pub(crate) mod top_level;

use std::path::PathBuf;

pub use azure_key_vault::AzureAdCredentials;
pub use azure_storage::{AzureStorageAccount, AzureStorageCredential};
pub use intervals::Intervals;
pub use listen::{ListenHost, ListenUrl};
pub use setting_path::{SettingPath, SettingSection, SettingsGroup};
pub use sql_connection::{SqlConnection, SqlDialect};

/// `userKeyBinding`: `off` (the default, upstream's form) or `on`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserKeyBinding {
    /// New keys are sealed in upstream's form, readable by the official service.
    #[default]
    Off,
    /// New keys are sealed bound to their user.
    On,
}

impl UserKeyBinding {
    /// Reads the setting's value: `off` or `on`, in any case; empty is `off`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "off" => Some(Self::Off),
            "on" => Some(Self::On),
            _ => None,
        }
    }
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

/// `recoveryKey`: the offline recovery key's public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryKeySettings {
    /// A PEM `PUBLIC KEY`, or an X.509 certificate in PEM or DER; read and checked when the
    /// service or a command starts (by `crypto::recovery`, which owns the key).
    pub public_key_path: PathBuf,
}

/// A Microsoft.Data.Sqlite connection string, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConnection {
    /// `Data Source` (also `DataSource`, `Filename`).
    pub path: PathBuf,
    /// `Mode=ReadOnly` was given.
    pub read_only: bool,
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

/// The variable naming the metrics listeners.
pub const METRICS_URLS_VAR: &str = "KEY_CONNECTOR_METRICS_URLS";
