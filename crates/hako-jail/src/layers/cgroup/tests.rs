//! The cgroup driver against a temp dir: the recording kernel acts like cgroupfs there (a new
//! group gets its control files) and writes down every mkdir, write, kill and rmdir.

use super::*;
use crate::sys::record::Recorder;
use std::process::Command;

fn touch(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Fills a new group like cgroupfs does on mkdir.
fn kernel_files(dir: &Path, memsw: bool) {
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

/// A fake cgroup root and the recording kernel acting on it.
struct Host {
    dir: tempfile::TempDir,
    kernel: &'static Recorder,
}

impl Host {
    fn new(memsw: bool) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Recorder::over(dir.path())
            .on_mkdir(move |d| kernel_files(d, memsw))
            .leak();
        Host { dir, kernel }
    }

    /// A v1 host: memory, pids and cpu hierarchies.
    fn v1(memsw: bool) -> Host {
        let host = Host::new(memsw);
        let root = host.root();
        touch(&root.join("memory/cgroup.procs"), "");
        touch(&root.join("memory/memory.limit_in_bytes"), "");
        touch(&root.join("pids/cgroup.procs"), "");
        touch(&root.join("cpu/cgroup.procs"), "");
        touch(&root.join("cpu/cpu.cfs_quota_us"), "");
        host
    }

    /// A v2 host whose root group holds `root_procs`.
    fn v2(root_procs: &str) -> Host {
        let host = Host::new(false);
        let root = host.root();
        touch(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        touch(&root.join("cgroup.subtree_control"), "");
        touch(&root.join("cgroup.procs"), root_procs);
        host
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn cgroups(&self) -> Cgroups {
        Cgroups::detect_with(self.root(), self.kernel)
    }

    /// Every call so far, forgotten then.
    fn calls(&self) -> Vec<String> {
        self.kernel.take()
    }

    /// The writes that took effect so far as `file=value` (other calls are dropped).
    fn writes(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter_map(|call| {
                let rest = call.strip_prefix("write ")?.strip_suffix('"')?;
                let (path, value) = rest.split_once(' ')?;
                let name = Path::new(path).file_name()?.to_string_lossy().into_owned();
                Some(format!("{name}={}", value.strip_prefix('"')?))
            })
            .collect()
    }
}

const LIMITS: CgroupLimits = CgroupLimits {
    memory_bytes: 64 << 20,
    pids: 16,
    cpu_percent: 0,
};

/// `limits` with a memory limit of `mib` MiB (0: none).
fn with_memory(limits: CgroupLimits, mib: u64) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: mib << 20,
        ..limits
    }
}

#[test]
fn stale_groups_of_live_helpers_are_kept() {
    let host = Host::v1(false);
    let tmp = &host.dir;
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
    let removed = host.cgroups().remove_stale();
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
    let host = Host::v1(false);
    let tmp = &host.dir;
    // A unified mount without controllers does not count.
    touch(&tmp.path().join("unified/cgroup.controllers"), "");
    let support = host.cgroups().support();
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
    let host = Host::v2("");
    let support = host.cgroups().support();
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

    let empty = Host::new(false);
    let cg = empty.cgroups();
    let support = cg.support();
    assert_eq!(support.version, None);
    assert!(!support.memory && !support.pids);
    assert!(support.detail.starts_with("none"), "{}", support.detail);
    let err = cg.create_run("x", &LIMITS).unwrap_err();
    assert!(matches!(err, CgroupError::Unavailable { .. }), "{err}");
}

#[test]
fn bad_run_names_are_refused() {
    let host = Host::v1(false);
    let cg = host.cgroups();
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
    let host = Host::v1(true);
    let root = host.root();
    let cg = host.cgroups();
    let run = cg.create_run("run1", &LIMITS).unwrap();
    assert_eq!(
        host.writes(),
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
    let host = Host::v1(false);
    let root = host.root();
    let limits = CgroupLimits {
        cpu_percent: 150,
        ..LIMITS
    };
    let run = host.cgroups().create_run("r", &limits).unwrap();
    assert_eq!(
        host.writes(),
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
    assert!(host.writes().contains(&"cpu.cfs_quota_us=-1".to_string()));
}

#[test]
fn v1_without_swap_accounting_and_unlimited_values() {
    let host = Host::v1(false);
    let unlimited = CgroupLimits {
        memory_bytes: 0,
        pids: 0,
        cpu_percent: 0,
    };
    host.cgroups().create_run("r", &unlimited).unwrap();
    assert_eq!(
        host.writes(),
        vec!["memory.limit_in_bytes=-1", "pids.max=max"]
    );
}

#[test]
fn v1_retunes_without_swap_accounting_write_the_memory_limit_alone() {
    let host = Host::v1(false);
    let run = host.cgroups().create_run("r", &LIMITS).unwrap();
    let memory = |mib: u64| with_memory(LIMITS, mib);
    let limit = |value: &str| {
        vec![format!(
            "write $ROOT/memory/hako/r/memory.limit_in_bytes \"{value}\""
        )]
    };
    run.retune(&memory(64)).unwrap();
    host.calls();
    for (mib, value) in [(96, "100663296"), (32, "33554432"), (0, "-1")] {
        run.retune(&memory(mib)).unwrap();
        assert_eq!(host.calls(), limit(value), "{mib} MiB");
    }
}

#[test]
fn after_a_failed_memory_retune_the_next_finds_the_order_again() {
    let host = Host::v1(true);
    let run = host.cgroups().create_run("r", &LIMITS).unwrap();
    let memory = |mib: u64| with_memory(LIMITS, mib);
    run.retune(&memory(64)).unwrap();
    host.calls();
    // Lowering: limit_in_bytes went through, memsw did not.
    host.kernel.fail(
        "write $ROOT/memory/hako/r/memory.memsw.limit_in_bytes",
        Errno::EBUSY,
    );
    assert!(run.retune(&memory(32)).is_err());
    host.calls();
    // The same limits again are all written again, limit_in_bytes first (it is accepted).
    run.retune(&memory(32)).unwrap();
    assert_eq!(
        host.calls(),
        [
            "write $ROOT/memory/hako/r/memory.limit_in_bytes \"33554432\"",
            "write $ROOT/memory/hako/r/memory.memsw.limit_in_bytes \"33554432\"",
            "write $ROOT/memory/hako/r/memory.kmem.tcp.limit_in_bytes \"33554432\"",
            "write $ROOT/pids/hako/r/pids.max \"16\"",
        ]
    );
}

#[test]
fn v1_stats_read_oom_control_failcnt_and_pids_events() {
    let host = Host::v1(true);
    let tmp = &host.dir;
    let run = host.cgroups().create_run("s", &LIMITS).unwrap();
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
    // The descriptors stay open; every read is of the file as it is now, a long one whole.
    let padding = format!("{}\n", "x".repeat(2000));
    touch(
        &mem.join("memory.oom_control"),
        &format!("{padding}oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
    );
    touch(&mem.join("memory.failcnt"), "10\n");
    touch(&pids.join("pids.events"), "max 5\n");
    let stats = run.stats();
    assert_eq!(stats.oom_kills, 3);
    assert_eq!(stats.memory_limit_hits, 10);
    assert_eq!(stats.pids_limit_hits, 5);
    touch(&mem.join("memory.usage_in_bytes"), "4096\n");
    touch(&pids.join("pids.current"), "3\n");
    assert_eq!(
        run.usage(),
        CgroupUsage {
            memory_bytes: 4096,
            tasks: 3
        }
    );
    touch(&mem.join("memory.usage_in_bytes"), "8192\n");
    assert_eq!(run.usage().memory_bytes, 8192);
}

#[test]
fn a_retune_writes_only_the_limits_that_changed_since_the_last() {
    let host = Host::v1(true);
    let limits = CgroupLimits {
        cpu_percent: 50,
        ..LIMITS
    };
    let run = host.cgroups().create_run("r", &limits).unwrap();
    host.calls();
    // The first retune writes everything.
    run.retune(&limits).unwrap();
    assert_eq!(
        host.calls().len(),
        6,
        "memory, memsw, tcp, pids, cfs period, cfs quota"
    );
    run.retune(&limits).unwrap();
    assert_eq!(host.calls(), Vec::<String>::new());
    // A higher memory limit raises memsw first, a lower one lowers it last: the kernel
    // refuses memsw below limit_in_bytes.
    let memory = |mib: u64| with_memory(limits, mib);
    let writes = |value: &str, order: [&str; 2]| {
        order
            .iter()
            .chain(&["kmem.tcp."])
            .map(|file| {
                format!("write $ROOT/memory/hako/r/memory.{file}limit_in_bytes \"{value}\"")
            })
            .collect::<Vec<_>>()
    };
    run.retune(&memory(96)).unwrap();
    assert_eq!(host.calls(), writes("100663296", ["memsw.", ""]));
    run.retune(&memory(32)).unwrap();
    assert_eq!(host.calls(), writes("33554432", ["", "memsw."]));
    // No limit (0, written -1) is above every limit.
    run.retune(&memory(0)).unwrap();
    assert_eq!(host.calls(), writes("-1", ["memsw.", ""]));
    run.retune(&memory(96)).unwrap();
    assert_eq!(host.calls(), writes("100663296", ["", "memsw."]));
    let fewer_pids_no_quota = CgroupLimits {
        pids: 20,
        cpu_percent: 0,
        ..limits
    };
    let sets_pids =
        |calls: &[String]| calls.contains(&"write $ROOT/pids/hako/r/pids.max \"20\"".to_string());
    run.retune(&fewer_pids_no_quota).unwrap();
    let calls = host.calls();
    assert!(sets_pids(&calls), "{calls:?}");
    assert!(
        calls.contains(&"write $ROOT/cpu/hako/r/cpu.cfs_quota_us \"-1\"".to_string()),
        "{calls:?}"
    );
    // A failed retune is written again in full the next time.
    host.kernel
        .fail("write $ROOT/pids/hako/r/pids.max", Errno::EINVAL);
    let higher = CgroupLimits { pids: 30, ..limits };
    assert!(run.retune(&higher).is_err());
    host.calls();
    run.retune(&fewer_pids_no_quota).unwrap();
    let calls = host.calls();
    assert!(sets_pids(&calls), "{calls:?}");
}

#[test]
fn a_v2_retune_writes_only_the_limits_that_changed_since_the_last() {
    let host = Host::v2("");
    let run = host.cgroups().create_run("r", &LIMITS).unwrap();
    run.retune(&LIMITS).unwrap();
    host.calls();
    run.retune(&LIMITS).unwrap();
    assert_eq!(host.calls(), Vec::<String>::new());
    run.retune(&with_memory(LIMITS, 32)).unwrap();
    assert_eq!(host.calls(), ["write $ROOT/hako/r/memory.max \"33554432\""]);
}

#[test]
fn v2_enables_controllers_then_writes_limits() {
    let host = Host::v2("");
    let root = host.root();
    let run = host.cgroups().create_run("r", &LIMITS).unwrap();
    assert_eq!(
        host.writes(),
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
    host.cgroups().create_run("r2", &LIMITS).unwrap();
    assert_eq!(host.writes()[0], "memory.max=67108864");

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
    let host = Host::v2("100\n");
    let root = host.root();
    host.kernel
        .fail("write $ROOT/cgroup.subtree_control", Errno::EBUSY);
    host.cgroups().create_run("r", &LIMITS).unwrap();
    let writes = host.writes();
    assert_eq!(writes[0], "cgroup.procs=100", "{writes:?}");
    assert_eq!(writes[1], "cgroup.subtree_control=+memory +pids");
    assert_eq!(
        fs::read_to_string(root.join("hako-server/cgroup.procs")).unwrap(),
        "100"
    );
}

#[test]
fn v2_busy_parent_is_a_clear_error() {
    let host = Host::v2("");
    host.kernel
        .fail("write $ROOT/hako/cgroup.subtree_control", Errno::EBUSY);
    let err = host.cgroups().create_run("r", &LIMITS).unwrap_err();
    assert!(
        matches!(err, CgroupError::InternalProcesses { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no internal processes"), "{err}");
    assert!(err.to_string().contains("/hako"), "{err}");
}

#[test]
fn failed_limit_names_the_file_and_value() {
    let host = Host::v2("");
    host.kernel
        .fail("write $ROOT/hako/r/pids.max", Errno::EINVAL);
    let err = host.cgroups().create_run("r", &LIMITS).unwrap_err();
    match &err {
        CgroupError::SetLimit { path, value, .. } => {
            assert!(path.ends_with("hako/r/pids.max"));
            assert_eq!(value, "16");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn v1_create_limit_remove_sequence() {
    let host = Host::v1(true);
    let limits = CgroupLimits {
        cpu_percent: 50,
        ..LIMITS
    };
    let run = host.cgroups().create_run("r", &limits).unwrap();
    assert_eq!(
        host.calls(),
        [
            "mkdir $ROOT/memory/hako",
            "mkdir $ROOT/memory/hako/r",
            "write $ROOT/memory/hako/r/memory.limit_in_bytes \"67108864\"",
            "write $ROOT/memory/hako/r/memory.memsw.limit_in_bytes \"67108864\"",
            "write $ROOT/memory/hako/r/memory.kmem.tcp.limit_in_bytes \"67108864\"",
            "mkdir $ROOT/pids/hako",
            "mkdir $ROOT/pids/hako/r",
            "write $ROOT/pids/hako/r/pids.max \"16\"",
            "mkdir $ROOT/cpu/hako",
            "mkdir $ROOT/cpu/hako/r",
            "write $ROOT/cpu/hako/r/cpu.cfs_period_us \"100000\"",
            "write $ROOT/cpu/hako/r/cpu.cfs_quota_us \"50000\"",
        ]
    );
    // A zygote's group between runs: memsw is raised before limit_in_bytes when the new
    // limit is higher than what the kernel accepts first.
    host.kernel.fail(
        "write $ROOT/memory/hako/r/memory.limit_in_bytes",
        Errno::EINVAL,
    );
    run.retune(&CgroupLimits {
        memory_bytes: 128 << 20,
        pids: 0,
        cpu_percent: 0,
    })
    .unwrap();
    assert_eq!(
        host.calls(),
        [
            "write $ROOT/memory/hako/r/memory.limit_in_bytes \"134217728\" = EINVAL",
            "write $ROOT/memory/hako/r/memory.memsw.limit_in_bytes \"134217728\"",
            "write $ROOT/memory/hako/r/memory.limit_in_bytes \"134217728\"",
            "write $ROOT/memory/hako/r/memory.kmem.tcp.limit_in_bytes \"134217728\"",
            "write $ROOT/pids/hako/r/pids.max \"max\"",
            "write $ROOT/cpu/hako/r/cpu.cfs_period_us \"100000\"",
            "write $ROOT/cpu/hako/r/cpu.cfs_quota_us \"-1\"",
        ]
    );
    let paths = run.paths();
    // Empty groups: nothing to kill, each is removed.
    run.remove().unwrap();
    assert_eq!(
        host.calls(),
        [
            "rmdir $ROOT/memory/hako/r",
            "rmdir $ROOT/pids/hako/r",
            "rmdir $ROOT/cpu/hako/r",
        ]
    );
    assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
}

#[test]
fn v2_create_limit_remove_sequence() {
    let host = Host::v2("");
    let root = host.root();
    let run = host.cgroups().create_run("r", &LIMITS).unwrap();
    assert_eq!(
        host.calls(),
        [
            "write $ROOT/cgroup.subtree_control \"+memory +pids\"",
            "mkdir $ROOT/hako",
            "write $ROOT/hako/cgroup.subtree_control \"+memory +pids\"",
            "mkdir $ROOT/hako/r",
            "write $ROOT/hako/r/memory.max \"67108864\"",
            "write $ROOT/hako/r/memory.swap.max \"0\"",
            "write $ROOT/hako/r/pids.max \"16\"",
        ]
    );
    run.add_pid(77).unwrap();
    assert_eq!(host.calls(), ["write $ROOT/hako/r/cgroup.procs \"77\""]);
    run.retune(&CgroupLimits {
        memory_bytes: 0,
        pids: 32,
        cpu_percent: 0,
    })
    .unwrap();
    assert_eq!(
        host.calls(),
        [
            "write $ROOT/hako/r/memory.max \"max\"",
            "write $ROOT/hako/r/pids.max \"32\"",
        ]
    );
    // The kernel's group empties itself once its process is killed; here it is emptied by hand.
    fs::write(root.join("hako/r/cgroup.procs"), "").unwrap();
    touch(&root.join("hako/r/cgroup.kill"), "");
    run.remove().unwrap();
    assert_eq!(
        host.calls(),
        ["write $ROOT/hako/r/cgroup.kill \"1\"", "rmdir $ROOT/hako/r"]
    );
    assert!(!root.join("hako/r").exists());
}

#[test]
fn remove_kills_every_listed_process_first() {
    let host = Host::v2("");
    let run = host.cgroups().create_run("r", &LIMITS).unwrap();
    run.add_pid(77).unwrap();
    host.calls();
    // The recording kernel's kill has no effect: the process stays, and removal gives up
    // with an error naming it instead of removing a group that still holds a process.
    let err = run.remove().unwrap_err();
    assert!(
        matches!(&err, CgroupError::KillTimeout { remaining, .. } if remaining == &[77]),
        "{err}"
    );
    let calls = host.calls();
    assert_eq!(calls.len(), KILL_ROUNDS as usize, "{calls:?}");
    assert!(calls.iter().all(|c| c == "kill 77 SIGKILL"), "{calls:?}");
}

#[test]
fn a_failed_v1_limit_removes_the_groups_made_so_far() {
    let host = Host::v1(false);
    host.kernel
        .fail("write $ROOT/pids/hako/r/pids.max", Errno::EINVAL);
    let err = host.cgroups().create_run("r", &LIMITS).unwrap_err();
    assert!(matches!(err, CgroupError::SetLimit { .. }), "{err}");
    let calls = host.calls();
    assert_eq!(
        calls[calls.len() - 3..],
        [
            "write $ROOT/pids/hako/r/pids.max \"16\" = EINVAL",
            "rmdir $ROOT/memory/hako/r",
            "rmdir $ROOT/pids/hako/r",
        ]
    );
    assert!(!host.root().join("memory/hako/r").exists());
    assert!(!host.root().join("pids/hako/r").exists());
}

#[test]
fn a_failed_v2_limit_removes_the_group() {
    let host = Host::v2("");
    host.kernel
        .fail("write $ROOT/hako/r/memory.max", Errno::EINVAL);
    let err = host.cgroups().create_run("r", &LIMITS).unwrap_err();
    assert!(matches!(err, CgroupError::SetLimit { .. }), "{err}");
    let calls = host.calls();
    assert_eq!(
        calls[calls.len() - 3..],
        [
            "mkdir $ROOT/hako/r",
            "write $ROOT/hako/r/memory.max \"67108864\" = EINVAL",
            "rmdir $ROOT/hako/r",
        ]
    );
    assert!(!host.root().join("hako/r").exists());
    // The shared parent stays for the next run.
    assert!(host.root().join("hako").is_dir());
}

#[test]
fn zygote_headroom_is_in_use_plus_the_run_plus_the_next_child() {
    let in_use = CgroupUsage {
        memory_bytes: 100,
        tasks: 3,
    };
    let run = CgroupLimits {
        memory_bytes: 1000,
        pids: 10,
        cpu_percent: 50,
    };
    assert_eq!(
        zygote_headroom(in_use, 1, &run, 7),
        CgroupLimits {
            memory_bytes: 1107,
            pids: 13,
            cpu_percent: 50,
        }
    );
    let unlimited = CgroupLimits {
        memory_bytes: 0,
        pids: 0,
        cpu_percent: 0,
    };
    assert_eq!(zygote_headroom(in_use, 0, &unlimited, 7), unlimited);
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

#[test]
fn rlimits_stand_in_only_for_what_no_cgroup_covers() {
    let limits = crate::testing::spec(Path::new("/")).limits;
    let none = hako_wire::spec::CgroupCoverage::default();
    let python = hako_wire::Language::Python3;
    assert_eq!(
        rlimit_fallback(&limits, none, python),
        RlimitFallback {
            processes: Some(16),
            // 64 MiB asked; the interpreter needs 256 MiB of address space to start.
            address_space: Some(256 << 20),
        }
    );
    let node = rlimit_fallback(&limits, none, hako_wire::Language::Nodejs);
    assert_eq!(node.address_space, None);
    let covered = hako_wire::spec::CgroupCoverage {
        memory: true,
        pids: true,
    };
    assert_eq!(
        rlimit_fallback(&limits, covered, python),
        RlimitFallback {
            processes: None,
            address_space: None,
        }
    );
}

#[test]
fn the_parent_cpu_group_weighs_as_many_tasks_as_there_are_cpus() {
    let (shares, weight) = super::limits::parent_cpu_weight();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    assert_eq!(shares, 1024 * cpus);
    let with_cpu = CgroupLimits {
        cpu_percent: 100,
        ..LIMITS
    };
    // v1: the default weight (one task's) is raised; an operator's higher weight is kept.
    let host = Host::v1(false);
    touch(&host.root().join("cpu/hako/cpu.shares"), "1024\n");
    host.cgroups().create_run("a", &with_cpu).unwrap();
    assert!(
        host.writes().contains(&format!("cpu.shares={shares}")) || shares == 1024,
        "the parent keeps one task's weight"
    );
    touch(&host.root().join("cpu/hako/cpu.shares"), "999999\n");
    host.cgroups().create_run("b", &with_cpu).unwrap();
    assert!(!host.writes().iter().any(|w| w.starts_with("cpu.shares=")));
    // v2: cpu.weight of the parent.
    let host = Host::v2("");
    let parent = host.root().join("hako");
    fs::create_dir_all(&parent).unwrap();
    touch(&parent.join("cgroup.subtree_control"), "");
    touch(&parent.join("cpu.weight"), "100\n");
    // The fake group has no cpu.max, so the run's quota fails after the parent is weighed.
    let _ = host.cgroups().create_run("c", &with_cpu);
    assert!(
        host.writes().contains(&format!("cpu.weight={weight}")) || weight == 100,
        "the v2 parent keeps one task's weight"
    );
}
