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

use crate::cgroup::{CgroupLimits, CgroupStats, Cgroups, RunCgroup};
use crate::ids::IdLease;
pub(crate) use crate::inside::Plan;
use crate::lockdown::CgroupCoverage;
use crate::netns::{EgressLink, NetnsError};
use crate::protocol;
use crate::seccomp::{self, notify};
use crate::spec::{
    EgressSpec, JailOutcome, JailSpec, Limits, NetworkMode, JAIL_GID, JAIL_UID, RUN_GID, RUN_UID,
    ZYGOTE_RUN_IDS,
};
use crate::sys::{Kernel, Prctl};
use hako_wire::control::{self, Message, Receiver};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, Pid};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub mod ids;
pub mod live;
pub mod memory_guard;
mod supervise;
pub(crate) mod unix_diag;

pub(crate) use supervise::*;

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
    /// The jail's own account (an ERROR message) of why it could not start.
    #[error("jail setup failed: {0}")]
    Setup(String),
    #[error("jail setup failed: read the program: {0}")]
    ReadProgram(#[source] io::Error),
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

/// What a spawn-style run (`__jail`, `__live`) prepares before its jail: its seccomp filter,
/// its egress link (proxy mode) and its `run-<pid>-<uid>` cgroup, which start-up clean-up
/// removes if this helper dies without cleaning up.
pub(crate) struct PreparedRun {
    use_listener: bool,
    filter: Vec<libc::sock_filter>,
    egress: Option<crate::netns::EgressLink>,
    pub cgroup: Option<RunCgroup>,
    coverage: CgroupCoverage,
}

pub(crate) fn prepare_run(spec: &JailSpec) -> Result<PreparedRun, HelperError> {
    let name = format!("run-{}-{}", std::process::id(), spec.ids.host_uid);
    let (cgroup, coverage) = create_cgroup(&name, &spec.cgroup_root, &spec.limits, spec.insecure)?;
    // Built once the cgroup is known: where the memory guard limits the run, the policy
    // refuses what the guard cannot see.
    let use_listener = notify::user_notif_supported();
    let filter = seccomp::build_program(
        spec.language.as_str(),
        &spec.seccomp.extra_allowed,
        seccomp::FilterFor {
            mode: spec.seccomp.mode,
            listener: use_listener,
            memory_guarded: memory_guard::guards(coverage.memory, spec.limits.memory_bytes),
            zygote_child: false,
        },
    )?;
    Ok(PreparedRun {
        use_listener,
        filter,
        egress: None,
        cgroup,
        coverage,
    })
}

impl PreparedRun {
    /// What the jail's processes are built from.
    pub(crate) fn plan<'a>(&'a self, spec: &'a JailSpec) -> Plan<'a> {
        Plan {
            spec,
            filter: &self.filter,
            use_listener: self.use_listener,
            coverage: self.coverage,
        }
    }

    /// Folds the cgroup's accounting and the egress report into the outcome; hands back the
    /// cgroup, for the caller to remove after answering.
    pub(crate) fn finish(
        self,
        result: Result<JailOutcome, HelperError>,
    ) -> (Result<JailOutcome, HelperError>, Option<RunCgroup>) {
        let result = cgroup_accounting(self.cgroup.as_ref(), result);
        (crate::netns::finish(self.egress, result), self.cgroup)
    }
}

#[allow(clippy::type_complexity)]
fn prepare_and_run(
    spec: &JailSpec,
    code: &[u8],
    later: Option<&mut dyn Read>,
) -> Result<(Result<JailOutcome, HelperError>, Option<RunCgroup>), HelperError> {
    let mut started = Instant::now();
    let mut prepared = prepare_run(spec)?;
    // A proxy-mode run's registration with the guard; kept open while the run lives.
    let mut egress = None;
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
        let (init, control, link) = start_jail(
            prepared.plan(spec),
            code,
            prepared.cgroup.as_ref(),
            stdio,
            code_read,
            pipes.control,
        )?;
        egress = link;
        let mut guard = KillOnDrop(Some(init));
        if let (Some(source), Some(sink)) = (later, code_write) {
            let mut program_text = Vec::new();
            source
                .read_to_end(&mut program_text)
                .map_err(HelperError::ReadProgram)?;
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
            memory_guard: memory_guard::MemoryGuard::for_run(
                prepared.coverage.memory,
                spec.limits.memory_bytes,
                init,
            ),
        };
        let channel = Supervised {
            control: &control,
            receiver: Receiver::jail(),
            listener: None,
            egress: None,
        };
        let mut outcome = supervise(&watch, channel, pipes.stdout.0, pipes.stderr.0)?;
        guard.0 = None;
        let (cpu_ms, rss) = reap(init);
        outcome.cpu_ms = cpu_ms;
        outcome.peak_memory_bytes = outcome.peak_memory_bytes.max(rss);
        outcome.wall_ms = started.elapsed().as_millis() as u64;
        Ok(outcome)
    })();
    prepared.egress = egress;
    Ok(prepared.finish(result))
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
    let wanted = CgroupLimits::of(limits);
    let cgroup = match cgroups.create_run(name, &wanted) {
        Ok(cg) => Some(cg),
        Err(err) if insecure => {
            eprintln!("hako jail: running without cgroup limits: {err}");
            None
        }
        // No hierarchy, or none hako may write (a read-only cgroupfs in a container): the
        // rlimits and the supervisor's memory guard limit the run (said at start, in
        // `hako doctor` and in /ready).
        Err(_) if !support.memory && !support.pids => None,
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
    account_limits(&mut outcome, &stats);
    if let Some(peak) = stats.peak_memory_bytes {
        outcome.peak_memory_bytes = peak;
    }
    Ok(outcome)
}

