//! The jail helper (`hako __jail`): a single-threaded process that builds one run's sandbox,
//! supervises it, and reports a [`JailOutcome`].
//!
//! Process tree of one run:
//! ```text
//! helper (host namespaces, privileged)      supervises: output, timeout, seccomp notifications
//!  └─ init (pid 1 of the run's namespaces)  builds the root, then only reaps
//!      └─ program (pid 2)                   rlimits, no_new_privs, Landlock, caps dropped,
//!                                           seccomp, then execs the interpreter
//! ```
//! When init exits, the kernel kills everything else in the run's pid namespace.

use crate::cgroup::{CgroupLimits, Cgroups, RunCgroup};
use crate::ids::IdLease;
use crate::lockdown::{self, CgroupCoverage, LockDown, LockDownError};
use crate::mounts::{self, RootPlan};
use crate::protocol;
use crate::seccomp::{self, notify};
use crate::spec::{
    BlockedSyscall, JailOutcome, JailSpec, Limits, NetworkMode, SeccompMode, CODE_FD, JAIL_GID,
    JAIL_UID, RUN_GID, RUN_UID, ZYGOTE_FD, ZYGOTE_RUN_IDS,
};
use hako_wire::control::{self, ExitStatus, Message, Received, Receiver};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, read, Pid};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("read the run request: {0}")]
    Request(#[from] protocol::ProtocolError),
    #[error("create {what}: {source}")]
    Channel { what: &'static str, source: Errno },
    #[error("create the run's namespaces (clone): {0}; check `hako doctor`")]
    Clone(Errno),
    #[error("write {path}: {source}")]
    IdMap { path: PathBuf, source: io::Error },
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("build the seccomp policy: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("jail setup failed: {0}")]
    Setup(String),
    #[error("supervise the run: {0}")]
    Supervise(Errno),
    #[error("control channel: {0}")]
    Control(#[from] control::ControlError),
    #[error("egress: {0}")]
    Egress(#[from] crate::netns::NetnsError),
    #[error("lease the run's host ids: {0}")]
    Ids(#[from] crate::ids::IdError),
    #[error("switch the effective uid to {uid} around clone: {source}")]
    Owner {
        uid: u32,
        #[source]
        source: Errno,
    },
}

/// Entry point of `hako __jail`. Reads the request on stdin, writes the outcome on stdout.
pub fn main() -> i32 {
    watch_for_cancel();
    let mut stdin = io::stdin().lock();
    let request = read_request(&mut stdin);
    let (outcome, leftover) = run_leased(request, |spec, code| {
        let later = spec.deferred.then_some(&mut stdin as &mut dyn Read);
        run(spec, &code, later)
    });
    let reported =
        protocol::encode_outcome(&outcome, io::stdout().lock()).map_err(io::Error::other);
    finish_helper(leftover, reported, "jail")
}

/// What a helper keeps after its answer: the run's cgroup (removed then) and the lease of the
/// run's host ids (held until every process of the run is gone with the cgroup).
#[derive(Default)]
pub(crate) struct Leftover {
    cgroup: Option<RunCgroup>,
    lease: Option<IdLease>,
}

/// Leases the run's host ids, then runs it; a bad request or a failure before the program is
/// the outcome's setup error.
pub(crate) fn run_leased<T, E: std::fmt::Display>(
    request: Result<(JailSpec, T), E>,
    run: impl FnOnce(&JailSpec, T) -> (Result<JailOutcome, HelperError>, Option<RunCgroup>),
) -> (JailOutcome, Leftover) {
    let setup_error = |err: &dyn std::fmt::Display| JailOutcome {
        setup_error: Some(err.to_string()),
        ..Default::default()
    };
    let (mut spec, input) = match request {
        Ok(request) => request,
        Err(err) => return (setup_error(&err), Leftover::default()),
    };
    let lease = match lease_ids(&mut spec) {
        Ok(lease) => lease,
        Err(err) => return (setup_error(&err), Leftover::default()),
    };
    let (result, cgroup) = run(&spec, input);
    let outcome = result.unwrap_or_else(|err| setup_error(&err));
    (outcome, Leftover { cgroup, lease })
}

/// After the answer: closes stdout (the caller's end of the outcome), removes the run's
/// cgroup (tens of ms on cgroup v1, so after the answer), then gives up the ids. Returns the
/// helper's exit code: 0, or 1 when the outcome could not be reported.
pub(crate) fn finish_helper(leftover: Leftover, reported: io::Result<()>, helper: &str) -> i32 {
    // SAFETY: closing our stdout tells the caller the outcome is complete; nothing writes to
    // it afterwards.
    unsafe { libc::close(libc::STDOUT_FILENO) };
    let Leftover { cgroup, lease } = leftover;
    if let Some(cg) = cgroup {
        if let Err(err) = cg.remove() {
            // The caller may be gone by now: never panic on a closed stderr.
            let _ = writeln!(io::stderr(), "hako {helper}: {err}");
        }
    }
    drop(lease);
    match reported {
        Ok(()) => 0,
        // The caller went away (a closed session): nobody to report to.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            let _ = writeln!(
                io::stderr(),
                "hako {helper}: cannot report the outcome: {err}"
            );
            1
        }
    }
}

/// Leases the run's host ids (see [`crate::ids`]) and writes them into `spec`; a zygote
/// takes one id for itself and [`ZYGOTE_RUN_IDS`] for its run children. Held until dropped.
pub(crate) fn lease_ids(spec: &mut JailSpec) -> Result<Option<IdLease>, HelperError> {
    let Some(pool) = &spec.id_pool else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        // Unprivileged: the run maps to our own ids anyway.
        return Ok(None);
    }
    let width = if spec.zygote { 1 + ZYGOTE_RUN_IDS } else { 1 };
    let lease = crate::ids::lease(pool, spec.ids.host_uid, width)?;
    let gid_offset = spec.ids.host_gid.wrapping_sub(spec.ids.host_uid);
    spec.ids.host_uid = lease.first;
    spec.ids.host_gid = lease.first.wrapping_add(gid_offset);
    Ok(Some(lease))
}

/// Reads the spec and the code. A deferred run sends a length-prefixed bootstrap instead;
/// its program follows later, until EOF.
fn read_request(input: &mut impl Read) -> Result<(JailSpec, Vec<u8>), protocol::ProtocolError> {
    let spec: JailSpec = protocol::read_json(&mut *input)?;
    let code = if spec.deferred {
        protocol::read_bytes(&mut *input)?
    } else {
        let mut code = Vec::new();
        input.read_to_end(&mut code)?;
        code
    };
    Ok((spec, code))
}

/// Readable when the caller gave up on the run (it sends SIGTERM); -1 when unavailable.
pub(crate) static CANCEL_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Turns SIGTERM into an event the supervisor polls: the run is killed and everything it
/// had (cgroup, mounts, listener) is cleaned up before the helper exits. The helpers hold no
/// parent-death signal for the same reason: an orphaned helper ends its run (bounded by its
/// timeout), cleans up, and exits on EOF.
pub(crate) fn watch_for_cancel() {
    use nix::sys::signal::SigSet;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    if mask.thread_block().is_err() {
        return;
    }
    if let Ok(fd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        CANCEL_FD.store(fd.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
        // Lives as long as the helper process.
        std::mem::forget(fd);
    }
}

pub(crate) struct Pipes {
    pub stdout: (OwnedFd, OwnedFd),
    pub stderr: (OwnedFd, OwnedFd),
    pub control: (OwnedFd, OwnedFd),
}

pub(crate) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), HelperError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| HelperError::Channel {
        what: "zygote socket",
        source,
    })
}

