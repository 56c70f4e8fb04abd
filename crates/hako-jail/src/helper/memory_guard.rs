//! The memory guard: the supervisor's own per-run memory limit where no memory cgroup holds
//! the run (a user-namespaced pod whose cgroup is not delegated, `hako.cgroup_root` pointing
//! at no cgroup hierarchy).
//!
//! Every [`POLL_INTERVAL`] it sums, over the run's process tree, the private resident memory
//! (`RssAnon` + `RssShmem` of `/proc/<pid>/status`) and the page tables (`VmPTE`: reading one
//! byte every 2 MiB of a sparse mapping takes a 4 KiB page table and no resident page). The
//! tree is found from the run's pid 1 through `/proc/<pid>/task/<tid>/children` (orphans are
//! re-parented to that pid 1, so no process of the run leaves the tree; a zygote run is
//! pid 2 under a reaper that shares the zygote's memory, so there the run's tree and the
//! trees of the reaper's children count, not the reaper itself). To that it adds the
//! bytes queued in the sockets of the run's own network namespace, which belong to no
//! process: TCP and UDP (send and receive queues of `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`) and
//! unix sockets (the kernel's socket diagnostics through a socket the run's READY brings, see
//! [`super::unix_diag`]). Those are read
//! every [`SOCKET_INTERVAL`] from the run's first second on, so a short run never pays for
//! them. The run is killed once the sum passes the limit.
//!
//! It is a poll: a run can overshoot by what it allocates within one interval (for socket
//! queues, one [`SOCKET_INTERVAL`]), which the rlimits (`RLIMIT_AS` per process) and the pod's
//! own limit bound. Shared file pages (the interpreter, libraries) are not counted, so a run
//! of many forked processes is not charged the same library pages many times.
//!
//! What the sum cannot see is kept out of the run's reach or bounded instead: memfd pages,
//! which stay allocated after they are unmapped, are refused by the seccomp policy of a
//! guarded run (see `crate::seccomp::policy::MEMORY_GUARD`); `/tmp` and `/dev/shm` are tmpfs
//! mounts capped at the run's `tmp_mb` each; SysV shared memory is not in the policy. Pipe
//! buffers are not counted (see docs/security.md).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::unix_diag::UnixDiag;

/// How often the run's memory is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How often the socket queues of the run's network namespace are read, and how long after
/// the start they are first read.
pub const SOCKET_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many processes are read per poll (the pids rlimit keeps runs far below).
const MAX_PROCESSES: usize = 4096;

/// The socket tables of a network namespace whose queues the guard counts (the policy allows
/// TCP and UDP over IPv4 and IPv6, and unix sockets, which these tables do not show: those
/// are read through [`UnixDiag`]).
const SOCKET_TABLES: [&str; 4] = ["tcp", "tcp6", "udp", "udp6"];

/// Whether the guard already said that it cannot read unix sockets.
static UNIX_UNREADABLE_SAID: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the guard, rather than a memory cgroup, limits a run's memory: the run has a
/// memory limit and no memory cgroup holds it. Such a run's seccomp policy also refuses what
/// the guard cannot see (`crate::seccomp::policy::MEMORY_GUARD`).
pub fn guards(cgroup_limits_memory: bool, limit_bytes: u64) -> bool {
    !cgroup_limits_memory && limit_bytes > 0
}

/// The supervisor's memory limit of one run.
#[derive(Debug, Clone)]
pub struct MemoryGuard {
    limit_bytes: u64,
    root: Pid,
    /// Pid 1 of the run's pid namespace where that is not `root` (a zygote run's reaper):
    /// its children are the run's orphans.
    orphans_under: Option<Pid>,
    proc_root: PathBuf,
    peak_bytes: u64,
    sockets: SocketQueues,
}

