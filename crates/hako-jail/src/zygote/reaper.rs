//! Pid 1 of a zygote run's pid namespace: a reaper, so that the run is pid 2 as in spawn
//! mode. A process that is pid 1 of its namespace ignores every signal it sends itself with
//! the default action (`os.kill(os.getpid(), SIGTERM)`, `signal.alarm` without a handler,
//! `abort`), and its orphans stay zombies unless it waits for them. The reaper takes that
//! place and does nothing else.
//!
//! It is cloned from the zygote with `CLONE_VM` (no copy of the interpreter's page tables:
//! a fork would cost as much as the run's own), on a small stack of its own, with every
//! signal blocked from its first instruction. It shares the zygote's descriptor table (no
//! copy, and no descriptor of its own), sets its parent-death signal, ignores SIGCHLD (so
//! the kernel reaps the orphans it inherits) and sleeps until the zygote kills it after
//! reaping the run; its death ends everything left in the namespace. It makes system calls
//! only, none of which can fail: it shares the zygote's memory, including the C library's
//! per-thread state (a failing call would set the zygote thread's errno), and writes none
//! of it.
//!
//! The run cannot reach it: it runs as the zygote's root, so the run's uid may neither
//! signal nor trace it (and signals from inside its namespace never reach a pid 1 that has
//! blocked them).

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::Pid;
use std::os::fd::RawFd;
use std::sync::Mutex;

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
        let zygote = own_pidfd()?;
        let stack = take_stack()?;
        // The clone starts with the caller's signal mask: every signal is blocked before the
        // reaper's first instruction, so no handler of the zygote ever runs in it.
        let mut saved = SigSet::empty();
        let blocked = nix::sys::signal::pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut saved),
        );
        // SAFETY: `reap_orphans` runs on its own stack (the top of a mapping no other live
        // process uses, kept until the reaper is reaped), touches no memory but that stack,
        // and makes system calls through `libc::syscall` only. CLONE_VM shares the zygote's
        // memory, which it never writes; without CLONE_SETTLS its per-thread state is the
        // calling zygote thread's, which only a failing call would touch (errno), and none of
        // its calls can fail with the arguments it passes. CLONE_FILES shares the zygote's
        // descriptor table (no copy; it holds no descriptor of its own), where `zygote` stays
        // open.
        let pid = unsafe {
            libc::clone(
                reap_orphans,
                (stack as *mut u8).add(STACK_BYTES).cast(),
                libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
                zygote as usize as *mut libc::c_void,
            )
        };
        let cloned = Errno::result(pid);
        if blocked.is_ok() {
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved), None);
        }
        match cloned {
            Ok(pid) => Ok(Reaper {
                pid: Pid::from_raw(pid),
                stack,
            }),
            Err(errno) => {
                give_back_stack(stack);
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
        // Returns once pid 1 is gone, which is after every process of its namespace.
        loop {
            match nix::sys::wait::waitpid(self.pid, None) {
                Err(Errno::EINTR) => continue,
                Ok(_) => return give_back_stack(self.stack),
                // ECHILD where SIGCHLD is ignored (the kernel reaped it). The stack is not
                // reused: unmapped, which a killed process that still ran would fault on.
                Err(_) => return unmap_stack(self.stack),
            }
        }
    }
}

/// A pidfd of this process, opened once per process and never closed: the reapers share
/// the descriptor table and look at it when they start.
fn own_pidfd() -> Result<RawFd, ReaperError> {
    static OWN: Mutex<Option<(libc::pid_t, RawFd)>> = Mutex::new(None);
    let mut own = OWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() };
    match *own {
        Some((pid, fd)) if pid == me => Ok(fd),
        inherited => {
            if let Some((_, fd)) = inherited {
                // A forked copy of the parent's: this process has no use for it.
                // SAFETY: the descriptor this process inherited and nothing else owns.
                unsafe { libc::close(fd) };
            }
            // SAFETY: pidfd_open takes a pid and flags; no pointers.
            let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, me, 0) })
                .map_err(ReaperError::PidFd)? as RawFd;
            *own = Some((me, fd));
            Ok(fd)
        }
    }
}

/// Stacks of reapers that have been reaped, for the next ones (no map and unmap per run).
static SPARE_STACKS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn take_stack() -> Result<usize, ReaperError> {
    let spare = SPARE_STACKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .pop();
    if let Some(stack) = spare {
        return Ok(stack);
    }
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
    Ok(stack as usize)
}

/// Keeps the stack of a reaper that is gone (a few at most; the rest are unmapped).
fn give_back_stack(stack: usize) {
    let mut spare = SPARE_STACKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if spare.len() < 4 {
        spare.push(stack);
    } else {
        drop(spare);
        unmap_stack(stack);
    }
}

fn unmap_stack(stack: usize) {
    // SAFETY: a stack mapping made by `take_stack`, whose reaper is gone or killed; nothing
    // else uses it.
    unsafe { libc::munmap(stack as *mut libc::c_void, STACK_BYTES) };
}

/// The reaper's whole life. Every signal is blocked (inherited from the clone). `zygote` is
/// a pidfd of its parent, in the descriptor table they share.
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
    // SAFETY: system calls whose arguments are constants or live on this stack, which write
    // nothing but this stack and cannot fail (so `libc::syscall` sets no errno).
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
