//! Masks what a fresh `/proc` tells about the host: the paths a container runtime masks
//! (runc's list is the reference) plus the kernel command line and the boot id. Files get
//! `/dev/null` bound over them, directories an empty read-only tmpfs. Paths the kernel does
//! not have are skipped: their mount fails with `ENOENT` (or `ENOTDIR`), so no lookup
//! precedes it (a `stat` under `/proc` costs about as much as the mount).

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
    // A missing source would also fail with ENOENT: it must not pass for missing targets.
    if !dev_null.exists() {
        return Err(MaskError {
            path: dev_null.to_path_buf(),
            source: nix::Error::ENOENT,
        });
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut file_mask: Option<PathBuf> = None;
    for file in MASKED_FILES {
        let path = proc.join(file);
        match &file_mask {
            Some(mask) => {
                skip_if_missing(bind(kernel, mask, &path))?;
            }
            None => {
                if !skip_if_missing(bind(kernel, dev_null, &path))? {
                    continue;
                }
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
        match &dir_mask {
            Some(mask) => {
                skip_if_missing(bind(kernel, mask, &path))?;
            }
            None => {
                let mounted = kernel
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
                    });
                if !skip_if_missing(mounted)? {
                    continue;
                }
                dir_mask = Some(path);
            }
        }
    }
    Ok(())
}

/// Whether the mask was mounted: false where the path is not there (or is not of the
/// mask's kind), which is no error.
fn skip_if_missing(mounted: Result<(), MaskError>) -> Result<bool, MaskError> {
    match mounted {
        Ok(()) => Ok(true),
        Err(MaskError {
            source: nix::Error::ENOENT | nix::Error::ENOTDIR,
            ..
        }) => Ok(false),
        Err(err) => Err(err),
    }
}

fn bind(kernel: &dyn Kernel, source: &Path, path: &Path) -> Result<(), MaskError> {
    kernel
        .mount(Some(source), path, None, MsFlags::MS_BIND, None)
        .map_err(|source| MaskError {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::record::Recorder;
    use std::fs;

    #[test]
    fn paths_the_kernel_lacks_are_skipped_without_a_lookup_and_a_missing_source_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        fs::create_dir_all(proc.join("irq")).unwrap();
        fs::create_dir_all(proc.join("fs")).unwrap();
        fs::write(proc.join("cmdline"), b"").unwrap();
        fs::write(proc.join("kcore"), b"").unwrap();
        let null = root.path().join("null");
        fs::write(&null, b"").unwrap();
        let kernel = Recorder::over(root.path());
        mask(&kernel, &proc, &null).unwrap();
        assert_eq!(
            kernel.take(),
            [
                "mount $ROOT/null $ROOT/proc/cmdline [bind]",
                "mount - $ROOT/proc/cmdline [rdonly,nosuid,nodev,noexec,remount,bind]",
                "mount $ROOT/proc/cmdline $ROOT/proc/kcore [bind]",
                "mount tmpfs $ROOT/proc/irq type tmpfs [rdonly,nosuid,nodev,noexec] size=4k,mode=0555",
                "mount $ROOT/proc/irq $ROOT/proc/fs [bind]",
            ]
        );
        fs::remove_file(&null).unwrap();
        assert!(mask(&kernel, &proc, &null).is_err());
        assert!(kernel.take().is_empty());
    }
}
