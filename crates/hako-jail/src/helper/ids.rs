//! Host ids of runs, allocated across processes: a run holds an exclusive `flock` on one
//! lock file per host uid for as long as its helper lives, so two helpers (of one server, of
//! two servers, or of concurrent `hako run` commands) never hand out the same uid. The kernel
//! drops the locks when the helper exits, however it exits.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("create the id lock directory {path}: {source}")]
    LockDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open the id lock {path}: {source}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free block of {width} host ids in {first}..{end}: too many runs at once")]
    Exhausted { first: u32, end: u32, width: u32 },
}

pub use hako_wire::spec::IdPool;

/// Consecutive host ids held for the lifetime of this value.
#[derive(Debug)]
pub struct IdLease {
    pub first: u32,
    _locks: Vec<File>,
}

/// Takes `width` consecutive free ids from `pool`, trying `hint` first and then the ids after
/// it (wrapping around).
pub fn lease(pool: &IdPool, hint: u32, width: u32) -> Result<IdLease, IdError> {
    let exhausted = IdError::Exhausted {
        first: pool.first,
        end: pool.first.saturating_add(pool.count),
        width,
    };
    let starts = pool.count.saturating_sub(width).saturating_add(1);
    if width == 0 || pool.count < width {
        return Err(exhausted);
    }
    create_dir(&pool.lock_dir)?;
    let offset = hint.wrapping_sub(pool.first) % starts;
    for step in 0..starts {
        let start = pool.first + (offset + step) % starts;
        if let Some(locks) = try_lock_block(&pool.lock_dir, start, width)? {
            return Ok(IdLease {
                first: start,
                _locks: locks,
            });
        }
    }
    Err(exhausted)
}

fn create_dir(dir: &Path) -> Result<(), IdError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| IdError::LockDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Locks `start .. start + width`, or none of them (`Ok(None)`) when one is taken.
fn try_lock_block(dir: &Path, start: u32, width: u32) -> Result<Option<Vec<File>>, IdError> {
    let mut locks = Vec::with_capacity(width as usize);
    for uid in start..start + width {
        let path = dir.join(uid.to_string());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| IdError::LockFile { path, source })?;
        // SAFETY: flock only changes the lock state of the open file we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            return Ok(None);
        }
        locks.push(file);
    }
    Ok(Some(locks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dir: &Path, first: u32, count: u32) -> IdPool {
        IdPool {
            lock_dir: dir.to_path_buf(),
            first,
            count,
        }
    }

    #[test]
    fn concurrent_leases_get_distinct_ids_and_free_them_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = pool(dir.path(), 100, 4);
        let a = lease(&p, 100, 1).unwrap();
        let b = lease(&p, 100, 1).unwrap();
        assert_eq!((a.first, b.first), (100, 101));
        drop(a);
        assert_eq!(lease(&p, 100, 1).unwrap().first, 100);
    }

    #[test]
    fn blocks_do_not_overlap_and_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        let p = pool(dir.path(), 10, 8);
        let a = lease(&p, 12, 3).unwrap();
        assert_eq!(a.first, 12);
        let b = lease(&p, 12, 3).unwrap();
        assert_eq!(b.first, 15);
        assert!(matches!(lease(&p, 16, 3), Err(IdError::Exhausted { .. })));
        drop(a);
        assert_eq!(lease(&p, 16, 3).unwrap().first, 10);
    }

    #[test]
    fn a_hint_outside_the_pool_still_leases_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = pool(dir.path(), 50, 8);
        let a = lease(&p, 7, 2).unwrap();
        assert!((50..57).contains(&a.first), "{}", a.first);
    }
}
