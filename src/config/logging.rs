//! The official image's `Serilog` section, where it maps onto this service's logging.
//!
//! Upstream logs through Serilog, configured in `appsettings.json` (the image ships
//! `MinimumLevel` with `Default: Information` and `Override: {Microsoft: Warning,
//! Microsoft.Hosting.Lifetime: Information}`, and a `File` sink writing
//! `/etc/bitwarden/logs/log.txt` rolled daily). Operators override it with
//! `Serilog__MinimumLevel__Default=Debug` and the like. This module reads the same keys:
//!
//! - `MinimumLevel` (a level, or `Default` plus `Override`): the level of everything, and of
//!   the two .NET categories that have a counterpart here, resolved by Serilog's rule (the
//!   longest matching prefix wins): `Microsoft.AspNetCore.Hosting.Diagnostics` (per-request
//!   lines: here `tower_http`) and `Microsoft.Hosting.Lifetime` (start-up and shutdown: here
//!   `key_connector::startup`). Other categories name .NET code that does not exist here.
//! - `WriteTo` entries named `File`: their `Args` `path`, `rollingInterval`,
//!   `fileSizeLimitBytes`, `rollOnFileSizeLimit` and `retainedFileCountLimit`, with
//!   Serilog's defaults. The console is always written (a container's log is its output).
//!
//! `RUST_LOG`, when set, overrides every level given here.

use std::path::PathBuf;

use super::layers::{Values, read_section};
use super::{ConfigError, ConfigSource};

/// The configuration section read here.
pub const SECTION: &str = "Serilog";
/// The variable whose `tracing` filter overrides the section's levels.
pub const RUST_LOG_VAR: &str = "RUST_LOG";

/// Serilog's default `fileSizeLimitBytes`: 1 GiB.
pub const DEFAULT_FILE_SIZE_LIMIT: u64 = 1024 * 1024 * 1024;
/// Serilog's default `retainedFileCountLimit`.
pub const DEFAULT_RETAINED_FILES: usize = 31;

/// What the `Serilog` section asks of logging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    /// A `tracing` filter equivalent to `MinimumLevel`; `None` when the section sets none.
    pub filter: Option<String>,
    /// The rolling log file, when a `File` sink is configured.
    pub file: Option<LogFileSettings>,
    /// `RUST_LOG`, which overrides every level of the section when it is a valid filter.
    pub rust_log: Option<String>,
}

/// Serilog's `File` sink arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileSettings {
    /// The configured path, e.g. `/etc/bitwarden/logs/log.txt`; the files written carry the
    /// period between stem and extension (`log20261201.txt`).
    pub path: PathBuf,
    pub rolling_interval: RollingInterval,
    /// `None`: no limit (`fileSizeLimitBytes: null`).
    pub size_limit_bytes: Option<u64>,
    /// At the size limit: `true` starts `log20261201_001.txt`, `false` stops writing until
    /// the next period (Serilog's behaviour).
    pub roll_on_size_limit: bool,
    /// `None`: keep every file (`retainedFileCountLimit: null`).
    pub retained_files: Option<usize>,
}

/// Serilog's `RollingInterval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollingInterval {
    Infinite,
    Year,
    Month,
    Day,
    Hour,
    Minute,
}

impl RollingInterval {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "infinite" => Self::Infinite,
            "year" => Self::Year,
            "month" => Self::Month,
            "day" => Self::Day,
            "hour" => Self::Hour,
            "minute" => Self::Minute,
            _ => return None,
        })
    }

    /// How many digits the period takes in a file name (`yyyyMMdd` for `Day`).
    pub fn period_digits(self) -> usize {
        match self {
            Self::Infinite => 0,
            Self::Year => 4,
            Self::Month => 6,
            Self::Day => 8,
            Self::Hour => 10,
            Self::Minute => 12,
        }
    }
}

/// A Serilog level, as `tracing` names it.
fn tracing_level(text: &str) -> Option<&'static str> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "verbose" => "trace",
        "debug" => "debug",
        "information" => "info",
        "warning" => "warn",
        // tracing has no level above error: Fatal events are errors here.
        "error" | "fatal" => "error",
        _ => return None,
    })
}

/// The .NET categories that have a counterpart here, and that counterpart's target.
const MAPPED_CATEGORIES: [(&str, &str); 2] = [
    ("Microsoft.AspNetCore.Hosting.Diagnostics", "tower_http"),
    ("Microsoft.Hosting.Lifetime", "key_connector::startup"),
];

/// Libraries kept at `warn` unless a stricter level is asked for: their `info` lines are
/// connection chatter, as in the service's built-in default filter.
const QUIET_LIBRARIES: [&str; 3] = ["sqlx", "hyper", "reqwest"];

impl LogSettings {
    /// What the environment alone says (`RUST_LOG`), for when the section cannot be read.
    pub fn without_section(source: &ConfigSource) -> Self {
        Self {
            filter: None,
            file: None,
            rust_log: source.var(RUST_LOG_VAR).map(str::to_owned),
        }
    }
}

