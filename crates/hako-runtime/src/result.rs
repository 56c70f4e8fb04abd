//! Run requests and results, in the shape of DESIGN.md's result object.

use crate::language::Language;
use serde::{Deserialize, Serialize};

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

/// The `data` object of the run answer (Dify's fields first, then hako's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunResult {
    pub stdout: String,
    pub stderr: String,
    pub error: String,
    pub exit_code: i32,
    pub status: RunStatus,
    pub blocked_syscalls: Vec<String>,
    pub usage: Usage,
    /// `host:port` the egress guard refused (proxy-mode runs).
    #[serde(default)]
    pub refused_destinations: Vec<String>,
    /// What the egress guard saw of a proxy-mode run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<hako_jail::spec::NetworkReport>,
}
