//! The memory guard: the supervisor's own per-run memory limit where no memory cgroup holds
//! the run (a user-namespaced pod whose cgroup is not delegated, `hako.cgroup_root` pointing
//! at no cgroup hierarchy).
//!
//! Every [`POLL_INTERVAL`] it sums the private resident memory (`RssAnon` + `RssShmem` of
//! `/proc/<pid>/status`) of the run's process tree, found from the run's pid 1 through
//! `/proc/<pid>/task/<tid>/children` (orphans are re-parented to that pid 1, so no process of
//! the run leaves the tree), and has the run killed once the sum passes the limit. It is a
//! poll: a run can overshoot by what it allocates within one interval, which the rlimits
//! (`RLIMIT_AS` per process) and the pod's own limit bound. Shared file pages (the
//! interpreter, libraries) are not counted, so a run of many forked processes is not charged
//! the same library pages many times.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;

/// How often the run's memory is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// At most this many processes are read per poll (the pids rlimit keeps runs far below).
const MAX_PROCESSES: usize = 4096;

/// The supervisor's memory limit of one run.
#[derive(Debug, Clone)]
pub struct MemoryGuard {
    limit_bytes: u64,
    root: Pid,
    proc_root: PathBuf,
    peak_bytes: u64,
}

/// What the guard saw when the run went over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

impl MemoryGuard {
    /// A guard for the run whose pid 1 (host pid) is `root`, unless a memory cgroup already
    /// limits it or it has no memory limit.
    pub fn for_run(cgroup_limits_memory: bool, limit_bytes: u64, root: Pid) -> Option<Self> {
        (!cgroup_limits_memory && limit_bytes > 0)
            .then(|| MemoryGuard::with_proc(Path::new("/proc"), limit_bytes, root))
    }

    /// A guard reading `proc_root` instead of `/proc` (tests).
    pub fn with_proc(proc_root: &Path, limit_bytes: u64, root: Pid) -> Self {
        MemoryGuard {
            limit_bytes,
            root,
            proc_root: proc_root.to_path_buf(),
            peak_bytes: 0,
        }
    }

    /// Reads the run's memory now; `Some` once it is over the limit.
    pub fn check(&mut self) -> Option<OverLimit> {
        let used = self.usage();
        self.peak_bytes = self.peak_bytes.max(used);
        (used > self.limit_bytes).then_some(OverLimit {
            used_bytes: used,
            limit_bytes: self.limit_bytes,
        })
    }

    /// The largest sum seen so far.
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes
    }

    /// Private resident memory of the run's whole process tree, in bytes.
    pub fn usage(&self) -> u64 {
        process_tree(&self.proc_root, self.root.as_raw())
            .into_iter()
            .map(|pid| private_resident(&self.proc_root, pid))
            .sum()
    }
}

/// `root` and its descendants (every thread's children), breadth first, at most
/// [`MAX_PROCESSES`]. Processes that end meanwhile are skipped.
fn process_tree(proc_root: &Path, root: i32) -> Vec<i32> {
    let mut seen = BTreeSet::from([root]);
    let mut order = vec![root];
    let mut next = 0;
    while next < order.len() && order.len() < MAX_PROCESSES {
        let pid = order[next];
        next += 1;
        let Ok(tasks) = fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if seen.insert(child) {
                    order.push(child);
                }
            }
        }
    }
    order
}

/// `RssAnon` + `RssShmem` of one process in bytes (0 when it is gone).
fn private_resident(proc_root: &Path, pid: i32) -> u64 {
    let Ok(status) = fs::read_to_string(proc_root.join(pid.to_string()).join("status")) else {
        return 0;
    };
    ["RssAnon:", "RssShmem:"]
        .iter()
        .filter_map(|key| kib_field(&status, key))
        .sum::<u64>()
        * 1024
}

/// The number of a `Key:   N kB` line of `/proc/<pid>/status`.
fn kib_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(proc_root: &Path, pid: i32, tasks: &[(i32, &str)], anon_kib: u64, shmem_kib: u64) {
        let dir = proc_root.join(pid.to_string());
        for (tid, children) in tasks {
            let task = dir.join("task").join(tid.to_string());
            fs::create_dir_all(&task).unwrap();
            fs::write(task.join("children"), children).unwrap();
        }
        fs::write(
            dir.join("status"),
            format!(
                "Name:\tpython3\nVmRSS:\t999999 kB\nRssAnon:\t{anon_kib} kB\nRssFile:\t5000 kB\nRssShmem:\t{shmem_kib} kB\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn sums_the_private_memory_of_the_whole_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        // 10 is the run's pid 1; 11 has two threads, each with a child; 14 is outside the run.
        process(p, 10, &[(10, "11 ")], 100, 0);
        process(p, 11, &[(11, "12"), (15, "13 ")], 1000, 24);
        process(p, 12, &[(12, "")], 2000, 0);
        process(p, 13, &[(13, "")], 3000, 0);
        process(p, 14, &[(14, "")], 50_000, 0);
        let guard = MemoryGuard::with_proc(p, 1 << 30, Pid::from_raw(10));
        assert_eq!(guard.usage(), (100 + 1000 + 24 + 2000 + 3000) * 1024);
    }

    #[test]
    fn over_the_limit_only_past_it_and_peak_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        process(p, 10, &[(10, "")], 1024, 0);
        let mut guard = MemoryGuard::with_proc(p, 1 << 20, Pid::from_raw(10));
        assert_eq!(guard.check(), None, "exactly at the limit is allowed");
        process(p, 10, &[(10, "")], 1025, 0);
        assert_eq!(
            guard.check(),
            Some(OverLimit {
                used_bytes: 1025 * 1024,
                limit_bytes: 1 << 20
            })
        );
        process(p, 10, &[(10, "")], 1, 0);
        assert_eq!(guard.check(), None);
        assert_eq!(guard.peak_bytes(), 1025 * 1024);
    }

    #[test]
    fn a_gone_run_uses_nothing_and_a_cycle_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        assert_eq!(
            MemoryGuard::with_proc(p, 1, Pid::from_raw(77)).usage(),
            0,
            "no such process"
        );
        // A pid reused while reading must not loop forever.
        process(p, 20, &[(20, "21")], 1, 0);
        process(p, 21, &[(21, "20")], 1, 0);
        assert_eq!(process_tree(p, 20), vec![20, 21]);
    }

    #[test]
    fn no_guard_under_a_memory_cgroup_or_without_a_limit() {
        let pid = Pid::from_raw(1);
        assert!(MemoryGuard::for_run(true, 1 << 20, pid).is_none());
        assert!(MemoryGuard::for_run(false, 0, pid).is_none());
        assert!(MemoryGuard::for_run(false, 1 << 20, pid).is_some());
    }

    /// The real /proc: this test process's tree holds at least what it allocates.
    #[test]
    fn real_proc_counts_a_child_allocation() {
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys, time; b = bytearray(64 << 20); print(1, flush=True); time.sleep(30)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let me = Pid::from_raw(std::process::id() as i32);
        let used = MemoryGuard::with_proc(Path::new("/proc"), 1, me).usage();
        let _ = child.kill();
        let _ = child.wait();
        assert!(used >= 64 << 20, "counted {used} bytes");
    }
}
