//! Faults and hostile clients against a real `hako serve`: clients that disconnect, workers
//! that stop answering or never start, package switches at a bad moment, and stops that
//! must leave nothing behind.

mod common;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn wchan(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

fn parent(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The name a test's program gives itself (`/proc/<pid>/comm`) before it sleeps, so that only
/// the test's own programs are counted: hako's own interpreters sleep too (a new zygote's
/// calibration run ends in a wait, an operator's warm-up may sleep), and a pre-started
/// worker is an interpreter that has not run any program yet.
const PROGRAM_NAME: &str = "hako-test-prog";

/// Python that names itself [`PROGRAM_NAME`] (prctl PR_SET_NAME, allowed by the policy) and
/// sleeps `secs` seconds.
fn named_python_sleep(secs: u32) -> String {
    format!(
        "import ctypes, time\nctypes.CDLL(None).prctl(15, b'{PROGRAM_NAME}', 0, 0, 0)\ntime.sleep({secs})\n"
    )
}

/// The test's programs executing now under the server: processes named [`PROGRAM_NAME`] that
/// sleep in the kernel the way the program does.
fn executing(server: u32, sleeps_in: &str) -> usize {
    descendants(server)
        .into_iter()
        .filter(|&pid| comm(pid) == PROGRAM_NAME && wchan(pid).contains(sleeps_in))
        .count()
}

fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = http::blocking_get_text(&server.url("/metrics"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

mod http {
    use reqwest::{get, Client};

    /// A GET on a throwaway runtime (the tests here are synchronous).
    pub fn blocking_get_text(url: &str) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async { get(url).await.ok()?.text().await.ok() })
    }

    pub fn blocking_get_json(url: &str, key: &str) -> Option<(u16, serde_json::Value)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let resp = Client::new()
                .get(url)
                .header("X-Api-Key", key)
                .send()
                .await
                .ok()?;
            let status = resp.status().as_u16();
            Some((status, resp.json().await.ok()?))
        })
    }
}

/// Polls `probe` until it returns `Some`, for at most `limit`.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > give_up {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 30 clients each send a 5 s program and hang up one after the other, 50 ms apart, from the
/// moment the first program is seen executing (a cold start on a busy host takes what it
/// takes): each hang-up lets a queued run start. While they do, at most `max_workers`
/// programs execute, and all are gone within a second of the last hang-up.
fn disconnect_storm(config: &str, language: &str, code: &str, sleeps_in: &str) {
    let server = Server::start(config, &[]);
    if config.contains("mode: zygote") {
        server.wait_warm();
    }
    let pid = server.pid();
    let url = server.url("/v1/sandbox/run");
    let key = server.key.clone();
    // Pooled Node workers serve runs shaped like Dify's (network on, as the config allows).
    let body = json!({"language": language, "code": code, "enable_network": language == "nodejs"});
    let (executes, first_executes) = std::sync::mpsc::channel::<()>();
    let storm = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let tasks: Vec<_> = (0..30)
                .map(|_| {
                    let request = client.post(&url).header("X-Api-Key", &key).json(&body);
                    tokio::spawn(request.send())
                })
                .collect();
            // Without a program ever executing the hang-ups start anyway, and the test fails.
            let _ = first_executes.recv_timeout(Duration::from_secs(60));
            for task in &tasks {
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Dropping the request closes its connection: the client hung up.
                task.abort();
            }
            for task in tasks {
                let answer = task.await;
                assert!(
                    answer.is_err_and(|e| e.is_cancelled()),
                    "a 5 s program answered before its client hung up"
                );
            }
        });
        Instant::now()
    });
    let mut most = 0;
    while !storm.is_finished() {
        let now = executing(pid, sleeps_in);
        if now > 0 {
            let _ = executes.send(());
        }
        most = most.max(now);
        std::thread::sleep(Duration::from_millis(10));
    }
    let last_hang_up = storm.join().unwrap();
    while last_hang_up.elapsed() < Duration::from_secs(1) {
        most = most.max(executing(pid, sleeps_in));
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = executing(pid, sleeps_in);
    assert!(most > 0, "the storm's programs were never seen executing");
    assert!(
        most <= 2,
        "{most} programs executed at once with max_workers: 2"
    );
    assert_eq!(
        left, 0,
        "programs still execute a second after their client hung up"
    );
    // The server still serves.
    let data = post_run(&server, &json!({"language": "python3", "code": "print(7)"}));
    assert_eq!(data["stdout"], "7\n", "{data}");
}

