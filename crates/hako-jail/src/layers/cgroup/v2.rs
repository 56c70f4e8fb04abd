//! cgroup v2: one group per run under `<mount>/hako`, controllers enabled on the way down.

use std::collections::BTreeSet;
use std::path::Path;

use super::limits::{cpu_max, max_or, parent_cpu_weight};
use super::{
    create_dir_idempotent, create_run_dir, read_controllers_file, read_pids, set, weigh_parent,
    CgroupError, CgroupLimits, Controller, RunCgroup, PARENT, SERVER_LEAF,
};
use crate::sys::Kernel;

/// Creates `<mount>/hako/<name>` with `limits`; on a failed limit the group is removed again.
pub(super) fn create(
    kernel: &'static dyn Kernel,
    mount: &Path,
    controllers: &BTreeSet<String>,
    name: &str,
    limits: &CgroupLimits,
) -> Result<RunCgroup, CgroupError> {
    let cpu = (limits.cpu_percent > 0).then_some("cpu");
    let wanted: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .chain(cpu)
        .filter(|c| controllers.contains(*c))
        .collect();
    if !wanted.iter().any(|c| *c != "cpu") {
        return Err(CgroupError::Unavailable {
            root: mount.to_path_buf(),
        });
    }
    match enable_controllers(kernel, mount, &wanted) {
        Err(CgroupError::InternalProcesses { .. }) => {
            // Inside a container with its own cgroup namespace the root group holds our
            // processes, and a non-root group with processes may not enable controllers.
            // Like docker-in-docker entrypoints, move every process of the root group into
            // the `hako-server` leaf, then retry once. The true host root is exempt from the
            // rule, so this only happens where we own the whole (namespaced) tree.
            evacuate_root(kernel, mount)?;
            enable_controllers(kernel, mount, &wanted)?;
        }
        other => other?,
    }
    let parent = mount.join(PARENT);
    create_dir_idempotent(kernel, &parent)?;
    enable_controllers(kernel, &parent, &wanted)?;
    if wanted.contains(&"cpu") {
        weigh_parent(kernel, &parent, "cpu.weight", parent_cpu_weight().1);
    }
    let dir = parent.join(name);
    create_run_dir(kernel, &dir)?;
    let run = RunCgroup::new(vec![(Controller::Unified, dir.clone())], kernel);
    let result = (|| {
        if wanted.contains(&"memory") {
            set(kernel, &dir, "memory.max", &max_or(limits.memory_bytes))?;
            if dir.join("memory.swap.max").exists() {
                set(kernel, &dir, "memory.swap.max", "0")?;
            }
        }
        if wanted.contains(&"pids") {
            set(kernel, &dir, "pids.max", &max_or(limits.pids))?;
        }
        if wanted.contains(&"cpu") {
            set(kernel, &dir, "cpu.max", &cpu_max(limits.cpu_percent))?;
        }
        Ok(())
    })();
    run.unless(result)
}

/// Sets `limits` on an existing v2 group: the memory, pids and cpu limits where flagged as
/// changed.
pub(super) fn retune(
    kernel: &dyn Kernel,
    dir: &Path,
    limits: &CgroupLimits,
    [memory, pids, cpu]: [bool; 3],
) -> Result<(), CgroupError> {
    if memory {
        set(kernel, dir, "memory.max", &max_or(limits.memory_bytes))?;
    }
    if pids {
        set(kernel, dir, "pids.max", &max_or(limits.pids))?;
    }
    if cpu && dir.join("cpu.max").exists() {
        set(kernel, dir, "cpu.max", &cpu_max(limits.cpu_percent))?;
    }
    Ok(())
}

/// Enables `wanted` in `dir/cgroup.subtree_control`, skipping those already on.
fn enable_controllers(kernel: &dyn Kernel, dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = read_controllers_file(&path).unwrap_or_default();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !enabled.contains(**c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let controllers = missing.join(" ");
    kernel.write_file(&path, &controllers).map_err(|source| {
        if source.raw_os_error() == Some(libc::EBUSY) {
            CgroupError::InternalProcesses {
                path: dir.to_path_buf(),
            }
        } else {
            CgroupError::EnableControllers {
                path: dir.to_path_buf(),
                controllers,
                source,
            }
        }
    })
}

/// Moves every process of the v2 root group into `<mount>/hako-server`.
fn evacuate_root(kernel: &dyn Kernel, mount: &Path) -> Result<(), CgroupError> {
    let leaf = mount.join(SERVER_LEAF);
    create_dir_idempotent(kernel, &leaf)?;
    let procs = leaf.join("cgroup.procs");
    for pid in read_pids(&mount.join("cgroup.procs"))? {
        match kernel.write_file(&procs, &pid.to_string()) {
            // Exited meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::MoveToLeaf {
                    path: leaf,
                    pid,
                    source,
                })
            }
            Ok(()) => {}
        }
    }
    Ok(())
}
