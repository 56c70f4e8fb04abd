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
    /// The filter the child installs, compiled by the helper (as for a spawned jail).
    pub seccomp_filter: FilterProgram,
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

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A seccomp filter program. On the wire a hex string, 16 digits per instruction (`code`,
/// `jt`, `jf`, `k`, most significant digit first), which the child decodes without building
/// anything; the kernel checks the program when it is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterProgram(pub Vec<FilterInstruction>);

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_FILTER_INSTRUCTIONS: usize = 4096;

const HEX_PER_INSTRUCTION: usize = 16;
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

impl FilterProgram {
    fn to_hex(&self) -> String {
        let mut hex = String::with_capacity(self.0.len() * HEX_PER_INSTRUCTION);
        for i in &self.0 {
            let word = (u64::from(i.code) << 48)
                | (u64::from(i.jt) << 40)
                | (u64::from(i.jf) << 32)
                | u64::from(i.k);
            // Sixteen digits, most significant first (no formatter: this runs per fork).
            for shift in (0..HEX_PER_INSTRUCTION).rev() {
                hex.push(char::from(HEX_DIGITS[(word >> (shift * 4)) as usize & 0xf]));
            }
        }
        hex
    }

    fn from_hex(hex: &str) -> Result<FilterProgram, String> {
        if !hex.len().is_multiple_of(HEX_PER_INSTRUCTION) {
            return Err(format!("{} hex digits: not whole instructions", hex.len()));
        }
        let count = hex.len() / HEX_PER_INSTRUCTION;
        if !(1..=MAX_FILTER_INSTRUCTIONS).contains(&count) {
            return Err(format!(
                "{count} instructions (1 to {MAX_FILTER_INSTRUCTIONS})"
            ));
        }
        let mut program = Vec::with_capacity(count);
        for chunk in hex.as_bytes().chunks(HEX_PER_INSTRUCTION) {
            // from_str_radix alone would also take a sign.
            if !chunk.iter().all(u8::is_ascii_hexdigit) {
                return Err("not a hex digit".into());
            }
            let text = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            let word = u64::from_str_radix(text, 16).map_err(|e| e.to_string())?;
            program.push(FilterInstruction {
                code: (word >> 48) as u16,
                jt: (word >> 40) as u8,
                jf: (word >> 32) as u8,
                k: word as u32,
            });
        }
        Ok(FilterProgram(program))
    }
}

impl Serialize for FilterProgram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for FilterProgram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        FilterProgram::from_hex(&hex)
            .map_err(|why| serde::de::Error::custom(format!("bad seccomp filter: {why}")))
    }
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

    #[test]
    fn a_filter_program_round_trips_as_hex() {
        let program = FilterProgram(vec![
            FilterInstruction {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 4,
            },
            FilterInstruction {
                code: 0x15,
                jt: 1,
                jf: 0xff,
                k: 0xc000_003e,
            },
            FilterInstruction {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            },
        ]);
        let text = serde_json::to_string(&program).unwrap();
        assert_eq!(text, "\"0020000000000004001501ffc000003e000600007fff0000\"");
        assert_eq!(
            serde_json::from_str::<FilterProgram>(&text).unwrap(),
            program
        );
    }

    #[test]
    fn a_filter_program_that_is_not_whole_instructions_or_hex_is_refused() {
        let whole = "0006000000000000";
        for (bad, why) in [
            ("\"\"", "0 instructions"),
            (&*format!("\"{}\"", &whole[..15]), "not whole instructions"),
            ("\"000600000000000g\"", "not a hex digit"),
            ("\"+006000000000000\"", "not a hex digit"),
            (
                &*format!("\"{}\"", whole.repeat(MAX_FILTER_INSTRUCTIONS + 1)),
                "4097 instructions",
            ),
            ("[1, 2]", "invalid type"),
        ] {
            let err = serde_json::from_str::<FilterProgram>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad:.40}: {err}");
        }
        let longest = format!("\"{}\"", whole.repeat(MAX_FILTER_INSTRUCTIONS));
        assert_eq!(
            serde_json::from_str::<FilterProgram>(&longest)
                .unwrap()
                .0
                .len(),
            MAX_FILTER_INSTRUCTIONS
        );
    }
}
