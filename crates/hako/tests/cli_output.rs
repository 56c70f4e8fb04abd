//! The command line's output when its reader goes away (`hako run x.py | head -1`): the
//! command ends quietly, with no panic and no "Broken pipe" message, and `hako run` still
//! exits with the program's code and writes its stderr.

mod common;

use common::{can_run_jail, HAKO};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `hako args...` with `input` on stdin and a stdout whose reader is gone before the
/// command writes anything; returns the exit code and stderr.
fn with_closed_stdout(args: &[&str], input: &str) -> (Option<i32>, String) {
    let mut child = Command::new(HAKO)
        .args(args)
        .env("HAKO_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hako_run_ends_quietly_when_its_reader_goes_away() {
    if !can_run_jail() {
        return;
    }
    let code = "import sys\nfor i in range(100000):\n    print(i)\nsys.stderr.write('done\\n')\nsys.exit(3)\n";
    for json in [false, true] {
        let mut args = vec!["run", "--language", "python3"];
        if json {
            args.push("--json");
        }
        args.push("-");
        let (status, stderr) = with_closed_stdout(&args, code);
        assert!(!stderr.contains("panicked"), "json {json}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "json {json}: {stderr}");
        if json {
            assert_eq!(status, Some(0), "json: {stderr}");
        } else {
            // The program's own stderr and exit code still come through.
            assert_eq!(status, Some(3), "{stderr}");
            assert_eq!(stderr, "done\n");
        }
    }
}

#[test]
fn hako_doctor_ends_quietly_when_its_reader_goes_away() {
    for args in [&["doctor", "--policy", "python3"][..], &["doctor"][..]] {
        let (status, stderr) = with_closed_stdout(args, "");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(status, Some(0), "{args:?}: {stderr}");
    }
}
