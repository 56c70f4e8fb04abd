//! What crosses the zygote helper's pipes (caller ↔ `hako __zygote`) and its fork requests.
//!
//! Caller → zygote helper (stdin): the zygote's [`crate::spec::JailSpec`] frame and the
//! bootstrap bytes; then per run a [`RunOrder`] JSON frame and the program bytes.
//! Zygote helper → caller (stdout): a [`ZygoteReport`] JSON frame; then per run one
//! [`Stage`] byte and the outcome frame ([`crate::frame::encode_outcome`]).

use crate::spec::{CgroupCoverage, EgressSpec, Limits, SeccompSpec};
use crate::Language;
use serde::{Deserialize, Serialize};

/// What the caller sends for each run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOrder {
    pub limits: Limits,
    pub seccomp: SeccompSpec,
    pub insecure: bool,
    /// The run's whole environment (e.g. proxy variables for a run with network).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Register a listener of the egress guard for this run (proxy network).
    #[serde(default)]
    pub egress: Option<EgressSpec>,
}

/// The zygote helper's first answer: the zygote is ready (or why not).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ZygoteReport {
    pub ready: bool,
    pub error: Option<String>,
    /// Preload modules that failed to import, with the reason.
    pub skipped: Vec<String>,
    /// Host pid of the zygote interpreter (for memory reporting).
    pub zygote_pid: i32,
    /// Pages each prepared child copies ahead of its run (from the calibration run).
    #[serde(default)]
    pub hot_pages: u64,
    /// Memory a prepared child holds, in bytes (0 when unknown).
    #[serde(default)]
    pub prepared_bytes: u64,
}

/// What a run child needs to confine itself; sent by the zygote helper through the zygote
/// (the JSON body of [`crate::control::Message::Fork`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildParams {
    pub language: Language,
    pub limits: Limits,
    pub coverage: CgroupCoverage,
    pub seccomp: SeccompSpec,
    pub use_listener: bool,
    pub insecure: bool,
    /// Address ranges to copy before the run (learnt from the calibration run).
    #[serde(default)]
    pub hot_pages: Vec<(u64, u64)>,
    /// The child's own run id: `RUN_UID + uid_slot` (below [`crate::spec::ZYGOTE_RUN_IDS`]).
    #[serde(default)]
    pub uid_slot: u32,
    /// Set for hako's calibration run only: the child opens its own `/proc/self/maps` and
    /// `/proc/self/pagemap` before it takes its run uid, and lists its pages from them later.
    #[serde(default)]
    pub reads_own_page_map: bool,
}

/// The byte the zygote helper writes before each run's outcome frame: whether the program
/// was handed over. The helper writes [`Stage::HandedOver`] *before* it tells the child to
/// run, so a caller that reads it and then loses the helper knows the program may have run
/// (never retried); a caller that loses the helper before the byte knows it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The run failed before its program was handed over: safe to serve elsewhere.
    NotStarted,
    /// The program was handed over to its child: it may have run.
    HandedOver,
}

impl Stage {
    pub fn byte(self) -> u8 {
        match self {
            Stage::NotStarted => b'n',
            Stage::HandedOver => b'h',
        }
    }

    pub fn from_byte(byte: u8) -> Option<Stage> {
        match byte {
            b'n' => Some(Stage::NotStarted),
            b'h' => Some(Stage::HandedOver),
            _ => None,
        }
    }
}

/// The operator's zygote settings, sent as [`crate::control::Message::Settings`] on the
/// zygote's own socket (read, then the run children close that socket): never in the
/// environment block, which every run child would inherit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZygoteSettings {
    /// Modules imported once in the zygote.
    pub preload: Vec<String>,
    /// `hako.python_warmup`: code run once in the zygote after the imports.
    pub warmup: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_bytes_round_trip_and_nothing_else_is_a_stage() {
        for stage in [Stage::NotStarted, Stage::HandedOver] {
            assert_eq!(Stage::from_byte(stage.byte()), Some(stage));
        }
        let stages = (0..=u8::MAX).filter_map(Stage::from_byte).count();
        assert_eq!(stages, 2);
    }

    #[test]
    fn settings_round_trip() {
        let settings = ZygoteSettings {
            preload: vec!["json".into()],
            warmup: "import json".into(),
        };
        let text = serde_json::to_vec(&settings).unwrap();
        assert_eq!(
            serde_json::from_slice::<ZygoteSettings>(&text).unwrap(),
            settings
        );
    }
}
