//! Package environments: the requirements files installed with pip or npm into managed
//! directories under the state dir, bound read-only into every run at a fixed path.
//!
//! ```text
//! <state_dir>/packages/<language>/<key>/          finished environment, never modified
//!     manifest.json                                inputs and host libraries it needs
//!     site-packages/ | node_modules/               what runs see at PYTHON_SITE / NODE_MODULES
//! <state_dir>/packages/<language>/.build-<key>-<pid>   environment being built
//! <state_dir>/cache/{pip,npm}                      download caches
//! ```
//!
//! The key hashes the interpreter and the requirement set, so an unchanged set is reused at
//! once (restarts are instant). A new set is built next to the old one and renamed into
//! place; then the current environment is swapped under a lock. Runs hold an `Arc` of the
//! environment they started with, and garbage collection skips any environment still held.

use crate::config::Config;
use crate::language::Language;
use hako_elf::closure::{self as elf, find_elf_objects};
use hako_elf::ldcache::LdCache;
use hako_jail::spec::JailSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

mod data;
mod install;

use data::{
    content_name, create_dirs, load_env, open_permissions, remove_dir, system_libraries, write,
};

/// Where the Python environment appears inside the jail (on `PYTHONPATH`).
pub const PYTHON_SITE: &str = "/opt/hako/python/site-packages";
/// Where the Node environment appears inside the jail (on `NODE_PATH`).
pub const NODE_MODULES: &str = "/opt/hako/nodejs/node_modules";
/// Always installed, as in Dify Sandbox's image: Dify's Jinja2 templates need jinja2.
pub const DEFAULT_PYTHON_PACKAGES: [&str; 3] = ["jinja2", "requests", "httpx"];
/// Finished environments kept per language (the current one included).
const KEEP_ENVS: usize = 3;
/// Tail of the installer's output kept in an error.
const ERROR_TAIL: usize = 4000;
const MANIFEST: &str = "manifest.json";
/// The last failed build of a language (`{key, error}`), for `hako doctor` and restarts.
const FAILED: &str = "failed.json";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("read requirements {path}: {source}")]
    Requirements {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prepare {path}: {source}; check that the state dir (hako.state_dir) is writable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start {program}: {source}; is it installed?")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{tool} install of {requirements} failed ({status}); the previous environment stays in use:\n{output}")]
    Install {
        tool: &'static str,
        requirements: PathBuf,
        status: String,
        output: String,
    },
    #[error("shared-library closure of {path}: {source}")]
    Closure {
        path: PathBuf,
        source: elf::ElfError,
    },
    #[error("manifest {path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error("{language} interpreter is not available: {reason}")]
    NoInterpreter { language: Language, reason: String },
    #[error("{source}; the previous environment stays in use")]
    Provision {
        #[from]
        source: crate::provision::ProvisionError,
    },
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvState {
    /// Nothing to install (no requirements) and no environment.
    None,
    Installing,
    Ready,
    Failed,
}

/// What the dependencies endpoint and `hako doctor` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvReport {
    pub state: EnvState,
    /// Installer output of the last failed build.
    pub error: Option<String>,
    /// Packages of the environment runs use now.
    pub packages: Vec<Package>,
    /// Key and host directory of the environment runs use now.
    pub current: Option<(String, PathBuf)>,
    /// Sonames none of the host's libraries provide.
    pub missing_libraries: Vec<String>,
}

/// A finished environment. Runs hold it (an `Arc`) until they end.
#[derive(Debug)]
pub struct Env {
    pub language: Language,
    pub key: String,
    /// The environment's directory on the host.
    pub dir: PathBuf,
    /// `site-packages` or `node_modules` on the host, bound at `Env::jail_path`.
    pub content: PathBuf,
    pub packages: Vec<Package>,
    /// Host libraries its ELF objects need (outside the environment).
    pub system_libs: Vec<PathBuf>,
    pub missing_libraries: Vec<String>,
    /// Variables pointing runs at the provisioned data (`NLTK_DATA`, ...).
    pub data_env: Vec<(String, String)>,
    /// Its prepared caches and data (host directory, path in the jail), found when it was
    /// loaded; Python environments only have them.
    pub prepared_dirs: Vec<(PathBuf, PathBuf)>,
}

