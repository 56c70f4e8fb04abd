//! The zygote helper's plumbing: process handles, polling, the zygote's group and priority,
//! the program's memfd.

use super::ZygoteError;
use crate::helper;
use crate::lockdown::CgroupCoverage;
use crate::protocol::ProtocolError;
use crate::spec::{JailSpec, Limits};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// A pidfd (the zygote opens it right after the fork and passes it on): signals reach exactly
/// that process, even after it was reaped and its pid reused.
pub(super) struct ProcessHandle(pub(super) OwnedFd);

impl ProcessHandle {
    /// The process's pid in our namespace; `None` once it has been reaped.
    pub(super) fn pid(&self) -> Option<Pid> {
        // A pidfd's fdinfo is a few short lines: one read takes it whole.
        let file = std::fs::File::open(format!("/proc/self/fdinfo/{}", self.0.as_raw_fd())).ok()?;
        let mut buf = [0u8; 1024];
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut buf, 0).ok()?;
        let info = std::str::from_utf8(&buf[..n]).ok()?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse::<i32>()
            .ok()?;
        (pid > 0).then(|| Pid::from_raw(pid))
    }

    pub(super) fn kill(&self) {
        // SAFETY: pidfd_send_signal only signals the process behind our pidfd.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// Waits up to `ms` for the process to end (its memory and namespaces are released by
    /// then); true when it has.
    pub(super) fn wait_exit(&self, ms: u16) -> bool {
        wait_readable(self.0.as_fd(), ms)
    }
}

/// Waits up to `ms` for `fd` to be readable (or hung up); true when it is, and on a poll
/// error (the caller's next read then reports it).
pub(super) fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => return n > 0,
            Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// A zygote's group: the preload is the operator's and weighs what it weighs, so its memory
/// limit is set per run (what is in use then, plus the run's own limit; see `run`).
pub(super) fn zygote_cgroup(
    spec: &JailSpec,
) -> Result<(Option<crate::cgroup::RunCgroup>, CgroupCoverage), ZygoteError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("zygote-{}-{nanos}", std::process::id());
    let preload_limits = Limits {
        memory_bytes: 0,
        ..spec.limits
    };
    Ok(helper::create_cgroup(
        &name,
        &spec.cgroup_root,
        &preload_limits,
        spec.insecure,
    )?)
}

/// Nice value of a zygote while it imports its preload and calibrates.
pub(super) const PRELOAD_NICE: libc::c_int = 19;

pub(super) fn set_nice(pid: Pid, nice: libc::c_int) {
    // SAFETY: setpriority only changes the nice value of the process `pid` names.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid.as_raw() as libc::id_t, nice) };
}

/// The single child of `parent` (host pids), from /proc.
pub(super) fn only_child(parent: Pid) -> Result<Pid, String> {
    let path = format!("/proc/{parent}/task/{parent}/children");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut pids = text
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok());
    match (pids.next(), pids.next()) {
        (Some(pid), None) => Ok(Pid::from_raw(pid)),
        (None, _) => Err("no child".into()),
        (Some(_), Some(_)) => Err("more than one child".into()),
    }
}

pub(super) fn empty_memfd() -> Result<OwnedFd, ZygoteError> {
    let name = c"hako-program";
    // SAFETY: memfd_create returns a new descriptor or -1; we take ownership of it.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(ZygoteError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes the run's environment and program for the child: u32 length of the environment's
/// JSON, that JSON, then the program. Written at offset 0; the child reads from there.
pub(super) fn write_program(
    program: &OwnedFd,
    env: &[(String, String)],
    code: &[u8],
) -> Result<(), ZygoteError> {
    let env = serde_json::to_vec(env).map_err(ProtocolError::from)?;
    let mut payload = Vec::with_capacity(4 + env.len() + code.len());
    payload.extend_from_slice(&(env.len() as u32).to_le_bytes());
    payload.extend_from_slice(&env);
    payload.extend_from_slice(code);
    let file = std::fs::File::from(program.try_clone().map_err(ZygoteError::Memfd)?);
    std::os::unix::fs::FileExt::write_all_at(&file, &payload, 0).map_err(ZygoteError::Memfd)
}
