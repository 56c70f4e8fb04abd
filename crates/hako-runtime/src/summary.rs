//! From a jail outcome to the Dify-shaped result: status, exit code and the `error` text.

use crate::language::Language;
use crate::result::{RunResult, RunStatus, Usage};
use hako_jail::spec::{JailOutcome, Limits};

/// Exit code reported when the program was killed by a signal (as Dify Sandbox reports it).
pub const KILLED_EXIT_CODE: i32 = -1;

pub fn summarize(outcome: &JailOutcome, language: Language, limits: &Limits) -> RunResult {
    let exit_code = outcome.exit_code.unwrap_or(KILLED_EXIT_CODE);
    let blocked: Vec<String> = outcome.blocked.iter().map(|b| b.name.clone()).collect();
    let status = if outcome.failure.is_some() {
        // Lost or killed supervision (or tampering) outranks what the program looked like.
        RunStatus::Error
    } else if outcome.timed_out {
        RunStatus::Timeout
    } else if outcome.oom_killed && exit_code != 0 {
        RunStatus::MemoryLimit
    } else if outcome.output_limited {
        RunStatus::OutputLimit
    } else if outcome.pids_limited && exit_code != 0 {
        RunStatus::PidsLimit
    } else if exit_code == 0 {
        RunStatus::Ok
    } else if !blocked.is_empty() {
        RunStatus::Blocked
    } else {
        RunStatus::Error
    };
    let stderr = String::from_utf8_lossy(&outcome.stderr).into_owned();
    let error = if status == RunStatus::Ok {
        String::new()
    } else {
        let mut text = format!("process exited with code {exit_code}\n");
        if let Some(failure) = &outcome.failure {
            text.push_str(&format!("error: {failure}\n"));
        }
        match status {
            RunStatus::Timeout => text.push_str("error: timeout\n"),
            RunStatus::MemoryLimit => {
                text.push_str("error: signal: killed\n");
                text.push_str(&format!(
                    "error: memory limit of {} MiB exceeded\n",
                    limits.memory_bytes >> 20
                ));
            }
            RunStatus::OutputLimit => text.push_str(&format!(
                "error: output limit of {} bytes exceeded\n",
                limits.output_bytes
            )),
            _ => {}
        }
        if let Some(signal) = outcome
            .signal
            .filter(|_| status == RunStatus::Error || status == RunStatus::Blocked)
        {
            text.push_str(&format!("error: signal: {}\n", signal_name(signal)));
        }
        for name in &blocked {
            if name == "other_syscalls" {
                text.push_str("error: operation not permitted: more syscalls were blocked than one report names\n");
                continue;
            }
            text.push_str(&format!(
                "error: operation not permitted: syscall {name} blocked by the {language} policy; allow it with ALLOWED_SYSCALLS={name}\n"
            ));
        }
        if outcome.pids_limited {
            text.push_str(&format!(
                "error: process limit of {} reached\n",
                limits.pids
            ));
        }
        if let Some(net) = &outcome.network {
            for dest in &net.refused {
                text.push_str(&format!(
                    "error: network: connection to {dest} refused by the egress guard\n"
                ));
            }
            if let Some(limit) = &net.limit {
                text.push_str(&format!("error: network: per-run {limit} limit reached\n"));
            }
        }
        text.push_str(&stderr);
        text
    };
    RunResult {
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr,
        error,
        exit_code,
        status,
        blocked_syscalls: blocked,
        usage: Usage {
            wall_ms: outcome.wall_ms,
            cpu_ms: outcome.cpu_ms,
            peak_memory_bytes: outcome.peak_memory_bytes,
        },
        refused_destinations: outcome
            .network
            .as_ref()
            .map(|n| n.refused.clone())
            .unwrap_or_default(),
        network: outcome.network.clone(),
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
    use hako_jail::spec::BlockedSyscall;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 512 << 20,
            pids: 128,
            tmp_bytes: 64 << 20,
            output_bytes: 100,
            timeout_ms: 5000,
            nofile: 256,
            cpu_percent: 100,
        }
    }

    #[test]
    fn success_has_empty_error_even_with_stderr() {
        let outcome = JailOutcome {
            exit_code: Some(0),
            stderr: b"warning\n".to_vec(),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(
            (r.status, r.error.as_str(), r.stderr.as_str()),
            (RunStatus::Ok, "", "warning\n")
        );
    }

    #[test]
    fn failure_error_is_exit_line_then_stderr() {
        let outcome = JailOutcome {
            exit_code: Some(1),
            stderr: b"Traceback\n".to_vec(),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.error, "process exited with code 1\nTraceback\n");
        assert_eq!(r.status, RunStatus::Error);
    }

    #[test]
    fn timeout_uses_difys_words() {
        let outcome = JailOutcome {
            timed_out: true,
            signal: Some(9),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Nodejs, &limits());
        assert_eq!(r.status, RunStatus::Timeout);
        assert_eq!(r.exit_code, -1);
        assert_eq!(r.error, "process exited with code -1\nerror: timeout\n");
    }

    #[test]
    fn blocked_syscall_is_named_with_the_fix() {
        let outcome = JailOutcome {
            exit_code: Some(1),
            blocked: vec![BlockedSyscall {
                nr: 103,
                name: "syslog".into(),
                count: 1,
            }],
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::Blocked);
        assert_eq!(r.blocked_syscalls, vec!["syslog".to_string()]);
        assert!(r.error.contains(
            "error: operation not permitted: syscall syslog blocked by the python3 policy; allow it with ALLOWED_SYSCALLS=syslog"
        ), "{}", r.error);
    }

    #[test]
    fn oom_kill_is_memory_limit() {
        let outcome = JailOutcome {
            oom_killed: true,
            signal: Some(9),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::MemoryLimit);
        assert!(
            r.error.contains("memory limit of 512 MiB exceeded"),
            "{}",
            r.error
        );
    }

    #[test]
    fn output_limit_is_reported() {
        let outcome = JailOutcome {
            output_limited: true,
            signal: Some(9),
            stdout: vec![b'x'; 100],
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::OutputLimit);
        assert!(r.error.contains("output limit of 100 bytes exceeded"));
    }

    #[test]
    fn failing_at_the_pids_limit_has_its_own_status() {
        let outcome = JailOutcome {
            exit_code: Some(1),
            pids_limited: true,
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::PidsLimit);
        assert!(
            r.error.contains("process limit of 128 reached"),
            "{}",
            r.error
        );
        let survived = JailOutcome {
            exit_code: Some(0),
            pids_limited: true,
            ..Default::default()
        };
        let r = summarize(&survived, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::Ok);
    }
}
