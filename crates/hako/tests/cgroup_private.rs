//! A container on cgroup v2 as Docker and podman make it, with no host preparation: the
//! server lives in its own cgroup namespace rooted at the container's cgroup, sees
//! `/sys/fs/cgroup` read-only and has no `CAP_SYS_ADMIN`. hako mounts a private cgroup2 in
//! its own user and cgroup namespaces, moves its processes into a leaf and limits each run
//! with a cgroup (not with the memory guard).
//!
//! Runs only where `/sys/fs/cgroup` is a cgroup2 offering memory and pids (the cgroup-v2 VM
//! of scripts/vm-cgroup2-test.sh); elsewhere it says why it skips.

mod common;

use common::{can_run_jail, free_port, HAKO};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The container's cgroup, made by the test and removed at the end.
struct ContainerCgroup(PathBuf);

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // The server's processes leave their groups as they are reaped.
        for _ in 0..100 {
            for sub in ["hako", "hako-server", ""] {
                let _ = std::fs::remove_dir(self.0.join(sub));
            }
            if !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// `hako serve` in a container's shape, stopped with SIGTERM on drop.
struct Contained {
    child: Child,
    port: u16,
    key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Contained {
    fn drop(&mut self) {
        // SAFETY: kill only signals the wrapper we started (it execs into hako serve).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Contained {
    fn request(&self, path: &str, body: Option<&Value>) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .unwrap();
            let url = format!("http://127.0.0.1:{}{path}", self.port);
            let builder = match body {
                Some(body) => client.post(url).json(body),
                None => client.get(url),
            };
            builder
                .header("X-Api-Key", &self.key)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("JSON answer")
        })
    }

    fn run(&self, code: &str) -> Value {
        let body = json!({"language": "python3", "code": code, "enable_network": false});
        self.request("/v1/sandbox/run", Some(&body))["data"].clone()
    }
}

fn pure_v2() -> bool {
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers");
    let ok = controllers
        .as_deref()
        .is_ok_and(|c| c.contains("memory") && c.contains("pids"));
    if !ok {
        eprintln!("skipped: /sys/fs/cgroup is not a cgroup2 with memory and pids (cgroup v1 host)");
    }
    ok && Path::new("/usr/bin/unshare").exists() && Path::new("/usr/bin/setpriv").exists()
}

/// `hako serve` in its own cgroup (`cgroup`), own cgroup and mount namespaces,
/// `/sys/fs/cgroup` read-only, no CAP_SYS_ADMIN.
fn start_contained(cgroup: &Path) -> Contained {
    let port = free_port();
    let key = format!("test-key-{port}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    let yaml = format!(
        "app:\n  port: {port}\n  key: {key}\nhako:\n  mode: spawn\n  limits:\n    memory_mb: 96\n  network:\n    mode: host\n"
    );
    std::fs::write(dir.path().join("conf/config.yaml"), yaml).unwrap();
    let script = format!(
        "echo $$ > {procs} && exec unshare --cgroup --mount --propagation private sh -c \
         'mount -o remount,bind,ro /sys/fs/cgroup && exec setpriv --bounding-set -sys_admin \
         --inh-caps -sys_admin -- {HAKO} serve'",
        procs = cgroup.join("cgroup.procs").display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("HAKO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Stopped on drop, also when it never listens.
    let contained = Contained {
        child,
        port,
        key,
        _dir: dir,
    };
    let deadline = common::startup_deadline(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "hako serve did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    contained
}

#[test]
fn a_read_only_cgroup2_gets_a_private_mount_and_per_run_cgroups() {
    if !can_run_jail() || !pure_v2() {
        return;
    }
    let container = ContainerCgroup(PathBuf::from(format!(
        "/sys/fs/cgroup/hako-test-container-{}",
        std::process::id()
    )));
    // What a runtime does for its containers: the controllers are on for the groups below.
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids").unwrap();
    std::fs::create_dir(&container.0).unwrap();
    let server = start_contained(&container.0);
    let answer = server.run("chunks = []\nwhile True:\n    chunks.append(b'x' * (8 << 20))");
    assert_eq!(answer["status"], "memory_limit", "{answer}");
    let answer = server.run("print('fine')");
    assert_eq!(answer["status"], "ok", "{answer}");
    // The limits came from cgroups under the container's own cgroup, not from the guard.
    let leaf = std::fs::read_to_string(container.0.join("hako-server/cgroup.procs"))
        .expect("the server's processes moved to a leaf");
    assert!(!leaf.trim().is_empty(), "empty server leaf");
    assert!(container.0.join("hako").is_dir(), "no run parent group");
    let control = std::fs::read_to_string(container.0.join("cgroup.subtree_control")).unwrap();
    assert!(
        control.contains("memory") && control.contains("pids"),
        "{control}"
    );
    let ready = server.request("/ready", None);
    assert!(ready.get("degraded").is_none(), "{ready}");
    drop(server);
}
