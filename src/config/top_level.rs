//! The settings directly below `keyConnectorSettings` that need no other module to be
//! read: `webVaultUri`, `identityServerUri`, `transferTo:lockfilePath`,
//! `recoveryKey:publicKeyPath` and `userKeyBinding`, each parsed into its typed value with
//! an error naming the setting; and the value syntaxes other groups share (.NET booleans,
//! absolute http URLs). Assembling them with the other groups is the job of the `settings`
//! module, above.

use std::path::PathBuf;

use super::catalog::{
    IDENTITY_SERVER_URI, RECOVERY_KEY_PUBLIC_KEY_PATH, SettingValues, TRANSFER_TO_LOCKFILE_PATH,
    USER_KEY_BINDING, WEB_VAULT_URI,
};
use super::setting_path::SettingPath;
use super::{ConfigError, RecoveryKeySettings, UserKeyBinding};

/// `webVaultUri` as the CORS origin (trailing `/` removed), with a warning when it has a
/// path, which no browser's origin has.
pub(crate) fn web_vault_origin(
    values: &SettingValues,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
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
    Ok(web_vault_origin)
}

/// `identityServerUri`: where the OpenID Connect discovery document is looked up.
pub(crate) fn identity_server_uri(values: &SettingValues) -> Result<String, ConfigError> {
    let identity_server_uri = values
        .require_setting(
            IDENTITY_SERVER_URI,
            "the Bitwarden identity server URL, e.g. http://identity:5000",
        )?
        .trim()
        .to_owned();
    check_http_url(IDENTITY_SERVER_URI, &identity_server_uri)?;
    Ok(identity_server_uri)
}

/// `transferTo:lockfilePath`, if set.
pub(crate) fn transfer_lockfile_path(values: &SettingValues) -> Option<PathBuf> {
    values
        .setting(TRANSFER_TO_LOCKFILE_PATH)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// `recoveryKey:publicKeyPath`, if set. The file is read where the key is used
/// (`crypto::recovery`).
pub(crate) fn recovery_key_settings(values: &SettingValues) -> Option<RecoveryKeySettings> {
    values
        .setting(RECOVERY_KEY_PUBLIC_KEY_PATH)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|path| RecoveryKeySettings {
            public_key_path: PathBuf::from(path),
        })
}

/// `userKeyBinding`: `off` unless set.
pub(crate) fn user_key_binding(values: &SettingValues) -> Result<UserKeyBinding, ConfigError> {
    match values.setting(USER_KEY_BINDING) {
        None => Ok(UserKeyBinding::Off),
        // The value is not repeated: a setting pasted in the wrong place may be a secret.
        Some(text) => UserKeyBinding::parse(text)
            .ok_or_else(|| ConfigError::at(USER_KEY_BINDING, "must be `off` or `on`")),
    }
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