impl Env {
    pub(crate) fn jail_path(&self) -> &'static str {
        match self.language {
            Language::Python3 => PYTHON_SITE,
            Language::Nodejs => NODE_MODULES,
        }
    }

    /// Adds the bind of the environment, its libraries and its search-path variable.
    pub fn apply(&self, spec: &mut JailSpec) {
        spec.mapped_binds
            .push((self.content.clone(), PathBuf::from(self.jail_path())));
        spec.mapped_binds.extend(self.prepared_dirs.iter().cloned());
        for (name, value) in &self.data_env {
            spec.env.retain(|(k, _)| k != name);
            spec.env.push((name.clone(), value.clone()));
        }
        spec.ro_binds.extend(self.system_libs.iter().cloned());
        spec.ro_binds.sort();
        spec.ro_binds.dedup();
        let var = match self.language {
            Language::Python3 => "PYTHONPATH",
            Language::Nodejs => "NODE_PATH",
        };
        spec.env.retain(|(k, _)| k != var);
        spec.env
            .push((var.to_string(), self.jail_path().to_string()));
    }
}

/// Written last into a build directory; its presence marks the environment complete.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    key: String,
    language: Language,
    interpreter: PathBuf,
    interpreter_version: String,
    requirements: String,
    defaults: Vec<String>,
    system_libs: Vec<PathBuf>,
    missing_libraries: Vec<String>,
    #[serde(default)]
    data_env: Vec<(String, String)>,
}

/// What one environment is built from.
#[derive(Debug, Clone)]
struct Inputs {
    language: Language,
    key: String,
    interpreter: PathBuf,
    interpreter_version: String,
    requirements_path: PathBuf,
    requirements: String,
    defaults: Vec<String>,
}
#[derive(Debug)]
struct Status {
    state: EnvState,
    error: Option<String>,
}

#[derive(Debug)]
struct Slot {
    current: RwLock<Option<Arc<Env>>>,
    status: Mutex<Status>,
    /// Held for the whole of a check or build: one build per language at a time.
    build: Mutex<()>,
    /// Every environment loaded by this process; a live entry may be in use by a run.
    loaded: Mutex<HashMap<String, Weak<Env>>>,
    /// Woken on every status change (runs waiting for the first environment).
    changed: tokio::sync::Notify,
}

