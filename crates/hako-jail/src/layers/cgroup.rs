//! A small cgroup v1 + v2 writer for per-run memory and pids limits.
//!
//! Every function takes the cgroup root (normally `/sys/fs/cgroup`) as a parameter, so the
//! logic runs against a temp dir in tests. Runs live under a `hako` parent group:
//! v1 `<root>/memory/hako/<name>` and `<root>/pids/hako/<name>`, v2 `<root>/hako/<name>`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{access, AccessFlags, Pid};

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

/// The CFS period the CPU quota is expressed in (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The quota for `percent` of one CPU per [`CPU_PERIOD_US`].
fn cpu_quota_us(percent: u64) -> u64 {
    (percent * CPU_PERIOD_US / 100).max(1000)
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
}

impl Cgroups {
    /// Detects the layout under `root`; never fails. Prefers cgroup2 with memory and pids,
    /// then v1 `memory`/`pids` hierarchies, then a `unified` cgroup2 mount with controllers.
    pub fn detect(root: &Path) -> Cgroups {
        let root = root.to_path_buf();
        let want = ["memory", "pids"];
        let v2_root = read_controllers(&root);
        if let Some(ctl) = &v2_root {
            if want.iter().all(|c| ctl.contains(*c)) {
                return Cgroups::v2(root.clone(), root, v2_root);
            }
        }
        let unified = root.join("unified");
        let v2_unified = read_controllers(&unified);
        if let Some(ctl) = &v2_unified {
            if want.iter().all(|c| ctl.contains(*c)) {
                return Cgroups::v2(root, unified, v2_unified);
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
            };
        }
        // A cgroup2 with only some controllers still beats nothing.
        for (mount, ctl) in [(root.clone(), v2_root), (unified, v2_unified)] {
            if ctl
                .as_ref()
                .is_some_and(|c| want.iter().any(|w| c.contains(*w)))
            {
                return Cgroups::v2(root, mount, ctl);
            }
        }
        Cgroups {
            root,
            layout: Layout::None,
        }
    }

    fn v2(root: PathBuf, mount: PathBuf, controllers: Option<BTreeSet<String>>) -> Cgroups {
        Cgroups {
            root,
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

    /// Creates `hako/<name>` with `limits` in every available controller.
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
                    && fs::remove_dir(entry.path()).is_ok()
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
            RunCgroup { dirs }.remove()?;
        }
        Ok(removed)
    }

