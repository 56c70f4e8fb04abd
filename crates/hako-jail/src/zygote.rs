//! Warm Python: a jailed interpreter that has imported the preload modules forks one child
//! per run.
//!
//! ```text
//! zygote helper (`hako __zygote`, host side, single-threaded)
//!  └─ init (pid 1 of the zygote's namespaces)
//!      └─ zygote (python, pid 2; keeps namespace capabilities, no seccomp)
//!          └─ run child (pid 1 of its own pid/mount/ipc/uts namespaces, uid RUN_UID)
//! ```
//! Per run, the helper makes the cgroup, pipes and a memfd holding the code, and asks the
//! zygote to fork. The child calls [`confine_child`] (Rust, through the small library the
//! zygote loaded at start): it waits until the helper has put it in the run's cgroup, mounts
//! a fresh /tmp and /proc, switches to the run uid and applies [`crate::lockdown`]. Only then
//! does it read the code. A child is never reused.

use crate::helper::{self, msg, Control, HelperError, KillOnDrop, Watch};
use crate::lockdown::{self, CgroupCoverage, LockDown, LockDownError};
use crate::protocol::{self, ProtocolError};
use crate::seccomp::{self, notify};
use crate::spec::{JailOutcome, JailSpec, Limits, SeccompSpec, RUN_GID, RUN_UID};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{recv, sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{read, Pid};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("{0}")]
    Helper(#[from] HelperError),
    #[error("zygote protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the zygote did not start: {0}")]
    Start(String),
    #[error("the zygote exited")]
    Gone,
    #[error("talk to the zygote: {0}")]
    Socket(Errno),
    #[error("find the run child of zygote {zygote}: {detail}")]
    Child { zygote: i32, detail: String },
    #[error("write the program into a memfd: {0}")]
    Memfd(io::Error),
}

/// What the caller sends for each run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOrder {
    pub limits: Limits,
    pub seccomp: SeccompSpec,
    pub insecure: bool,
    /// The run's whole environment (e.g. proxy variables for a run with network).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Register a listener of the egress guard for this run (proxy network).
    #[serde(default)]
    pub egress: Option<crate::spec::EgressSpec>,
}

/// The zygote helper's first answer: the zygote is ready (or why not).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ZygoteReport {
    pub ready: bool,
    pub error: Option<String>,
    /// Preload modules that failed to import, with the reason.
    pub skipped: Vec<String>,
    /// Host pid of the zygote interpreter (for memory reporting).
    pub zygote_pid: i32,
}

/// What a run child needs to confine itself; sent by the helper through the zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildParams {
    /// Read by the Python side: the run's environment.
    pub env: Vec<(String, String)>,
    pub language: String,
    pub limits: Limits,
    pub coverage: CgroupCoverage,
    pub seccomp: SeccompSpec,
    pub use_listener: bool,
    pub insecure: bool,
}

/// The Python side of the zygote, run as the zygote's program.
pub const BOOTSTRAP: &str = include_str!("zygote.py");