/// Reads the `Serilog` section from the same files and environment as the settings.
/// Problems in it are warnings, never a reason not to start: logging settings do not guard
/// any key.
pub fn load(source: &ConfigSource) -> Result<(LogSettings, Vec<String>), ConfigError> {
    let section = read_section(source, SECTION)?;
    let mut warnings = Vec::new();
    let settings = LogSettings {
        filter: minimum_level_filter(&section.values, &mut warnings),
        file: file_sink(&section.values, &mut warnings),
        ..LogSettings::without_section(source)
    };
    Ok((settings, warnings))
}

fn setting(path: &str) -> String {
    format!(
        "`{SECTION}:{path}` (environment variable `{SECTION}__{}`)",
        path.replace(':', "__")
    )
}

fn level_at(values: &Values, path: &str, warnings: &mut Vec<String>) -> Option<&'static str> {
    let text = values.get(path)?;
    let level = tracing_level(text);
    if level.is_none() {
        warnings.push(format!(
            "{} is not a Serilog level (Verbose, Debug, Information, Warning, Error, Fatal); ignored",
            setting(path)
        ));
    }
    level
}

fn minimum_level_filter(values: &Values, warnings: &mut Vec<String>) -> Option<String> {
    // `MinimumLevel` is either a level itself or an object with `Default` and `Override`.
    let default = level_at(values, "MinimumLevel", warnings)
        .or_else(|| level_at(values, "MinimumLevel:Default", warnings));
    let override_prefix = "minimumlevel:override:";
    let overrides: Vec<(&str, &'static str)> = values
        .entries
        .iter()
        .filter_map(|(lower, (path, _))| {
            lower.strip_prefix(override_prefix)?;
            let category = &path[override_prefix.len()..];
            Some((category, level_at(values, path, warnings)?))
        })
        .collect();
    if default.is_none() && overrides.is_empty() {
        return None;
    }
    let base = default.unwrap_or("info");
    let mut directives = vec![base.to_owned()];
    for library in QUIET_LIBRARIES {
        directives.push(format!("{library}={}", stricter(base, "warn")));
    }
    for (category, target) in MAPPED_CATEGORIES {
        // Serilog: the override whose name is the longest prefix of the category applies.
        let level = overrides
            .iter()
            .filter(|(name, _)| {
                category.eq_ignore_ascii_case(name)
                    || category
                        .to_ascii_lowercase()
                        .starts_with(&format!("{}.", name.to_ascii_lowercase()))
            })
            .max_by_key(|(name, _)| name.len())
            .map_or(base, |(_, level)| level);
        directives.push(format!("{target}={level}"));
    }
    Some(directives.join(","))
}

/// The stricter (fewer lines) of two `tracing` level names.
fn stricter(a: &'static str, b: &'static str) -> &'static str {
    const ORDER: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
    let rank = |level| ORDER.iter().position(|l| *l == level).unwrap_or(2);
    if rank(a) >= rank(b) { a } else { b }
}