pub(crate) fn channels() -> Result<Pipes, HelperError> {
    let pipe = |what| {
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| HelperError::Channel { what, source })
    };
    let control = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| HelperError::Channel {
        what: "control socket",
        source,
    })?;
    Ok(Pipes {
        stdout: pipe("stdout pipe")?,
        stderr: pipe("stderr pipe")?,
        control,
    })
}

/// Runs one program. With `later` (a deferred run) the jail starts with `code` as a
/// bootstrap, and the program is read from `later` and handed over through [`CODE_FD`];
/// the clock starts then.
/// Also returns the run's cgroup, emptied, for the caller to remove after answering.
fn run(
    spec: &JailSpec,
    code: &[u8],
    later: Option<&mut dyn Read>,
) -> (Result<JailOutcome, HelperError>, Option<RunCgroup>) {
    match prepare_and_run(spec, code, later) {
        Ok((result, cgroup)) => (result, cgroup),
        Err(err) => (Err(err), None),
    }
}

#[allow(clippy::type_complexity)]
fn prepare_and_run(
    spec: &JailSpec,
    code: &[u8],
    later: Option<&mut dyn Read>,
) -> Result<(Result<JailOutcome, HelperError>, Option<RunCgroup>), HelperError> {
    let mut started = Instant::now();
    let use_listener = notify::user_notif_supported();
    let program = seccomp::build_program(
        spec.language.as_str(),
        &spec.seccomp.extra_allowed,
        spec.seccomp.mode,
        use_listener,
    )?;
    let egress = crate::netns::prepare(spec)?;
    let name = format!("run-{}-{}", std::process::id(), spec.ids.host_uid);
    let (run_cgroup, coverage) =
        create_cgroup(&name, &spec.cgroup_root, &spec.limits, spec.insecure)?;
    let result = (|| {
        let pipes = channels()?;
        let stdio = (pipes.stdout.1, pipes.stderr.1);
        let code_pipe = match later {
            Some(_) => Some(pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| {
                HelperError::Channel {
                    what: "code pipe",
                    source,
                }
            })?),
            None => None,
        };
        let (code_read, code_write) = match code_pipe {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        let (init, control) = start_jail(
            Plan {
                spec,
                filter: &program,
                use_listener,
                coverage,
            },
            code,
            run_cgroup.as_ref(),
            stdio,
            code_read,
            pipes.control,
        )?;
        let mut guard = KillOnDrop(Some(init));
        if let (Some(source), Some(sink)) = (later, code_write) {
            let mut program_text = Vec::new();
            source
                .read_to_end(&mut program_text)
                .map_err(|e| HelperError::Setup(format!("read the program: {e}")))?;
            started = Instant::now();
            let mut sink = std::fs::File::from(sink);
            // A program the bootstrap never reads (it died) is reported by the supervisor.
            let _ = sink.write_all(&program_text);
        }
        let watch = Watch {
            limits: &spec.limits,
            mode: spec.seccomp.mode,
            target: init,
            started,
        };
        let channel = Supervised {
            control: &control,
            receiver: Receiver::jail(),
            listener: None,
        };
        let mut outcome = supervise(&watch, channel, pipes.stdout.0, pipes.stderr.0)?;
        guard.0 = None;
        let (cpu_ms, rss) = reap(init);
        outcome.cpu_ms = cpu_ms;
        outcome.peak_memory_bytes = rss;
        outcome.wall_ms = started.elapsed().as_millis() as u64;
        Ok(outcome)
    })();
    let result = cgroup_accounting(run_cgroup.as_ref(), result);
    Ok((crate::netns::finish(egress, result), run_cgroup))
}

