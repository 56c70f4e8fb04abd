//! The executor: turns a [`RunRequest`] into a jailed run and a [`RunReport`].
//!
//! Every run starts the jail helper (`hako __jail`, this same binary) as a separate
//! process; the caller, which may be the multi-threaded server, never forks itself.

use crate::adapter::{Adapter, AdapterError};
use crate::config::Config;
use crate::language::Language;
use crate::packages::PackageManager;
use crate::result::{RunReport, RunRequest};
use crate::stop::Cancel;
use crate::summary::summarize;
use hako_jail::protocol;
use hako_jail::spec::{JailOutcome, JailSpec, Limits, NetworkMode, RunIds};
pub use plan::JailRequest;
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
    /// The language's first package environment is still being built after the configured
    /// wait (`hako.packages_wait_seconds`); try again later.
    #[error("the {language} package environment is still being installed (waited {waited_s} s, hako.packages_wait_seconds); retry shortly")]
    PackagesNotReady { language: Language, waited_s: u64 },
    /// The jail could not be started or failed before the program ran (the helper's
    /// account of it).
    #[error("sandbox failure: {0}")]
    Sandbox(String),
    #[error("sandbox failure: {0}")]
    AllowedSyscalls(#[source] hako_jail::seccomp::SeccompError),
    #[error("sandbox failure: create {path}: {source}")]
    RootMountpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox failure: {0}")]
    Egress(#[source] crate::egress::EgressError),
    #[error("sandbox failure: {0}")]
    Frame(#[source] protocol::FrameError),
    #[error("sandbox failure: start the jail helper {path}: {source}")]
    StartHelper {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox failure: wait for the jail helper: {0}")]
    WaitHelper(#[source] std::io::Error),
    #[error("sandbox failure: talk to the jail helper: {0}")]
    TalkHelper(#[source] std::io::Error),
    #[error("sandbox failure: jail helper ended with {status} and no readable outcome ({source}): {stderr}")]
    NoOutcome {
        status: std::process::ExitStatus,
        #[source]
        source: protocol::FrameError,
        stderr: String,
    },
    #[error("sandbox failure: zygote library closure: {0}")]
    ZygoteClosure(#[source] hako_elf::closure::ElfError),
    #[error("sandbox failure: {0}")]
    Preload(#[source] serde_json::Error),
    /// The caller gave up; the run was stopped and everything it had is gone.
    #[error("the run was cancelled: its caller went away")]
    Cancelled,
}

#[path = "plan.rs"]
mod plan;

/// The host ids `uid_base + offset ..` (`count` of them, one of [`Config::id_ranges`]) that
/// the jail helpers lease from, shared with every hako process that uses the same runtime
/// directory.
fn id_pool(config: &Config, (offset, count): (u32, u32)) -> hako_jail::ids::IdPool {
    hako_jail::ids::IdPool {
        lock_dir: config.hako.runtime_dir.join("ids"),
        first: config.hako.uid_base + offset,
        count,
    }
}

struct Inner {
    /// The process's one configuration, shared with the HTTP layer.
    config: Arc<Config>,
    helper: PathBuf,
    adapters: Vec<Result<Adapter, String>>,
    next_id: AtomicU32,
    packages: PackageManager,
    egress: crate::egress::Egress,
    /// Warm Python zygotes; set by [`Executor::start_warm`] (the server), absent in the CLI.
    warm: std::sync::OnceLock<crate::warm_python::PythonZygotes>,
    /// Pre-started Node.js workers; set by [`Executor::start_warm`].
    node_pool: std::sync::OnceLock<crate::warm::NodePool>,
    /// Helpers that answered and are still cleaning up.
    finishing: crate::warm::Finishing,
    /// Runs killed because they sent their supervisor a message no state expects.
    tampered: std::sync::atomic::AtomicU64,
}

/// Runs programs. Cheap to clone and share between requests.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("helper", &self.inner.helper)
            .finish()
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
    /// binary that implements `__jail` (normally the current executable). `config` is the
    /// loaded configuration; the caller may share it (the HTTP layer reads the same copy).
    pub fn new(config: Arc<Config>, helper: PathBuf) -> Result<Self, ExecError> {
        std::fs::create_dir_all(root_mountpoint(&config)).map_err(|source| {
            ExecError::RootMountpoint {
                path: root_mountpoint(&config),
                source,
            }
        })?;
        let adapters = [
            (Language::Python3, &config.python_path),
            (Language::Nodejs, &config.nodejs_path),
        ]
        .into_iter()
        .map(|(lang, path)| Adapter::discover(lang, path).map_err(|e: AdapterError| e.to_string()))
        .collect::<Vec<Result<Adapter, String>>>();
        let interpreter = |i: usize| {
            adapters[i]
                .as_ref()
                .map(|a| (a.interpreter.clone(), a.version.clone()))
                .map_err(Clone::clone)
        };
        // Uses environments that are already built; `PackageManager::start` installs.
        let packages = PackageManager::new(&config, interpreter(0), interpreter(1));
        let egress = crate::egress::Egress::new(&config).map_err(ExecError::Egress)?;
        let finishing = crate::warm::Finishing::new(config.hako.cgroup_root.clone());
        Ok(Executor {
            inner: Arc::new(Inner {
                config,
                helper,
                adapters,
                next_id: AtomicU32::new(0),
                packages,
                egress,
                warm: std::sync::OnceLock::new(),
                node_pool: std::sync::OnceLock::new(),
                finishing,
                tampered: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// How many runs were killed for tampering with their supervisor channel.
    pub fn tampered_runs(&self) -> u64 {
        self.inner.tampered.load(Ordering::Relaxed)
    }

    /// The package environments runs see.
    pub fn packages(&self) -> &PackageManager {
        &self.inner.packages
    }

    /// The adapter of a language, or why it is unavailable.
    pub fn adapter(&self, language: Language) -> Result<&Adapter, ExecError> {
        let index = match language {
            Language::Python3 => 0,
            Language::Nodejs => 1,
        };
        self.inner.adapters[index]
            .as_ref()
            .map_err(|reason| ExecError::Unavailable {
                language,
                reason: reason.clone(),
            })
    }

    pub async fn run(&self, request: RunRequest) -> Result<RunReport, ExecError> {
        self.run_until(request, Cancel::never()).await
    }

    /// Runs until done or until `cancel` fires; a cancelled run returns
    /// [`ExecError::Cancelled`] once its processes are gone.
    pub async fn run_until(
        &self,
        request: RunRequest,
        mut cancel: Cancel,
    ) -> Result<RunReport, ExecError> {
        self.run_cancellable(request, ExecOptions::default(), &mut cancel)
            .await
            .map(|(result, _)| result)
    }

    /// Runs and also returns the raw jail outcome (for `hako profile` and `--json`).
    pub async fn run_with(
        &self,
        request: RunRequest,
        options: ExecOptions,
    ) -> Result<(RunReport, JailOutcome), ExecError> {
        self.run_cancellable(request, options, &mut Cancel::never())
            .await
    }

    async fn run_cancellable(
        &self,
        request: RunRequest,
        options: ExecOptions,
        cancel: &mut Cancel,
    ) -> Result<(RunReport, JailOutcome), ExecError> {
        let config = &self.inner.config;
        if request.enable_network && !config.enable_network {
            return Err(ExecError::NetworkDisabled);
        }
        // Right after a fresh start the first environment may still be installing: runs
        // wait for it rather than fail on a missing module.
        let wait = config.hako.packages_wait_seconds;
        self.inner
            .packages
            .wait_for_first(request.language, std::time::Duration::from_secs(wait))
            .await
            .map_err(|()| ExecError::PackagesNotReady {
                language: request.language,
                waited_s: wait,
            })?;
        // The environment is held until the run ends, so it is not garbage-collected under it.
        let (spec, _packages) =
            self.plan(&JailRequest::of(&request, options), &request.request_id)?;
        let mut code = Vec::new();
        if config.enable_preload {
            if let Some(preload) = request.preload.as_deref().filter(|p| !p.trim().is_empty()) {
                code.extend_from_slice(preload.as_bytes());
                code.push(b'\n');
            }
        }
        code.extend_from_slice(request.code.as_bytes());
        let outcome = self.execute(&spec, &code, options, cancel).await?;
        if outcome.tampered {
            self.inner.tampered.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                request_id = %request.request_id,
                failure = ?outcome.failure,
                "the run tampered with its supervisor channel; it was killed"
            );
        } else if let Some(failure) = &outcome.failure {
            tracing::error!(request_id = %request.request_id, %failure, "the run failed");
        }
        if let Some(err) = &outcome.setup_error {
            tracing::error!(request_id = %request.request_id, error = %err, "jail setup failed");
            return Err(ExecError::Sandbox(err.clone()));
        }
        let result = summarize(&outcome, request.language, &spec.limits);
        Ok((result, outcome))
    }

    async fn spawn_helper(
        &self,
        spec: &JailSpec,
        code: &[u8],
        cancel: &mut Cancel,
    ) -> Result<JailOutcome, ExecError> {
        let request = protocol::encode_request(spec, code).map_err(ExecError::Frame)?;
        let mut child = tokio::process::Command::new(&self.inner.helper)
            .arg("__jail")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::StartHelper {
                path: self.inner.helper.clone(),
                source,
            })?;
        // A dropped request (client gone) asks the helper to stop; it kills the run and
        // cleans up after it (a SIGKILL would leave the run's cgroup behind).
        let mut cancel_on_drop = CancelOnDrop(child.id());
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| ExecError::Sandbox("helper stdin".into()))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| ExecError::Sandbox("helper stdout".into()))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| ExecError::Sandbox("helper stderr".into()))?;
        let write = async move {
            let result = stdin.write_all(&request).await;
            drop(stdin);
            result
        };
        // The helper closes its stdout once the outcome is written, then removes the run's
        // cgroup: answer then, and reap it in the background.
        let mut out = Vec::new();
        let exchanged = tokio::select! {
            io = async { tokio::join!(write, stdout.read_to_end(&mut out)) } => Some(io),
            _ = cancel.cancelled() => None,
        };
        let Some((w, o)) = exchanged else {
            // The caller is gone: stop the run and wait until its processes are.
            drop((stdout, stderr));
            crate::stop::stop_helper(&mut child, &spec.cgroup_root).await;
            cancel_on_drop.0 = None;
            return Err(ExecError::Cancelled);
        };
        let decoded = protocol::decode_outcome(&out);
        if decoded.is_ok() {
            cancel_on_drop.0 = None;
            self.inner.finishing.reap(child, Some(stderr));
            return decoded.map_err(ExecError::Frame);
        }
        let mut err = Vec::new();
        let e = stderr.read_to_end(&mut err).await;
        let pid = child.id();
        let status = child.wait().await;
        // Reaped (or failed to be): either way the pid is no longer ours to signal.
        cancel_on_drop.0 = None;
        let status = status.map_err(ExecError::WaitHelper)?;
        if !status.success() {
            // Killed or failed before it could clean up: remove what it left.
            crate::stop::remove_leftovers(pid, &spec.cgroup_root).await;
        }
        if !err.is_empty() {
            tracing::warn!(helper_stderr = %String::from_utf8_lossy(&err).trim(), "jail helper said");
        }
        if w.is_ok() && !status.success() {
            // The helper took the program and died (killed) before it answered: the program
            // may have run. A clear failure, never a second run.
            tracing::error!(%status, "jail helper lost during a run");
            return Ok(crate::warm::lost_after_handover("jail helper", &status));
        }
        w.and(o).and(e).map_err(ExecError::TalkHelper)?;
        decoded.map_err(|source| ExecError::NoOutcome {
            status,
            source,
            stderr: String::from_utf8_lossy(&err).trim().to_string(),
        })
    }
}

fn root_mountpoint(config: &Config) -> PathBuf {
    config.hako.runtime_dir.join("root")
}

impl Executor {
    /// Waits until every helper that already answered has cleaned up (removed its run's
    /// cgroup) and exited. A short-lived caller (the CLI) calls it before its runtime ends.
    pub async fn wait_for_helpers(&self) {
        self.inner.finishing.wait().await;
    }

    /// Stops everything this executor started (a stopping server, after its last run): the
    /// warm pools, the helpers still cleaning up, and the egress guard with its socket.
    pub async fn shutdown(&self) {
        if let Some(pool) = self.inner.warm.get() {
            pool.close().await;
        }
        if let Some(pool) = self.inner.node_pool.get() {
            pool.close().await;
        }
        self.inner.finishing.wait().await;
        self.inner.egress.stop();
    }

    /// Starts warm Python zygotes (mode `zygote`): `count` of them, so that many runs can
    /// fork at once. Needs a tokio runtime. Without the zygote library, runs stay in spawn mode.
    pub fn start_warm(&self, count: usize) -> Result<(), ExecError> {
        let config = &self.inner.config;
        if config.hako.mode != crate::config::ExecMode::Zygote {
            return Ok(());
        }
        if let (Ok(adapter), true) = (self.adapter(Language::Nodejs), config.hako.nodejs_pool > 0) {
            let executor = self.clone();
            let factory = Arc::new(move || {
                let adapter = executor.adapter(Language::Nodejs).ok()?;
                Some(executor.node_template(adapter))
            });
            let pool = crate::warm::NodePool::new(
                self.inner.helper.clone(),
                config.hako.nodejs_pool,
                factory,
                self.inner.finishing.clone(),
            );
            pool.set_template(self.node_template(adapter));
            let _ = self.inner.node_pool.set(pool);
        }
        if !nix_is_root() {
            tracing::warn!("zygote mode needs root (two mapped ids per zygote); using spawn mode");
            return Ok(());
        }
        let library = zygote_library(&self.inner.helper)?;
        let adapter = self.adapter(Language::Python3)?;
        let pool = crate::warm_python::PythonZygotes::new(
            self.inner.helper.clone(),
            count,
            self.inner.finishing.clone(),
            library,
        );
        pool.set_templates(self.zygote_templates(adapter, &pool.library)?);
        let _ = self.inner.warm.set(pool);
        Ok(())
    }

    /// A pooled Node worker's spec: default limits, the current packages, and network as a
    /// Dify request asks for it (`enable_network: true`) when the configuration allows it.
    fn node_template(&self, adapter: &Adapter) -> JailSpec {
        let request = JailRequest {
            enable_network: self.inner.config.enable_network,
            ..JailRequest::new(adapter.language)
        };
        let mut spec = self.spec(adapter, &request);
        let _env = self.inner.packages.attach(Language::Nodejs, &mut spec);
        if let Err(err) = self
            .inner
            .egress
            .attach(&mut spec, Language::Nodejs, "pool")
        {
            tracing::warn!("pooled node workers run without network: {err}");
            spec.network = NetworkMode::None;
            spec.egress = None;
        }
        let pool = id_pool(&self.inner.config, self.inner.config.id_ranges().node);
        spec.ids = RunIds {
            host_uid: pool.first,
            host_gid: pool.first,
        };
        spec.id_pool = Some(pool);
        spec.deferred = true;
        spec
    }

    /// The library zygotes load, or why zygote mode cannot work here.
    pub fn zygote_library(&self) -> Result<PathBuf, ExecError> {
        zygote_library(&self.inner.helper)
    }

    /// The warm pool's state, if the server started one.
    pub fn warm_status(&self) -> Option<crate::warm::PoolStatus> {
        let mut status = self.inner.warm.get().map(|pool| pool.status())?;
        status.node_idle = self.inner.node_pool.get().map_or(0, |p| p.idle());
        Some(status)
    }

    /// The zygotes' specs (heavy, lean and plain), and the package binds they were made from.
    fn zygote_templates(
        &self,
        adapter: &Adapter,
        library: &std::path::Path,
    ) -> Result<crate::warm_python::Templates, ExecError> {
        let config = &self.inner.config;
        let mut spec = self.spec(adapter, &JailRequest::new(adapter.language));
        let env = self.inner.packages.attach(Language::Python3, &mut spec);
        self.inner.egress.bind_files(&mut spec, Language::Python3);
        let key = spec.mapped_binds.clone();
        spec.zygote = true;
        // The bootstrap lives apart from the program's path: a syntax error's line is read
        // from the file at the program's path when one exists (CPython does), and that must
        // never be hako's script.
        let program_path = spec.code_path.to_string_lossy().into_owned();
        for arg in spec.args.iter_mut().filter(|a| **a == program_path) {
            *arg = ZYGOTE_BOOTSTRAP_IN_JAIL.into();
        }
        spec.code_path = PathBuf::from(ZYGOTE_BOOTSTRAP_IN_JAIL);
        // Files that runs with network need (the guard's CA bundle) must be in the zygote's root.
        let mut probe = spec.clone();
        probe.network = crate::egress::network_mode(config, true);
        if probe.network != NetworkMode::Host
            && self
                .inner
                .egress
                .attach(&mut probe, Language::Python3, "zygote")
                .is_ok()
        {
            spec.ro_binds = probe.ro_binds;
        }
        // Zygote ids live above the spawn range; the pool gives each zygote its own pair.
        let pool = id_pool(config, config.id_ranges().zygote);
        spec.ids = RunIds {
            host_uid: pool.first,
            host_gid: pool.first,
        };
        spec.id_pool = Some(pool);
        spec.mapped_binds
            .push((library.to_path_buf(), PathBuf::from(ZYGOTE_LIBRARY_IN_JAIL)));
        let cache = hako_elf::ldcache::LdCache::load(std::path::Path::new("/etc/ld.so.cache"))
            .unwrap_or_else(|_| hako_elf::ldcache::LdCache::empty());
        let closure = hako_elf::closure::library_closure(&[library.to_path_buf()], &cache)
            .map_err(ExecError::ZygoteClosure)?;
        spec.ro_binds.extend(closure.files);
        spec.ro_binds.sort();
        spec.ro_binds.dedup();
        // The configured modules plus the top-level modules of the installed requirements.
        let environment: std::collections::BTreeSet<String> = env
            .as_ref()
            .map(|env| top_level_modules(&env.content).into_iter().collect())
            .unwrap_or_default();
        let preload = crate::warm_python::heavy_preload(&config.hako.python_preload, &environment);
        spec.env
            .push(("HAKO_ZYGOTE_LIBRARY".into(), ZYGOTE_LIBRARY_IN_JAIL.into()));
        spec.env.push((
            "HAKO_PYTHON_WARMUP".into(),
            config.hako.python_warmup.clone(),
        ));
        spec.env.push((
            "HAKO_PRELOAD".into(),
            serde_json::to_string(&preload).map_err(ExecError::Preload)?,
        ));
        use crate::warm_python::{lean_preload, light_spec, plain_preload, Light};
        let light = |light, preload: Vec<String>| {
            light_spec(&spec, light, &preload).map_err(|e| ExecError::Sandbox(e.to_string()))
        };
        let lean = light(
            Light::Lean,
            lean_preload(&config.hako.python_preload, &environment),
        )?;
        let plain = light(
            Light::Plain,
            plain_preload(&config.hako.python_preload, &environment),
        )?;
        Ok(crate::warm_python::Templates {
            heavy: spec,
            lean,
            plain,
            key,
            environment,
        })
    }

    /// Runs in a warm zygote when one fits, else in a fresh jailed interpreter.
    async fn execute(
        &self,
        spec: &JailSpec,
        code: &[u8],
        options: ExecOptions,
        cancel: &mut Cancel,
    ) -> Result<JailOutcome, ExecError> {
        if let Some(pool) = self.inner.warm.get() {
            // Zygotes have loopback only (plus a guard listener per run in proxy mode); runs
            // with host network start afresh.
            let fits = spec.language == Language::Python3
                && !options.learn_syscalls
                && (spec.network == NetworkMode::None
                    || (spec.network == NetworkMode::Proxy && spec.egress.is_some()));
            if fits {
                if !pool.made_from(&spec.mapped_binds) {
                    // The package environment changed: new zygotes, old ones drain.
                    let adapter = self.adapter(Language::Python3)?;
                    pool.set_templates(self.zygote_templates(adapter, &pool.library)?);
                }
                let order = hako_jail::zygote::RunOrder {
                    limits: spec.limits,
                    seccomp: spec.seccomp.clone(),
                    insecure: spec.insecure,
                    env: spec.env.clone(),
                    egress: spec.egress.clone(),
                };
                match pool.run(&order, code, cancel).await {
                    // Once handed over, a program is never run again, whatever happened.
                    Ok(Some(outcome)) if outcome.setup_error.is_none() || outcome.confined => {
                        return Ok(outcome)
                    }
                    Ok(Some(outcome)) => {
                        // The zygote failed before the program started: run it afresh once.
                        tracing::warn!(
                            "zygote run failed before the program started: {:?}",
                            outcome.setup_error
                        );
                    }
                    Ok(None) => tracing::debug!("no warm zygote free; spawning"),
                    Err(crate::warm::WarmError::Cancelled) => return Err(ExecError::Cancelled),
                    Err(err) => tracing::warn!("{err}; spawning"),
                }
            }
        }
        if let Some(pool) = self.inner.node_pool.get() {
            let eligible = spec.language == Language::Nodejs
                && !options.learn_syscalls
                && spec.network != NetworkMode::Host;
            if eligible {
                if !pool.made_from(&spec.mapped_binds) && spec.limits == self.default_limits() {
                    // The package environment changed: new workers.
                    pool.set_template(self.node_template(self.adapter(Language::Nodejs)?));
                }
                if pool.fits(spec) {
                    match pool.run(code, spec.limits.timeout_ms, cancel).await {
                        Ok(Some(outcome)) if outcome.setup_error.is_none() || outcome.confined => {
                            return Ok(outcome)
                        }
                        Ok(Some(outcome)) => tracing::warn!(
                            "pooled node worker failed before the program: {:?}",
                            outcome.setup_error
                        ),
                        Ok(None) => tracing::debug!("no pooled node worker ready; spawning"),
                        Err(crate::warm::WarmError::Cancelled) => return Err(ExecError::Cancelled),
                        Err(err) => tracing::warn!("{err}; spawning"),
                    }
                }
            }
        }
        self.spawn_helper(spec, code, cancel).await
    }

    /// The limits of a run that asks for nothing special.
    fn default_limits(&self) -> Limits {
        self.limits(Default::default())
    }
}

/// Top-level module names of the distributions installed in `site`, read from each
/// distribution's `RECORD` (every installed file; `top_level.txt` is optional and missing
/// from many modern wheels), without private, test and metadata entries.
fn top_level_modules(site: &std::path::Path) -> Vec<String> {
    let mut modules: Vec<String> = Vec::new();
    let Ok(entries) = std::fs::read_dir(site) else {
        return modules;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".dist-info") {
            continue;
        }
        let Ok(record) = std::fs::read_to_string(entry.path().join("RECORD")) else {
            continue;
        };
        for line in record.lines() {
            let path = line.split(',').next().unwrap_or_default();
            let (first, rest) = path.split_once('/').unwrap_or((path, ""));
            let module = if rest.is_empty() {
                // A single-file module: `six.py`.
                match first.strip_suffix(".py") {
                    Some(m) => m,
                    None => continue,
                }
            } else {
                first
            };
            let skip = module.is_empty()
                || module.starts_with('_')
                || module.starts_with('.')
                || module.starts_with("test")
                || module.contains('.')
                || module.contains('-')
                || module == "bin";
            if !skip && !modules.iter().any(|m| m == module) {
                modules.push(module.to_string());
            }
        }
    }
    modules.sort();
    modules
}

/// Where the zygote's bootstrap (hako's own script) is written inside the jail.
const ZYGOTE_BOOTSTRAP_IN_JAIL: &str = "/opt/hako/zygote.py";

/// Where the zygote library appears inside the jail.
const ZYGOTE_LIBRARY_IN_JAIL: &str = "/opt/hako/lib/libhako_zygote.so";

/// The zygote library is built next to the `hako` binary.
fn zygote_library(helper: &std::path::Path) -> Result<PathBuf, ExecError> {
    let path = helper.with_file_name("libhako_zygote.so");
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExecError::Sandbox(format!(
            "zygote mode needs {} (built with `cargo build --workspace`); set hako.mode: spawn to run without it",
            path.display()
        )))
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends SIGTERM to a jail helper unless the run completed (the helper has exited by then,
/// and its pid is not reused before the `Child` is reaped).
struct CancelOnDrop(Option<u32>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill only sends a signal; the pid is our unreaped child (or exited).
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
}

impl Executor {
    /// The binary that implements the jail helpers.
    pub(crate) fn helper_path(&self) -> &std::path::Path {
        &self.inner.helper
    }
}
