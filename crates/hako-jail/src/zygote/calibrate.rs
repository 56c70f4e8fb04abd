//! Calibration: each zygote runs hako's own program once in a run child and keeps the pages
//! it wrote; later children copy them before their run instead of faulting on them while it
//! runs. No request ever influences this set.

use super::{wait_readable, write_program, RunShape, Zygote, ZygoteError};
use crate::spec::{JailSpec, SeccompSpec};
use nix::unistd::read;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

impl Zygote {
    /// Runs hako's own calibration program once and keeps the pages it lists as written:
    /// every later child copies them before its run. No request ever influences this set.
    pub(super) fn calibrate(&mut self, spec: &JailSpec, warmup: &str) {
        let shape = RunShape {
            limits: spec.limits,
            seccomp: SeccompSpec {
                mode: crate::spec::SeccompMode::Enforce,
                extra_allowed: spec.seccomp.extra_allowed.clone(),
            },
            insecure: spec.insecure,
            reads_own_page_map: false,
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
        let mut child = self.fork_child(&RunShape {
            reads_own_page_map: true,
            ..shape.clone()
        })?;
        // Kept open while it runs: hako's own program, never denied a call it makes.
        let _ready = child.await_ready(Instant::now() + Duration::from_secs(10))?;
        // The library the zygote loaded lists the pages (its path in the jail).
        let library = env
            .iter()
            .find(|(name, _)| name == "HAKO_ZYGOTE_LIBRARY")
            .map(|(_, path)| path.clone())
            .unwrap_or_default();
        // The environment runs get (the zygote's own, without its settings).
        let env: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| !name.starts_with("HAKO_"))
            .cloned()
            .collect();
        // A JSON string is a Python string literal.
        let literal = |text: &str| serde_json::Value::String(text.to_string());
        let program = format!(
            "WARMUP = {}\nLIBRARY = {}\n{CALIBRATION}",
            literal(warmup),
            literal(&library)
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
            let mut buf = [0u8; 4096];
            match read(stdout.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    child.retire();
                    return Err(ZygoteError::Start("the calibration run ended early".into()));
                }
                Ok(n) if seen.len() + n > MAX_OUTPUT => {
                    child.retire();
                    return Err(ZygoteError::Calibration(CalibrationError::TooLong));
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        child.retire();
        hot_ranges(&seen).map_err(ZygoteError::Calibration)
    }
}

/// What a calibration run may print in all: its program's output and at most
/// [`HOT_PAGE_LIMIT`] ranges of about 30 bytes each.
const MAX_OUTPUT: usize = 1 << 20;

/// At most this many pages (64 MiB) are copied before a run.
pub(super) const HOT_PAGE_LIMIT: u64 = 16_384;

const PAGE: u64 = 4096;

/// Above any user-space address (x86-64 with 5-level paging ends below 2^56).
const USER_TOP: u64 = 1 << 56;

/// Why the listing of a calibration run was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalibrationError {
    #[error("it printed more than 1 MiB")]
    TooLong,
    #[error("it printed no \"hako hot pages\" line")]
    NoListing,
    #[error("line {line} of its listing is not \"hot <start> <length>\" in hex")]
    Malformed { line: usize },
    #[error("line {line} of its listing is not a page-aligned range of user space")]
    NotPages { line: usize },
    #[error("line {line} of its listing is not above the range before it")]
    Unordered { line: usize },
}

/// The ranges a calibration run listed after its last "hako hot pages" line and before
/// "calibrated": page-aligned, non-empty, ascending, not overlapping, in user space, cut
/// after [`HOT_PAGE_LIMIT`] pages. The run is hako's own program and the operator's
/// warm-up, but what a process prints is read as untrusted all the same: a bad line refuses
/// the whole listing (the zygote then runs without hot pages).
pub(super) fn hot_ranges(output: &[u8]) -> Result<Vec<(u64, u64)>, CalibrationError> {
    const HEADER: &[u8] = b"\nhako hot pages\n";
    let at = output
        .windows(HEADER.len())
        .rposition(|w| w == HEADER)
        .ok_or(CalibrationError::NoListing)?;
    let listing = &output[at + HEADER.len()..];
    let listing = listing
        .strip_suffix(b"calibrated\n")
        .ok_or(CalibrationError::NoListing)?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut total = 0;
    for (index, line) in listing.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_number = index + 1;
        let (start, len) = line
            .strip_suffix(b"\n")
            .and_then(parse_hot_line)
            .ok_or(CalibrationError::Malformed { line: line_number })?;
        let end = start.checked_add(len).filter(|&end| end <= USER_TOP);
        if start % PAGE != 0 || len % PAGE != 0 || len == 0 || end.is_none() {
            return Err(CalibrationError::NotPages { line: line_number });
        }
        if ranges.last().is_some_and(|&(first, l)| start < first + l) {
            return Err(CalibrationError::Unordered { line: line_number });
        }
        let len = len.min((HOT_PAGE_LIMIT - total) * PAGE);
        if len > 0 {
            ranges.push((start, len));
            total += len / PAGE;
        }
    }
    Ok(ranges)
}

/// `hot <start> <length>`, both hex without a prefix.
fn parse_hot_line(line: &[u8]) -> Option<(u64, u64)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.strip_prefix("hot ")?.split(' ');
    let mut hex = || {
        let field = fields
            .next()
            .filter(|f| f.bytes().all(|b| b.is_ascii_hexdigit()))?;
        u64::from_str_radix(field, 16).ok()
    };
    let (start, len) = (hex()?, hex()?);
    fields.next().is_none().then_some((start, len))
}

/// hako's calibration program: a Dify-style template with a trivial `main`; then it lists
/// the pages it wrote, says "calibrated" and waits.
const CALIBRATION: &str = include_str!("calibration.py");

#[cfg(test)]
#[path = "calibrate_tests.rs"]
mod tests;