/// Creates the run's cgroup where the host allows it; says which limits it covers.
pub(crate) fn create_cgroup(
    name: &str,
    cgroup_root: &Path,
    limits: &Limits,
    insecure: bool,
) -> Result<(Option<RunCgroup>, CgroupCoverage), HelperError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok((None, CgroupCoverage::default()));
    }
    let cgroups = Cgroups::detect(cgroup_root);
    let support = cgroups.support();
    let wanted = CgroupLimits {
        memory_bytes: limits.memory_bytes,
        pids: limits.pids,
        cpu_percent: limits.cpu_percent,
    };
    let cgroup = match cgroups.create_run(name, &wanted) {
        Ok(cg) => Some(cg),
        Err(err) if insecure => {
            eprintln!("hako jail: running without cgroup limits: {err}");
            None
        }
        Err(_) if support.version.is_none() => None,
        Err(err) => return Err(err.into()),
    };
    let coverage = CgroupCoverage {
        memory: cgroup.is_some() && support.memory,
        pids: cgroup.is_some() && support.pids,
    };
    Ok((cgroup, coverage))
}

/// Folds the cgroup's accounting into the outcome.
pub(crate) fn cgroup_accounting(
    cgroup: Option<&RunCgroup>,
    result: Result<JailOutcome, HelperError>,
) -> Result<JailOutcome, HelperError> {
    let Some(cg) = cgroup else { return result };
    let stats = cg.stats();
    let mut outcome = result?;
    let killed = outcome.signal == Some(libc::SIGKILL);
    outcome.oom_killed |= stats.oom_kills > 0
        || (killed && stats.memory_limit_hits > 0 && !outcome.timed_out && !outcome.output_limited);
    outcome.pids_limited |= stats.pids_limit_hits > 0;
    if let Some(peak) = stats.peak_memory_bytes {
        outcome.peak_memory_bytes = peak;
    }
    Ok(outcome)
}

/// What the jail's processes are built from: the run, its seccomp filter (empty for a
/// zygote), whether the supervisor listens for denied calls, and which limits a cgroup covers.
#[derive(Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub spec: &'a JailSpec,
    pub filter: &'a [libc::sock_filter],
    pub use_listener: bool,
    pub coverage: CgroupCoverage,
}

/// Clones the jail's init into new namespaces, maps its ids, puts it in the cgroup and lets
/// it build the root. Returns init's pid and the helper's end of the control socket.
pub(crate) fn start_jail(
    plan: Plan<'_>,
    code: &[u8],
    cgroup: Option<&RunCgroup>,
    stdio: (OwnedFd, OwnedFd),
    inherit: Option<OwnedFd>,
    control: (OwnedFd, OwnedFd),
) -> Result<(Pid, OwnedFd), HelperError> {
    let spec = plan.spec;
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if spec.network == NetworkMode::None {
        flags |= libc::CLONE_NEWNET;
    }
    // The user namespace is owned by the run's own host uid, not by root: what the kernel
    // counts per user (inotify instances and watches, namespaces, ...) is charged to that uid
    // at the host level, so no run can exhaust root's counters.
    let owner = nix::unistd::geteuid()
        .is_root()
        .then_some(spec.ids.host_uid)
        .filter(|&uid| uid != 0);
    if let Some(uid) = owner {
        set_effective_uid(uid)?;
    }
    // SAFETY: this process is single-threaded (the helper never starts threads), so a
    // fork-like clone with no new stack is sound: the child continues on a copy of our stack
    // and only this thread existed. The child never returns from `jail_init`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    let clone_errno = Errno::last();
    if pid != 0 && owner.is_some() {
        // Back to root: the effective capabilities return from the permitted set.
        let restored = set_effective_uid(0);
        if restored.is_err() && pid > 0 {
            drop(KillOnDrop(Some(Pid::from_raw(pid as i32))));
        }
        restored?;
    }
    if pid < 0 {
        return Err(HelperError::Clone(clone_errno));
    }
    if pid == 0 {
        drop(control.0);
        let child_control = control.1;
        let code = jail_init(plan, code, &child_control, stdio.0, stdio.1, inherit);
        // SAFETY: _exit is async-signal-safe and ends the child without running the parent's
        // atexit handlers or destructors of copied state.
        unsafe { libc::_exit(code) }
    }
    let init = Pid::from_raw(pid as i32);
    drop((stdio, inherit, control.1));
    let mut guard = KillOnDrop(Some(init));
    map_ids(init, spec)?;
    if let Some(cg) = cgroup {
        cg.add_pid(init.as_raw())?;
    }
    control::send(control.0.as_fd(), &Message::Go, &[])?;
    guard.0 = None;
    Ok((init, control.0))
}