    pub fn create_run(&self, name: &str, limits: &CgroupLimits) -> Result<RunCgroup, CgroupError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(CgroupError::InvalidName {
                name: name.to_string(),
            });
        }
        match &self.layout {
            Layout::V2 { mount, controllers } => create_v2(mount, controllers, name, limits),
            Layout::V1 { memory, pids, cpu } => create_v1(
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

/// The cgroup(s) of one run. Dropping it leaves the groups in place; call [`RunCgroup::remove`].
#[derive(Debug)]
pub struct RunCgroup {
    dirs: Vec<(Controller, PathBuf)>,
}

impl RunCgroup {
    /// Moves `pid` into the run (v1: into each controller's group).
    pub(crate) fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            let path = dir.join("cgroup.procs");
            write_value(&path, &pid.to_string()).map_err(|source| CgroupError::AddPid {
                path,
                pid,
                source,
            })?;
        }
        Ok(())
    }

    /// Peak memory, OOM kills and pids-limit hits; missing files read as unknown or 0.
    pub(crate) fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        for (kind, dir) in &self.dirs {
            let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
            match kind {
                Controller::Memory => {
                    stats.peak_memory_bytes =
                        read("memory.max_usage_in_bytes").and_then(|s| s.trim().parse().ok());
                    stats.oom_kills = read("memory.oom_control")
                        .and_then(|s| keyed_value(&s, "oom_kill"))
                        .unwrap_or(0);
                    stats.memory_limit_hits = read("memory.failcnt")
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                }
                Controller::Pids => {
                    stats.pids_limit_hits = read("pids.events")
                        .and_then(|s| keyed_value(&s, "max"))
                        .unwrap_or(0);
                }
                Controller::Cpu => {}
                Controller::Unified => {
                    stats.peak_memory_bytes =
                        read("memory.peak").and_then(|s| s.trim().parse().ok());
                    let events = read("memory.events").unwrap_or_default();
                    stats.oom_kills = keyed_value(&events, "oom_kill").unwrap_or(0);
                    stats.memory_limit_hits = keyed_value(&events, "max").unwrap_or(0);
                    stats.pids_limit_hits = read("pids.events")
                        .and_then(|s| keyed_value(&s, "max"))
                        .unwrap_or(0);
                }
            }
        }
        stats
    }

    /// Starts counting the peak memory of what runs in the group from now on. None where
    /// the kernel counts only the group's whole life (cgroup v2 before Linux 6.12).
    pub(crate) fn peak_counter(&self) -> Option<crate::peak::PeakCounter> {
        self.dirs.iter().find_map(|(kind, dir)| match kind {
            Controller::Memory => crate::peak::PeakCounter::v1(dir),
            Controller::Unified => crate::peak::PeakCounter::v2(dir),
            Controller::Pids | Controller::Cpu => None,
        })
    }

    /// Memory in use and tasks in the group, best effort (0 when unknown).
    pub fn usage(&self) -> CgroupUsage {
        let mut usage = CgroupUsage::default();
        for (kind, dir) in &self.dirs {
            let read = |file: &str| {
                fs::read_to_string(dir.join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            };
            match kind {
                Controller::Memory => {
                    usage.memory_bytes = read("memory.usage_in_bytes").unwrap_or(0)
                }
                Controller::Pids => usage.tasks = read("pids.current").unwrap_or(0),
                Controller::Cpu => {}
                Controller::Unified => {
                    usage.memory_bytes = read("memory.current").unwrap_or(0);
                    usage.tasks = read("pids.current").unwrap_or(0);
                }
            }
        }
        usage
    }

    /// Sets new limits on the existing group and (v1) restarts its peak-memory count. A zygote
    /// keeps its run children in its own group and retunes it before each run, which avoids a
    /// task migration (milliseconds on v1) per run.
    pub(crate) fn retune(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        for (kind, dir) in &self.dirs {
            match kind {
                Controller::Memory => {
                    let value = if limits.memory_bytes == 0 {
                        "-1".to_string()
                    } else {
                        limits.memory_bytes.to_string()
                    };
                    let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
                    // memsw may never be below limit_in_bytes: raise it first, lower it last.
                    if set(dir, "memory.limit_in_bytes", &value).is_err() && memsw {
                        set(dir, "memory.memsw.limit_in_bytes", &value)?;
                        set(dir, "memory.limit_in_bytes", &value)?;
                    } else if memsw {
                        set(dir, "memory.memsw.limit_in_bytes", &value)?;
                    }
                    limit_tcp_memory(dir, &value)?;
                    let _ = write_value(&dir.join("memory.max_usage_in_bytes"), "0");
                }
                Controller::Pids => {
                    let value = if limits.pids == 0 {
                        "max".to_string()
                    } else {
                        limits.pids.to_string()
                    };
                    set(dir, "pids.max", &value)?;
                }
                Controller::Cpu => set_cfs_quota(dir, limits.cpu_percent)?,
                Controller::Unified => {
                    let memory = if limits.memory_bytes == 0 {
                        "max".to_string()
                    } else {
                        limits.memory_bytes.to_string()
                    };
                    set(dir, "memory.max", &memory)?;
                    let pids = if limits.pids == 0 {
                        "max".to_string()
                    } else {
                        limits.pids.to_string()
                    };
                    set(dir, "pids.max", &pids)?;
                    if dir.join("cpu.max").exists() {
                        set(dir, "cpu.max", &cpu_max(limits.cpu_percent))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Kills every process of the run. v2 uses `cgroup.kill` when the kernel has it (5.14+);
    /// otherwise SIGKILL goes to every listed pid, round after round, until the groups are empty.
    pub(crate) fn kill_all(&self) -> Result<(), CgroupError> {
        for (kind, dir) in &self.dirs {
            let kill_file = dir.join("cgroup.kill");
            if *kind == Controller::Unified && kill_file.is_file() {
                // Best effort: the SIGKILL loop below still runs and checks emptiness.
                let _ = write_value(&kill_file, "1");
            }
        }
        for round in 0..KILL_ROUNDS {
            let mut alive = Vec::new();
            for (_, dir) in &self.dirs {
                let procs = dir.join("cgroup.procs");
                for pid in read_pids(&procs)? {
                    alive.push(pid);
                    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(source) => {
                            return Err(CgroupError::Kill {
                                path: dir.clone(),
                                pid,
                                source,
                            })
                        }
                    }
                }
            }
            if alive.is_empty() {
                return Ok(());
            }
            if round + 1 < KILL_ROUNDS {
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        let mut remaining = Vec::new();
        let mut path = PathBuf::new();
        for (_, dir) in &self.dirs {
            let pids = read_pids(&dir.join("cgroup.procs"))?;
            if !pids.is_empty() && remaining.is_empty() {
                path = dir.clone();
            }
            remaining.extend(pids);
        }
        if remaining.is_empty() {
            return Ok(());
        }
        Err(CgroupError::KillTimeout {
            path,
            remaining,
            rounds: KILL_ROUNDS,
        })
    }

    /// Kills the run's processes and removes its groups, retrying rmdir on EBUSY for ~1 s.
    pub fn remove(self) -> Result<(), CgroupError> {
        self.kill_all()?;
        for (_, dir) in &self.dirs {
            remove_dir_retrying(dir)?;
        }
        Ok(())
    }

    /// The run's group directories.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// `[memory, pids, cpu]` hierarchies, each where the host has it.
fn create_v1(
    root: &Path,
    [memory, pids, cpu]: [Option<&Path>; 3],
    name: &str,
    limits: &CgroupLimits,
) -> Result<RunCgroup, CgroupError> {
    if memory.is_none() && pids.is_none() {
        return Err(CgroupError::Unavailable {
            root: root.to_path_buf(),
        });
    }
    let mut run = RunCgroup { dirs: Vec::new() };
    let result = (|| {
        if let Some(hierarchy) = memory {
            let dir = make_run_dir(hierarchy, name)?;
            run.dirs.push((Controller::Memory, dir.clone()));
            let value = if limits.memory_bytes == 0 {
                "-1".to_string()
            } else {
                limits.memory_bytes.to_string()
            };
            set(&dir, "memory.limit_in_bytes", &value)?;
            // Same value for memory+swap, so the run cannot swap. Must come after
            // limit_in_bytes: the kernel rejects memsw below the memory limit.
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                set(&dir, "memory.memsw.limit_in_bytes", &value)?;
            }
            limit_tcp_memory(&dir, &value)?;
        }
        if let Some(hierarchy) = pids {
            let dir = make_run_dir(hierarchy, name)?;
            run.dirs.push((Controller::Pids, dir.clone()));
            set(&dir, "pids.max", &max_or(limits.pids))?;
        }
        if let Some(hierarchy) = cpu.filter(|_| limits.cpu_percent > 0) {
            let dir = make_run_dir(hierarchy, name)?;
            run.dirs.push((Controller::Cpu, dir.clone()));
            set_cfs_quota(&dir, limits.cpu_percent)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(run),
        Err(err) => {
            cleanup(&run);
            Err(err)
        }
    }
}

fn create_v2(
    mount: &Path,
    controllers: &BTreeSet<String>,
    name: &str,
    limits: &CgroupLimits,
) -> Result<RunCgroup, CgroupError> {
    let cpu = (limits.cpu_percent > 0).then_some("cpu");
    let wanted: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .chain(cpu)
        .filter(|c| controllers.contains(*c))
        .collect();
    if !wanted.iter().any(|c| *c != "cpu") {
        return Err(CgroupError::Unavailable {
            root: mount.to_path_buf(),
        });
    }
    match enable_controllers(mount, &wanted) {
        Err(CgroupError::InternalProcesses { .. }) => {
            // Inside a container with its own cgroup namespace the root group holds our
            // processes, and a non-root group with processes may not enable controllers.
            // Like docker-in-docker entrypoints, move every process of the root group into
            // the `hako-server` leaf, then retry once. The true host root is exempt from the
            // rule, so this only happens where we own the whole (namespaced) tree.
            evacuate_root(mount)?;
            enable_controllers(mount, &wanted)?;
        }
        other => other?,
    }
    let parent = mount.join(PARENT);
    create_dir_idempotent(&parent)?;
    enable_controllers(&parent, &wanted)?;
    let dir = parent.join(name);
    create_run_dir(&dir)?;
    let run = RunCgroup {
        dirs: vec![(Controller::Unified, dir.clone())],
    };
    let result = (|| {
        if wanted.contains(&"memory") {
            set(&dir, "memory.max", &max_or(limits.memory_bytes))?;
            if dir.join("memory.swap.max").exists() {
                set(&dir, "memory.swap.max", "0")?;
            }
        }
        if wanted.contains(&"pids") {
            set(&dir, "pids.max", &max_or(limits.pids))?;
        }
        if wanted.contains(&"cpu") {
            set(&dir, "cpu.max", &cpu_max(limits.cpu_percent))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(run),
        Err(err) => {
            cleanup(&run);
            Err(err)
        }
    }
}

/// Counts the group's TCP socket buffers against `value` (cgroup v1 only: v2 charges socket
/// memory to `memory.current` by itself). Without it a run could queue hundreds of MiB in
/// socket buffers outside its memory limit.
fn limit_tcp_memory(dir: &Path, value: &str) -> Result<(), CgroupError> {
    if dir.join("memory.kmem.tcp.limit_in_bytes").exists() {
        set(dir, "memory.kmem.tcp.limit_in_bytes", value)?;
    }
    Ok(())
}

/// v1: the run's CPU time per [`CPU_PERIOD_US`] (`-1` without a limit).
fn set_cfs_quota(dir: &Path, percent: u64) -> Result<(), CgroupError> {
    set(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
    let quota = if percent == 0 {
        "-1".to_string()
    } else {
        cpu_quota_us(percent).to_string()
    };
    set(dir, "cpu.cfs_quota_us", &quota)
}

/// v2 `cpu.max`: "quota period", or "max period" without a limit.
fn cpu_max(percent: u64) -> String {
    if percent == 0 {
        format!("max {CPU_PERIOD_US}")
    } else {
        format!("{} {CPU_PERIOD_US}", cpu_quota_us(percent))
    }
}

/// Enables `wanted` in `dir/cgroup.subtree_control`, skipping those already on.
fn enable_controllers(dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = read_controllers_file(&path).unwrap_or_default();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !enabled.contains(**c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let controllers = missing.join(" ");
    write_value(&path, &controllers).map_err(|source| {
        if source.raw_os_error() == Some(libc::EBUSY) {
            CgroupError::InternalProcesses {
                path: dir.to_path_buf(),
            }
        } else {
            CgroupError::EnableControllers {
                path: dir.to_path_buf(),
                controllers,
                source,
            }
        }
    })
}

/// Moves every process of the v2 root group into `<mount>/hako-server`.
fn evacuate_root(mount: &Path) -> Result<(), CgroupError> {
    let leaf = mount.join(SERVER_LEAF);
    create_dir_idempotent(&leaf)?;
    let procs = leaf.join("cgroup.procs");
    for pid in read_pids(&mount.join("cgroup.procs"))? {
        match write_value(&procs, &pid.to_string()) {
            // Exited meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::MoveToLeaf {
                    path: leaf,
                    pid,
                    source,
                })
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Creates `<hierarchy>/hako` (idempotent) and `<hierarchy>/hako/<name>` (must be new).
fn make_run_dir(hierarchy: &Path, name: &str) -> Result<PathBuf, CgroupError> {
    let parent = hierarchy.join(PARENT);
    create_dir_idempotent(&parent)?;
    let dir = parent.join(name);
    create_run_dir(&dir)?;
    Ok(dir)
}

/// mkdir that treats EEXIST as success: many runs create the parent at once.
fn create_dir_idempotent(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => {
            #[cfg(test)]
            tests::fake_kernel_files(path);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::CreateParent {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_run_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|source| CgroupError::CreateRun {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(test)]
    tests::fake_kernel_files(path);
    Ok(())
}

/// Best-effort removal of a half-built run.
fn cleanup(run: &RunCgroup) {
    for (_, dir) in &run.dirs {
        let _ = fs::remove_dir(dir);
    }
}

fn remove_dir_retrying(dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < REMOVE_TIMEOUT => {
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn set(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    write_value(&path, value).map_err(|source| CgroupError::SetLimit {
        path,
        value: value.to_string(),
        source,
    })
}

fn max_or(value: u64) -> String {
    if value == 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// Writes `value` to an existing control file in one write(2), as cgroupfs expects.
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    #[cfg(test)]
    if let Some(errno) = tests::injected_failure(path) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())?;
    #[cfg(test)]
    tests::record_write(path, value);
    Ok(())
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
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::process::Command;

    /// The fake "kernel" of a test thread: which control files a new group gets, the
    /// writes seen, and write failures to inject.
    #[derive(Default)]
    struct FakeKernel {
        enabled: bool,
        memsw: bool,
        writes: Vec<(PathBuf, String)>,
        failures: Vec<(PathBuf, i32)>,
    }

    thread_local! {
        static FAKE: RefCell<FakeKernel> = RefCell::new(FakeKernel::default());
    }

    pub(super) fn record_write(path: &Path, value: &str) {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            if f.enabled {
                f.writes.push((path.to_path_buf(), value.to_string()));
            }
        });
    }

    pub(super) fn injected_failure(path: &Path) -> Option<i32> {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let at = f.failures.iter().position(|(p, _)| p == path)?;
            Some(f.failures.remove(at).1)
        })
    }

    /// Fills a new group like cgroupfs does on mkdir (only in fake-kernel tests).
    pub(super) fn fake_kernel_files(dir: &Path) {
        let (enabled, memsw) = FAKE.with(|f| (f.borrow().enabled, f.borrow().memsw));
        if !enabled {
            return;
        }
        let hierarchy = dir
            .ancestors()
            .find_map(|a| match a.file_name()?.to_str()? {
                h @ ("memory" | "pids" | "cpu") => Some(h),
                _ => None,
            });
        let files: &[&str] = match hierarchy {
            Some("memory") if memsw => &[
                "cgroup.procs",
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.kmem.tcp.limit_in_bytes",
            ],
            Some("memory") => &["cgroup.procs", "memory.limit_in_bytes"],
            Some("cpu") => &["cgroup.procs", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
            Some(_) => &["cgroup.procs", "pids.max"],
            None => &[
                "cgroup.procs",
                "cgroup.controllers",
                "cgroup.subtree_control",
                "memory.max",
                "memory.swap.max",
                "pids.max",
            ],
        };
        for f in files {
            touch(&dir.join(f), "");
        }
    }

    fn fake_kernel(memsw: bool) {
        FAKE.with(|f| {
            *f.borrow_mut() = FakeKernel {
                enabled: true,
                memsw,
                ..FakeKernel::default()
            }
        });
    }

    fn fail_write_once(path: PathBuf, errno: i32) {
        FAKE.with(|f| f.borrow_mut().failures.push((path, errno)));
    }

    /// The writes so far as `file=value`.
    fn take_writes() -> Vec<String> {
        FAKE.with(|f| std::mem::take(&mut f.borrow_mut().writes))
            .into_iter()
            .map(|(p, v)| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                format!("{name}={v}")
            })
            .collect()
    }

    fn touch(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn fake_v1_root(root: &Path) {
        touch(&root.join("memory/cgroup.procs"), "");
        touch(&root.join("memory/memory.limit_in_bytes"), "");
        touch(&root.join("pids/cgroup.procs"), "");
        touch(&root.join("cpu/cgroup.procs"), "");
        touch(&root.join("cpu/cpu.cfs_quota_us"), "");
    }

    fn fake_v2_root(root: &Path, root_procs: &str) {
        touch(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        touch(&root.join("cgroup.subtree_control"), "");
        touch(&root.join("cgroup.procs"), root_procs);
    }

    const LIMITS: CgroupLimits = CgroupLimits {
        memory_bytes: 64 << 20,
        pids: 16,
        cpu_percent: 0,
    };

    #[test]
    fn stale_groups_of_live_helpers_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v1_root(tmp.path());
        let live = std::process::id();
        // A pid that no process has: above the kernel's maximum.
        let dead = 1u32 << 23;
        for controller in ["memory", "pids"] {
            for name in [
                format!("run-{live}-1000"),
                format!("run-{dead}-1000"),
                format!("zygote-{dead}-7"),
                "unrelated".to_string(),
            ] {
                fs::create_dir_all(tmp.path().join(controller).join("hako").join(name)).unwrap();
            }
        }
        let removed = Cgroups::detect(tmp.path()).remove_stale();
        assert_eq!(removed, 4);
        for controller in ["memory", "pids"] {
            let hako = tmp.path().join(controller).join("hako");
            let mut left: Vec<String> = fs::read_dir(&hako)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, [format!("run-{live}-1000"), "unrelated".to_string()]);
        }
    }

    #[test]
    fn keyed_values_parse() {
        let events = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 3\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "max"), Some(7));
        assert_eq!(keyed_value(events, "oom_kill"), Some(3));
        assert_eq!(keyed_value(events, "oom"), Some(2));
        assert_eq!(keyed_value(events, "missing"), None);
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(keyed_value(oom_control, "oom_kill"), Some(5));
        assert_eq!(keyed_value("max garbage\n", "max"), None);
        assert_eq!(keyed_value("", "max"), None);
    }

    #[test]
    fn detect_v1_layout() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v1_root(tmp.path());
        // A unified mount without controllers does not count.
        touch(&tmp.path().join("unified/cgroup.controllers"), "");
        let support = Cgroups::detect(tmp.path()).support();
        assert_eq!(support.version, Some(CgroupVersion::V1));
        assert!(support.memory && support.pids && support.cpu);
        let expected = format!(
            "v1 (memory, pids, cpu) at {}/{{memory,pids,cpu}}",
            tmp.path().display()
        );
        assert_eq!(support.detail, expected);
    }

    #[test]
    fn detect_v2_root_unified_and_none() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2_root(tmp.path(), "");
        let support = Cgroups::detect(tmp.path()).support();
        assert_eq!(support.version, Some(CgroupVersion::V2));
        assert!(support.memory && support.pids && support.cpu);
        assert!(
            support.detail.starts_with("v2 (memory, pids, cpu) at "),
            "{}",
            support.detail
        );

        let hybrid = tempfile::tempdir().unwrap();
        touch(&hybrid.path().join("cgroup.procs"), "");
        touch(
            &hybrid.path().join("unified/cgroup.controllers"),
            "memory pids\n",
        );
        let support = Cgroups::detect(hybrid.path()).support();
        assert_eq!(support.version, Some(CgroupVersion::V2));
        assert!(support.detail.contains("unified"), "{}", support.detail);

        let empty = tempfile::tempdir().unwrap();
        let cg = Cgroups::detect(empty.path());
        let support = cg.support();
        assert_eq!(support.version, None);
        assert!(!support.memory && !support.pids);
        assert!(support.detail.starts_with("none"), "{}", support.detail);
        let err = cg.create_run("x", &LIMITS).unwrap_err();
        assert!(matches!(err, CgroupError::Unavailable { .. }), "{err}");
    }

    #[test]
    fn bad_run_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v1_root(tmp.path());
        let cg = Cgroups::detect(tmp.path());
        for name in ["", ".", "..", "a/b"] {
            let err = cg.create_run(name, &LIMITS).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidName { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn v1_writes_limits_with_memsw_after_limit_in_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v1_root(root);
        fake_kernel(true);
        let cg = Cgroups::detect(root);
        let run = cg.create_run("run1", &LIMITS).unwrap();
        assert_eq!(
            take_writes(),
            vec![
                "memory.limit_in_bytes=67108864",
                "memory.memsw.limit_in_bytes=67108864",
                "memory.kmem.tcp.limit_in_bytes=67108864",
                "pids.max=16",
            ]
        );
        let mem = root.join("memory/hako/run1");
        let pids = root.join("pids/hako/run1");
        assert_eq!(run.paths(), vec![mem.clone(), pids.clone()]);
        run.add_pid(4242).unwrap();
        assert_eq!(
            fs::read_to_string(mem.join("cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(
            fs::read_to_string(pids.join("cgroup.procs")).unwrap(),
            "4242"
        );

        // A second run shares the parent; a duplicate name is refused.
        cg.create_run("run2", &LIMITS).unwrap();
        let err = cg.create_run("run1", &LIMITS).unwrap_err();
        assert!(matches!(err, CgroupError::CreateRun { .. }), "{err}");
        assert!(err.to_string().contains("run1"), "{err}");
    }

    #[test]
    fn v1_cpu_quota_in_its_own_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v1_root(root);
        fake_kernel(false);
        let limits = CgroupLimits {
            cpu_percent: 150,
            ..LIMITS
        };
        let run = Cgroups::detect(root).create_run("r", &limits).unwrap();
        assert_eq!(
            take_writes(),
            vec![
                "memory.limit_in_bytes=67108864",
                "pids.max=16",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=150000",
            ]
        );
        assert!(run.paths().contains(&root.join("cpu/hako/r")));
        run.retune(&CgroupLimits {
            cpu_percent: 0,
            ..LIMITS
        })
        .unwrap();
        assert!(take_writes().contains(&"cpu.cfs_quota_us=-1".to_string()));
    }

    #[test]
    fn v1_without_swap_accounting_and_unlimited_values() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v1_root(tmp.path());
        fake_kernel(false);
        let unlimited = CgroupLimits {
            memory_bytes: 0,
            pids: 0,
            cpu_percent: 0,
        };
        Cgroups::detect(tmp.path())
            .create_run("r", &unlimited)
            .unwrap();
        assert_eq!(
            take_writes(),
            vec!["memory.limit_in_bytes=-1", "pids.max=max"]
        );
    }

    #[test]
    fn v1_stats_read_oom_control_failcnt_and_pids_events() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v1_root(tmp.path());
        fake_kernel(true);
        let run = Cgroups::detect(tmp.path())
            .create_run("s", &LIMITS)
            .unwrap();
        let mem = tmp.path().join("memory/hako/s");
        let pids = tmp.path().join("pids/hako/s");
        assert_eq!(run.stats(), CgroupStats::default());
        touch(&mem.join("memory.max_usage_in_bytes"), "123456\n");
        touch(
            &mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        touch(&mem.join("memory.failcnt"), "9\n");
        touch(&pids.join("pids.events"), "max 4\n");
        let stats = run.stats();
        assert_eq!(stats.peak_memory_bytes, Some(123456));
        assert_eq!(stats.oom_kills, 2);
        assert_eq!(stats.memory_limit_hits, 9);
        assert_eq!(stats.pids_limit_hits, 4);
    }

    #[test]
    fn v2_enables_controllers_then_writes_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2_root(root, "");
        fake_kernel(false);
        let run = Cgroups::detect(root).create_run("r", &LIMITS).unwrap();
        assert_eq!(
            take_writes(),
            vec![
                "cgroup.subtree_control=+memory +pids",
                "cgroup.subtree_control=+memory +pids",
                "memory.max=67108864",
                "memory.swap.max=0",
                "pids.max=16",
            ]
        );
        let dir = root.join("hako/r");
        assert_eq!(run.paths(), vec![dir.clone()]);
        assert_eq!(
            fs::read_to_string(root.join("hako/cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        // Already-enabled controllers are not written again.
        fs::write(root.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        fs::write(root.join("hako/cgroup.subtree_control"), "memory pids\n").unwrap();
        Cgroups::detect(root).create_run("r2", &LIMITS).unwrap();
        assert_eq!(take_writes()[0], "memory.max=67108864");

        touch(&dir.join("memory.peak"), "777\n");
        touch(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        touch(&dir.join("pids.events"), "max 5\n");
        let stats = run.stats();
        assert_eq!(stats.peak_memory_bytes, Some(777));
        assert_eq!(stats.oom_kills, 1);
        assert_eq!(stats.memory_limit_hits, 3);
        assert_eq!(stats.pids_limit_hits, 5);
    }

    #[test]
    fn v2_busy_root_moves_processes_to_a_leaf_and_retries() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2_root(root, "100\n");
        fake_kernel(false);
        fail_write_once(root.join("cgroup.subtree_control"), libc::EBUSY);
        Cgroups::detect(root).create_run("r", &LIMITS).unwrap();
        let writes = take_writes();
        assert_eq!(writes[0], "cgroup.procs=100", "{writes:?}");
        assert_eq!(writes[1], "cgroup.subtree_control=+memory +pids");
        assert_eq!(
            fs::read_to_string(root.join("hako-server/cgroup.procs")).unwrap(),
            "100"
        );
    }

    #[test]
    fn v2_busy_parent_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2_root(root, "");
        fake_kernel(false);
        fail_write_once(root.join("hako/cgroup.subtree_control"), libc::EBUSY);
        let err = Cgroups::detect(root).create_run("r", &LIMITS).unwrap_err();
        assert!(
            matches!(err, CgroupError::InternalProcesses { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no internal processes"), "{err}");
        assert!(err.to_string().contains("/hako"), "{err}");
    }

    #[test]
    fn failed_limit_names_the_file_and_value() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_v2_root(root, "");
        fake_kernel(false);
        fail_write_once(root.join("hako/r/pids.max"), libc::EINVAL);
        let err = Cgroups::detect(root).create_run("r", &LIMITS).unwrap_err();
        match &err {
            CgroupError::SetLimit { path, value, .. } => {
                assert!(path.ends_with("hako/r/pids.max"));
                assert_eq!(value, "16");
            }
            other => panic!("unexpected {other}"),
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Creates a real run cgroup on this host, puts `sleep` in it, kills and removes it.
    #[test]
    fn real_host_run_cgroup() {
        let root = Path::new("/sys/fs/cgroup");
        if !is_root() {
            eprintln!("skipped: creating cgroups needs root");
            return;
        }
        let cg = Cgroups::detect(root);
        let support = cg.support();
        if !(support.memory && support.pids) {
            eprintln!("skipped: no memory+pids cgroup here ({})", support.detail);
            return;
        }
        let name = format!("test-{}", std::process::id());
        let run = cg.create_run(&name, &LIMITS).unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        run.add_pid(pid).unwrap();
        let paths = run.paths();
        for dir in &paths {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
            assert!(
                procs.split_whitespace().any(|p| p == pid.to_string()),
                "{pid} not in {}: {procs:?}",
                dir.display()
            );
        }
        let limit_file = match support.version {
            Some(CgroupVersion::V1) => paths[0].join("memory.limit_in_bytes"),
            _ => paths[0].join("memory.max"),
        };
        assert_eq!(
            fs::read_to_string(&limit_file).unwrap().trim(),
            (64u64 << 20).to_string()
        );
        run.kill_all().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep was not killed");
        run.remove().unwrap();
        for dir in &paths {
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
    }
}
