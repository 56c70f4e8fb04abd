//! Configuration: Dify Sandbox's `conf/config.yaml` keys and environment variables, plus
//! hako's own `hako:` section (env `HAKO_<KEY>`).
//!
//! The structs below are the contract; loading, environment overrides and validation live in
//! [`Config::load`]. Unknown keys are reported as warnings, not errors, so a newer Dify
//! config keeps working.

use hako_jail::seccomp::{resolve_syscall, SeccompError};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Dify Sandbox default API key; serving with it logs a loud warning.
pub const DEFAULT_API_KEY: &str = "dify-sandbox";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AppConfig {
    pub port: u16,
    #[serde(deserialize_with = "nullable")]
    pub key: String,
    pub debug: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            port: 8194,
            key: DEFAULT_API_KEY.to_string(),
            debug: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProxyConfig {
    #[serde(deserialize_with = "nullable")]
    pub socks5: String,
    #[serde(deserialize_with = "nullable")]
    pub http: String,
    #[serde(deserialize_with = "nullable")]
    pub https: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// Python forks from a warm zygote; Node uses a pre-started pool.
    Zygote,
    /// A fresh jailed interpreter per run.
    Spawn,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    /// Egress through hako's SSRF guard.
    Proxy,
    /// The host's network (Dify Sandbox's behaviour; unsafe for multi-tenant use).
    Host,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LimitsConfig {
    pub memory_mb: u64,
    pub pids: u64,
    pub tmp_mb: u64,
    pub output_bytes: u64,
    pub nofile: u64,
    /// CPU time per wall time, in percent of one CPU (100 = one CPU).
    pub cpu_percent: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory_mb: 512,
            pids: 128,
            tmp_mb: 64,
            output_bytes: 4 << 20,
            nofile: 1024,
            cpu_percent: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetworkConfig {
    pub mode: NetworkPolicy,
    #[serde(deserialize_with = "nullable")]
    pub allow: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub deny: Vec<String>,
    /// Extra CA certificates (PEM) runs trust, e.g. an internal CA.
    #[serde(deserialize_with = "nullable")]
    pub ca_file: PathBuf,
    /// Per run: connections in total, connections at once, bytes relayed both ways.
    pub max_connections: u64,
    pub max_concurrent: u64,
    pub max_bytes: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: NetworkPolicy::Proxy,
            allow: Vec::new(),
            deny: Vec::new(),
            ca_file: PathBuf::new(),
            max_connections: 512,
            max_concurrent: 64,
            max_bytes: 256 << 20,
        }
    }
}

/// The API's connections (`hako.http`): see docs/configuration.md.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// A request head must be complete this long after the connection opened or its first byte.
    pub header_timeout_secs: u64,
    /// A keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout_secs: u64,
    /// Open connections at most; more are closed at once.
    pub max_connections: u64,
    /// `/metrics` answers without `X-Api-Key`.
    pub metrics_public: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            metrics_public: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HakoConfig {
    /// Package environments and caches.
    pub state_dir: PathBuf,
    /// Empty directories used as mount points of run roots, and other runtime files.
    pub runtime_dir: PathBuf,
    pub mode: ExecMode,
    #[serde(deserialize_with = "nullable")]
    pub python_preload: Vec<String>,
    /// Python code each zygote runs once after the preload, and each zygote's calibration run
    /// repeats: what it touches is warm for every run (e.g. a small pandas DataFrame).
    pub python_warmup: String,
    pub nodejs_pool: usize,
    pub limits: LimitsConfig,
    pub network: NetworkConfig,
    pub http: HttpConfig,
    pub nodejs_requirements: PathBuf,
    pub python_requirements: PathBuf,
    /// Run even when seccomp or namespaces are missing. Loudly logged.
    pub insecure: bool,
    pub log_format: LogFormat,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// First host uid/gid of the per-run identities; runs use `uid_base .. uid_base + 65536`.
    pub uid_base: u32,
    /// Root of the cgroup hierarchy (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// How long a run waits for its language's first package environment (fresh start).
    pub packages_wait_seconds: u64,
    /// Files and directories copied into Python environments at install time.
    #[serde(deserialize_with = "nullable")]
    pub python_data: Vec<crate::provision::DataItem>,
    /// The agent API: files, sessions, replicas.
    pub agent: crate::agent::AgentConfig,
}

impl Default for HakoConfig {
    fn default() -> Self {
        let root = is_root();
        HakoConfig {
            state_dir: if root {
                PathBuf::from("/var/lib/hako")
            } else {
                xdg_dir("XDG_STATE_HOME", ".local/state").join("hako")
            },
            runtime_dir: if root {
                PathBuf::from("/run/hako")
            } else {
                std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("hako-{}", uid())))
                    .join("hako")
            },
            mode: ExecMode::Zygote,
            python_preload: vec!["json".into(), "base64".into()],
            python_warmup: String::new(),
            nodejs_pool: 2,
            limits: LimitsConfig::default(),
            network: NetworkConfig::default(),
            http: HttpConfig::default(),
            nodejs_requirements: PathBuf::from("dependencies/nodejs-requirements.txt"),
            python_requirements: PathBuf::from("dependencies/python-requirements.txt"),
            insecure: false,
            log_format: LogFormat::Human,
            max_body_bytes: 16 << 20,
            uid_base: 1_100_000,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            packages_wait_seconds: 60,
            python_data: Vec::new(),
            agent: crate::agent::AgentConfig::default(),
        }
    }
}

