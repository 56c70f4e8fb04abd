//! The run's root file system: a tmpfs with read-only binds of exactly what the interpreter
//! needs, synthetic /etc files, a minimal /dev, a fresh /proc and a size-capped /tmp.
//!
//! Everything here runs inside the run's new user + mount namespaces, in the single-threaded
//! jail init process, before any program code exists in the jail.

use crate::sys::Kernel;
use nix::mount::{MntFlags, MsFlags};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("make mounts private: {0}")]
    MakePrivate(nix::Error),
    #[error("mount tmpfs at {path}: {source}")]
    Tmpfs { path: PathBuf, source: nix::Error },
    #[error("bind {src} read-only into the jail: {source}")]
    Bind { src: PathBuf, source: nix::Error },
    #[error("bind source {path} is not usable: {source}")]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("path {path} has too many symlinks")]
    SymlinkLoop { path: PathBuf },
    #[error("create {path} in the jail root: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount a fresh /proc: {0} (a host that masks /proc, e.g. an unprivileged container, must allow it)")]
    Proc(nix::Error),
    #[error("pivot_root into the jail root: {0}")]
    PivotRoot(nix::Error),
    #[error("jail path {path} of a mapped bind must be absolute and without `..`")]
    Target { path: PathBuf },
    #[error("remount {path} read-only: {source}")]
    Remount { path: PathBuf, source: nix::Error },
    #[error(transparent)]
    MaskProc(#[from] crate::procmask::MaskError),
}

/// What the jail root contains.
pub struct RootPlan<'a> {
    /// Empty host directory the root tmpfs is mounted on (only in the run's mount namespace).
    pub mountpoint: &'a Path,
    /// Host paths (files or directories, possibly through symlinks) bound read-only at the
    /// same path.
    pub ro_binds: &'a [PathBuf],
    /// `(host source, jail target)` placed read-only at a different path, where the mount
    /// table does not name the source: a directory as an overlay, a file as a copy.
    pub mapped_binds: &'a [(PathBuf, PathBuf)],
    /// Where the program text goes, and the text.
    pub code_path: &'a Path,
    pub code: &'a [u8],
    /// Size cap of the writable /tmp.
    pub tmp_bytes: u64,
    /// In-jail uid/gid owning /tmp.
    pub uid: u32,
    pub gid: u32,
}

const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];
const MAX_SYMLINKS: usize = 40;

/// Builds the root and pivots into it. On return the process sees only the jail root, with
/// cwd `/tmp`.
pub fn build_root(kernel: &dyn Kernel, plan: &RootPlan<'_>) -> Result<(), MountError> {
    kernel
        .mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        )
        .map_err(MountError::MakePrivate)?;
    let root = plan.mountpoint;
    // The root holds directories, symlinks, /etc files, the program text and the copies of
    // mapped files.
    let root_size = plan.code.len() as u64 + mapped_file_bytes(plan.mapped_binds) + (4 << 20);
    mount_tmpfs(
        kernel,
        root,
        root_size,
        "0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;

    bind_closure(kernel, root, plan.ro_binds)?;
    for (src, target) in plan.mapped_binds {
        place_mapped(kernel, root, src, target)?;
    }
    write_etc(root)?;
    build_dev(kernel, root)?;

    let proc_dir = mkdirs(root, Path::new("/proc"))?;
    mount_proc(kernel, &proc_dir).map_err(MountError::Proc)?;
    crate::procmask::mask(kernel, &proc_dir, &inside(root, Path::new("/dev/null")))?;

    mount_scratch(kernel, root, plan.tmp_bytes, plan.uid, plan.gid)?;
    fill_scratch(kernel, root, Some((plan.uid, plan.gid)))?;

    let code_file = inside(root, plan.code_path);
    if let Some(parent) = plan.code_path.parent() {
        mkdirs(root, parent)?;
    }
    write_file(&code_file, plan.code, 0o444)?;

    let here = Path::new(".");
    kernel.chdir(root).map_err(MountError::PivotRoot)?;
    kernel
        .pivot_root(here, here)
        .map_err(MountError::PivotRoot)?;
    kernel
        .umount(here, MntFlags::MNT_DETACH)
        .map_err(MountError::PivotRoot)?;
    kernel
        .chdir(Path::new("/"))
        .map_err(MountError::PivotRoot)?;

    for path in ["/dev", "/"] {
        remount_read_only(kernel, Path::new(path))?;
    }
    kernel
        .chdir(Path::new("/tmp"))
        .map_err(MountError::PivotRoot)?;
    Ok(())
}

