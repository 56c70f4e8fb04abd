//! The command line's configuration: `app.debug` turns on hako's debug logs.

mod common;

use common::HAKO;
use std::process::Command;

/// `hako doctor --policy python3` in an empty directory (no `conf/config.yaml`): its stderr.
/// The "no config file" warning is logged at debug level by commands that do not serve.
fn doctor_log(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(HAKO);
    command
        .args(["doctor", "--policy", "python3"])
        .current_dir(dir.path())
        .env_remove("HAKO_LOG")
        .env_remove("DEBUG")
        .env_remove("GIN_MODE")
        .envs(env.iter().copied());
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn app_debug_turns_on_debug_logs() {
    const DEBUG_LINE: &str = "no config file at conf/config.yaml";
    let quiet = doctor_log(&[]);
    assert!(!quiet.contains(DEBUG_LINE), "{quiet}");
    for env in [[("DEBUG", "true")], [("GIN_MODE", "debug")]] {
        let verbose = doctor_log(&env);
        assert!(
            verbose.contains(DEBUG_LINE) && verbose.contains("DEBUG"),
            "{env:?}: {verbose}"
        );
    }
    // HAKO_LOG wins over app.debug.
    let filtered = doctor_log(&[("DEBUG", "true"), ("HAKO_LOG", "info")]);
    assert!(!filtered.contains(DEBUG_LINE), "{filtered}");
}

/// A configuration error is one line of text that names the file and says each cause once.
#[test]
fn a_config_error_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.yaml");
    let out = Command::new(HAKO)
        .args(["doctor", "--config"])
        .arg(&absent)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let cause = "No such file or directory";
    assert!(
        err.contains(&format!("cannot read config file {}", absent.display())),
        "{err}"
    );
    assert_eq!(err.matches(cause).count(), 1, "{err}");
}
