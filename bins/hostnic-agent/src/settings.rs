//! The agent's configuration: the core's [`Settings`] (keys, defaults,
//! validation), read from its YAML file here.

use std::path::Path;

pub use hostnic_core::config::agent::*;

/// Reads and validates the YAML file at `path`.
pub fn load(path: &Path) -> Result<Settings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Settings::from_yaml(&text, &path.display().to_string())
}
