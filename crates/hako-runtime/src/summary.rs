//! From a jail outcome to the run's domain report: its status and the reasons it failed.

use crate::language::Language;
use crate::result::{Ending, Failure, Reason, RunReport, RunStatus, Usage, KILLED_EXIT_CODE};
use hako_jail::spec::{JailOutcome, Limits};

pub fn summarize(outcome: &JailOutcome, language: Language, limits: &Limits) -> RunReport {
    let exit_code = outcome.exit_code.unwrap_or(KILLED_EXIT_CODE);
    let blocked: Vec<String> = outcome.blocked.iter().map(|b| b.name.clone()).collect();
    let status = status_of(outcome, exit_code, !blocked.is_empty());
    let failure = (status != RunStatus::Ok).then(|| Failure {
        ending: Ending::Exited(exit_code),
        reasons: reasons(outcome, status, &blocked, limits),
    });
    RunReport {
        language,
        status,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        exit_code,
        blocked_syscalls: blocked,
        usage: Usage {
            wall_ms: outcome.wall_ms,
            cpu_ms: outcome.cpu_ms,
            peak_memory_bytes: outcome.peak_memory_bytes,
        },
        network: outcome.network.clone(),
        failure,
    }
}

fn status_of(outcome: &JailOutcome, exit_code: i32, blocked: bool) -> RunStatus {
    if outcome.failure.is_some() {
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
    } else if blocked {
        RunStatus::Blocked
    } else {
        RunStatus::Error
    }
}

/// The reasons of a failed run, in the order its error text lists them.
fn reasons(
    outcome: &JailOutcome,
    status: RunStatus,
    blocked: &[String],
    limits: &Limits,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if let Some(failure) = &outcome.failure {
        reasons.push(if outcome.tampered {
            Reason::Tampered(failure.clone())
        } else {
            Reason::SupervisionLost(failure.clone())
        });
    }
    match status {
        RunStatus::Timeout => reasons.push(Reason::Timeout),
        RunStatus::MemoryLimit => reasons.push(Reason::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        }),
        RunStatus::OutputLimit => reasons.push(Reason::OutputLimit {
            limit_bytes: limits.output_bytes,
        }),
        _ => {}
    }
    if let Some(signal) = outcome
        .signal
        .filter(|_| status == RunStatus::Error || status == RunStatus::Blocked)
    {
        reasons.push(Reason::Signal(signal));
    }
    reasons.extend(blocked_reasons(blocked));
    if outcome.pids_limited {
        reasons.push(Reason::PidsLimit { limit: limits.pids });
    }
    if let Some(net) = &outcome.network {
        reasons.extend(net.refused.iter().map(|dest| Reason::Refused {
            destination: dest.clone(),
        }));
        if let Some(limit) = &net.limit {
            reasons.push(Reason::NetworkLimit {
                limit: limit.clone(),
            });
        }
    }
    reasons
}

/// One reason per denied syscall (`other_syscalls` stands for the ones a report leaves out).
pub fn blocked_reasons(blocked: &[String]) -> impl Iterator<Item = Reason> + '_ {
    blocked.iter().map(|name| match name.as_str() {
        "other_syscalls" => Reason::BlockedUnnamed,
        _ => Reason::Blocked {
            syscall: name.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_jail::spec::{BlockedSyscall, NetworkReport};

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

    fn reasons_of(report: &RunReport) -> Vec<Reason> {
        report
            .failure
            .as_ref()
            .map(|f| f.reasons.clone())
            .unwrap_or_default()
    }

    #[test]
    fn success_has_no_failure_even_with_stderr() {
        let outcome = JailOutcome {
            exit_code: Some(0),
            stderr: b"warning\n".to_vec(),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(
            (r.status, r.failure, r.stderr.as_str()),
            (RunStatus::Ok, None, "warning\n")
        );
    }

    #[test]
    fn a_failed_exit_is_an_error_with_its_code() {
        let outcome = JailOutcome {
            exit_code: Some(1),
            stderr: b"Traceback\n".to_vec(),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::Error);
        assert_eq!(
            r.failure,
            Some(Failure {
                ending: Ending::Exited(1),
                reasons: Vec::new()
            })
        );
    }

    #[test]
    fn a_timeout_is_killed_with_exit_code_minus_one() {
        let outcome = JailOutcome {
            timed_out: true,
            signal: Some(9),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Nodejs, &limits());
        assert_eq!((r.status, r.exit_code), (RunStatus::Timeout, -1));
        assert_eq!(reasons_of(&r), vec![Reason::Timeout]);
    }

    #[test]
    fn a_blocked_syscall_is_named() {
        let outcome = JailOutcome {
            exit_code: Some(1),
            blocked: vec![
                BlockedSyscall {
                    nr: 103,
                    name: "syslog".into(),
                    count: 1,
                },
                BlockedSyscall {
                    nr: 0,
                    name: "other_syscalls".into(),
                    count: 3,
                },
            ],
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::Blocked);
        assert_eq!(r.blocked_syscalls, vec!["syslog", "other_syscalls"]);
        assert_eq!(
            reasons_of(&r),
            vec![
                Reason::Blocked {
                    syscall: "syslog".into()
                },
                Reason::BlockedUnnamed
            ]
        );
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
        assert_eq!(
            reasons_of(&r),
            vec![Reason::MemoryLimit {
                limit_bytes: 512 << 20
            }]
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
        assert_eq!(
            reasons_of(&r),
            vec![Reason::OutputLimit { limit_bytes: 100 }]
        );
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
        assert_eq!(reasons_of(&r), vec![Reason::PidsLimit { limit: 128 }]);
        let survived = JailOutcome {
            exit_code: Some(0),
            pids_limited: true,
            ..Default::default()
        };
        let r = summarize(&survived, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::Ok);
    }

    #[test]
    fn tampering_and_network_reasons_keep_their_kind() {
        let outcome = JailOutcome {
            exit_code: Some(0),
            signal: Some(9),
            failure: Some("the run tampered (READY)".into()),
            tampered: true,
            network: Some(NetworkReport {
                refused: vec!["10.0.0.1:80".into()],
                limit: Some("bytes".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = summarize(&outcome, Language::Python3, &limits());
        assert_eq!(r.status, RunStatus::Error);
        assert_eq!(r.refused_destinations(), ["10.0.0.1:80".to_string()]);
        assert_eq!(
            reasons_of(&r),
            vec![
                Reason::Tampered("the run tampered (READY)".into()),
                Reason::Signal(9),
                Reason::Refused {
                    destination: "10.0.0.1:80".into()
                },
                Reason::NetworkLimit {
                    limit: "bytes".into()
                },
            ]
        );
    }
}
