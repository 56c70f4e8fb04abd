//! Warm Python: a jailed interpreter that has imported the preload modules forks one child
//! per run.
//!
//! ```text
//! zygote helper (`hako __zygote`, host side, single-threaded)
//!  └─ init (pid 1 of the zygote's namespaces)
//!      └─ zygote (python, pid 2; keeps namespace capabilities, no seccomp)
//!          ├─ reaper (pid 1 of a run's pid namespace: see `reaper`)
//!          └─ run child (pid 2 there; its own mount/ipc/uts/net namespaces, uid RUN_UID)
//! ```
//! The helper keeps one child prepared: it asks the zygote to fork (passing pipes, a control
//! socket and an empty memfd). The zygote's loop is Rust ([`forker`], in the small library
//! the zygote loaded at start): it forks, and the child calls [`child::confine_child`]: it
//! copies the calibrated hot pages, unshares its
//! mount/ipc/uts/network namespaces, mounts a fresh /tmp and /proc, switches to the run uid
//! and applies [`crate::lockdown`], says READY, then waits. When a run arrives the helper
//! takes READY, writes the program into the memfd and says RUN; the child closes its control
//! socket and only then reads the program: the program holds no channel to its supervisor,
//! and its end is reported by the zygote after `wait4`. While that child runs, the next one
//! is forked and confines itself. A child is never reused. The messages are
//! [`hako_wire::control`]'s.