/// Sets only the effective uid (the real and saved uid stay root, so root can come back).
fn set_effective_uid(uid: u32) -> Result<(), HelperError> {
    // SAFETY: setresuid changes only this (single-threaded) process's credentials; -1 leaves
    // the real and saved uid unchanged.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, -1i32, uid as i32, -1i32) };
    if r != 0 {
        return Err(HelperError::Owner {
            uid,
            source: Errno::last(),
        });
    }
    Ok(())
}

/// Kills the run's init (and so its whole pid namespace) if supervision bails out early.
pub(crate) struct KillOnDrop(pub Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn map_ids(init: Pid, spec: &JailSpec) -> Result<(), HelperError> {
    let proc_dir = PathBuf::from(format!("/proc/{init}"));
    let write_file = |name: &str, text: String| {
        let path = proc_dir.join(name);
        std::fs::write(&path, text).map_err(|source| HelperError::IdMap { path, source })
    };
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (spec.ids.host_uid, spec.ids.host_gid)
    } else {
        // Unprivileged: only our own ids can be mapped, and setgroups must be denied first.
        write_file("setgroups", "deny".into())?;
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    if spec.zygote {
        // The zygote and each of its live run children get distinct host ids.
        let n = ZYGOTE_RUN_IDS;
        write_file(
            "uid_map",
            format!("{JAIL_UID} {uid} 1\n{RUN_UID} {} {n}\n", uid + 1),
        )?;
        write_file(
            "gid_map",
            format!("{JAIL_GID} {gid} 1\n{RUN_GID} {} {n}\n", gid + 1),
        )
    } else {
        write_file("uid_map", format!("{JAIL_UID} {uid} 1\n"))?;
        write_file("gid_map", format!("{JAIL_GID} {gid} 1\n"))
    }
}

struct Collected {
    data: Vec<u8>,
    open: bool,
}

/// What the supervisor watches: the limits, the policy mode, and whom to kill.
pub(crate) struct Watch<'a> {
    pub limits: &'a Limits,
    pub mode: SeccompMode,
    /// Killing it ends the run (the run's pid 1).
    pub target: Pid,
    pub started: Instant,
}

/// The supervisor's end of a run's control channel: the socket, where its protocol stands,
/// and the seccomp listener if READY already brought it.
pub(crate) struct Supervised<'a> {
    pub control: &'a OwnedFd,
    pub receiver: Receiver,
    pub listener: Option<OwnedFd>,
}

/// What the supervisor says when a run sent a control message no state expects.
pub const TAMPERED: &str = "the run tampered with its supervisor channel";

