//! What the caller asks the jail helper to do, and what the helper reports back.
//!
//! The caller (CLI or server) and the helper (`hako __jail`) are separate processes; these
//! types cross the pipe between them (see [`crate::frame`]).

use crate::Language;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One run, fully described. Nothing in here comes from a request without validation by the
/// runtime: limits are already clamped to the operator's maximums.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JailSpec {
    /// Used in messages and to pick the seccomp table.
    pub language: Language,
    /// The interpreter binary on the host (also its path inside the jail).
    pub interpreter: PathBuf,
    /// Arguments after argv[0]. The code file path goes here.
    pub args: Vec<String>,
    /// The whole environment of the interpreter (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Where the program text is written inside the jail (on the read-only root).
    pub code_path: PathBuf,
    /// Host paths bind-mounted read-only at the same path inside the jail.
    pub ro_binds: Vec<PathBuf>,
    /// `(host source, jail target)`: read-only at another path inside the jail, without the
    /// host path in the run's mount table (package environments as overlays, hako's own
    /// files as copies in the root).
    #[serde(default)]
    pub mapped_binds: Vec<(PathBuf, PathBuf)>,
    /// Per-run limits.
    pub limits: Limits,
    /// Network access of the run.
    pub network: NetworkMode,
    /// Where a [`NetworkMode::Proxy`] run's listener is handed over (see hako-jail's `netns`).
    #[serde(default)]
    pub egress: Option<EgressSpec>,
    /// Syscall policy.
    pub seccomp: SeccompSpec,
    /// Identity of the run on the host: with `id_pool`, only the first id tried.
    pub ids: RunIds,
    /// Where the helper leases the run's host ids for the run's lifetime, so no two live
    /// runs (of any hako process on the host) share one.
    #[serde(default)]
    pub id_pool: Option<IdPool>,
    /// Empty directory on the host used as the mount point of the run's tmpfs root
    /// (inside the run's private mount namespace only).
    pub root_mountpoint: PathBuf,
    /// Run without the layers the host lacks (cgroups, Landlock). Seccomp and namespaces are
    /// never optional here; the caller refuses to start without them unless `insecure`.
    pub insecure: bool,
    /// Start a warm zygote (keeps namespace capabilities, gets a control socket as fd 3 and
    /// two in-jail ids: [`JAIL_UID`] for itself and [`RUN_UID`] for its run children).
    #[serde(default)]
    pub zygote: bool,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`, or a delegated subtree).
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    /// Start now, receive the program later (pre-started pool workers): the code sent with
    /// the spec is a bootstrap that reads the program from [`CODE_FD`].
    #[serde(default)]
    pub deferred: bool,
    /// The host id that owns provisioned data (`<env>/data`): mapped to uid and gid 0 inside
    /// the jail, so that the data appears owned by root there (libraries such as nltk read
    /// only files owned by root or by the reader). It owns nothing else, and no process of
    /// a run can take it (runs hold no capabilities).
    #[serde(default)]
    pub data_owner: Option<u32>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    pub tmp_bytes: u64,
    pub output_bytes: u64,
    pub timeout_ms: u64,
    pub nofile: u64,
    /// CPU time per wall time in percent of one CPU (cgroup CPU quota); 0: no limit.
    #[serde(default)]
    pub cpu_percent: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace with only loopback.
    None,
    /// The host's network namespace (Dify Sandbox's behaviour).
    Host,
    /// Own network namespace with only loopback, where a listener of the egress guard
    /// waits on 127.0.0.1:3128 (hako-jail's `netns::EGRESS_PORT`).
    Proxy,
}

/// The egress guard a proxy-mode run registers with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressSpec {
    /// Unix socket of the guard (in the caller's runtime directory).
    pub socket: PathBuf,
    /// Names the run in the guard's log.
    pub run_id: String,
}

/// What the egress guard saw of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkReport {
    /// Connections the run opened to the guard.
    pub connections: u64,
    /// Bytes relayed from the run to destinations, and back.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `host:port` of every destination the guard connected to, in first-use order.
    pub destinations: Vec<String>,
    /// `host:port` of every destination the guard refused, in first-refusal order.
    pub refused: Vec<String>,
    /// Set when a per-run limit cut the run off: `connections` or `bytes`.
    pub limit: Option<String>,
    /// `host:port: why` of every destination the guard could not resolve or reach.
    #[serde(default)]
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Calls outside the policy fail with EPERM (ENOSYS for some) and are recorded.
    Enforce,
    /// Calls outside the policy are allowed and recorded (`hako profile`).
    Learn,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeccompSpec {
    pub mode: SeccompMode,
    /// Syscall numbers (for the machine's arch) added to the language's default table.
    pub extra_allowed: Vec<u32>,
}

/// Host ids the run's in-jail user maps to. Distinct per concurrent run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunIds {
    pub host_uid: u32,
    pub host_gid: u32,
}

/// The in-jail uid/gid of the program (`sandbox` in the synthetic /etc/passwd).
pub const JAIL_UID: u32 = 1000;
pub const JAIL_GID: u32 = 1000;
/// The in-jail uid/gid of a zygote's run children (distinct from the zygote's own).
/// Each child of one zygote takes its own id from `RUN_UID .. RUN_UID + ZYGOTE_RUN_IDS`
/// (a live child and the prepared next one never share one).
pub const RUN_UID: u32 = 1001;
pub const RUN_GID: u32 = 1001;
/// How many run ids a zygote's user namespace maps (shared by the worker zygotes forked
/// from one preloaded parent, [`WORKER_RUN_IDS`] each): a parent serves up to
/// `ZYGOTE_RUN_IDS / WORKER_RUN_IDS` = 64 workers, so `max_workers` up to 64 in every pool.
pub const ZYGOTE_RUN_IDS: u32 = 256;
/// Run ids of one worker zygote: a live child, the prepared next one and the last one, dying.
pub const WORKER_RUN_IDS: u32 = 4;
/// The descriptor a zygote receives its control socket on.
pub const ZYGOTE_FD: i32 = 3;
/// The descriptor a deferred run's bootstrap reads its program from.
pub const CODE_FD: i32 = 4;

/// What happened to one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JailOutcome {
    /// Exit code of the program if it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed the program, if any.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub output_limited: bool,
    pub oom_killed: bool,
    pub pids_limited: bool,
    /// Syscalls the policy denied (or, in learn mode, would have denied), with counts.
    pub blocked: Vec<BlockedSyscall>,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
    /// Set when the jail could not be built; the program never ran.
    pub setup_error: Option<String>,
    /// The program was fully confined (and so may have started): a failure after this
    /// point is never retried.
    #[serde(default)]
    pub confined: bool,
    /// The run failed after its program was handed over (it may have run, so it is never
    /// retried): its supervisor was lost, or it tampered with its supervisor channel.
    #[serde(default)]
    pub failure: Option<String>,
    /// A control message arrived that no state of the supervisor expects: the run was
    /// killed (see [`crate::control::Receiver`]).
    #[serde(default)]
    pub tampered: bool,
    /// Egress of a proxy-mode run.
    #[serde(default)]
    pub network: Option<NetworkReport>,
    #[serde(skip)]
    pub stdout: Vec<u8>,
    #[serde(skip)]
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockedSyscall {
    pub nr: u32,
    pub name: String,
    pub count: u64,
}

fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}

/// Which limits a cgroup already enforces (rlimits stand in for the others).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupCoverage {
    pub memory: bool,
    pub pids: bool,
}

/// Where runs of one kind take their host ids from (the jail helper leases from it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdPool {
    /// Directory of the lock files (shared by every hako process of the host).
    pub lock_dir: PathBuf,
    /// First host uid/gid of the pool.
    pub first: u32,
    /// Number of ids in the pool.
    pub count: u32,
}
