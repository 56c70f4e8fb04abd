//! The numbers: limits as control file values, and the zygote's group limits around a run.

use super::{CgroupLimits, CgroupUsage};
use hako_wire::spec::{CgroupCoverage, Limits};
use hako_wire::Language;

/// The CFS period the CPU quota is expressed in (the kernel's default, 100 ms).
pub(super) const CPU_PERIOD_US: u64 = 100_000;

/// The quota for `percent` of one CPU per [`CPU_PERIOD_US`].
fn cpu_quota_us(percent: u64) -> u64 {
    (percent * CPU_PERIOD_US / 100).max(1000)
}

/// v1 `cpu.cfs_quota_us`: the run's CPU time per [`CPU_PERIOD_US`] (`-1` without a limit).
pub(super) fn cfs_quota(percent: u64) -> String {
    if percent == 0 {
        "-1".to_string()
    } else {
        cpu_quota_us(percent).to_string()
    }
}

/// v2 `cpu.max`: "quota period", or "max period" without a limit.
pub(super) fn cpu_max(percent: u64) -> String {
    if percent == 0 {
        format!("max {CPU_PERIOD_US}")
    } else {
        format!("{} {CPU_PERIOD_US}", cpu_quota_us(percent))
    }
}

/// The weight of the `hako` parent group in the cpu controller, as many ordinary tasks as
/// this machine has CPUs: `(v1 cpu.shares, v2 cpu.weight)`. The quota is a ceiling per run;
/// left at the default weight, the parent would weigh as one task, and on a busy host every
/// run of hako together would get one task's share of the CPUs.
pub(super) fn parent_cpu_weight() -> (u64, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    (1024 * cpus, (100 * cpus).min(10_000))
}

/// v1 `memory.limit_in_bytes` (`-1` without a limit).
pub(super) fn v1_memory(bytes: u64) -> String {
    if bytes == 0 {
        "-1".to_string()
    } else {
        bytes.to_string()
    }
}

/// `pids.max`, v2 `memory.max` (`max` without a limit).
pub(super) fn max_or(value: u64) -> String {
    if value == 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// What rlimits stand in for a limit no cgroup covers on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitFallback {
    /// `RLIMIT_NPROC` (counted per uid: each run has its own).
    pub processes: Option<u64>,
    /// `RLIMIT_AS`: for Python only (Node reserves far more address space than it uses), and
    /// never below 256 MiB, which the interpreter needs to start.
    pub address_space: Option<u64>,
}

/// The rlimits a run gets for the limits its cgroup does not cover.
pub fn rlimit_fallback(
    limits: &Limits,
    coverage: CgroupCoverage,
    language: Language,
) -> RlimitFallback {
    RlimitFallback {
        processes: (!coverage.pids).then_some(limits.pids),
        address_space: (!coverage.memory && language == Language::Python3)
            .then(|| limits.memory_bytes.max(256 << 20)),
    }
}

/// The limits of a zygote's group for its next run. The run child lives in the zygote's own
/// group (no migration), so the group may hold what is in use now (`in_use`, without the
/// `zombies` the zygote has yet to reap), plus the run's limits, plus room for the next
/// prepared child (`prepared_bytes`), which is forked while this one runs. The run's own
/// task and its pid namespace's reaper are already in use; the next child takes the run's
/// place in the count, and the next reaper one more. A run limit of 0 stays 0 (no limit).
pub fn zygote_headroom(
    in_use: CgroupUsage,
    zombies: u64,
    run: &CgroupLimits,
    prepared_bytes: u64,
) -> CgroupLimits {
    let above = |used: u64, limit: u64, room: u64| {
        if limit == 0 {
            0
        } else {
            used + limit + room
        }
    };
    CgroupLimits {
        memory_bytes: above(in_use.memory_bytes, run.memory_bytes, prepared_bytes),
        pids: above(in_use.tasks.saturating_sub(zombies), run.pids, 1),
        cpu_percent: run.cpu_percent,
    }
}
