//! Seccomp: the per-language syscall policy (as data), its BPF compiler and the
//! user-notification listener that names blocked calls.
//!
//! - [`policy`]: the tables (groups of syscall names with a reason, argument rules).
//! - [`bpf`]: compiles a policy to a classic BPF program.
//! - [`notify`]: installs the program and answers user notifications.
//!
//! What a run sees for a call outside the policy:
//!
//! | call | answer | recorded as blocked |
//! |---|---|---|
//! | in a group, or in `extra_allowed` | runs normally | no |
//! | `clone3` | `ENOSYS`, so glibc falls back to `clone` (which is checked) | no |
//! | arg rule fails (`clone` without `CLONE_THREAD`, `socket(AF_PACKET)`) | deny action | yes |
//! | any other syscall, or an x32 number on x86_64 | deny action | yes |
//! | wrong audit arch (e.g. i386 `int 0x80`) | process killed | n/a |
//!
//! The deny action is `EPERM` straight from the filter (enforce, no listener), or a user
//! notification that the supervisor answers with `EPERM` (enforce) or lets run (learn). If the
//! supervisor is gone, the kernel answers notified calls with `ENOSYS`: the run still fails
//! closed.

use std::str::FromStr;

use crate::spec::SeccompMode;
use hako_wire::zygote::{FilterInstruction, FilterProgram};

pub mod bpf;
pub mod notify;
pub mod policy;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "unknown syscall {0:?} for {1}; use a name such as `syslog` or a number for this machine"
    )]
    UnknownSyscall(String, &'static str),
    #[error("no seccomp policy for language {language:?}; expected `python3` or `nodejs`")]
    UnknownLanguage { language: String },
    #[error("no seccomp policy for arch {arch:?}; expected `x86_64` or `aarch64`")]
    UnknownArch { arch: String },
    #[error("policy table {table}: syscall {syscall:?} does not exist on {arch}; fix the table")]
    NotInArch {
        table: &'static str,
        syscall: &'static str,
        arch: &'static str,
    },
    #[error("syscall number {nr} cannot be allowed on {arch}: outside the native syscall range")]
    NumberOutOfRange { nr: u32, arch: &'static str },
    #[error("invalid argument rule for syscall {nr}: {reason}")]
    InvalidRule { nr: u32, reason: &'static str },
    #[error("errno {errno} cannot be returned by a seccomp filter (must be 1..=4095)")]
    InvalidErrno { errno: u32 },
    #[error("seccomp program has {len} instructions, the kernel accepts at most {max}")]
    ProgramTooLong { len: usize, max: usize },
    #[error("learn mode needs a notification listener; build the program with listener=true")]
    LearnNeedsListener,
    #[error(
        "no_new_privs is not set; call prctl(PR_SET_NO_NEW_PRIVS, 1) before installing seccomp"
    )]
    NoNewPrivs,
    #[error("checking no_new_privs failed: {source}")]
    NoNewPrivsCheck { source: std::io::Error },
    #[error("installing the seccomp filter ({instructions} insns, listener {listener}): {source}")]
    Install {
        instructions: usize,
        listener: bool,
        source: std::io::Error,
    },
    #[error(
        "seccomp user notification is not supported by this kernel (needs Linux 5.0+): {source}"
    )]
    NotifUnsupported { source: std::io::Error },
    #[error("receiving a seccomp notification failed: {source}")]
    NotifRecv { source: std::io::Error },
    #[error("answering seccomp notification {id} failed: {source}")]
    NotifSend { id: u64, source: std::io::Error },
    #[error("checking seccomp notification {id} failed: {source}")]
    NotifIdValid { id: u64, source: std::io::Error },
    /// Not a failure: the calling thread died or was interrupted by a signal before the
    /// answer. Poll the listener again.
    #[error("seccomp notification {id:?} is gone: its thread exited or was interrupted")]
    TargetGone { id: Option<u64> },
}

impl SeccompError {
    /// True for [`SeccompError::TargetGone`], which a supervisor loop just skips.
    #[cfg(test)]
    pub(crate) fn is_target_gone(&self) -> bool {
        matches!(self, SeccompError::TargetGone { .. })
    }
}

