//! The syscall seam: every privileged call of a run's set-up goes through [`Kernel`].
//!
//! [`Real`] makes the calls (and holds their `unsafe`); the recording double of the unit tests
//! (`sys::record::Recorder`) writes them down in order and can script failures, so that the
//! helper's id maps, the jail's mounts, the cgroup driver and the zygote child's confinement
//! are checked call by call without root. Reading files is not privileged and does not go
//! through the seam.

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

mod real;
#[cfg(test)]
pub(crate) mod record;

pub use real::Real;

/// The kernel every production path uses.
pub static REAL: Real = Real;

/// `prctl(2)` operations hako uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prctl {
    /// `PR_SET_DUMPABLE`.
    SetDumpable(bool),
    /// `PR_SET_PDEATHSIG`.
    SetParentDeathSignal(Signal),
    /// `PR_SET_NO_NEW_PRIVS` (one way).
    SetNoNewPrivs,
    /// `PR_SET_KEEPCAPS` (keep permitted capabilities across the next setuid).
    SetKeepCaps,
}

/// One of the three ids of `setresuid`/`setresgid`; `None` leaves it unchanged.
pub type ResIds = [Option<u32>; 3];

/// The privileged calls of a run's set-up.
pub trait Kernel: Sync + std::fmt::Debug {
    /// The effective uid and gid of this process.
    fn effective_ids(&self) -> (u32, u32);
    fn setresuid(&self, ids: ResIds) -> nix::Result<()>;
    fn setresgid(&self, ids: ResIds) -> nix::Result<()>;
    fn setgroups(&self, groups: &[u32]) -> nix::Result<()>;
    fn prctl(&self, op: Prctl) -> nix::Result<()>;

    /// A fork-like `clone(2)` into new namespaces (`flags`, plus SIGCHLD): `Some(child)` in
    /// the parent, `None` in the child, which continues on a copy of the caller's stack.
    ///
    /// # Safety
    /// The calling process must be single-threaded.
    unsafe fn clone_process(&self, flags: CloneFlags) -> nix::Result<Option<Pid>>;
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()>;
    fn kill(&self, pid: Pid, signal: Signal) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Sets `lo` up in the current network namespace.
    fn loopback_up(&self) -> nix::Result<()>;
    fn dup2(&self, old: RawFd, new: RawFd) -> nix::Result<()>;

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Flags of the mount holding `path` that a user namespace may not clear on remount.
    fn locked_mount_flags(&self, path: &Path) -> MsFlags;

    /// Writes `value` to an existing `/proc` or cgroup file in one `write(2)`.
    fn write_file(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Creates a cgroup directory.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes a cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
}
