//! `rsaKey:provider`, for the main key and for the `transferTo` and `rotateTo` groups: which
//! provider is named, handed to that provider's own parsing (each provider's `settings`
//! module below [`crate::keys`]).

use super::catalog::{GroupValues, RSA_KEY_PROVIDER};
use super::layers::Values;
use super::setting_path::SettingsGroup;
use super::{ConfigError, ConfigSource, RsaKeySettings};
use crate::keys::{check_typed_provider_values, provider_names_listed};

/// `rsaKey:provider` (in `group`) and the settings of the provider it names, parsed by
/// that provider (see [`crate::keys`]'s registry).
pub(super) fn rsa_key_settings(
    values: &Values,
    source: &ConfigSource,
    group: SettingsGroup,
) -> Result<RsaKeySettings, ConfigError> {
    let input = GroupValues::of(values, source, group);
    let provider_path = input.at(RSA_KEY_PROVIDER);
    let provider = input.require_setting(RSA_KEY_PROVIDER, &provider_names_listed())?;
    check_typed_provider_values(&input)?;
    let name = provider.trim().to_ascii_lowercase();
    RsaKeySettings::parse(&name, &input).unwrap_or_else(|| {
        Err(ConfigError::at(
            provider_path,
            format!(
                "`{name}` is not an RSA key provider; use {}",
                provider_names_listed()
            ),
        ))
    })
}

#[cfg(test)]
mod tests;