/// Collects output, answers seccomp notifications and enforces the deadline and output cap
/// until the program has ended. Its exit status arrives on `control` from the program's
/// reaper (the jail's init, or the zygote after `wait4`), never from the program. A message
/// the channel's state does not expect kills the run (see [`TAMPERED`]).
pub(crate) fn supervise(
    watch: &Watch<'_>,
    channel: Supervised<'_>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<JailOutcome, HelperError> {
    let Supervised {
        control,
        mut receiver,
        mut listener,
    } = channel;
    let init = watch.target;
    let deadline = watch.started + Duration::from_millis(watch.limits.timeout_ms);
    let cap = watch.limits.output_bytes as usize;
    let mut outcome = JailOutcome::default();
    let mut streams = [
        Collected {
            data: Vec::new(),
            open: true,
        },
        Collected {
            data: Vec::new(),
            open: true,
        },
    ];
    outcome.confined = receiver.state() != control::State::Confining;
    let mut blocked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut control_open = true;
    let mut status: Option<ExitStatus> = None;
    let mut killed = false;

    loop {
        let status_known = status.is_some() || !control_open;
        if status_known && !streams[0].open && !streams[1].open {
            break;
        }
        if status.is_some() && !killed {
            // The program reported its end after flushing its output: what it wrote is in
            // the pipes now. Take it without waiting for the process to be torn down (its
            // caller kills it).
            drain(&stdout, &stderr, &mut streams, cap, &mut outcome);
            break;
        }
        let now = Instant::now();
        if now >= deadline && !killed {
            outcome.timed_out = status.is_none();
            let _ = kill(init, Signal::SIGKILL);
            killed = true;
        }
        let wait = if killed {
            PollTimeout::from(200u16)
        } else {
            let left = deadline
                .saturating_duration_since(now)
                .as_millis()
                .min(60_000) as u16;
            PollTimeout::from(left.max(1))
        };
        let mut fds = Vec::with_capacity(4);
        let mut roles = Vec::with_capacity(4);
        if control_open {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Control);
        }
        for (i, fd) in [&stdout, &stderr].into_iter().enumerate() {
            if streams[i].open {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                roles.push(Role::Stream(i));
            }
        }
        if let Some(l) = &listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Listener);
        }
        let cancel = CANCEL_FD.load(std::sync::atomic::Ordering::Relaxed);
        if cancel >= 0 && !killed {
            // SAFETY: CANCEL_FD is a signalfd that stays open for the helper's lifetime.
            let fd = unsafe { BorrowedFd::borrow_raw(cancel) };
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            roles.push(Role::Cancel);
        }
        let ready = match poll(&mut fds, wait) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(HelperError::Supervise(err)),
        };
        if ready == 0 {
            if killed {
                // Killed and nothing more arrives: everything in the namespace is gone.
                break;
            }
            continue;
        }
        let events: Vec<(Role, PollFlags)> = fds
            .iter()
            .zip(roles.iter())
            .filter_map(|(fd, role)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*role, r)))
            .collect();
        drop(fds);
        for (role, revents) in events {
            match role {
                Role::Stream(i) => {
                    let fd = if i == 0 { &stdout } else { &stderr };
                    collect_some(fd, i, &mut streams, cap, &mut outcome);
                    if outcome.output_limited && !killed {
                        let _ = kill(init, Signal::SIGKILL);
                        killed = true;
                    }
                    let _ = revents;
                }
                Role::Listener => {
                    if revents
                        .intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
                        && !revents.contains(PollFlags::POLLIN)
                    {
                        listener = None;
                        continue;
                    }
                    if let Some(l) = &listener {
                        handle_notification(l.as_fd(), watch.mode, &mut blocked);
                    }
                }
                Role::Control => match take_control(control, &mut receiver) {
                    Ok(Some((Message::Error(text), _))) => {
                        let _ = kill(init, Signal::SIGKILL);
                        return Err(HelperError::Setup(text));
                    }
                    Ok(Some((Message::Ready, fds))) => {
                        listener = fds.into_iter().next();
                        outcome.confined = true;
                    }
                    Ok(Some((Message::Exited(exit), _))) => status = Some(exit),
                    Ok(Some(_)) => {}
                    Ok(None) => control_open = false,
                    Err(why) => {
                        // Nothing the run sends may steer its supervisor: end it, say so.
                        let _ = kill(init, Signal::SIGKILL);
                        killed = true;
                        control_open = false;
                        listener = None;
                        outcome.tampered = true;
                        outcome.failure = Some(format!("{TAMPERED} ({why})"));
                        eprintln!("hako jail: {TAMPERED}: {why}; the run was killed");
                    }
                },
                Role::Cancel => {
                    let _ = kill(init, Signal::SIGKILL);
                    killed = true;
                }
            }
        }
    }

    if outcome.tampered {
        status = None;
    }
    if let Some(exit) = status {
        if exit.signal != 0 {
            outcome.signal = Some(exit.signal);
        } else {
            outcome.exit_code = Some(exit.code);
        }
        outcome.cpu_ms = exit.cpu_ms;
        outcome.peak_memory_bytes = exit.max_rss_bytes;
    } else {
        outcome.signal = Some(libc::SIGKILL);
    }
    outcome.blocked = blocked
        .into_iter()
        .map(|(nr, count)| BlockedSyscall {
            nr,
            name: seccomp::syscall_name(nr),
            count,
        })
        .collect();
    let [out, err] = streams;
    outcome.stdout = out.data;
    outcome.stderr = err.data;
    Ok(outcome)
}

/// Reads what is already buffered in the output pipes, up to the cap.
fn drain(
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    streams: &mut [Collected; 2],
    cap: usize,
    outcome: &mut JailOutcome,
) {
    for (i, fd) in [stdout, stderr].into_iter().enumerate() {
        while streams[i].open {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(1)
                    if fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN)) => {}
                _ => break,
            }
            collect_some(fd, i, streams, cap, outcome);
        }
    }
}

/// Reads once from output stream `i` into `streams[i]`, keeping both streams together within
/// `cap` bytes: past the cap the excess is cut, `output_limited` is set and the stream closed.
fn collect_some(
    fd: &OwnedFd,
    i: usize,
    streams: &mut [Collected; 2],
    cap: usize,
    outcome: &mut JailOutcome,
) {
    let total: usize = streams.iter().map(|s| s.data.len()).sum();
    match read_some(
        fd.as_raw_fd(),
        &mut streams[i].data,
        cap.saturating_sub(total) + 1,
    ) {
        Ok(0) => streams[i].open = false,
        Ok(_) => {
            let total: usize = streams.iter().map(|s| s.data.len()).sum();
            if total > cap {
                let keep = streams[i].data.len() - (total - cap);
                streams[i].data.truncate(keep);
                outcome.output_limited = true;
                streams[i].open = false;
            }
        }
        Err(Errno::EINTR | Errno::EAGAIN) => {}
        Err(_) => streams[i].open = false,
    }
}

#[derive(Clone, Copy)]
enum Role {
    Control,
    Stream(usize),
    Listener,
    Cancel,
}

fn read_some(fd: RawFd, into: &mut Vec<u8>, max: usize) -> Result<usize, Errno> {
    let mut buf = [0u8; 65536];
    let want = buf.len().min(max.max(1));
    let n = read(fd, &mut buf[..want])?;
    into.extend_from_slice(&buf[..n]);
    Ok(n)
}

pub(crate) fn handle_notification(
    listener: BorrowedFd<'_>,
    mode: SeccompMode,
    blocked: &mut BTreeMap<u32, u64>,
) {
    let Ok(note) = notify::receive(listener) else {
        return;
    };
    let nr = note.nr as u32;
    if is_resolver_probe(&note) {
        // glibc's getaddrinfo(AI_ADDRCONFIG) asks the kernel for interface addresses over
        // NETLINK_ROUTE and falls back when refused: expected, never reported or allowed.
        let _ = notify::respond_errno(listener, note.id, libc::EPERM);
        return;
    }
    count_blocked(blocked, nr);
    let _ = match mode {
        SeccompMode::Learn => notify::respond_continue(listener, note.id),
        SeccompMode::Enforce => notify::respond_errno(listener, note.id, libc::EPERM),
    };
}