#[test]
fn a_disconnect_storm_stays_within_max_workers_in_spawn_mode() {
    if !can_run_jail() {
        return;
    }
    disconnect_storm(
        "max_workers: 2\nmax_requests: 50\nworker_timeout: 10\nhako:\n  mode: spawn\n",
        "python3",
        &named_python_sleep(5),
        "nanosleep",
    );
}

#[test]
fn a_disconnect_storm_stays_within_max_workers_in_zygote_mode() {
    if !can_run_jail() {
        return;
    }
    disconnect_storm(
        "max_workers: 2\nmax_requests: 50\nworker_timeout: 10\nhako:\n  mode: zygote\n",
        "python3",
        &named_python_sleep(5),
        "nanosleep",
    );
}

#[test]
fn a_disconnect_storm_stays_within_max_workers_with_the_node_pool() {
    if !can_run_jail() {
        return;
    }
    disconnect_storm(
        "max_workers: 2\nmax_requests: 50\nworker_timeout: 10\nhako:\n  mode: zygote\n  nodejs_pool: 2\n",
        "nodejs",
        &format!("process.title = '{PROGRAM_NAME}';\nAtomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5000);\n"),
        "futex",
    );
}

/// Cgroup directories of hako in the v1 hierarchies (and the v2 mount).
fn hako_cgroups() -> BTreeSet<String> {
    ["memory", "pids", "unified", ""]
        .iter()
        .filter_map(|c| std::fs::read_dir(format!("/sys/fs/cgroup/{c}/hako")).ok())
        .flat_map(|d| d.filter_map(|e| e.ok()))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Whether the file name holds `pid` as a number of its own (`guard-123.sock`), not as
/// digits inside another number (the id lease `1198554` for pid 8554).
fn names_pid(path: &std::path::Path, pid: u32) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.split(|c: char| !c.is_ascii_digit())
        .any(|number| number == pid.to_string())
}

/// Every path under `dir`.
fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

#[test]
fn sigterm_leaves_nothing_of_the_server_behind() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if !can_run_jail() {
        return;
    }
    // Not under /tmp: runs get their own /tmp, which would hide files bound from there.
    let runtime = tempfile::tempdir_in("/run").unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "max_workers: 2\nenable_network: true\nhako:\n  mode: zygote\n  runtime_dir: {}\n",
        runtime.path().display()
    );
    let server = Server::start(&config, &[]);
    server.wait_warm();
    let pid = server.pid();
    let mut helpers: BTreeSet<u32> = descendants(pid).into_iter().collect();
    for (language, code, network) in [
        ("python3", "print(1)", true),
        ("python3", "print(1)", false),
        ("nodejs", "console.log(1)", true),
    ] {
        let data = post_run(
            &server,
            &json!({"language": language, "code": code, "enable_network": network}),
        );
        assert_eq!(data["stdout"], "1\n", "{data}");
        helpers.extend(descendants(pid));
    }
    let files_before: Vec<_> = tree(runtime.path());
    assert!(
        files_before
            .iter()
            .any(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())),
        "the egress guard's socket was never made: {files_before:?}"
    );
    assert!(server.stop().success());
    let sockets: Vec<_> = tree(runtime.path())
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
                || names_pid(p, pid)
        })
        .collect();
    assert!(sockets.is_empty(), "left in the runtime dir: {sockets:?}");
    let left: Vec<_> = hako_cgroups()
        .into_iter()
        .filter(|dir| {
            helpers.iter().any(|h| {
                dir.contains(&format!("run-{h}-")) || dir.contains(&format!("zygote-{h}-"))
            })
        })
        .collect();
    assert!(left.is_empty(), "cgroups of the stopped server: {left:?}");
    assert!(descendants(pid).is_empty());
}

