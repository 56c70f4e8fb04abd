//! The run's result object, in Dify Sandbox's words: the `data` of `/v1/sandbox/run`, and
//! the fields the `/v2` answers, the MCP tools and `hako run --json` share with it.
//!
//! The runtime reports facts ([`RunReport`]); this is the only place they become text.

use hako_runtime::agent::{AgentResult, Image, SessionAnswer};
use hako_runtime::result::{Ending, Reason, RunReport, RunStatus, Usage};
use hako_runtime::Language;
use serde::Serialize;
use std::collections::BTreeMap;

/// The `data` object of the run answer (Dify's fields first, then hako's).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunData {
    pub stdout: String,
    pub stderr: String,
    pub error: String,
    pub exit_code: i32,
    pub status: RunStatus,
    pub blocked_syscalls: Vec<String>,
    pub usage: Usage,
    /// `host:port` the egress guard refused (proxy-mode runs).
    pub refused_destinations: Vec<String>,
    /// What the egress guard saw of a proxy-mode run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<hako_runtime::result::NetworkReport>,
}

impl From<RunReport> for RunData {
    fn from(report: RunReport) -> RunData {
        RunData {
            error: error_text(&report),
            refused_destinations: report.refused_destinations().to_vec(),
            stdout: report.stdout,
            stderr: report.stderr,
            exit_code: report.exit_code,
            status: report.status,
            blocked_syscalls: report.blocked_syscalls,
            usage: report.usage,
            network: report.network,
        }
    }
}

/// The answer of `POST /v2/runs`: the result object and the returned files.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRunData {
    #[serde(flatten)]
    pub run: RunData,
    /// Relative path → base64 content.
    pub files: BTreeMap<String, String>,
    /// Files that matched but did not fit in `hako.agent.files_max_bytes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_skipped: Vec<String>,
}

impl From<AgentResult> for AgentRunData {
    fn from(result: AgentResult) -> AgentRunData {
        AgentRunData {
            run: result.run.into(),
            files: result.files,
            files_skipped: result.files_skipped,
        }
    }
}

/// The answer to a session exec: the result object plus the notebook parts.
#[derive(Debug, Clone, Serialize)]
pub struct ExecData {
    #[serde(flatten)]
    pub run: RunData,
    pub value: Option<String>,
    pub images: Vec<Image>,
    pub session_ended: bool,
}

impl From<SessionAnswer> for ExecData {
    fn from(answer: SessionAnswer) -> ExecData {
        ExecData {
            run: answer.run.into(),
            value: answer.value,
            images: answer.images,
            session_ended: answer.session_ended,
        }
    }
}

/// Dify's `error`: empty for a successful run (stderr warnings must not fail a node),
/// otherwise `process exited with code N`, one `error: …` line per reason, then stderr.
pub fn error_text(report: &RunReport) -> String {
    let Some(failure) = &report.failure else {
        return String::new();
    };
    let mut text = match &failure.ending {
        Ending::Exited(code) => format!("process exited with code {code}\n"),
        Ending::Raised(account) => account.clone(),
    };
    for reason in &failure.reasons {
        text.push_str(&reason_lines(reason, report.language));
    }
    if let Ending::Exited(_) = failure.ending {
        text.push_str(&report.stderr);
    }
    text
}

/// The `error: …` line(s) of one reason, each ending in a newline.
pub fn reason_lines(reason: &Reason, language: Language) -> String {
    match reason {
        Reason::SupervisionLost(detail) | Reason::Tampered(detail) => {
            format!("error: {detail}\n")
        }
        Reason::Timeout => "error: timeout\n".into(),
        Reason::MemoryLimit { limit_bytes } => format!(
            "error: signal: killed\nerror: memory limit of {} MiB exceeded\n",
            limit_bytes >> 20
        ),
        Reason::OutputLimit { limit_bytes } => {
            format!("error: output limit of {limit_bytes} bytes exceeded\n")
        }
        Reason::Signal(signal) => format!("error: signal: {}\n", signal_name(*signal)),
        Reason::Blocked { syscall } => format!(
            "error: operation not permitted: syscall {syscall} blocked by the {language} policy; allow it with ALLOWED_SYSCALLS={syscall}\n"
        ),
        Reason::BlockedUnnamed => {
            "error: operation not permitted: more syscalls were blocked than one report names\n"
                .into()
        }
        Reason::PidsLimit { limit } => format!("error: process limit of {limit} reached\n"),
        Reason::Refused { destination } => format!(
            "error: network: connection to {destination} refused by the egress guard\n"
        ),
        Reason::NetworkLimit { limit } => {
            format!("error: network: per-run {limit} limit reached\n")
        }
    }
}