/// A fresh proc file system of the current pid namespace at `path` (host details still to
/// mask, see [`crate::procmask`]).
pub fn mount_proc(kernel: &dyn Kernel, path: &Path) -> nix::Result<()> {
    kernel.mount(
        Some(Path::new("proc")),
        path,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
}

/// The run's home: inside its /tmp, private to the run's user (nltk refuses a world-writable
/// home).
pub const RUN_HOME: &str = "/tmp/home";

/// Prepared caches (e.g. matplotlib's font list): each entry of this jail directory appears
/// in every run's /tmp, a file as a symlink, a directory as a directory of the run's user
/// holding symlinks to its files.
pub const SEED_IN_JAIL: &str = "/opt/hako/seed";

/// Mounts the run's own writable places under `root`, owned by `uid`/`gid` (set by mount
/// options, so no CAP_CHOWN is needed): a size-capped /tmp, and /dev/shm (POSIX semaphores
/// and shared memory) with the same cap. Both are fresh tmpfs mounts, so nothing in them
/// outlives the run. [`fill_scratch`] then creates what every run finds in /tmp.
pub fn mount_scratch(
    kernel: &dyn Kernel,
    root: &Path,
    tmp_bytes: u64,
    uid: u32,
    gid: u32,
) -> Result<(), MountError> {
    for dir in ["/tmp", "/dev/shm"] {
        let path = mkdirs(root, Path::new(dir))?;
        let data = format!("size={tmp_bytes},mode=1777,uid={uid},gid={gid}");
        kernel
            .mount(
                Some(Path::new("tmpfs")),
                &path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            )
            .map_err(|source| MountError::Tmpfs { path, source })?;
    }
    Ok(())
}

/// Creates [`RUN_HOME`] (mode 0700) and the links to prepared caches in the run's fresh
/// /tmp. `owner`: give them to this uid/gid (a caller with CAP_CHOWN); `None`: the caller
/// already is the run's user.
pub fn fill_scratch(
    kernel: &dyn Kernel,
    root: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), MountError> {
    let home = mkdirs(root, Path::new(RUN_HOME))?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).map_err(|source| {
        MountError::Create {
            path: home.clone(),
            source,
        }
    })?;
    if let Some((uid, gid)) = owner {
        chown(kernel, &home, uid, gid)?;
    }
    seed_tmp(kernel, root, owner)
}

/// Links the entries of [`SEED_IN_JAIL`] (if bound) into the run's /tmp.
fn seed_tmp(kernel: &dyn Kernel, root: &Path, owner: Option<(u32, u32)>) -> Result<(), MountError> {
    let seed = Path::new(SEED_IN_JAIL);
    let Ok(entries) = fs::read_dir(inside(root, seed)) else {
        return Ok(());
    };
    let link = |target: &Path, at: PathBuf| {
        symlink(target, &at).map_err(|source| MountError::Create { path: at, source })
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let tmp_entry = Path::new("/tmp").join(&name);
        if !entry.path().is_dir() {
            link(&seed.join(&name), inside(root, &tmp_entry))?;
            continue;
        }
        let dir = mkdirs(root, &tmp_entry)?;
        if let Some((uid, gid)) = owner {
            chown(kernel, &dir, uid, gid)?;
        }
        for file in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            let file_name = file.file_name();
            link(&seed.join(&name).join(&file_name), dir.join(&file_name))?;
        }
    }
    Ok(())
}

fn mount_tmpfs(
    kernel: &dyn Kernel,
    path: &Path,
    size: u64,
    mode: &str,
    flags: MsFlags,
) -> Result<(), MountError> {
    let data = format!("size={size},mode={mode}");
    kernel
        .mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            flags,
            Some(data.as_str()),
        )
        .map_err(|source| MountError::Tmpfs {
            path: path.to_path_buf(),
            source,
        })
}

fn remount_read_only(kernel: &dyn Kernel, path: &Path) -> Result<(), MountError> {
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | kernel.locked_mount_flags(path);
    kernel
        .mount(None, path, None, flags, None)
        .map_err(|source| MountError::Remount {
            path: path.to_path_buf(),
            source,
        })
}

/// Binds every path read-only, recreating the symlinks on the way so that e.g.
/// `/lib64/ld-linux-x86-64.so.2` resolves inside the jail as on the host.
fn bind_closure(kernel: &dyn Kernel, root: &Path, binds: &[PathBuf]) -> Result<(), MountError> {
    // Ancestors sort before descendants, so a bound directory covers what lies below it.
    let mut resolved: Vec<(PathBuf, &PathBuf)> = Vec::with_capacity(binds.len());
    for path in binds {
        let real = fs::canonicalize(path).map_err(|source| MountError::Source {
            path: path.clone(),
            source,
        })?;
        resolved.push((real, path));
    }
    resolved.sort();
    let mut bound: BTreeSet<PathBuf> = BTreeSet::new();
    for (real, original) in resolved {
        recreate_symlinks(root, original)?;
        if real.ancestors().any(|a| bound.contains(a)) {
            continue;
        }
        bind_read_only_at(kernel, root, &real, &real)?;
        bound.insert(real);
    }
    Ok(())
}