impl Slot {
    fn new() -> Self {
        Slot {
            current: RwLock::new(None),
            status: Mutex::new(Status {
                state: EnvState::None,
                error: None,
            }),
            build: Mutex::new(()),
            loaded: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn set_status(&self, state: EnvState, error: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.state = state;
        status.error = error;
        drop(status);
        self.changed.notify_waiters();
    }

    fn state(&self) -> EnvState {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    fn current(&self) -> Option<Arc<Env>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Debug)]
struct Inner {
    state_dir: PathBuf,
    pip_index_url: String,
    interval: Option<Duration>,
    python: Result<(PathBuf, String), String>,
    python_requirements: PathBuf,
    node: Result<(PathBuf, String), String>,
    node_requirements: PathBuf,
    /// Data provisioned into Python environments (`hako.python_data`).
    python_data: Vec<crate::provision::DataItem>,
    /// The host id that owns provisioned data (root inside the jail).
    data_owner: Option<u32>,
    slots: [Slot; 2],
    /// Set by [`PackageManager::start`]: an installer will build what is pending.
    installer: std::sync::atomic::AtomicBool,
}

/// The package environments of both languages. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PackageManager {
    inner: Arc<Inner>,
}

fn index(language: Language) -> usize {
    match language {
        Language::Python3 => 0,
        Language::Nodejs => 1,
    }
}

impl PackageManager {
    /// Loads the environments that already exist for the current requirement sets. Never
    /// installs anything (see [`PackageManager::start`]). `python`/`node` are the
    /// interpreter path and version, or why the language is unavailable.
    pub fn new(
        config: &Config,
        python: Result<(PathBuf, String), String>,
        node: Result<(PathBuf, String), String>,
    ) -> Self {
        let interval = config.deps_update_interval();
        let manager = PackageManager {
            inner: Arc::new(Inner {
                state_dir: config.hako.state_dir.clone(),
                pip_index_url: config.python_pip_mirror_url.trim().to_string(),
                interval,
                python,
                python_requirements: config.hako.python_requirements.clone(),
                node,
                node_requirements: config.hako.nodejs_requirements.clone(),
                python_data: config.hako.python_data.clone(),
                data_owner: crate::provision::data_owner(config),
                slots: [Slot::new(), Slot::new()],
                installer: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        for language in [Language::Python3, Language::Nodejs] {
            if let Err(err) = manager.load_existing(language) {
                tracing::debug!(%language, error = %err, "no ready package environment");
            }
        }
        manager
    }

    /// True when the current requirement set of `language` has no built environment yet.
    pub fn pending(&self, language: Language) -> bool {
        match self.inputs(language) {
            Ok(Some(inputs)) => self.current(language).is_none_or(|e| e.key != inputs.key),
            _ => false,
        }
    }

    /// True while a run of `language` would start without any environment although one is
    /// being (or about to be) built for it: no environment yet, the installer running, and
    /// no failed build for the current set.
    fn first_build_pending(&self, language: Language) -> bool {
        let slot = self.slot(language);
        slot.current().is_none()
            && self
                .inner
                .installer
                .load(std::sync::atomic::Ordering::Acquire)
            && slot.state() != EnvState::Failed
            && self.pending(language)
    }

    /// Waits until `language` has its first environment (or its build failed), at most
    /// `limit`. Runs never wait for a later rebuild: they keep the previous environment.
    /// `Err` when the limit passed with the build still going.
    pub(crate) async fn wait_for_first(
        &self,
        language: Language,
        limit: Duration,
    ) -> Result<(), ()> {
        let slot = self.slot(language);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = slot.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change in between is not missed.
            changed.as_mut().enable();
            if !self.first_build_pending(language) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return if self.first_build_pending(language) {
                    Err(())
                } else {
                    Ok(())
                };
            }
        }
    }

    fn slot(&self, language: Language) -> &Slot {
        &self.inner.slots[index(language)]
    }

    /// The environment new runs of `language` use.
    pub fn current(&self, language: Language) -> Option<Arc<Env>> {
        self.slot(language).current()
    }

    /// Adds the current environment to `spec`. Keep the returned lease until the run ends:
    /// garbage collection never deletes a leased environment.
    pub(crate) fn attach(&self, language: Language, spec: &mut JailSpec) -> Option<Arc<Env>> {
        let env = self.current(language)?;
        env.apply(spec);
        Some(env)
    }

    pub fn report(&self, language: Language) -> EnvReport {
        let slot = self.slot(language);
        let current = slot.current();
        let status = slot.status.lock().unwrap_or_else(|e| e.into_inner());
        EnvReport {
            state: status.state,
            error: status.error.clone(),
            packages: current
                .as_ref()
                .map(|e| e.packages.clone())
                .unwrap_or_default(),
            current: current.as_ref().map(|e| (e.key.clone(), e.dir.clone())),
            missing_libraries: current
                .as_ref()
                .map(|e| e.missing_libraries.clone())
                .unwrap_or_default(),
        }
    }

    /// Builds both environments in the background, then re-checks the requirements files
    /// every `python_deps_update_interval`. Never blocks and never panics the caller.
    pub fn start(&self) {
        self.inner
            .installer
            .store(true, std::sync::atomic::Ordering::Release);
        let manager = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hako-packages".into())
            .spawn(move || loop {
                for language in [Language::Python3, Language::Nodejs] {
                    // Failures are recorded in the status and logged by ensure.
                    let _ = manager.ensure(language);
                }
                match manager.inner.interval {
                    Some(interval) => std::thread::sleep(interval),
                    None => return,
                }
            });
        if let Err(err) = spawned {
            self.inner
                .installer
                .store(false, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %err, "cannot start the package installer thread");
        }
    }

    /// Re-reads the requirements file and builds (or reuses) its environment now; returns
    /// when runs use it, or with the error that kept the previous one in place.
    pub async fn refresh(&self, language: Language) -> EnvReport {
        let manager = self.clone();
        let joined = tokio::task::spawn_blocking(move || manager.ensure(language)).await;
        if let Err(err) = joined {
            tracing::error!(%language, error = %err, "package install task failed");
        }
        self.report(language)
    }

    /// Makes the current environment match the requirements file, building it if needed.
    pub fn ensure(&self, language: Language) -> Result<(), PackageError> {
        let slot = self.slot(language);
        let _build = slot.build.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.ensure_locked(language);
        let failed = self.language_dir(language).join(FAILED);
        match &result {
            Ok(()) => {
                let _ = fs::remove_file(&failed);
            }
            Err(err) => {
                tracing::error!(%language, error = %err, "package environment not updated");
                slot.set_status(EnvState::Failed, Some(err.to_string()));
                let key = self.inputs(language).ok().flatten().map(|i| i.key);
                let record = serde_json::json!({"key": key, "error": err.to_string()});
                let _ = create_dirs(&self.language_dir(language))
                    .and_then(|()| write(&failed, record.to_string().as_bytes()));
            }
        }
        result
    }

    fn ensure_locked(&self, language: Language) -> Result<(), PackageError> {
        let slot = self.slot(language);
        let Some(inputs) = self.inputs(language)? else {
            *slot.current.write().unwrap_or_else(|e| e.into_inner()) = None;
            slot.set_status(EnvState::None, None);
            return Ok(());
        };
        if slot.current().is_some_and(|env| env.key == inputs.key) {
            slot.set_status(EnvState::Ready, None);
            return Ok(());
        }
        let dir = self.env_dir(language, &inputs.key);
        if !dir.join(MANIFEST).is_file() {
            slot.set_status(EnvState::Installing, None);
            tracing::info!(%language, key = %inputs.key, requirements = %inputs.requirements_path.display(), "installing packages");
            self.build(&inputs, &dir)?;
        }
        let env = self.switch_to(language, &dir)?;
        tracing::info!(%language, key = %env.key, packages = env.packages.len(), "package environment ready");
        self.collect_garbage(language);
        Ok(())
    }

    /// Uses an existing environment for the current inputs, without installing.
    fn load_existing(&self, language: Language) -> Result<(), PackageError> {
        let Some(inputs) = self.inputs(language)? else {
            return Ok(());
        };
        let dir = self.env_dir(language, &inputs.key);
        if dir.join(MANIFEST).is_file() {
            self.switch_to(language, &dir)?;
            return Ok(());
        }
        // The same set failed before: say so until a build succeeds.
        let failed = fs::read(self.language_dir(language).join(FAILED)).unwrap_or_default();
        let record: serde_json::Value = serde_json::from_slice(&failed).unwrap_or_default();
        if record["key"].as_str() == Some(inputs.key.as_str()) {
            let error = record["error"].as_str().unwrap_or_default().to_string();
            self.slot(language)
                .set_status(EnvState::Failed, Some(error));
        }
        Ok(())
    }

    fn switch_to(&self, language: Language, dir: &Path) -> Result<Arc<Env>, PackageError> {
        let slot = self.slot(language);
        let env = Arc::new(load_env(language, dir)?);
        slot.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(env.key.clone(), Arc::downgrade(&env));
        // The switch: new runs get `env`; runs in flight keep the Arc they hold.
        *slot.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&env));
        slot.set_status(EnvState::Ready, None);
        Ok(env)
    }

