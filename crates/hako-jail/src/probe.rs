//! Capability probes for `hako doctor` and the refuse-to-run check at start-up.
//!
//! Namespace and seccomp probes really try the operation in a forked child that only makes
//! raw system calls and `_exit`s, so the probing process itself is never changed.

use std::fmt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::cgroup::Cgroups;

/// How well a layer works on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// The layer is fully available.
    Enforced,
    /// The layer works in part, or a fallback stands in for it.
    Degraded,
    /// The layer cannot be applied.
    Missing,
}

impl fmt::Display for LayerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: `hako doctor` aligns its columns with a width.
        f.pad(match self {
            LayerState::Enforced => "enforced",
            LayerState::Degraded => "degraded",
            LayerState::Missing => "missing",
        })
    }
}

/// The state of one isolation layer, with one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    pub layer: &'static str,
    pub state: LayerState,
    pub detail: String,
}

/// Layers without which hako refuses to run (unless told to run insecurely).
pub const REQUIRED_LAYERS: [&str; 4] = [
    "user namespace",
    "mount namespace",
    "pid namespace",
    "seccomp",
];

/// Namespaces probed, in report order, each tried together with a new user namespace.
const NAMESPACES: [(&str, libc::c_int, &str); 7] = [
    ("user namespace", 0, "CLONE_NEWUSER"),
    (
        "mount namespace",
        libc::CLONE_NEWNS,
        "CLONE_NEWUSER|CLONE_NEWNS",
    ),
    (
        "pid namespace",
        libc::CLONE_NEWPID,
        "CLONE_NEWUSER|CLONE_NEWPID",
    ),
    (
        "ipc namespace",
        libc::CLONE_NEWIPC,
        "CLONE_NEWUSER|CLONE_NEWIPC",
    ),
    (
        "uts namespace",
        libc::CLONE_NEWUTS,
        "CLONE_NEWUSER|CLONE_NEWUTS",
    ),
    (
        "net namespace",
        libc::CLONE_NEWNET,
        "CLONE_NEWUSER|CLONE_NEWNET",
    ),
    (
        "cgroup namespace",
        libc::CLONE_NEWCGROUP,
        "CLONE_NEWUSER|CLONE_NEWCGROUP",
    ),
];

/// First kernel with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`.
const USER_NOTIF_KERNEL: (u32, u32) = (5, 5);

/// Probes every layer, in the order `hako doctor` prints them.
///
/// Forks short-lived children. The children only make async-signal-safe raw system calls, so
/// this is sound from a multi-threaded process too; `hako doctor` calls it before starting
/// threads anyway.
pub fn probe_all(cgroup_root: &Path) -> Vec<LayerReport> {
    let mut reports: Vec<LayerReport> = NAMESPACES
        .iter()
        .map(|&(layer, flag, label)| probe_namespace(layer, flag, label, None))
        .collect();
    reports.push(probe_cgroups(cgroup_root));
    reports.push(probe_seccomp());
    reports.push(probe_user_notif());
    reports.push(probe_landlock());
    reports.push(LayerReport {
        layer: "rlimits",
        state: LayerState::Enforced,
        detail: "setrlimit is always available".to_string(),
    });
    reports.push(probe_no_new_privs());
    reports.push(probe_mount_table());
    reports
}

/// The required layers (see [`REQUIRED_LAYERS`]) that are Missing.
pub fn missing_required(reports: &[LayerReport]) -> Vec<&LayerReport> {
    reports
        .iter()
        .filter(|r| r.state == LayerState::Missing && REQUIRED_LAYERS.contains(&r.layer))
        .collect()
}

