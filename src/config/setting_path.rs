//! Typed names of settings below `keyConnectorSettings`.
//!
//! A [`SettingPath`] knows its group (the main settings, `transferTo` or `rotateTo`), its
//! section (`database`, `rsaKey`, `certificate`, or none) and its key, and renders both
//! spellings an operator may have used: `keyConnectorSettings:rsaKey:awsKeyId` as in
//! `appsettings.json`, and `keyConnectorSettings__rsaKey__awsKeyId` as an environment
//! variable. Messages name settings through it, never by hand-written strings.

use std::fmt;

/// The section of the configuration this service reads.
pub const SECTION: &str = "keyConnectorSettings";

/// The settings group a setting (and so an RSA key or store) was configured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsGroup {
    /// `keyConnectorSettings:rsaKey` and `keyConnectorSettings:certificate`.
    Main,
    /// `keyConnectorSettings:transferTo:{rsaKey,certificate}`.
    TransferTo,
    /// `keyConnectorSettings:rotateTo:{rsaKey,certificate}`.
    RotateTo,
}

impl SettingsGroup {
    fn name(self) -> Option<&'static str> {
        match self {
            SettingsGroup::Main => None,
            SettingsGroup::TransferTo => Some("transferTo"),
            SettingsGroup::RotateTo => Some("rotateTo"),
        }
    }
}

/// The part of a group a setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingSection {
    /// Directly in the group: `webVaultUri`, `transferTo:lockfilePath`.
    Top,
    /// `database:`, the store.
    Database,
    /// `rsaKey:`, the RSA key provider.
    RsaKey,
    /// `certificate:`, the certificate source.
    Certificate,
}

impl SettingSection {
    fn name(self) -> Option<&'static str> {
        match self {
            SettingSection::Top => None,
            SettingSection::Database => Some("database"),
            SettingSection::RsaKey => Some("rsaKey"),
            SettingSection::Certificate => Some("certificate"),
        }
    }

    /// The groups that accept this section again: `transferTo` takes `database`,
    /// `certificate` and `rsaKey`; `rotateTo` takes `certificate` and `rsaKey`.
    pub(super) fn accepted_in(self, group: SettingsGroup) -> bool {
        match group {
            SettingsGroup::Main => true,
            SettingsGroup::TransferTo => self != SettingSection::Top,
            SettingsGroup::RotateTo => {
                matches!(self, SettingSection::RsaKey | SettingSection::Certificate)
            }
        }
    }
}

/// One setting's place below `keyConnectorSettings`. [`fmt::Display`] writes the
/// environment-variable spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingPath {
    group: SettingsGroup,
    section: SettingSection,
    key: &'static str,
}

impl SettingPath {
    /// `keyConnectorSettings:{key}`.
    pub const fn top(key: &'static str) -> Self {
        Self::new(SettingsGroup::Main, SettingSection::Top, key)
    }

    /// `keyConnectorSettings:database:{key}`.
    pub const fn database(key: &'static str) -> Self {
        Self::new(SettingsGroup::Main, SettingSection::Database, key)
    }

    /// `keyConnectorSettings:rsaKey:{key}`.
    pub const fn rsa_key(key: &'static str) -> Self {
        Self::new(SettingsGroup::Main, SettingSection::RsaKey, key)
    }

    /// `keyConnectorSettings:certificate:{key}`.
    pub const fn certificate(key: &'static str) -> Self {
        Self::new(SettingsGroup::Main, SettingSection::Certificate, key)
    }

    pub const fn new(group: SettingsGroup, section: SettingSection, key: &'static str) -> Self {
        Self {
            group,
            section,
            key,
        }
    }

    /// The same setting in `group`.
    pub const fn in_group(self, group: SettingsGroup) -> Self {
        Self { group, ..self }
    }

    pub const fn group(self) -> SettingsGroup {
        self.group
    }

    pub const fn section(self) -> SettingSection {
        self.section
    }

    pub const fn key(self) -> &'static str {
        self.key
    }

    /// The path below `keyConnectorSettings` with `:` between levels, e.g.
    /// `transferTo:rsaKey:awsKeyId`: how the settings are looked up.
    pub fn relative(self) -> String {
        self.joined(":")
    }

    /// The `appsettings.json` spelling: `keyConnectorSettings:rsaKey:awsKeyId`.
    pub fn setting(self) -> String {
        format!("{SECTION}:{}", self.relative())
    }

    /// The environment-variable spelling: `keyConnectorSettings__rsaKey__awsKeyId`.
    pub fn env_var(self) -> String {
        format!("{SECTION}__{}", self.joined("__"))
    }

    /// Both spellings: `keyConnectorSettings:rsaKey:awsKeyId (keyConnectorSettings__rsaKey__awsKeyId)`.
    pub fn both_spellings(self) -> String {
        format!("{} ({})", self.setting(), self.env_var())
    }

    fn joined(self, separator: &str) -> String {
        let levels: Vec<&str> = [self.group.name(), self.section.name(), Some(self.key)]
            .into_iter()
            .flatten()
            .collect();
        // A key may name a level of its own (`recoveryKey:publicKeyPath`).
        levels.join(separator).replace(':', separator)
    }
}

impl fmt::Display for SettingPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.env_var())
    }
}

#[cfg(test)]
mod tests {
    use super::{SettingPath, SettingsGroup};

    #[test]
    fn a_message_names_the_settings_of_the_group_the_key_came_from() {
        let message = |group| {
            let path = SettingPath::certificate("filesystemPath").in_group(group);
            let key = SettingPath::rsa_key("awsKeyId").in_group(group);
            format!(
                "cannot read the certificate file /x ({path}); {} ({})",
                key.setting(),
                key.env_var()
            )
        };
        assert_eq!(
            message(SettingsGroup::Main),
            "cannot read the certificate file /x (keyConnectorSettings__certificate__filesystemPath); \
             keyConnectorSettings:rsaKey:awsKeyId (keyConnectorSettings__rsaKey__awsKeyId)"
        );
        assert_eq!(
            message(SettingsGroup::TransferTo),
            "cannot read the certificate file /x (keyConnectorSettings__transferTo__certificate__filesystemPath); \
             keyConnectorSettings:transferTo:rsaKey:awsKeyId (keyConnectorSettings__transferTo__rsaKey__awsKeyId)"
        );
        let rotated = message(SettingsGroup::RotateTo);
        assert!(
            rotated.contains("keyConnectorSettings__rotateTo__rsaKey__awsKeyId"),
            "{rotated}"
        );
        // Already in the group: left alone.
        let path = SettingPath::rsa_key("awsKeyId").in_group(SettingsGroup::RotateTo);
        assert_eq!(path.in_group(SettingsGroup::RotateTo), path);
    }

    #[test]
    fn a_key_with_its_own_level_is_spelled_with_it() {
        let path = SettingPath::top("recoveryKey:publicKeyPath");
        assert_eq!(path.relative(), "recoveryKey:publicKeyPath");
        assert_eq!(
            path.env_var(),
            "keyConnectorSettings__recoveryKey__publicKeyPath"
        );
    }

    #[test]
    fn top_level_settings_have_no_section() {
        let lockfile = SettingPath::top("lockfilePath").in_group(SettingsGroup::TransferTo);
        assert_eq!(
            lockfile.env_var(),
            "keyConnectorSettings__transferTo__lockfilePath"
        );
        assert_eq!(
            SettingPath::top("webVaultUri").setting(),
            "keyConnectorSettings:webVaultUri"
        );
    }
}
