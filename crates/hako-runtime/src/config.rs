//! Configuration: Dify Sandbox's `conf/config.yaml` keys and environment variables, plus
//! hako's own `hako:` section (env `HAKO_<KEY>`).
//!
//! The struct below is the contract; loading, environment overrides and validation live in
//! [`Config::load`].

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The Dify Sandbox default API key; serving with it logs a loud warning.
pub const DEFAULT_API_KEY: &str = "dify-sandbox";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub port: u16,
    pub key: String,
    pub debug: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig { port: 8194, key: DEFAULT_API_KEY.to_string(), debug: false }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub socks5: String,
    pub http: String,
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
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory_mb: u64,
    pub pids: u64,
    pub tmp_mb: u64,
    pub output_bytes: u64,
    pub nofile: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { memory_mb: 512, pids: 128, tmp_mb: 64, output_bytes: 4 << 20, nofile: 256 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub mode: NetworkPolicy,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig { mode: NetworkPolicy::Proxy, allow: Vec::new(), deny: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HakoConfig {
    /// Package environments and caches.
    pub state_dir: PathBuf,
    /// Empty directories used as mount points of run roots, and other runtime files.
    pub runtime_dir: PathBuf,
    pub mode: ExecMode,
    pub python_preload: Vec<String>,
    pub nodejs_pool: usize,
    pub limits: LimitsConfig,
    pub network: NetworkConfig,
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
            nodejs_pool: 2,
            limits: LimitsConfig::default(),
            network: NetworkConfig::default(),
            nodejs_requirements: PathBuf::from("dependencies/nodejs-requirements.txt"),
            python_requirements: PathBuf::from("dependencies/python-requirements.txt"),
            insecure: false,
            log_format: LogFormat::Human,
            max_body_bytes: 16 << 20,
            uid_base: 1_100_000,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The whole configuration. Field names are Dify Sandbox's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub app: AppConfig,
    pub max_workers: usize,
    pub max_requests: usize,
    /// Seconds.
    pub worker_timeout: u64,
    pub python_path: PathBuf,
    /// Accepted for compatibility; hako computes the library closure itself.
    pub python_lib_path: Vec<String>,
    pub python_pip_mirror_url: String,
    /// Go-style duration (`30m`, `1h`); empty disables periodic re-checks.
    pub python_deps_update_interval: String,
    pub nodejs_path: PathBuf,
    pub enable_network: bool,
    pub enable_preload: bool,
    /// Names or numbers; resolved by the runtime and *added* to the default policy.
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