/// The whole configuration. Field names are Dify Sandbox's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub app: AppConfig,
    pub max_workers: usize,
    pub max_requests: usize,
    /// Seconds.
    pub worker_timeout: u64,
    #[serde(deserialize_with = "nullable")]
    pub python_path: PathBuf,
    /// Accepted for compatibility; hako computes the library closure itself.
    #[serde(deserialize_with = "nullable")]
    pub python_lib_path: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub python_pip_mirror_url: String,
    /// Go-style duration (`30m`, `1h`); empty disables periodic re-checks.
    #[serde(deserialize_with = "nullable")]
    pub python_deps_update_interval: String,
    #[serde(deserialize_with = "nullable")]
    pub nodejs_path: PathBuf,
    pub enable_network: bool,
    pub enable_preload: bool,
    /// Names or numbers; resolved by the runtime and *added* to the default policy.
    #[serde(deserialize_with = "syscall_list")]
    pub allowed_syscalls: Vec<String>,
    pub proxy: ProxyConfig,
    pub hako: HakoConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            app: AppConfig::default(),
            max_workers: 4,
            max_requests: 50,
            worker_timeout: 5,
            python_path: PathBuf::from("/usr/bin/python3"),
            python_lib_path: Vec::new(),
            python_pip_mirror_url: String::new(),
            python_deps_update_interval: String::new(),
            nodejs_path: PathBuf::from("/usr/bin/node"),
            enable_network: true,
            enable_preload: false,
            allowed_syscalls: Vec::new(),
            proxy: ProxyConfig::default(),
            hako: HakoConfig::default(),
        }
    }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn is_root() -> bool {
    uid() == 0
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(fallback)
    })
}

/// Where the config file is looked for when no path is given (relative to the working directory).
pub const DEFAULT_CONFIG_PATH: &str = "conf/config.yaml";

const ENV_ORIGIN: &str = "environment";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// `value` is already formatted (strings quoted).
    #[error("invalid value {value} for {key} ({origin}): {reason}")]
    Invalid {
        key: String,
        origin: String,
        value: String,
        reason: String,
    },
    #[error("invalid value {value:?} in {key} ({origin}): {reason}")]
    Syscall {
        key: String,
        origin: String,
        value: String,
        reason: Box<SeccompError>,
    },
}

/// A loaded configuration, with the warnings to log at start-up.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    /// The file that was read, if any.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Loads `path` (or `conf/config.yaml`), applies the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with an explicit environment lookup.
    pub fn load_with_env(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        Self::load_from(path, Path::new(DEFAULT_CONFIG_PATH), env)
    }

    fn load_from(
        path: Option<&Path>,
        default_path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let (mut config, source) = match path {
            Some(path) => (read_file(path, &mut warnings)?, Some(path.to_path_buf())),
            None if default_path.exists() => (
                read_file(default_path, &mut warnings)?,
                Some(default_path.to_path_buf()),
            ),
            None => {
                warnings.push(format!(
                    "no config file at {} (relative to the working directory); serving with \
                     built-in defaults",
                    default_path.display()
                ));
                (Config::default(), None)
            }
        };
        let file_origin = match &source {
            Some(path) => path.display().to_string(),
            None => "built-in default".to_string(),
        };
        // The file's syscalls are checked before the environment's are merged in, so an
        // error names the right origin.
        check_syscalls(&config.allowed_syscalls, "allowed_syscalls", &file_origin)?;
        let origins = apply_env(&mut config, env)?;
        config
            .hako
            .agent
            .apply_env(env)
            .map_err(|(key, value)| ConfigError::Invalid {
                key: key.into(),
                origin: "environment".into(),
                value: format!("{value:?}"),
                reason: "expected a number".into(),
            })?;
        config.normalize();
        let origin = Origins {
            file: file_origin,
            env: origins,
        };
        config.validate(&origin)?;
        warnings.extend(config.warnings());
        Ok(Loaded {
            config,
            warnings,
            source,
        })
    }

    /// The numbers of `allowed_syscalls` on this machine's arch.
    pub fn allowed_syscall_numbers(&self) -> Result<Vec<u32>, ConfigError> {
        check_syscalls(&self.allowed_syscalls, "allowed_syscalls", "configuration")
    }

    /// `python_deps_update_interval` as a duration; `None` when empty.
    pub fn deps_update_interval(&self) -> Result<Option<Duration>, ConfigError> {
        let text = self.python_deps_update_interval.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse_go_duration(text)
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                key: "python_deps_update_interval".into(),
                origin: "configuration".into(),
                value: format!("{text:?}"),
                reason,
            })
    }

    fn normalize(&mut self) {
        let defaults = Config::default();
        if self.python_path.as_os_str().is_empty() {
            self.python_path = defaults.python_path;
        }
        if self.nodejs_path.as_os_str().is_empty() {
            self.nodejs_path = defaults.nodejs_path;
        }
        let mut seen = std::collections::HashSet::new();
        self.allowed_syscalls
            .retain(|s| seen.insert(s.trim().to_string()));
    }

    fn validate(&self, origin: &Origins) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, reason: &str| {
            let (key, origin) = origin.describe(key);
            ConfigError::Invalid {
                key,
                origin,
                value,
                reason: reason.to_string(),
            }
        };
        if self.app.port == 0 {
            return Err(invalid(
                "app.port",
                "0".into(),
                "must be a port number from 1 to 65535",
            ));
        }
        if self.app.key.is_empty() {
            return Err(invalid("app.key", "\"\"".into(), "must not be empty"));
        }
        if self.max_workers < 1 {
            return Err(invalid(
                "max_workers",
                self.max_workers.to_string(),
                "must be at least 1",
            ));
        }
        if self.max_requests < self.max_workers {
            let reason = format!("must be at least max_workers ({})", self.max_workers);
            return Err(invalid(
                "max_requests",
                self.max_requests.to_string(),
                &reason,
            ));
        }
        if self.worker_timeout < 1 {
            let value = self.worker_timeout.to_string();
            return Err(invalid(
                "worker_timeout",
                value,
                "must be at least 1 (seconds)",
            ));
        }
        let limits = [
            ("hako.limits.memory_mb", self.hako.limits.memory_mb),
            ("hako.limits.pids", self.hako.limits.pids),
            ("hako.limits.tmp_mb", self.hako.limits.tmp_mb),
            ("hako.limits.output_bytes", self.hako.limits.output_bytes),
            ("hako.limits.nofile", self.hako.limits.nofile),
            ("hako.limits.cpu_percent", self.hako.limits.cpu_percent),
            ("hako.max_body_bytes", self.hako.max_body_bytes),
            (
                "hako.http.header_timeout_secs",
                self.hako.http.header_timeout_secs,
            ),
            (
                "hako.http.idle_timeout_secs",
                self.hako.http.idle_timeout_secs,
            ),
            ("hako.http.max_connections", self.hako.http.max_connections),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err(invalid(key, "0".into(), "must be greater than 0"));
            }
        }
        for module in &self.hako.python_preload {
            if !is_module_name(module) {
                let reason = "expected a Python module name such as json or numpy";
                return Err(invalid(
                    "hako.python_preload",
                    format!("{module:?}"),
                    reason,
                ));
            }
        }
        let interval = self.python_deps_update_interval.trim();
        if !interval.is_empty() {
            if let Err(reason) = parse_go_duration(interval) {
                return Err(invalid(
                    "python_deps_update_interval",
                    format!("{interval:?}"),
                    &reason,
                ));
            }
        }
        let (key, sys_origin) = origin.describe("allowed_syscalls");
        check_syscalls(&self.allowed_syscalls, &key, &sys_origin)?;
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.app.key == DEFAULT_API_KEY {
            out.push(format!(
                "the API key is the public default {DEFAULT_API_KEY:?}: anyone who can reach \
                 port {} can run code; set API_KEY (or app.key) to a secret",
                self.app.port
            ));
        }
        if !self.enable_network {
            out.push(
                "enable_network is false: Dify always sends enable_network: true, so every Dify \
                 Code and Template node will fail with \"network is disabled\""
                    .to_string(),
            );
        }
        if self.hako.insecure {
            out.push(
                "hako.insecure is set: code will run even if seccomp or namespaces are missing"
                    .to_string(),
            );
        }
        out
    }
}

