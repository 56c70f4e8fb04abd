//! The helper's side of a jail's start, call by call, on the recording kernel: the user
//! namespace's owner around clone, the id maps, and GO only once they are written. And the
//! run's accounting from its cgroup's counters.

use super::*;
use crate::sys::record::Recorder;
use hako_wire::control::Received;
use nix::errno::Errno;

/// Starts a jail of `spec` on `kernel` as far as the helper goes; returns what init got on
/// its control socket (GO, or nothing).
fn start(kernel: &Recorder, spec: &JailSpec) -> (Result<Pid, HelperError>, bool) {
    let (ours, theirs) = seqpacket_pair().unwrap();
    let started = clone_init(kernel, spec).and_then(|init| {
        let init = init.expect("the recording kernel never runs the child");
        release_init(kernel, init, spec, None, ours).map(|(pid, _)| pid)
    });
    let go = matches!(
        nix::poll::poll(
            &mut [nix::poll::PollFd::new(
                theirs.as_fd(),
                nix::poll::PollFlags::POLLIN
            )],
            nix::poll::PollTimeout::ZERO,
        ),
        Ok(1)
    ) && matches!(
        control::receive(&theirs),
        Ok(Received::Message(Message::Go, _))
    );
    (started, go)
}

#[test]
fn root_helper_maps_ids_as_the_namespace_owner_then_says_go() {
    let kernel = Recorder::new();
    let spec = crate::testing::spec(Path::new("/nonexistent"));
    let (started, go) = start(&kernel, &spec);
    assert_eq!(started.unwrap(), Pid::from_raw(4242));
    assert!(go, "init got no GO");
    assert_eq!(
        kernel.take(),
        [
            "setresuid - 100000 -",
            "prctl dumpable 1",
            "clone newns,newuts,newipc,newuser,newpid,newnet",
            "setresuid - 0 -",
            "setresuid - 100000 -",
            "write /proc/4242/uid_map \"1000 100000 1\\n\"",
            "write /proc/4242/gid_map \"1000 100000 1\\n\"",
            "setresuid - 0 -",
        ]
    );
}

#[test]
fn a_zygote_maps_one_id_for_itself_and_a_range_for_its_children() {
    let kernel = Recorder::new();
    let mut spec = crate::testing::spec(Path::new("/nonexistent"));
    spec.zygote = true;
    spec.network = NetworkMode::Host;
    let (started, go) = start(&kernel, &spec);
    started.unwrap();
    assert!(go);
    let calls = kernel.take();
    assert_eq!(calls[2], "clone newns,newuts,newipc,newuser,newpid");
    assert_eq!(
        calls[5..7],
        [
            "write /proc/4242/uid_map \"1000 100000 1\\n1001 100001 256\\n\"",
            "write /proc/4242/gid_map \"1000 100000 1\\n1001 100001 256\\n\"",
        ]
    );
}

#[test]
fn the_owner_of_provisioned_data_is_root_inside_the_jail() {
    let kernel = Recorder::new();
    let mut spec = crate::testing::spec(Path::new("/nonexistent"));
    spec.network = NetworkMode::Host;
    spec.data_owner = Some(99_999);
    let (started, _) = start(&kernel, &spec);
    started.unwrap();
    let calls = kernel.take();
    assert!(
        calls.contains(&"write /proc/4242/uid_map \"0 99999 1\\n1000 100000 1\\n\"".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"write /proc/4242/gid_map \"0 99999 1\\n1000 100000 1\\n\"".to_string()),
        "{calls:?}"
    );
}

#[test]
fn an_unprivileged_helper_denies_setgroups_and_maps_its_own_ids() {
    let kernel = Recorder::new().with_ids(1234, 5678);
    let spec = crate::testing::spec(Path::new("/nonexistent"));
    let (started, go) = start(&kernel, &spec);
    started.unwrap();
    assert!(go);
    assert_eq!(
        kernel.take(),
        [
            "clone newns,newuts,newipc,newuser,newpid,newnet",
            "write /proc/4242/setgroups \"deny\"",
            "write /proc/4242/uid_map \"1000 1234 1\\n\"",
            "write /proc/4242/gid_map \"1000 5678 1\\n\"",
        ]
    );
}

#[test]
fn a_failed_id_map_kills_init_and_never_says_go() {
    let kernel = Recorder::new();
    kernel.fail("write /proc/4242/gid_map", Errno::EPERM);
    let spec = crate::testing::spec(Path::new("/nonexistent"));
    let (started, go) = start(&kernel, &spec);
    let err = started.unwrap_err();
    assert!(matches!(err, HelperError::IdMap { .. }), "{err}");
    assert!(err.to_string().contains("gid_map"), "{err}");
    assert!(!go, "init was told to go on");
    let calls = kernel.take();
    assert_eq!(
        calls[calls.len() - 3..],
        [
            "write /proc/4242/gid_map \"1000 100000 1\\n\" = EPERM",
            // Back to root before anything else.
            "setresuid - 0 -",
            "kill 4242 SIGKILL",
        ]
    );
}

#[test]
fn a_failed_clone_returns_to_root_and_says_so() {
    let kernel = Recorder::new();
    kernel.fail("clone", Errno::EPERM);
    let spec = crate::testing::spec(Path::new("/nonexistent"));
    let err = clone_init(&kernel, &spec).unwrap_err();
    assert!(matches!(err, HelperError::Clone(Errno::EPERM)), "{err}");
    assert_eq!(
        kernel.take(),
        [
            "setresuid - 100000 -",
            "prctl dumpable 1",
            "clone newns,newuts,newipc,newuser,newpid,newnet = EPERM",
            "setresuid - 0 -",
        ]
    );
}

#[test]
fn a_sigkill_at_the_memory_limit_is_an_oom_kill_unless_the_run_timed_out() {
    let during = CgroupStats {
        memory_limit_hits: 2,
        ..CgroupStats::default()
    };
    let killed = JailOutcome {
        signal: Some(libc::SIGKILL),
        ..JailOutcome::default()
    };
    let mut outcome = killed.clone();
    account_limits(&mut outcome, &during);
    assert!(outcome.oom_killed && !outcome.pids_limited);

    let mut timed_out = JailOutcome {
        timed_out: true,
        ..killed.clone()
    };
    account_limits(&mut timed_out, &during);
    assert!(!timed_out.oom_killed);

    let mut exited = JailOutcome::default();
    account_limits(
        &mut exited,
        &CgroupStats {
            oom_kills: 1,
            pids_limit_hits: 3,
            ..CgroupStats::default()
        },
    );
    assert!(exited.oom_killed && exited.pids_limited);
}

#[test]
fn a_zygote_run_counts_only_the_events_since_it_started() {
    let before = CgroupStats {
        peak_memory_bytes: Some(10),
        oom_kills: 1,
        memory_limit_hits: 4,
        pids_limit_hits: 2,
    };
    let after = CgroupStats {
        peak_memory_bytes: Some(20),
        oom_kills: 1,
        memory_limit_hits: 4,
        pids_limit_hits: 3,
    };
    let mut outcome = JailOutcome {
        signal: Some(libc::SIGKILL),
        ..JailOutcome::default()
    };
    account_limits(&mut outcome, &after.since(&before));
    // An earlier run's OOM kill is not this run's.
    assert!(!outcome.oom_killed);
    assert!(outcome.pids_limited);
}
