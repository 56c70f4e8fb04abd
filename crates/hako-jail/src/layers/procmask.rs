//! Masks what a fresh `/proc` tells about the host: the paths a container runtime masks
//! (runc's list is the reference) plus the kernel command line and the boot id. Files get
//! `/dev/null` bound over them, directories an empty read-only tmpfs. Paths the kernel does
//! not have are skipped.

use crate::sys::Kernel;
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("mask {path}: {source}")]
pub struct MaskError {
    path: PathBuf,
    #[source]
    source: nix::Error,
}

/// Files under `/proc`, read as empty.
const MASKED_FILES: &[&str] = &[
    "cmdline",
    "sys/kernel/random/boot_id",
    "kcore",
    "keys",
    "key-users",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "kallsyms",
    "config.gz",
    "sysrq-trigger",
    "interrupts",
    "iomem",
    "ioports",
    "vmallocinfo",
];

/// Directories under `/proc`, shown empty.
const MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi", "bus", "driver", "irq", "fs"];

/// Masks the host details of the proc file system mounted at `proc`; `dev_null` is a
/// `/dev/null` device node the process can bind from.
///
/// Only the first file mask is a bind of `dev_null` made read-only; every other file is a
/// bind of that mask, and every masked directory a bind of the first directory's empty
/// read-only tmpfs. A bind keeps its source mount's flags, so each mask is read-only,
/// nosuid, nodev and noexec, with two mounts and one file system fewer per path.
pub fn mask(kernel: &dyn Kernel, proc: &Path, dev_null: &Path) -> Result<(), MaskError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut file_mask: Option<PathBuf> = None;
    for file in MASKED_FILES {
        let path = proc.join(file);
        if !path.exists() {
            continue;
        }
        match &file_mask {
            Some(mask) => bind(kernel, mask, &path)?,
            None => {
                bind(kernel, dev_null, &path)?;
                let read_only = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags;
                kernel
                    .mount(None, &path, None, read_only, None)
                    .map_err(|source| MaskError {
                        path: path.clone(),
                        source,
                    })?;
                file_mask = Some(path);
            }
        }
    }
    let mut dir_mask: Option<PathBuf> = None;
    for dir in MASKED_DIRS {
        let path = proc.join(dir);
        if !path.is_dir() {
            continue;
        }
        match &dir_mask {
            Some(mask) => bind(kernel, mask, &path)?,
            None => {
                kernel
                    .mount(
                        Some(Path::new("tmpfs")),
                        &path,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY | flags,
                        Some("size=4k,mode=0555"),
                    )
                    .map_err(|source| MaskError {
                        path: path.clone(),
                        source,
                    })?;
                dir_mask = Some(path);
            }
        }
    }
    Ok(())
}

fn bind(kernel: &dyn Kernel, source: &Path, path: &Path) -> Result<(), MaskError> {
    kernel
        .mount(Some(source), path, None, MsFlags::MS_BIND, None)
        .map_err(|source| MaskError {
            path: path.to_path_buf(),
            source,
        })
}
