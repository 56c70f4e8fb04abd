//! cgroup v1: one group per run in each hierarchy (memory, pids, and cpu for a CPU quota).

use std::path::{Path, PathBuf};

use super::limits::{cfs_quota, max_or, parent_cpu_weight, v1_memory, CPU_PERIOD_US};
use super::{
    create_dir_idempotent, create_run_dir, set, weigh_parent, CgroupError, CgroupLimits,
    Controller, RunCgroup, PARENT,
};
use crate::sys::Kernel;

/// Creates `<hierarchy>/hako/<name>` in each of the `[memory, pids, cpu]` hierarchies the
/// host has, with `limits`; on a failure the groups made so far are removed again.
pub(super) fn create(
    kernel: &'static dyn Kernel,
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
    let mut run = RunCgroup::new(Vec::new(), kernel);
    let result = (|| {
        if let Some(hierarchy) = memory {
            let dir = make_run_dir(kernel, hierarchy, name)?;
            run.push(Controller::Memory, dir.clone());
            let value = v1_memory(limits.memory_bytes);
            let files = MemoryFiles::of(&dir);
            run.memory_files = Some(files);
            set(kernel, &dir, "memory.limit_in_bytes", &value)?;
            // Same value for memory+swap, so the run cannot swap. Must come after
            // limit_in_bytes: the kernel rejects memsw below the memory limit.
            if files.memsw {
                set(kernel, &dir, "memory.memsw.limit_in_bytes", &value)?;
            }
            limit_tcp_memory(kernel, &dir, files, &value)?;
        }
        if let Some(hierarchy) = pids {
            let dir = make_run_dir(kernel, hierarchy, name)?;
            run.push(Controller::Pids, dir.clone());
            set(kernel, &dir, "pids.max", &max_or(limits.pids))?;
        }
        if let Some(hierarchy) = cpu.filter(|_| limits.cpu_percent > 0) {
            let dir = make_run_dir(kernel, hierarchy, name)?;
            run.push(Controller::Cpu, dir.clone());
            weigh_parent(
                kernel,
                &hierarchy.join(PARENT),
                "cpu.shares",
                parent_cpu_weight().0,
            );
            set_cfs_quota(kernel, &dir, limits.cpu_percent)?;
        }
        Ok(())
    })();
    run.unless(result)
}

/// The optional files of a v1 memory group, looked up once when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemoryFiles {
    /// `memory.memsw.limit_in_bytes` (swap accounting is on).
    memsw: bool,
    /// `memory.kmem.tcp.limit_in_bytes`.
    tcp: bool,
}

impl MemoryFiles {
    pub(super) fn of(dir: &Path) -> MemoryFiles {
        MemoryFiles {
            memsw: dir.join("memory.memsw.limit_in_bytes").exists(),
            tcp: dir.join("memory.kmem.tcp.limit_in_bytes").exists(),
        }
    }
}

/// Sets a new memory limit on an existing v1 group whose files are `files` (its peak count
/// restarts with [`crate::peak::PeakCounter::v1`]). `last` is the limit the previous retune
/// set, if it succeeded: an equal limit is not written again, and memsw, which may never be
/// below limit_in_bytes, is raised first and lowered last. Without `last` the order is
/// found by trying.
pub(super) fn retune_memory(
    kernel: &dyn Kernel,
    dir: &Path,
    files: MemoryFiles,
    memory_bytes: u64,
    last: Option<u64>,
) -> Result<(), CgroupError> {
    // 0 is no limit: above every other.
    let order = |bytes: u64| if bytes == 0 { u64::MAX } else { bytes };
    let value = v1_memory(memory_bytes);
    let limit = |file| set(kernel, dir, file, &value);
    match last.map(|last| order(memory_bytes).cmp(&order(last))) {
        Some(std::cmp::Ordering::Equal) => return Ok(()),
        _ if !files.memsw => limit("memory.limit_in_bytes")?,
        Some(std::cmp::Ordering::Greater) => {
            limit("memory.memsw.limit_in_bytes")?;
            limit("memory.limit_in_bytes")?;
        }
        Some(std::cmp::Ordering::Less) => {
            limit("memory.limit_in_bytes")?;
            limit("memory.memsw.limit_in_bytes")?;
        }
        None => {
            if limit("memory.limit_in_bytes").is_err() {
                limit("memory.memsw.limit_in_bytes")?;
                limit("memory.limit_in_bytes")?;
            } else {
                limit("memory.memsw.limit_in_bytes")?;
            }
        }
    }
    limit_tcp_memory(kernel, dir, files, &value)
}

/// Counts the group's TCP socket buffers against `value` (cgroup v1 only: v2 charges socket
/// memory to `memory.current` by itself). Without it a run could queue hundreds of MiB in
/// socket buffers outside its memory limit.
fn limit_tcp_memory(
    kernel: &dyn Kernel,
    dir: &Path,
    files: MemoryFiles,
    value: &str,
) -> Result<(), CgroupError> {
    if files.tcp {
        set(kernel, dir, "memory.kmem.tcp.limit_in_bytes", value)?;
    }
    Ok(())
}

/// The run's CPU time per [`CPU_PERIOD_US`] (`-1` without a limit).
pub(super) fn set_cfs_quota(
    kernel: &dyn Kernel,
    dir: &Path,
    percent: u64,
) -> Result<(), CgroupError> {
    set(kernel, dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
    set(kernel, dir, "cpu.cfs_quota_us", &cfs_quota(percent))
}

/// Creates `<hierarchy>/hako` (idempotent) and `<hierarchy>/hako/<name>` (must be new).
fn make_run_dir(kernel: &dyn Kernel, hierarchy: &Path, name: &str) -> Result<PathBuf, CgroupError> {
    let parent = hierarchy.join(PARENT);
    create_dir_idempotent(kernel, &parent)?;
    let dir = parent.join(name);
    create_run_dir(kernel, &dir)?;
    Ok(dir)
}