/// Entry point of `hako __zygote`: starts one zygote, then serves runs one at a time.
/// stdin: the zygote's [`JailSpec`] frame (code = [`BOOTSTRAP`]), then for each run a
/// [`RunOrder`] frame and the program. stdout: a [`ZygoteReport`] frame, then one outcome
/// frame per run.
pub fn main() -> i32 {
    helper::watch_for_cancel();
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let started = protocol::read_json::<JailSpec>(&mut input)
        .map_err(ZygoteError::from)
        .and_then(|spec| {
            let bootstrap = protocol::read_bytes(&mut input)?;
            Zygote::start(&spec, &bootstrap)
        });
    let mut zygote = match started {
        Ok(z) => z,
        Err(err) => {
            let report = ZygoteReport {
                error: Some(err.to_string()),
                ..Default::default()
            };
            let _ = protocol::write_json(&mut output, &report);
            return 1;
        }
    };
    let report = ZygoteReport {
        ready: true,
        error: None,
        skipped: zygote.skipped.clone(),
        zygote_pid: zygote.pid.as_raw(),
    };
    if protocol::write_json(&mut output, &report).is_err() {
        return 1;
    }
    loop {
        let order = match protocol::read_json::<RunOrder>(&mut input) {
            Ok(order) => order,
            Err(_) => return 0, // the caller is done with this zygote
        };
        let code = match protocol::read_bytes(&mut input) {
            Ok(code) => code,
            Err(_) => return 0,
        };
        let outcome = zygote.run(&order, &code).unwrap_or_else(|err| JailOutcome {
            setup_error: Some(err.to_string()),
            ..Default::default()
        });
        let gone = outcome.setup_error.is_some() && !zygote.alive();
        if protocol::encode_outcome(&outcome, &mut output).is_err() || gone {
            return 1;
        }
    }
}

struct Zygote {
    /// Children whose end the zygote has yet to report (see `await_previous_exit`).
    unreaped: u32,
    init: Pid,
    /// This helper entered the zygote's network namespace (needed for proxy-mode runs).
    in_zygote_netns: bool,
    /// Holds the zygote and, one at a time, its run children.
    cgroup: Option<crate::cgroup::RunCgroup>,
    coverage: CgroupCoverage,
    pid: Pid,
    socket: OwnedFd,
    skipped: Vec<String>,
    use_listener: bool,
    runs: u64,
    guard: KillOnDrop,
}

