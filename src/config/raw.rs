//! Reading `keyConnectorSettings` the way ASP.NET configuration reads it for upstream.
//!
//! Sources, later ones winning: `appsettings.json` (or `--config PATH`), then
//! `appsettings.{Environment}.json` beside it, then environment variables
//! `keyConnectorSettings__a__b` (read by `layers.rs`). Names are case-insensitive.
//! Everything is flattened into `section:key` paths first, then `validate` turns the paths
//! into typed [`Settings`]; each group's parsing lives in its own module (`database.rs`,
//! `rsa_key.rs`, which hands a key provider's settings to that provider's own parsing).

use std::path::PathBuf;

use super::catalog::{
    DATABASE_PROVIDER, IDENTITY_SERVER_URI, RECOVERY_KEY_PUBLIC_KEY_PATH, RSA_KEY_PROVIDER,
    TRANSFER_TO_LOCKFILE_PATH, USER_KEY_BINDING, WEB_VAULT_URI, is_known,
};
use super::database::database_settings;
use super::layers::{Section, Values, read_section};
use super::rsa_key::rsa_key_settings;
use super::setting_path::{SECTION, SettingPath, SettingsGroup};
use super::suggestion::closest_known;
use super::{
    ConfigError, ConfigSource, Intervals, LoadedSettings, Settings, TransferTarget,
    TransferToSettings, UserKeyBinding,
};

pub use super::catalog::settings_help;

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

    let settings = validate(&values, source, &mut warnings)?;
    Ok(LoadedSettings {
        settings,
        warnings,
        config_file: base_file,
    })
}

fn validate(
    values: &Values,
    source: &ConfigSource,
    warnings: &mut Vec<String>,
) -> Result<Settings, ConfigError> {
    let web_vault_uri = values.require_setting(
        WEB_VAULT_URI,
        "the web vault URL, e.g. https://vault.example.com",
    )?;
    check_http_url(WEB_VAULT_URI, web_vault_uri)?;
    let web_vault_origin = web_vault_uri.trim().trim_end_matches('/').to_owned();
    if web_vault_origin.matches('/').count() > 2 {
        warnings.push(format!(
            "setting `{}` has a path; browsers send CORS origins without one, so requests from `{web_vault_origin}` would never match",
            WEB_VAULT_URI.setting()
        ));
    }
    let identity_server_uri = values
        .require_setting(
            IDENTITY_SERVER_URI,
            "the Bitwarden identity server URL, e.g. http://identity:5000",
        )?
        .trim()
        .to_owned();
    check_http_url(IDENTITY_SERVER_URI, &identity_server_uri)?;

    let database = database_settings(values, SettingsGroup::Main)?.ok_or_else(|| {
        ConfigError::at(
            DATABASE_PROVIDER,
            format!("is required: {}", super::database::DATABASE_PROVIDERS),
        )
    })?;
    let rsa_key = rsa_key_settings(values, source, SettingsGroup::Main)?;

    // Upstream runs a transfer only when both the target database and RSA key are set.
    let target = match database_settings(values, SettingsGroup::TransferTo)? {
        Some(database)
            if values
                .setting(RSA_KEY_PROVIDER.in_group(SettingsGroup::TransferTo))
                .is_some() =>
        {
            Some(TransferTarget {
                database,
                rsa_key: rsa_key_settings(values, source, SettingsGroup::TransferTo)?,
            })
        }
        _ => None,
    };
    let lockfile_path = values
        .setting(TRANSFER_TO_LOCKFILE_PATH)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let transfer_to = (lockfile_path.is_some() || target.is_some()).then_some(TransferToSettings {
        lockfile_path,
        target,
    });

    let rotate_to = match values.setting(RSA_KEY_PROVIDER.in_group(SettingsGroup::RotateTo)) {
        Some(_) => Some(rsa_key_settings(values, source, SettingsGroup::RotateTo)?),
        None => None,
    };

    let recovery_key = values
        .setting(RECOVERY_KEY_PUBLIC_KEY_PATH)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|path| super::RecoveryKeySettings {
            public_key_path: PathBuf::from(path),
        });

    let user_key_binding = match values.setting(USER_KEY_BINDING) {
        None => UserKeyBinding::Off,
        // The value is not repeated: a setting pasted in the wrong place may be a secret.
        Some(text) => UserKeyBinding::parse(text)
            .ok_or_else(|| ConfigError::at(USER_KEY_BINDING, "must be `off` or `on`"))?,
    };

    Ok(Settings {
        user_key_binding,
        recovery_key,
        https_certificate: crate::tls::HttpsCertificateSettings::from_vars(
            source.env.iter().cloned(),
        ),
        rotate_to,
        web_vault_origin,
        identity_server_uri,
        database,
        rsa_key,
        transfer_to,
        intervals: Intervals::default(),
    })
}

pub(crate) fn check_http_url(path: SettingPath, value: &str) -> Result<(), ConfigError> {
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
        .ok_or_else(|| ConfigError::at(path, "is not an absolute http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(ConfigError::at(path, "is a URL without a host"));
    }
    Ok(())
}

/// .NET's `bool.Parse`: `true`/`false` in any case, surrounding whitespace allowed.
pub(crate) fn parse_dotnet_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
