//! Inside the zygote: the run child's side, called through the library the zygote loaded
//! at start (`libhako_zygote.so`). Everything here runs in the zygote or in a freshly forked
//! run child, before any request data is read.

use super::reaper::Reaper;
use crate::lockdown::{self, LockDown, LockDownError};
use crate::seccomp;
use crate::spec::{RUN_GID, RUN_UID, ZYGOTE_RUN_IDS};
use crate::sys::Kernel;
use hako_wire::control::{self, Message, Received};
use hako_wire::zygote::ChildParams;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("bad run parameters: {0}")]
    Params(#[source] serde_json::Error),
    #[error("wait for the supervisor: {0}")]
    Sync(Errno),
    #[error("new {what} namespace: {source}")]
    Namespace { what: &'static str, source: Errno },
    #[error("mount {what}: {source}")]
    Mount { what: &'static str, source: Errno },
    #[error("switch to the run uid: {0}")]
    Identity(#[source] LockDownError),
    #[error("open its own page map: {0}")]
    PageMap(#[source] std::io::Error),
    #[error("redirect standard streams: {0}")]
    Stdio(Errno),
    #[error("start a session of its own: {0}")]
    Session(#[source] Errno),
    #[error(transparent)]
    MaskProc(#[from] crate::procmask::MaskError),
    #[error("{0}")]
    LockDown(#[from] LockDownError),
    #[error("{0}")]
    Scratch(#[from] crate::mounts::MountError),
    #[error("{0}")]
    Egress(#[from] crate::netns::NetnsError),
    #[error("{0}")]
    Reaper(#[from] super::reaper::ReaperError),
}

/// Called in the zygote right before it forks: the next child enters a fresh pid namespace
/// whose pid 1 is a [`Reaper`], so the run child is pid 2 (as in spawn mode). Returns the
/// reaper's pid; [`end_pid_namespace`] ends it once the child is reaped.
pub fn prepare_fork() -> Result<Pid, ChildError> {
    let own = std::fs::File::open("/proc/self/ns/pid").map_err(|e| ChildError::Namespace {
        what: "pid",
        source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    // Reset "pid namespace for children" to our own, then ask for a new one.
    crate::sys::REAL
        .setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|source| ChildError::Namespace {
            what: "pid",
            source,
        })?;
    crate::sys::REAL
        .unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|source| ChildError::Namespace {
            what: "pid",
            source,
        })?;
    let reaper = Reaper::start()?;
    let pid = reaper.pid();
    reapers().push(reaper);
    Ok(pid)
}

/// Kills the reaper `pid` (from [`prepare_fork`]) and waits until its namespace is empty.
/// Unknown pids are ignored.
pub fn end_pid_namespace(pid: i32) {
    let mut reapers = reapers();
    if let Some(at) = reapers.iter().position(|r| r.pid().as_raw() == pid) {
        drop(reapers.swap_remove(at));
    }
}

/// The zygote's running reapers (one per child it has forked and not yet reaped).
fn reapers() -> std::sync::MutexGuard<'static, Vec<Reaper>> {
    static REAPERS: std::sync::Mutex<Vec<Reaper>> = std::sync::Mutex::new(Vec::new());
    REAPERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Confines a freshly forked run child, says READY and waits for RUN. Descriptors other
/// than stdio and `keep` are closed, and `run_ctl` too once this returns (also on error,
/// after the message went to the supervisor). `bounding_set` is the zygote's (see
/// [`LockDown::bounding_set`]).
pub fn confine_child(
    params: &[u8],
    [run_ctl, stdout, stderr, keep]: [RawFd; 4],
    bounding_set: Option<u64>,
) -> Result<(), ChildError> {
    let result = confine_child_inner(params, [run_ctl, stdout, stderr, keep], bounding_set);
    if let Err(err) = &result {
        // SAFETY: run_ctl is open for the duration of this call.
        let control = unsafe { BorrowedFd::borrow_raw(run_ctl) };
        let _ = control::send(control, &Message::Error(err.to_string()), &[]);
    }
    // The program never holds a channel to its supervisor: its end is reported by the zygote
    // after wait4, and nothing the program could send is ever read.
    // SAFETY: run_ctl is this process's descriptor; the caller never uses it after this call.
    unsafe { libc::close(run_ctl) };
    result
}

fn confine_child_inner(
    params: &[u8],
    [run_ctl, stdout, stderr, keep]: [RawFd; 4],
    bounding_set: Option<u64>,
) -> Result<(), ChildError> {
    // Preparing ahead of time must not slow the run in progress: the zygote forked this
    // child at the lowest priority, which the helper restores when a run waits for it.
    let params: ChildParams = serde_json::from_slice(params).map_err(ChildError::Params)?;
    // Its own session and process group (the zygote's group holds the next tenant), and its
    // own uid: `kill(0, ...)` and `kill(-1, ...)` reach no other run.
    nix::unistd::setsid().map_err(ChildError::Session)?;
    enter_run_namespaces(&crate::sys::REAL, &params, Path::new("/"), stdout, stderr)?;
    // The egress listener a proxy-mode run gets, made in its own network namespace before
    // its program exists (see `crate::netns`); the helper closes it for other runs.
    // SAFETY: run_ctl is open for the duration of this call.
    crate::netns::hand_over_listener(unsafe { BorrowedFd::borrow_raw(run_ctl) })?;
    // Compiled by the helper, as for a spawned jail: nothing to build here.
    let program = seccomp::from_wire(&params.seccomp_filter);
    lockdown::lock_down(
        &LockDown {
            language: params.language,
            limits: &params.limits,
            coverage: params.coverage,
            seccomp: &program,
            use_listener: params.use_listener,
            insecure: params.insecure,
            bounding_set,
        },
        run_ctl,
        &[&[keep][..], &super::written::page_map_fds()].concat(),
    )?;
    // Confined. Until the run comes, take the faults it would take; then wait for it. The
    // caller then reads the program.
    // SAFETY: run_ctl is open for the duration of this call.
    let control = unsafe { BorrowedFd::borrow_raw(run_ctl) };
    copy_hot_pages_until(&params.hot_pages, control);
    loop {
        return match control::receive(control) {
            Ok(Received::Message(Message::Run, _)) => Ok(()),
            Ok(Received::Nothing) => continue,
            _ => Err(ChildError::Sync(Errno::EPIPE)),
        };
    }
}

/// The run child's own namespaces, scratch mounts, /proc, identity and standard streams, in
/// this order; `root` is `/` (a test's temp dir stands in for it).
fn enter_run_namespaces(
    kernel: &dyn Kernel,
    params: &ChildParams,
    root: &Path,
    stdout: RawFd,
    stderr: RawFd,
) -> Result<(), ChildError> {
    let slot = params.uid_slot % ZYGOTE_RUN_IDS;
    let (uid, gid) = (RUN_UID + slot, RUN_GID + slot);
    use nix::sched::CloneFlags;
    // Its own network namespace too: no socket (not even TIME_WAIT) of an earlier run of
    // this zygote is visible. No user namespace of its own: its bounding set stays the
    // zygote's (see `LockDown::bounding_set`).
    kernel
        .unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWNET,
        )
        .map_err(|source| ChildError::Namespace {
            what: "mount/ipc/uts/net",
            source,
        })?;
    kernel
        .loopback_up()
        .map_err(|source| ChildError::Namespace {
            what: "net (loopback)",
            source,
        })?;
    crate::mounts::mount_scratch(kernel, root, params.limits.tmp_bytes, uid, gid)?;
    let proc = root.join("proc");
    crate::mounts::mount_proc(kernel, &proc).map_err(|source| ChildError::Mount {
        what: "/proc",
        source,
    })?;
    crate::procmask::mask(kernel, &proc, Path::new("/dev/null"))?;
    let _ = kernel.sethostname("hako");
    // The zygote is exempt from the OOM killer; a run child must not be.
    let _ = kernel.write_file(Path::new("/proc/self/oom_score_adj"), "0");
    if params.reads_own_page_map {
        // hako's calibration run only: its page map (mode 0400) is opened while it is still
        // its own. The new uid makes the process undumpable, which gives its /proc files to
        // root; the open descriptors stay readable (see `written`).
        super::written::open_page_map(&proc).map_err(ChildError::PageMap)?;
    }
    lockdown::switch_identity(kernel, uid, gid, true).map_err(ChildError::Identity)?;
    // As the run's user: its home and cache links are its own without CAP_CHOWN.
    crate::mounts::fill_scratch(kernel, root, None)?;
    kernel
        .chdir(&root.join("tmp"))
        .map_err(|source| ChildError::Mount {
            what: "cwd /tmp",
            source,
        })?;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(ChildError::Stdio)?;
    for (fd, target) in [(devnull, 0), (stdout, 1), (stderr, 2)] {
        kernel.dup2(fd, target).map_err(ChildError::Stdio)?;
    }
    Ok(())
}

/// Copies (breaks copy-on-write sharing of) the pages most runs write, so the run does not
/// take those faults on the clock, until `control` has something to read: a run that arrives
/// early starts at once and faults on the rest. Ranges that are gone or not writable are
/// skipped.
fn copy_hot_pages_until(ranges: &[(u64, u64)], control: BorrowedFd<'_>) {
    let mut since_look = HOT_BATCH_BYTES;
    for (start, len) in hot_page_pieces(ranges) {
        if since_look >= HOT_BATCH_BYTES {
            if super::wait_readable(control, 0) {
                return;
            }
            since_look = 0;
        }
        since_look += len;
        // SAFETY: MADV_POPULATE_WRITE only faults pages in as if written with their current
        // contents; it never changes memory contents and fails (EFAULT/EINVAL/ENOMEM) on ranges
        // that are unmapped or not writable.
        unsafe {
            libc::madvise(
                start as usize as *mut libc::c_void,
                len as usize,
                MADV_POPULATE_WRITE,
            )
        };
    }
}

const MADV_POPULATE_WRITE: libc::c_int = 23;

/// How much is copied between two looks at the control socket (about 0.1 ms of work).
const HOT_BATCH_BYTES: u64 = 64 << 10;

/// `ranges` with every range longer than [`HOT_BATCH_BYTES`] cut into pieces of at most that.
fn hot_page_pieces(ranges: &[(u64, u64)]) -> impl Iterator<Item = (u64, u64)> + '_ {
    ranges.iter().flat_map(|&(start, len)| {
        (0..len.div_ceil(HOT_BATCH_BYTES)).map(move |i| {
            let offset = i * HOT_BATCH_BYTES;
            (start + offset, (len - offset).min(HOT_BATCH_BYTES))
        })
    })
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