fn read_file(path: &Path, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (config, unknown) = parse_yaml(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    for key in unknown {
        warnings.push(format!("unknown key {key} in {} ignored", path.display()));
    }
    Ok(config)
}

/// Parses a config document; returns it with the paths of the keys it ignored.
fn parse_yaml(text: &str) -> Result<(Config, Vec<String>), String> {
    if text.trim().is_empty() {
        return Ok((Config::default(), Vec::new()));
    }
    let mut unknown = Vec::new();
    let config = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
    })
    .map_err(|e| e.to_string())?;
    Ok((config, unknown))
}

/// Which config keys the environment set, and the file they otherwise come from.
struct Origins {
    file: String,
    /// Config key → environment variable.
    env: BTreeMap<&'static str, &'static str>,
}

impl Origins {
    /// The name to show for a key and where its value came from.
    fn describe(&self, key: &'static str) -> (String, String) {
        match self.env.get(key) {
            Some(var) => (var.to_string(), ENV_ORIGIN.to_string()),
            None => (key.to_string(), self.file.clone()),
        }
    }
}

/// Reads environment variables; empty values count as unset, as in Dify Sandbox.
struct EnvReader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    set: BTreeMap<&'static str, &'static str>,
}

impl EnvReader<'_> {
    fn raw(&mut self, var: &'static str, key: &'static str) -> Option<String> {
        let value = (self.get)(var)?;
        if value.trim().is_empty() {
            return None;
        }
        self.set.insert(key, var);
        Some(value)
    }

    fn string(&mut self, var: &'static str, key: &'static str, target: &mut String) {
        if let Some(v) = self.raw(var, key) {
            *target = v.trim().to_string();
        }
    }

    fn path(&mut self, var: &'static str, key: &'static str, target: &mut PathBuf) {
        if let Some(v) = self.raw(var, key) {
            *target = PathBuf::from(v.trim());
        }
    }

    fn list(&mut self, var: &'static str, key: &'static str) -> Option<Vec<String>> {
        self.raw(var, key).map(|v| split_list(&v))
    }

    fn parse<T>(
        &mut self,
        var: &'static str,
        key: &'static str,
        target: &mut T,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.raw(var, key) {
            *target = parse(v.trim()).ok_or_else(|| ConfigError::Invalid {
                key: var.to_string(),
                origin: ENV_ORIGIN.to_string(),
                value: format!("{v:?}"),
                reason: format!("expected {expected}"),
            })?;
        }
        Ok(())
    }
}

