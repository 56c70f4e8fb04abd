//! The real kernel: each call of [`Kernel`] made as it says, with its `unsafe` here.

use super::{Kernel, Prctl, ResIds};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::Pid;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

/// The kernel of this host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

/// `id` as the raw argument of setresuid/setresgid (`-1`: unchanged).
fn raw_id(id: Option<u32>) -> libc::c_uint {
    id.unwrap_or(libc::c_uint::MAX)
}

impl Kernel for Real {
    fn effective_ids(&self) -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    fn setresuid(&self, [r, e, s]: ResIds) -> nix::Result<()> {
        // SAFETY: setresuid changes only this process's credentials; -1 leaves an id as is.
        let rc = unsafe { libc::setresuid(raw_id(r), raw_id(e), raw_id(s)) };
        Errno::result(rc).map(drop)
    }

    fn setresgid(&self, [r, e, s]: ResIds) -> nix::Result<()> {
        // SAFETY: setresgid changes only this process's credentials; -1 leaves an id as is.
        let rc = unsafe { libc::setresgid(raw_id(r), raw_id(e), raw_id(s)) };
        Errno::result(rc).map(drop)
    }

    fn setgroups(&self, groups: &[u32]) -> nix::Result<()> {
        let groups: Vec<nix::unistd::Gid> = groups
            .iter()
            .map(|&g| nix::unistd::Gid::from_raw(g))
            .collect();
        nix::unistd::setgroups(&groups)
    }

    fn prctl(&self, op: Prctl) -> nix::Result<()> {
        let (option, arg): (libc::c_int, libc::c_ulong) = match op {
            Prctl::SetDumpable(on) => (libc::PR_SET_DUMPABLE, on.into()),
            Prctl::SetParentDeathSignal(signal) => {
                (libc::PR_SET_PDEATHSIG, signal as libc::c_ulong)
            }
            Prctl::SetNoNewPrivs => (libc::PR_SET_NO_NEW_PRIVS, 1),
            Prctl::SetKeepCaps => (libc::PR_SET_KEEPCAPS, 1),
        };
        // SAFETY: each of these prctl options only changes a flag of the calling process and
        // takes no pointer.
        let rc = unsafe { libc::prctl(option, arg, 0, 0, 0) };
        Errno::result(rc).map(drop)
    }

    unsafe fn clone_process(&self, flags: CloneFlags) -> nix::Result<Option<Pid>> {
        // SAFETY: the caller guarantees this process is single-threaded, so a fork-like clone
        // with no new stack is sound: the child continues on a copy of our stack and only
        // this thread existed.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags.bits() | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        match pid {
            0 => Ok(None),
            pid if pid < 0 => Err(Errno::last()),
            pid => Ok(Some(Pid::from_raw(pid as i32))),
        }
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(fd, flags)
    }

    fn kill(&self, pid: Pid, signal: Signal) -> nix::Result<()> {
        nix::sys::signal::kill(pid, signal)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&self) -> nix::Result<()> {
        crate::netns::loopback_up()
    }

    fn dup2(&self, old: RawFd, new: RawFd) -> nix::Result<()> {
        // SAFETY: dup2 only changes this process's descriptor table; `new` is replaced
        // atomically and `old` stays open.
        let rc = unsafe { libc::dup2(old, new) };
        Errno::result(rc).map(drop)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn locked_mount_flags(&self, path: &Path) -> MsFlags {
        let Ok(stat) = statvfs(path) else {
            return MsFlags::MS_NODEV;
        };
        let have = stat.flags();
        let mut flags = MsFlags::empty();
        for (fs_flag, ms_flag) in [
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if have.contains(fs_flag) {
                flags |= ms_flag;
            }
        }
        flags
    }

    fn write_file(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        file.write_all(value.as_bytes())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}