/// Walks `path` on the host and creates, inside `root`, every symlink met on the way (with
/// the same target) and every directory leading to the final target.
fn recreate_symlinks(root: &Path, path: &Path) -> Result<(), MountError> {
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(path) = pending.pop() {
        let mut host = PathBuf::from("/");
        let components: Vec<Component<'_>> = path.components().collect();
        for (i, component) in components.iter().enumerate() {
            let name = match component {
                Component::Normal(name) => name,
                Component::ParentDir => {
                    host.pop();
                    continue;
                }
                _ => continue,
            };
            let next = host.join(name);
            let meta = fs::symlink_metadata(&next).map_err(|source| MountError::Source {
                path: next.clone(),
                source,
            })?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(MountError::SymlinkLoop { path: path.clone() });
                }
                let target = fs::read_link(&next).map_err(|source| MountError::Source {
                    path: next.clone(),
                    source,
                })?;
                let link_in_jail = inside(root, &next);
                if fs::symlink_metadata(&link_in_jail).is_err() {
                    mkdirs(root, &host)?;
                    symlink(&target, &link_in_jail).map_err(|source| MountError::Create {
                        path: link_in_jail.clone(),
                        source,
                    })?;
                }
                let mut rest = host.join(&target);
                for c in &components[i + 1..] {
                    rest.push(c);
                }
                pending.push(rest);
                break;
            }
            host = next;
        }
    }
    Ok(())
}

/// Places host `src` read-only at `target` inside the jail without showing the host path in
/// the run's mount table: a directory as an overlay whose layers are named by descriptor
/// (`/proc/self/fd/N`, closed once mounted), a file as a copy in the root. Where the kernel
/// refuses the overlay (no overlayfs, file systems stacked too deep), a bind, whose mount
/// table entry names its source. The target must be absolute and without `..`; a target
/// under a (read-only) host bind fails to be created.
fn place_mapped(
    kernel: &dyn Kernel,
    root: &Path,
    src: &Path,
    target: &Path,
) -> Result<(), MountError> {
    let clean = target.is_absolute()
        && target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean {
        return Err(MountError::Target {
            path: target.to_path_buf(),
        });
    }
    let source = |source| MountError::Source {
        path: src.to_path_buf(),
        source,
    };
    let real = fs::canonicalize(src).map_err(source)?;
    if !fs::metadata(&real).map_err(source)?.is_dir() {
        return copy_read_only(root, &real, target);
    }
    let at = mkdirs(root, target)?;
    match overlay_read_only(kernel, &real, &at) {
        Ok(()) => Ok(()),
        Err(_) => bind_read_only_at(kernel, root, &real, target),
    }
}

/// A read-only overlay of `dir` at `at`. Its second layer is `at` itself, still empty (an
/// overlay without an upper layer needs two).
fn overlay_read_only(kernel: &dyn Kernel, dir: &Path, at: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let layer = fs::File::open(dir)?;
    let empty = fs::File::open(at)?;
    let data = overlay_layers(layer.as_raw_fd(), empty.as_raw_fd());
    kernel.mount(
        Some(Path::new("overlay")),
        at,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )?;
    Ok(())
}

/// The options of a read-only overlay of the directory open as `layer` over the empty mount
/// point open as `empty`: named by descriptor, so the mount table shows no host path.
pub(crate) fn overlay_layers(layer: std::os::fd::RawFd, empty: std::os::fd::RawFd) -> String {
    format!("lowerdir=/proc/self/fd/{layer}:/proc/self/fd/{empty}")
}

/// A copy of the file `real` at `at` in the root, read-only for everyone.
fn copy_read_only(root: &Path, real: &Path, at: &Path) -> Result<(), MountError> {
    if let Some(parent) = at.parent() {
        mkdirs(root, parent)?;
    }
    let target = inside(root, at);
    let create = |source| MountError::Create {
        path: target.clone(),
        source,
    };
    fs::copy(real, &target).map_err(create)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).map_err(create)
}

