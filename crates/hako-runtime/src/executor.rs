//! The executor: turns a [`RunRequest`] into a jailed run and a [`RunResult`].
//!
//! Every run starts the jail helper (`hako __jail`, this same binary) as a separate
//! process; the caller, which may be the multi-threaded server, never forks itself.

use crate::adapter::{Adapter, AdapterError};
use crate::config::Config;
use crate::language::Language;
use crate::result::{RunRequest, RunResult};
use crate::summary::summarize;
use hako_jail::protocol;
use hako_jail::spec::{JailOutcome, JailSpec, Limits, NetworkMode, RunIds, SeccompMode, SeccompSpec};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request asks for network while it is globally disabled.
    #[error("network is disabled, please enable it in the configuration")]
    NetworkDisabled,
    /// The language's interpreter was not usable at start-up.
    #[error("{language} is not available: {reason}")]
    Unavailable { language: Language, reason: String },
    /// The jail could not be started or failed before the program ran.
    #[error("sandbox failure: {0}")]
    Sandbox(String),
}

/// How many distinct host identities runs rotate through.
const ID_SLOTS: u32 = 65536;

struct Inner {
    config: Config,
    helper: PathBuf,
    adapters: Vec<Result<Adapter, String>>,
    extra_syscalls: Vec<u32>,
    next_id: AtomicU32,
}

/// Runs programs. Cheap to clone and share between requests.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("helper", &self.inner.helper).finish()
    }
}

/// Options that only the command line sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecOptions {
    /// Record calls outside the policy and let them through (`hako profile`).
    pub learn_syscalls: bool,
}

