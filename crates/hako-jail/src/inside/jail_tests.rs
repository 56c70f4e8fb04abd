//! The jail init's set-up, call by call, on the recording kernel: its identity, namespaces,
//! and the mounts of the run's root, in order, against a temp dir standing in for the root.

use super::*;
use crate::helper::seqpacket_pair;
use crate::sys::record::Recorder;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// A root to build in, host paths to bind, and the recording kernel over the root.
struct Jail {
    root: tempfile::TempDir,
    host: tempfile::TempDir,
    kernel: Recorder,
}

impl Jail {
    fn new() -> Jail {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        fs::create_dir(host.path().join("lib")).unwrap();
        fs::write(host.path().join("lib/libx.so"), b"x").unwrap();
        fs::write(host.path().join("pkg.py"), b"print(2)").unwrap();
        fs::create_dir(host.path().join("site")).unwrap();
        // What the kernel's /proc would show, for the masks.
        fs::create_dir_all(root.path().join("proc/acpi")).unwrap();
        fs::write(root.path().join("proc/kcore"), b"").unwrap();
        let kernel = Recorder::over(root.path());
        Jail { root, host, kernel }
    }

    fn spec(&self) -> JailSpec {
        let mut spec = crate::testing::spec(self.root.path());
        spec.ro_binds = vec![self.host.path().join("lib")];
        spec.mapped_binds = vec![
            (
                self.host.path().join("pkg.py"),
                PathBuf::from("/opt/hako/pkg.py"),
            ),
            (
                self.host.path().join("site"),
                PathBuf::from("/opt/hako/site"),
            ),
        ];
        spec
    }

    /// Runs init's set-up after the helper's GO.
    fn prepare(&self, spec: &JailSpec) -> Result<(), JailError> {
        let (helper, init) = seqpacket_pair().unwrap();
        control::send(helper.as_fd(), &Message::Go, &[]).unwrap();
        prepare_jail(&self.kernel, spec, b"print(1)", &init)
    }
}

impl Jail {
    /// The calls so far, the host temp dir shown as `$HOST` and descriptor numbers as `N`.
    fn calls(&self) -> Vec<String> {
        let host = self.host.path().display().to_string();
        let host_in_root = format!("$ROOT{host}");
        self.kernel
            .take()
            .into_iter()
            .map(|c| {
                let c = c
                    .replace(&host_in_root, "$ROOT$HOST")
                    .replace(&host, "$HOST");
                let mut parts = c.split("/proc/self/fd/");
                let mut shown = parts.next().unwrap_or_default().to_string();
                for part in parts {
                    shown.push_str("/proc/self/fd/N");
                    shown.push_str(part.trim_start_matches(|ch: char| ch.is_ascii_digit()));
                }
                shown
            })
            .collect()
    }
}

