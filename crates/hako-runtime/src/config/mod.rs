//! Configuration: Dify Sandbox's `conf/config.yaml` keys and environment variables, plus
//! hako's own `hako:` section (env `HAKO_<KEY>`).
//!
//! - `types.rs`: the keys, their types and defaults (the contract);
//! - `file.rs`: reading the YAML file;
//! - `env.rs`: the environment overlay, a table of (variable, key, parser) rows;
//! - `validate.rs`: checks every value once and works out the typed values (syscall numbers,
//!   durations) the runtime reads.
//!
//! A configuration is loaded once per process; the server and the executor share that copy.
//! Unknown keys are reported as warnings, not errors, so a newer Dify config keeps working.

mod env;
mod file;
mod types;
mod validate;

pub use types::{
    AgentConfig, AppConfig, Config, ExecMode, HakoConfig, HttpConfig, IdRanges, LimitsConfig,
    LogFormat, NetworkConfig, NetworkPolicy, ProxyConfig, DEFAULT_API_KEY, DEFAULT_UID_COUNT,
    MIN_UID_COUNT,
};

use hako_jail::seccomp::SeccompError;
use std::path::{Path, PathBuf};

/// Where the config file is looked for when no path is given (relative to the working directory).
pub const DEFAULT_CONFIG_PATH: &str = "conf/config.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// `value` is already formatted (strings quoted).
    #[error("invalid value {value} for {key} ({origin}): {reason}")]
    Invalid {
        key: String,
        origin: String,
        value: String,
        reason: String,
    },
    #[error("invalid value {value:?} in {key} ({origin}): {reason}")]
    Syscall {
        key: String,
        origin: String,
        value: String,
        reason: Box<SeccompError>,
    },
}

/// A loaded configuration, with the warnings to log at start-up.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    /// The file that was read, if any.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Loads `path` (or `conf/config.yaml`), applies the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with an explicit environment lookup.
    pub(crate) fn load_with_env(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        Self::load_from(path, Path::new(DEFAULT_CONFIG_PATH), env)
    }

    fn load_from(
        path: Option<&Path>,
        default_path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let (mut config, source) = match path {
            Some(path) => (
                file::read_file(path, &mut warnings)?,
                Some(path.to_path_buf()),
            ),
            None if default_path.exists() => (
                file::read_file(default_path, &mut warnings)?,
                Some(default_path.to_path_buf()),
            ),
            None => {
                warnings.push(format!(
                    "no config file at {} (relative to the working directory); serving with \
                     built-in defaults",
                    default_path.display()
                ));
                (Config::default(), None)
            }
        };
        let file_origin = match &source {
            Some(path) => path.display().to_string(),
            None => "built-in default".to_string(),
        };
        let from_file = config.allowed_syscalls.len();
        let set_by_env = env::apply(&mut config, env)?;
        let origins = validate::Origins {
            file: file_origin,
            env: set_by_env,
        };
        validate::resolve(&mut config, &origins, from_file)?;
        warnings.extend(validate::warnings(&config));
        Ok(Loaded {
            config,
            warnings,
            source,
        })
    }
}

#[cfg(test)]
mod tests;