    fn language_dir(&self, language: Language) -> PathBuf {
        self.inner
            .state_dir
            .join("packages")
            .join(language.as_str())
    }

    fn env_dir(&self, language: Language, key: &str) -> PathBuf {
        self.language_dir(language).join(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_binds_the_env_at_the_fixed_path() {
        let env = Env {
            language: Language::Python3,
            key: "k".into(),
            dir: PathBuf::from("/state/k"),
            content: PathBuf::from("/state/k/site-packages"),
            packages: Vec::new(),
            system_libs: vec![PathBuf::from("/usr/lib/libx.so")],
            missing_libraries: Vec::new(),
            data_env: vec![("NLTK_DATA".into(), "/opt/hako/data/nltk_data".into())],
            prepared_dirs: vec![(
                PathBuf::from("/state/k/seed"),
                PathBuf::from(hako_jail::mounts::SEED_IN_JAIL),
            )],
        };
        let mut spec: JailSpec = serde_json::from_value(serde_json::json!({
            "language": "python3", "interpreter": "/usr/bin/python3", "args": [],
            "env": [["PYTHONPATH", "/elsewhere"]], "code_path": "/sandbox/main.py", "ro_binds": [],
            "limits": {"memory_bytes": 1, "pids": 1, "tmp_bytes": 1, "output_bytes": 1, "timeout_ms": 1, "nofile": 1},
            "network": "none", "seccomp": {"mode": "enforce", "extra_allowed": []},
            "ids": {"host_uid": 1, "host_gid": 1}, "root_mountpoint": "/r", "insecure": false
        }))
        .unwrap();
        env.apply(&mut spec);
        assert_eq!(
            spec.mapped_binds,
            vec![
                (
                    PathBuf::from("/state/k/site-packages"),
                    PathBuf::from(PYTHON_SITE)
                ),
                (
                    PathBuf::from("/state/k/seed"),
                    PathBuf::from(hako_jail::mounts::SEED_IN_JAIL)
                ),
            ]
        );
        assert_eq!(
            spec.env,
            vec![
                (
                    "NLTK_DATA".to_string(),
                    "/opt/hako/data/nltk_data".to_string()
                ),
                ("PYTHONPATH".to_string(), PYTHON_SITE.to_string()),
            ]
        );
        assert_eq!(spec.ro_binds, vec![PathBuf::from("/usr/lib/libx.so")]);
    }
}
