//! A small cgroup v1 + v2 writer for per-run memory and pids limits.
//!
//! Every function takes the cgroup root (normally `/sys/fs/cgroup`) as a parameter, and
//! every mkdir, rmdir, write and kill goes through the syscall seam ([`Kernel`]), so the
//! logic runs against a temp dir in tests. Runs live under a `hako` parent group:
//! v1 `<root>/memory/hako/<name>` and `<root>/pids/hako/<name>`, v2 `<root>/hako/<name>`.
//!
//! `v1.rs` and `v2.rs` create a run's groups, `run.rs` is what a run does with them (add a
//! process, account, retune, kill, remove), `limits.rs` turns limits into control file values.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::unistd::{access, AccessFlags};

use crate::sys::{Kernel, REAL};

mod limits;
mod run;
#[cfg(test)]
mod tests;
mod v1;
mod v2;

pub use limits::{rlimit_fallback, zygote_headroom, RlimitFallback};
pub use run::RunCgroup;

/// Parent group of all runs.
const PARENT: &str = "hako";
/// v2 leaf for processes that lived in the root group, so the root may enable controllers.
const SERVER_LEAF: &str = "hako-server";
/// Rounds of SIGKILL before giving up on a cgroup that keeps non-empty.
const KILL_ROUNDS: u32 = 100;
/// Pause between kill rounds and between rmdir retries.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long rmdir is retried on EBUSY.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The cgroup interface in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// What limits this host can enforce, for `hako doctor` and the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSupport {
    pub version: Option<CgroupVersion>,
    pub memory: bool,
    pub pids: bool,
    pub cpu: bool,
    /// One line, e.g. `v1 (memory, pids) at /sys/fs/cgroup/{memory,pids}`.
    pub detail: String,
}

/// Per-run limits. 0 means "no limit" for either field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU quota in percent of one CPU; 0 means no limit. Applied where a cpu controller
    /// exists (v1 `cpu.cfs_quota_us`, v2 `cpu.max`).
    pub cpu_percent: u64,
}

impl CgroupLimits {
    /// The cgroup part of a run's limits.
    pub fn of(limits: &hako_wire::spec::Limits) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: limits.memory_bytes,
            pids: limits.pids,
            cpu_percent: limits.cpu_percent,
        }
    }
}

/// Best-effort accounting of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Peak memory use; None when the kernel does not report it (v2 before 5.19).
    pub peak_memory_bytes: Option<u64>,
    /// Processes killed by the OOM killer. Stays 0 where the kernel does not count them
    /// (v1 before 4.13); then see `memory_limit_hits`.
    pub oom_kills: u64,
    /// Times the memory limit was hit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub memory_limit_hits: u64,
    /// Forks refused by the pids limit.
    pub pids_limit_hits: u64,
}

impl CgroupStats {
    /// The events counted since `before` (a group that outlives its runs); the peak is this
    /// one's.
    pub fn since(&self, before: &CgroupStats) -> CgroupStats {
        CgroupStats {
            peak_memory_bytes: self.peak_memory_bytes,
            oom_kills: self.oom_kills.saturating_sub(before.oom_kills),
            memory_limit_hits: self
                .memory_limit_hits
                .saturating_sub(before.memory_limit_hits),
            pids_limit_hits: self.pids_limit_hits.saturating_sub(before.pids_limit_hits),
        }
    }
}

