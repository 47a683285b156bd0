//! Reading `keyConnectorSettings` from appsettings.json and the environment.
//!
//! Placeholder: see the configuration work item.

use super::{ConfigError, ConfigSource, LoadedSettings};

pub fn load(_source: &ConfigSource) -> Result<LoadedSettings, ConfigError> {
    Err(ConfigError::new(
        "",
        "configuration loading is not built yet",
    ))
}
