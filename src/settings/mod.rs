//! The service's settings as a whole: `keyConnectorSettings` read from the configured
//! sources and assembled into the validated [`Settings`] every command starts from.
//!
//! This module sits above every module that parses a group of them: `config` (the general
//! settings, the store's, the recovery key's path), `keys` (`rsaKey` and `certificate`,
//! through the key provider registry) and `tls` (Kestrel's certificate). It owns the
//! service's whole catalog of settings ([`catalog`]: each group's rows, in the order
//! `--help` lists them), which the unknown-setting warnings, the did-you-mean suggestions
//! and validation read; it parses nothing itself, and it opens nothing (files named by
//! settings are read by the modules that use them).

use std::path::PathBuf;

use crate::config::catalog::{
    Catalog, DATABASE_PROVIDER, GENERAL_SETTINGS, RECOVERY_SETTINGS, SettingValues,
    TRANSFER_SETTINGS,
};
use crate::config::database::{DATABASE_PROVIDERS, database_settings};
use crate::config::top_level::{
    identity_server_uri, recovery_key_settings, transfer_lockfile_path, user_key_binding,
    web_vault_origin,
};
use crate::config::{
    ConfigError, ConfigSource, DatabaseSettings, Intervals, RecoveryKeySettings, SettingsGroup,
    UserKeyBinding,
};
use crate::keys::{RSA_KEY_PROVIDER, RsaKeySettings};
use crate::tls::HttpsCertificateSettings;

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
    /// `recoveryKey:publicKeyPath`: the break-glass recovery key the symmetric key is also
    /// wrapped under (see [`crate::crypto::recovery`]). Not an upstream setting.
    pub recovery_key: Option<RecoveryKeySettings>,
    /// Kestrel's default certificate (`Kestrel__Certificates__Default__*`), which serves the
    /// `https://` listeners; `None` when no path is set.
    pub https_certificate: Option<HttpsCertificateSettings>,
    /// `userKeyBinding`: whether new user keys are sealed bound to their user (see
    /// [`crate::crypto::binding`]). Not an upstream setting.
    pub user_key_binding: UserKeyBinding,
    /// The intervals and time limits the service runs with: never read from a setting,
    /// always [`Intervals::default`] but in tests (see [`crate::config::intervals`]).
    pub intervals: Intervals,
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

/// Settings plus the warnings found while reading them (unknown keys, ignored values).
#[derive(Debug)]
pub struct LoadedSettings {
    pub settings: Settings,
    pub warnings: Vec<String>,
    /// Where `appsettings.json` was read from, if one was.
    pub config_file: Option<PathBuf>,
}

/// Every setting of upstream's `KeyConnectorSettings` (and ours), in one table: the general
/// ones, `rsaKey:provider` and each key provider's (in the order the key provider registry
/// gives), the recovery key's, then `transferTo`'s.
pub fn catalog() -> Catalog {
    Catalog::new(
        GENERAL_SETTINGS
            .iter()
            .chain(crate::keys::provider_settings())
            .chain(RECOVERY_SETTINGS)
            .chain(TRANSFER_SETTINGS),
    )
}

/// The `--help` text listing every setting with its environment-variable spelling.
pub fn help() -> String {
    catalog().help()
}

/// Reads and validates the settings from `source`'s files and environment.
pub fn load(source: &ConfigSource) -> Result<LoadedSettings, ConfigError> {
    let values = SettingValues::read(source, catalog())?;
    let mut warnings = values.unknown_setting_warnings();
    let settings = validate(&values, source, &mut warnings)?;
    Ok(LoadedSettings {
        settings,
        warnings,
        config_file: values.base_file().map(PathBuf::from),
    })
}

/// Each group parsed by the module that owns it, in the order their errors are reported.
fn validate(
    values: &SettingValues,
    source: &ConfigSource,
    warnings: &mut Vec<String>,
) -> Result<Settings, ConfigError> {
    let web_vault_origin = web_vault_origin(values, warnings)?;
    let identity_server_uri = identity_server_uri(values)?;

    let database = database_settings(values, SettingsGroup::Main)?.ok_or_else(|| {
        ConfigError::at(
            DATABASE_PROVIDER,
            format!("is required: {DATABASE_PROVIDERS}"),
        )
    })?;
    let rsa_key = RsaKeySettings::read(values, source, SettingsGroup::Main)?;

    // Upstream runs a transfer only when both the target database and RSA key are set.
    let target = match database_settings(values, SettingsGroup::TransferTo)? {
        Some(database)
            if values
                .setting(RSA_KEY_PROVIDER.in_group(SettingsGroup::TransferTo))
                .is_some() =>
        {
            Some(TransferTarget {
                database,
                rsa_key: RsaKeySettings::read(values, source, SettingsGroup::TransferTo)?,
            })
        }
        _ => None,
    };
    let lockfile_path = transfer_lockfile_path(values);
    let transfer_to = (lockfile_path.is_some() || target.is_some()).then_some(TransferToSettings {
        lockfile_path,
        target,
    });

    let rotate_to = match values.setting(RSA_KEY_PROVIDER.in_group(SettingsGroup::RotateTo)) {
        Some(_) => Some(RsaKeySettings::read(
            values,
            source,
            SettingsGroup::RotateTo,
        )?),
        None => None,
    };

    let recovery_key = recovery_key_settings(values);
    let user_key_binding = user_key_binding(values)?;

    Ok(Settings {
        user_key_binding,
        recovery_key,
        https_certificate: HttpsCertificateSettings::from_vars(source.env.iter().cloned()),
        rotate_to,
        web_vault_origin,
        identity_server_uri,
        database,
        rsa_key,
        transfer_to,
        intervals: Intervals::default(),
    })
}

#[cfg(test)]
pub(crate) mod test_env;

#[cfg(test)]
mod tests;