/// The bytes last read from the run's socket tables, and when to read them again.
#[derive(Debug, Clone)]
struct SocketQueues {
    next_read: Instant,
    bytes: u64,
    /// Whether the run has a network namespace of its own; decided at the first read.
    own_namespace: Option<bool>,
    /// Whether to read the namespace's unix sockets (a real `/proc` only).
    read_unix: bool,
    /// The socket that reads them (made in the run, handed over with READY).
    unix: Option<std::sync::Arc<UnixDiag>>,
    /// The unix sockets' last good figure.
    unix_bytes: u64,
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
        guards(cgroup_limits_memory, limit_bytes).then(|| {
            let mut guard = MemoryGuard::with_proc(Path::new("/proc"), limit_bytes, root);
            guard.sockets.read_unix = true;
            guard
        })
    }

    /// A guard reading `proc_root` instead of `/proc` (tests).
    pub fn with_proc(proc_root: &Path, limit_bytes: u64, root: Pid) -> Self {
        MemoryGuard {
            limit_bytes,
            root,
            orphans_under: None,
            proc_root: proc_root.to_path_buf(),
            peak_bytes: 0,
            sockets: SocketQueues {
                next_read: Instant::now() + SOCKET_INTERVAL,
                bytes: 0,
                own_namespace: None,
                read_unix: false,
                unix: None,
                unix_bytes: 0,
            },
        }
    }

    /// Also counts the children of `reaper` (and their descendants), but not `reaper`.
    pub fn with_orphans_under(mut self, reaper: Pid) -> Self {
        self.orphans_under = Some(reaper);
        self
    }

    /// Reads the run's memory now; `Some` once it is over the limit.
    pub fn check(&mut self) -> Option<OverLimit> {
        self.check_at(Instant::now())
    }

    /// [`MemoryGuard::check`] at `now`: the socket queues are read again when they are due.
    fn check_at(&mut self, now: Instant) -> Option<OverLimit> {
        if now >= self.sockets.next_read {
            self.sockets.next_read = now + SOCKET_INTERVAL;
            self.sockets.bytes = self.socket_queues();
        }
        let used = self.usage().saturating_add(self.sockets.bytes);
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

    /// Private resident memory and page tables of the run's whole process tree, in bytes.
    pub fn usage(&self) -> u64 {
        let orphans = self
            .orphans_under
            .map(|reaper| process_tree(&self.proc_root, reaper.as_raw()))
            .unwrap_or_default();
        process_tree(&self.proc_root, self.root.as_raw())
            .into_iter()
            .chain(orphans.into_iter().skip(1))
            .map(|pid| private_resident(&self.proc_root, pid))
            .sum()
    }

    /// Bytes queued in the TCP, UDP and unix sockets of the run's network namespace; 0 when
    /// the run shares the supervisor's namespace (host network mode: those sockets are the
    /// host's, not the run's) or when that cannot be told.
    fn socket_queues(&mut self) -> u64 {
        let root = self.root.as_raw();
        let own = *self
            .sockets
            .own_namespace
            .get_or_insert_with(|| own_network_namespace(&self.proc_root, root));
        if !own {
            return 0;
        }
        let tables = SOCKET_TABLES
            .iter()
            .filter_map(|table| {
                fs::read_to_string(
                    self.proc_root
                        .join(root.to_string())
                        .join("net")
                        .join(table),
                )
                .ok()
            })
            .map(|text| queued_bytes(&text))
            .fold(0, u64::saturating_add);
        tables.saturating_add(self.unix_queues())
    }

    /// Bytes queued in the unix sockets of the run's network namespace: 0 without the
    /// sock_diag socket the run's READY brings, or when a dump fails (said once per process;
    /// the last good figure is kept then).
    fn unix_queues(&mut self) -> u64 {
        if !self.sockets.read_unix {
            return 0;
        }
        let read = match &self.sockets.unix {
            Some(diag) => diag.queued_bytes(),
            None => Err(std::io::Error::other("the run brought no sock_diag socket")),
        };
        match read {
            Ok(bytes) => {
                self.sockets.unix_bytes = bytes;
                bytes
            }
            Err(err) => {
                if !UNIX_UNREADABLE_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "hako jail: the memory guard cannot read a run's unix sockets: {err}"
                    );
                }
                self.sockets.unix_bytes
            }
        }
    }

    /// Takes the sock_diag socket of the run's network namespace (it comes with READY).
    pub(crate) fn take_unix_diag(&mut self, socket: std::os::fd::OwnedFd) {
        self.sockets.unix = Some(std::sync::Arc::new(UnixDiag::new(socket)));
    }
}

