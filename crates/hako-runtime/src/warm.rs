//! Warm Python workers: a pool of zygotes (each a `hako __zygote` helper process holding one
//! jailed, pre-imported interpreter) that fork one child per run.
//!
//! The pool keeps `size` zygotes ready so `max_workers` runs can fork at once. A zygote
//! serves one run at a time. When the package environment changes, the template changes:
//! zygotes of the old generation finish their run and are not reused.

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
    #[error("start a zygote: {0}")]
    Start(String),
    #[error("the zygote failed: {0}")]
    Broken(String),
}

/// The outcome of a run whose helper was lost after the program was handed over: the program
/// may have run (and had side effects), so it is reported as failed, never run again.
pub fn lost_after_handover(what: &str, err: &dyn std::fmt::Display) -> JailOutcome {
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
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    generation: u64,
    pid: i32,
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
    /// Each zygote gets its own pair of host ids.
    next_ids: u32,
    /// A zygote has started at least once (readiness: busy zygotes are not idle).
    warmed: bool,
    /// Zygotes that failed to start (runs then start afresh).
    failed_starts: usize,
}

/// Size and memory of the warm zygotes (for `/metrics` and `hako doctor`).
#[derive(Debug, Clone, Default)]
pub struct PoolStatus {
    /// A zygote has been ready at least once.
    pub warmed: bool,
    /// Zygotes that failed to start; runs meanwhile start afresh.
    pub failed_starts: usize,
    pub idle: usize,
    /// Pre-started Node.js workers ready for a program.
    pub node_idle: usize,
    pub zygote_rss_bytes: Vec<u64>,
    pub skipped_preload: Vec<String>,
}

#[derive(Clone)]
pub struct ZygotePool {
    helper: PathBuf,
    size: usize,
    state: Arc<Mutex<State>>,
}

impl ZygotePool {
    pub fn new(helper: PathBuf, size: usize) -> ZygotePool {
        ZygotePool {
            helper,
            size: size.max(1),
            state: Arc::new(Mutex::new(State {
                template: None,
                template_key: Vec::new(),
                idle: Vec::new(),
                starting: 0,
                busy: 0,
                skipped: Vec::new(),
                next_ids: 0,
                warmed: false,
                failed_starts: 0,
            })),
        }
    }

    /// Sets what new zygotes are made of; idle zygotes of an older template are retired.
    /// Must be called from within a tokio runtime (it starts zygotes in the background).
    pub fn set_template(&self, spec: JailSpec, bootstrap: Vec<u8>, key: Vec<(PathBuf, PathBuf)>) {
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
        drop(retired);
        self.refill();
    }

