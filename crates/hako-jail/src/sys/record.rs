//! The recording double of [`Kernel`] (tests only): every call is written down, in order, as
//! one line of text; chosen calls fail with a scripted errno. Over a temp directory it also
//! acts like cgroupfs there (mkdir, rmdir and writes happen, a new group gets its control
//! files; a mount onto a path missing there fails with `ENOENT` and, having changed nothing,
//! is not written down), and touches nothing outside it.

use super::{Kernel, Prctl, ResIds};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a new directory under the root is filled with (cgroupfs makes control files).
type OnMkdir = Box<dyn Fn(&Path) + Send + Sync>;

pub(crate) struct Recorder {
    /// Paths under it are shown as `$ROOT/...` and really created, written and removed.
    root: Option<PathBuf>,
    on_mkdir: Option<OnMkdir>,
    calls: Mutex<Vec<String>>,
    /// `(start of a call's line, errno)`: the first call that matches fails, once.
    failures: Mutex<Vec<(String, Errno)>>,
    ids: (u32, u32),
    clone_pid: i32,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("root", &self.root)
            .finish()
    }
}

impl Recorder {
    /// Records only: no call has an effect. Runs as root (ids 0), clone returns pid 4242.
    pub fn new() -> Recorder {
        Recorder {
            root: None,
            on_mkdir: None,
            calls: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            ids: (0, 0),
            clone_pid: 4242,
        }
    }

    /// Acts on the real file system under `root` (a temp dir), like cgroupfs would.
    pub fn over(root: &Path) -> Recorder {
        Recorder {
            root: Some(root.to_path_buf()),
            ..Recorder::new()
        }
    }

    /// Fills each directory made under the root (cgroupfs control files).
    pub fn on_mkdir(mut self, fill: impl Fn(&Path) + Send + Sync + 'static) -> Recorder {
        self.on_mkdir = Some(Box::new(fill));
        self
    }

    /// The effective uid and gid the code sees.
    pub fn with_ids(mut self, uid: u32, gid: u32) -> Recorder {
        self.ids = (uid, gid);
        self
    }

    /// Lives as long as the test (cgroup handles keep a `'static` kernel).
    pub fn leak(self) -> &'static Recorder {
        Box::leak(Box::new(self))
    }

    /// The first call whose line starts with `call` fails with `errno`.
    pub fn fail(&self, call: &str, errno: Errno) {
        self.lock_failures().push((call.to_string(), errno));
    }

    /// The calls so far, and forgets them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock_calls())
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, Vec<(String, Errno)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn show(&self, path: &Path) -> String {
        match self.root.as_deref().and_then(|r| path.strip_prefix(r).ok()) {
            Some(rest) if rest.as_os_str().is_empty() => "$ROOT".to_string(),
            Some(rest) => format!("$ROOT/{}", rest.display()),
            None => path.display().to_string(),
        }
    }

    /// Writes `line` down; a scripted failure answers it instead of the real effect, and is
    /// written down as `<line> = <errno>`.
    fn record(&self, line: String) -> nix::Result<()> {
        let failure = {
            let mut failures = self.lock_failures();
            let at = failures
                .iter()
                .position(|(start, _)| line.starts_with(start));
            at.map(|at| failures.remove(at).1)
        };
        match failure {
            None => {
                self.lock_calls().push(line);
                Ok(())
            }
            Some(errno) => {
                self.lock_calls().push(format!("{line} = {errno:?}"));
                Err(errno)
            }
        }
    }

    fn under_root(&self, path: &Path) -> bool {
        self.root.as_deref().is_some_and(|r| path.starts_with(r))
    }
}

/// `MS_NOSUID|MS_NODEV` as `nosuid,nodev`.
pub(crate) fn mount_flags(flags: MsFlags) -> String {
    let names: Vec<String> = flags
        .iter_names()
        .map(|(name, _)| name.trim_start_matches("MS_").to_lowercase())
        .collect();
    names.join(",")
}

fn clone_flags(flags: CloneFlags) -> String {
    let names: Vec<String> = flags
        .iter_names()
        .map(|(name, _)| name.trim_start_matches("CLONE_").to_lowercase())
        .collect();
    names.join(",")
}

