//! Seccomp: the per-language syscall policy (as data), its BPF compiler and the
//! user-notification listener that names blocked calls.

use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unknown syscall {0:?} for {1}; use a name such as `mbind` or a number for this machine")]
    UnknownSyscall(String, &'static str),
}

/// The machine's architecture name, as used in policy tables and messages.
pub const NATIVE_ARCH: &str = std::env::consts::ARCH;

/// Resolves a syscall given by name (`mbind`) or number (`237`) for the machine's arch.
pub fn resolve_syscall(name_or_number: &str) -> Result<u32, SeccompError> {
    let text = name_or_number.trim();
    let unknown = || SeccompError::UnknownSyscall(text.to_string(), NATIVE_ARCH);
    if let Ok(nr) = text.parse::<u32>() {
        return syscalls::Sysno::new(nr as usize).map(|s| s.id() as u32).ok_or_else(unknown);
    }
    syscalls::Sysno::from_str(text).map(|s| s.id() as u32).map_err(|_| unknown())
}

/// The name of a syscall number on the machine's arch (`syscall_NNN` when unknown).
pub fn syscall_name(nr: u32) -> String {
    syscalls::Sysno::new(nr as usize)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
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
}