    pub fn status(&self) -> PoolStatus {
        let state = self.lock();
        PoolStatus {
            warmed: state.warmed,
            failed_starts: state.failed_starts,
            idle: state.idle.len(),
            node_idle: 0,
            zygote_rss_bytes: state.idle.iter().map(|z| rss_of_tree(z.pid)).collect(),
            skipped_preload: state.skipped.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts zygotes in the background until `size` are ready or starting.
    fn refill(&self) {
        let (template, missing) = {
            let mut state = self.lock();
            let Some(template) = state.template.clone() else {
                return;
            };
            let missing = self
                .size
                .saturating_sub(state.idle.len() + state.starting + state.busy);
            state.starting += missing;
            (template, missing)
        };
        for _ in 0..missing {
            let pool = self.clone();
            let mut template = template.clone();
            {
                let mut state = pool.lock();
                let slot = state.next_ids % 16384;
                state.next_ids = state.next_ids.wrapping_add(1);
                template.spec.ids.host_uid += 2 * slot;
                template.spec.ids.host_gid += 2 * slot;
            }
            tokio::spawn(async move {
                let started = pool.start(&template).await;
                let mut state = pool.lock();
                state.starting = state.starting.saturating_sub(1);
                match started {
                    Ok((zygote, report)) => {
                        state.skipped = report.skipped;
                        let current = state.template.as_ref().map(|t| t.generation);
                        if current == Some(zygote.generation) {
                            state.idle.push(zygote);
                            state.warmed = true;
                        }
                    }
                    Err(err) => {
                        state.failed_starts += 1;
                        tracing::error!("zygote did not start: {err}");
                    }
                }
            });
        }
    }

    async fn start(&self, template: &Template) -> Result<(Zygote, ZygoteReport), WarmError> {
        let start_err = |e: std::io::Error| WarmError::Start(e.to_string());
        let (mut child, stdin, stdout) = start_helper(
            &self.helper,
            "__zygote",
            &template.spec,
            &template.bootstrap,
        )
        .await?;
        let mut stdout = BufReader::new(stdout);
        let header = read_frame(&mut stdout, 4).await.map_err(start_err)?;
        let report: ZygoteReport =
            serde_json::from_slice(&header).map_err(|e| WarmError::Start(e.to_string()))?;
        if !report.ready {
            let _ = child.kill().await;
            return Err(WarmError::Start(
                report.error.unwrap_or_else(|| "not ready".into()),
            ));
        }
        for skipped in &report.skipped {
            tracing::warn!("preload module skipped: {skipped}");
        }
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
            },
            report,
        ))
    }

    /// True when the zygotes were made from `key` (the package environment's binds).
    pub fn made_from(&self, key: &[(PathBuf, PathBuf)]) -> bool {
        self.lock().template_key == key
    }

    /// Runs one program in a child of a warm zygote. `Ok(None)` means no zygote was ready
    /// (the caller falls back to a fresh interpreter).
    pub async fn run(
        &self,
        order: &RunOrder,
        code: &[u8],
    ) -> Result<Option<JailOutcome>, WarmError> {
        let Some(mut lease) = self.lease() else {
            self.refill();
            return Ok(None);
        };
        let Some(zygote) = lease.zygote.as_mut() else {
            return Ok(None);
        };
        match exchange(zygote, order, code).await {
            Ok(outcome) => {
                // After a setup error the zygote may be gone: a replacement starts.
                lease.reusable = outcome.setup_error.is_none() && outcome.failure.is_none();
                Ok(Some(outcome))
            }
            Err(lost) if lost.handed_over => {
                tracing::error!(error = %lost.error, "zygote helper lost during a run");
                Ok(Some(lost_after_handover("zygote", &lost.error)))
            }
            // Lost before the hand-over: the program never started; it may run elsewhere.
            Err(lost) => Err(WarmError::Broken(lost.error.to_string())),
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
        drop(retired);
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

async fn read_frame(input: &mut BufReader<ChildStdout>, width: usize) -> std::io::Result<Vec<u8>> {
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
async fn start_helper(
    helper: &std::path::Path,
    subcommand: &str,
    spec: &JailSpec,
    bootstrap: &[u8],
) -> Result<(Child, ChildStdin, ChildStdout), WarmError> {
    let start_err = |e: std::io::Error| WarmError::Start(e.to_string());
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
    protocol::write_json(&mut frame, spec).map_err(|e| WarmError::Start(e.to_string()))?;
    protocol::write_bytes(&mut frame, bootstrap).map_err(|e| WarmError::Start(e.to_string()))?;
    stdin.write_all(&frame).await.map_err(start_err)?;
    stdin.flush().await.map_err(start_err)?;
    Ok((child, stdin, stdout))
}

async fn forward_log(stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(target: "hako::zygote", "{line}");
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

/// Jail helpers that have answered and are still cleaning up (removing the run's cgroup,
/// which takes tens of ms on cgroup v1). Each is reaped in the background; [`Finishing::wait`]
/// waits for all of them (a short-lived CLI, a stopping server).
#[derive(Clone, Default)]
pub struct Finishing(Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Finishing {
    /// Reaps `child` in the background, logging what it wrote to `stderr` (if given).
    pub fn reap(&self, mut child: Child, stderr: Option<tokio::process::ChildStderr>) {
        let task = tokio::spawn(async move {
            let mut err = Vec::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_end(&mut err).await;
            }
            let _ = child.wait().await;
            if !err.is_empty() {
                tracing::warn!(helper_stderr = %String::from_utf8_lossy(&err).trim(), "jail helper said");
            }
        });
        let mut tasks = self.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    pub async fn wait(&self) {
        let tasks = std::mem::take(&mut *self.lock());
        for task in tasks {
            let _ = task.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Pre-started, fully confined Node.js workers waiting for their program (Node cannot fork
/// safely). Each is used for exactly one run and replaced in the background; when none is
/// ready the caller starts a fresh interpreter, so the pool is never slower than spawn.
#[derive(Clone)]
pub struct NodePool {
    helper: PathBuf,
    size: usize,
    state: Arc<Mutex<NodeState>>,
    /// Makes each worker's spec (a fresh one per worker: its network registration is its own).
    factory: Arc<dyn Fn() -> Option<JailSpec> + Send + Sync>,
    finishing: Finishing,
}

struct NodeState {
    template: Option<(JailSpec, Vec<u8>)>,
    idle: Vec<NodeWorker>,
    starting: usize,
    next_ids: u32,
}

struct NodeWorker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The package environment the worker was started with.
    binds: Vec<(PathBuf, PathBuf)>,
}

/// The program a pooled Node worker runs first: it waits for the real program on fd 4 and
/// runs it as the main module, as `node /sandbox/main.js` would.
pub const NODE_BOOTSTRAP: &str = r#"'use strict';
const fs = require('fs');
const Module = require('module');
const path = '/sandbox/main.js';
// Warm what nearly every program uses first (about 5 ms the first time): the standard
// streams and console formatting, written to a sink that discards it.
{
  process.stdout; process.stderr;
  const { Writable } = require('stream');
  const sink = new Writable({ write(chunk, encoding, done) { done(); } });
  new console.Console(sink).log(`<<RESULT>>${JSON.stringify({ warm: Buffer.from('e30=', 'base64').toString('utf-8') })}<<RESULT>>`);
}
let source;
try { source = fs.readFileSync(4, 'utf8'); } catch (e) { process.exit(125); }
try { fs.closeSync(4); } catch (e) {}
const main = new Module(path, null);
main.filename = path;
main.paths = Module._nodeModulePaths('/sandbox');
process.argv[1] = path;
process.mainModule = main;
require.main = main;
main._compile(source, path);
"#;

impl NodePool {
    pub fn new(
        helper: PathBuf,
        size: usize,
        factory: Arc<dyn Fn() -> Option<JailSpec> + Send + Sync>,
        finishing: Finishing,
    ) -> NodePool {
        NodePool {
            helper,
            finishing,
            size,
            state: Arc::new(Mutex::new(NodeState {
                template: None,
                idle: Vec::new(),
                starting: 0,
                next_ids: 0,
            })),
            factory,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets what workers are made of (a deferred spec); idle workers of an older one retire.
    pub fn set_template(&self, spec: JailSpec) {
        let retired = {
            let mut state = self.lock();
            state.template = Some((spec, NODE_BOOTSTRAP.as_bytes().to_vec()));
            std::mem::take(&mut state.idle)
        };
        drop(retired);
        self.refill();
    }

    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// True when the workers were made with these package binds.
    pub fn made_from(&self, binds: &[(PathBuf, PathBuf)]) -> bool {
        self.lock()
            .template
            .as_ref()
            .is_some_and(|(t, _)| t.mapped_binds == binds)
    }

    /// True when a worker made with these limits, network and package binds can take
    /// `spec`'s run.
    pub fn fits(&self, spec: &JailSpec) -> bool {
        let state = self.lock();
        state.template.as_ref().is_some_and(|(t, _)| {
            t.limits == spec.limits
                && t.mapped_binds == spec.mapped_binds
                && t.network == spec.network
                && t.egress.is_some() == spec.egress.is_some()
        })
    }

    fn refill(&self) {
        let missing = {
            let mut state = self.lock();
            if state.template.is_none() {
                return;
            }
            let missing = self.size.saturating_sub(state.idle.len() + state.starting);
            state.starting += missing;
            missing
        };
        for _ in 0..missing {
            let pool = self.clone();
            tokio::spawn(async move {
                let started = pool.start().await;
                let mut state = pool.lock();
                state.starting = state.starting.saturating_sub(1);
                match started {
                    Ok(worker) => {
                        let current = state.template.as_ref().map(|(t, _)| t.mapped_binds.clone());
                        if current.as_ref() == Some(&worker.binds) {
                            state.idle.push(worker);
                        }
                    }
                    Err(err) => tracing::error!("node worker did not start: {err}"),
                }
            });
        }
    }

    async fn start(&self) -> Result<NodeWorker, WarmError> {
        let (mut spec, bootstrap) = {
            let mut state = self.lock();
            let slot = state.next_ids % 16384;
            state.next_ids = state.next_ids.wrapping_add(1);
            let (template, bootstrap) = state
                .template
                .clone()
                .ok_or_else(|| WarmError::Start("no template".into()))?;
            // A fresh spec per worker (its own network registration), same shape as the template.
            let mut spec = (self.factory)()
                .filter(|fresh| fresh.mapped_binds == template.mapped_binds)
                .unwrap_or(template);
            spec.ids.host_uid += slot;
            spec.ids.host_gid += slot;
            (spec, bootstrap)
        };
        spec.deferred = true;
        let (child, stdin, stdout) =
            start_helper(&self.helper, "__jail", &spec, &bootstrap).await?;
        Ok(NodeWorker {
            child,
            stdin,
            stdout,
            binds: spec.mapped_binds,
        })
    }

    /// Runs `code` in a ready worker; `Ok(None)` when none is ready.
    pub async fn run(&self, code: &[u8]) -> Result<Option<JailOutcome>, WarmError> {
        let taken = self.lock().idle.pop();
        self.refill();
        let Some(mut worker) = taken else {
            return Ok(None);
        };
        let broken = |e: std::io::Error| WarmError::Broken(e.to_string());
        // A worker that cannot take the program never started it: it may run elsewhere.
        worker.stdin.write_all(code).await.map_err(broken)?;
        drop(worker.stdin);
        // From here on the program may have started: whatever breaks is the run's failure.
        // The helper closes its stdout once the outcome is written, then removes the run's
        // cgroup: answer then, and reap it in the background.
        let mut bytes = Vec::new();
        let read = worker.stdout.read_to_end(&mut bytes).await;
        self.finishing.reap(worker.child, None);
        let decoded = read
            .map_err(|e| e.to_string())
            .and_then(|_| protocol::decode_outcome(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok(outcome) => Ok(Some(outcome)),
            Err(err) => {
                tracing::error!(error = %err, "node pool helper lost during a run");
                Ok(Some(lost_after_handover("node worker", &err)))
            }
        }
    }
}