fn file_sink(values: &Values, warnings: &mut Vec<String>) -> Option<LogFileSettings> {
    // `WriteTo:N:Name` = `File`; the lowest such N is the sink (one file is written).
    let index = values
        .entries
        .iter()
        .filter_map(|(lower, (_, value))| {
            let index = lower.strip_prefix("writeto:")?.strip_suffix(":name")?;
            (value.trim().eq_ignore_ascii_case("file")).then(|| index.parse::<usize>().ok())?
        })
        .min()?;
    let at = |arg: &str| format!("WriteTo:{index}:Args:{arg}");
    let Some(path) = values.get(&at("path")) else {
        warnings.push(format!(
            "the Serilog File sink has no {}: no log file is written",
            setting(&at("path"))
        ));
        return None;
    };
    let rolling_interval = match values.get(&at("rollingInterval")) {
        None => RollingInterval::Infinite,
        Some(text) => RollingInterval::parse(text).unwrap_or_else(|| {
            warnings.push(format!(
                "{} is not a rolling interval (Infinite, Year, Month, Day, Hour, Minute); rolling daily",
                setting(&at("rollingInterval"))
            ));
            RollingInterval::Day
        }),
    };
    let mut number = |arg: &str, default: u64| -> Option<u64> {
        let path = at(arg);
        match values.entries.get(&path.to_ascii_lowercase()) {
            None => Some(default),
            // JSON null (flattened to an empty value): no limit, as in Serilog.
            Some((_, text)) if text.trim().is_empty() => None,
            Some((_, text)) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .or_else(|| {
                    warnings.push(format!(
                        "{} is not a positive whole number; using {default}",
                        setting(&path)
                    ));
                    Some(default)
                }),
        }
    };
    let size_limit_bytes = number("fileSizeLimitBytes", DEFAULT_FILE_SIZE_LIMIT);
    let retained_files = number("retainedFileCountLimit", DEFAULT_RETAINED_FILES as u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let roll_on_size_limit = match values.get(&at("rollOnFileSizeLimit")) {
        None => false,
        Some(text) if text.trim().eq_ignore_ascii_case("true") => true,
        Some(text) if text.trim().eq_ignore_ascii_case("false") => false,
        Some(_) => {
            warnings.push(format!(
                "{} is not true or false; using false",
                setting(&at("rollOnFileSizeLimit"))
            ));
            false
        }
    };
    Some(LogFileSettings {
        path: PathBuf::from(path),
        rolling_interval,
        size_limit_bytes,
        roll_on_size_limit,
        retained_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(json: &str, env: &[(&str, &str)]) -> (LogSettings, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("appsettings.json");
        std::fs::write(&file, json).unwrap();
        let source = ConfigSource {
            file: Some(file),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        load(&source).unwrap()
    }

    const UPSTREAM: &str = r#"{
      "Serilog": {
        "MinimumLevel": {
          "Default": "Information",
          "Override": {
            "Microsoft": "Warning",
            "Microsoft.Hosting.Lifetime": "Information",
            "Microsoft.AspNetCore.DataProtection": "Error"
          }
        },
        "WriteTo": [
          { "Name": "Console" },
          { "Name": "File", "Args": { "path": "/etc/bitwarden/logs/log.txt", "rollOnFileSizeLimit": true, "rollingInterval": "Day" } }
        ],
        "Enrich": [ "FromLogContext" ]
      },
      "keyConnectorSettings": {}
    }"#;

    #[test]
    fn the_official_images_section_maps_to_levels_and_a_daily_file() {
        let (settings, warnings) = load_from(UPSTREAM, &[]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            settings.filter.as_deref(),
            Some(
                "info,sqlx=warn,hyper=warn,reqwest=warn,tower_http=warn,key_connector::startup=info"
            )
        );
        assert_eq!(
            settings.file,
            Some(LogFileSettings {
                path: PathBuf::from("/etc/bitwarden/logs/log.txt"),
                rolling_interval: RollingInterval::Day,
                size_limit_bytes: Some(DEFAULT_FILE_SIZE_LIMIT),
                roll_on_size_limit: true,
                retained_files: Some(DEFAULT_RETAINED_FILES),
            })
        );
    }

    #[test]
    fn environment_variables_override_the_file_as_for_upstream() {
        let (settings, warnings) = load_from(
            UPSTREAM,
            &[
                ("Serilog__MinimumLevel__Default", "Debug"),
                ("serilog__minimumlevel__override__Microsoft", "Information"),
                ("Serilog__WriteTo__1__Args__path", "/var/log/kc/log.txt"),
                ("Serilog__WriteTo__1__Args__fileSizeLimitBytes", "1048576"),
                ("Serilog__WriteTo__1__Args__retainedFileCountLimit", "7"),
            ],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            settings.filter.as_deref(),
            Some(
                "debug,sqlx=warn,hyper=warn,reqwest=warn,tower_http=info,key_connector::startup=info"
            )
        );
        let file = settings.file.unwrap();
        assert_eq!(file.path, PathBuf::from("/var/log/kc/log.txt"));
        assert_eq!(file.size_limit_bytes, Some(1_048_576));
        assert_eq!(file.retained_files, Some(7));
    }

    #[test]
    fn a_plain_minimum_level_and_stricter_levels_quiet_the_libraries_too() {
        let (settings, _) = load_from(r#"{"Serilog": {"MinimumLevel": "Error"}}"#, &[]);
        assert_eq!(
            settings.filter.as_deref(),
            Some(
                "error,sqlx=error,hyper=error,reqwest=error,tower_http=error,key_connector::startup=error"
            )
        );
        assert_eq!(settings.file, None);
    }

    #[test]
    fn no_section_means_the_built_in_defaults() {
        let (settings, warnings) = load_from(r#"{"keyConnectorSettings": {}}"#, &[]);
        assert_eq!(settings, LogSettings::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn null_limits_mean_no_limit_and_bad_values_are_warnings_with_defaults() {
        let (settings, warnings) = load_from(
            r#"{"Serilog": {"MinimumLevel": {"Default": "Loud"}, "WriteTo": [{"Name": "File", "Args": {
                "path": "l.txt", "fileSizeLimitBytes": null, "retainedFileCountLimit": "many",
                "rollingInterval": "Fortnight", "rollOnFileSizeLimit": "perhaps"}}]}}"#,
            &[],
        );
        let file = settings.file.unwrap();
        assert_eq!(file.size_limit_bytes, None);
        assert_eq!(file.retained_files, Some(DEFAULT_RETAINED_FILES));
        assert_eq!(file.rolling_interval, RollingInterval::Day);
        assert!(!file.roll_on_size_limit);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings[0].contains("Serilog__MinimumLevel__Default"),
            "{warnings:?}"
        );
        // No default level given: the service's own default.
        assert!(settings.filter.is_none());
    }

    #[test]
    fn a_file_sink_without_a_path_writes_no_file_and_says_so() {
        let (settings, warnings) =
            load_from(r#"{"Serilog": {"WriteTo": [{"Name": "File"}]}}"#, &[]);
        assert_eq!(settings.file, None);
        assert!(
            warnings[0].contains("Serilog__WriteTo__0__Args__path"),
            "{warnings:?}"
        );
    }
}