#[test]
fn a_failed_install_is_reported_by_ready_and_dependencies() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run_jail() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let key = format!("test-key-{port}");
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::create_dir_all(dir.path().join("dependencies")).unwrap();
    std::fs::write(
        dir.path().join("conf/config.yaml"),
        format!(
            "app:\n  port: {port}\n  key: {key}\nhako:\n  mode: spawn\n  state_dir: {}\n",
            state.path().display()
        ),
    )
    .unwrap();
    // A requirement no index can satisfy: a local project that does not exist.
    std::fs::write(
        dir.path().join("dependencies/python-requirements.txt"),
        "./no-such-project-anywhere\n",
    )
    .unwrap();
    let server = Server::start_in(dir, port, key, &[]);
    let deps_url = server.url("/v1/sandbox/dependencies?language=python3");
    let report = wait_for(Duration::from_secs(120), || {
        let (_, body) = http::blocking_get_json(&deps_url, &server.key)?;
        (body["data"]["state"] == "failed").then_some(body)
    })
    .expect("the install never failed");
    let error = report["data"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no-such-project-anywhere"), "{report}");
    let (status, ready) = http::blocking_get_json(&server.url("/ready"), "").unwrap();
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    let packages = ready["not_ready"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["component"] == "python3 packages"))
        .unwrap_or_else(|| panic!("/ready does not name the packages: {ready}"));
    let reason = packages["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("install failed"), "{ready}");
    assert!(reason.contains("no-such-project-anywhere"), "{ready}");
}

#[test]
fn a_zygote_that_cannot_start_backs_off_leaves_no_cgroup_and_says_so() {
    if !can_run_jail() {
        return;
    }
    // The warm-up ends the interpreter before it reports ready: every start fails.
    let server = Server::start(
        "max_workers: 1\nhako:\n  mode: zygote\n  python_warmup: \"import os; os._exit(3)\"\n",
        &[],
    );
    let failed_starts = || metric(&server, "hako_zygote_failed_starts_total");
    // Only this server's zygote helpers count (other servers on the host have their own):
    // the groups named after one that is gone, once the server is done reaping it.
    // The warm-up runs in each pool's preloaded parent: its helper is the one that fails.
    let zygote_helpers = HelperLog::start(server.pid(), "__zygote-parent");
    let leaked = || -> Vec<String> { cgroups_of_helpers(&zygote_helpers.gone(server.pid())) };
    let settled_leaks = || {
        wait_for(Duration::from_secs(5), || leaked().is_empty().then_some(()))
            .map_or_else(leaked, |()| Vec::new())
    };
    wait_for(Duration::from_secs(60), || {
        failed_starts().is_some_and(|n| n >= 2.0).then_some(())
    })
    .expect("no zygote start ever failed");
    assert!(
        !zygote_helpers.gone(server.pid()).is_empty(),
        "no failed zygote helper of this server was seen"
    );
    let leaks = settled_leaks();
    assert!(
        leaks.is_empty(),
        "failed zygote starts left cgroups: {leaks:?}"
    );
    let first = failed_starts().expect("failed starts are counted in /metrics");
    let window = Instant::now();
    // A window of time is the point here: how many starts fit in it.
    std::thread::sleep(Duration::from_secs(5));
    let later = failed_starts().unwrap_or_default();
    // Backing off from 100 ms and doubling, 5 s hold at most ~6 more starts; without a
    // backoff a start fails every few ms.
    assert!(
        later - first <= 8.0,
        "{} failed starts in {:?}: no backoff",
        later - first,
        window.elapsed()
    );
    let leaks = settled_leaks();
    assert!(
        leaks.is_empty(),
        "failed zygote starts left cgroups: {leaks:?}"
    );
    let (status, ready) = http::blocking_get_json(&server.url("/ready"), "").unwrap();
    let zygote = ready["not_ready"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["component"] == "python3 zygote"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(status, 503, "{ready}");
    let reason = zygote["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot start"), "{ready}");
    // Runs are still served (afresh).
    let data = post_run(&server, &json!({"language": "python3", "code": "print(2)"}));
    assert_eq!(data["stdout"], "2\n", "{data}");
    // And `hako doctor` says the same.
    let config = server.dir.path().join("conf/config.yaml");
    let doctor = std::process::Command::new(HAKO)
        .args(["doctor", "--config"])
        .arg(&config)
        .env("HAKO_LOG", "error")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("warm pool python3"))
        .unwrap_or_else(|| panic!("doctor says nothing of the warm pool:\n{text}"));
    assert!(line.contains("failed"), "{line}");
}