/// Whether `pid` is in a network namespace other than ours (both namespaces readable).
fn own_network_namespace(proc_root: &Path, pid: i32) -> bool {
    let ns = |who: &str| fs::read_link(proc_root.join(who).join("ns/net")).ok();
    match (ns(&pid.to_string()), ns("self")) {
        (Some(run), Some(ours)) => run != ours,
        _ => false,
    }
}

/// The sum of the send and receive queues (`tx_queue:rx_queue`, hex) of a
/// `/proc/net/{tcp,tcp6,udp,udp6}` table. A listening TCP socket's receive figure is its
/// accept backlog (connections, not bytes): skipped.
fn queued_bytes(table: &str) -> u64 {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(3);
            let state = fields.next()?;
            let (tx, rx) = fields.next()?.split_once(':')?;
            let tx = u64::from_str_radix(tx, 16).ok()?;
            let rx = u64::from_str_radix(rx, 16).ok()?;
            Some(if state == TCP_LISTEN { tx } else { tx + rx })
        })
        .fold(0, u64::saturating_add)
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

/// `RssAnon` + `RssShmem` + `VmPTE` of one process in bytes (0 when it is gone).
fn private_resident(proc_root: &Path, pid: i32) -> u64 {
    let Ok(status) = fs::read_to_string(proc_root.join(pid.to_string()).join("status")) else {
        return 0;
    };
    ["RssAnon:", "RssShmem:", "VmPTE:"]
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
        process_with_pte(proc_root, pid, tasks, anon_kib, shmem_kib, 0);
    }

    fn process_with_pte(
        proc_root: &Path,
        pid: i32,
        tasks: &[(i32, &str)],
        anon_kib: u64,
        shmem_kib: u64,
        pte_kib: u64,
    ) {
        let dir = proc_root.join(pid.to_string());
        for (tid, children) in tasks {
            let task = dir.join("task").join(tid.to_string());
            fs::create_dir_all(&task).unwrap();
            fs::write(task.join("children"), children).unwrap();
        }
        fs::write(
            dir.join("status"),
            format!(
                "Name:\tpython3\nVmRSS:\t999999 kB\nRssAnon:\t{anon_kib} kB\nRssFile:\t5000 kB\nRssShmem:\t{shmem_kib} kB\nVmPTE:\t{pte_kib} kB\nVmSwap:\t777 kB\n"
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

    /// A zygote run (2) is pid 2 under a reaper (1) that shares the zygote's memory: the
    /// orphans the reaper inherited (3, and 4 below it) count, the reaper and its other
    /// relatives (5, outside the run) do not.
    #[test]
    fn a_zygote_runs_orphans_count_and_its_reaper_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        process(p, 1, &[(1, "3 ")], 400_000, 0);
        process(p, 2, &[(2, "")], 100, 0);
        process(p, 3, &[(3, "4")], 1000, 0);
        process(p, 4, &[(4, "")], 2000, 8);
        process(p, 5, &[(5, "")], 50_000, 0);
        let guard = MemoryGuard::with_proc(p, 1 << 30, Pid::from_raw(2));
        assert_eq!(guard.usage(), 100 * 1024);
        let guard = guard.with_orphans_under(Pid::from_raw(1));
        assert_eq!(guard.usage(), (100 + 1000 + 2000 + 8) * 1024);
    }

    /// Page tables are memory of the run that no resident figure shows: a sparse mapping
    /// read once every 2 MiB takes a page table per 2 MiB and no resident page.
    #[test]
    fn page_tables_count() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        process_with_pte(p, 10, &[(10, "11")], 100, 0, 200_000);
        process_with_pte(p, 11, &[(11, "")], 100, 50, 300);
        let mut guard = MemoryGuard::with_proc(p, 128 << 20, Pid::from_raw(10));
        assert_eq!(guard.usage(), (100 + 200_000 + 100 + 50 + 300) * 1024);
        assert!(
            guard.check().is_some(),
            "200 MB of page tables pass 128 MiB"
        );
    }

    /// The socket tables of the run's namespace: `ns/net` of the run and of `self`, and the
    /// run's `net/<table>` files.
    fn namespace(proc_root: &Path, pid: i32, run_ns: &str, our_ns: &str, tables: &[(&str, &str)]) {
        for (who, ns) in [(pid.to_string(), run_ns), ("self".to_string(), our_ns)] {
            let dir = proc_root.join(who).join("ns");
            fs::create_dir_all(&dir).unwrap();
            let link = dir.join("net");
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(ns, &link).unwrap();
        }
        let net = proc_root.join(pid.to_string()).join("net");
        fs::create_dir_all(&net).unwrap();
        for (table, text) in tables {
            fs::write(net.join(table), text).unwrap();
        }
    }

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn tcp_line(state: &str, tx: u64, rx: u64) -> String {
        format!(
            "   0: 0100007F:A1B2 0100007F:0CEA {state} {tx:08X}:{rx:08X} 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1\n"
        )
    }

    #[test]
    fn queued_bytes_sums_send_and_receive_queues_but_not_backlogs() {
        let tcp = format!(
            "{TCP_HEADER}{}{}{}{}",
            tcp_line("0A", 0, 7),
            tcp_line("01", 0x1000, 0x30_0000),
            tcp_line("01", 0x20, 0),
            tcp_line("06", 0, 0),
        );
        assert_eq!(queued_bytes(&tcp), 0x1000 + 0x30_0000 + 0x20);
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 123: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 1234 2 0000000000000000 5\n";
        assert_eq!(queued_bytes(udp6), 0x34000);
        assert_eq!(queued_bytes("header only\n"), 0);
        assert_eq!(queued_bytes("header\n garbage: x y z\n"), 0);
    }

    #[test]
    fn socket_queues_of_the_runs_namespace_count_from_its_first_second() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        process(p, 10, &[(10, "")], 1024, 0);
        let queued = |mib: u64| format!("{TCP_HEADER}{}", tcp_line("01", 0, mib << 20));
        namespace(
            p,
            10,
            "net:[4026532999]",
            "net:[4026531840]",
            &[
                ("tcp", &queued(100)),
                ("udp6", &queued(20)),
                ("tcp6", ""),
                ("udp", ""),
            ],
        );
        let start = Instant::now();
        let mut guard = MemoryGuard::with_proc(p, 64 << 20, Pid::from_raw(10));
        // The first second is not read: a short run never pays for the tables.
        assert_eq!(guard.check_at(start), None);
        let later = start + SOCKET_INTERVAL + Duration::from_millis(100);
        assert_eq!(
            guard.check_at(later),
            Some(OverLimit {
                used_bytes: (1 << 20) + (120 << 20),
                limit_bytes: 64 << 20
            })
        );
        // Read again only a second later; in between the last reading counts.
        namespace(
            p,
            10,
            "net:[4026532999]",
            "net:[4026531840]",
            &[("tcp", &queued(1)), ("udp6", "")],
        );
        assert!(guard.check_at(later + Duration::from_millis(500)).is_some());
        assert_eq!(guard.check_at(later + SOCKET_INTERVAL), None);
        assert_eq!(guard.peak_bytes(), (1 << 20) + (120 << 20));
    }

    /// A run in the host's network namespace (host network mode): those sockets are not the
    /// run's, and neither is a namespace the guard cannot tell apart.
    #[test]
    fn sockets_of_a_shared_or_unknown_namespace_are_not_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        process(p, 10, &[(10, "")], 1024, 0);
        let table = format!("{TCP_HEADER}{}", tcp_line("01", 0, 100 << 20));
        namespace(
            p,
            10,
            "net:[4026531840]",
            "net:[4026531840]",
            &[("tcp", &table)],
        );
        let start = Instant::now();
        let mut guard = MemoryGuard::with_proc(p, 64 << 20, Pid::from_raw(10));
        assert_eq!(guard.check_at(start + 2 * SOCKET_INTERVAL), None);
        fs::remove_file(p.join("self/ns/net")).unwrap();
        let mut guard = MemoryGuard::with_proc(p, 64 << 20, Pid::from_raw(10));
        assert_eq!(guard.check_at(start + 2 * SOCKET_INTERVAL), None);
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