/// Errors of cgroup setup and teardown.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup controller (memory or pids) under {root}; limits fall back to rlimits"
    )]
    Unavailable { root: PathBuf },
    #[error("invalid run cgroup name {name:?}: use one non-empty path component")]
    InvalidName { name: String },
    #[error("cannot create the parent cgroup {path}: {source}; run as root or delegate it")]
    CreateParent { path: PathBuf, source: io::Error },
    #[error("cannot create the run cgroup {path}: {source}")]
    CreateRun { path: PathBuf, source: io::Error },
    #[error("cannot enable controllers {controllers} in {path}: {source}")]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        source: io::Error,
    },
    #[error(
        "cannot enable controllers in {path}: processes live in that group (cgroup v2 \
         \"no internal processes\" rule); move them to a leaf group and retry"
    )]
    InternalProcesses { path: PathBuf },
    #[error("cannot move pid {pid} into {path} to free the root cgroup: {source}")]
    MoveToLeaf {
        path: PathBuf,
        pid: i32,
        source: io::Error,
    },
    #[error("cannot set {path} to {value}: {source}")]
    SetLimit {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot add pid {pid} to {path}: {source}")]
    AddPid {
        path: PathBuf,
        pid: i32,
        source: io::Error,
    },
    #[error("cannot read the processes of {path}: {source}")]
    ReadProcs { path: PathBuf, source: io::Error },
    #[error("cannot SIGKILL pid {pid} of {path}: {source}")]
    Kill {
        path: PathBuf,
        pid: i32,
        source: Errno,
    },
    #[error("processes {remaining:?} of {path} survived {rounds} rounds of SIGKILL")]
    KillTimeout {
        path: PathBuf,
        remaining: Vec<i32>,
        rounds: u32,
    },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    V2 {
        /// The cgroup2 mount (the root itself or `<root>/unified`).
        mount: PathBuf,
        controllers: BTreeSet<String>,
    },
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    None,
}

/// The detected cgroup layout under one root.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    layout: Layout,
    kernel: &'static dyn Kernel,
}

impl Cgroups {
    /// Detects the layout under `root`; never fails. Prefers cgroup2 with memory and pids,
    /// then v1 `memory`/`pids` hierarchies, then a `unified` cgroup2 mount with controllers.
    pub fn detect(root: &Path) -> Cgroups {
        Cgroups::detect_with(root, &REAL)
    }

    /// [`Cgroups::detect`], making its changes through `kernel`.
    pub fn detect_with(root: &Path, kernel: &'static dyn Kernel) -> Cgroups {
        let root = root.to_path_buf();
        let want = ["memory", "pids"];
        let v2_root = read_controllers(&root);
        if let Some(ctl) = &v2_root {
            if want.iter().all(|c| ctl.contains(*c)) {
                return Cgroups::v2(root.clone(), root, v2_root, kernel);
            }
        }
        let unified = root.join("unified");
        let v2_unified = read_controllers(&unified);
        if let Some(ctl) = &v2_unified {
            if want.iter().all(|c| ctl.contains(*c)) {
                return Cgroups::v2(root, unified, v2_unified, kernel);
            }
        }
        let hierarchy = |name: &str, marker: &str| {
            let dir = root.join(name);
            (dir.join("cgroup.procs").is_file() && dir.join(marker).exists()).then_some(dir)
        };
        let memory = hierarchy("memory", "memory.limit_in_bytes");
        let pids = hierarchy("pids", "cgroup.procs");
        // The CPU quota is applied where hako may write it (a container may show the host's
        // cpu hierarchy read-only while memory and pids are delegated).
        let cpu = hierarchy("cpu", "cpu.cfs_quota_us").filter(|d| writable(d));
        if memory.is_some() || pids.is_some() {
            return Cgroups {
                root,
                layout: Layout::V1 { memory, pids, cpu },
                kernel,
            };
        }
        // A cgroup2 with only some controllers still beats nothing.
        for (mount, ctl) in [(root.clone(), v2_root), (unified, v2_unified)] {
            if ctl
                .as_ref()
                .is_some_and(|c| want.iter().any(|w| c.contains(*w)))
            {
                return Cgroups::v2(root, mount, ctl, kernel);
            }
        }
        Cgroups {
            root,
            layout: Layout::None,
            kernel,
        }
    }

    fn v2(
        root: PathBuf,
        mount: PathBuf,
        controllers: Option<BTreeSet<String>>,
        kernel: &'static dyn Kernel,
    ) -> Cgroups {
        Cgroups {
            root,
            kernel,
            layout: Layout::V2 {
                mount,
                controllers: controllers.unwrap_or_default(),
            },
        }
    }