#[test]
fn a_package_switch_while_zygotes_start_ends_with_a_full_pool() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run_jail() {
        return;
    }
    // A fresh state dir: the default packages install while the first zygotes start, and
    // their slow warm-up makes sure the switch comes while they are still starting.
    std::fs::create_dir_all("/var/cache/hako-test").unwrap();
    let state = tempfile::tempdir_in("/var/cache/hako-test").unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "max_workers: 2\nworker_timeout: 20\nhako:\n  mode: zygote\n  state_dir: {}\n  python_warmup: \"import time; time.sleep(30)\"\n",
        state.path().display()
    );
    let server = Server::start(&config, &[("PIP_CACHE_DIR", "/var/cache/hako-test/pip")]);
    let deps_url = server.url("/v1/sandbox/dependencies?language=python3");
    wait_for(Duration::from_secs(300), || {
        let (_, body) = http::blocking_get_json(&deps_url, &server.key)?;
        assert_ne!(body["data"]["state"], "failed", "{body}");
        (body["data"]["state"] == "ready").then_some(())
    })
    .expect("the default packages never installed");
    // Only plain and lean zygotes may be up (they run no warm-up); the heavy ones are still
    // starting.
    assert!(
        metric(&server, "hako_warm_workers").is_some_and(|n| n <= 4.0),
        "the heavy zygotes started before the packages were in: no switch while starting"
    );
    // This run sees the new environment and switches the pool while its zygotes start.
    let data = post_run(
        &server,
        &json!({"language": "python3", "code": "import jinja2\nprint(3)"}),
    );
    assert_eq!(data["stdout"], "3\n", "{data}");
    // No other run comes: the pool fills up on its own.
    let full = wait_for(Duration::from_secs(150), || {
        (metric(&server, "hako_warm_workers")? >= 6.0).then_some(())
    });
    assert!(
        full.is_some(),
        "the warm pool stayed empty after the switch"
    );
}

#[test]
fn a_stopped_zygote_never_holds_a_request_past_its_timeout() {
    if !can_run_jail() {
        return;
    }
    let uid_base = 7_000_000u32;
    let server = Server::start(
        &format!(
            "max_workers: 1\nworker_timeout: 3\nhako:\n  mode: zygote\n  uid_base: {uid_base}\n"
        ),
        &[],
    );
    wait_for(Duration::from_secs(60), || {
        (metric(&server, "hako_warm_workers")? >= 3.0).then_some(())
    })
    .expect("the plain, the lean and the heavy zygote never started");
    // A preloaded parent is the Python process whose parent is its jail's init; the worker
    // zygotes are forked by it, and their run children (and the prepared ones) by them.
    let python = |p: u32| comm(p).starts_with("python");
    let zygotes: Vec<u32> = descendants(server.pid())
        .into_iter()
        .filter(|&p| python(p) && python(parent(p)) && !python(parent(parent(p))))
        .collect();
    assert_eq!(
        zygotes.len(),
        3,
        "a plain, a lean and a heavy worker expected: {zygotes:?}"
    );
    for &zygote in &zygotes {
        // SAFETY: kill only signals a zygote interpreter this test's server started.
        unsafe { libc::kill(zygote as i32, libc::SIGSTOP) };
        // Whatever happens, the zygote continues after 20 s (so an unbounded wait ends).
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(20));
            // SAFETY: as above.
            unsafe { libc::kill(zygote as i32, libc::SIGCONT) };
        });
    }
    for i in 0..3 {
        let started = Instant::now();
        let data = post_run(
            &server,
            &json!({"language": "python3", "code": format!("print({i})")}),
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(3000 + 2500),
            "run {i} answered after {took:?} with worker_timeout 3 s: {data}"
        );
        assert!(
            data["stdout"] == format!("{i}\n") || data["status"] == "timeout",
            "run {i}: {data}"
        );
    }
    // The stalled zygote was replaced: the pool is full again.
    let refilled = wait_for(Duration::from_secs(60), || {
        (metric(&server, "hako_warm_workers")? >= 1.0).then_some(())
    });
    assert!(refilled.is_some(), "the stalled zygote was not replaced");
    // The plain worker served those runs (they import nothing).
    let now = descendants(server.pid());
    assert!(
        zygotes.iter().any(|z| !now.contains(z)),
        "the stalled zygote is still there"
    );
}

/// The jail helpers under the server whose command line holds `subcommand`.
/// Whether the cgroup of a program of the test's under `server` is named after `helper`
/// (a worker zygote's run child lives in its worker's group).
fn supervises_program(server: u32, helper: u32) -> bool {
    descendants(server)
        .into_iter()
        .filter(|&pid| comm(pid) == PROGRAM_NAME)
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&format!("/zygote-{helper}-")))
        })
}

