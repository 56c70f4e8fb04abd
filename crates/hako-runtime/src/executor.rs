//! The executor: turns a [`RunRequest`] into a jailed run and a [`RunResult`].

use crate::config::Config;
use crate::result::{RunRequest, RunResult};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request cannot run as asked (e.g. network while globally disabled).
    #[error("network is disabled, please enable it in the configuration")]
    NetworkDisabled,
    /// The jail could not be started or failed before the program ran.
    #[error("sandbox failure: {0}")]
    Sandbox(String),
}

/// Runs programs. Cheap to clone and share between requests.
#[derive(Debug, Clone)]
pub struct Executor {
    config: std::sync::Arc<Config>,
}

impl Executor {
    pub fn new(config: Config) -> Result<Self, ExecError> {
        Ok(Executor { config: std::sync::Arc::new(config) })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn run(&self, request: RunRequest) -> Result<RunResult, ExecError> {
        let _ = request;
        Err(ExecError::Sandbox("not built yet".into()))
    }
}