/// The machine's architecture name, as used in policy tables and messages.
pub const NATIVE_ARCH: &str = std::env::consts::ARCH;

/// Resolves a syscall given by name (`mbind`) or number (`237`) for the machine's arch.
pub fn resolve_syscall(name_or_number: &str) -> Result<u32, SeccompError> {
    let text = name_or_number.trim();
    let unknown = || SeccompError::UnknownSyscall(text.to_string(), NATIVE_ARCH);
    if let Ok(nr) = text.parse::<u32>() {
        return syscalls::Sysno::new(nr as usize)
            .map(|s| s.id() as u32)
            .ok_or_else(unknown);
    }
    syscalls::Sysno::from_str(text)
        .map(|s| s.id() as u32)
        .map_err(|_| unknown())
}

/// The name of a syscall number on the machine's arch (`syscall_NNN` when unknown).
/// How many distinct syscall numbers one run's report names; past that, denied calls are
/// counted under [`OTHER_SYSCALLS`] (a run must not grow its supervisor's memory or answer
/// by calling thousands of different numbers).
pub const MAX_DISTINCT_BLOCKED: usize = 64;

/// The report entry that counts denied calls past [`MAX_DISTINCT_BLOCKED`] numbers.
pub const OTHER_SYSCALLS: u32 = u32::MAX;

pub fn syscall_name(nr: u32) -> String {
    if nr == OTHER_SYSCALLS {
        return "other_syscalls".to_string();
    }
    syscalls::Sysno::new(nr as usize)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// An architecture the policy tables cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    pub fn parse(arch: &str) -> Result<Arch, SeccompError> {
        match arch {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(SeccompError::UnknownArch {
                arch: other.to_string(),
            }),
        }
    }

    /// The machine's arch, if the tables cover it.
    pub fn native() -> Result<Arch, SeccompError> {
        Arch::parse(NATIVE_ARCH)
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `seccomp_data.arch` for this arch (`AUDIT_ARCH_*` of linux/audit.h).
    pub(crate) fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
        }
    }

    /// The syscall number of `name` on this arch.
    pub fn number(self, name: &str) -> Option<u32> {
        let id = match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
        };
        u32::try_from(id).ok()
    }

    /// The name of syscall `nr` on this arch (`syscall_NNN` when unknown).
    pub(crate) fn syscall_name(self, nr: u32) -> String {
        let name = match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name()),
            Arch::Aarch64 => syscalls::aarch64::Sysno::new(nr as usize).map(|s| s.name()),
        };
        name.map(str::to_string)
            .unwrap_or_else(|| format!("syscall_{nr}"))
    }

    /// Whether `nr` is a syscall of this arch (and not an x32 number on x86_64).
    pub(crate) fn is_valid_number(self, nr: u32) -> bool {
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::new(nr as usize).is_some(),
            Arch::Aarch64 => syscalls::aarch64::Sysno::new(nr as usize).is_some(),
        }
    }
}

/// What a filter is built for, besides the language and the operator's additions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilterFor {
    pub mode: SeccompMode,
    /// Denied calls become user notifications for the supervisor's listener.
    pub listener: bool,
    /// The supervisor's memory guard, not a memory cgroup, limits the run: the calls whose
    /// memory it cannot see are refused ([`policy::MEMORY_GUARD`]).
    pub memory_guarded: bool,
    /// A zygote's run child ([`policy::EffectivePolicy::for_zygote_child`]).
    pub zygote_child: bool,
}

#[cfg(test)]
impl FilterFor {
    /// A spawn jail's filter without the memory guard.
    pub(crate) fn jail(mode: SeccompMode, listener: bool) -> FilterFor {
        FilterFor {
            mode,
            listener,
            memory_guarded: false,
            zygote_child: false,
        }
    }
}