const POSITIVE: &str = "a positive integer";
const BOOL: &str = "a boolean (true/false, 1/0, yes/no)";

fn positive<T: std::str::FromStr + Default + PartialEq>(s: &str) -> Option<T> {
    s.parse::<T>().ok().filter(|v| *v != T::default())
}

/// Go's `strconv.ParseBool` set plus yes/no, case-insensitively.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "y" | "on" => Some(true),
        "0" | "f" | "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Applies Dify's and hako's environment variables; returns which keys they set.
fn apply_env(
    c: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<&'static str, &'static str>, ConfigError> {
    let mut e = EnvReader {
        get,
        set: BTreeMap::new(),
    };
    e.string("API_KEY", "app.key", &mut c.app.key);
    e.parse(
        "SANDBOX_PORT",
        "app.port",
        &mut c.app.port,
        positive,
        "a port number (1-65535)",
    )?;
    e.parse(
        "MAX_WORKERS",
        "max_workers",
        &mut c.max_workers,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "MAX_REQUESTS",
        "max_requests",
        &mut c.max_requests,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "WORKER_TIMEOUT",
        "worker_timeout",
        &mut c.worker_timeout,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "ENABLE_NETWORK",
        "enable_network",
        &mut c.enable_network,
        parse_bool,
        BOOL,
    )?;
    e.parse(
        "ENABLE_PRELOAD",
        "enable_preload",
        &mut c.enable_preload,
        parse_bool,
        BOOL,
    )?;
    e.path("PYTHON_PATH", "python_path", &mut c.python_path);
    e.path("NODEJS_PATH", "nodejs_path", &mut c.nodejs_path);
    e.string(
        "PIP_MIRROR_URL",
        "python_pip_mirror_url",
        &mut c.python_pip_mirror_url,
    );
    let interval = &mut c.python_deps_update_interval;
    e.string(
        "PYTHON_DEPS_UPDATE_INTERVAL",
        "python_deps_update_interval",
        interval,
    );
    if let Some(list) = e.list("PYTHON_LIB_PATH", "python_lib_path") {
        c.python_lib_path = list;
    }
    if let Some(extra) = e.list("ALLOWED_SYSCALLS", "allowed_syscalls") {
        check_syscalls(&extra, "ALLOWED_SYSCALLS", ENV_ORIGIN)?;
        c.allowed_syscalls.extend(extra);
    }
    e.string("HTTP_PROXY", "proxy.http", &mut c.proxy.http);
    e.string("HTTPS_PROXY", "proxy.https", &mut c.proxy.https);
    e.string("SOCKS5_PROXY", "proxy.socks5", &mut c.proxy.socks5);
    let debug_set = e.raw("DEBUG", "app.debug").is_some();
    e.parse("DEBUG", "app.debug", &mut c.app.debug, parse_bool, BOOL)?;
    if let Some(mode) = (e.get)("GIN_MODE").filter(|m| !m.trim().is_empty()) {
        match mode.trim() {
            "release" if !debug_set => c.app.debug = false,
            "debug" if !debug_set => c.app.debug = true,
            "release" | "debug" | "test" => {}
            _ => {
                return Err(ConfigError::Invalid {
                    key: "GIN_MODE".into(),
                    origin: ENV_ORIGIN.into(),
                    value: format!("{mode:?}"),
                    reason: "expected release, debug or test".into(),
                })
            }
        }
    }

    let h = &mut c.hako;
    e.path("HAKO_STATE_DIR", "hako.state_dir", &mut h.state_dir);
    e.path("HAKO_RUNTIME_DIR", "hako.runtime_dir", &mut h.runtime_dir);
    e.parse(
        "HAKO_MODE",
        "hako.mode",
        &mut h.mode,
        parse_mode,
        "zygote or spawn",
    )?;
    if let Some(list) = e.list("HAKO_PYTHON_PRELOAD", "hako.python_preload") {
        h.python_preload = list;
    }
    if let Some(code) = e.raw("HAKO_PYTHON_WARMUP", "hako.python_warmup") {
        h.python_warmup = code;
    }
    let pool = &mut h.nodejs_pool;
    e.parse(
        "HAKO_NODEJS_POOL",
        "hako.nodejs_pool",
        pool,
        |s| s.parse().ok(),
        "an integer",
    )?;
    let l = &mut h.limits;
    e.parse(
        "HAKO_LIMITS_MEMORY_MB",
        "hako.limits.memory_mb",
        &mut l.memory_mb,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "HAKO_LIMITS_PIDS",
        "hako.limits.pids",
        &mut l.pids,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "HAKO_LIMITS_TMP_MB",
        "hako.limits.tmp_mb",
        &mut l.tmp_mb,
        positive,
        POSITIVE,
    )?;
    let out = &mut l.output_bytes;
    e.parse(
        "HAKO_LIMITS_OUTPUT_BYTES",
        "hako.limits.output_bytes",
        out,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "HAKO_LIMITS_NOFILE",
        "hako.limits.nofile",
        &mut l.nofile,
        positive,
        POSITIVE,
    )?;
    e.parse(
        "HAKO_LIMITS_CPU_PERCENT",
        "hako.limits.cpu_percent",
        &mut l.cpu_percent,
        positive,
        POSITIVE,
    )?;
    let net = &mut h.network;
    e.parse(
        "HAKO_NETWORK_MODE",
        "hako.network.mode",
        &mut net.mode,
        parse_net,
        "proxy or host",
    )?;
    if let Some(list) = e.list("HAKO_NETWORK_ALLOW", "hako.network.allow") {
        net.allow = list;
    }
    if let Some(list) = e.list("HAKO_NETWORK_DENY", "hako.network.deny") {
        net.deny = list;
    }
    e.path(
        "HAKO_NETWORK_CA_FILE",
        "hako.network.ca_file",
        &mut net.ca_file,
    );
    for (var, key, target) in [
        (
            "HAKO_NETWORK_MAX_CONNECTIONS",
            "hako.network.max_connections",
            &mut net.max_connections,
        ),
        (
            "HAKO_NETWORK_MAX_CONCURRENT",
            "hako.network.max_concurrent",
            &mut net.max_concurrent,
        ),
        (
            "HAKO_NETWORK_MAX_BYTES",
            "hako.network.max_bytes",
            &mut net.max_bytes,
        ),
    ] {
        e.parse(var, key, target, positive, POSITIVE)?;
    }
    let http = &mut h.http;
    for (var, key, target) in [
        (
            "HAKO_HTTP_HEADER_TIMEOUT_SECS",
            "hako.http.header_timeout_secs",
            &mut http.header_timeout_secs,
        ),
        (
            "HAKO_HTTP_IDLE_TIMEOUT_SECS",
            "hako.http.idle_timeout_secs",
            &mut http.idle_timeout_secs,
        ),
        (
            "HAKO_HTTP_MAX_CONNECTIONS",
            "hako.http.max_connections",
            &mut http.max_connections,
        ),
    ] {
        e.parse(var, key, target, positive, POSITIVE)?;
    }
    let public = &mut http.metrics_public;
    e.parse(
        "HAKO_HTTP_METRICS_PUBLIC",
        "hako.http.metrics_public",
        public,
        parse_bool,
        BOOL,
    )?;
    let nreq = &mut h.nodejs_requirements;
    e.path("HAKO_NODEJS_REQUIREMENTS", "hako.nodejs_requirements", nreq);
    let preq = &mut h.python_requirements;
    e.path("HAKO_PYTHON_REQUIREMENTS", "hako.python_requirements", preq);
    e.parse(
        "HAKO_INSECURE",
        "hako.insecure",
        &mut h.insecure,
        parse_bool,
        BOOL,
    )?;
    e.parse(
        "HAKO_LOG_FORMAT",
        "hako.log_format",
        &mut h.log_format,
        parse_log,
        "human or json",
    )?;
    let body = &mut h.max_body_bytes;
    e.parse(
        "HAKO_MAX_BODY_BYTES",
        "hako.max_body_bytes",
        body,
        positive,
        POSITIVE,
    )?;
    let uid = &mut h.uid_base;
    e.parse(
        "HAKO_UID_BASE",
        "hako.uid_base",
        uid,
        |s| s.parse().ok(),
        "an integer",
    )?;
    e.path("HAKO_CGROUP_ROOT", "hako.cgroup_root", &mut h.cgroup_root);
    let wait = &mut h.packages_wait_seconds;
    e.parse(
        "HAKO_PACKAGES_WAIT_SECONDS",
        "hako.packages_wait_seconds",
        wait,
        |s| s.parse().ok(),
        "an integer (seconds)",
    )?;
    Ok(e.set)
}

fn parse_mode(s: &str) -> Option<ExecMode> {
    match s.to_ascii_lowercase().as_str() {
        "zygote" => Some(ExecMode::Zygote),
        "spawn" => Some(ExecMode::Spawn),
        _ => None,
    }
}

fn parse_net(s: &str) -> Option<NetworkPolicy> {
    match s.to_ascii_lowercase().as_str() {
        "proxy" => Some(NetworkPolicy::Proxy),
        "host" => Some(NetworkPolicy::Host),
        _ => None,
    }
}

fn parse_log(s: &str) -> Option<LogFormat> {
    match s.to_ascii_lowercase().as_str() {
        "human" => Some(LogFormat::Human),
        "json" => Some(LogFormat::Json),
        _ => None,
    }
}

fn check_syscalls(list: &[String], key: &str, origin: &str) -> Result<Vec<u32>, ConfigError> {
    list.iter()
        .map(|name| {
            resolve_syscall(name).map_err(|reason| ConfigError::Syscall {
                key: key.to_string(),
                origin: origin.to_string(),
                value: name.clone(),
                reason: Box::new(reason),
            })
        })
        .collect()
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// Parses a Go `time.ParseDuration` string such as `30m`, `1h30m`, `1.5s` or `0`.
/// Negative durations are rejected.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as 30m, 1h30m or 90s";
    let s = text.trim().strip_prefix('+').unwrap_or(text.trim());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(EXPECTED.to_string());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| EXPECTED.to_string())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{EXPECTED} (units: ns, us, ms, s, m, h)")),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| EXPECTED.to_string())
}