impl Executor {
    /// Discovers the interpreters and prepares the runtime directory. `helper` is the
    /// binary that implements `__jail` (normally the current executable).
    pub fn new(config: Config, helper: PathBuf) -> Result<Self, ExecError> {
        let extra_syscalls = config
            .allowed_syscalls
            .iter()
            .map(|s| hako_jail::seccomp::resolve_syscall(s))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|e| ExecError::Sandbox(e.to_string()))?;
        std::fs::create_dir_all(root_mountpoint(&config)).map_err(|e| {
            ExecError::Sandbox(format!(
                "create {}: {e}",
                root_mountpoint(&config).display()
            ))
        })?;
        let adapters = [(Language::Python3, &config.python_path), (Language::Nodejs, &config.nodejs_path)]
            .into_iter()
            .map(|(lang, path)| {
                Adapter::discover(lang, path).map_err(|e: AdapterError| e.to_string())
            })
            .collect();
        Ok(Executor {
            inner: Arc::new(Inner {
                config,
                helper,
                adapters,
                extra_syscalls,
                next_id: AtomicU32::new(0),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The adapter of a language, or why it is unavailable.
    pub fn adapter(&self, language: Language) -> Result<&Adapter, ExecError> {
        let index = match language {
            Language::Python3 => 0,
            Language::Nodejs => 1,
        };
        self.inner.adapters[index]
            .as_ref()
            .map_err(|reason| ExecError::Unavailable { language, reason: reason.clone() })
    }

    pub async fn run(&self, request: RunRequest) -> Result<RunResult, ExecError> {
        self.run_with(request, ExecOptions::default()).await.map(|(result, _)| result)
    }

    /// Runs and also returns the raw jail outcome (for `hako profile` and `--json`).
    pub async fn run_with(
        &self,
        request: RunRequest,
        options: ExecOptions,
    ) -> Result<(RunResult, JailOutcome), ExecError> {
        let config = &self.inner.config;
        if request.enable_network && !config.enable_network {
            return Err(ExecError::NetworkDisabled);
        }
        let adapter = self.adapter(request.language)?;
        let spec = self.spec(adapter, &request, options);
        let mut code = Vec::new();
        if config.enable_preload {
            if let Some(preload) = request.preload.as_deref().filter(|p| !p.trim().is_empty()) {
                code.extend_from_slice(preload.as_bytes());
                code.push(b'\n');
            }
        }
        code.extend_from_slice(request.code.as_bytes());
        let outcome = self.spawn_helper(&spec, &code).await?;
        if let Some(err) = &outcome.setup_error {
            tracing::error!(request_id = %request.request_id, error = %err, "jail setup failed");
            return Err(ExecError::Sandbox(err.clone()));
        }
        let result = summarize(&outcome, request.language, &spec.limits);
        Ok((result, outcome))
    }

    fn spec(&self, adapter: &Adapter, request: &RunRequest, options: ExecOptions) -> JailSpec {
        let config = &self.inner.config;
        let configured = &config.hako.limits;
        let timeout_ms = config.worker_timeout.saturating_mul(1000);
        let memory_mb = request.limits.memory_mb.map_or(configured.memory_mb, |m| m.min(configured.memory_mb));
        let limits = Limits {
            memory_bytes: memory_mb << 20,
            pids: configured.pids,
            tmp_bytes: configured.tmp_mb << 20,
            output_bytes: configured.output_bytes,
            timeout_ms: request.limits.timeout_ms.map_or(timeout_ms, |t| t.min(timeout_ms)).max(1),
            nofile: configured.nofile,
        };
        let slot = self.inner.next_id.fetch_add(1, Ordering::Relaxed) % ID_SLOTS;
        let base = config.hako.uid_base;
        JailSpec {
            language: adapter.language.as_str().to_string(),
            interpreter: adapter.interpreter.clone(),
            args: adapter.args(limits.memory_bytes),
            env: adapter.env(),
            code_path: adapter.code_path(),
            ro_binds: adapter.ro_binds.clone(),
            mapped_binds: Vec::new(),
            limits,
            network: if request.enable_network { NetworkMode::Host } else { NetworkMode::None },
            seccomp: SeccompSpec {
                mode: if options.learn_syscalls { SeccompMode::Learn } else { SeccompMode::Enforce },
                extra_allowed: self.inner.extra_syscalls.clone(),
            },
            ids: RunIds { host_uid: base + slot, host_gid: base + slot },
            root_mountpoint: root_mountpoint(config),
            insecure: config.hako.insecure,
        }
    }

    async fn spawn_helper(&self, spec: &JailSpec, code: &[u8]) -> Result<JailOutcome, ExecError> {
        let request = protocol::encode_request(spec, code).map_err(|e| ExecError::Sandbox(e.to_string()))?;
        let mut child = tokio::process::Command::new(&self.inner.helper)
            .arg("__jail")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Sandbox(format!("start the jail helper {}: {e}", self.inner.helper.display())))?;
        let mut stdin = child.stdin.take().ok_or_else(|| ExecError::Sandbox("helper stdin".into()))?;
        let mut stdout = child.stdout.take().ok_or_else(|| ExecError::Sandbox("helper stdout".into()))?;
        let mut stderr = child.stderr.take().ok_or_else(|| ExecError::Sandbox("helper stderr".into()))?;
        let write = async move {
            let result = stdin.write_all(&request).await;
            drop(stdin);
            result
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (w, o, e) = tokio::join!(write, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        let status = child.wait().await.map_err(|e| ExecError::Sandbox(format!("wait for the jail helper: {e}")))?;
        if !err.is_empty() {
            tracing::warn!(helper_stderr = %String::from_utf8_lossy(&err).trim(), "jail helper said");
        }
        w.and(o).and(e).map_err(|e| ExecError::Sandbox(format!("talk to the jail helper: {e}")))?;
        protocol::decode_outcome(&out).map_err(|e| {
            ExecError::Sandbox(format!(
                "jail helper ended with {status} and no readable outcome ({e}): {}",
                String::from_utf8_lossy(&err).trim()
            ))
        })
    }
}

fn root_mountpoint(config: &Config) -> PathBuf {
    config.hako.runtime_dir.join("root")
}
