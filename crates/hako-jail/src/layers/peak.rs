//! The peak memory of one run in a group that outlives it (a zygote's group).
//!
//! cgroup v1 restarts `memory.max_usage_in_bytes` when 0 is written to it. cgroup v2's
//! `memory.peak` counts the group's whole life; since Linux 6.12 a write to it restarts the
//! count for reads through the same open file only, so each run holds its own descriptor.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A count of peak memory use that started when it was made, read through the descriptor
/// that restarted it.
#[derive(Debug)]
pub struct PeakCounter(File);

impl PeakCounter {
    /// Restarts the v1 count of the memory group at `dir` (`memory.max_usage_in_bytes`,
    /// reset by writing 0); None if the kernel refuses.
    pub fn v1(dir: &Path) -> Option<PeakCounter> {
        PeakCounter::restart(&dir.join("memory.max_usage_in_bytes"), b"0", true)
    }

    /// Opens and restarts the v2 count of the group at `dir`; None before Linux 6.12, where
    /// `memory.peak` cannot be written (since then a write restarts the count for reads
    /// through the same open file only).
    pub fn v2(dir: &Path) -> Option<PeakCounter> {
        PeakCounter::restart(&dir.join("memory.peak"), b"reset", false)
    }

    fn restart(path: &Path, reset: &[u8], truncate: bool) -> Option<PeakCounter> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(truncate)
            .open(path)
            .ok()?;
        file.write_all(reset).ok()?;
        Some(PeakCounter(file))
    }

    /// Peak memory in bytes since the counter was made; None when unreadable.
    pub fn read(&self) -> Option<u64> {
        let mut buf = [0u8; 32];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_restarts_the_count_and_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.max_usage_in_bytes");
        fs::write(&path, "999999\n").unwrap();
        let counter = PeakCounter::v1(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0");
        fs::write(&path, "4096\n").unwrap();
        assert_eq!(counter.read(), Some(4096));
    }

    #[test]
    fn missing_or_read_only_files_give_no_counter() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PeakCounter::v1(dir.path()).is_none());
        assert!(PeakCounter::v2(dir.path()).is_none());
    }
}