impl Zygote {
    fn start(spec: &JailSpec, bootstrap: &[u8]) -> Result<Zygote, ZygoteError> {
        let pipes = helper::channels()?;
        let (ours, theirs) = helper::seqpacket_pair()?;
        // The zygote's own output goes to our stderr (the caller logs it).
        let stderr = || {
            io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| ZygoteError::Start(format!("dup stderr: {e}")))
        };
        let stdio = (stderr()?, stderr()?);
        drop((pipes.stdout, pipes.stderr));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("zygote-{}-{nanos}", std::process::id());
        let (cgroup, coverage) =
            helper::create_cgroup(&name, &spec.cgroup_root, &spec.limits, spec.insecure)?;
        let (init, control) = helper::start_jail(
            helper::Plan {
                spec,
                filter: &[],
                use_listener: false,
                coverage,
            },
            bootstrap,
            cgroup.as_ref(),
            stdio,
            Some(theirs),
            pipes.control,
        )?;
        let guard = KillOnDrop(Some(init));
        // Neither init nor the zygote is ever the OOM killer's choice; run children reset
        // their own score (see `confine_child`).
        let _ = std::fs::write(format!("/proc/{init}/oom_score_adj"), "-1000");
        match helper::receive_control(&control)? {
            Control::Ready(_) => {}
            Control::Error(text) => return Err(ZygoteError::Start(text)),
            _ => {
                return Err(ZygoteError::Start(
                    "the jail ended before the zygote started".into(),
                ))
            }
        }
        // Wait for the bootstrap: "Z" + JSON list of preload modules that failed.
        let mut buf = vec![0u8; 65536];
        let n = recv(ours.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(ZygoteError::Socket)?;
        if n == 0 || buf[0] != b'Z' {
            return Err(ZygoteError::Start(
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
        let skipped: Vec<String> = serde_json::from_slice(&buf[1..n]).unwrap_or_default();
        let pid = only_child(init).map_err(|detail| ZygoteError::Child {
            zygote: init.as_raw(),
            detail,
        })?;
        // Live in the zygote's network namespace: egress listeners for runs are made here.
        // Where that is not allowed (a container without ptrace rights over the jail), runs
        // with proxy network are refused here and start afresh instead.
        let in_zygote_netns = spec.network == crate::spec::NetworkMode::None
            && std::fs::File::open(format!("/proc/{init}/ns/net"))
                .ok()
                .is_some_and(|ns| {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                });
        let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "-1000");
        Ok(Zygote {
            unreaped: 0,
            init,
            in_zygote_netns,
            cgroup,
            coverage,
            pid,
            socket: ours,
            skipped,
            use_listener: notify::user_notif_supported(),
            runs: 0,
            guard,
        })
    }

    fn alive(&self) -> bool {
        nix::sys::signal::kill(self.pid, None).is_ok()
    }

    fn run(&mut self, order: &RunOrder, code: &[u8]) -> Result<JailOutcome, ZygoteError> {
        let started = Instant::now();
        // The previous child is fully gone (and its memory uncharged) before we measure.
        self.await_previous_exit()?;
        self.runs += 1;
        // The child is forked inside the zygote's own group (no migration): the group's
        // limits become what the zygote uses now plus the run's limits.
        let baseline = self
            .cgroup
            .as_ref()
            .map(|cg| cg.usage())
            .unwrap_or_default();
        if let Some(cg) = &self.cgroup {
            cg.retune(&crate::cgroup::CgroupLimits {
                memory_bytes: baseline.memory_bytes + order.limits.memory_bytes,
                pids: baseline.tasks + order.limits.pids,
            })
            .map_err(HelperError::from)?;
        }
        let before = self
            .cgroup
            .as_ref()
            .map(|cg| cg.stats())
            .unwrap_or_default();
        let link = match &order.egress {
            Some(_) if !self.in_zygote_netns => {
                return Err(ZygoteError::Start(
                    "no access to the zygote's network namespace".into(),
                ))
            }
            Some(egress) => Some(crate::netns::listen_for_run(egress).map_err(HelperError::from)?),
            None => None,
        };
        let outcome = self.fork_and_supervise(order, code, self.coverage, started);
        let mut outcome = crate::netns::finish(link, outcome)?;
        if let Some(cg) = &self.cgroup {
            let after = cg.stats();
            let killed = outcome.signal == Some(libc::SIGKILL);
            outcome.oom_killed |= after.oom_kills > before.oom_kills
                || (killed
                    && after.memory_limit_hits > before.memory_limit_hits
                    && !outcome.timed_out
                    && !outcome.output_limited);
            outcome.pids_limited |= after.pids_limit_hits > before.pids_limit_hits;
            if let Some(peak) = after.peak_memory_bytes {
                outcome.peak_memory_bytes = peak.saturating_sub(baseline.memory_bytes);
            }
        }
        Ok(outcome)
    }

    fn fork_and_supervise(
        &mut self,
        order: &RunOrder,
        code: &[u8],
        coverage: CgroupCoverage,
        started: Instant,
    ) -> Result<JailOutcome, ZygoteError> {
        let pipes = helper::channels()?;
        let memfd = code_memfd(code)?;
        let params = ChildParams {
            env: order.env.clone(),
            language: "python3".into(),
            limits: order.limits,
            coverage,
            seccomp: order.seccomp.clone(),
            use_listener: self.use_listener,
            insecure: order.insecure,
        };
        let mut message = vec![b'F'];
        message.extend_from_slice(&serde_json::to_vec(&params).map_err(ProtocolError::from)?);
        let fds = [
            pipes.control.1.as_raw_fd(),
            pipes.stdout.1.as_raw_fd(),
            pipes.stderr.1.as_raw_fd(),
            memfd.as_raw_fd(),
        ];
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&message)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(ZygoteError::Socket)?;
        drop((pipes.control.1, pipes.stdout.1, pipes.stderr.1, memfd));

        let mut buf = [0u8; 4096];
        let n = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(ZygoteError::Socket)?;
        match buf[..n].first() {
            Some(b'P') => {}
            Some(&msg::ERROR) => {
                return Err(ZygoteError::Start(
                    String::from_utf8_lossy(&buf[1..n]).into_owned(),
                ))
            }
            _ => return Err(ZygoteError::Gone),
        }
        let child = only_child(self.pid).map_err(|detail| ZygoteError::Child {
            zygote: self.pid.as_raw(),
            detail,
        })?;
        // A handle that stays valid after the zygote reaps the child (no pid reuse races).
        let handle = ProcessHandle::open(child);
        let mut guard = KillOnDrop(Some(child));
        nix::unistd::write(&pipes.control.0, &[msg::GO]).map_err(ZygoteError::Socket)?;
        let watch = Watch {
            limits: &order.limits,
            mode: order.seccomp.mode,
            target: child,
            started,
        };
        let (outcome, reaped) = helper::supervise_reporting(
            &watch,
            &pipes.control.0,
            Some(&self.socket),
            pipes.stdout.0,
            pipes.stderr.0,
        );
        if !reaped {
            self.unreaped += 1;
        }
        // The child may have reported its own exit early (its control socket is open to the
        // program) and kept running: it never outlives its run.
        if let Some(handle) = &handle {
            handle.kill();
        }
        // The zygote reaps the child; never wait for it here.
        guard.0 = None;
        let mut outcome = outcome?;
        outcome.wall_ms = started.elapsed().as_millis() as u64;
        Ok(outcome)
    }
}

impl Zygote {
    /// The zygote reports every child's end after reaping it. When the child reported its own
    /// exit first (the usual case), that late report is still queued: take it before the next
    /// fork, so it is never mistaken for the next run's.
    fn await_previous_exit(&mut self) -> Result<(), ZygoteError> {
        while self.unreaped > 0 {
            let mut buf = [0u8; 64];
            let n = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(ZygoteError::Socket)?;
            match buf[..n].first() {
                Some(&msg::EXITED) => self.unreaped -= 1,
                None => return Err(ZygoteError::Gone),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.init, nix::sys::signal::Signal::SIGKILL);
        if let Some(init) = self.guard.0.take() {
            let _ = nix::sys::wait::waitpid(init, None);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.remove();
        }
    }
}

/// A pidfd: signals reach exactly the process it was opened for, even after that process
/// was reaped and its pid reused.
struct ProcessHandle(OwnedFd);

impl ProcessHandle {
    fn open(pid: Pid) -> Option<ProcessHandle> {
        // SAFETY: pidfd_open returns a new descriptor or -1; we take ownership of it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        // SAFETY: a non-negative result is a fresh descriptor nobody else owns.
        (fd >= 0).then(|| ProcessHandle(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    fn kill(&self) {
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
}

/// The single child of `parent` (host pids), from /proc.
fn only_child(parent: Pid) -> Result<Pid, String> {
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

fn code_memfd(code: &[u8]) -> Result<OwnedFd, ZygoteError> {
    let name = c"hako-program";
    // SAFETY: memfd_create returns a new descriptor or -1; we take ownership of it.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(ZygoteError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(code).map_err(ZygoteError::Memfd)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(ZygoteError::Memfd)?;
    Ok(OwnedFd::from(file))
}

// ---------------------------------------------------------------------------------------
// Inside the zygote: called through the library the zygote loaded at start.

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("bad run parameters: {0}")]
    Params(String),
    #[error("wait for the supervisor: {0}")]
    Sync(Errno),
    #[error("new {what} namespace: {source}")]
    Namespace { what: &'static str, source: Errno },
    #[error("mount {what}: {source}")]
    Mount { what: &'static str, source: Errno },
    #[error("switch to the run uid: {0}")]
    Identity(String),
    #[error("redirect standard streams: {0}")]
    Stdio(Errno),
    #[error("build the seccomp policy: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{0}")]
    LockDown(#[from] LockDownError),
}

/// Called in the zygote right before it forks: the next child becomes pid 1 of a fresh pid
/// namespace.
pub fn prepare_fork() -> Result<(), ChildError> {
    let own = std::fs::File::open("/proc/self/ns/pid").map_err(|e| ChildError::Namespace {
        what: "pid",
        source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    // Reset "pid namespace for children" to our own, then ask for a new one.
    nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID).map_err(|source| {
        ChildError::Namespace {
            what: "pid",
            source,
        }
    })?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(|source| {
        ChildError::Namespace {
            what: "pid",
            source,
        }
    })
}

/// Confines a freshly forked run child. Descriptors other than stdio, `run_ctl` and `keep`
/// are closed. On error the message has been sent to the supervisor.
pub fn confine_child(
    params: &[u8],
    run_ctl: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    keep: RawFd,
) -> Result<(), ChildError> {
    let result = confine_child_inner(params, run_ctl, stdout, stderr, keep);
    if let Err(err) = &result {
        let mut message = vec![msg::ERROR];
        message.extend_from_slice(err.to_string().as_bytes());
        let _ = nix::unistd::write(
            // SAFETY: run_ctl is open for the duration of this call.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(run_ctl) },
            &message,
        );
    }
    result
}

fn confine_child_inner(
    params: &[u8],
    run_ctl: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    keep: RawFd,
) -> Result<(), ChildError> {
    let params: ChildParams =
        serde_json::from_slice(params).map_err(|e| ChildError::Params(e.to_string()))?;
    let mut go = [0u8; 1];
    match read(run_ctl, &mut go) {
        Ok(1) if go[0] == msg::GO => {}
        Ok(_) => return Err(ChildError::Sync(Errno::EPIPE)),
        Err(err) => return Err(ChildError::Sync(err)),
    }
    use nix::sched::CloneFlags;
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(|source| ChildError::Namespace {
        what: "mount/ipc/uts",
        source,
    })?;
    let tmp_options = format!(
        "size={},mode=1777,uid={RUN_UID},gid={RUN_GID}",
        params.limits.tmp_bytes
    );
    mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(tmp_options.as_str()),
    )
    .map_err(|source| ChildError::Mount {
        what: "/tmp",
        source,
    })?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| ChildError::Mount {
        what: "/proc",
        source,
    })?;
    let _ = nix::unistd::sethostname("hako");
    // The zygote is exempt from the OOM killer; a run child must not be.
    let _ = std::fs::write("/proc/self/oom_score_adj", "0");
    become_run_user()?;
    nix::unistd::chdir("/tmp").map_err(|source| ChildError::Mount {
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
        // SAFETY: dup2 onto the standard descriptors; both are valid open descriptors.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(ChildError::Stdio(Errno::last()));
        }
    }
    let program = seccomp::build_program(
        &params.language,
        &params.seccomp.extra_allowed,
        params.seccomp.mode,
        params.use_listener,
    )?;
    lockdown::lock_down(
        &LockDown {
            language: &params.language,
            limits: &params.limits,
            coverage: params.coverage,
            seccomp: &program,
            use_listener: params.use_listener,
            insecure: params.insecure,
        },
        run_ctl,
        &[keep],
    )?;
    Ok(())
}

fn become_run_user() -> Result<(), ChildError> {
    let id = |e: Errno| ChildError::Identity(e.to_string());
    nix::unistd::setgroups(&[]).map_err(id)?;
    let gid = nix::unistd::Gid::from_raw(RUN_GID);
    let uid = nix::unistd::Uid::from_raw(RUN_UID);
    nix::unistd::setresgid(gid, gid, gid).map_err(id)?;
    // SAFETY: PR_SET_KEEPCAPS only changes this process's securebits for the next setuid.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    nix::unistd::setresuid(uid, uid, uid).map_err(id)?;
    let permitted = caps::read(None, caps::CapSet::Permitted)
        .map_err(|e| ChildError::Identity(e.to_string()))?;
    caps::set(None, caps::CapSet::Effective, &permitted)
        .map_err(|e| ChildError::Identity(e.to_string()))
}
