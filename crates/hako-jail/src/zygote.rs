//! Warm Python: a jailed interpreter that has imported the preload modules forks one child
//! per run.
//!
//! ```text
//! zygote helper (`hako __zygote`, host side, single-threaded)
//!  └─ init (pid 1 of the zygote's namespaces)
//!      └─ zygote (python, pid 2; keeps namespace capabilities, no seccomp)
//!          └─ run child (pid 1 of its own pid/mount/ipc/uts namespaces, uid RUN_UID)
//! ```
//! The helper keeps one child prepared: it asks the zygote to fork (passing pipes, a control
//! socket and an empty memfd), and the child calls [`confine_child`] (Rust, through the small
//! library the zygote loaded at start): it copies the calibrated hot pages, unshares its
//! mount/ipc/uts namespaces, mounts a fresh /tmp and /proc, switches to the run uid and
//! applies [`crate::lockdown`], then waits. When a run arrives the helper writes the program
//! into the memfd and says RUN; only then does the child read it. While that child runs, the
//! next one is forked and confines itself. A child is never reused.

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
use std::io::{self, IoSlice};
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
    /// Pages each prepared child copies ahead of its run (from the calibration run).
    #[serde(default)]
    pub hot_pages: u64,
    /// Memory a prepared child holds, in bytes (0 when unknown).
    #[serde(default)]
    pub prepared_bytes: u64,
}

/// What a run child needs to confine itself; sent by the helper through the zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildParams {
    pub language: String,
    pub limits: Limits,
    pub coverage: CgroupCoverage,
    pub seccomp: SeccompSpec,
    pub use_listener: bool,
    pub insecure: bool,
    /// Address ranges to copy before the run (see `Zygote::calibrate`).
    #[serde(default)]
    pub hot_pages: Vec<(u64, u64)>,
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
        hot_pages: zygote.hot_pages.iter().map(|(_, len)| len / 4096).sum(),
        prepared_bytes: zygote.prepared_bytes,
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
        zygote.settle();
    }
}

struct Zygote {
    init: Pid,
    /// This helper entered the zygote's network namespace (needed for proxy-mode runs).
    in_zygote_netns: bool,
    /// Holds the zygote and its run children.
    cgroup: Option<crate::cgroup::RunCgroup>,
    coverage: CgroupCoverage,
    pid: Pid,
    socket: OwnedFd,
    skipped: Vec<String>,
    use_listener: bool,
    runs: u64,
    /// The next run's child: forked and confined while the previous run ran, waiting for
    /// its program.
    prepared: Option<RunChild>,
    /// A fork request the zygote has yet to answer (made while the last run ran).
    requested: Option<PendingChild>,
    /// The last run's child, killed; the next run waits until it is gone.
    last: Option<RunChild>,
    /// Memory a prepared child holds (it shares the cgroup with the run before it).
    prepared_bytes: u64,
    /// Pages every run writes (learnt from hako's own calibration run); prepared children
    /// copy them ahead of time, off the clock.
    hot_pages: Vec<(u64, u64)>,
    guard: KillOnDrop,
}

/// What a run child is confined with. A prepared child takes a run of the same shape only.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunShape {
    limits: Limits,
    seccomp: SeccompSpec,
    insecure: bool,
}

impl RunShape {
    fn of(order: &RunOrder) -> RunShape {
        RunShape {
            limits: order.limits,
            seccomp: order.seccomp.clone(),
            insecure: order.insecure,
        }
    }
}

/// A fork request the zygote has yet to answer.
struct PendingChild {
    control: OwnedFd,
    output: (OwnedFd, OwnedFd),
    program: OwnedFd,
    shape: RunShape,
}

/// A forked run child and the helper's ends of its channels. Killed on drop.
struct RunChild {
    host_pid: Pid,
    handle: ProcessHandle,
    control: OwnedFd,
    /// Taken by supervision.
    output: Option<(OwnedFd, OwnedFd)>,
    /// Receives the run's environment and program when the run starts.
    program: OwnedFd,
    shape: RunShape,
}

impl RunChild {
    fn has_exited(&self) -> bool {
        self.handle.wait_exit(0)
    }

