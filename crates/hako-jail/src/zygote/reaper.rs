//! Pid 1 of a zygote run's pid namespace: a reaper, so that the run is pid 2 as in spawn
//! mode. A process that is pid 1 of its namespace ignores every signal it sends itself with
//! the default action (`os.kill(os.getpid(), SIGTERM)`, `signal.alarm` without a handler,
//! `abort`), and its orphans stay zombies unless it waits for them. The reaper takes that
//! place and does nothing else.
//!
//! It is cloned from the zygote with `CLONE_VM` (no copy of the interpreter's page tables:
//! a fork would cost as much as the run's own), on a small stack of its own, with every
//! signal blocked from its first instruction. It sets its parent-death signal, closes its
//! copies of the zygote's descriptors, ignores SIGCHLD (so the kernel reaps the orphans it
//! inherits) and sleeps until the zygote kills it after reaping the run; its death ends
//! everything left in the namespace. It makes raw system calls only: it shares the
//! zygote's memory, including the C library's per-thread state, and writes none of it.
//!
//! The run cannot reach it: it runs as the zygote's root, so the run's uid may neither
//! signal nor trace it (and signals from inside its namespace never reach a pid 1 that has
//! blocked them).

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("open a pidfd of the zygote: {0}")]
    PidFd(#[source] Errno),
    #[error("map the reaper's stack: {0}")]
    Stack(#[source] Errno),
    #[error("start the reaper: {0}")]
    Clone(#[source] Errno),
}

/// The reaper's stack. Its code is one leaf function of raw system calls.
const STACK_BYTES: usize = 64 << 10;

/// A running reaper: pid 1 of a pid namespace. Dropping it kills it, waits until the
/// namespace is empty and frees its stack.
#[derive(Debug)]
pub struct Reaper {
    pid: Pid,
    /// Address of its stack mapping.
    stack: usize,
}

impl Reaper {
    /// Starts the first process of the namespace the caller's next children enter (set up
    /// with `unshare(CLONE_NEWPID)`).
    pub fn start() -> Result<Reaper, ReaperError> {
        // The reaper's copy of it tells whether the zygote died before the reaper's parent-death
        // signal was set.
        // SAFETY: pidfd_open takes a pid and flags; no pointers.
        let zygote =
            Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) })
                .map_err(ReaperError::PidFd)?;
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        let zygote = unsafe { OwnedFd::from_raw_fd(zygote as RawFd) };
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stack == libc::MAP_FAILED {
            return Err(ReaperError::Stack(Errno::last()));
        }
        // The clone starts with the caller's signal mask: every signal is blocked before the
        // reaper's first instruction, so no handler of the zygote ever runs in it.
        let mut saved = SigSet::empty();
        let blocked = nix::sys::signal::pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut saved),
        );
        // SAFETY: `reap_orphans` runs on its own stack (the top of the mapping above, which
        // outlives the reaper: it is unmapped only after the reaper is reaped), touches no
        // memory but that stack, and makes raw system calls only. CLONE_VM shares the
        // zygote's memory, which it never writes; without CLONE_SETTLS it never uses the
        // C library's per-thread state either (no errno: its calls are not checked). Its
        // descriptor table is a copy (no CLONE_FILES), which it empties.
        let pid = unsafe {
            libc::clone(
                reap_orphans,
                stack.cast::<u8>().add(STACK_BYTES).cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                zygote.as_raw_fd() as usize as *mut libc::c_void,
            )
        };
        let cloned = Errno::result(pid);
        if blocked.is_ok() {
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved), None);
        }
        match cloned {
            Ok(pid) => Ok(Reaper {
                pid: Pid::from_raw(pid),
                stack: stack as usize,
            }),
            Err(errno) => {
                // SAFETY: the mapping made above, used by no process.
                unsafe { libc::munmap(stack, STACK_BYTES) };
                Err(ReaperError::Clone(errno))
            }
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        // Returns once pid 1 is gone, which is after every process of its namespace (ECHILD
        // where SIGCHLD is ignored: the kernel reaped it).
        while nix::sys::wait::waitpid(self.pid, None) == Err(Errno::EINTR) {}
        // SAFETY: the reaper that ran on this stack is gone, or killed (a killed process
        // runs no more instructions of its own); nothing else uses the stack.
        unsafe { libc::munmap(self.stack as *mut libc::c_void, STACK_BYTES) };
    }
}

/// The reaper's whole life. Every signal is blocked (inherited from the clone). `zygote` is
/// its copy of a pidfd of its parent.
extern "C" fn reap_orphans(zygote: *mut libc::c_void) -> libc::c_int {
    // Integer arguments of the variadic `syscall` are passed as full registers.
    const NONE: libc::c_long = 0;
    let ignore = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let mut parent = libc::pollfd {
        fd: zygote as usize as libc::c_int,
        events: libc::POLLIN,
        revents: 0,
    };
    // The kernel writes the time left back into it.
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: raw system calls whose arguments are constants or live on this stack, and
    // which write nothing but this stack.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG as libc::c_long,
            libc::SIGKILL as libc::c_long,
        );
        // A zygote that died before the line above sends no signal: its pidfd says so.
        let parent_gone = libc::syscall(
            libc::SYS_ppoll,
            &mut parent as *mut libc::pollfd,
            1 as libc::c_long,
            &mut now as *mut libc::timespec,
            std::ptr::null::<libc::sigset_t>(),
            NONE,
        ) != 0;
        if parent_gone {
            libc::syscall(libc::SYS_exit, NONE);
        }
        // Holds none of the zygote's descriptors (no run's pipe end stays open through it).
        libc::syscall(
            libc::SYS_close_range,
            NONE,
            libc::c_uint::MAX as libc::c_long,
            NONE,
        );
        // The kernel reaps what exits below it: no zombie holds a pid of the run's limit.
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGCHLD as libc::c_long,
            &ignore as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            std::mem::size_of::<u64>() as libc::c_long,
        );
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_NAME as libc::c_long,
            c"hako-init".as_ptr(),
        );
        loop {
            // No descriptors and no timeout: sleeps until a signal, and every signal but
            // SIGKILL is blocked.
            libc::syscall(
                libc::SYS_ppoll,
                std::ptr::null_mut::<libc::pollfd>(),
                NONE,
                std::ptr::null_mut::<libc::timespec>(),
                std::ptr::null::<libc::sigset_t>(),
                NONE,
            );
        }
    }
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout), for the raw call.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}
