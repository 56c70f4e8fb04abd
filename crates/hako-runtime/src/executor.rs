//! The executor: turns a [`RunRequest`] into a jailed run and a [`RunResult`].
//! (Interface placeholder while the jail lands.)

use crate::config::Config;
use crate::language::Language;
use crate::result::{RunRequest, RunResult};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request asks for network while it is globally disabled.
    #[error("network is disabled, please enable it in the configuration")]
    NetworkDisabled,
    /// The language's interpreter was not usable at start-up.
    #[error("{language} is not available: {reason}")]
    Unavailable { language: Language, reason: String },
    /// The jail could not be started or failed before the program ran.
    #[error("sandbox failure: {0}")]
    Sandbox(String),
}

/// Options that only the command line sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecOptions {
    pub learn_syscalls: bool,
}

/// Runs programs. Cheap to clone and share between requests.
#[derive(Debug, Clone)]
pub struct Executor {
    config: std::sync::Arc<Config>,
}

impl Executor {
    pub fn new(config: Config, helper: std::path::PathBuf) -> Result<Self, ExecError> {
        let _ = helper;
        Ok(Executor { config: std::sync::Arc::new(config) })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn run(&self, request: RunRequest) -> Result<RunResult, ExecError> {
        let _ = request;
        Err(ExecError::Sandbox("placeholder".into()))
    }
}