/// Builds the filter program the jail installs for `language` on this machine.
///
/// - `Enforce` with `listener`: calls outside the policy become user notifications; the
///   supervisor answers `EPERM` and records the name.
/// - `Enforce` without `listener`: calls outside the policy get `EPERM` from the filter.
/// - `Learn` (needs `listener`): the same notifications; the supervisor lets them run.
///
/// `extra_allowed` (numbers on this machine) are allowed without argument checks, even for
/// calls that the default policy checks or answers with `ENOSYS` (allowing `clone3` lets
/// processes fork; that is the operator's choice), except in a zygote's run child.
pub(crate) fn build_program(
    language: &str,
    extra_allowed: &[u32],
    target: FilterFor,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut policy = policy::effective_policy(language, NATIVE_ARCH, extra_allowed)?;
    if target.memory_guarded {
        policy = policy.under_memory_guard()?;
    }
    if target.zygote_child {
        policy = policy.for_zygote_child()?;
    }
    policy.compile(deny_action(target.mode, target.listener)?)
}

/// `program` as it is sent to a zygote's run child, which installs what its helper built.
pub(crate) fn to_wire(program: &[libc::sock_filter]) -> FilterProgram {
    FilterProgram(
        program
            .iter()
            .map(|i| FilterInstruction {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect(),
    )
}

/// The program a run child received (see [`to_wire`]).
pub(crate) fn from_wire(program: &FilterProgram) -> Vec<libc::sock_filter> {
    program
        .0
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

fn deny_action(mode: SeccompMode, listener: bool) -> Result<bpf::DenyAction, SeccompError> {
    match (mode, listener) {
        (SeccompMode::Enforce, true) | (SeccompMode::Learn, true) => Ok(bpf::DenyAction::UserNotif),
        (SeccompMode::Enforce, false) => Ok(bpf::DenyAction::Errno(libc::EPERM as u32)),
        (SeccompMode::Learn, false) => Err(SeccompError::LearnNeedsListener),
    }
}

/// True for syscalls the filter answers with `ENOSYS` on this machine: expected failures
/// that libc handles by falling back (see [`policy::ENOSYS`]), never reported as blocked.
#[cfg(test)]
pub(crate) fn is_expected_enosys(nr: u32) -> bool {
    Arch::native()
        .and_then(policy::enosys_numbers)
        .map(|set| set.contains(&nr))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers_both_ways() {
        let nr = resolve_syscall("syslog").unwrap();
        assert_eq!(syscall_name(nr), "syslog");
        assert_eq!(resolve_syscall(&nr.to_string()).unwrap(), nr);
        assert!(resolve_syscall("no_such_call").is_err());
        assert!(resolve_syscall("999999").is_err());
    }

    #[test]
    fn arch_numbers_differ_per_arch() {
        assert_eq!(Arch::X86_64.number("openat"), Some(257));
        assert_eq!(Arch::Aarch64.number("openat"), Some(56));
        assert_eq!(Arch::Aarch64.number("open"), None);
        assert_eq!(Arch::X86_64.syscall_name(435), "clone3");
        assert_eq!(Arch::Aarch64.syscall_name(100_000), "syscall_100000");
        assert!(Arch::parse("riscv64").is_err());
    }

    #[test]
    fn clone3_is_expected_enosys_and_openat_is_not() {
        assert!(is_expected_enosys(resolve_syscall("clone3").unwrap()));
        assert!(!is_expected_enosys(resolve_syscall("openat").unwrap()));
    }

    #[test]
    fn a_program_crosses_the_wire_unchanged() {
        let program = build_program(
            "python3",
            &[],
            FilterFor {
                zygote_child: true,
                ..FilterFor::jail(SeccompMode::Enforce, true)
            },
        )
        .unwrap();
        let text = serde_json::to_vec(&to_wire(&program)).unwrap();
        let back = from_wire(&serde_json::from_slice(&text).unwrap());
        let fields = |p: &[libc::sock_filter]| -> Vec<_> {
            p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        assert!(program.len() > 10);
        assert_eq!(fields(&back), fields(&program));
    }

    #[test]
    fn learn_mode_needs_a_listener() {
        let err =
            build_program("python3", &[], FilterFor::jail(SeccompMode::Learn, false)).unwrap_err();
        assert!(matches!(err, SeccompError::LearnNeedsListener), "{err}");
        assert!(build_program("python3", &[], FilterFor::jail(SeccompMode::Learn, true)).is_ok());
        assert!(build_program("ruby", &[], FilterFor::jail(SeccompMode::Enforce, false)).is_err());
    }
}
