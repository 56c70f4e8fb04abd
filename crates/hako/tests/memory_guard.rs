//! Without any cgroup (`hako.cgroup_root` pointing at an empty directory, as in a
//! user-namespaced pod whose cgroup is not delegated) the supervisor's memory guard stops a
//! memory bomb that rlimits alone let through, while a concurrent run survives; `/ready` and
//! `hako doctor` say that the guard is what limits memory.

mod common;

use common::{can_run_jail, post_run, Server};
use serde_json::{json, Value};

/// 176 MiB in one process: within its address-space rlimit (at least 256 MiB), over the
/// run's 128 MiB.
const PYTHON_BOMB: &str = r#"
chunks = [b"x" * (16 << 20) for _ in range(11)]
print("all allocated")
"#;

/// Node has no address-space rlimit at all (V8 reserves far more than it uses).
const NODE_BOMB: &str = r#"
const keep = [];
for (let i = 0; i < 64; i++) keep.push(Buffer.alloc(16 << 20, 1));
console.log("all allocated");
"#;

/// 32 MiB held for a while, then a word: it must survive the bombs beside it.
const SURVIVOR: &str = r#"
import time
b = b"x" * (32 << 20)
time.sleep(4)
print("survived", len(b))
"#;

fn config(cgroup_root: &std::path::Path, mode: &str) -> String {
    format!(
        "{}  cgroup_root: {}\n",
        config_mode(mode),
        cgroup_root.display()
    )
}

fn config_mode(mode: &str) -> String {
    format!("max_workers: 4\nhako:\n  mode: {mode}\n  limits:\n    memory_mb: 128\n")
}

fn body(language: &str, code: &str) -> Value {
    json!({"language": language, "code": code, "preload": "", "enable_network": false})
}

fn bombs_stop_and_a_neighbour_survives(mode: &str) {
    if !can_run_jail() {
        return;
    }
    let no_cgroups = tempfile::tempdir().unwrap();
    let server = Server::start(&config(no_cgroups.path(), mode), &[]);
    if mode == "zygote" {
        server.wait_warm();
    }
    std::thread::scope(|scope| {
        let survivor = scope.spawn(|| post_run(&server, &body("python3", SURVIVOR)));
        let python = post_run(&server, &body("python3", PYTHON_BOMB));
        assert_eq!(python["status"], "memory_limit", "{python}");
        assert!(
            !python["stdout"]
                .as_str()
                .unwrap_or_default()
                .contains("all allocated"),
            "{python}"
        );
        let node = post_run(&server, &body("nodejs", NODE_BOMB));
        assert_eq!(node["status"], "memory_limit", "{node}");
        let survivor = survivor.join().unwrap();
        assert_eq!(survivor["status"], "ok", "{survivor}");
        assert_eq!(
            survivor["stdout"].as_str().unwrap_or_default().trim(),
            format!("survived {}", 32 << 20)
        );
    });
    let ready = get_json(&server.url("/ready"));
    let reason = ready["degraded"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("memory guard"), "{ready}");
}

fn get_json(url: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

#[test]
fn without_cgroups_the_memory_guard_stops_bombs_in_spawn_mode() {
    bombs_stop_and_a_neighbour_survives("spawn");
}

#[test]
fn without_cgroups_the_memory_guard_stops_bombs_in_zygote_mode() {
    bombs_stop_and_a_neighbour_survives("zygote");
}

#[test]
fn doctor_names_the_memory_guard_without_cgroups() {
    if !can_run_jail() {
        return;
    }
    let no_cgroups = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::HAKO)
        .arg("doctor")
        .env("HAKO_CGROUP_ROOT", no_cgroups.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("memory limit"))
        .unwrap_or_default();
    assert!(line.contains("guard"), "{text}");
}

/// A cgroup v1 container without its bind mounts: every cgroup hierarchy is there but
/// read-only. Runs are limited by the guard (before, every run failed to create its group).
#[test]
fn a_read_only_cgroupfs_falls_back_to_the_memory_guard() {
    if !can_run_jail() {
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipped: no cgroup v1 memory hierarchy (cgroup v2 takes a private mount)");
        return;
    }
    let port = common::free_port();
    let key = format!("test-key-{port}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    let yaml = format!(
        "app:\n  port: {port}\n  key: {key}\n{}",
        config_mode("spawn")
    );
    std::fs::write(dir.path().join("conf/config.yaml"), yaml).unwrap();
    let script = format!(
        "for m in $(awk '$2 ~ \"^/sys/fs/cgroup/\" {{print $2}}' /proc/self/mounts); do \
         mount -o remount,bind,ro \"$m\" || exit 1; done; exec {} serve",
        common::HAKO
    );
    let child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(dir.path())
        .env("HAKO_LOG", "warn")
        .spawn()
        .unwrap();
    let server = Server {
        port,
        key,
        child,
        dir,
    };
    let deadline = common::startup_deadline(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "no server");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bomb = post_run(&server, &body("python3", PYTHON_BOMB));
    assert_eq!(bomb["status"], "memory_limit", "{bomb}");
    let fine = post_run(&server, &body("python3", "print('fine')"));
    assert_eq!(fine["stdout"], "fine\n", "{fine}");
    let ready = get_json(&server.url("/ready"));
    let reason = ready["degraded"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bind-mount"), "{ready}");
}

/// The agent API's runs (`/v2/runs`, served by the live helper) get the same guard.
#[test]
fn without_cgroups_the_memory_guard_stops_a_bomb_in_an_agent_run() {
    if !can_run_jail() {
        return;
    }
    let no_cgroups = tempfile::tempdir().unwrap();
    let server = Server::start(&config(no_cgroups.path(), "spawn"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer: Value = rt.block_on(async {
        common::keyed(&server, reqwest::Method::POST, "/v2/runs")
            .json(&json!({"language": "nodejs", "code": NODE_BOMB, "timeout_s": 30}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(answer["status"], "memory_limit", "{answer}");
    assert!(
        !answer["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("all allocated"),
        "{answer}"
    );
}
