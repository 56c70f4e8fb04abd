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
        seccomp_filter: Default::default(),
        use_listener: false,
        insecure: false,
        hot_pages: Vec::new(),
        uid_slot,
        reads_own_page_map: false,
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

#[test]
fn hot_ranges_are_cut_into_pieces_of_at_most_one_batch() {
    let batch = HOT_BATCH_BYTES;
    let pieces: Vec<_> =
        hot_page_pieces(&[(0x1000, 0x1000), (0x10_0000, 2 * batch + 0x2000)]).collect();
    assert_eq!(
        pieces,
        [
            (0x1000, 0x1000),
            (0x10_0000, batch),
            (0x10_0000 + batch, batch),
            (0x10_0000 + 2 * batch, 0x2000),
        ]
    );
}

/// Resident pages of `len` bytes at `start` (mincore).
fn resident_pages(start: *mut libc::c_void, len: usize) -> usize {
    let mut vec = vec![0u8; len / 4096];
    // SAFETY: `start..start+len` is a mapping of this test; `vec` has one byte per page.
    assert_eq!(unsafe { libc::mincore(start, len, vec.as_mut_ptr()) }, 0);
    vec.iter().filter(|b| *b & 1 == 1).count()
}

#[test]
fn hot_pages_are_copied_only_until_the_run_arrives() {
    use std::os::fd::AsFd;
    const LEN: usize = 4 * HOT_BATCH_BYTES as usize;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    for run_arrived in [false, true] {
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(start, libc::MAP_FAILED);
        if run_arrived {
            std::io::Write::write_all(&mut &theirs, b"R").unwrap();
        }
        copy_hot_pages_until(&[(start as u64, LEN as u64)], ours.as_fd());
        let expected = if run_arrived { 0 } else { LEN / 4096 };
        assert_eq!(
            resident_pages(start, LEN),
            expected,
            "run arrived: {run_arrived}"
        );
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(start, LEN) };
    }
}

#[test]
fn only_the_calibration_child_opens_its_page_map_and_before_taking_its_uid() {
    let _alone = crate::zygote::written::PAGE_MAP_TESTS
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let root = root();
    fs::create_dir_all(root.path().join("proc/self")).unwrap();
    for file in ["maps", "pagemap"] {
        fs::write(root.path().join("proc/self").join(file), b"").unwrap();
    }
    let kernel = Recorder::over(root.path());
    // A run's child (the test above lists every call) opens nothing.
    enter_run_namespaces(&kernel, &params(0), root.path(), 7, 8).unwrap();
    assert!(crate::zygote::written::page_map_fds().is_empty());
    kernel.take();
    let calibration = ChildParams {
        reads_own_page_map: true,
        ..params(0)
    };
    // Without its page map the calibration child does not take its uid at all.
    fs::remove_file(root.path().join("proc/self/pagemap")).unwrap();
    let err = enter_run_namespaces(&kernel, &calibration, root.path(), 7, 8).unwrap_err();
    assert!(matches!(err, ChildError::PageMap(_)), "{err}");
    assert!(!kernel.take().iter().any(|c| c.starts_with("setresuid")));
    fs::write(root.path().join("proc/self/pagemap"), b"").unwrap();
    enter_run_namespaces(&kernel, &calibration, root.path(), 7, 8).unwrap();
    let calls = kernel.take();
    assert!(!calls.iter().any(|c| c.contains("dumpable")), "{calls:?}");
    assert_eq!(crate::zygote::written::page_map_fds().len(), 2);
    assert!(crate::zygote::written::take_page_map().is_some());
    assert!(crate::zygote::written::page_map_fds().is_empty());
}
