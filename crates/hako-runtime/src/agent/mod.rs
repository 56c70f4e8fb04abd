//! The agent API's runtime: one-shot runs with files and streamed output, and sessions that
//! keep an interpreter alive between calls. Both run in spawn mode through the live jail
//! helper (`hako __live`), with every layer of a Dify run.

mod live;
mod paths;
mod run;
pub mod session;

pub use crate::config::AgentConfig;
pub use live::LiveError;
pub use paths::PathError;
pub use run::{AgentResult, Event, RunSpec};
pub use session::{Image, SessionAnswer, SessionInfo, SessionSpec, Sessions};

use crate::executor::{ExecError, Executor};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed; the text says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("{field} is not valid base64: {source}")]
    Base64 {
        field: String,
        #[source]
        source: base64::DecodeError,
    },
    /// The request could not be encoded for the driver.
    #[error("encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("unsupported language")]
    UnsupportedLanguage,
    #[error("{0}")]
    Path(#[from] PathError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{0}")]
    Live(#[from] LiveError),
    #[error("session {0} not found (it ended, expired, or its replica is gone)")]
    NoSession(String),
    #[error("file {0} not found in the session")]
    NoFile(String),
    /// Too many sessions, or their memory is used up.
    #[error("{0}")]
    Capacity(String),
    #[error("the session's interpreter did not answer as expected: {0}")]
    Protocol(String),
    #[error("the session's interpreter did not answer as expected: {what}: {source}")]
    Reply {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The agent API's runtime: the executor plus this replica's sessions.
#[derive(Clone)]
pub struct Agent {
    executor: Executor,
    sessions: Sessions,
}

impl Agent {
    pub fn new(executor: Executor) -> Agent {
        let sessions = Sessions::new(executor.clone());
        Agent { executor, sessions }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn config(&self) -> &AgentConfig {
        &self.executor.config().hako.agent
    }
}

/// `bytes` random bytes from the kernel, as hex (ids and markers).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SAFETY: getrandom writes at most buf.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 || n as usize != buf.len() {
        // Never a predictable id: fall back to the kernel's other source.
        if let Ok(data) = std::fs::read("/proc/sys/kernel/random/uuid") {
            return String::from_utf8_lossy(&data).trim().replace('-', "");
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random id (128 bits, hex).
pub fn random_id() -> String {
    random_hex(16)
}

/// Decodes base64, naming the field on error.
pub(crate) fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, AgentError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|source| AgentError::Base64 {
            field: field.to_string(),
            source,
        })
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
