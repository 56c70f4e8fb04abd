//! Per-run cgroups at start-up: a private cgroup2 mount where the container's cgroup2 is
//! read-only, and otherwise a loud word that the supervisor's memory guard limits each run.

use crate::config::Config;
use hako_jail::cgroup::{CgroupVersion, Cgroups};
use hako_jail::cgroup_setup::{self, PrivateCgroup};

/// What start-up found; keeps the private mount's keeper alive as long as it lives.
pub struct CgroupSetup {
    _keeper: Option<PrivateCgroup>,
    /// One line when runs have no memory cgroup (the memory guard limits them instead).
    pub degraded: Option<String>,
}

/// Points `config.hako.cgroup_root` at a private cgroup2 mount where that is what makes
/// per-run cgroups work, and says what limits runs when nothing does.
pub fn prepare(config: &mut Config, serving: bool) -> CgroupSetup {
    let root = config.hako.cgroup_root.clone();
    let mut keeper = None;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root_user = unsafe { libc::geteuid() } == 0;
    if root_user && cgroup_setup::wants_private_mount(&root) {
        let started = std::env::current_exe()
            .map_err(|source| cgroup_setup::CgroupSetupError::Spawn {
                exe: "hako".into(),
                source,
            })
            .and_then(|exe| PrivateCgroup::start(&exe, &root));
        match started {
            Ok(private) => {
                if serving {
                    tracing::info!(
                        "{} is a read-only cgroup2: runs use a private cgroup2 mount in hako's own \
                         user and cgroup namespaces (kept by pid {})",
                        root.display(),
                        private.pid()
                    );
                }
                config.hako.cgroup_root = private.root().to_path_buf();
                keeper = Some(private);
            }
            Err(err) => tracing::warn!("cannot mount a private cgroup2: {err}"),
        }
    }
    let support = Cgroups::detect(&config.hako.cgroup_root).support();
    let degraded = (!support.memory).then(|| {
        format!(
            "no per-run memory cgroup ({}); the supervisor's memory guard enforces \
             hako.limits.memory_mb by polling each run's memory{}",
            support.detail,
            hint(support.version)
        )
    });
    if let (Some(line), true) = (&degraded, serving) {
        tracing::warn!("{line}");
    }
    CgroupSetup {
        _keeper: keeper,
        degraded,
    }
}

/// What an operator can do to get per-run cgroups back.
fn hint(version: Option<CgroupVersion>) -> &'static str {
    match version {
        Some(CgroupVersion::V1) => {
            "; for cgroup limits on this cgroup v1 host, create /sys/fs/cgroup/memory/hako-sandbox \
             and /sys/fs/cgroup/pids/hako-sandbox on the host and bind-mount them over \
             /sys/fs/cgroup/memory and /sys/fs/cgroup/pids (docs/deploy.md)"
        }
        Some(CgroupVersion::V2) => {
            "; for cgroup limits, give the container CAP_SETFCAP and unshare and mount in its \
             seccomp profile (hako mounts a private cgroup2), or a writable cgroup2 \
             (docs/deploy.md)"
        }
        None => "",
    }
}