use crate::helper::unix_diag::ReadyFds;
use crate::helper::{self, HelperError, KillOnDrop, Supervised, Watch};
use crate::lockdown::CgroupCoverage;
use crate::netns::Egress;
use crate::protocol::{self, ProtocolError};
use crate::seccomp::{self, notify};
use crate::spec::{JailOutcome, JailSpec, Limits, SeccompSpec, ZYGOTE_RUN_IDS};
use crate::sys::{Kernel, REAL};
use hako_wire::control::{self, Message, Received, Receiver};
use hako_wire::zygote::FilterProgram;
pub use hako_wire::zygote::{ChildParams, RunOrder, Stage, ZygoteReport, ZygoteSettings};
use hako_wire::Language;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

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
    #[error("talk to the zygote: {0}")]
    Control(#[from] control::ControlError),
    #[error("the zygote broke its protocol: {0}")]
    OutOfState(#[source] helper::ControlFault),
    #[error("the zygote broke its protocol: {0}")]
    Receiver(#[source] control::OutOfState),
    #[error("the zygote did not start: dup stderr: {0}")]
    DupStderr(#[source] io::Error),
    #[error("the calibration run's listing of its pages was refused: {0}")]
    Calibration(#[source] calibrate::CalibrationError),
    #[error("the run child sent no egress listener")]
    NoListener,
    #[error("find the run child of zygote {zygote}: {detail}")]
    Child { zygote: i32, detail: String },
    #[error("write the program into a memfd: {0}")]
    Memfd(io::Error),
}

mod calibrate;
mod child;
mod family;
mod forker;
mod process;
mod reaper;
mod written;
pub use child::ChildError;
pub use family::{parent_main, worker_main, MAX_WORKERS};
pub use forker::{can_serve, serve as serve_orders, ChildStart, ForkerError};
use process::{
    empty_memfd, only_child, set_nice, wait_readable, write_program, zygote_cgroup, ProcessHandle,
    PRELOAD_NICE,
};
pub use reaper::ReaperError;
pub use written::list_written_pages;

/// The Python side of the zygote, run as the zygote's program (after the shared
/// [`EXIT_STATUS_PY`]).
pub const BOOTSTRAP: &str = concat!(include_str!("exit_status.py"), include_str!("zygote.py"));

/// `_exit_status(e)`: how a Python run driver turns a `SystemExit` into an exit status.
pub const EXIT_STATUS_PY: &str = include_str!("exit_status.py");

/// Entry point of `hako __zygote`: starts one zygote, then serves runs one at a time.
/// stdin: the zygote's [`JailSpec`] frame (code = [`BOOTSTRAP`]), then for each run a
/// [`RunOrder`] frame and the program. stdout: a [`ZygoteReport`] frame, then one outcome
/// frame per run.
pub fn main() -> i32 {
    helper::watch_for_cancel();
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    // The zygote's host ids stay leased for as long as this helper (and so the zygote) lives.
    let mut _ids = None;
    let started = protocol::read_json::<JailSpec>(&mut input)
        .map_err(ZygoteError::from)
        .and_then(|mut spec| {
            _ids = helper::lease_ids(&mut spec)?;
            let bootstrap = protocol::read_bytes(&mut input)?;
            let settings = take_settings(&mut spec);
            Zygote::start(&spec, &bootstrap, &settings)
        });
    let zygote = match started {
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
    serve(zygote, &mut input, &mut output)
}

/// Reports the started zygote, then serves runs one at a time until the caller is done.
fn serve(mut zygote: Zygote, input: &mut impl io::Read, output: &mut impl Write) -> i32 {
    let report = ZygoteReport {
        ready: true,
        error: None,
        skipped: zygote.skipped.clone(),
        zygote_pid: zygote.pid.as_raw(),
        hot_pages: zygote.hot_bytes() / 4096,
        prepared_bytes: zygote.prepared_bytes,
    };
    if protocol::write_json(&mut *output, &report).is_err() {
        return 1;
    }
    loop {
        let order = match protocol::read_json::<RunOrder>(&mut *input) {
            Ok(order) => order,
            Err(_) => return 0, // the caller is done with this zygote
        };
        let code = match protocol::read_bytes(&mut *input) {
            Ok(code) => code,
            Err(_) => return 0,
        };
        zygote.handed_over = false;
        let mut outcome = zygote
            .run(&order, &code, &mut *output)
            .unwrap_or_else(|err| JailOutcome {
                setup_error: Some(err.to_string()),
                ..Default::default()
            });
        if zygote.handed_over {
            // The program may have run: whatever failed now is the run's failure, never a
            // setup error (which the caller may serve elsewhere).
            if let Some(err) = outcome.setup_error.take() {
                outcome.failure = Some(format!("the run's supervision failed: {err}"));
            }
        } else if output.write_all(&[Stage::NotStarted.byte()]).is_err() {
            return 1;
        }
        let failed = outcome.setup_error.is_some() || outcome.failure.is_some();
        let gone = failed && !zygote.alive();
        if protocol::encode_outcome(&outcome, &mut *output).is_err() || gone {
            return 1;
        }
        zygote.settle();
    }
}

/// Takes the operator's preload list and warm-up code out of the zygote's environment: they
/// reach the zygote as [`Message::Settings`] instead, which no run child can read.
fn take_settings(spec: &mut JailSpec) -> ZygoteSettings {
    let mut settings = ZygoteSettings::default();
    spec.env.retain(|(name, value)| match name.as_str() {
        "HAKO_PYTHON_WARMUP" => {
            settings.warmup = value.clone();
            false
        }
        "HAKO_PRELOAD" => {
            settings.preload = serde_json::from_str(value).unwrap_or_default();
            false
        }
        _ => true,
    });
    settings
}

/// What keeps a zygote alive, and what ends it.
enum Owner {
    /// A zygote in a jail of its own: its init (killed, then reaped).
    Jail { init: Pid, guard: KillOnDrop },
    /// A worker zygote forked from a preloaded parent: killed through its pidfd.
    Worker(ProcessHandle),
}

struct Zygote {
    owner: Owner,
    /// The current run's program was handed over (its [`Stage`] byte is out).
    handed_over: bool,
    /// The zygote's own socket, where it stands in its protocol.
    receiver: Receiver,
    /// Holds the zygote and its run children.
    cgroup: Option<crate::cgroup::RunCgroup>,
    coverage: CgroupCoverage,
    pid: Pid,
    socket: OwnedFd,
    skipped: Vec<String>,
    use_listener: bool,
    runs: u64,
    /// Children forked so far (picks each child's run id).
    forks: u32,
    /// The next run's child: forked and confined while the previous run ran, waiting for
    /// its program.
    prepared: Option<RunChild>,
    /// A fork request the zygote has yet to answer (made while the last run ran).
    requested: Option<PendingChild>,
    /// The last run's child, killed; the next run waits until it is gone.
    last: Option<RunChild>,
    /// The current run's mount namespace, held from its hand-over until its answer is out:
    /// the program's exit then does not unmount its /proc, masks and scratch file systems
    /// (which waits on the kernel) before the zygote can report that exit. Released in
    /// [`Zygote::settle`], before the next run measures the group.
    held_mounts: Option<std::fs::File>,
    /// Memory a prepared child holds (it shares the cgroup with the run before it).
    prepared_bytes: u64,
    /// Pages every run writes (learnt from hako's own calibration run); prepared children
    /// copy them ahead of time, off the clock.
    hot_pages: Vec<(u64, u64)>,
    /// The last seccomp filter compiled for its children, and what it was compiled from.
    filter: Option<(FilterInputs, FilterProgram)>,
    /// The run ids its children take: `first .. first + count` (a worker zygote shares its
    /// parent's user namespace with the other workers and has a range of its own).
    slots: (u32, u32),
}

/// What a run child's seccomp filter is compiled from, besides the language (Python) and
/// whether the helper listens for denied calls (fixed per zygote).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilterInputs {
    seccomp: SeccompSpec,
    memory_guarded: bool,
}

/// What a run child is confined with. A prepared child takes a run of the same shape only.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunShape {
    limits: Limits,
    seccomp: SeccompSpec,
    insecure: bool,
    /// Only hako's calibration run: it reads its own page map (see [`ChildParams`]).
    reads_own_page_map: bool,
}

impl RunShape {
    fn of(order: &RunOrder) -> RunShape {
        RunShape {
            limits: order.limits,
            seccomp: order.seccomp.clone(),
            insecure: order.insecure,
            reads_own_page_map: false,
        }
    }
}

/// What a run's hand-over takes besides its child.
struct Handover<'a> {
    order: &'a RunOrder,
    code: &'a [u8],
    started: Instant,
    /// The child's seccomp listener and sock_diag socket (they came with READY).
    ready: ReadyFds,
    egress: Option<&'a mut Egress>,
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
    /// Pid 1 of the child's pid namespace (host pid): the run's orphans are its children.
    reaper_pid: Pid,
    control: OwnedFd,
    /// Where the child's control channel stands.
    receiver: Receiver,
    /// Taken by supervision.
    output: Option<(OwnedFd, OwnedFd)>,
    /// Receives the run's environment and program when the run starts.
    program: OwnedFd,
    /// The listener on 127.0.0.1:3128 of the child's network namespace (every child makes
    /// one before it is confined): handed to the guard for a proxy-mode run, else closed.
    egress: Option<OwnedFd>,
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
            match control::receive(&self.control) {
                Ok(Received::Closed) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    }

    /// Waits (until `deadline`) for the child's READY: it is confined. Returns what READY
    /// brought (its seccomp listener and sock_diag socket, each if any). Anything else means
    /// the child cannot take a run. Its egress listener comes first (kept in `egress`).
    fn await_ready(&mut self, deadline: Instant) -> Result<ReadyFds, ZygoteError> {
        // The zygote prepares children at the lowest priority; one that something waits for
        // gets the normal priority, or a loaded host starves it.
        // SAFETY: setpriority only changes the nice value of the child our pidfd names, and
        // of its reaper (whose exit the run's answer waits for; it may have been started by a
        // zygote still at its preload priority).
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, self.host_pid.as_raw() as u32, 0);
            libc::setpriority(libc::PRIO_PROCESS, self.reaper_pid.as_raw() as u32, 0);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(u16::MAX as u128) as u16;
        if !wait_readable(self.control.as_fd(), ms) {
            return Err(ZygoteError::Start(
                "the prepared child did not confine itself in time".into(),
            ));
        }
        match helper::take_control(&self.control, &mut self.receiver) {
            Ok(Some((Message::Egress, fds))) => {
                self.egress = fds.into_iter().next();
                self.await_ready(deadline)
            }
            Ok(Some((Message::Ready, fds))) => Ok(ReadyFds::split(fds)),
            Ok(Some((Message::Error(text), _))) => Err(ZygoteError::Start(text)),
            Ok(Some(_)) | Ok(None) => Err(ZygoteError::Child {
                zygote: self.host_pid.as_raw(),
                detail: "the prepared child ended before its run".into(),
            }),
            Err(why) => Err(ZygoteError::OutOfState(why)),
        }
    }

    /// Tells the confined child to run its program.
    fn start(&mut self) -> Result<(), ZygoteError> {
        self.receiver.handed_over().map_err(ZygoteError::Receiver)?;
        control::send(self.control.as_fd(), &Message::Run, &[])?;
        Ok(())
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
    /// Starts a zygote in a jail of its own, preloads and calibrates it.
    fn start(
        spec: &JailSpec,
        bootstrap: &[u8],
        settings: &ZygoteSettings,
    ) -> Result<Zygote, ZygoteError> {
        let mut zygote = Zygote::boot(spec, bootstrap, settings)?;
        zygote.calibrate(spec, &settings.warmup);
        // Ready: it forks runs' children at normal priority.
        set_nice(zygote.pid, 0);
        Ok(zygote)
    }

    /// Starts the jail and the zygote and waits until it has imported its preload; it stays
    /// at the lowest priority.
    fn boot(
        spec: &JailSpec,
        bootstrap: &[u8],
        settings: &ZygoteSettings,
    ) -> Result<Zygote, ZygoteError> {
        let pipes = helper::channels()?;
        let (ours, theirs) = helper::seqpacket_pair()?;
        // The zygote's own output goes to our stderr (the caller logs it).
        let stderr = || {
            io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(ZygoteError::DupStderr)
        };
        let stdio = (stderr()?, stderr()?);
        drop((pipes.stdout, pipes.stderr));
        let (cgroup, coverage) = zygote_cgroup(spec)?;
        // Declared before `guard`, so on an error init is killed first, then the groups go.
        let mut cgroup = RemoveOnError(cgroup);
        let (init, control, _) = helper::start_jail(
            helper::Plan {
                spec,
                filter: &[],
                use_listener: false,
                coverage,
            },
            bootstrap,
            cgroup.0.as_ref(),
            stdio,
            Some(theirs),
            pipes.control,
        )?;
        let guard = KillOnDrop(Some(init));
        // Neither init nor the zygote is ever the OOM killer's choice; run children reset
        // their own score (see `confine_child`).
        let _ = REAL.write_file(format!("/proc/{init}/oom_score_adj").as_ref(), "-1000");
        match helper::take_control(&control, &mut Receiver::jail()) {
            Ok(Some((Message::Ready, _))) => {}
            Ok(Some((Message::Error(text), _))) => return Err(ZygoteError::Start(text)),
            Ok(_) => {
                return Err(ZygoteError::Start(
                    "the jail ended before the zygote started".into(),
                ))
            }
            Err(why) => return Err(ZygoteError::OutOfState(why)),
        }
        let pid = only_child(init).map_err(|detail| ZygoteError::Child {
            zygote: init.as_raw(),
            detail,
        })?;
        // Preloading (and calibrating) runs at the lowest priority: runs served meanwhile
        // (by other zygotes, or afresh) never wait for it.
        set_nice(pid, PRELOAD_NICE);
        // The operator's settings, then the bootstrap's answer: the modules that failed.
        let body = serde_json::to_vec(settings).map_err(ProtocolError::from)?;
        control::send(ours.as_fd(), &Message::Settings(body), &[])?;
        let mut receiver = Receiver::zygote();
        let skipped = match helper::take_control(&ours, &mut receiver) {
            Ok(Some((Message::ZygoteReady(skipped), _))) => skipped,
            Ok(Some((Message::Error(text), _))) => return Err(ZygoteError::Start(text)),
            Ok(_) => return Err(ZygoteError::Gone),
            Err(why) => return Err(ZygoteError::OutOfState(why)),
        };
        let _ = REAL.write_file(format!("/proc/{pid}/oom_score_adj").as_ref(), "-1000");
        Ok(Zygote {
            owner: Owner::Jail { init, guard },
            handed_over: false,
            receiver,
            cgroup: cgroup.0.take(),
            coverage,
            pid,
            socket: ours,
            skipped,
            use_listener: notify::user_notif_supported(),
            runs: 0,
            forks: 0,
            slots: (0, ZYGOTE_RUN_IDS),
            prepared: None,
            requested: None,
            last: None,
            held_mounts: None,
            prepared_bytes: 0,
            hot_pages: Vec::new(),
            filter: None,
        })
    }

    /// The bytes of the calibrated hot pages.
    fn hot_bytes(&self) -> u64 {
        self.hot_pages.iter().map(|(_, len)| len).sum()
    }

    fn alive(&self) -> bool {
        nix::sys::signal::kill(self.pid, None).is_ok()
    }

    /// Takes the zygote's answer to the fork request made during the last run: the next
    /// child. Called once the last run's answer is out, so that answer never waits for a fork.
    fn settle(&mut self) {
        // The last run's mounts go now (this thread unmounts them), so their memory is
        // uncharged before the next run measures the group.
        self.held_mounts = None;
        if let Some(pending) = self.requested.take() {
            match self.receive_child(pending) {
                Ok(next) => self.prepared = Some(next),
                Err(err) => eprintln!("hako zygote: preparing the next child failed: {err}"),
            }
        }
    }

    fn run(
        &mut self,
        order: &RunOrder,
        code: &[u8],
        output: &mut dyn Write,
    ) -> Result<JailOutcome, ZygoteError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(order.limits.timeout_ms);
        self.settle();
        // The previous run's child is gone (its memory uncharged) before we measure. Until
        // the zygote has reaped it, it and its reaper (ended after it) still count as pids.
        let mut zombies = 0;
        if let Some(last) = self.last.take() {
            last.handle.wait_exit(5_000);
            if !last.is_reaped() {
                zombies = 2;
            }
        }
        let (mut child, ready) = self.confined_child(&RunShape::of(order), deadline)?;
        self.runs += 1;
        // The child runs inside the zygote's own group (no migration): see
        // `cgroup::zygote_headroom` for the group's limits during the run.
        let baseline = self
            .cgroup
            .as_ref()
            .map(|cg| cg.usage())
            .unwrap_or_default();
        if let Some(cg) = &self.cgroup {
            let run = crate::cgroup::CgroupLimits::of(&order.limits);
            cg.retune(&crate::cgroup::zygote_headroom(
                baseline,
                zombies,
                &run,
                self.prepared_bytes,
            ))
            .map_err(HelperError::from)?;
        }
        let before = self
            .cgroup
            .as_ref()
            .map(|cg| cg.stats())
            .unwrap_or_default();
        // The group outlives the run: its own peak needs a count restarted now.
        let peak = self.cgroup.as_ref().and_then(|cg| cg.peak_counter());
        // A run without proxy network keeps no listener: nothing answers on 3128. A run with
        // it reaches the guard once it connects (see `Egress`).
        let mut egress = match (&order.egress, child.egress.take()) {
            (Some(spec), Some(listener)) => Some(Egress::Waiting {
                listener,
                spec: spec.clone(),
            }),
            (Some(_), None) => return Err(ZygoteError::NoListener),
            (None, _) => None,
        };
        let handover = Handover {
            order,
            code,
            started,
            ready,
            egress: egress.as_mut(),
        };
        let mut outcome = self.hand_over_and_supervise(child, handover, output)?;
        outcome.network = egress.and_then(Egress::finish);
        if let Some(cg) = &self.cgroup {
            helper::account_limits(&mut outcome, &cg.stats().since(&before));
            // The run's own peak: the larger of what its group grew by since the count
            // restarted and the zygote's report of the run process's maximum resident size
            // (all there is without a restarted count, v2 before 6.12). Never the group's
            // lifetime peak.
            if let Some(peak) = peak.and_then(|p| p.read()) {
                let grown = peak.saturating_sub(baseline.memory_bytes);
                outcome.peak_memory_bytes = outcome.peak_memory_bytes.max(grown);
            }
        }
        Ok(outcome)
    }

    /// A confined child of `shape` (the prepared one, or else a fresh one) and what its
    /// READY brought.
    fn confined_child(
        &mut self,
        shape: &RunShape,
        deadline: Instant,
    ) -> Result<(RunChild, ReadyFds), ZygoteError> {
        if let Some(mut child) = self.prepared.take() {
            if child.shape == *shape && !child.has_exited() {
                match child.await_ready(deadline) {
                    Ok(ready) => return Ok((child, ready)),
                    Err(err) => eprintln!("hako zygote: the prepared child failed: {err}"),
                }
            }
            child.retire();
        }
        let mut child = self.fork_child(shape)?;
        match child.await_ready(deadline) {
            Ok(ready) => Ok((child, ready)),
            Err(err) => {
                child.retire();
                Err(err)
            }
        }
    }

    /// Asks the zygote for a child confined with `shape` and waits until it exists; it
    /// confines itself meanwhile and then waits for its program.
    fn fork_child(&mut self, shape: &RunShape) -> Result<RunChild, ZygoteError> {
        let pending = self.request_child(shape)?;
        self.receive_child(pending)
    }

    /// The filter a child of `shape` installs: compiled here (as for a spawned jail), once
    /// per distinct policy, so that no child builds one.
    fn filter_for(&mut self, shape: &RunShape) -> Result<FilterProgram, ZygoteError> {
        let inputs = FilterInputs {
            seccomp: shape.seccomp.clone(),
            memory_guarded: crate::helper::memory_guard::guards(
                self.coverage.memory,
                shape.limits.memory_bytes,
            ),
        };
        if let Some((compiled_from, program)) = &self.filter {
            if *compiled_from == inputs {
                return Ok(program.clone());
            }
        }
        let program = seccomp::build_program(
            Language::Python3.as_str(),
            &inputs.seccomp.extra_allowed,
            seccomp::FilterFor {
                mode: inputs.seccomp.mode,
                listener: self.use_listener,
                memory_guarded: inputs.memory_guarded,
                zygote_child: true,
            },
        )
        .map_err(HelperError::from)?;
        let program = seccomp::to_wire(&program);
        self.filter = Some((inputs, program.clone()));
        Ok(program)
    }

    /// Sends the fork request; the zygote forks while we do other things.
    fn request_child(&mut self, shape: &RunShape) -> Result<PendingChild, ZygoteError> {
        let seccomp_filter = self.filter_for(shape)?;
        let pipes = helper::channels()?;
        let program = empty_memfd()?;
        let params = ChildParams {
            language: Language::Python3,
            limits: shape.limits,
            coverage: self.coverage,
            seccomp_filter,
            use_listener: self.use_listener,
            insecure: shape.insecure,
            hot_pages: self.hot_pages.clone(),
            uid_slot: self.slots.0 + self.forks % self.slots.1.max(1),
            reads_own_page_map: shape.reads_own_page_map,
        };
        // At most three children live at once (the last, dying; the current; the prepared).
        self.forks = self.forks.wrapping_add(1);
        let body = serde_json::to_vec(&params).map_err(ProtocolError::from)?;
        let fds = [
            pipes.control.1.as_fd(),
            pipes.stdout.1.as_fd(),
            pipes.stderr.1.as_fd(),
            program.as_fd(),
        ];
        self.receiver
            .fork_requested()
            .map_err(ZygoteError::Receiver)?;
        control::send(self.socket.as_fd(), &Message::Fork(body), &fds)?;
        Ok(PendingChild {
            control: pipes.control.0,
            output: (pipes.stdout.0, pipes.stderr.0),
            program,
            shape: shape.clone(),
        })
    }

    /// The zygote's answer to a fork request: FORKED with pidfds of the child and of its
    /// pid namespace's reaper.
    fn receive_child(&mut self, pending: PendingChild) -> Result<RunChild, ZygoteError> {
        let (handle, reaper) = match helper::take_control(&self.socket, &mut self.receiver) {
            Ok(Some((Message::Forked, fds))) => {
                let mut fds = fds.into_iter().map(ProcessHandle);
                match (fds.next(), fds.next()) {
                    (Some(child), Some(reaper)) => (child, reaper),
                    _ => return Err(ZygoteError::Gone),
                }
            }
            Ok(Some((Message::Error(text), _))) => return Err(ZygoteError::Start(text)),
            Ok(_) => return Err(ZygoteError::Gone),
            Err(why) => return Err(ZygoteError::OutOfState(why)),
        };
        let host_pid = handle.pid().ok_or_else(|| ZygoteError::Child {
            zygote: self.pid.as_raw(),
            detail: "the child ended at once".into(),
        })?;
        let reaper_pid = reaper.pid().ok_or_else(|| ZygoteError::Child {
            zygote: self.pid.as_raw(),
            detail: "the reaper of its pid namespace ended at once".into(),
        })?;
        Ok(RunChild {
            host_pid,
            handle,
            reaper_pid,
            control: pending.control,
            receiver: Receiver::zygote_child(),
            output: Some(pending.output),
            program: pending.program,
            egress: None,
            shape: pending.shape,
        })
    }

    /// Gives the confined `child` its program, prepares the next child meanwhile, and
    /// supervises the run. The [`Stage::HandedOver`] byte goes to `output` before RUN.
    fn hand_over_and_supervise(
        &mut self,
        mut child: RunChild,
        handover: Handover<'_>,
        output: &mut dyn Write,
    ) -> Result<JailOutcome, ZygoteError> {
        let Handover {
            order,
            code,
            started,
            ready,
            egress,
        } = handover;
        write_program(&child.program, &order.env, code)?;
        // Best effort: without it the answer only waits for the unmounting.
        self.held_mounts = std::fs::File::open(format!("/proc/{}/ns/mnt", child.host_pid)).ok();
        // From here on the program may run: the caller must never run it elsewhere.
        output
            .write_all(&[Stage::HandedOver.byte()])
            .and_then(|()| output.flush())
            .map_err(ProtocolError::from)?;
        self.handed_over = true;
        child.start()?;
        // The next run's child forks and confines itself while this one runs.
        let next = self.request_child(&child.shape.clone());
        let mut memory_guard = crate::helper::memory_guard::MemoryGuard::for_run(
            self.coverage.memory,
            order.limits.memory_bytes,
            child.host_pid,
        )
        .map(|guard| guard.with_orphans_under(child.reaper_pid));
        let listener = ready.listener_after_giving_diag(memory_guard.as_mut());
        let watch = Watch {
            limits: &order.limits,
            mode: order.seccomp.mode,
            target: child.host_pid,
            started,
            memory_guard,
        };
        // The child closed its end before reading the program; its end is reported by the
        // zygote, after reaping it, on the zygote's copy of that socket.
        let (stdout, stderr) = child.output.take().ok_or(ZygoteError::Gone)?;
        let channel = Supervised {
            control: &child.control,
            receiver: child.receiver,
            listener,
            egress,
        };
        let outcome = helper::supervise(&watch, channel, stdout, stderr);
        // A killed run's child never outlives its run. The next run waits until it is gone.
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
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.prepared = None;
        self.last = None;
        match &mut self.owner {
            Owner::Jail { init, guard } => {
                let _ = nix::sys::signal::kill(*init, nix::sys::signal::Signal::SIGKILL);
                if let Some(init) = guard.0.take() {
                    let _ = nix::sys::wait::waitpid(init, None);
                }
            }
            Owner::Worker(handle) => {
                handle.kill();
                handle.wait_exit(2_000);
            }
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.remove();
        }
    }
}

/// The groups of a zygote that is starting: removed (with anything left in them) if the
/// start fails, kept once the zygote owns them.
struct RemoveOnError(Option<crate::cgroup::RunCgroup>);

impl Drop for RemoveOnError {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            if let Err(err) = cg.remove() {
                eprintln!("hako zygote: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_settings_leave_the_zygotes_environment() {
        let mut spec: JailSpec = serde_json::from_value(serde_json::json!({
            "language": "python3", "interpreter": "/usr/bin/python3", "args": [],
            "env": [["PATH", "/usr/bin"], ["HAKO_PYTHON_WARMUP", "X = 1"],
                    ["HAKO_PRELOAD", "[\"json\"]"], ["HAKO_ZYGOTE_LIBRARY", "/lib.so"]],
            "code_path": "/opt/hako/zygote.py", "ro_binds": [],
            "limits": {"memory_bytes": 0, "pids": 0, "tmp_bytes": 0, "output_bytes": 0,
                       "timeout_ms": 1, "nofile": 64},
            "network": "none", "seccomp": {"mode": "enforce", "extra_allowed": []},
            "ids": {"host_uid": 1, "host_gid": 1}, "root_mountpoint": "/tmp", "insecure": false
        }))
        .unwrap();
        let settings = take_settings(&mut spec);
        assert_eq!(settings.warmup, "X = 1");
        assert_eq!(settings.preload, vec!["json".to_string()]);
        let names: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HAKO_ZYGOTE_LIBRARY"]);
    }
}