    /// True once the zygote has reaped the child: it reports the end on the child's control
    /// socket, then closes it. Never waits.
    fn is_reaped(&self) -> bool {
        loop {
            if !wait_readable(self.control.as_fd(), 0) {
                return false;
            }
            match helper::receive_control(&self.control) {
                Ok(Control::Closed) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    }

    /// Kills the child and waits until it is gone.
    fn retire(self) {
        self.handle.kill();
        self.handle.wait_exit(5_000);
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        self.handle.kill();
    }
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
        let mut zygote = Zygote {
            init,
            in_zygote_netns,
            cgroup,
            coverage,
            pid,
            socket: ours,
            skipped,
            use_listener: notify::user_notif_supported(),
            runs: 0,
            prepared: None,
            requested: None,
            last: None,
            prepared_bytes: 0,
            hot_pages: Vec::new(),
            guard,
        };
        zygote.calibrate(spec);
        Ok(zygote)
    }

    fn alive(&self) -> bool {
        nix::sys::signal::kill(self.pid, None).is_ok()
    }

    /// Takes the zygote's answer to the fork request made during the last run: the next
    /// child. Called once the last run's answer is out, so that answer never waits for a fork.
    fn settle(&mut self) {
        if let Some(pending) = self.requested.take() {
            match self.receive_child(pending) {
                Ok(next) => self.prepared = Some(next),
                Err(err) => eprintln!("hako zygote: preparing the next child failed: {err}"),
            }
        }
    }

    fn run(&mut self, order: &RunOrder, code: &[u8]) -> Result<JailOutcome, ZygoteError> {
        let started = Instant::now();
        self.settle();
        // The previous run's child is gone (its memory uncharged) before we measure. Until
        // the zygote has reaped it, it still counts as a pid.
        let mut zombies = 0;
        if let Some(last) = self.last.take() {
            last.handle.wait_exit(5_000);
            if !last.is_reaped() {
                zombies = 1;
            }
        }
        let shape = RunShape::of(order);
        let child = match self.prepared.take() {
            Some(child) if child.shape == shape && !child.has_exited() => child,
            other => {
                if let Some(stale) = other {
                    stale.retire();
                }
                self.fork_child(&shape)?
            }
        };
        self.runs += 1;
        // The child runs inside the zygote's own group (no migration): the group's limits
        // become what is in use now, plus the run's limits, plus room for the next prepared
        // child, which is forked while this one runs. (The run's own task is already in
        // use; the next child takes its place in the count.)
        let baseline = self
            .cgroup
            .as_ref()
            .map(|cg| cg.usage())
            .unwrap_or_default();
        if let Some(cg) = &self.cgroup {
            let above = |used: u64, limit: u64, room: u64| {
                if limit == 0 {
                    0
                } else {
                    used + limit + room
                }
            };
            cg.retune(&crate::cgroup::CgroupLimits {
                memory_bytes: above(
                    baseline.memory_bytes,
                    order.limits.memory_bytes,
                    self.prepared_bytes,
                ),
                pids: above(baseline.tasks.saturating_sub(zombies), order.limits.pids, 0),
            })
            .map_err(HelperError::from)?;
        }
        let before = self
            .cgroup
            .as_ref()
            .map(|cg| cg.stats())
            .unwrap_or_default();
        // The group outlives the run: its own peak needs a count restarted now.
        let peak = self.cgroup.as_ref().and_then(|cg| cg.peak_counter());
        let link = match &order.egress {
            Some(_) if !self.in_zygote_netns => {
                return Err(ZygoteError::Start(
                    "no access to the zygote's network namespace".into(),
                ))
            }
            Some(egress) => Some(crate::netns::listen_for_run(egress).map_err(HelperError::from)?),
            None => None,
        };
        let outcome = self.hand_over_and_supervise(child, order, code, started);
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
            // Without a restarted count (v2 before 6.12) the zygote's report stays: the run
            // process's own maximum resident size.
            if let Some(peak) = peak.and_then(|p| p.read()) {
                outcome.peak_memory_bytes = peak.saturating_sub(baseline.memory_bytes);
            }
        }
        Ok(outcome)
    }

    /// Asks the zygote for a child confined with `shape` and waits until it exists; it
    /// confines itself meanwhile and then waits for its program.
    fn fork_child(&mut self, shape: &RunShape) -> Result<RunChild, ZygoteError> {
        let pending = self.request_child(shape)?;
        self.receive_child(pending)
    }

