//! Shared helpers of the end-to-end tests: they drive the real `hako` binary as root.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

pub const HAKO: &str = env!("CARGO_BIN_EXE_hako");

/// End-to-end tests need root (namespaces with id maps, cgroups). CI runs as root, so there
/// they run; elsewhere they say why they skip.
pub fn can_run_jail() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: end-to-end jail tests need root (CI runs them as root)");
    }
    root
}

/// The result of `hako run --json`.
#[derive(Debug)]
pub struct Run {
    pub json: Value,
    pub exit: i32,
}

impl Run {
    pub fn stdout(&self) -> &str {
        self.json["stdout"].as_str().unwrap_or_default()
    }
    pub fn stderr(&self) -> &str {
        self.json["stderr"].as_str().unwrap_or_default()
    }
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }
    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or_default()
    }
    pub fn exit_code(&self) -> i64 {
        self.json["exit_code"].as_i64().unwrap_or(i64::MIN)
    }
    pub fn blocked(&self) -> Vec<String> {
        self.json["blocked_syscalls"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
}

/// Runs `code` with `hako run --json` and extra arguments.
pub fn run(language: &str, code: &str, extra: &[&str]) -> Run {
    run_with_env(language, code, extra, &[])
}

pub fn run_with_env(language: &str, code: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(HAKO)
        .args(["run", "--json", "--language", language])
        .args(extra)
        .arg("-")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hako");
    child.stdin.take().unwrap().write_all(code.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "hako run did not print JSON ({e}); stdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run { json, exit: out.status.code().unwrap_or(-1) }
}

/// Python code that calls a libc function through ctypes and prints `name=<ret> errno=<e>`.
pub fn ctypes_call(name: &str, call: &str) -> String {
    format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nr = {call}\nprint('{name}=%d errno=%s' % (r, os.strerror(ctypes.get_errno())))\n"
    )
}
