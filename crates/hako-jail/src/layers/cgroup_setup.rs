//! A writable cgroup2 for the runs where the container runtime mounts `/sys/fs/cgroup`
//! read-only (Docker and podman on cgroup v2 without `CAP_SYS_ADMIN`).
//!
//! The container's root cannot remount its cgroupfs, but it may create a user namespace,
//! and in it a cgroup namespace it owns: a cgroup2 mounted there is rooted at the container's
//! own cgroup and is writable wherever the files' owner (the container's root) may write. A
//! small keeper process (`hako __cgroup-mount <root>`) does that in a private mount namespace
//! and then waits; the server and its helpers reach the mount through the keeper's root,
//! `/proc/<keeper>/root/<root>`, as their cgroup root. The keeper ends when the server does
//! (its stdin closes, or its parent dies). Mapping the container's root (uid 0) into the
//! keeper's user namespace needs `CAP_SETFCAP` (Linux 5.12+).
//!
//! What runs in the container's own cgroup (the server, the keeper) is moved to a leaf by
//! the first run (cgroup v2's "no internal processes" rule), and `memory pids cpu` are
//! enabled below it, exactly as on a host that delegates a cgroup to hako.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::cgroup::{CgroupVersion, Cgroups};

/// The hidden subcommand that runs [`keeper_main`].
pub const KEEPER_COMMAND: &str = "__cgroup-mount";
/// What the keeper prints once its mount is in place.
const READY_LINE: &str = "mounted";

/// Errors of setting up the private cgroup2 mount.
#[derive(Debug, thiserror::Error)]
pub enum CgroupSetupError {
    #[error("start the cgroup keeper {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the cgroup keeper failed: {message}")]
    Keeper { message: String },
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("write {path}: {source}")]
    IdMap {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the private cgroup2 at {root} has no writable memory controller ({detail})")]
    Unusable { root: PathBuf, detail: String },
}

/// Whether hako should mount a private cgroup2: `root` is a cgroup2 that offers the memory
/// controller but that hako may not write (a read-only mount in a container).
pub fn wants_private_mount(root: &Path) -> bool {
    let support = Cgroups::detect(root).support();
    support.version == Some(CgroupVersion::V2)
        && !support.memory
        && fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
}

/// A running keeper of a private cgroup2 mount.
#[derive(Debug)]
pub struct PrivateCgroup {
    child: Child,
    /// Held open: its end tells the keeper to go.
    _stdin: Option<ChildStdin>,
    root: PathBuf,
}

impl PrivateCgroup {
    /// Starts `exe __cgroup-mount <root>` and waits until its mount is in place; checks that
    /// the memory controller can be written there.
    pub fn start(exe: &Path, root: &Path) -> Result<PrivateCgroup, CgroupSetupError> {
        let mut child = Command::new(exe)
            .arg(KEEPER_COMMAND)
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CgroupSetupError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != READY_LINE {
            let mut message = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut message);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(CgroupSetupError::Keeper {
                message: message.trim().to_string(),
            });
        }
        let keeper = PrivateCgroup {
            root: Path::new(&format!("/proc/{}/root", child.id()))
                .join(root.strip_prefix("/").unwrap_or(root)),
            child,
            _stdin: stdin,
        };
        let support = Cgroups::detect(&keeper.root).support();
        if !support.memory {
            return Err(CgroupSetupError::Unusable {
                root: keeper.root.clone(),
                detail: support.detail,
            });
        }
        Ok(keeper)
    }

    /// The cgroup root to give the helpers: the mount as seen through the keeper's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keeper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PrivateCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hako __cgroup-mount <root>`: mounts a cgroup2 over `<root>` in its own user, cgroup and
/// mount namespaces, says so on stdout, and waits for stdin to close.
pub fn keeper_main(root: &Path) -> i32 {
    match mount_private(root) {
        Ok(()) => {
            let mut out = io::stdout();
            if writeln!(out, "{READY_LINE}")
                .and_then(|()| out.flush())
                .is_err()
            {
                return 1;
            }
            let mut sink = [0u8; 64];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            0
        }
        Err(err) => {
            eprintln!("hako cgroup keeper: {err}");
            1
        }
    }
}

/// The keeper's steps, one privileged step per line.
fn mount_private(root: &Path) -> Result<(), CgroupSetupError> {
    let step = |step: &'static str| move |source: Errno| CgroupSetupError::Step { step, source };
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a signal for this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    Errno::result(rc).map_err(step("prctl(PR_SET_PDEATHSIG)"))?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    unshare(CloneFlags::CLONE_NEWUSER).map_err(step("unshare(CLONE_NEWUSER)"))?;
    write_proc("/proc/self/uid_map", &format!("{uid} {uid} 1\n"))?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/gid_map", &format!("{gid} {gid} 1\n"))?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP)
        .map_err(step("unshare(CLONE_NEWNS | CLONE_NEWCGROUP)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("make the mounts private"))?;
    // The kernel refuses a filesystem over the same mount of itself (EBUSY): the runtime's
    // read-only mount has the same superblock and root. An empty tmpfs goes in between.
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0755"),
    )
    .map_err(step("mount a tmpfs under the cgroup2"))?;
    mount(
        Some("cgroup2"),
        root,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(step("mount cgroup2"))?;
    Ok(())
}

fn write_proc(path: &'static str, value: &str) -> Result<(), CgroupSetupError> {
    fs::write(path, value).map_err(|source| CgroupSetupError::IdMap { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_read_only_v2_with_memory_wants_a_private_mount() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!wants_private_mount(tmp.path()), "no cgroup at all");
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        // Writable (a temp dir): the host's own cgroup is used as it is.
        if nix::unistd::geteuid().is_root() {
            assert!(!wants_private_mount(tmp.path()));
        }
    }
}