    /// What can be enforced, with a one-line description.
    pub fn support(&self) -> CgroupSupport {
        match &self.layout {
            Layout::V2 { mount, controllers } => {
                let has = |c: &str| controllers.contains(c);
                let names: Vec<&str> = ["memory", "pids", "cpu"]
                    .into_iter()
                    .filter(|c| has(c))
                    .collect();
                let mut detail = format!("v2 ({}) at {}", names.join(", "), mount.display());
                let writable = writable(mount);
                if !writable {
                    detail.push_str("; not writable (run as root or delegate the group)");
                }
                CgroupSupport {
                    version: Some(CgroupVersion::V2),
                    memory: has("memory") && writable,
                    pids: has("pids") && writable,
                    cpu: has("cpu") && writable,
                    detail,
                }
            }
            Layout::V1 { memory, pids, cpu } => {
                let present: Vec<(&str, &PathBuf)> = [("memory", memory), ("pids", pids)]
                    .into_iter()
                    .chain([("cpu", cpu)])
                    .filter_map(|(n, d)| d.as_ref().map(|d| (n, d)))
                    .collect();
                let names: Vec<&str> = present.iter().map(|(n, _)| *n).collect();
                let mut detail = format!(
                    "v1 ({}) at {}/{{{}}}",
                    names.join(", "),
                    self.root.display(),
                    names.join(",")
                );
                let usable = |d: &Option<PathBuf>| d.as_deref().is_some_and(writable);
                for (name, dir) in [("memory", memory), ("pids", pids)] {
                    match dir {
                        None => detail.push_str(&format!("; no {name} controller")),
                        Some(d) if !writable(d) => {
                            detail.push_str(&format!("; {} not writable", d.display()))
                        }
                        Some(_) => {}
                    }
                }
                CgroupSupport {
                    version: Some(CgroupVersion::V1),
                    memory: usable(memory),
                    pids: usable(pids),
                    cpu: usable(cpu),
                    detail,
                }
            }
            Layout::None => CgroupSupport {
                version: None,
                memory: false,
                pids: false,
                cpu: false,
                detail: format!(
                    "none: no cgroup2 with memory+pids and no v1 memory/pids under {}",
                    self.root.display()
                ),
            },
        }
    }