/// Marks the limits the run hit, from the events its cgroup counted during the run
/// (`during`): an OOM kill, or a SIGKILL while the memory limit was hit (v1 before 4.13 counts
/// no OOM kills) that was neither the timeout nor the output cap; a refused fork.
pub(crate) fn account_limits(outcome: &mut JailOutcome, during: &CgroupStats) {
    let killed = outcome.signal == Some(libc::SIGKILL);
    outcome.oom_killed |= during.oom_kills > 0
        || (killed
            && during.memory_limit_hits > 0
            && !outcome.timed_out
            && !outcome.output_limited);
    outcome.pids_limited |= during.pids_limit_hits > 0;
}

/// Clones the jail's init into new namespaces, maps its ids, puts it in the cgroup and lets
/// it build the root. Returns init's pid, the helper's end of the control socket and, for a
/// proxy-mode run, its registration with the egress guard (keep it while the run lives).
pub(crate) fn start_jail(
    plan: Plan<'_>,
    code: &[u8],
    cgroup: Option<&RunCgroup>,
    stdio: (OwnedFd, OwnedFd),
    inherit: Option<OwnedFd>,
    control: (OwnedFd, OwnedFd),
) -> Result<(Pid, OwnedFd, Option<EgressLink>), HelperError> {
    let kernel = &crate::sys::REAL;
    let guard_spec = match plan.spec.network {
        NetworkMode::Proxy => Some(plan.spec.egress.as_ref().ok_or(NetnsError::NoGuard)?),
        NetworkMode::None | NetworkMode::Host => None,
    };
    let Some(init) = clone_init(kernel, plan.spec)? else {
        drop(control.0);
        let child_control = control.1;
        let code = crate::inside::jail::jail_init(
            kernel,
            plan,
            code,
            &child_control,
            stdio.0,
            stdio.1,
            inherit,
        );
        // SAFETY: _exit is async-signal-safe and ends the child without running the parent's
        // atexit handlers or destructors of copied state.
        unsafe { libc::_exit(code) }
    };
    drop((stdio, inherit, control.1));
    let (init, control) = release_init(kernel, init, plan.spec, cgroup, control.0)?;
    let mut guard = KillOnDrop(Some(init));
    let link = match guard_spec {
        Some(egress) => Some(register_egress(&control, egress)?),
        None => None,
    };
    guard.0 = None;
    Ok((init, control, link))
}

/// The user namespace's owner: the run's own host uid, not root. What the kernel counts per
/// user (inotify instances and watches, namespaces, ...) is charged to that uid at the host
/// level, so no run can exhaust root's counters. None when the helper is not root.
fn namespace_owner(kernel: &dyn Kernel, spec: &JailSpec) -> Option<u32> {
    (kernel.effective_ids().0 == 0)
        .then_some(spec.ids.host_uid)
        .filter(|&uid| uid != 0)
}

/// Clones init into the run's new namespaces: `Some(init)` in the helper, `None` in init.
fn clone_init(kernel: &dyn Kernel, spec: &JailSpec) -> Result<Option<Pid>, HelperError> {
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    // The run's network namespace belongs to its own user namespace: creating it needs no
    // capability in ours (see `crate::netns`). Only host mode shares the helper's.
    if spec.network != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let owner = namespace_owner(kernel, spec);
    if let Some(uid) = owner {
        set_effective_uid(kernel, uid)?;
        // The child stays dumpable until its id maps are written, so its /proc files belong
        // to the owner uid that writes them (a container's root may lack CAP_DAC_OVERRIDE).
        // No process runs as that uid yet (it is leased to this run), and going back to root
        // makes this process non-dumpable again.
        let _ = kernel.prctl(Prctl::SetDumpable(true));
    }
    // SAFETY: this process is single-threaded (the helper never starts threads). The child
    // never returns from `jail_init`.
    let cloned = unsafe { kernel.clone_process(flags) };
    if !matches!(cloned, Ok(None)) && owner.is_some() {
        // Back to root: the effective capabilities return from the permitted set.
        let restored = set_effective_uid(kernel, 0);
        if let (Err(_), Ok(Some(pid))) = (&restored, &cloned) {
            drop(Unreleased::new(kernel, *pid));
        }
        restored?;
    }
    cloned.map_err(HelperError::Clone)
}

