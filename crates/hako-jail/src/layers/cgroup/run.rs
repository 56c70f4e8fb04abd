//! What a run does with its groups: add a process, account, retune, kill, remove.

use std::collections::hash_map::{Entry, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{
    keyed_value, read_pids, v1, v2, CgroupError, CgroupLimits, CgroupStats, CgroupUsage,
    Controller, KILL_ROUNDS, REMOVE_TIMEOUT, RETRY_PAUSE,
};
use crate::sys::Kernel;

/// The cgroup(s) of one run. Dropping it leaves the groups in place; call [`RunCgroup::remove`].
#[derive(Debug)]
pub struct RunCgroup {
    dirs: Vec<(Controller, PathBuf)>,
    kernel: &'static dyn Kernel,
    /// The files read at every run, opened once: a zygote's group serves many runs.
    readers: Mutex<HashMap<PathBuf, File>>,
    /// The limits the last [`RunCgroup::retune`] set.
    retuned: Mutex<Option<CgroupLimits>>,
    /// The v1 memory group's optional files, looked up when it was made.
    pub(super) memory_files: Option<v1::MemoryFiles>,
}

/// Longer files are read whole, through a path.
const SHORT_FILE: usize = 1024;

impl RunCgroup {
    pub(super) fn new(dirs: Vec<(Controller, PathBuf)>, kernel: &'static dyn Kernel) -> RunCgroup {
        RunCgroup {
            dirs,
            kernel,
            readers: Mutex::default(),
            retuned: Mutex::default(),
            memory_files: None,
        }
    }

    /// `dir/file` now, through a descriptor kept open (a cgroup file read from offset 0 is
    /// generated afresh); None when unreadable.
    fn read(&self, dir: &Path, file: &str) -> Option<String> {
        let path = dir.join(file);
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let reader = match readers.entry(path) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(new) => {
                let file = File::open(new.key()).ok()?;
                new.insert(file)
            }
        };
        let mut buf = [0u8; SHORT_FILE];
        let n = reader.read_at(&mut buf, 0).ok()?;
        if n == buf.len() {
            return fs::read_to_string(dir.join(file)).ok();
        }
        String::from_utf8(buf[..n].to_vec()).ok()
    }

    /// `dir/file` as a number.
    fn read_number(&self, dir: &Path, file: &str) -> Option<u64> {
        self.read(dir, file)?.trim().parse().ok()
    }

    pub(super) fn push(&mut self, kind: Controller, dir: PathBuf) {
        self.dirs.push((kind, dir));
    }

    /// Moves `pid` into the run (v1: into each controller's group).
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            let path = dir.join("cgroup.procs");
            self.kernel
                .write_file(&path, &pid.to_string())
                .map_err(|source| CgroupError::AddPid { path, pid, source })?;
        }
        Ok(())
    }

    /// Peak memory, OOM kills and pids-limit hits; missing files read as unknown or 0.
    pub fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        for (kind, dir) in &self.dirs {
            let read = |file: &str| self.read(dir, file);
            match kind {
                Controller::Memory => {
                    stats.peak_memory_bytes = self.read_number(dir, "memory.max_usage_in_bytes");
                    stats.oom_kills = read("memory.oom_control")
                        .and_then(|s| keyed_value(&s, "oom_kill"))
                        .unwrap_or(0);
                    stats.memory_limit_hits = self.read_number(dir, "memory.failcnt").unwrap_or(0);
                }
                Controller::Pids => {
                    stats.pids_limit_hits = read("pids.events")
                        .and_then(|s| keyed_value(&s, "max"))
                        .unwrap_or(0);
                }
                Controller::Cpu => {}
                Controller::Unified => {
                    stats.peak_memory_bytes = self.read_number(dir, "memory.peak");
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
    pub fn peak_counter(&self) -> Option<crate::peak::PeakCounter> {
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
            let read = |file: &str| self.read_number(dir, file);
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

    /// Sets new limits on the existing group. A zygote keeps its run children in its own
    /// group and retunes it before each run, which avoids a task migration (milliseconds on
    /// v1) per run. Limits equal to the last retune's are not written again (the helper is
    /// their only writer); the memory limit follows the group's use and changes most runs.
    pub fn retune(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let mut retuned = self.retuned.lock().unwrap_or_else(|e| e.into_inner());
        let last = retuned.take();
        let changed = |field: fn(&CgroupLimits) -> u64| {
            last.as_ref().is_none_or(|l| field(l) != field(limits))
        };
        let pids = changed(|l| l.pids);
        let cpu = changed(|l| l.cpu_percent);
        for (kind, dir) in &self.dirs {
            match kind {
                Controller::Memory => {
                    let files = self
                        .memory_files
                        .unwrap_or_else(|| v1::MemoryFiles::of(dir));
                    let last = last.as_ref().map(|l| l.memory_bytes);
                    v1::retune_memory(self.kernel, dir, files, limits.memory_bytes, last)?
                }
                Controller::Pids if pids => super::set(
                    self.kernel,
                    dir,
                    "pids.max",
                    &super::limits::max_or(limits.pids),
                )?,
                Controller::Cpu if cpu => v1::set_cfs_quota(self.kernel, dir, limits.cpu_percent)?,
                Controller::Pids | Controller::Cpu => {}
                Controller::Unified => {
                    let memory = changed(|l| l.memory_bytes);
                    v2::retune(self.kernel, dir, limits, [memory, pids, cpu])?
                }
            }
        }
        *retuned = Some(*limits);
        Ok(())
    }

    /// Kills every process of the run. v2 uses `cgroup.kill` when the kernel has it (5.14+);
    /// otherwise SIGKILL goes to every listed pid, round after round, until the groups are empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        for (kind, dir) in &self.dirs {
            let kill_file = dir.join("cgroup.kill");
            if *kind == Controller::Unified && kill_file.is_file() {
                // Best effort: the SIGKILL loop below still runs and checks emptiness.
                let _ = self.kernel.write_file(&kill_file, "1");
            }
        }
        for round in 0..KILL_ROUNDS {
            let mut alive = Vec::new();
            for (_, dir) in &self.dirs {
                let procs = dir.join("cgroup.procs");
                for pid in read_pids(&procs)? {
                    alive.push(pid);
                    match self.kernel.kill(Pid::from_raw(pid), Signal::SIGKILL) {
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
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.kill_all()?;
        for (_, dir) in &self.dirs {
            remove_dir_retrying(self.kernel, dir)?;
        }
        Ok(())
    }

    /// The run's group directories.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The run once its limits are set; after a failed step its groups (which never held a
    /// process) are removed, best effort, and the failure is returned.
    pub(super) fn unless(self, failed: Result<(), CgroupError>) -> Result<RunCgroup, CgroupError> {
        match failed {
            Ok(()) => Ok(self),
            Err(err) => {
                for (_, dir) in &self.dirs {
                    let _ = self.kernel.rmdir(dir);
                }
                Err(err)
            }
        }
    }
}

fn remove_dir_retrying(kernel: &dyn Kernel, dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        match kernel.rmdir(dir) {
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
