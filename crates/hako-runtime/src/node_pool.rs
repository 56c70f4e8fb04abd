//! Pre-started Node.js workers (Node cannot fork safely): each is a deferred `hako __jail`
//! helper waiting for its one program.

use crate::stop::Waited;
use crate::warm::{lost_after_handover, start_helper, wait_until, Finishing, WarmError};
use hako_jail::protocol;
use hako_jail::spec::{JailOutcome, JailSpec};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

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
    cgroup_root: PathBuf,
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
        for worker in retired {
            self.retire(worker);
        }
        self.refill();
    }

    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// Stops the pool (a stopping server): idle workers get an empty program and exit, and
    /// none is started any more. Returns once none is starting.
    pub async fn close(&self) {
        let retired = {
            let mut state = self.lock();
            state.template = None;
            std::mem::take(&mut state.idle)
        };
        for worker in retired {
            self.retire(worker);
        }
        wait_until(|| self.lock().starting == 0).await;
        let late = std::mem::take(&mut self.lock().idle);
        for worker in late {
            self.retire(worker);
        }
    }

    /// An unused worker gets EOF for its program (it runs nothing and exits) and is reaped.
    fn retire(&self, worker: NodeWorker) {
        let NodeWorker {
            child,
            stdin,
            stdout,
            ..
        } = worker;
        drop(stdin);
        self.finishing.reap_reading(child, Some(stdout), None);
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
                        } else {
                            // Made for packages that are gone: replace it now.
                            drop(state);
                            pool.retire(worker);
                            pool.refill();
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
            cgroup_root: spec.cgroup_root.clone(),
            binds: spec.mapped_binds,
        })
    }

    /// Runs `code` in a ready worker; `Ok(None)` when none is ready. Bounded like
    /// [`ZygotePool::run`]: a worker that does not answer within the run's timeout is killed
    /// and the run ends as timed out; a cancelled run returns once the worker is gone.
    pub async fn run(
        &self,
        code: &[u8],
        timeout_ms: u64,
        cancel: &mut crate::stop::Cancel,
    ) -> Result<Option<JailOutcome>, WarmError> {
        let taken = self.lock().idle.pop();
        self.refill();
        let Some(worker) = taken else {
            return Ok(None);
        };
        let NodeWorker {
            mut child,
            mut stdin,
            mut stdout,
            cgroup_root,
            ..
        } = worker;
        let deadline = std::time::Duration::from_millis(timeout_ms) + crate::stop::ANSWER_GRACE;
        // The helper closes its stdout once the outcome is written, then removes the run's
        // cgroup: answer then, and reap it in the background.
        let mut bytes = Vec::new();
        let mut handed_over = false;
        let exchange = async {
            stdin.write_all(code).await?;
            drop(stdin);
            // From here on the program may have started: whatever breaks is the run's failure.
            handed_over = true;
            stdout.read_to_end(&mut bytes).await
        };
        match crate::stop::wait_bounded(exchange, deadline, cancel).await {
            Waited::Answer(Ok(_)) => self.finishing.reap(child, None),
            Waited::Answer(Err(e)) => {
                self.finishing.reap(child, None);
                if !handed_over {
                    // A worker that cannot take the program never started it.
                    return Err(WarmError::Broken(e));
                }
                tracing::error!(error = %e, "node pool helper lost during a run");
                return Ok(Some(lost_after_handover("node worker", &e)));
            }
            Waited::Cancelled => {
                drop(stdout);
                crate::stop::stop_helper(&mut child, &cgroup_root).await;
                return Err(WarmError::Cancelled);
            }
            Waited::Late => {
                tracing::error!(
                    timeout_ms,
                    "a node worker did not answer within the run's timeout"
                );
                drop(stdout);
                crate::stop::kill_helper(&mut child, &cgroup_root).await;
                return Ok(Some(crate::stop::stalled_outcome(deadline)));
            }
        }
        match protocol::decode_outcome(&bytes) {
            Ok(outcome) => Ok(Some(outcome)),
            Err(err) => {
                tracing::error!(error = %err, "node pool helper lost during a run");
                Ok(Some(lost_after_handover("node worker", &err)))
            }
        }
    }
}