    /// Sends the fork request; the zygote forks while we do other things.
    fn request_child(&mut self, shape: &RunShape) -> Result<PendingChild, ZygoteError> {
        let pipes = helper::channels()?;
        let program = empty_memfd()?;
        let params = ChildParams {
            language: "python3".into(),
            limits: shape.limits,
            coverage: self.coverage,
            seccomp: shape.seccomp.clone(),
            use_listener: self.use_listener,
            insecure: shape.insecure,
            hot_pages: self.hot_pages.clone(),
        };
        let mut message = vec![b'F'];
        message.extend_from_slice(&serde_json::to_vec(&params).map_err(ProtocolError::from)?);
        let fds = [
            pipes.control.1.as_raw_fd(),
            pipes.stdout.1.as_raw_fd(),
            pipes.stderr.1.as_raw_fd(),
            program.as_raw_fd(),
        ];
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&message)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(ZygoteError::Socket)?;
        Ok(PendingChild {
            control: pipes.control.0,
            output: (pipes.stdout.0, pipes.stderr.0),
            program,
            shape: shape.clone(),
        })
    }

    /// The zygote's answer to a fork request: "P" and a pidfd of the child.
    fn receive_child(&mut self, pending: PendingChild) -> Result<RunChild, ZygoteError> {
        let answer = helper::receive_control(&self.socket)?;
        let handle = match answer {
            Control::Forked(Some(fd)) => ProcessHandle(fd),
            Control::Error(text) => return Err(ZygoteError::Start(text)),
            _ => return Err(ZygoteError::Gone),
        };
        let host_pid = handle.pid().ok_or_else(|| ZygoteError::Child {
            zygote: self.pid.as_raw(),
            detail: "the child ended at once".into(),
        })?;
        Ok(RunChild {
            host_pid,
            handle,
            control: pending.control,
            output: Some(pending.output),
            program: pending.program,
            shape: pending.shape,
        })
    }

    /// Gives `child` its program, prepares the next child meanwhile, and supervises the run.
    fn hand_over_and_supervise(
        &mut self,
        mut child: RunChild,
        order: &RunOrder,
        code: &[u8],
        started: Instant,
    ) -> Result<JailOutcome, ZygoteError> {
        write_program(&child.program, &order.env, code)?;
        // SAFETY: setpriority only changes the nice value of the child our pidfd names.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, child.host_pid.as_raw() as u32, 0) };
        nix::unistd::write(&child.control, &[msg::RUN]).map_err(ZygoteError::Socket)?;
        // The next run's child forks and confines itself while this one runs.
        let next = self.request_child(&child.shape.clone());
        let watch = Watch {
            limits: &order.limits,
            mode: order.seccomp.mode,
            target: child.host_pid,
            started,
        };
        // Both the child's own exit report and the zygote's (after reaping it) arrive on the
        // child's control socket.
        let (stdout, stderr) = child.output.take().ok_or(ZygoteError::Gone)?;
        let outcome = helper::supervise(&watch, &child.control, stdout, stderr);
        // The child may have reported its exit early and kept running: it never outlives its
        // run. The next run waits until it is gone.
        child.handle.kill();
        self.last = Some(child);
        // Taken after the answer is out (see `settle`).
        match next {
            Ok(pending) => self.requested = Some(pending),
            Err(err) => eprintln!("hako zygote: preparing the next child failed: {err}"),
        }
        let mut outcome = outcome?;
        outcome.wall_ms = started.elapsed().as_millis() as u64;
        Ok(outcome)
    }

    /// Runs hako's own calibration program once and keeps the pages it wrote: every later
    /// child copies them before its run. No request ever influences this set.
    fn calibrate(&mut self, spec: &JailSpec) {
        let shape = RunShape {
            limits: spec.limits,
            seccomp: SeccompSpec {
                mode: crate::spec::SeccompMode::Enforce,
                extra_allowed: spec.seccomp.extra_allowed.clone(),
            },
            insecure: spec.insecure,
        };
        let before = self.cgroup.as_ref().map(|cg| cg.usage().memory_bytes);
        match self.calibration_run(&shape, &spec.env) {
            Ok(pages) => self.hot_pages = pages,
            Err(err) => eprintln!("hako zygote: calibration failed (runs still work): {err}"),
        }
        // Measure what a prepared child holds, and keep it for the first run.
        self.prepared = self.fork_child(&shape).ok();
        if let (Some(before), Some(cg), Some(child)) = (before, &self.cgroup, &self.prepared) {
            // Its READY message arrives once it is confined.
            wait_readable(child.control.as_fd(), 2_000);
            self.prepared_bytes = cg.usage().memory_bytes.saturating_sub(before);
        }
    }

    fn calibration_run(
        &mut self,
        shape: &RunShape,
        env: &[(String, String)],
    ) -> Result<Vec<(u64, u64)>, ZygoteError> {
        let mut child = self.fork_child(shape)?;
        // The environment runs get (the zygote's own, without its settings).
        let warmup = env
            .iter()
            .find(|(name, _)| name == "HAKO_PYTHON_WARMUP")
            .map_or("", |(_, code)| code.as_str());
        let env: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| !name.starts_with("HAKO_"))
            .cloned()
            .collect();
        // A JSON string is a Python string literal.
        let program = format!(
            "WARMUP = {}\n{CALIBRATION}",
            serde_json::Value::String(warmup.to_string())
        );
        write_program(&child.program, &env, program.as_bytes())?;
        nix::unistd::write(&child.control, &[msg::RUN]).map_err(ZygoteError::Socket)?;
        let (stdout, _stderr) = child.output.take().ok_or(ZygoteError::Gone)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.ends_with(b"calibrated\n") {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u16;
            if left == 0 || !wait_readable(stdout.as_fd(), left) {
                child.retire();
                return Err(ZygoteError::Start(
                    "the calibration run did not finish".into(),
                ));
            }
            let mut buf = [0u8; 256];
            match read(stdout.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    child.retire();
                    return Err(ZygoteError::Start("the calibration run ended early".into()));
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let pages = written_pages(child.host_pid);
        child.retire();
        pages.map_err(|e| ZygoteError::Start(format!("read the calibration run's pages: {e}")))
    }
}