    /// Removes empty run and zygote groups left by helpers that were killed outright. A group
    /// whose helper (the pid in its name, `run-<pid>-…` or `zygote-<pid>-…`) still lives is
    /// kept: it may be new and not hold its process yet (another server on this host, e.g.
    /// one draining during a restart). Returns how many were removed.
    pub fn remove_stale(&self) -> usize {
        let parents: Vec<PathBuf> = match &self.layout {
            Layout::V2 { mount, .. } => vec![mount.join("hako")],
            Layout::V1 { memory, pids, cpu } => memory
                .iter()
                .chain(pids.iter())
                .chain(cpu.iter())
                .map(|dir| dir.join("hako"))
                .collect(),
            Layout::None => Vec::new(),
        };
        let mut removed = 0;
        for parent in parents {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = name.starts_with("run-") || name.starts_with("zygote-");
                let helper_alive = name
                    .split('-')
                    .nth(1)
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if ours
                    && !helper_alive
                    && entry.path().is_dir()
                    && self.kernel.rmdir(&entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Kills what is left in the groups of a helper that ended without cleaning up (killed:
    /// `run-<pid>-…`, `zygote-<pid>-…`) and removes them. Call it once the helper is reaped.
    /// Returns how many group directories were removed.
    pub fn remove_of_helper(&self, pid: u32) -> Result<usize, CgroupError> {
        let parents: Vec<(Controller, PathBuf)> = match &self.layout {
            Layout::V2 { mount, .. } => vec![(Controller::Unified, mount.join("hako"))],
            Layout::V1 { memory, pids, .. } => memory
                .iter()
                .map(|dir| (Controller::Memory, dir.join("hako")))
                .chain(pids.iter().map(|dir| (Controller::Pids, dir.join("hako"))))
                .collect(),
            Layout::None => Vec::new(),
        };
        let prefixes = [format!("run-{pid}-"), format!("zygote-{pid}-")];
        let mut dirs = Vec::new();
        for (kind, parent) in parents {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    dirs.push((kind, entry.path()));
                }
            }
        }
        let removed = dirs.len();
        if removed > 0 {
            RunCgroup::new(dirs, self.kernel).remove()?;
        }
        Ok(removed)
    }

    /// Creates `hako/<name>` with `limits` in every available controller.
    pub fn create_run(&self, name: &str, limits: &CgroupLimits) -> Result<RunCgroup, CgroupError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(CgroupError::InvalidName {
                name: name.to_string(),
            });
        }
        match &self.layout {
            Layout::V2 { mount, controllers } => {
                v2::create(self.kernel, mount, controllers, name, limits)
            }
            Layout::V1 { memory, pids, cpu } => v1::create(
                self.kernel,
                &self.root,
                [memory.as_deref(), pids.as_deref(), cpu.as_deref()],
                name,
                limits,
            ),
            Layout::None => Err(CgroupError::Unavailable {
                root: self.root.clone(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    /// v1 memory hierarchy.
    Memory,
    /// v1 pids hierarchy.
    Pids,
    /// v1 cpu hierarchy (CFS quota).
    Cpu,
    /// v2 group holding both.
    Unified,
}

/// Memory in use and number of tasks of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub memory_bytes: u64,
    pub tasks: u64,
}

fn read_pids(procs: &Path) -> Result<Vec<i32>, CgroupError> {
    match fs::read_to_string(procs) {
        Ok(text) => Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()),
        // The group is already gone: nothing left to kill.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::ReadProcs {
            path: procs.to_path_buf(),
            source,
        }),
    }
}

/// The `cgroup.controllers` of `dir`, or None when `dir` is not a cgroup2 group.
fn read_controllers(dir: &Path) -> Option<BTreeSet<String>> {
    read_controllers_file(&dir.join("cgroup.controllers"))
}

fn read_controllers_file(path: &Path) -> Option<BTreeSet<String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.split_whitespace().map(str::to_string).collect())
}

/// Whether we may create groups in `hierarchy` (checks `hako/` when it exists).
fn writable(hierarchy: &Path) -> bool {
    let parent = hierarchy.join(PARENT);
    let dir = if parent.is_dir() {
        parent
    } else {
        hierarchy.to_path_buf()
    };
    access(&dir, AccessFlags::W_OK).is_ok()
}

/// The number after `key` on a `key N` line (memory.events, pids.events, memory.oom_control).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// Writes `value` to `dir/file`; a failure names the file and the value.
fn set(kernel: &dyn Kernel, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    kernel
        .write_file(&path, value)
        .map_err(|source| CgroupError::SetLimit {
            path,
            value: value.to_string(),
            source,
        })
}

/// Raises the parent's cpu weight (`file`) to `weight` when it is lower (an operator may have
/// set more). Best effort: a weight the kernel refuses leaves the run's quota in place.
fn weigh_parent(kernel: &dyn Kernel, parent: &Path, file: &str, weight: u64) {
    let path = parent.join(file);
    let current = fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    if current.is_some_and(|c| c < weight) {
        let _ = kernel.write_file(&path, &weight.to_string());
    }
}

/// mkdir that treats EEXIST as success: many runs create the parent at once.
fn create_dir_idempotent(kernel: &dyn Kernel, path: &Path) -> Result<(), CgroupError> {
    match kernel.mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::CreateParent {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// mkdir of a run's own group, which must be new.
fn create_run_dir(kernel: &dyn Kernel, path: &Path) -> Result<(), CgroupError> {
    kernel.mkdir(path).map_err(|source| CgroupError::CreateRun {
        path: path.to_path_buf(),
        source,
    })
}
