//! What the command line needs from the jail layer, so that the binary reaches the jail only
//! through the runtime: the helpers' entry points, the host's isolation layers, the effective
//! syscall policy and cgroup housekeeping.

use crate::config::Config;
use hako_jail::cgroup::Cgroups;
use hako_jail::seccomp::SeccompError;

pub use hako_jail::probe::{LayerReport, LayerState};

/// The single-threaded jail helper (`hako __jail`): reads one run on stdin.
pub fn jail_helper_main() -> i32 {
    hako_jail::helper::main()
}

/// A warm Python zygote and its supervisor (`hako __zygote`).
pub fn zygote_helper_main() -> i32 {
    hako_jail::zygote::main()
}

/// The helper that relays input and output while the program runs (`hako __live`).
/// `hako __zygote-parent`: a pool's preloaded parent, which forks worker zygotes.
pub fn zygote_parent_main() -> i32 {
    hako_jail::zygote::parent_main()
}

/// `hako __zygote-worker`: the helper of one worker zygote forked from a parent.
pub fn zygote_worker_main() -> i32 {
    hako_jail::zygote::worker_main()
}

/// `hako __cgroup-mount`: keeps a private cgroup2 mount for the server (see [`crate::cgroups`]).
pub fn cgroup_keeper_main(root: &std::path::Path) -> i32 {
    hako_jail::cgroup_setup::keeper_main(root)
}

pub fn live_helper_main() -> i32 {
    hako_jail::live::main()
}

/// One report per isolation layer: whether this host enforces it.
pub fn probe_layers(config: &Config) -> Vec<LayerReport> {
    hako_jail::probe::probe_all(&config.hako.cgroup_root)
}

/// The layers hako refuses to run without (unless `hako.insecure` is set).
/// Whether proxy-mode runs can make their own network namespace and guard listener here.
pub fn probe_egress() -> LayerReport {
    hako_jail::probe::probe_egress()
}

pub fn missing_required(reports: &[LayerReport]) -> Vec<&LayerReport> {
    hako_jail::probe::missing_required(reports)
}

/// The seccomp policy a run of `language` gets on this machine, `allowed_syscalls` included,
/// as text for `hako doctor --policy`. Where no memory cgroup would hold the run, the
/// supervisor's memory guard limits it and the policy says what that refuses.
pub fn effective_policy(config: &Config, language: &str) -> Result<String, SeccompError> {
    let policy = hako_jail::seccomp::policy::effective_policy(
        language,
        hako_jail::seccomp::NATIVE_ARCH,
        config.allowed_syscall_numbers(),
    )?;
    let memory_cgroup = nix::unistd::geteuid().is_root()
        && Cgroups::detect(&config.hako.cgroup_root).support().memory;
    let policy = if hako_jail::helper::memory_guard::guards(
        memory_cgroup,
        config.hako.limits.memory_mb << 20,
    ) {
        policy.under_memory_guard()?
    } else {
        policy
    };
    Ok(policy.to_string())
}

/// Whether runs get a CPU quota here (a writable cpu cgroup controller exists).
pub fn cpu_limit_enforced(config: &Config) -> bool {
    Cgroups::detect(&config.hako.cgroup_root).support().cpu
}

/// Removes the empty cgroups earlier runs left behind; returns how many.
pub fn remove_stale_cgroups(config: &Config) -> usize {
    Cgroups::detect(&config.hako.cgroup_root).remove_stale()
}