/// What the probe child does.
#[derive(Clone, Copy)]
enum ChildAction<'a> {
    /// Optionally drop to `uid`/`gid` first, then `unshare(CLONE_NEWUSER | flags)`.
    Unshare {
        flags: libc::c_int,
        drop_to: Option<libc::uid_t>,
    },
    /// Set no_new_privs, then install `prog` in filter mode.
    SeccompFilter(&'a libc::sock_fprog),
    /// The first `steps` of what a proxy-mode run's network needs (see [`EGRESS_STEPS`]).
    EgressListener { steps: usize },
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNS)`, then a read-only overlay of `layer` at
    /// `target`, with the mount options `data`, which name the two directories as
    /// `/proc/self/fd/{layer_fd}` and `/proc/self/fd/{target_fd}`.
    Overlay {
        layer: &'a std::ffi::CStr,
        target: &'a std::ffi::CStr,
        layer_fd: libc::c_int,
        target_fd: libc::c_int,
        data: &'a std::ffi::CStr,
    },
}

/// What a proxy-mode run's network takes, in order, as the probe tries it.
const EGRESS_STEPS: [&str; 3] = [
    "unshare(CLONE_NEWUSER|CLONE_NEWNET)",
    "bring loopback up in it",
    "listen on 127.0.0.1:3128 in it",
];

/// Runs `action` in a forked child; Ok when it succeeded, else the errno it failed with.
fn in_child(action: ChildAction<'_>) -> Result<(), Errno> {
    // SAFETY: the child only runs `child_main`, which makes raw system calls (setgroups,
    // setresgid, setresuid, unshare, prctl, seccomp) and `_exit`: all async-signal-safe, no
    // allocation and no locks, so forking a multi-threaded caller is sound.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = child_main(action);
            // SAFETY: `_exit` ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(WaitStatus::Exited(_, code)) => return Err(Errno::from_raw(code)),
                Ok(WaitStatus::Signaled(..)) => return Err(Errno::ECHILD),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        },
    }
}

/// Body of the probe child: returns 0 or the errno of the failed step.
fn child_main(action: ChildAction<'_>) -> libc::c_int {
    // SAFETY: errno is thread-local; reading it right after a failed call is the contract.
    let errno = || unsafe { *libc::__errno_location() };
    match action {
        ChildAction::Unshare { flags, drop_to } => {
            if let Some(id) = drop_to {
                // SAFETY: raw syscalls on this (single-threaded) child; the empty group list
                // pointer is never read with size 0.
                let failed = unsafe {
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                        || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                        || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
                };
                if failed {
                    return errno();
                }
            }
            // SAFETY: unshare only changes this child's namespaces.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | flags) } != 0 {
                return errno();
            }
            0
        }
        ChildAction::EgressListener { steps } => egress_steps(steps).err().unwrap_or(0),
        ChildAction::Overlay {
            layer,
            target,
            layer_fd,
            target_fd,
            data,
        } => {
            // The layers must be opened in the new mount namespace (the kernel refuses a
            // layer of another), at the numbers `data` names.
            let open_at = |path: &std::ffi::CStr, fd: libc::c_int| {
                // SAFETY: open reads a string of this child's copy of the parent's memory;
                // dup2 replaces a descriptor of this child only.
                unsafe {
                    let opened = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                    opened >= 0 && libc::dup2(opened, fd) == fd
                }
            };
            // SAFETY: unshare only changes this child's namespaces; mount reads the strings,
            // which live in this child's copy of the parent's memory, and mounts in the
            // child's own mount namespace, which ends with it.
            let mounted = unsafe {
                libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0
                    && open_at(layer, layer_fd)
                    && open_at(target, target_fd)
                    && libc::mount(
                        c"overlay".as_ptr(),
                        target.as_ptr(),
                        c"overlay".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                        data.as_ptr().cast(),
                    ) == 0
            };
            if mounted {
                0
            } else {
                errno()
            }
        }
        ChildAction::SeccompFilter(prog) => {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return errno();
            }
            let prog: *const libc::sock_fprog = prog;
            // SAFETY: `prog` points at a valid one-instruction program in this child's copy
            // of the parent's memory; the filter only affects this child.
            if unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, prog) }
                != 0
            {
                return errno();
            }
            0
        }
    }
}

/// The first `steps` of [`EGRESS_STEPS`], in a probe child (raw system calls only).
fn egress_steps(steps: usize) -> Result<(), libc::c_int> {
    // SAFETY: errno is thread-local; reading it right after a failed call is the contract.
    let errno = || unsafe { *libc::__errno_location() };
    // SAFETY: unshare only changes this child's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        return Err(errno());
    }
    if steps < 2 {
        return Ok(());
    }
    // SAFETY: a plain socket call; the descriptor dies with the child.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the ioctls read and write only the ifreq we pass, which outlives them; the
    // flags union member is the active one after SIOCGIFFLAGS.
    let up = unsafe {
        sock >= 0 && libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) == 0
        }
    };
    if !up {
        return Err(errno());
    }
    if steps < 3 {
        return Ok(());
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: crate::netns::EGRESS_PORT.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket, bind and listen on a descriptor of this child; `addr` outlives bind and
    // its size is passed with it.
    let listening = unsafe {
        let tcp = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        tcp >= 0
            && libc::bind(
                tcp,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) == 0
            && libc::listen(tcp, 1) == 0
    };
    if !listening {
        return Err(errno());
    }
    Ok(())
}

/// Whether a proxy-mode run's network can be built here without privileges beyond the
/// jail's: a network namespace under a new user namespace, loopback, the guard's listener.
/// Tries the steps one by one, so a failure names its step.
pub fn probe_egress() -> LayerReport {
    let layer = "egress guard";
    for steps in 1..=EGRESS_STEPS.len() {
        if let Err(errno) = in_child(ChildAction::EgressListener { steps }) {
            let hint = if steps == 1 {
                userns_hint()
            } else {
                "the run's own network namespace refuses what the jail does in it".to_string()
            };
            return LayerReport {
                layer,
                state: LayerState::Missing,
                detail: format!(
                    "{} failed: {errno} ({}); {hint}",
                    EGRESS_STEPS[steps - 1],
                    errno.desc()
                ),
            };
        }
    }
    LayerReport {
        layer,
        state: LayerState::Enforced,
        detail: "a run's own network namespace with the guard's listener works here: runs with network reach only the SSRF guard".to_string(),
    }
}

fn probe_namespace(
    layer: &'static str,
    flag: libc::c_int,
    label: &str,
    drop_to: Option<libc::uid_t>,
) -> LayerReport {
    match in_child(ChildAction::Unshare {
        flags: flag,
        drop_to,
    }) {
        Ok(()) => LayerReport {
            layer,
            state: LayerState::Enforced,
            detail: format!("unshare({label}) works"),
        },
        Err(errno) => LayerReport {
            layer,
            state: LayerState::Missing,
            detail: format!(
                "unshare({label}) failed: {errno} ({}); {}",
                errno.desc(),
                userns_hint()
            ),
        },
    }
}

/// Why namespaces may be refused on this host, from the usual sysctls.
fn userns_hint() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "user.max_user_namespaces is 0; raise it with sysctl".to_string();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "kernel.unprivileged_userns_clone is 0; set it to 1 or run as root".to_string();
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts user namespaces; allow them for hako or run as root"
            .to_string();
    }
    "in a container, allow unshare in its seccomp profile (or run it privileged)".to_string()
}

fn probe_cgroups(root: &Path) -> LayerReport {
    let support = Cgroups::detect(root).support();
    let (state, detail) = match (support.memory, support.pids) {
        (true, true) => (LayerState::Enforced, support.detail),
        (false, false) => (
            LayerState::Degraded,
            format!(
                "rlimits and the supervisor's memory guard only: {}",
                support.detail
            ),
        ),
        _ => (
            LayerState::Degraded,
            format!("partial, rlimits cover the rest: {}", support.detail),
        ),
    };
    LayerReport {
        layer: "cgroups",
        state,
        detail,
    }
}

fn probe_seccomp() -> LayerReport {
    let allow = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_ptr().cast_mut(),
    };
    let already = match std::fs::read_to_string("/proc/self/status") {
        Ok(status)
            if status
                .lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])) =>
        {
            "; hako already runs under a filter, filters stack"
        }
        _ => "",
    };
    match in_child(ChildAction::SeccompFilter(&prog)) {
        Ok(()) => LayerReport {
            layer: "seccomp",
            state: LayerState::Enforced,
            detail: format!("filter mode works{already}"),
        },
        Err(errno) => {
            let hint = match errno {
                Errno::ENOSYS | Errno::EINVAL => "the kernel lacks CONFIG_SECCOMP_FILTER",
                _ => "a container seccomp profile or LSM may block seccomp()",
            };
            LayerReport {
                layer: "seccomp",
                state: LayerState::Missing,
                detail: format!(
                    "installing a filter failed: {errno} ({}); {hint}",
                    errno.desc()
                ),
            }
        }
    }
}

/// `uname -r` as (major, minor).
fn kernel_version() -> Option<(u32, u32)> {
    let uname = nix::sys::utsname::uname().ok()?;
    parse_kernel_version(&uname.release().to_string_lossy())
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn probe_user_notif() -> LayerReport {
    let layer = "seccomp user notification";
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: GET_ACTION_AVAIL only reads the u32 behind the pointer; nothing is installed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if ret != 0 {
        let errno = Errno::last();
        return LayerReport {
            layer,
            state: LayerState::Missing,
            detail: format!(
                "SECCOMP_RET_USER_NOTIF unavailable: {errno} ({}); blocked calls cannot be named",
                errno.desc()
            ),
        };
    }
    match kernel_version() {
        Some(v) if v >= USER_NOTIF_KERNEL => LayerReport {
            layer,
            state: LayerState::Enforced,
            detail: format!("available (kernel {}.{})", v.0, v.1),
        },
        other => LayerReport {
            layer,
            state: LayerState::Degraded,
            detail: format!(
                "action available but kernel {} is older than {}.{}; \
                 blocked calls may not be named",
                other.map_or("unknown".to_string(), |v| format!("{}.{}", v.0, v.1)),
                USER_NOTIF_KERNEL.0,
                USER_NOTIF_KERNEL.1
            ),
        },
    }
}

fn probe_landlock() -> LayerReport {
    let layer = "landlock";
    match crate::landlock::probe_abi() {
        Ok(abi) if abi > 0 => LayerReport {
            layer,
            state: LayerState::Enforced,
            detail: if abi >= 6 {
                format!("ABI v{abi}; signals and abstract unix sockets scoped to the run")
            } else {
                format!("ABI v{abi}; no signal or abstract socket scoping (needs ABI 6)")
            },
        },
        Ok(abi) => LayerReport {
            layer,
            state: LayerState::Missing,
            detail: format!("kernel reports Landlock ABI {abi}"),
        },
        Err(errno) => {
            let why = match errno {
                Errno::ENOSYS => "the kernel is built without Landlock",
                Errno::EOPNOTSUPP => "Landlock is disabled; add `landlock` to the lsm= boot option",
                _ => "landlock_create_ruleset failed",
            };
            LayerReport {
                layer,
                state: LayerState::Missing,
                detail: format!("{why} ({errno})"),
            }
        }
    }
}

/// Whether package environments can be overlays whose layers are named by descriptor, as
/// the jail mounts them (in a new user and mount namespace): then a run's mount table names
/// no host path of hako's. Otherwise they are bound, and the table names their host paths.
fn probe_mount_table() -> LayerReport {
    let layer = "mount table";
    match try_overlay(&std::env::temp_dir()) {
        Ok(()) => LayerReport {
            layer,
            state: LayerState::Enforced,
            detail: "package environments are overlays named by descriptor: a run's mount table names no host path".to_string(),
        },
        Err(why) => LayerReport {
            layer,
            state: LayerState::Degraded,
            detail: format!(
                "{why}; package environments are bound instead, and a run's mount table names their host paths"
            ),
        },
    }
}

/// Mounts a read-only overlay of a fresh directory in a probe child, as the jail does, in a
/// directory it makes under `parent` and removes (nothing else under `parent` is touched).
fn try_overlay(parent: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let base = fresh_dir(parent)
        .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?;
    let (layer, at) = (base.join("layer"), base.join("at"));
    let tried = (|| {
        for dir in [&layer, &at] {
            std::fs::create_dir(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let open = |dir: &Path| {
            std::fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))
        };
        // Held open to reserve two descriptor numbers for the child.
        let (layer_fd, at_fd) = (open(&layer)?, open(&at)?);
        let (layer_fd, target_fd) = (layer_fd.as_raw_fd(), at_fd.as_raw_fd());
        let c_path = |path: &Path| {
            std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())
        };
        let data = c_path(Path::new(&crate::mounts::overlay_layers(
            layer_fd, target_fd,
        )))?;
        in_child(ChildAction::Overlay {
            layer: &c_path(&layer)?,
            target: &c_path(&at)?,
            layer_fd,
            target_fd,
            data: &data,
        })
        .map_err(|errno| format!("mount overlay: {errno} ({})", errno.desc()))
    })();
    let _ = std::fs::remove_dir_all(&base);
    tried
}

/// A new directory under `parent`, made by this call (mode 0700), with a name nobody can
/// guess: one that exists already is never taken over.
fn fresh_dir(parent: &Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut taken = None;
    for _ in 0..8 {
        let mut random = [0u8; 8];
        // SAFETY: getrandom writes at most `random.len()` bytes into `random`.
        unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(
            "hako-probe-{}-{nanos:08x}-{:016x}",
            std::process::id(),
            u64::from_ne_bytes(random)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => taken = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(taken.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()))
}

fn probe_no_new_privs() -> LayerReport {
    let layer = "no_new_privs";
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers and changes nothing.
    let ret = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if ret < 0 {
        let errno = Errno::last();
        LayerReport {
            layer,
            state: LayerState::Missing,
            detail: format!("prctl(PR_GET_NO_NEW_PRIVS) failed: {errno}; kernel older than 3.5?"),
        }
    } else {
        LayerReport {
            layer,
            state: LayerState::Enforced,
            detail: "prctl(PR_SET_NO_NEW_PRIVS) available".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_fill_the_width_doctor_aligns_with() {
        assert_eq!(format!("{:<9}|", LayerState::Enforced), "enforced |");
        assert_eq!(format!("{:<9}|", LayerState::Missing), "missing  |");
    }

    fn report(layer: &'static str, state: LayerState) -> LayerReport {
        LayerReport {
            layer,
            state,
            detail: String::new(),
        }
    }

    #[test]
    fn missing_required_picks_required_missing_layers() {
        let reports = vec![
            report("user namespace", LayerState::Enforced),
            report("mount namespace", LayerState::Missing),
            report("pid namespace", LayerState::Degraded),
            report("net namespace", LayerState::Missing),
            report("seccomp", LayerState::Missing),
            report("landlock", LayerState::Missing),
        ];
        let missing: Vec<&str> = missing_required(&reports).iter().map(|r| r.layer).collect();
        assert_eq!(missing, vec!["mount namespace", "seccomp"]);
        assert!(missing_required(&reports[..1]).is_empty());
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert!((5, 4) < USER_NOTIF_KERNEL && (6, 1) >= USER_NOTIF_KERNEL);
    }

    #[test]
    fn probe_all_reports_every_layer_in_order() {
        let reports = probe_all(Path::new("/nonexistent-cgroup-root"));
        let layers: Vec<&str> = reports.iter().map(|r| r.layer).collect();
        assert_eq!(
            layers,
            vec![
                "user namespace",
                "mount namespace",
                "pid namespace",
                "ipc namespace",
                "uts namespace",
                "net namespace",
                "cgroup namespace",
                "cgroups",
                "seccomp",
                "seccomp user notification",
                "landlock",
                "rlimits",
                "no_new_privs",
                "mount table",
            ]
        );
        let cgroups = &reports[7];
        assert_eq!(cgroups.state, LayerState::Degraded);
        assert!(
            cgroups
                .detail
                .starts_with("rlimits and the supervisor's memory guard only"),
            "{}",
            cgroups.detail
        );
        assert!(reports.iter().all(|r| !r.detail.is_empty()));
    }

    /// On a root host with namespaces and seccomp, everything required is Enforced.
    #[test]
    fn host_probe_as_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: expectations hold for root; running as non-root");
            return;
        }
        let root = Path::new("/sys/fs/cgroup");
        let reports = probe_all(root);
        for r in &reports[..7] {
            assert_eq!(r.state, LayerState::Enforced, "{}: {}", r.layer, r.detail);
        }
        let by = |name: &str| reports.iter().find(|r| r.layer == name).unwrap();
        assert_eq!(
            by("seccomp").state,
            LayerState::Enforced,
            "{}",
            by("seccomp").detail
        );
        assert!(missing_required(&reports).is_empty());
        let cgroups = by("cgroups");
        if root.join("memory/cgroup.procs").is_file() && !root.join("cgroup.controllers").exists() {
            // A v1 (or hybrid) host, like the one this project is built on.
            assert_eq!(cgroups.state, LayerState::Enforced, "{}", cgroups.detail);
            assert!(cgroups.detail.contains("v1"), "{}", cgroups.detail);
        } else {
            eprintln!(
                "cgroups on this host: {} ({})",
                cgroups.state, cgroups.detail
            );
        }
        if crate::landlock::abi_version().is_some() {
            assert_eq!(by("landlock").state, LayerState::Enforced);
        }
    }

    /// The egress probe really builds a run's network (as root or not: it needs no privilege
    /// where user namespaces are allowed), and a refused step is named.
    #[test]
    fn egress_probe_builds_a_runs_network() {
        let r = probe_egress();
        if probe_namespace("net", libc::CLONE_NEWNET, "net", None).state != LayerState::Enforced {
            assert_eq!(r.state, LayerState::Missing, "{}", r.detail);
            assert!(r.detail.starts_with("unshare("), "{}", r.detail);
            return;
        }
        assert_eq!(r.state, LayerState::Enforced, "{}", r.detail);
        assert!(r.detail.contains("SSRF guard"), "{}", r.detail);
    }

    /// Where overlayfs is there (this machine's kernels have it), the probe mounts one as the
    /// jail does: layers opened in the new mount namespace and named by descriptor. A layer
    /// opened before the unshare fails with EINVAL ("failed to clone lowerpath").
    #[test]
    fn mount_table_probe_mounts_an_overlay_as_the_jail_does() {
        let overlayfs = std::fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"));
        let mount_ns = probe_namespace("mnt", libc::CLONE_NEWNS, "mnt", None);
        if !overlayfs || mount_ns.state != LayerState::Enforced {
            eprintln!("skipped: no overlayfs or no mount namespace here");
            return;
        }
        // It removes only what it made: what was there before stays, nothing is added.
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("before")).unwrap();
        assert_eq!(try_overlay(parent.path()), Ok(()));
        let left: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["before"], "the probe changed its parent directory");
        let r = probe_mount_table();
        assert_eq!(r.state, LayerState::Enforced, "{}", r.detail);
    }

    /// The user namespace probe also works for an unprivileged user.
    #[test]
    fn user_namespace_probe_as_nobody() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: dropping to nobody needs root");
            return;
        }
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        if read("/proc/sys/kernel/unprivileged_userns_clone").trim() == "0"
            || read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").trim() == "1"
        {
            eprintln!("skipped: unprivileged user namespaces are disabled on this host");
            return;
        }
        let r = probe_namespace("user namespace", 0, "CLONE_NEWUSER", Some(65534));
        assert_eq!(r.state, LayerState::Enforced, "{}", r.detail);
        // A failing unshare is reported as Missing with the errno (CLONE_PARENT is invalid).
        let bad = probe_namespace("bogus", libc::CLONE_PARENT, "CLONE_PARENT", None);
        assert_eq!(bad.state, LayerState::Missing, "{}", bad.detail);
        assert!(bad.detail.contains("EINVAL"), "{}", bad.detail);
    }
}
