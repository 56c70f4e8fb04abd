//! The zygote's loop, in the library rather than in Python: it forks run children and
//! worker zygotes on its helper's orders, reaps them and reports their ends. Between runs
//! the interpreter executes no bytecode, so it writes (and copies after each fork) none of
//! the pages it shares with its children; each child is confined here before Python runs
//! again in it.
//!
//! Orders arrive on the zygote's control socket (see `zygote.py` for the protocol): FORK
//! (run child), WORKER (worker zygote, from a preloaded parent only). Answers: FORKED,
//! ZYGOTE_READY (a new worker), ERROR; EXITED goes to the run child's own control socket.

use super::child::{confine_child, end_pid_namespace, prepare_fork};
use hako_wire::control::{self, ControlError, ExitStatus, Message, Received};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Why the loop cannot run at all (the zygote then exits).
#[derive(Debug, thiserror::Error)]
pub enum ForkerError {
    #[error("the interpreter does not export {0}")]
    MissingHook(&'static str),
    #[error("wait for orders: {0}")]
    Poll(#[source] Errno),
}

/// CPython's own steps around `fork` (what `os.fork` does), found in the running
/// interpreter.
struct PythonFork {
    before: unsafe extern "C" fn(),
    after_in_parent: unsafe extern "C" fn(),
    after_in_child: unsafe extern "C" fn(),
}

impl PythonFork {
    fn find() -> Result<PythonFork, ForkerError> {
        fn hook(name: &'static std::ffi::CStr) -> Result<unsafe extern "C" fn(), ForkerError> {
            // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the loaded objects.
            let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if address.is_null() {
                return Err(ForkerError::MissingHook(name.to_str().unwrap_or("?")));
            }
            // SAFETY: CPython declares these three as `void f(void)` (Include/intrcheck.h).
            Ok(
                unsafe {
                    std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(address)
                },
            )
        }
        Ok(PythonFork {
            before: hook(c"PyOS_BeforeFork")?,
            after_in_parent: hook(c"PyOS_AfterFork_Parent")?,
            after_in_child: hook(c"PyOS_AfterFork_Child")?,
        })
    }

    /// `fork()` as `os.fork` does it. The caller holds the GIL.
    fn fork(&self) -> Result<Option<Pid>, Errno> {
        // SAFETY: the calling thread holds the GIL (the zygote calls the library through
        // ctypes.PyDLL) and the interpreter has no other thread.
        unsafe { (self.before)() };
        // SAFETY: a single-threaded process; the child only makes system calls and calls the
        // interpreter's own after-fork step before anything else.
        let pid = unsafe { libc::fork() };
        let errno = Errno::last();
        if pid == 0 {
            // SAFETY: as above, in the child.
            unsafe { (self.after_in_child)() };
            return Ok(None);
        }
        // SAFETY: as above, in the parent.
        unsafe { (self.after_in_parent)() };
        if pid < 0 {
            return Err(errno);
        }
        Ok(Some(Pid::from_raw(pid)))
    }
}

/// A run child forked and not yet reaped.
struct RunChild {
    pid: Pid,
    pidfd: OwnedFd,
    /// Its control socket: its end is reported there.
    control: OwnedFd,
    reaper: Pid,
}

/// What a forked run child returns to Python.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildStart {
    /// Confined and given its run: the descriptor of its program.
    Program(RawFd),
    /// Its confinement failed, and its supervisor was told.
    Failed,
}

/// Whether this interpreter lets [`serve`] fork (it exports CPython's fork steps); the
/// zygote asks before it says it is ready.
pub fn can_serve() -> Result<(), ForkerError> {
    PythonFork::find().map(|_| ())
}

/// Serves orders on `control` until it closes (then the process exits). Returns only in a
/// forked run child.
pub fn serve(control: RawFd) -> ChildStart {
    let python = match PythonFork::find() {
        Ok(python) => python,
        Err(err) => {
            eprintln!("hako zygote: {err}");
            // SAFETY: ends this process without running Python's or Rust's exit handlers.
            unsafe { libc::_exit(70) };
        }
    };
    // Read once here rather than by every run child: a run child stays in this process's
    // user namespace, so its bounding set is this one until it drops it.
    let bounding_set = crate::lockdown::bounding_set();
    let mut children: Vec<RunChild> = Vec::new();
    loop {
        match next_event(control, &children) {
            Ok(Event::Ended(at)) => report_end(children.swap_remove(at)),
            Ok(Event::Order) => {
                // SAFETY: `control` stays open for the zygote's life.
                let socket = unsafe { BorrowedFd::borrow_raw(control) };
                match control::receive(socket) {
                    Ok(Received::Message(Message::Fork(params), fds)) => {
                        if let Some(start) =
                            fork_run(&python, socket, &params, fds, &mut children, bounding_set)
                        {
                            return start;
                        }
                    }
                    Ok(Received::Message(Message::Worker, mut fds))
                        if fds.len() == 1 && children.is_empty() =>
                    {
                        fork_worker(&python, control, fds.remove(0));
                    }
                    Ok(Received::Message(..))
                    | Err(ControlError::Malformed { .. })
                    | Err(ControlError::Unknown(_)) => {
                        let _ =
                            control::send(socket, &Message::Error("bad fork request".into()), &[]);
                    }
                    Ok(Received::Nothing) => {}
                    // The helper is gone: so is this zygote (its children die with their
                    // pid namespaces' reapers).
                    Ok(Received::Closed) | Err(_) => {
                        // SAFETY: as above.
                        unsafe { libc::_exit(0) }
                    }
                }
            }
            Err(err) => {
                eprintln!("hako zygote: {err}");
                // SAFETY: as above.
                unsafe { libc::_exit(70) }
            }
        }
    }
}

enum Event {
    Order,
    /// The child at this index has ended.
    Ended(usize),
}

/// Waits for a run child's end or the next order (a child's end first).
fn next_event(control: RawFd, children: &[RunChild]) -> Result<Event, ForkerError> {
    loop {
        // SAFETY: `control` stays open for the zygote's life.
        let socket = unsafe { BorrowedFd::borrow_raw(control) };
        let mut fds: Vec<PollFd<'_>> = children
            .iter()
            .map(|c| PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(socket, PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(ForkerError::Poll(err)),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if let Some(at) = fds[..children.len()].iter().position(ready) {
            return Ok(Event::Ended(at));
        }
        if fds.last().is_some_and(ready) {
            return Ok(Event::Order);
        }
    }
}

/// Forks a run child for FORK (`fds`: its control socket, stdout, stderr, program memfd).
/// In the parent: answers FORKED (or ERROR) and returns None. In the child: returns its start.
/// `bounding_set` is this zygote's.
fn fork_run(
    python: &PythonFork,
    socket: BorrowedFd<'_>,
    params: &[u8],
    fds: Vec<OwnedFd>,
    children: &mut Vec<RunChild>,
    bounding_set: Option<u64>,
) -> Option<ChildStart> {
    let refuse = |why: String| {
        let _ = control::send(socket, &Message::Error(why), &[]);
    };
    let Ok([run_control, stdout, stderr, program]) = <[OwnedFd; 4]>::try_from(fds) else {
        refuse("bad fork request".into());
        return None;
    };
    // The child is pid 2 of a fresh pid namespace; pid 1 is a reaper, ended after the child.
    let reaper = match prepare_fork() {
        Ok(reaper) => reaper,
        Err(err) => {
            refuse(format!("cannot prepare a pid namespace: {err}"));
            return None;
        }
    };
    let pid = match python.fork() {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            // Confinement closes every descriptor but these: the parent's others must not be
            // closed again when this process drops them.
            std::mem::forget(std::mem::take(children));
            let fds = [
                into_raw(run_control),
                into_raw(stdout),
                into_raw(stderr),
                program.as_raw_fd(),
            ];
            let start = confine_child(params, fds, bounding_set);
            return Some(match start {
                Ok(()) => ChildStart::Program(into_raw(program)),
                Err(_) => {
                    std::mem::forget(program);
                    ChildStart::Failed
                }
            });
        }
        Err(err) => {
            // E.g. the run in progress holds the group's last pid.
            end_pid_namespace(reaper.as_raw());
            refuse(format!("cannot fork: {err}"));
            return None;
        }
    };
    // Prepared at the lowest priority (the helper restores it when a run waits for this
    // child), so preparing never slows the run in progress.
    // SAFETY: setpriority takes plain integers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid.as_raw() as libc::id_t, 19) };
    let (pidfd, reaper_fd) = match (pidfd_open(pid), pidfd_open(reaper)) {
        (Ok(pidfd), Ok(reaper_fd)) => (pidfd, reaper_fd),
        (Err(err), _) | (_, Err(err)) => {
            let _ = kill(pid, Signal::SIGKILL);
            reap(pid, reaper, run_control.as_fd());
            refuse(format!("cannot open a pidfd of the child: {err}"));
            return None;
        }
    };
    // A helper that is gone ends the zygote at its next order.
    let _ = control::send(
        socket,
        &Message::Forked,
        &[pidfd.as_fd(), reaper_fd.as_fd()],
    );
    children.push(RunChild {
        pid,
        pidfd,
        control: run_control,
        reaper,
    });
    None
}

/// Reaps an ended run child and reports its end.
fn report_end(child: RunChild) {
    reap(child.pid, child.reaper, child.control.as_fd());
}

/// Reaps the run child `pid`: its reaper (and with it whatever the run left in its pid
/// namespace) goes first, then EXITED with its status and usage on its control socket.
fn reap(pid: Pid, reaper: Pid, control: BorrowedFd<'_>) {
    let _ = kill(reaper, Signal::SIGKILL);
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes into `status` and `usage`, which outlive the call.
        let reaped = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut usage) };
        if reaped >= 0 {
            break;
        }
        let errno = Errno::last();
        if errno != Errno::EINTR {
            // No status to report, and none may be made up: the helper replaces a zygote
            // that is gone.
            eprintln!("hako zygote: cannot reap run child {pid}: {errno}");
            // SAFETY: as in `serve`.
            unsafe { libc::_exit(70) };
        }
    }
    end_pid_namespace(reaper.as_raw());
    let (code, signal) = if libc::WIFSIGNALED(status) {
        (0, libc::WTERMSIG(status))
    } else {
        (libc::WEXITSTATUS(status), 0)
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    let exit = ExitStatus {
        code,
        signal,
        cpu_ms: (micros(usage.ru_utime) + micros(usage.ru_stime)) / 1000,
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    };
    let _ = control::send(control, &Message::Exited(exit), &[]);
}