/// The pages `pid` has written since it was forked, as (address, length) ranges: present
/// pages of its private writable mappings that only it maps. At most 64 MiB.
fn written_pages(pid: Pid) -> io::Result<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    const PAGE: u64 = 4096;
    const PRESENT: u64 = 1 << 63;
    const EXCLUSIVE: u64 = 1 << 56;
    const LIMIT: u64 = 16_384;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut total = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(span), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !(perms.starts_with("rw") && perms.ends_with('p')) {
            continue;
        }
        let Some((start, end)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut entries = vec![0u8; ((end - start) / PAGE * 8) as usize];
        pagemap.read_exact_at(&mut entries, start / PAGE * 8)?;
        for (i, entry) in entries.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8]));
            if entry & PRESENT == 0 || entry & EXCLUSIVE == 0 {
                continue;
            }
            if total == LIMIT {
                return Ok(ranges);
            }
            total += 1;
            let address = start + i as u64 * PAGE;
            match ranges.last_mut() {
                Some((first, len)) if *first + *len == address => *len += PAGE,
                _ => ranges.push((address, PAGE)),
            }
        }
    }
    Ok(ranges)
}

/// hako's calibration program: a Dify-style template with a trivial `main`; then it says
/// "calibrated" and waits to be inspected.
const CALIBRATION: &str = include_str!("calibration.py");

impl Drop for Zygote {
    fn drop(&mut self) {
        self.prepared = None;
        self.last = None;
        let _ = nix::sys::signal::kill(self.init, nix::sys::signal::Signal::SIGKILL);
        if let Some(init) = self.guard.0.take() {
            let _ = nix::sys::wait::waitpid(init, None);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.remove();
        }
    }
}

/// A pidfd (the zygote opens it right after the fork and passes it on): signals reach exactly
/// that process, even after it was reaped and its pid reused.
struct ProcessHandle(OwnedFd);

impl ProcessHandle {
    /// The process's pid in our namespace; `None` once it has been reaped.
    fn pid(&self) -> Option<Pid> {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.0.as_raw_fd())).ok()?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse::<i32>()
            .ok()?;
        (pid > 0).then(|| Pid::from_raw(pid))
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

    /// Waits up to `ms` for the process to end (its memory and namespaces are released by
    /// then); true when it has.
    fn wait_exit(&self, ms: u16) -> bool {
        wait_readable(self.0.as_fd(), ms)
    }
}

/// Waits up to `ms` for `fd` to be readable (or hung up); true when it is, and on a poll
/// error (the caller's next read then reports it).
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, ms: u16) -> bool {
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

fn empty_memfd() -> Result<OwnedFd, ZygoteError> {
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
fn write_program(
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

/// Nice value of a child while it is prepared ahead of its run.
const PREPARING_NICE: libc::c_int = 19;

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
    // Preparing ahead of time must not slow the run in progress: lowest priority until the
    // helper hands this child its run (and restores the priority).
    // SAFETY: setpriority only changes this process's nice value.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, PREPARING_NICE) };
    let params: ChildParams =
        serde_json::from_slice(params).map_err(|e| ChildError::Params(e.to_string()))?;
    copy_hot_pages(&params.hot_pages);
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
    lockdown::switch_identity(RUN_UID, RUN_GID, true)
        .map_err(|e| ChildError::Identity(e.to_string()))?;
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
    // Confined. Wait for the run; the caller then reads the program.
    await_message(run_ctl, msg::RUN)
}

fn await_message(run_ctl: RawFd, expected: u8) -> Result<(), ChildError> {
    let mut byte = [0u8; 1];
    loop {
        return match read(run_ctl, &mut byte) {
            Ok(1) if byte[0] == expected => Ok(()),
            Ok(_) => Err(ChildError::Sync(Errno::EPIPE)),
            Err(Errno::EINTR) => continue,
            Err(err) => Err(ChildError::Sync(err)),
        };
    }
}

/// Copies (breaks copy-on-write sharing of) the pages most runs write, so the run does not
/// take those faults on the clock. Ranges that are gone or not writable are skipped.
fn copy_hot_pages(ranges: &[(u64, u64)]) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    for &(start, len) in ranges {
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
