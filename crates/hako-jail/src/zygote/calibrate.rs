//! Calibration: each zygote runs hako's own program once in a run child and keeps the pages
//! it wrote; later children copy them before their run instead of faulting on them while it
//! runs. No request ever influences this set.

use super::{wait_readable, write_program, RunShape, Zygote, ZygoteError};
use crate::spec::{JailSpec, SeccompSpec};
use nix::unistd::{read, Pid};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

impl Zygote {
    /// Runs hako's own calibration program once and keeps the pages it wrote: every later
    /// child copies them before its run. No request ever influences this set.
    pub(super) fn calibrate(&mut self, spec: &JailSpec, warmup: &str) {
        let shape = RunShape {
            limits: spec.limits,
            seccomp: SeccompSpec {
                mode: crate::spec::SeccompMode::Enforce,
                extra_allowed: spec.seccomp.extra_allowed.clone(),
            },
            insecure: spec.insecure,
        };
        let before = self.cgroup.as_ref().map(|cg| cg.usage().memory_bytes);
        match self.calibration_run(&shape, &spec.env, warmup) {
            Ok(pages) => self.hot_pages = pages,
            Err(err) => eprintln!("hako zygote: calibration failed (runs still work): {err}"),
        }
        // Measure what a prepared child holds, and keep it for the first run.
        self.prepared = self.fork_child(&shape).ok();
        if let (Some(before), Some(cg), Some(child)) = (before, &self.cgroup, &self.prepared) {
            // Its READY message arrives once it is confined; it copies the hot pages after
            // that, so they are counted in full (some may be counted twice).
            wait_readable(child.control.as_fd(), 2_000);
            self.prepared_bytes = cg.usage().memory_bytes.saturating_sub(before) + self.hot_bytes();
        }
    }

    fn calibration_run(
        &mut self,
        shape: &RunShape,
        env: &[(String, String)],
        warmup: &str,
    ) -> Result<Vec<(u64, u64)>, ZygoteError> {
        let mut child = self.fork_child(shape)?;
        // Kept open while it runs: hako's own program, never denied a call it makes.
        let _ready = child.await_ready(Instant::now() + Duration::from_secs(10))?;
        // The environment runs get (the zygote's own, without its settings).
        let env: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| !name.starts_with("HAKO_"))
            .cloned()
            .collect();
        // A JSON string is a Python string literal.
        let program = format!(
            "WARMUP = {}\n{CALIBRATION}",
            serde_json::Value::String(warmup.to_string())
        );
        write_program(&child.program, &env, program.as_bytes())?;
        child.start()?;
        let (stdout, _stderr) = child.output.take().ok_or(ZygoteError::Gone)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.ends_with(b"calibrated\n") {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u16;
            if left == 0 || !wait_readable(stdout.as_fd(), left) {
                child.retire();
                return Err(ZygoteError::Start(
                    "the calibration run did not finish".into(),
                ));
            }
            let mut buf = [0u8; 256];
            match read(stdout.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    child.retire();
                    return Err(ZygoteError::Start("the calibration run ended early".into()));
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let pages = written_pages(child.host_pid);
        child.retire();
        pages.map_err(ZygoteError::CalibrationPages)
    }
}

/// The pages `pid` has written since it was forked, as (address, length) ranges: present
/// pages of its private writable mappings that only it maps. At most 64 MiB.
fn written_pages(pid: Pid) -> io::Result<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    const PAGE: u64 = 4096;
    const PRESENT: u64 = 1 << 63;
    const EXCLUSIVE: u64 = 1 << 56;
    const LIMIT: u64 = 16_384;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut total = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(span), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !(perms.starts_with("rw") && perms.ends_with('p')) {
            continue;
        }
        let Some((start, end)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut entries = vec![0u8; ((end - start) / PAGE * 8) as usize];
        pagemap.read_exact_at(&mut entries, start / PAGE * 8)?;
        for (i, entry) in entries.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8]));
            if entry & PRESENT == 0 || entry & EXCLUSIVE == 0 {
                continue;
            }
            if total == LIMIT {
                return Ok(ranges);
            }
            total += 1;
            let address = start + i as u64 * PAGE;
            match ranges.last_mut() {
                Some((first, len)) if *first + *len == address => *len += PAGE,
                _ => ranges.push((address, PAGE)),
            }
        }
    }
    Ok(ranges)
}

/// hako's calibration program: a Dify-style template with a trivial `main`; then it says
/// "calibrated" and waits to be inspected.
const CALIBRATION: &str = include_str!("calibration.py");
