//! The configuration's types and built-in defaults: the keys of `conf/config.yaml`, Dify
//! Sandbox's and hako's `hako:` section. Field names are the file's keys.
//!
//! To add a key: a field (and its default) here, a row in `env.rs` (`VARIABLES`) when it
//! has an environment variable, a rule in `validate.rs` when not every value is valid,
//! and a line in docs/configuration.md.

use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The Dify Sandbox default API key; serving with it logs a loud warning.
pub const DEFAULT_API_KEY: &str = "dify-sandbox";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AppConfig {
    pub port: u16,
    #[serde(deserialize_with = "nullable")]
    pub key: String,
    /// Verbose logs: hako's own crates log at `debug` unless `HAKO_LOG` says otherwise.
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
    /// First host uid/gid of the per-run identities.
    pub uid_base: u32,
    /// How many host ids from `uid_base` runs use (see [`Config::id_ranges`]).
    pub uid_count: u32,
    /// Root of the cgroup hierarchy (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// How long a run waits for its language's first package environment (fresh start).
    pub packages_wait_seconds: u64,
    /// Files and directories copied into Python environments at install time.
    #[serde(deserialize_with = "nullable")]
    pub python_data: Vec<crate::provision::DataItem>,
    /// The agent API: files, sessions, replicas.
    pub agent: AgentConfig,
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
            uid_count: DEFAULT_UID_COUNT,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            packages_wait_seconds: 60,
            python_data: Vec::new(),
            agent: AgentConfig::default(),
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
    /// What the text values above stand for, worked out once by the loader.
    #[serde(skip)]
    pub(super) resolved: Resolved,
}

/// Values the configuration's text stands for, checked and converted once at load time.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Resolved {
    /// `allowed_syscalls` as numbers on this machine's arch.
    pub syscalls: Vec<u32>,
    /// `python_deps_update_interval`; `None` when empty.
    pub deps_update_interval: Option<Duration>,
}

/// `hako.uid_count`'s default: 5 × 65536 ids (spawn 65536, zygotes 196608, Node pool 65536).
pub const DEFAULT_UID_COUNT: u32 = 5 * 65536;
/// The fewest ids `hako.uid_count` may give: 1024 for spawned runs, 3072 for the zygotes
/// (each preloaded parent leases 257, and a new package set starts new parents while the old
/// ones finish), 1024 for the Node pool.
pub const MIN_UID_COUNT: u32 = 5 * 1024;

/// Where each kind of run takes its host ids: offsets from `hako.uid_base` and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRanges {
    /// Spawned runs (one id each).
    pub spawn: (u32, u32),
    /// Zygotes: each preloaded parent takes one id for itself and 256 for its workers' runs.
    pub zygote: (u32, u32),
    /// Node pool workers (one id each).
    pub node: (u32, u32),
}

impl Config {
    /// `hako.uid_base .. + hako.uid_count` split into fifths: one for spawned runs, three
    /// for the zygotes, one for the Node pool (the default count gives 65536 per fifth).
    pub fn id_ranges(&self) -> IdRanges {
        let fifth = self.hako.uid_count / 5;
        IdRanges {
            spawn: (0, fifth),
            zygote: (fifth, 3 * fifth),
            node: (4 * fifth, fifth),
        }
    }

    /// The numbers of `allowed_syscalls` on this machine's arch.
    pub(crate) fn allowed_syscall_numbers(&self) -> &[u32] {
        &self.resolved.syscalls
    }

    /// `python_deps_update_interval` as a duration; `None` when empty.
    pub(crate) fn deps_update_interval(&self) -> Option<Duration> {
        self.resolved.deps_update_interval
    }
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
            resolved: Resolved::default(),
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

/// The agent API (`hako.agent`): files, sessions, replicas.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgentConfig {
    /// Largest total of a run's input files, and of the files it returns (also the largest
    /// session file moved in or out). Input files also count against `hako.limits.tmp_mb`.
    pub files_max_bytes: u64,
    /// Sessions alive at once on this replica.
    pub max_sessions: usize,
    /// Total memory limit of all sessions of this replica, in MiB.
    pub sessions_memory_mb: u64,
    /// A session unused this long (seconds) is closed; a request may ask for less.
    pub session_idle_s: u64,
    /// A session is closed this long (seconds) after it started, used or not.
    pub session_lifetime_s: u64,
    /// This replica's name in session ids (default: the host name, e.g. the pod name).
    pub replica: String,
    /// How to reach another replica: a URL with `{replica}` in it, e.g.
    /// `http://{replica}.hako-headless:8194`. Empty: sessions of other replicas are 404.
    pub peer_url: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            files_max_bytes: 16 << 20,
            max_sessions: 16,
            sessions_memory_mb: 4096,
            session_idle_s: 600,
            session_lifetime_s: 3600,
            replica: String::new(),
            peer_url: String::new(),
        }
    }
}

impl AgentConfig {
    /// This replica's name: the configured one, else the host name, made safe for an id.
    pub(crate) fn replica_name(&self) -> String {
        let name = if self.replica.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            self.replica.clone()
        };
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .take(63)
            .collect();
        if safe.is_empty() {
            "hako".into()
        } else {
            safe
        }
    }
}

// Dify's files are written for Go's YAML: an empty value is the type's empty value, and
// `allowed_syscalls` may be a list of names and numbers or one comma-separated string.

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

/// A comma-separated list; spaces around items and empty items are dropped.
pub(super) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