/// Counts a denied call: by its number for the first [`seccomp::MAX_DISTINCT_BLOCKED`]
/// numbers, under [`seccomp::OTHER_SYSCALLS`] after that.
fn count_blocked(blocked: &mut BTreeMap<u32, u64>, nr: u32) {
    let key = if blocked.contains_key(&nr) || blocked.len() < seccomp::MAX_DISTINCT_BLOCKED {
        nr
    } else {
        seccomp::OTHER_SYSCALLS
    };
    *blocked.entry(key).or_insert(0) += 1;
}

fn is_resolver_probe(note: &notify::Notification) -> bool {
    note.nr as i64 == libc::SYS_socket
        && note.args[0] == libc::AF_NETLINK as u64
        && note.args[2] == libc::NETLINK_ROUTE as u64
}

/// Receives one control message and checks it against the channel's state. `Ok(None)`: the
/// channel closed. `Err`: a message out of state or malformed (tampering).
pub(crate) fn take_control(
    control: &OwnedFd,
    receiver: &mut Receiver,
) -> Result<Option<(Message, Vec<OwnedFd>)>, String> {
    loop {
        match control::receive(control) {
            Ok(Received::Closed) => return Ok(None),
            Ok(Received::Nothing) => continue,
            Ok(Received::Message(message, fds)) => {
                return match receiver.accept(message.kind()) {
                    Ok(_) => Ok(Some((message, fds))),
                    Err(out) => Err(out.to_string()),
                }
            }
            Err(control::ControlError::Io(err)) => return Err(format!("control socket: {err}")),
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// Waits for init; returns (cpu ms of the whole run, max RSS in bytes).
pub(crate) fn reap(init: Pid) -> (u64, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes only into the status and rusage we own.
        let r = unsafe { libc::wait4(init.as_raw(), &mut status, 0, &mut usage) };
        if r >= 0 || Errno::last() != Errno::EINTR {
            break;
        }
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    (
        ms(usage.ru_utime) + ms(usage.ru_stime),
        usage.ru_maxrss.max(0) as u64 * 1024,
    )
}

// ---------------------------------------------------------------------------------------
// Inside the jail. Everything below runs in the cloned child; errors are sent to the helper
// as text and the child exits.

#[derive(Debug, thiserror::Error)]
enum JailError {
    #[error("wait for the helper: {0}")]
    Sync(Errno),
    #[error("set the run identity: {0}")]
    Identity(String),
    #[error("create the cgroup namespace: {0}")]
    CgroupNs(Errno),
    #[error("set the hostname: {0}")]
    Hostname(Errno),
    #[error("bring up loopback: {0}")]
    Loopback(Errno),
    #[error("{0}")]
    Mount(#[from] mounts::MountError),
    #[error("fork the program: {0}")]
    Fork(Errno),
    #[error("open the interpreter {path}: {source}")]
    Interpreter { path: PathBuf, source: Errno },
    #[error("{0}")]
    LockDown(#[from] LockDownError),
    #[error("exec {path}: {source}")]
    Exec { path: PathBuf, source: Errno },
    #[error("start the zygote: {0}")]
    Zygote(String),
    #[error("bad argument {0:?}: contains a NUL byte")]
    Nul(String),
    #[error("start a session of its own: {0}")]
    Session(#[source] Errno),
    #[error("set the per-namespace limit {path}: {source}")]
    NamespaceLimit {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

fn jail_init(
    plan: Plan<'_>,
    code: &[u8],
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    inherit: Option<OwnedFd>,
) -> i32 {
    // The helper blocks SIGTERM for its own use; nothing in the jail inherits that.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    // SAFETY: prctl(PR_SET_PDEATHSIG) only changes this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Out of the caller's process group: nothing the run signals to its group reaches it.
    let _ = nix::unistd::setsid();
    hide_command_line();
    let program_pid = match prepare_jail(plan.spec, code, control) {
        Ok(()) => match fork_program(plan, control, stdout, stderr, inherit) {
            Ok(pid) => pid,
            Err(err) => return report_error(control, &err),
        },
        Err(err) => return report_error(control, &err),
    };
    // Init keeps no privileges and no descriptors (a pipe end it held would keep the
    // program from ever seeing EOF) while it waits.
    lockdown::close_other_fds(&[control.as_raw_fd()]);
    let _ = lockdown::drop_all_caps();
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes this process's dumpable flag, which
    // keeps the program from reading init's memory through /proc.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let (code, signal) = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program_pid => break (code, 0),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program_pid => break (0, sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break (0, libc::SIGKILL),
        }
    };
    let exit = ExitStatus {
        code,
        signal,
        ..Default::default()
    };
    let _ = control::send(control.as_fd(), &Message::Exited(exit), &[]);
    0
}

/// Overwrites this process's argument area, which the run reads as `/proc/1/cmdline`: it
/// held the host path of the hako binary. Best effort (nothing secret is in it).
fn hide_command_line() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // The fields after the command name (which may hold spaces) start with field 3; the
    // argument area is fields 48 and 49 (proc(5)).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let field = |n: usize| rest.split_whitespace().nth(n - 3)?.parse::<usize>().ok();
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return;
    };
    let Some(len) = end.checked_sub(start).filter(|&l| l > 0) else {
        return;
    };
    let name = b"hako-init";
    // SAFETY: [start, end) is this process's own argument area as the kernel reports it: a
    // mapped, writable part of the initial stack. This single-threaded process no longer
    // reads its arguments; the kernel only reads the area to answer /proc/<pid>/cmdline.
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, len);
        std::ptr::copy_nonoverlapping(name.as_ptr(), start as *mut u8, name.len().min(len - 1));
    }
}

fn report_error(control: &OwnedFd, err: &JailError) -> i32 {
    let _ = control::send(control.as_fd(), &Message::Error(err.to_string()), &[]);
    126
}

fn prepare_jail(spec: &JailSpec, code: &[u8], control: &OwnedFd) -> Result<(), JailError> {
    match control::receive(control) {
        Ok(Received::Message(Message::Go, _)) => {}
        _ => return Err(JailError::Sync(Errno::EPIPE)),
    }
    // Without root the namespace denies setgroups: clearing groups is best effort here.
    crate::lockdown::switch_identity(JAIL_UID, JAIL_GID, false)
        .map_err(|e| JailError::Identity(e.to_string()))?;
    // Again: changing the uid cleared the parent-death signal set at clone time. If the
    // helper dies, init (and with it the whole pid namespace) must die too.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only changes this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The helper may have died before that: then the control socket is closed.
    let mut probe = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
    if poll(&mut probe, PollTimeout::ZERO).is_ok()
        && probe[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    {
        return Err(JailError::Sync(Errno::EPIPE));
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(JailError::CgroupNs)?;
    nix::unistd::sethostname("hako").map_err(JailError::Hostname)?;
    if spec.network == NetworkMode::None {
        crate::netns::loopback_up().map_err(JailError::Loopback)?;
    }
    mounts::build_root(&RootPlan {
        mountpoint: &spec.root_mountpoint,
        ro_binds: &spec.ro_binds,
        mapped_binds: &spec.mapped_binds,
        code_path: &spec.code_path,
        code,
        tmp_bytes: spec.limits.tmp_bytes,
        uid: JAIL_UID,
        gid: JAIL_GID,
    })?;
    limit_namespace_counters()
}

/// Per-user kernel counters, limited in the run's user namespace (a zygote's run children
/// live in the zygote's, each with its own uid). The host level charges them to the
/// namespace's owner, the run's own host uid; these limits keep one run (or one zygote child)
/// from taking what the next needs. A run cannot raise them: it holds no capability.
const NAMESPACE_LIMITS: [(&str, &str); 5] = [
    ("/proc/sys/user/max_inotify_instances", "32"),
    ("/proc/sys/user/max_inotify_watches", "8192"),
    ("/proc/sys/user/max_fanotify_groups", "0"),
    ("/proc/sys/user/max_fanotify_marks", "0"),
    // No run needs a user namespace of its own (seccomp refuses them too).
    ("/proc/sys/user/max_user_namespaces", "0"),
];

fn limit_namespace_counters() -> Result<(), JailError> {
    for (path, value) in NAMESPACE_LIMITS {
        match std::fs::write(path, value) {
            Ok(()) => {}
            // An older kernel without this counter.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(JailError::NamespaceLimit { path, source }),
        }
    }
    Ok(())
}

/// Switches to the run's in-jail uid/gid while keeping the namespace capabilities needed
/// to build the root (they are dropped before the program starts).
fn fork_program(
    plan: Plan<'_>,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    inherit: Option<OwnedFd>,
) -> Result<Pid, JailError> {
    let spec = plan.spec;
    // Everything the program needs is prepared before fork; the child only makes syscalls.
    let argv = cstrings(
        std::iter::once(spec.interpreter.to_string_lossy().into_owned())
            .chain(spec.args.iter().cloned()),
    )?;
    let envp = cstrings(spec.env.iter().map(|(k, v)| format!("{k}={v}")))?;
    // SAFETY: init is single-threaded, so fork is sound.
    match unsafe { nix::unistd::fork() }.map_err(JailError::Fork)? {
        nix::unistd::ForkResult::Parent { child } => {
            drop((stdout, stderr, inherit));
            Ok(child)
        }
        nix::unistd::ForkResult::Child => {
            let err = match confine_and_exec(plan, control, stdout, stderr, inherit, &argv, &envp) {
                Ok(never) => match never {},
                Err(err) => err,
            };
            report_error(control, &err);
            // SAFETY: _exit ends the child immediately; nothing else must run here.
            unsafe { libc::_exit(127) }
        }
    }
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, JailError> {
    items
        .map(|s| CString::new(s.clone()).map_err(|_| JailError::Nul(s)))
        .collect()
}

enum Never {}

fn confine_and_exec(
    plan: Plan<'_>,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    inherit: Option<OwnedFd>,
    argv: &[CString],
    envp: &[CString],
) -> Result<Never, JailError> {
    let Plan {
        spec,
        filter: program,
        use_listener,
        coverage,
    } = plan;
    // SAFETY: PR_SET_PDEATHSIG only changes this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Move the descriptors we keep above the fixed numbers (3, 4) they could collide with.
    let control = &raise_fd(control)?;
    let inherit = inherit.map(|fd| raise_fd(&fd)).transpose()?;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| JailError::Interpreter {
        path: "/dev/null".into(),
        source: e,
    })?;
    for (fd, target) in [
        (devnull, 0),
        (stdout.as_raw_fd(), 1),
        (stderr.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 onto the standard descriptors; both are valid open descriptors.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(JailError::Interpreter {
                path: "/dev/stdio".into(),
                source: Errno::last(),
            });
        }
    }
    drop((stdout, stderr));
    if devnull > 2 {
        // SAFETY: `devnull` is our own descriptor, now duplicated onto stdin; left open it
        // would reach the program as a stray descriptor.
        unsafe { libc::close(devnull) };
    }
    // The run gets its own session and process group: `kill(0, ...)` reaches only itself.
    nix::unistd::setsid().map_err(JailError::Session)?;

    let interpreter = nix::fcntl::open(
        &spec.interpreter,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| JailError::Interpreter {
        path: spec.interpreter.clone(),
        source,
    })?;
    // SAFETY: dup3 onto the fixed descriptor the seccomp policy allows execveat from.
    if unsafe { libc::dup3(interpreter, seccomp::policy::EXEC_FD, libc::O_CLOEXEC) } < 0 {
        return Err(JailError::Interpreter {
            path: spec.interpreter.clone(),
            source: Errno::last(),
        });
    }
    if spec.zygote {
        keep_zygote_powers(control, inherit)?;
    } else {
        if let Some(code) = &inherit {
            // SAFETY: dup2 onto the fixed descriptor a deferred bootstrap reads its program from.
            if unsafe { libc::dup2(code.as_raw_fd(), CODE_FD) } < 0 {
                return Err(JailError::Interpreter {
                    path: "code pipe".into(),
                    source: Errno::last(),
                });
            }
        }
        let keep: &[RawFd] = if inherit.is_some() {
            &[seccomp::policy::EXEC_FD, CODE_FD]
        } else {
            &[seccomp::policy::EXEC_FD]
        };
        lockdown::lock_down(
            &LockDown {
                language: spec.language,
                limits: &spec.limits,
                coverage,
                seccomp: program,
                use_listener,
                insecure: spec.insecure,
            },
            control.as_raw_fd(),
            keep,
        )?;
    }

    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: argv/envp are NUL-terminated arrays of pointers to CStrings that outlive the
    // call; the empty path with AT_EMPTY_PATH executes the file behind EXEC_FD.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            seccomp::policy::EXEC_FD,
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(JailError::Exec {
        path: spec.interpreter.clone(),
        source: Errno::last(),
    })
}

/// A zygote execs with the capabilities its run children need to build their namespaces
/// (raised as ambient capabilities, so they survive the exec of a non-root uid), its control
/// socket as [`ZYGOTE_FD`], and no seccomp of its own: it runs only trusted start-up code,
/// and each run child locks itself down before it reads a request.
fn keep_zygote_powers(control: &OwnedFd, socket: Option<OwnedFd>) -> Result<(), JailError> {
    let socket = socket.ok_or_else(|| JailError::Zygote("no control socket".into()))?;
    // SAFETY: dup2 onto the fixed descriptor; dup2 clears close-on-exec so it survives exec.
    if unsafe { libc::dup2(socket.as_raw_fd(), ZYGOTE_FD) } < 0 {
        return Err(JailError::Zygote(format!("dup2: {}", Errno::last())));
    }
    drop(socket);
    lockdown::close_other_fds(&[seccomp::policy::EXEC_FD, ZYGOTE_FD, control.as_raw_fd()]);
    // SAFETY: PR_SET_NO_NEW_PRIVS only restricts this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(JailError::Zygote(format!(
            "no_new_privs: {}",
            Errno::last()
        )));
    }
    let kept: caps::CapsHashSet = ZYGOTE_CAPS.iter().copied().collect();
    let err = |e: caps::errors::CapsError| JailError::Zygote(e.to_string());
    caps::set(None, caps::CapSet::Inheritable, &kept).map_err(err)?;
    for cap in ZYGOTE_CAPS {
        caps::raise(None, caps::CapSet::Ambient, *cap).map_err(err)?;
    }
    control::send(control.as_fd(), &Message::Ready, &[])
        .map_err(|e| JailError::Zygote(e.to_string()))?;
    Ok(())
}

/// What a zygote keeps (within its own user namespace only): new namespaces and mounts for
/// each run child, switching to the run uid, and dropping the bounding set.
const ZYGOTE_CAPS: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_ADMIN,
    // Loopback up in each run child's own network namespace.
    caps::Capability::CAP_NET_ADMIN,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETPCAP,
];

/// A close-on-exec duplicate of `fd` numbered 900 or above (below [`seccomp::policy::EXEC_FD`]).
fn raise_fd(fd: &OwnedFd) -> Result<OwnedFd, JailError> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1) that we then own.
    let raised = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 900) };
    if raised < 0 {
        return Err(JailError::Interpreter {
            path: "descriptor".into(),
            source: Errno::last(),
        });
    }
    // SAFETY: `raised` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raised) })
}

#[cfg(test)]
#[path = "helper/supervise_tests.rs"]
mod supervise_tests;