/// Forks a worker zygote that serves on `socket` (WORKER, from a preloaded parent). The
/// parent's workers are reaped by the kernel; a worker reaps its run children itself.
fn fork_worker(python: &PythonFork, control: RawFd, socket: OwnedFd) {
    // SAFETY: no handler is involved, only the kernel's default or ignore disposition.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) };
    match python.fork() {
        Ok(Some(_)) | Err(_) => {}
        Ok(None) => {
            // SAFETY: as above.
            let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
            // Its own socket replaces the parent's, at the same number.
            // SAFETY: dup2 onto the zygote's control number, which this process owns.
            if unsafe { libc::dup2(socket.as_raw_fd(), control) } < 0 {
                // SAFETY: as in `serve`.
                unsafe { libc::_exit(70) };
            }
            drop(socket);
            // SAFETY: `control` is open (just duplicated onto).
            let ours = unsafe { BorrowedFd::borrow_raw(control) };
            // SAFETY: getpid has no arguments.
            let me = Pid::from_raw(unsafe { libc::getpid() });
            let ready = pidfd_open(me).map_err(|_| ()).and_then(|pidfd| {
                control::send(ours, &Message::ZygoteReady(Vec::new()), &[pidfd.as_fd()])
                    .map_err(|_| ())
            });
            if ready.is_err() {
                // SAFETY: as in `serve`.
                unsafe { libc::_exit(70) };
            }
        }
    }
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags; the descriptor it returns is ours.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn into_raw(fd: OwnedFd) -> RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}