/// `null` (an empty YAML value) becomes the type's empty value, as in Go.
fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(de).map(Option::unwrap_or_default)
}

/// `allowed_syscalls`: null, a list of names and/or numbers, or one comma-separated string.
fn syscall_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    use serde::de::{Error, SeqAccess, Visitor};
    use std::fmt;

    struct Item(String);
    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Item;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a syscall name or number")
                }
                fn visit_str<E: Error>(self, v: &str) -> Result<Item, E> {
                    Ok(Item(v.trim().to_string()))
                }
                fn visit_u64<E: Error>(self, v: u64) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
                fn visit_i64<E: Error>(self, v: i64) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
            }
            de.deserialize_any(V)
        }
    }

    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of syscall names or numbers")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(split_list(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Item(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    de.deserialize_any(List)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DIFY_SAMPLE: &str = "\
app:
  port: 8194
  debug: True
  key: dify-sandbox
max_workers: 4
max_requests: 50
worker_timeout: 5
python_path: /usr/local/bin/python3
enable_network: True # please make sure there is no network risk in your environment
allowed_syscalls: # please leave it empty if you have no idea how seccomp works
proxy:
  socks5: ''
  http: ''
  https: ''
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let (_dir, path) = write(text);
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(Some(&path), &|k| map.get(k).cloned())
    }

    fn err_text(text: &str, env: &[(&str, &str)]) -> String {
        match load_text(text, env) {
            Ok(_) => panic!("expected an error for {text:?} with {env:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_difys_sample_file() {
        let loaded = load_text(DIFY_SAMPLE, &[]).unwrap();
        let c = &loaded.config;
        assert_eq!(c.app.port, 8194);
        assert!(c.app.debug);
        assert_eq!(c.app.key, "dify-sandbox");
        assert_eq!(
            (c.max_workers, c.max_requests, c.worker_timeout),
            (4, 50, 5)
        );
        assert_eq!(c.python_path, PathBuf::from("/usr/local/bin/python3"));
        assert!(c.enable_network);
        assert!(c.allowed_syscalls.is_empty());
        assert_eq!(c.proxy, ProxyConfig::default());
        assert!(loaded.source.is_some());
        assert!(
            !loaded.warnings.iter().any(|w| w.contains("unknown key")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn warns_about_the_default_key_and_disabled_network() {
        let loaded = load_text(DIFY_SAMPLE, &[("ENABLE_NETWORK", "false")]).unwrap();
        assert!(!loaded.config.enable_network);
        let all = loaded.warnings.join("\n");
        assert!(all.contains("\"dify-sandbox\""), "{all}");
        assert!(
            all.contains("Dify always sends enable_network: true"),
            "{all}"
        );

        let loaded = load_text(DIFY_SAMPLE, &[("API_KEY", "s3cret")]).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn dify_extra_keys_and_empty_values_are_accepted() {
        let text = "\
python_lib_path:
  - /usr/local/lib/python3.10
  - /etc/ssl/certs/ca-certificates.crt
python_pip_mirror_url:
python_deps_update_interval: 30m
nodejs_path:
enable_preload: false
";
        let c = load_text(text, &[]).unwrap().config;
        assert_eq!(c.python_lib_path.len(), 2);
        assert_eq!(c.python_pip_mirror_url, "");
        assert_eq!(c.nodejs_path, Config::default().nodejs_path);
        assert_eq!(
            c.deps_update_interval().unwrap(),
            Some(Duration::from_secs(1800))
        );
        // YAML 1.1 booleans, as Go's yaml reads them into a bool.
        assert!(
            load_text("enable_preload: yes", &[])
                .unwrap()
                .config
                .enable_preload
        );
        assert!(load_text("", &[]).unwrap().config == Config::default());
    }

    #[test]
    fn allowed_syscalls_take_names_and_numbers() {
        let loaded = load_text("allowed_syscalls: [0, mbind, \"1\"]", &[]).unwrap();
        assert_eq!(loaded.config.allowed_syscalls, ["0", "mbind", "1"]);
        let numbers = loaded.config.allowed_syscall_numbers().unwrap();
        assert_eq!(numbers[1], resolve_syscall("mbind").unwrap());
        assert_eq!(numbers[0], 0);
        let c = load_text("allowed_syscalls:\n  - 2\n  - 3\n", &[])
            .unwrap()
            .config;
        assert_eq!(c.allowed_syscalls, ["2", "3"]);
    }

    #[test]
    fn allowed_syscalls_from_env_are_merged_with_the_file() {
        let text = "allowed_syscalls: [mbind]";
        let c = load_text(text, &[("ALLOWED_SYSCALLS", "syslog, 0,mbind")])
            .unwrap()
            .config;
        assert_eq!(c.allowed_syscalls, ["mbind", "syslog", "0"]);
    }

    #[test]
    fn unknown_syscalls_name_the_key_and_the_value() {
        let e = err_text("allowed_syscalls: [no_such_call]", &[]);
        assert!(
            e.contains("\"no_such_call\"") && e.contains("allowed_syscalls"),
            "{e}"
        );
        let e = err_text("", &[("ALLOWED_SYSCALLS", "mbind,999999")]);
        assert!(
            e.contains("\"999999\" in ALLOWED_SYSCALLS (environment)"),
            "{e}"
        );
        let c = Config {
            allowed_syscalls: vec!["bogus".into()],
            ..Config::default()
        };
        assert!(c.allowed_syscall_numbers().is_err());
    }

    #[test]
    fn unknown_keys_warn_and_do_not_fail() {
        let text =
            "future_key: 1\napp:\n  port: 9000\n  colour: blue\nhako:\n  limits:\n    gpus: 2\n";
        let loaded = load_text(text, &[]).unwrap();
        assert_eq!(loaded.config.app.port, 9000);
        let all = loaded.warnings.join("\n");
        for key in ["future_key", "app.colour", "hako.limits.gpus"] {
            assert!(all.contains(&format!("unknown key {key} ")), "{key}: {all}");
        }
    }

    #[test]
    fn dify_env_vars_override_the_file() {
        let env = [
            ("API_KEY", "k"),
            ("SANDBOX_PORT", "9001"),
            ("MAX_WORKERS", "8"),
            ("MAX_REQUESTS", "80"),
            ("WORKER_TIMEOUT", "15"),
            ("ENABLE_NETWORK", "FALSE"),
            ("ENABLE_PRELOAD", "1"),
            ("PYTHON_PATH", "/opt/py/bin/python3"),
            ("NODEJS_PATH", "/opt/node/bin/node"),
            ("PIP_MIRROR_URL", "https://mirror.example/simple"),
            ("PYTHON_DEPS_UPDATE_INTERVAL", "1h30m"),
            ("PYTHON_LIB_PATH", "/a, /b"),
            ("HTTP_PROXY", "http://ssrf_proxy:3128"),
            ("HTTPS_PROXY", "http://ssrf_proxy:3129"),
            ("SOCKS5_PROXY", "socks5://p:1080"),
            ("DEBUG", "false"),
            ("GIN_MODE", "release"),
        ];
        let c = load_text(DIFY_SAMPLE, &env).unwrap().config;
        assert_eq!((c.app.key.as_str(), c.app.port), ("k", 9001));
        assert_eq!(
            (c.max_workers, c.max_requests, c.worker_timeout),
            (8, 80, 15)
        );
        assert!(!c.enable_network && c.enable_preload && !c.app.debug);
        assert_eq!(c.python_path, PathBuf::from("/opt/py/bin/python3"));
        assert_eq!(c.nodejs_path, PathBuf::from("/opt/node/bin/node"));
        assert_eq!(c.python_pip_mirror_url, "https://mirror.example/simple");
        assert_eq!(
            c.deps_update_interval().unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(c.python_lib_path, ["/a", "/b"]);
        assert_eq!(c.proxy.http, "http://ssrf_proxy:3128");
        assert_eq!(c.proxy.https, "http://ssrf_proxy:3129");
        assert_eq!(c.proxy.socks5, "socks5://p:1080");
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let c = load_text(DIFY_SAMPLE, &[("MAX_WORKERS", ""), ("API_KEY", " ")])
            .unwrap()
            .config;
        assert_eq!(c.max_workers, 4);
        assert_eq!(c.app.key, "dify-sandbox");
    }

    #[test]
    fn gin_mode_sets_debug_unless_debug_is_given() {
        assert!(
            !load_text(DIFY_SAMPLE, &[("GIN_MODE", "release")])
                .unwrap()
                .config
                .app
                .debug
        );
        let env = [("GIN_MODE", "release"), ("DEBUG", "true")];
        assert!(load_text(DIFY_SAMPLE, &env).unwrap().config.app.debug);
        let e = err_text("", &[("GIN_MODE", "fast")]);
        assert!(e.contains("GIN_MODE"), "{e}");
    }

    #[test]
    fn hako_env_vars_override_the_hako_section() {
        let text = "hako:\n  mode: zygote\n  limits:\n    memory_mb: 256\n";
        let env = [
            ("HAKO_MODE", "spawn"),
            ("HAKO_STATE_DIR", "/srv/state"),
            ("HAKO_RUNTIME_DIR", "/srv/run"),
            ("HAKO_NODEJS_POOL", "0"),
            ("HAKO_INSECURE", "yes"),
            ("HAKO_LOG_FORMAT", "json"),
            ("HAKO_MAX_BODY_BYTES", "1024"),
            ("HAKO_LIMITS_PIDS", "64"),
            ("HAKO_LIMITS_TMP_MB", "32"),
            ("HAKO_LIMITS_OUTPUT_BYTES", "1000"),
            ("HAKO_NETWORK_MODE", "host"),
            ("HAKO_PYTHON_PRELOAD", "json, numpy,os.path"),
            ("HAKO_PYTHON_WARMUP", "import json\njson.dumps([1])\n"),
        ];
        let loaded = load_text(text, &env).unwrap();
        let h = &loaded.config.hako;
        assert_eq!(h.mode, ExecMode::Spawn);
        assert_eq!(h.state_dir, PathBuf::from("/srv/state"));
        assert_eq!(h.runtime_dir, PathBuf::from("/srv/run"));
        assert_eq!(h.nodejs_pool, 0);
        assert!(h.insecure);
        assert_eq!(h.log_format, LogFormat::Json);
        assert_eq!(h.max_body_bytes, 1024);
        assert_eq!(
            h.limits.memory_mb, 256,
            "the file's value stays when no env var is set"
        );
        assert_eq!(
            (h.limits.pids, h.limits.tmp_mb, h.limits.output_bytes),
            (64, 32, 1000)
        );
        assert_eq!(h.network.mode, NetworkPolicy::Host);
        assert_eq!(h.python_preload, ["json", "numpy", "os.path"]);
        assert_eq!(h.python_warmup, "import json\njson.dumps([1])\n");
        assert!(loaded.warnings.iter().any(|w| w.contains("hako.insecure")));
        let c = load_text("", &[("HAKO_LIMITS_MEMORY_MB", "128")])
            .unwrap()
            .config;
        assert_eq!(c.hako.limits.memory_mb, 128);
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let e = err_text("", &[("MAX_WORKERS", "abc")]);
        assert_eq!(
            e,
            "invalid value \"abc\" for MAX_WORKERS (environment): expected a positive integer"
        );
        for (var, value) in [
            ("MAX_WORKERS", "0"),
            ("MAX_REQUESTS", "-1"),
            ("WORKER_TIMEOUT", "5s"),
            ("SANDBOX_PORT", "70000"),
            ("SANDBOX_PORT", "0"),
            ("ENABLE_NETWORK", "maybe"),
            ("DEBUG", "2"),
            ("HAKO_MODE", "fork"),
            ("HAKO_NETWORK_MODE", "none"),
            ("HAKO_LOG_FORMAT", "xml"),
            ("HAKO_LIMITS_MEMORY_MB", "0"),
            ("HAKO_MAX_BODY_BYTES", "lots"),
            ("HAKO_INSECURE", "sure"),
        ] {
            let e = err_text("", &[(var, value)]);
            assert!(
                e.contains(&format!("{value:?} for {var} (environment)")),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_file_values_name_the_key_and_file() {
        let (_dir, path) = write("max_workers: 0\n");
        let e = Config::load_with_env(Some(&path), &no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "invalid value 0 for max_workers ({}): must be at least 1",
                path.display()
            )
        );
        for (text, needle) in [
            (
                "max_workers: 8\nmax_requests: 4",
                "invalid value 4 for max_requests",
            ),
            ("worker_timeout: 0", "invalid value 0 for worker_timeout"),
            ("app:\n  port: 0", "invalid value 0 for app.port"),
            ("app:\n  key: ''", "for app.key"),
            (
                "hako:\n  limits:\n    pids: 0",
                "invalid value 0 for hako.limits.pids",
            ),
            ("hako:\n  limits:\n    tmp_mb: 0", "hako.limits.tmp_mb"),
            (
                "hako:\n  limits:\n    output_bytes: 0",
                "hako.limits.output_bytes",
            ),
            (
                "hako:\n  limits:\n    memory_mb: 0",
                "hako.limits.memory_mb",
            ),
            ("hako:\n  max_body_bytes: 0", "hako.max_body_bytes"),
            (
                "hako:\n  python_preload: ['a b']",
                "\"a b\" for hako.python_preload",
            ),
            (
                "python_deps_update_interval: soon",
                "\"soon\" for python_deps_update_interval",
            ),
        ] {
            let e = err_text(text, &[]);
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        // The environment is named when it set the bad value.
        let e = err_text("max_workers: 2", &[("MAX_REQUESTS", "1")]);
        assert!(
            e.starts_with("invalid value 1 for MAX_REQUESTS (environment)"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_and_broken_yaml_name_the_file() {
        for text in [
            "max_workers: many",
            "app: [1, 2]",
            "app:\n  port: 8194\n bad indent: [",
        ] {
            let (_dir, path) = write(text);
            match Config::load_with_env(Some(&path), &no_env) {
                Err(ConfigError::Parse { path: p, message }) => {
                    assert_eq!(p, path);
                    assert!(!message.is_empty());
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("conf/config.yaml");
        let loaded = Config::load_from(None, &absent, &no_env).unwrap();
        assert!(loaded.source.is_none());
        assert_eq!(loaded.config, Config::default());
        assert!(
            loaded.warnings[0].contains("built-in defaults"),
            "{:?}",
            loaded.warnings
        );

        let e = Config::load_with_env(Some(&absent), &no_env).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");

        std::fs::create_dir_all(absent.parent().unwrap()).unwrap();
        std::fs::write(&absent, "max_workers: 3\n").unwrap();
        let loaded = Config::load_from(None, &absent, &no_env).unwrap();
        assert_eq!(loaded.source.as_deref(), Some(absent.as_path()));
        assert_eq!(loaded.config.max_workers, 3);
    }

    #[test]
    fn go_durations() {
        for (text, secs) in [
            ("0", 0.0),
            ("90s", 90.0),
            ("30m", 1800.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("+2m3s", 123.0),
            ("10us", 0.00001),
        ] {
            assert_eq!(
                parse_go_duration(text).unwrap().as_secs_f64(),
                secs,
                "{text}"
            );
        }
        for text in ["", "30", "m", "1x", "-5m", "1h 30m", "1..5s"] {
            assert!(parse_go_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bool_spellings() {
        for t in ["1", "t", "TRUE", "True", "yes", "Y", "on"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "false", "FALSE", "No", "off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("2"), None);
    }

    #[test]
    fn http_keys_come_from_the_file_and_the_environment() {
        let text = "hako:\n  http:\n    header_timeout_secs: 3\n    metrics_public: false\n";
        let env = [
            ("HAKO_HTTP_MAX_CONNECTIONS", "7"),
            ("HAKO_HTTP_METRICS_PUBLIC", "yes"),
        ];
        let c = load_text(text, &env).unwrap().config;
        let want = HttpConfig {
            header_timeout_secs: 3,
            idle_timeout_secs: 60,
            max_connections: 7,
            metrics_public: true,
        };
        assert_eq!(c.hako.http, want);
        let env = [("HAKO_HTTP_IDLE_TIMEOUT_SECS", "0")];
        assert!(err_text("", &env).contains("HAKO_HTTP_IDLE_TIMEOUT_SECS"));
        let text = "hako:\n  http:\n    max_connections: 0\n";
        assert!(err_text(text, &[]).contains("hako.http.max_connections"));
    }
}
