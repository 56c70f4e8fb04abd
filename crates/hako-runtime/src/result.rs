//! Run requests and what became of them: a domain report that `hako-api` words for Dify.

use crate::language::Language;
use serde::{Deserialize, Serialize};

pub use hako_wire::spec::NetworkReport;

/// Optional per-request limits. They may lower the configured limits, never raise them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitOverrides {
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub language: Language,
    pub code: String,
    /// Only honoured when `enable_preload` is configured; runs inside the sandbox, before `code`.
    pub preload: Option<String>,
    pub enable_network: bool,
    pub limits: LimitOverrides,
    /// For logs.
    pub request_id: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    Error,
    Timeout,
    MemoryLimit,
    OutputLimit,
    /// The run failed after hitting its process/thread limit.
    PidsLimit,
    Blocked,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Error => "error",
            RunStatus::Timeout => "timeout",
            RunStatus::MemoryLimit => "memory_limit",
            RunStatus::OutputLimit => "output_limit",
            RunStatus::PidsLimit => "pids_limit",
            RunStatus::Blocked => "blocked",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
}

/// What became of one run, as facts: the API layer words them for its callers (the Dify
/// `data` object and its `error` text are built in `hako-api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub language: Language,
    pub status: RunStatus,
    pub stdout: String,
    pub stderr: String,
    /// The exit code; a program killed by a signal reports [`KILLED_EXIT_CODE`].
    pub exit_code: i32,
    /// Names of the syscalls the policy denied.
    pub blocked_syscalls: Vec<String>,
    pub usage: Usage,
    /// What the egress guard saw of a proxy-mode run.
    pub network: Option<NetworkReport>,
    /// Why the run did not succeed; `None` exactly when `status` is [`RunStatus::Ok`].
    pub failure: Option<Failure>,
}

/// Exit code reported when the program was killed by a signal (as Dify Sandbox reports it).
pub const KILLED_EXIT_CODE: i32 = -1;

impl RunReport {
    /// A successful run that printed `stdout` (for fakes and tests of the layers above).
    pub fn ok(language: Language, stdout: String) -> RunReport {
        RunReport {
            language,
            status: RunStatus::Ok,
            stdout,
            stderr: String::new(),
            exit_code: 0,
            blocked_syscalls: Vec::new(),
            usage: Usage::default(),
            network: None,
            failure: None,
        }
    }

    /// `host:port` of every destination the egress guard refused.
    pub fn refused_destinations(&self) -> &[String] {
        self.network.as_ref().map_or(&[], |n| n.refused.as_slice())
    }
}

/// How a failed run ended and every reason found for it, in the order they are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub ending: Ending,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The program's process ended with this exit code (its stderr tells the rest).
    Exited(i32),
    /// A session statement raised: the interpreter's own account of the exception.
    Raised(String),
}

/// One reason a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The run's supervision broke after the program was handed over.
    SupervisionLost(String),
    /// The run sent its supervisor a message no state expects, and was killed.
    Tampered(String),
    Timeout,
    MemoryLimit {
        limit_bytes: u64,
    },
    OutputLimit {
        limit_bytes: u64,
    },
    /// The program was killed by this signal.
    Signal(i32),
    /// The policy denied this syscall.
    Blocked {
        syscall: String,
    },
    /// More syscalls were denied than one report names.
    BlockedUnnamed,
    PidsLimit {
        limit: u64,
    },
    /// The egress guard refused a connection to this `host:port`.
    Refused {
        destination: String,
    },
    /// A per-run network limit (`connections` or `bytes`) cut the run off.
    NetworkLimit {
        limit: String,
    },
}