fn helpers(server: u32, subcommand: &str) -> Vec<u32> {
    descendants(server)
        .into_iter()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(subcommand))
        })
        .collect()
}

/// A process of the test's own, moved into a run's cgroups. While it is in them nobody's
/// `rmdir` can remove them (a neighbouring hako server's start-up removes only empty groups
/// whose helper is gone): only the server that reaps the killed helper, which kills what is
/// left in its groups, can make them go. Killed on drop, so a failed test leaves empty groups
/// that the next start-up removes.
struct Sentinel(std::process::Child);

impl Sentinel {
    fn enter(dirs: &[String]) -> Sentinel {
        let sentinel = Sentinel(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        );
        for dir in dirs {
            std::fs::write(format!("{dir}/cgroup.procs"), sentinel.0.id().to_string())
                .unwrap_or_else(|e| panic!("move the sentinel into {dir}: {e}"));
        }
        sentinel
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs the helper supervising a run that would last 12 s; within 5 s the helper's
/// cgroups (found by name while the run is live, with the run and a sentinel of the test's in
/// them) are gone: the server reaped the helper, killed what was left and removed them.
fn killed_helper_leaves_no_cgroup(mode: &str, subcommand: &str) {
    let server = Server::start(
        &format!("max_workers: 1\nworker_timeout: 40\nhako:\n  mode: {mode}\n"),
        &[],
    );
    if mode == "zygote" {
        server.wait_warm();
    }
    let before: BTreeSet<u32> = helpers(server.pid(), subcommand).into_iter().collect();
    let url = server.url("/v1/sandbox/run");
    let key = server.key.clone();
    let request = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .post(&url)
                .header("X-Api-Key", &key)
                .json(
                    &json!({"language": "python3", "code": named_python_sleep(30),
                    "limits": {"timeout_ms": 12000}}),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    });
    let pid = server.pid();
    // The run's program is up: a sleeping interpreter under the server.
    wait_for(Duration::from_secs(30), || {
        (executing(pid, "nanosleep") == 1).then_some(())
    })
    .expect("the run never started");
    let helper = helpers(pid, subcommand)
        .into_iter()
        .find(|&h| {
            if mode == "zygote" {
                // The worker zygote's helper whose group holds the run's program.
                supervises_program(pid, h)
            } else {
                !before.contains(&h)
            }
        })
        .expect("no helper found");
    // The exact groups of this helper, by name, while its run is live.
    let groups: Vec<String> = hako_cgroups()
        .into_iter()
        .filter(|d| {
            d.contains(&format!("/run-{helper}-")) || d.contains(&format!("/zygote-{helper}-"))
        })
        .collect();
    assert!(!groups.is_empty(), "the helper {helper} has no cgroup");
    let mut sentinel = Sentinel::enter(&groups);
    let left = || -> Vec<&String> {
        groups
            .iter()
            .filter(|d| std::path::Path::new(d).exists())
            .collect()
    };
    // SAFETY: kill only signals a jail helper of this test's server.
    unsafe { libc::kill(helper as i32, libc::SIGKILL) };
    let cleaned = wait_for(Duration::from_secs(5), || left().is_empty().then_some(()));
    assert!(
        cleaned.is_some(),
        "the killed helper's cgroups stayed: {:?}",
        left()
    );
    let ended = wait_for(Duration::from_secs(5), || {
        sentinel.0.try_wait().ok().flatten()
    });
    assert!(
        ended.is_some_and(
            |s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL)
        ),
        "what was left in the groups was not killed: {ended:?}"
    );
    let answered = request.join().unwrap();
    assert!(answered.is_ok(), "no answer: {answered:?}");
    assert_eq!(
        executing(pid, "nanosleep"),
        0,
        "the run outlived its helper"
    );
}

#[test]
fn a_killed_spawn_helper_leaves_no_cgroup() {
    if !can_run_jail() {
        return;
    }
    killed_helper_leaves_no_cgroup("spawn", "__jail");
}

#[test]
fn a_killed_zygote_helper_leaves_no_cgroup() {
    if !can_run_jail() {
        return;
    }
    killed_helper_leaves_no_cgroup("zygote", "__zygote-worker");
}