#[test]
fn init_takes_its_identity_then_builds_the_root_in_order() {
    let jail = Jail::new();
    jail.prepare(&jail.spec()).unwrap();
    assert_eq!(
        jail.calls(),
        [
            // The jail's identity, then the parent-death signal again (setuid cleared it).
            "setgroups []",
            "setresgid 1000 1000 1000",
            "prctl keepcaps",
            "setresuid 1000 1000 1000",
            "prctl pdeathsig SIGKILL",
            "unshare newcgroup",
            "sethostname hako",
            "loopback up",
            // The root: nothing propagates back to the host, a tmpfs to build in.
            "mount - / [rec,private]",
            "mount tmpfs $ROOT type tmpfs [nosuid,nodev] size=4194320,mode=0755",
            // Host paths read-only at the same path; a mapped directory as an overlay whose
            // layers the mount table names by descriptor (a mapped file is copied).
            "mount $HOST/lib $ROOT$HOST/lib [bind]",
            "mount - $ROOT$HOST/lib [rdonly,nosuid,nodev,remount,bind]",
            "mount overlay $ROOT/opt/hako/site type overlay [rdonly,nosuid,nodev] lowerdir=/proc/self/fd/N:/proc/self/fd/N",
            // A minimal /dev.
            "mount tmpfs $ROOT/dev type tmpfs [nosuid,noexec] size=65536,mode=0755",
            "mount /dev/null $ROOT/dev/null [bind]",
            "mount - $ROOT/dev/null [nosuid,noexec,remount,bind]",
            "mount /dev/zero $ROOT/dev/zero [bind]",
            "mount - $ROOT/dev/zero [nosuid,noexec,remount,bind]",
            "mount /dev/full $ROOT/dev/full [bind]",
            "mount - $ROOT/dev/full [nosuid,noexec,remount,bind]",
            "mount /dev/random $ROOT/dev/random [bind]",
            "mount - $ROOT/dev/random [nosuid,noexec,remount,bind]",
            "mount /dev/urandom $ROOT/dev/urandom [bind]",
            "mount - $ROOT/dev/urandom [nosuid,noexec,remount,bind]",
            // A fresh /proc with the host's details masked.
            "mount proc $ROOT/proc type proc [nosuid,nodev,noexec]",
            "mount $ROOT/dev/null $ROOT/proc/kcore [bind]",
            "mount - $ROOT/proc/kcore [rdonly,nosuid,nodev,noexec,remount,bind]",
            "mount tmpfs $ROOT/proc/acpi type tmpfs [rdonly,nosuid,nodev,noexec] size=4k,mode=0555",
            // The run's writable places, size-capped and its own.
            "mount tmpfs $ROOT/tmp type tmpfs [nosuid,nodev,noexec] size=1048576,mode=1777,uid=1000,gid=1000",
            "mount tmpfs $ROOT/dev/shm type tmpfs [nosuid,nodev,noexec] size=1048576,mode=1777,uid=1000,gid=1000",
            "chown $ROOT/tmp/home 1000:1000",
            // Into the root; the host's tree is detached, the root and /dev made read-only.
            "chdir $ROOT",
            "pivot_root . .",
            "umount . detach",
            "chdir /",
            "mount - /dev [rdonly,nosuid,remount,bind]",
            "mount - / [rdonly,nosuid,remount,bind]",
            "chdir /tmp",
            "write /proc/sys/user/max_inotify_instances \"32\"",
            "write /proc/sys/user/max_inotify_watches \"8192\"",
            "write /proc/sys/user/max_fanotify_groups \"0\"",
            "write /proc/sys/user/max_fanotify_marks \"0\"",
            "write /proc/sys/user/max_user_namespaces \"0\"",
        ]
    );
    // The program text, the copy of the mapped file and the synthetic /etc are in the root.
    let root = jail.root.path();
    assert_eq!(
        fs::read(root.join("opt/hako/main.py")).unwrap(),
        b"print(1)"
    );
    assert_eq!(fs::read(root.join("opt/hako/pkg.py")).unwrap(), b"print(2)");
    let mode = fs::metadata(root.join("opt/hako/pkg.py"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444);
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("sandbox:x:1000:1000"));
}

#[test]
fn a_mapped_directory_is_bound_where_the_kernel_refuses_the_overlay() {
    let jail = Jail::new();
    jail.kernel.fail("mount overlay", Errno::EINVAL);
    jail.prepare(&jail.spec()).unwrap();
    let calls = jail.calls();
    let overlay = calls
        .iter()
        .position(|c| c.starts_with("mount overlay"))
        .unwrap_or_else(|| panic!("{calls:?}"));
    assert_eq!(
        calls[overlay..overlay + 3],
        [
            "mount overlay $ROOT/opt/hako/site type overlay [rdonly,nosuid,nodev] lowerdir=/proc/self/fd/N:/proc/self/fd/N = EINVAL",
            "mount $HOST/site $ROOT/opt/hako/site [bind]",
            "mount - $ROOT/opt/hako/site [rdonly,nosuid,nodev,remount,bind]",
        ]
    );
}

#[test]
fn a_failed_mount_stops_the_set_up_before_the_pivot() {
    let jail = Jail::new();
    jail.kernel.fail("mount proc", Errno::EPERM);
    let err = jail.prepare(&jail.spec()).unwrap_err();
    assert!(
        matches!(
            err,
            JailError::Mount(mounts::MountError::Proc(Errno::EPERM))
        ),
        "{err}"
    );
    let calls = jail.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("mount proc $ROOT/proc type proc [nosuid,nodev,noexec] = EPERM")
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("pivot_root")),
        "{calls:?}"
    );
}

#[test]
fn a_jail_with_network_keeps_the_hosts_and_skips_loopback() {
    let jail = Jail::new();
    let mut spec = jail.spec();
    spec.network = NetworkMode::Host;
    jail.prepare(&spec).unwrap();
    let calls = jail.calls();
    assert!(!calls.iter().any(|c| c == "loopback up"), "{calls:?}");
    assert_eq!(calls[6..8], ["sethostname hako", "mount - / [rec,private]"]);
}

#[test]
fn init_waits_for_go_before_any_call() {
    let jail = Jail::new();
    let (helper, init) = seqpacket_pair().unwrap();
    // The helper died before its GO: init's end reads EOF.
    drop(helper);
    let err = prepare_jail(&jail.kernel, &jail.spec(), b"", &init).unwrap_err();
    assert!(matches!(err, JailError::Sync(_)), "{err}");
    assert_eq!(jail.calls(), Vec::<String>::new());
}
