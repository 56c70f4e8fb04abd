//! The last confinement steps of every run, shared by spawn mode (right before the
//! interpreter is exec'd) and the zygote's run children (right before the request is read):
//! descriptor cleanup, rlimits, no_new_privs, Landlock, dropping every capability, and
//! seccomp, whose listener is handed to the supervisor (with, where the memory guard limits
//! the run, a sock_diag socket of the run's network namespace).

use crate::seccomp::notify;
use crate::spec::Limits;
use crate::sys::{Kernel, Prctl};
use hako_wire::control::{self, Message};
use hako_wire::Language;
use nix::errno::Errno;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LockDownError {
    #[error("set rlimit {name}: {source}")]
    Rlimit { name: &'static str, source: Errno },
    #[error("set no_new_privs: {0}")]
    NoNewPrivs(Errno),
    #[error("landlock: {0}")]
    Landlock(#[source] crate::landlock::LandlockError),
    #[error("drop capabilities: {0}")]
    Caps(#[source] caps::errors::CapsError),
    #[error("install seccomp: {0}")]
    Seccomp(#[source] crate::seccomp::SeccompError),
    #[error("hand the seccomp listener to the supervisor: {0}")]
    Listener(#[source] hako_wire::control::ControlError),
    #[error("clear the supplementary groups: {0}")]
    Groups(#[source] Errno),
    #[error("set the gid: {0}")]
    Gid(#[source] Errno),
    #[error("set the uid: {0}")]
    Uid(#[source] Errno),
    #[error("keep the capabilities across the uid change: {0}")]
    KeepCaps(#[source] caps::errors::CapsError),
}

pub use hako_wire::spec::CgroupCoverage;

pub struct LockDown<'a> {
    pub language: Language,
    pub limits: &'a Limits,
    pub coverage: CgroupCoverage,
    pub seccomp: &'a [libc::sock_filter],
    pub use_listener: bool,
    pub insecure: bool,
    /// The process's bounding set where the caller already knows it: a zygote reads its own
    /// once, and its run children, which stay in its user namespace, hold the same. None
    /// reads it here.
    pub bounding_set: Option<u64>,
}

/// Applies the final layers to the calling (single-threaded) process. Descriptors other
/// than 0-2, `keep` and `control` are closed. On success the process has no capabilities,
/// no_new_privs, Landlock and seccomp, and the supervisor holds the seccomp listener.
pub fn lock_down(plan: &LockDown<'_>, control: RawFd, keep: &[RawFd]) -> Result<(), LockDownError> {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.push(control);
    close_other_fds(&keep);
    // Where the memory guard limits the run, it counts the unix sockets of the run's network
    // namespace through a sock_diag socket made here, in that namespace (see
    // `crate::helper::unix_diag`). Without one the guard says so and counts none.
    let unix_diag =
        crate::helper::memory_guard::guards(plan.coverage.memory, plan.limits.memory_bytes)
            .then(crate::helper::unix_diag::socket_here)
            .and_then(Result::ok);
    set_rlimits(plan)?;
    crate::sys::REAL
        .prctl(Prctl::SetNoNewPrivs)
        .map_err(LockDownError::NoNewPrivs)?;
    let read_only = [PathBuf::from("/")];
    let writable = [PathBuf::from("/tmp"), PathBuf::from("/dev")];
    if let Err(err) = crate::landlock::restrict(&read_only, &writable) {
        if plan.insecure {
            eprintln!("hako: landlock not applied: {err}");
        } else if crate::landlock::abi_version().is_some() {
            return Err(LockDownError::Landlock(err));
        }
    }
    drop_caps(plan.bounding_set.or_else(bounding_set))?;
    let listener =
        notify::install(plan.seccomp, plan.use_listener).map_err(LockDownError::Seccomp)?;
    // From here on only calls the policy allows. READY tells the supervisor the process is
    // confined; the seccomp listener and the sock_diag socket (if any) ride along, and this
    // process closes its copies.
    // SAFETY: `control` is open for the duration of this call (the caller owns it).
    let control = unsafe { BorrowedFd::borrow_raw(control) };
    let fds: Vec<BorrowedFd<'_>> = listener
        .iter()
        .chain(unix_diag.iter())
        .map(|fd| fd.as_fd())
        .collect();
    control::send(control, &Message::Ready, &fds).map_err(LockDownError::Listener)?;
    Ok(())
}

/// Switches every uid and gid of this process to `uid` and `gid`, keeping the permitted
/// capabilities effective until [`lock_down`] drops them. Supplementary groups are cleared;
/// with `groups_required` a failure to clear them is an error, otherwise it is ignored (an
/// unprivileged user namespace denies setgroups, and there are no groups to clear then).
pub fn switch_identity(
    kernel: &dyn Kernel,
    uid: u32,
    gid: u32,
    groups_required: bool,
) -> Result<(), LockDownError> {
    match kernel.setgroups(&[]) {
        Err(e) if groups_required => return Err(LockDownError::Groups(e)),
        _ => {}
    }
    kernel
        .setresgid([Some(gid); 3])
        .map_err(LockDownError::Gid)?;
    // Keep the permitted capabilities across the setuid below.
    let _ = kernel.prctl(Prctl::SetKeepCaps);
    kernel
        .setresuid([Some(uid); 3])
        .map_err(LockDownError::Uid)?;
    let permitted = caps::read(None, caps::CapSet::Permitted).map_err(LockDownError::KeepCaps)?;
    caps::set(None, caps::CapSet::Effective, &permitted).map_err(LockDownError::KeepCaps)
}

pub fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    let mut next: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > next {
            // SAFETY: close_range closes descriptors of this process only.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0) };
        }
        next = next.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

fn set_rlimits(plan: &LockDown<'_>) -> Result<(), LockDownError> {
    use nix::sys::resource::{setrlimit, Resource};
    let l = plan.limits;
    let mut limits = vec![
        // Never above EXEC_FD: a run must not be able to put its own file there and exec it.
        (
            "NOFILE",
            Resource::RLIMIT_NOFILE,
            l.nofile.min(crate::seccomp::policy::EXEC_FD as u64),
        ),
        ("FSIZE", Resource::RLIMIT_FSIZE, l.tmp_bytes),
        ("CORE", Resource::RLIMIT_CORE, 0),
        ("STACK", Resource::RLIMIT_STACK, 8 << 20),
        // Queued signals count per user up the user namespaces: keep a run's share small.
        ("SIGPENDING", Resource::RLIMIT_SIGPENDING, 1024),
    ];
    let fallback = crate::cgroup::rlimit_fallback(l, plan.coverage, plan.language);
    if let Some(pids) = fallback.processes {
        limits.push(("NPROC", Resource::RLIMIT_NPROC, pids));
    }
    if let Some(bytes) = fallback.address_space {
        limits.push(("AS", Resource::RLIMIT_AS, bytes));
    }
    for (name, resource, value) in limits {
        setrlimit(resource, value, value)
            .map_err(|source| LockDownError::Rlimit { name, source })?;
    }
    Ok(())
}

pub fn drop_all_caps() -> Result<(), LockDownError> {
    drop_caps(bounding_set())
}

/// Drops every capability; `bounding` is this process's bounding set (None: unknown).
fn drop_caps(bounding: Option<u64>) -> Result<(), LockDownError> {
    let err = LockDownError::Caps;
    // One system call per capability: only those still in the bounding set (a zygote's
    // holds five), all of them where the set is unknown.
    for cap in caps::all() {
        if bounding.is_none_or(|set| set & cap.bitmask() != 0) {
            caps::drop(None, caps::CapSet::Bounding, cap).map_err(err)?;
        }
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(err)?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(err)?;
    caps::clear(None, caps::CapSet::Effective).map_err(err)?;
    caps::clear(None, caps::CapSet::Permitted).map_err(err)?;
    Ok(())
}

/// This process's bounding set (`CapBnd` of `/proc/self/status`), if readable.
pub(crate) fn bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_bounding_set(&status)
}

fn status_bounding_set(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))?
        .trim();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounding_set_is_read_from_the_status_file() {
        let status =
            "Name:\tpython3\nCapPrm:\t0000000000000000\nCapBnd:\t00000000002011c0\nCapAmb:\t0\n";
        assert_eq!(status_bounding_set(status), Some(0x2011c0));
        for bad in [
            "CapBnd:\t\n",
            "CapBnd:\t-1\n",
            "CapBnd:\tzz\n",
            "Name:\tx\n",
        ] {
            assert_eq!(status_bounding_set(bad), None, "{bad:?}");
        }
        assert!(bounding_set().is_some());
    }
}
