//! `hako bench --against`: another build's servers measured in the same sitting as this
//! build's, alternating, with the medians and their ratio; and the clear errors of a bad
//! `--against`.

mod common;

use common::{can_run_jail, HAKO};
use std::process::Command;

fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(HAKO)
        .arg("bench")
        .args(args)
        .env("HAKO_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn against_measures_both_builds_in_turn_and_prints_the_medians_and_their_ratio() {
    if !can_run_jail() {
        return;
    }
    // This build against itself: the comparison, not a difference, is under test.
    let (code, out, err) = bench(&[
        "--against",
        HAKO,
        "--rounds",
        "2",
        "--count",
        "15",
        "--warmup",
        "2",
    ]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let rounds: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            ["this 1", "other 1", "this 2", "other 2"]
                .into_iter()
                .find(|label| l.starts_with(label))
        })
        .collect();
    // Each build goes first every other round.
    assert_eq!(rounds, ["this 1", "other 1", "other 2", "this 2"], "{out}");
    for line in out.lines().filter(|l| {
        ["this 1 ", "other 1 ", "this 2 ", "other 2 "]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        assert!(line.contains("runs     15  errors   0"), "{line}");
        assert!(line.contains("cpu/run "), "{line}");
        assert!(!line.contains("cpu/run n/a"), "{line}");
    }
    let medians = out
        .lines()
        .find(|l| l.starts_with("medians of 2 rounds: this p50 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(medians.contains("; other p50 "), "{medians}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ratios (this / other): p50 ") && l.contains("x  cpu/run ")),
        "{out}"
    );
}

#[test]
fn a_bad_against_is_a_clear_error_before_any_server_starts() {
    let (code, out, err) = bench(&["--against", "/nonexistent/hako", "--count", "1"]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(err.contains("--against /nonexistent/hako"), "{err}");
    assert!(!out.contains("builds:"), "{out}");
    // Another build is compared with servers the bench starts: not with --url, nor together
    // with a spawn-mode comparison.
    for other in [&["--url", "http://127.0.0.1:9"][..], &["--compare-spawn"]] {
        let mut args = vec!["--against", HAKO];
        args.extend_from_slice(other);
        let (code, _, err) = bench(&args);
        assert_eq!(code, Some(2), "{other:?}: {err}");
        assert!(err.contains("cannot be used with"), "{other:?}: {err}");
    }
    let (code, _, err) = bench(&["--against", HAKO, "--rounds", "0"]);
    assert_eq!(code, Some(2), "{err}");
    // --rounds counts rounds of --against only.
    let (code, _, err) = bench(&["--rounds", "2", "--count", "1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--against"), "{err}");
}
