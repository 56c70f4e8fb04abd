//! Warm Python workers: a pool of worker zygotes (each a `hako __zygote-worker` helper
//! driving one interpreter forked from the pool's preloaded parent, see
//! [`crate::warm_family`]) that fork one child per run.
//!
//! The pool keeps `size` zygotes ready so `max_workers` runs can fork at once; they share the
//! parent's preloaded pages. A zygote serves one run at a time. When the package environment
//! changes, the template changes: zygotes of the old generation finish their run and are not
//! reused, and their parent ends with the last of them.

pub use crate::node_pool::{NodePool, NODE_BOOTSTRAP};
pub use crate::stop::Finishing;
use crate::stop::Waited;
use hako_jail::protocol;
use hako_jail::spec::{JailOutcome, JailSpec};
use hako_jail::zygote::{RunOrder, Stage, ZygoteReport};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The zygote's own account of why it did not start, or a missing pipe.
    #[error("start a zygote: {0}")]
    Start(String),
    #[error("start a zygote: {0}")]
    StartIo(#[source] std::io::Error),
    #[error("start a zygote: {0}")]
    Report(#[source] serde_json::Error),
    #[error("start a zygote: {0}")]
    Frame(#[source] protocol::FrameError),
    #[error("the zygote failed: {0}")]
    Broken(#[source] std::io::Error),
    /// The caller gave up; the worker was stopped and is gone.
    #[error("the run was cancelled")]
    Cancelled,
}

/// The outcome of a run whose helper was lost after the program was handed over: the program
/// may have run (and had side effects), so it is reported as failed, never run again.
pub(crate) fn lost_after_handover(what: &str, err: &dyn std::fmt::Display) -> JailOutcome {
    JailOutcome {
        signal: Some(libc::SIGKILL),
        confined: true,
        failure: Some(format!(
            "the {what} supervising the run ended unexpectedly ({err}); the program may have \
             started, so it was not run again"
        )),
        ..Default::default()
    }
}

/// A zygote exchange that broke off, and whether the program had been handed over by then.
struct Lost {
    handed_over: bool,
    error: std::io::Error,
}

/// One zygote helper and its pipes.
struct Zygote {
    child: Child,
    stdin: tokio::net::UnixStream,
    stdout: BufReader<ChildStdout>,
    generation: u64,
    pid: i32,
    /// Where its groups are (to remove them if the helper is killed).
    cgroup_root: PathBuf,
    /// Its index in its parent (which lives at least as long).
    index: crate::warm_family::WorkerIndex,
}

impl Zygote {
    /// Retires an idle (or finished) zygote: its helper sees EOF, cleans up and exits, and
    /// is reaped in the background. Its run ids are free again only once it is gone (a new
    /// worker taking them could otherwise share a uid with a run still ending).
    fn retire(self, finishing: &Finishing) {
        let Zygote {
            child,
            stdin,
            index,
            ..
        } = self;
        drop(stdin);
        finishing.reap_holding(child, None, None, index);
    }

    /// Stops a zygote in the middle of a run and waits until its helper is gone.
    async fn stop(self) {
        let Zygote {
            mut child,
            stdin,
            stdout,
            cgroup_root,
            ..
        } = self;
        drop((stdin, stdout));
        crate::stop::stop_helper(&mut child, &cgroup_root).await;
    }
}

#[derive(Clone)]
struct Template {
    spec: JailSpec,
    bootstrap: Vec<u8>,
    generation: u64,
}

struct State {
    template: Option<Template>,
    /// What the current template was made from (the package environment's binds).
    template_key: Vec<(PathBuf, PathBuf)>,
    idle: Vec<Zygote>,
    starting: usize,
    /// Zygotes serving a run right now (they come back to `idle`).
    busy: usize,
    skipped: Vec<String>,
    /// Pages the newest worker's calibration listed (its children copy them before a run).
    hot_pages: u64,
    /// Each zygote gets its own pair of host ids.
    next_ids: u32,
    /// A zygote has started at least once (readiness: busy zygotes are not idle).
    warmed: bool,
    /// The preloaded parent of the current template's zygotes.
    parent: Option<Arc<crate::warm_family::Parent>>,
    /// A parent is starting.
    parent_starting: bool,
    /// Zygotes that failed to start (runs then start afresh).
    failed_starts: usize,
    /// Failed starts since the last good one: restarts wait longer after each.
    failures_in_a_row: u32,
    /// Why the last start failed, while no start has succeeded since.
    last_error: Option<String>,
    /// A restart is scheduled after a backoff delay; no other start begins meanwhile.
    backing_off: bool,
}

/// Size and memory of the warm zygotes (for `/metrics` and `hako doctor`).
#[derive(Debug, Clone, Default)]
pub struct PoolStatus {
    /// A zygote has been ready at least once.
    pub warmed: bool,
    /// Zygotes that failed to start; runs meanwhile start afresh.
    pub failed_starts: usize,
    /// Why zygotes fail to start, while none has started since the last failure.
    pub start_error: Option<String>,
    pub idle: usize,
    /// Pre-started Node.js workers ready for a program.
    pub node_idle: usize,
    pub zygote_rss_bytes: Vec<u64>,
    /// Proportional memory of all idle zygotes and their prepared children (shared pages
    /// counted once).
    pub zygote_pss_bytes: u64,
    pub skipped_preload: Vec<String>,
    /// Each Python pool on its own.
    pub pools: Vec<PoolMemory>,
}

/// One warm Python pool while idle (for `/metrics` and `hako bench`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolMemory {
    /// `plain`, `lean` or `heavy`.
    pub pool: &'static str,
    /// Worker zygotes ready to fork a run.
    pub workers: usize,
    /// Proportional memory of the pool's preloaded parent and everything forked from it
    /// (workers and their prepared children): what the pool costs the host.
    pub memory_bytes: u64,
    /// Resident memory of the preloaded parent: what one zygote of the pool weighs.
    pub zygote_bytes: u64,
    /// Pages the newest worker's children copy before their run (0: its calibration failed,
    /// and runs take those copy-on-write faults while they run).
    pub hot_pages: u64,
}

#[derive(Clone)]
pub struct ZygotePool {
    /// The pool's name in metrics.
    name: &'static str,
    helper: PathBuf,
    size: usize,
    state: Arc<Mutex<State>>,
    /// Reaps retired zygotes (and removes what a killed one left).
    finishing: Finishing,
}

impl ZygotePool {
    pub fn new(
        name: &'static str,
        helper: PathBuf,
        size: usize,
        finishing: Finishing,
    ) -> ZygotePool {
        ZygotePool {
            name,
            helper,
            finishing,
            size: size.clamp(1, hako_jail::zygote::MAX_WORKERS as usize),
            state: Arc::new(Mutex::new(State {
                template: None,
                template_key: Vec::new(),
                idle: Vec::new(),
                starting: 0,
                busy: 0,
                skipped: Vec::new(),
                hot_pages: 0,
                next_ids: 0,
                warmed: false,
                parent: None,
                parent_starting: false,
                failed_starts: 0,
                failures_in_a_row: 0,
                last_error: None,
                backing_off: false,
            })),
        }
    }

    /// Sets what new zygotes are made of; idle zygotes of an older template are retired.
    /// Must be called from within a tokio runtime (it starts zygotes in the background).
    pub(crate) fn set_template(
        &self,
        spec: JailSpec,
        bootstrap: Vec<u8>,
        key: Vec<(PathBuf, PathBuf)>,
    ) {
        let retired = {
            let mut state = self.lock();
            state.template_key = key;
            let generation = state.template.as_ref().map_or(1, |t| t.generation + 1);
            state.template = Some(Template {
                spec,
                bootstrap,
                generation,
            });
            std::mem::take(&mut state.idle)
        };
        for zygote in retired {
            zygote.retire(&self.finishing);
        }
        self.refill();
    }

    /// Stops the pool (a stopping server): no new zygotes; idle ones retire, and those still
    /// starting retire when they are up. Returns once none is starting any more.
    pub async fn close(&self) {
        let retired = {
            let mut state = self.lock();
            state.template = None;
            state.parent = None;
            std::mem::take(&mut state.idle)
        };
        for zygote in retired {
            zygote.retire(&self.finishing);
        }
        wait_until(|| {
            let state = self.lock();
            state.starting == 0 && !state.parent_starting
        })
        .await;
    }

    pub fn status(&self) -> PoolStatus {
        let (mut status, parent, idle, hot_pages) = {
            let state = self.lock();
            let status = PoolStatus {
                warmed: state.warmed,
                failed_starts: state.failed_starts,
                start_error: state.last_error.clone(),
                idle: state.idle.len(),
                skipped_preload: state.skipped.clone(),
                ..PoolStatus::default()
            };
            let idle: Vec<i32> = state.idle.iter().map(|z| z.pid).collect();
            (
                status,
                state.parent.as_ref().map(|p| p.pid),
                idle,
                state.hot_pages,
            )
        };
        // /proc is read with the pool unlocked: a metrics scrape never holds up a run.
        let memory_bytes = parent.map_or(0, crate::warm_python::pss_of_tree);
        status.zygote_rss_bytes = idle.iter().map(|&pid| rss_of_tree(pid)).collect();
        status.zygote_pss_bytes = memory_bytes;
        status.pools = vec![PoolMemory {
            pool: self.name,
            workers: idle.len(),
            memory_bytes,
            zygote_bytes: parent.map_or(0, rss_of_tree),
            hot_pages,
        }];
        status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts zygotes in the background until `size` are ready or starting (after their
    /// parent, when it is not up yet).
    fn refill(&self) {
        let (template, missing, parent) = {
            let mut state = self.lock();
            let Some(template) = state.template.clone() else {
                return;
            };
            if state.backing_off {
                return;
            }
            let current = state
                .parent
                .clone()
                .filter(|p| p.generation == template.generation && !p.ended());
            let Some(parent) = current else {
                // The old parent ends with the last of its workers.
                state.parent = None;
                if !state.parent_starting {
                    state.parent_starting = true;
                    let slot = state.next_ids % 16384;
                    state.next_ids = state.next_ids.wrapping_add(1);
                    drop(state);
                    self.start_parent(template, slot);
                }
                return;
            };
            let missing = self
                .size
                .saturating_sub(state.idle.len() + state.starting + state.busy);
            state.starting += missing;
            (template, missing, parent)
        };
        for _ in 0..missing {
            let pool = self.clone();
            let template = template.clone();
            let parent = parent.clone();
            tokio::spawn(async move {
                let started = pool.start(&template, &parent).await;
                let mut state = pool.lock();
                state.starting = state.starting.saturating_sub(1);
                let stale = match started {
                    Ok((zygote, report)) => {
                        state.skipped = report.skipped;
                        state.hot_pages = report.hot_pages;
                        state.failures_in_a_row = 0;
                        state.last_error = None;
                        let current = state.template.as_ref().map(|t| t.generation);
                        if current == Some(zygote.generation) {
                            state.idle.push(zygote);
                            state.warmed = true;
                            None
                        } else {
                            Some(zygote)
                        }
                    }
                    Err(err) => {
                        state.failed_starts += 1;
                        state.failures_in_a_row += 1;
                        state.last_error = Some(err.to_string());
                        tracing::error!("zygote did not start: {err}");
                        None
                    }
                };
                drop(state);
                if let Some(zygote) = stale {
                    zygote.retire(&pool.finishing);
                }
                // Whatever happened, the pool fills up again (a zygote of an older template
                // was just discarded, or one failed): never wait for a run to ask.
                pool.refill_after_start();
            });
        }
    }

    /// Refills now, or after a backoff delay while starts keep failing.
    fn refill_after_start(&self) {
        let delay = {
            let mut state = self.lock();
            if state.failures_in_a_row == 0 || state.backing_off {
                None
            } else {
                state.backing_off = true;
                Some(crate::stop::restart_delay(state.failures_in_a_row))
            }
        };
        let Some(delay) = delay else {
            self.refill();
            return;
        };
        let pool = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pool.lock().backing_off = false;
            pool.refill();
        });
    }

    /// Starts the preloaded parent of `template`'s zygotes in the background; the pool
    /// fills up once it is ready.
    fn start_parent(&self, mut template: Template, slot: u32) {
        template.spec.ids.host_uid += 2 * slot;
        template.spec.ids.host_gid += 2 * slot;
        let pool = self.clone();
        tokio::spawn(async move {
            let started = crate::warm_family::Parent::start(
                &pool.helper,
                &template.spec,
                &template.bootstrap,
                template.generation,
                &pool.finishing,
            )
            .await;
            let mut state = pool.lock();
            state.parent_starting = false;
            match started {
                Ok((parent, report)) => {
                    tracing::info!(parent = report.zygote_pid, "zygote parent ready");
                    for skipped in &report.skipped {
                        tracing::warn!("preload module skipped: {skipped}");
                    }
                    state.skipped = report.skipped;
                    let current = state.template.as_ref().map(|t| t.generation);
                    if current == Some(template.generation) {
                        state.parent = Some(parent);
                    }
                }
                Err(err) => {
                    state.failed_starts += 1;
                    state.failures_in_a_row += 1;
                    state.last_error = Some(err.to_string());
                    tracing::error!("zygote parent did not start: {err}");
                }
            }
            drop(state);
            pool.refill_after_start();
        });
    }

    async fn start(
        &self,
        template: &Template,
        parent: &Arc<crate::warm_family::Parent>,
    ) -> Result<(Zygote, ZygoteReport), WarmError> {
        let index = parent
            .lease_index()
            .ok_or_else(|| WarmError::Start("the zygote parent serves no more workers".into()))?;
        let (mut child, stdin, stdout) =
            crate::warm_family::start_worker(&self.helper, &template.spec, &index)?;
        let mut stdout = BufReader::new(stdout);
        let report = match read_frame(&mut stdout, 4).await {
            Ok(header) => {
                serde_json::from_slice::<ZygoteReport>(&header).map_err(WarmError::Report)
            }
            Err(e) => Err(WarmError::StartIo(e)),
        };
        let report = match report {
            Ok(report) if report.ready => report,
            failed => {
                // The helper cleans up and exits on its own; it is reaped (and whatever it
                // left removed) before the next start.
                drop((stdin, stdout));
                crate::stop::stop_helper(&mut child, &template.spec.cgroup_root).await;
                return Err(match failed {
                    Ok(report) => {
                        WarmError::Start(report.error.unwrap_or_else(|| "not ready".into()))
                    }
                    Err(err) => err,
                });
            }
        };
        tracing::info!(
            zygote = report.zygote_pid,
            hot_pages = report.hot_pages,
            prepared_bytes = report.prepared_bytes,
            "zygote ready"
        );
        let pid = report.zygote_pid;
        Ok((
            Zygote {
                child,
                stdin,
                stdout,
                generation: template.generation,
                pid,
                cgroup_root: template.spec.cgroup_root.clone(),
                index,
            },
            report,
        ))
    }

    /// True when the zygotes were made from `key` (the package environment's binds).
    pub(crate) fn made_from(&self, key: &[(PathBuf, PathBuf)]) -> bool {
        self.lock().template_key == key
    }

    /// Runs one program in a child of a warm zygote. `Ok(None)` means no zygote was ready
    /// (the caller falls back to a fresh interpreter).
    ///
    /// The wait is bounded by the run's own timeout: a zygote that does not answer by then
    /// (stopped, wedged) is killed and replaced, and the run ends as timed out. A cancelled
    /// run stops the zygote's helper and returns once it is gone.
    pub async fn run(
        &self,
        order: &RunOrder,
        code: &[u8],
        cancel: &mut crate::stop::Cancel,
    ) -> Result<Option<JailOutcome>, WarmError> {
        let Some(mut lease) = self.lease() else {
            self.refill();
            return Ok(None);
        };
        let Some(zygote) = lease.zygote.as_mut() else {
            return Ok(None);
        };
        let deadline =
            std::time::Duration::from_millis(order.limits.timeout_ms) + crate::stop::ANSWER_GRACE;
        match crate::stop::wait_bounded(exchange(zygote, order, code), deadline, cancel).await {
            Waited::Answer(Ok(outcome)) => {
                // After a setup error the zygote may be gone: a replacement starts.
                lease.reusable = outcome.setup_error.is_none() && outcome.failure.is_none();
                Ok(Some(outcome))
            }
            Waited::Answer(Err(lost)) if lost.handed_over => {
                tracing::error!(error = %lost.error, "zygote helper lost during a run");
                Ok(Some(lost_after_handover("zygote", &lost.error)))
            }
            // Lost before the hand-over: the program never started; it may run elsewhere.
            Waited::Answer(Err(lost)) => Err(WarmError::Broken(lost.error)),
            Waited::Cancelled => {
                if let Some(zygote) = lease.zygote.take() {
                    zygote.stop().await;
                }
                Err(WarmError::Cancelled)
            }
            Waited::Late => {
                tracing::error!(
                    timeout_ms = order.limits.timeout_ms,
                    "a zygote did not answer within the run's timeout; replacing it"
                );
                if let Some(mut zygote) = lease.zygote.take() {
                    crate::stop::kill_helper(&mut zygote.child, &zygote.cgroup_root).await;
                }
                Ok(Some(crate::stop::stalled_outcome(deadline)))
            }
        }
    }

    /// Takes an idle zygote for one run; it comes back when the lease ends.
    fn lease(&self) -> Option<Lease> {
        let mut state = self.lock();
        let zygote = state.idle.pop()?;
        state.busy += 1;
        Some(Lease {
            pool: self.clone(),
            zygote: Some(zygote),
            reusable: false,
        })
    }
}

/// A zygote out of the pool for one run. On drop it goes back to the pool if its run ended
/// cleanly and its template is current; otherwise it retires and a replacement starts (a
/// request cancelled mid-run drops its lease before the run ended).
struct Lease {
    pool: ZygotePool,
    zygote: Option<Zygote>,
    reusable: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let retired = {
            let mut state = self.pool.lock();
            state.busy = state.busy.saturating_sub(1);
            let current = state.template.as_ref().map(|t| t.generation);
            match self.zygote.take() {
                Some(zygote) if self.reusable && current == Some(zygote.generation) => {
                    state.idle.push(zygote);
                    None
                }
                other => other,
            }
        };
        if let Some(zygote) = retired {
            zygote.retire(&self.pool.finishing);
        }
        self.pool.refill();
    }
}

/// Sends one run to a zygote helper and reads its answer: the [`Stage`] byte, then the
/// outcome frame.
async fn exchange(zygote: &mut Zygote, order: &RunOrder, code: &[u8]) -> Result<JailOutcome, Lost> {
    let before = |error| Lost {
        handed_over: false,
        error,
    };
    let mut frame = Vec::with_capacity(code.len() + 256);
    protocol::write_json(&mut frame, order).map_err(|e| before(std::io::Error::other(e)))?;
    protocol::write_bytes(&mut frame, code).map_err(|e| before(std::io::Error::other(e)))?;
    zygote.stdin.write_all(&frame).await.map_err(before)?;
    zygote.stdin.flush().await.map_err(before)?;
    let stage = zygote.stdout.read_u8().await.map_err(before)?;
    let handed_over = match Stage::from_byte(stage) {
        Some(Stage::NotStarted) => false,
        Some(Stage::HandedOver) => true,
        None => {
            // Not hako's helper speaking: assume the worst.
            return Err(Lost {
                handed_over: true,
                error: std::io::Error::other(format!("bad stage byte {stage:#x}")),
            });
        }
    };
    read_outcome(zygote)
        .await
        .map_err(|error| Lost { handed_over, error })
}

async fn read_outcome(zygote: &mut Zygote) -> std::io::Result<JailOutcome> {
    let header = read_frame(&mut zygote.stdout, 4).await?;
    let stdout = read_frame(&mut zygote.stdout, 8).await?;
    let stderr = read_frame(&mut zygote.stdout, 8).await?;
    let mut outcome: JailOutcome =
        serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    outcome.stdout = stdout;
    outcome.stderr = stderr;
    let _ = &zygote.child;
    Ok(outcome)
}

pub(crate) async fn read_frame(
    input: &mut BufReader<ChildStdout>,
    width: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len[..width]).await?;
    let len = u64::from_le_bytes(len);
    let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    input.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Starts a helper (`__zygote` or a deferred `__jail`) and writes its spec and bootstrap
/// frame (see `hako_jail::protocol`); its stderr goes to the log. No kill on drop: a retired
/// worker sees EOF on stdin and cleans up after itself.
pub(crate) async fn start_helper(
    helper: &std::path::Path,
    subcommand: &str,
    spec: &JailSpec,
    bootstrap: &[u8],
) -> Result<(Child, ChildStdin, ChildStdout), WarmError> {
    let start_err = WarmError::StartIo;
    let mut child = tokio::process::Command::new(helper)
        .arg(subcommand)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(start_err)?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| WarmError::Start("no stdin".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| WarmError::Start("no stdout".into()))?;
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_log(stderr));
    }
    let mut frame = Vec::new();
    protocol::write_json(&mut frame, spec).map_err(WarmError::Frame)?;
    protocol::write_bytes(&mut frame, bootstrap).map_err(WarmError::Frame)?;
    stdin.write_all(&frame).await.map_err(start_err)?;
    stdin.flush().await.map_err(start_err)?;
    Ok((child, stdin, stdout))
}

pub(crate) async fn forward_log(stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(target: "hako::zygote", "{line}");
    }
}

/// Waits (up to 10 s) until `done` holds: workers still starting finish their start.
pub(crate) async fn wait_until(done: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Resident memory of a process (the zygote interpreter), in bytes.
fn rss_of_tree(pid: i32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