/// Go's wording for the usual signals (Dify Sandbox prints `signal: killed`).
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGFPE => "floating point exception".into(),
        libc::SIGSYS => "bad system call".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGXFSZ => "file size limit exceeded".into(),
        libc::SIGXCPU => "CPU time limit exceeded".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_runtime::result::Failure;

    fn failed(ending: Ending, reasons: Vec<Reason>, stderr: &str) -> RunReport {
        RunReport {
            status: RunStatus::Error,
            stderr: stderr.into(),
            exit_code: 1,
            failure: Some(Failure { ending, reasons }),
            ..RunReport::ok(Language::Python3, String::new())
        }
    }

    #[test]
    fn success_has_empty_error_even_with_stderr() {
        let mut report = RunReport::ok(Language::Python3, "hi\n".into());
        report.stderr = "warning\n".into();
        let data = RunData::from(report);
        assert_eq!(
            (data.error.as_str(), data.stderr.as_str()),
            ("", "warning\n")
        );
    }

    #[test]
    fn failure_error_is_exit_line_then_stderr() {
        let report = failed(Ending::Exited(1), Vec::new(), "Traceback\n");
        assert_eq!(
            error_text(&report),
            "process exited with code 1\nTraceback\n"
        );
    }

    #[test]
    fn timeout_uses_difys_words() {
        let report = failed(Ending::Exited(-1), vec![Reason::Timeout], "");
        assert_eq!(
            error_text(&report),
            "process exited with code -1\nerror: timeout\n"
        );
    }

    #[test]
    fn blocked_syscall_is_named_with_the_fix() {
        let report = failed(
            Ending::Exited(1),
            vec![Reason::Blocked {
                syscall: "syslog".into(),
            }],
            "",
        );
        assert!(error_text(&report).contains(
            "error: operation not permitted: syscall syslog blocked by the python3 policy; allow it with ALLOWED_SYSCALLS=syslog\n"
        ));
    }

    #[test]
    fn every_reason_has_its_line_in_order_before_stderr() {
        let report = failed(
            Ending::Exited(-1),
            vec![
                Reason::Tampered("the run tampered (READY)".into()),
                Reason::MemoryLimit {
                    limit_bytes: 512 << 20,
                },
                Reason::OutputLimit { limit_bytes: 100 },
                Reason::Signal(libc::SIGSEGV),
                Reason::BlockedUnnamed,
                Reason::PidsLimit { limit: 128 },
                Reason::Refused {
                    destination: "10.0.0.1:80".into(),
                },
                Reason::NetworkLimit {
                    limit: "bytes".into(),
                },
            ],
            "boom\n",
        );
        assert_eq!(
            error_text(&report),
            "process exited with code -1\n\
             error: the run tampered (READY)\n\
             error: signal: killed\n\
             error: memory limit of 512 MiB exceeded\n\
             error: output limit of 100 bytes exceeded\n\
             error: signal: segmentation fault\n\
             error: operation not permitted: more syscalls were blocked than one report names\n\
             error: process limit of 128 reached\n\
             error: network: connection to 10.0.0.1:80 refused by the egress guard\n\
             error: network: per-run bytes limit reached\n\
             boom\n"
        );
    }

    #[test]
    fn a_session_statement_error_is_its_traceback_then_the_reasons() {
        let report = failed(
            Ending::Raised("NameError: x\n".into()),
            vec![Reason::Blocked {
                syscall: "mount".into(),
            }],
            "not part of the error\n",
        );
        assert_eq!(
            error_text(&report),
            "NameError: x\nerror: operation not permitted: syscall mount blocked by the python3 policy; allow it with ALLOWED_SYSCALLS=mount\n"
        );
    }
}
