//! What the unit tests share: a plain run spec.

use crate::spec::{JailSpec, Limits, NetworkMode, RunIds, SeccompMode, SeccompSpec};
use hako_wire::Language;
use std::path::{Path, PathBuf};

/// A Python run with host ids 100000, no network, its root built at `root`.
pub(crate) fn spec(root: &Path) -> JailSpec {
    JailSpec {
        language: Language::Python3,
        interpreter: PathBuf::from("/usr/bin/python3"),
        args: Vec::new(),
        env: Vec::new(),
        code_path: PathBuf::from("/opt/hako/main.py"),
        ro_binds: Vec::new(),
        mapped_binds: Vec::new(),
        limits: Limits {
            memory_bytes: 64 << 20,
            pids: 16,
            tmp_bytes: 1 << 20,
            output_bytes: 1 << 20,
            timeout_ms: 5_000,
            nofile: 64,
            cpu_percent: 0,
        },
        network: NetworkMode::None,
        egress: None,
        data_owner: None,
        seccomp: SeccompSpec {
            mode: SeccompMode::Enforce,
            extra_allowed: Vec::new(),
        },
        ids: RunIds {
            host_uid: 100_000,
            host_gid: 100_000,
        },
        id_pool: None,
        root_mountpoint: root.to_path_buf(),
        insecure: false,
        zygote: false,
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        deferred: false,
    }
}
