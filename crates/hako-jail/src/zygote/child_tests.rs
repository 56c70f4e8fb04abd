//! A zygote run child's confinement, call by call, on the recording kernel, against a temp
//! dir standing in for the zygote's root.

use super::*;
use crate::sys::record::Recorder;
use std::fs;

fn params(uid_slot: u32) -> ChildParams {
    let spec = crate::testing::spec(Path::new("/nonexistent"));
    ChildParams {
        language: spec.language,
        limits: spec.limits,
        coverage: Default::default(),
        seccomp: spec.seccomp,
        use_listener: false,
        insecure: false,
        hot_pages: Vec::new(),
        uid_slot,
    }
}

/// A root with what the kernel's /proc would show, for the masks.
fn root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("proc")).unwrap();
    fs::write(root.path().join("proc/kcore"), b"").unwrap();
    root
}

#[test]
fn a_run_child_unshares_mounts_then_takes_its_uid_then_its_streams() {
    let root = root();
    let kernel = Recorder::over(root.path());
    // Slots wrap around the zygote's range of run ids.
    enter_run_namespaces(&kernel, &params(ZYGOTE_RUN_IDS + 1), root.path(), 7, 8).unwrap();
    let calls = kernel.take();
    assert_eq!(
        calls[..calls.len() - 3],
        [
            "unshare newns,newuts,newipc,newnet",
            "loopback up",
            "mount tmpfs $ROOT/tmp type tmpfs [nosuid,nodev,noexec] size=1048576,mode=1777,uid=1002,gid=1002",
            "mount tmpfs $ROOT/dev/shm type tmpfs [nosuid,nodev,noexec] size=1048576,mode=1777,uid=1002,gid=1002",
            "mount proc $ROOT/proc type proc [nosuid,nodev,noexec]",
            "mount /dev/null $ROOT/proc/kcore [bind]",
            "mount - $ROOT/proc/kcore [rdonly,nosuid,nodev,noexec,remount,bind]",
            "sethostname hako",
            "write /proc/self/oom_score_adj \"0\"",
            // Groups cleared, gid before uid, capabilities kept for the lock-down.
            "setgroups []",
            "setresgid 1002 1002 1002",
            "prctl keepcaps",
            "setresuid 1002 1002 1002",
            // No chown: the home is made as the run's user.
            "chdir $ROOT/tmp",
        ]
    );
    assert!(calls[calls.len() - 3].starts_with("dup2 "), "{calls:?}");
    assert!(calls[calls.len() - 3].ends_with(" 0"), "{calls:?}");
    assert_eq!(calls[calls.len() - 2..], ["dup2 7 1", "dup2 8 2"]);
    assert!(root.path().join("tmp/home").is_dir());
}

#[test]
fn a_run_child_that_cannot_clear_its_groups_keeps_no_identity() {
    let root = root();
    let kernel = Recorder::over(root.path());
    kernel.fail("setgroups", Errno::EPERM);
    let err = enter_run_namespaces(&kernel, &params(0), root.path(), 7, 8).unwrap_err();
    assert!(matches!(err, ChildError::Identity(_)), "{err}");
    let calls = kernel.take();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("setgroups [] = EPERM")
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("setresuid")),
        "{calls:?}"
    );
}
