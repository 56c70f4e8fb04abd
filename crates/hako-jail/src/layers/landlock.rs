//! Landlock: limit file access to the paths mounted into the jail (defence in depth).
//!
//! `restrict` runs inside the jail, in the single-threaded process that is about to install
//! seccomp and exec the interpreter. Landlock applies to the calling thread and its future
//! children, so calling it from one thread of a multi-threaded process would leave the others
//! unrestricted.

use std::fmt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use nix::errno::Errno;

/// The ABI whose file-system rights are handled. V5 holds every fs right of the kernels we test
/// on (IoctlDev is the newest); on older kernels the crate drops what they lack (best effort).
const HANDLED_ABI: ABI = ABI::V5;

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version instead of creating a ruleset.
const CREATE_RULESET_VERSION: libc::c_uint = 1;

/// How much of the requested Landlock policy the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Every handled right is enforced.
    FullyEnforced,
    /// The kernel's ABI lacks some handled rights; the rest are enforced.
    PartiallyEnforced,
    /// The kernel has no Landlock (or it is disabled); nothing is enforced.
    NotEnforced,
}

impl fmt::Display for LandlockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LandlockStatus::FullyEnforced => "fully enforced",
            LandlockStatus::PartiallyEnforced => "partially enforced (older Landlock ABI)",
            LandlockStatus::NotEnforced => "not enforced (Landlock unavailable)",
        })
    }
}

/// Errors building or applying the Landlock ruleset.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock: cannot declare the handled rights and scopes: {source}")]
    HandleAccess { source: landlock::RulesetError },
    #[error("landlock: cannot create the ruleset: {source}")]
    CreateRuleset { source: landlock::RulesetError },
    #[error("landlock: cannot open {path} to allow it: {source}; the path must exist in the jail")]
    OpenPath {
        path: PathBuf,
        source: landlock::PathFdError,
    },
    #[error("landlock: cannot add a rule for {path}: {source}")]
    AddRule {
        path: PathBuf,
        source: landlock::RulesetError,
    },
    #[error("landlock: cannot restrict the process: {source}")]
    RestrictSelf { source: landlock::RulesetError },
}

/// The kernel's Landlock ABI version, or the errno telling why there is none
/// (`ENOSYS`: built without Landlock; `EOPNOTSUPP`: disabled at boot).
pub(crate) fn probe_abi() -> Result<i32, Errno> {
    // SAFETY: with a NULL attr and size 0 and only the VERSION flag, the kernel reads no memory
    // and creates nothing; it returns the ABI number or -1 with errno.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(i32::try_from(ret).unwrap_or(i32::MAX))
    }
}

/// The kernel's Landlock ABI version; None when unsupported or disabled.
pub(crate) fn abi_version() -> Option<i32> {
    probe_abi().ok().filter(|&v| v > 0)
}

/// Restricts the calling thread (and what it later execs or forks) to read+execute under
/// `read_exec` and full file access under `read_write`. Everything else is denied.
///
/// Call it from a single-threaded process, after no_new_privs and before seccomp.
pub(crate) fn restrict(
    read_exec: &[PathBuf],
    read_write: &[PathBuf],
) -> Result<LandlockStatus, LandlockError> {
    let all = AccessFs::from_all(HANDLED_ABI);
    let read = AccessFs::from_read(HANDLED_ABI);
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(|source| LandlockError::HandleAccess { source })?
        // ABI 6: no signals to, and no abstract unix sockets of, processes outside this run's
        // domain (other runs, the zygote, the supervisor). Dropped on older kernels.
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(|source| LandlockError::HandleAccess { source })?
        .create()
        .map_err(|source| LandlockError::CreateRuleset { source })?;
    let rules = read_exec
        .iter()
        .map(|p| (p, read))
        .chain(read_write.iter().map(|p| (p, all)));
    for (path, access) in rules {
        let rule = path_rule(path, access)?;
        ruleset = ruleset
            .add_rule(rule)
            .map_err(|source| LandlockError::AddRule {
                path: path.clone(),
                source,
            })?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|source| LandlockError::RestrictSelf { source })?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
    })
}

/// A rule for `path`; a non-directory only gets the rights that apply to files.
fn path_rule(
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<PathBeneath<PathFd>, LandlockError> {
    let fd = PathFd::new(path).map_err(|source| LandlockError::OpenPath {
        path: path.to_path_buf(),
        source,
    })?;
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(true);
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(HANDLED_ABI)
    };
    Ok(PathBeneath::new(fd, access))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_ENV: &str = "HAKO_TEST_LANDLOCK_CHILD_DIR";

    #[test]
    fn status_display_is_readable() {
        assert_eq!(LandlockStatus::FullyEnforced.to_string(), "fully enforced");
        assert!(LandlockStatus::NotEnforced
            .to_string()
            .contains("not enforced"));
    }

    #[test]
    fn missing_path_is_an_error_with_the_path() {
        if abi_version().is_none() {
            eprintln!("skipped: the kernel has no Landlock");
            return;
        }
        // Fails before restrict_self, so this process stays unrestricted.
        let err = restrict(&[PathBuf::from("/nonexistent/hako-landlock")], &[]).unwrap_err();
        assert!(matches!(err, LandlockError::OpenPath { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/hako-landlock"));
    }

    /// Runs twice: as the test (parent), which re-executes this test binary filtered to this
    /// test with `CHILD_ENV` set, and as that child, which restricts itself and probes.
    #[test]
    fn restrict_denies_paths_outside_the_rules() {
        if let Some(dir) = std::env::var_os(CHILD_ENV) {
            let dir = PathBuf::from(dir);
            let status = restrict(&[PathBuf::from("/usr")], std::slice::from_ref(&dir)).unwrap();
            assert_ne!(status, LandlockStatus::NotEnforced);
            let err = std::fs::read("/etc/hostname").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
            std::fs::read("/usr/bin/env").expect("/usr/bin/env stays readable");
            std::fs::write(dir.join("written"), b"ok").expect("the rw dir stays writable");
            return;
        }
        let Some(abi) = abi_version() else {
            eprintln!("skipped: the kernel has no Landlock (landlock_create_ruleset failed)");
            return;
        };
        if !Path::new("/etc/hostname").exists() {
            eprintln!("skipped: /etc/hostname does not exist on this host");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                &format!(
                    "{}::restrict_denies_paths_outside_the_rules",
                    module_path!().trim_start_matches("hako_jail::")
                ),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child failed (ABI {abi}):\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
        assert_eq!(std::fs::read(tmp.path().join("written")).unwrap(), b"ok");
    }
}