/// Bytes the root needs for copies of the mapped files.
fn mapped_file_bytes(mapped: &[(PathBuf, PathBuf)]) -> u64 {
    mapped
        .iter()
        .filter_map(|(src, _)| fs::metadata(src).ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

fn bind_read_only_at(
    kernel: &dyn Kernel,
    root: &Path,
    real: &Path,
    at: &Path,
) -> Result<(), MountError> {
    let meta = fs::metadata(real).map_err(|source| MountError::Source {
        path: real.into(),
        source,
    })?;
    let target = inside(root, at);
    if meta.is_dir() {
        mkdirs(root, at)?;
    } else {
        if let Some(parent) = at.parent() {
            mkdirs(root, parent)?;
        }
        if fs::symlink_metadata(&target).is_err() {
            fs::File::create(&target).map_err(|source| MountError::Create {
                path: target.clone(),
                source,
            })?;
        }
    }
    bind(
        kernel,
        real,
        &target,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )
}

/// Binds `src` at `target` and remounts it with `flags` (plus the flags the source's mount
/// has locked, which a user namespace may not clear).
fn bind(kernel: &dyn Kernel, src: &Path, target: &Path, flags: MsFlags) -> Result<(), MountError> {
    let bind_err = |source| MountError::Bind {
        src: src.to_path_buf(),
        source,
    };
    kernel
        .mount(Some(src), target, None, MsFlags::MS_BIND, None)
        .map_err(bind_err)?;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags | kernel.locked_mount_flags(src);
    kernel
        .mount(None, target, None, flags, None)
        .map_err(bind_err)
}

/// Synthetic identity and name-service files: the run is `sandbox` (1000), nothing of the
/// host's users, groups or resolver leaks in.
fn write_etc(root: &Path) -> Result<(), MountError> {
    let etc = mkdirs(root, Path::new("/etc"))?;
    let files: [(&str, &str); 5] = [
        ("passwd", "root:x:0:0:root:/root:/sbin/nologin\nsandbox:x:1000:1000:sandbox:/tmp/home:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"),
        ("group", "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n"),
        ("hosts", "127.0.0.1\tlocalhost hako\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
        ("hostname", "hako\n"),
    ];
    for (name, text) in files {
        write_file(&etc.join(name), text.as_bytes(), 0o444)?;
    }
    Ok(())
}

/// /dev with the five harmless character devices bound from the host, plus the usual links.
fn build_dev(kernel: &dyn Kernel, root: &Path) -> Result<(), MountError> {
    let dev = mkdirs(root, Path::new("/dev"))?;
    mount_tmpfs(
        kernel,
        &dev,
        64 << 10,
        "0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        let target = dev.join(name);
        fs::File::create(&target).map_err(|source| MountError::Create {
            path: target.clone(),
            source,
        })?;
        // Device nodes need a mount without nodev; they are not executable.
        bind(
            kernel,
            &host,
            &target,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(target, &path).map_err(|source| MountError::Create { path, source })?;
    }
    Ok(())
}

/// `root` + absolute `path`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mkdirs(root: &Path, path: &Path) -> Result<PathBuf, MountError> {
    let dir = inside(root, path);
    fs::create_dir_all(&dir).map_err(|source| MountError::Create {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), MountError> {
    let create = |source| MountError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::create(path).map_err(create)?;
    file.write_all(bytes).map_err(create)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(create)
}

fn chown(kernel: &dyn Kernel, path: &Path, uid: u32, gid: u32) -> Result<(), MountError> {
    kernel
        .chown(path, uid, gid)
        .map_err(|source| MountError::Create {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_joins_absolute_paths_under_the_root() {
        assert_eq!(
            inside(Path::new("/r"), Path::new("/usr/lib/x")),
            PathBuf::from("/r/usr/lib/x")
        );
    }

    #[test]
    fn recreate_symlinks_mirrors_a_chain_of_links() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let real = host.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("lib.so"), b"x").unwrap();
        symlink(&real, host.path().join("alias")).unwrap();
        symlink("lib.so", real.join("lib.so.1")).unwrap();

        recreate_symlinks(root.path(), &host.path().join("alias/lib.so.1")).unwrap();

        let alias = inside(root.path(), &host.path().join("alias"));
        assert_eq!(fs::read_link(&alias).unwrap(), real);
        let versioned = inside(root.path(), &real.join("lib.so.1"));
        assert_eq!(fs::read_link(versioned).unwrap(), PathBuf::from("lib.so"));
    }

    #[test]
    fn recreate_symlinks_stops_on_a_loop() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        symlink(host.path().join("b"), host.path().join("a")).unwrap();
        symlink(host.path().join("a"), host.path().join("b")).unwrap();
        let err = recreate_symlinks(root.path(), &host.path().join("a")).unwrap_err();
        assert!(matches!(err, MountError::SymlinkLoop { .. }), "{err}");
    }
}
