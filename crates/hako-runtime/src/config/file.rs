//! Reading `conf/config.yaml`: YAML into [`Config`], with the keys nobody reads reported.

use super::{Config, ConfigError};
use std::path::Path;

/// Reads and parses the file at `path`; unknown keys become warnings.
pub(super) fn read_file(path: &Path, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (config, unknown) = parse_yaml(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    for key in unknown {
        warnings.push(format!("unknown key {key} in {} ignored", path.display()));
    }
    Ok(config)
}

/// Parses a config document; returns it with the paths of the keys it ignored.
fn parse_yaml(text: &str) -> Result<(Config, Vec<String>), serde_saphyr::Error> {
    if text.trim().is_empty() {
        return Ok((Config::default(), Vec::new()));
    }
    let mut unknown = Vec::new();
    let config = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
    })?;
    Ok((config, unknown))
}