/// In the helper, once init exists: maps its ids, puts it in the run's cgroup and tells it
/// to go on. Init is killed if any step fails.
fn release_init(
    kernel: &dyn Kernel,
    init: Pid,
    spec: &JailSpec,
    cgroup: Option<&RunCgroup>,
    control: OwnedFd,
) -> Result<(Pid, OwnedFd), HelperError> {
    let mut guard = Unreleased::new(kernel, init);
    map_ids(kernel, init, spec, namespace_owner(kernel, spec))?;
    if let Some(cg) = cgroup {
        cg.add_pid(init.as_raw())?;
    }
    control::send(control.as_fd(), &Message::Go, &[])?;
    guard.pid = None;
    Ok((init, control))
}

/// Kills (through the seam) and reaps an init whose start failed.
struct Unreleased<'k> {
    kernel: &'k dyn Kernel,
    pid: Option<Pid>,
}

impl<'k> Unreleased<'k> {
    fn new(kernel: &'k dyn Kernel, pid: Pid) -> Self {
        Unreleased {
            kernel,
            pid: Some(pid),
        }
    }
}

impl Drop for Unreleased<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = self.kernel.kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Takes a proxy-mode jail's egress listener (init made it in the run's network namespace,
/// before the program), hands it to the guard, and lets init go on to start the program.
fn register_egress(control: &OwnedFd, egress: &EgressSpec) -> Result<EgressLink, HelperError> {
    let listener = match take_control(control, &mut Receiver::jail_egress()) {
        Ok(Some((Message::Egress, fds))) => fds.into_iter().next(),
        Ok(Some((Message::Error(text), _))) => return Err(HelperError::Setup(text)),
        Ok(_) => None,
        Err(why) => return Err(HelperError::Setup(why.to_string())),
    };
    let listener = listener.ok_or_else(|| {
        HelperError::Setup("the jail ended before it made its egress listener".into())
    })?;
    let link = crate::netns::register(listener, egress)?;
    control::send(control.as_fd(), &Message::Go, &[])?;
    Ok(link)
}

/// Sets only the effective uid (the real and saved uid stay root, so root can come back).
fn set_effective_uid(kernel: &dyn Kernel, uid: u32) -> Result<(), HelperError> {
    kernel
        .setresuid([None, Some(uid), None])
        .map_err(|source| HelperError::Owner { uid, source })
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

fn map_ids(
    kernel: &dyn Kernel,
    init: Pid,
    spec: &JailSpec,
    owner: Option<u32>,
) -> Result<(), HelperError> {
    let proc_dir = PathBuf::from(format!("/proc/{init}"));
    let write_file = |name: &str, text: String| {
        let path = proc_dir.join(name);
        kernel
            .write_file(&path, &text)
            .map_err(|source| HelperError::IdMap { path, source })
    };
    let (uid, gid) = match kernel.effective_ids() {
        (0, _) => (spec.ids.host_uid, spec.ids.host_gid),
        ours => {
            // Unprivileged: only our own ids can be mapped, and setgroups must be denied first.
            write_file("setgroups", "deny".into())?;
            ours
        }
    };
    // The owner of provisioned data appears as root (only when ids can be mapped freely).
    let data_owner = match spec.data_owner {
        Some(owner) if kernel.effective_ids().0 == 0 => format!("0 {owner} 1\n"),
        _ => String::new(),
    };
    let (uid_map, gid_map) = if spec.zygote {
        // The zygote and each of its live run children get distinct host ids.
        let n = ZYGOTE_RUN_IDS;
        (
            format!("{JAIL_UID} {uid} 1\n{RUN_UID} {} {n}\n", uid + 1),
            format!("{JAIL_GID} {gid} 1\n{RUN_GID} {} {n}\n", gid + 1),
        )
    } else {
        (
            format!("{JAIL_UID} {uid} 1\n"),
            format!("{JAIL_GID} {gid} 1\n"),
        )
    };
    as_owner(kernel, owner, || {
        write_file("uid_map", format!("{data_owner}{uid_map}"))?;
        write_file("gid_map", format!("{data_owner}{gid_map}"))
    })
}

/// Runs `write` with the effective uid of the user namespace's owner. Writing a namespace's
/// id maps needs CAP_SYS_ADMIN in it, which its owner has and a container's root (without
/// CAP_SYS_ADMIN of its own) otherwise lacks; CAP_SETUID and CAP_SETGID come back into the
/// effective set from the permitted one for the writes themselves.
fn as_owner(
    kernel: &dyn Kernel,
    owner: Option<u32>,
    write: impl FnOnce() -> Result<(), HelperError>,
) -> Result<(), HelperError> {
    let Some(uid) = owner else {
        return write();
    };
    set_effective_uid(kernel, uid)?;
    for cap in [caps::Capability::CAP_SETUID, caps::Capability::CAP_SETGID] {
        // Absent from the permitted set (a restricted container): the write says so.
        let _ = caps::raise(None, caps::CapSet::Effective, cap);
    }
    let written = write();
    // Back to root: the effective capabilities return from the permitted set.
    set_effective_uid(kernel, 0)?;
    written
}

#[cfg(test)]
mod tests;