fn ids([r, e, s]: ResIds) -> String {
    let one = |id: Option<u32>| id.map_or("-".to_string(), |id| id.to_string());
    format!("{} {} {}", one(r), one(e), one(s))
}

impl Kernel for Recorder {
    fn effective_ids(&self) -> (u32, u32) {
        self.ids
    }

    fn setresuid(&self, set: ResIds) -> nix::Result<()> {
        self.record(format!("setresuid {}", ids(set)))
    }

    fn setresgid(&self, set: ResIds) -> nix::Result<()> {
        self.record(format!("setresgid {}", ids(set)))
    }

    fn setgroups(&self, groups: &[u32]) -> nix::Result<()> {
        self.record(format!("setgroups {groups:?}"))
    }

    fn prctl(&self, op: Prctl) -> nix::Result<()> {
        let line = match op {
            Prctl::SetDumpable(on) => format!("prctl dumpable {}", u8::from(on)),
            Prctl::SetParentDeathSignal(signal) => format!("prctl pdeathsig {signal}"),
            Prctl::SetNoNewPrivs => "prctl no_new_privs".to_string(),
            Prctl::SetKeepCaps => "prctl keepcaps".to_string(),
        };
        self.record(line)
    }

    unsafe fn clone_process(&self, flags: CloneFlags) -> nix::Result<Option<Pid>> {
        self.record(format!("clone {}", clone_flags(flags)))?;
        Ok(Some(Pid::from_raw(self.clone_pid)))
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(format!("unshare {}", clone_flags(flags)))
    }

    fn setns(&self, _fd: BorrowedFd<'_>, flags: CloneFlags) -> nix::Result<()> {
        self.record(format!("setns {}", clone_flags(flags)))
    }

    fn kill(&self, pid: Pid, signal: Signal) -> nix::Result<()> {
        self.record(format!("kill {pid} {signal}"))
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(format!("sethostname {name}"))
    }

    fn loopback_up(&self) -> nix::Result<()> {
        self.record("loopback up".to_string())
    }

    fn dup2(&self, old: RawFd, new: RawFd) -> nix::Result<()> {
        self.record(format!("dup2 {old} {new}"))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        // Like the kernel: a mount onto a path that is not there fails, and changes nothing.
        if self.under_root(target) && !target.exists() {
            return Err(Errno::ENOENT);
        }
        let mut line = format!(
            "mount {} {}",
            source.map_or("-".to_string(), |s| self.show(s)),
            self.show(target)
        );
        if let Some(fstype) = fstype {
            line.push_str(&format!(" type {fstype}"));
        }
        line.push_str(&format!(" [{}]", mount_flags(flags)));
        if let Some(data) = data {
            line.push_str(&format!(" {data}"));
        }
        self.record(line)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        let detach = if flags.contains(MntFlags::MNT_DETACH) {
            " detach"
        } else {
            ""
        };
        self.record(format!("umount {}{detach}", self.show(target)))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            self.show(new_root),
            self.show(put_old)
        ))
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chdir {}", self.show(path)))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        Ok(self.record(format!("chown {} {uid}:{gid}", self.show(path)))?)
    }

    fn locked_mount_flags(&self, _path: &Path) -> MsFlags {
        MsFlags::empty()
    }

    fn write_file(&self, path: &Path, value: &str) -> io::Result<()> {
        self.record(format!("write {} {value:?}", self.show(path)))?;
        if self.under_root(path) {
            // Like a control file: it exists, and holds the last value written.
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))?;
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("mkdir {}", self.show(path)))?;
        if self.under_root(path) {
            fs::create_dir(path)?;
            if let Some(fill) = &self.on_mkdir {
                fill(path);
            }
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("rmdir {}", self.show(path)))?;
        if self.under_root(path) {
            // cgroupfs removes a group with its control files, never with subgroups.
            for entry in fs::read_dir(path)?.flatten() {
                if entry.path().is_file() {
                    fs::remove_file(entry.path())?;
                }
            }
            fs::remove_dir(path)?;
        }
        Ok(())
    }
}
