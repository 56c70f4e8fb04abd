//! Shared helpers of the end-to-end tests: they drive the real `hako` binary as root.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

pub const HAKO: &str = env!("CARGO_BIN_EXE_hako");

/// A deadline for start-up work `secs` from now, times `HAKO_TEST_DEADLINE_SCALE` (an
/// emulated guest, as in scripts/vm-cgroup2-test.sh, runs 13-20x slower).
pub fn startup_deadline(secs: u64) -> std::time::Instant {
    let scale = std::env::var("HAKO_TEST_DEADLINE_SCALE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    std::time::Instant::now() + std::time::Duration::from_secs(secs * scale)
}

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
        self.strings("blocked_syscalls")
    }
    /// A list of strings in the result (empty when absent).
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.json[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "hako run did not print JSON ({e}); stdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        json,
        exit: out.status.code().unwrap_or(-1),
    }
}

/// Python code that calls a libc function through ctypes and prints `name=<ret> errno=<e>`.
pub fn ctypes_call(name: &str, call: &str) -> String {
    format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nr = {call}\nprint('{name}=%d errno=%s' % (r, os.strerror(ctypes.get_errno())))\n"
    )
}

/// A real `hako serve` on a free loopback port, in its own working directory.
pub struct Server {
    pub port: u16,
    pub key: String,
    pub child: std::process::Child,
    pub dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `hako serve` with `conf/config.yaml` = `config` (port and key are added) and
    /// waits for /health.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let key = format!("test-key-{port}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let yaml = format!("app:\n  port: {port}\n  key: {key}\n{config}");
        std::fs::write(dir.path().join("conf/config.yaml"), yaml).unwrap();
        Server::start_in(dir, port, key, env)
    }

    pub fn start_in(
        dir: tempfile::TempDir,
        port: u16,
        key: String,
        env: &[(&str, &str)],
    ) -> Server {
        Server::start_wrapped(dir, port, key, env, &[])
    }

    /// As [`Server::start_in`], with `hako serve` started by `wrapper` (a command and its
    /// arguments, the hako binary appended), e.g. `setpriv` with fewer capabilities.
    pub fn start_wrapped(
        dir: tempfile::TempDir,
        port: u16,
        key: String,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Server {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(HAKO);
                c
            }
            None => Command::new(HAKO),
        };
        let child = command
            .arg("serve")
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .env("HAKO_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hako serve");
        let server = Server {
            port,
            key,
            child,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = startup_deadline(60);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("hako serve did not listen on {}", self.port);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill only signals the server child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop it the way an operator would; force only if it hangs.
        // SAFETY: kill only signals the server child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a Dify Code node ends with, following Dify's code executor error mapping.
#[derive(Debug, PartialEq)]
pub enum DifyOutcome {
    Stdout(String),
    Failed(String),
}

pub async fn dify_execute(server: &Server, language: &str, code: &str) -> DifyOutcome {
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "language": language, "code": code, "preload": "", "enable_network": true
    });
    let resp = client
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", &server.key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    if status == 503 {
        return DifyOutcome::Failed("Code execution service is unavailable".into());
    }
    if status != 200 {
        return DifyOutcome::Failed(format!(
            "Failed to execute code, which is likely a network issue, please check if the sandbox service is running. ( Error: got status code {status} )"
        ));
    }
    let text = resp.text().await.unwrap();
    let Ok(json) = serde_json::from_str::<Value>(&text) else {
        return DifyOutcome::Failed("Failed to parse response".into());
    };
    let code = json["code"].as_i64().unwrap_or(-1);
    if code != 0 {
        return DifyOutcome::Failed(format!(
            "Got error code: {code}. Got error msg: {}",
            json["message"].as_str().unwrap_or_default()
        ));
    }
    let error = json["data"]["error"].as_str().unwrap_or_default();
    if !error.is_empty() {
        return DifyOutcome::Failed(error.to_string());
    }
    DifyOutcome::Stdout(
        json["data"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Dify's `re.search(r"<<RESULT>>(.*)<<RESULT>>", stdout, re.DOTALL)` (greedy), then JSON.
pub fn dify_result(stdout: &str) -> Option<String> {
    let start = stdout.find("<<RESULT>>")? + "<<RESULT>>".len();
    let end = stdout.rfind("<<RESULT>>")?;
    (end >= start).then(|| stdout[start..end].to_string())
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// Dify's Python 3 runner script around `code`.
pub fn python_runner(code: &str, inputs: &Value) -> String {
    format!(
        "{code}\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{}').decode('utf-8'))\noutput_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nresult = f'''<<RESULT>>{{output_json}}<<RESULT>>'''\nprint(result)\n",
        b64(&serde_json::to_string(inputs).unwrap())
    )
}

/// Dify's JavaScript runner script around `code`.
pub fn javascript_runner(code: &str, inputs: &Value) -> String {
    format!(
        "{code}\nvar inputs_obj = JSON.parse(Buffer.from('{}', 'base64').toString('utf-8'))\nvar output_obj = main(inputs_obj)\nvar output_json = JSON.stringify(output_obj)\nvar result = `<<RESULT>>${{output_json}}<<RESULT>>`\nconsole.log(result)\n",
        b64(&serde_json::to_string(inputs).unwrap())
    )
}

/// Dify's Jinja2 runner (template base64-encoded, sandboxed environment).
pub fn jinja2_runner(template: &str, inputs: &Value) -> String {
    format!(
        "def main(**inputs):\n    from base64 import b64decode\n    from jinja2.sandbox import SandboxedEnvironment\n    env = SandboxedEnvironment()\n    template = env.from_string(b64decode('{}').decode('utf-8'))\n    return template.render(**inputs)\n\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{}').decode('utf-8'))\noutput = main(**inputs_obj)\nresult = f'''<<RESULT>>{{output}}<<RESULT>>'''\nprint(result)\n",
        b64(template),
        b64(&serde_json::to_string(inputs).unwrap())
    )
}

/// Where an isolation test runs its programs: the CLI (spawn mode) or a server in a mode.
pub enum Runner {
    Cli,
    Server(Server),
    /// The agent API's one-shot runs (`POST /v2/runs`) of a spawn-mode server.
    V2Runs(Server),
    /// A fresh session per program (`/v2/sessions`, one exec, then closed).
    Session(Server),
}

impl Runner {
    pub fn cli() -> Runner {
        Runner::Cli
    }

    /// A server in `mode` (spawn | zygote) that allows runs up to 20 s.
    pub fn server(mode: &str) -> Runner {
        Runner::server_with_env(mode, &[("HAKO_TEST_MARKER", "host-secret")])
    }

    pub fn server_with_env(mode: &str, env: &[(&str, &str)]) -> Runner {
        let config = format!("worker_timeout: 20\nmax_workers: 2\nhako:\n  mode: {mode}\n");
        let server = Server::start(&config, env);
        if mode == "zygote" {
            server.wait_warm();
        }
        Runner::Server(server)
    }

    /// A spawn-mode server whose runs go through the agent API (`v2` or `session`).
    pub fn agent(kind: &str) -> Runner {
        let config = "worker_timeout: 20\nmax_workers: 2\nhako:\n  mode: spawn\n";
        let server = Server::start(config, &[("HAKO_TEST_MARKER", "host-secret")]);
        match kind {
            "v2" => Runner::V2Runs(server),
            _ => Runner::Session(server),
        }
    }

    /// Runs `code`; `extra` takes `--timeout S` and `--memory-mb N` like `hako run`.
    pub fn run(&self, language: &str, code: &str, extra: &[&str]) -> Run {
        match self {
            Runner::Cli => run_with_env(
                language,
                code,
                extra,
                &[("HAKO_TEST_MARKER", "host-secret")],
            ),
            Runner::Server(server) => {
                let mut limits = serde_json::Map::new();
                let mut args = extra.iter();
                while let Some(flag) = args.next() {
                    let value: u64 = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .expect("flag value");
                    match *flag {
                        "--timeout" => limits.insert("timeout_ms".into(), (value * 1000).into()),
                        "--memory-mb" => limits.insert("memory_mb".into(), value.into()),
                        other => panic!("unsupported flag {other}"),
                    };
                }
                let body = serde_json::json!({
                    "language": language, "code": code, "enable_network": false, "limits": limits
                });
                Run {
                    json: post_run(server, &body),
                    exit: 0,
                }
            }
            Runner::V2Runs(server) | Runner::Session(server) => {
                let mut limits = serde_json::Map::new();
                let mut args = extra.iter();
                while let Some(flag) = args.next() {
                    let value: u64 = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .expect("flag value");
                    match *flag {
                        "--timeout" => limits.insert("timeout_s".into(), value.into()),
                        "--memory-mb" => limits.insert("memory_mb".into(), value.into()),
                        other => panic!("unsupported flag {other}"),
                    };
                }
                limits.insert("language".into(), language.into());
                let json = match self {
                    Runner::V2Runs(_) => {
                        limits.insert("code".into(), code.into());
                        post_agent(server, "/v2/runs", &Value::Object(limits))
                    }
                    _ => {
                        let created = post_agent(server, "/v2/sessions", &Value::Object(limits));
                        let id = created["id"].as_str().expect("session id").to_string();
                        let answer = post_agent(
                            server,
                            &format!("/v2/sessions/{id}/exec"),
                            &serde_json::json!({ "code": code }),
                        );
                        delete_agent(server, &format!("/v2/sessions/{id}"));
                        answer
                    }
                };
                Run { json, exit: 0 }
            }
        }
    }
}

fn agent_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A blocking POST to the agent API; returns the JSON answer.
pub fn post_agent(server: &Server, path: &str, body: &Value) -> Value {
    agent_runtime().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        client
            .post(server.url(path))
            .header("X-Api-Key", &server.key)
            .json(body)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON answer")
    })
}

/// A blocking DELETE on the agent API (a session that already ended answers 404).
pub fn delete_agent(server: &Server, path: &str) {
    agent_runtime().block_on(async {
        let _ = reqwest::Client::new()
            .delete(server.url(path))
            .header("X-Api-Key", &server.key)
            .send()
            .await;
    });
}

/// A blocking POST of a run (the isolation tests are synchronous); returns `data`.
pub fn post_run(server: &Server, body: &Value) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        let resp: Value = client
            .post(server.url("/v1/sandbox/run"))
            .header("X-Api-Key", &server.key)
            .json(body)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON answer");
        assert_eq!(resp["code"], 0, "{resp}");
        resp["data"].clone()
    })
}

impl Server {
    /// Waits until the warm zygotes are up (the server reports them in /metrics).
    pub fn wait_warm(&self) {
        let deadline = startup_deadline(60);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        while std::time::Instant::now() < deadline {
            let text = rt.block_on(async {
                reqwest::get(self.url("/metrics"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
            });
            if text.is_some_and(|t| {
                t.lines()
                    .any(|l| l.starts_with("hako_warm_workers ") && !l.ends_with(" 0"))
            }) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no warm zygote became ready");
    }
}

impl Server {
    /// Waits for a settled server: `/ready` answers 200 (packages installed, a warm worker
    /// up) and `workers` warm zygotes are idle. Tests that compare before and after wait for
    /// this rather than for time.
    pub fn wait_settled(&self, workers: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            let (ready, metrics) = rt.block_on(async {
                let ready = reqwest::get(self.url("/ready")).await.ok();
                let ready = match ready {
                    Some(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    None => (0, String::new()),
                };
                let metrics = match reqwest::get(self.url("/metrics")).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                (ready, metrics)
            });
            let warm = metrics
                .lines()
                .find_map(|l| l.strip_prefix("hako_warm_workers "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if ready.0 == 200 && warm >= workers as f64 {
                return;
            }
            last = format!("/ready {} {}; {warm} warm zygotes", ready.0, ready.1);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the server did not settle: {last}");
    }
}

/// Every process under `root` (its descendants, from the children of each of its threads),
/// `root` excluded.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for child in children(pid) {
            found.push(child);
            stack.push(child);
        }
    }
    found
}

/// The direct children of `pid`, started by any of its threads.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The jail helpers a server runs now (its direct children) and the subcommand of each
/// (`__jail`, `__zygote`).
pub fn helpers_of(server: u32) -> Vec<(u32, String)> {
    children(server)
        .into_iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let subcommand = cmdline
                .split(|b| *b == 0)
                .nth(1)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            (pid, subcommand)
        })
        .collect()
}

/// A uid range that no other test process running now uses (tests of other checkouts run on
/// the same host): derived from this process's pid. A server uses `uid_base` and the 5 × 65536
/// ids above it.
pub fn own_uid_base() -> u32 {
    100_000_000 + (std::process::id() % 10_000) * 5 * 65_536
}

/// A runtime directory of the server's own (not under /tmp: runs get their own /tmp, which
/// would hide files bound from there).
pub fn own_runtime_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir_in("/run").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The host's mount points under `dir` (a leaked jail mount of a server shows up under its
/// runtime directory, where the run roots are mounted).
pub fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(String::from)
        .collect()
}

/// hako's cgroup directories: `run-<helper>-<uid>` and `zygote-<helper>-<n>` in the v1
/// memory and pids hierarchies and in the v2 mount.
pub fn hako_cgroup_dirs() -> Vec<String> {
    ["memory", "pids", "unified", ""]
        .iter()
        .filter_map(|c| std::fs::read_dir(format!("/sys/fs/cgroup/{c}/hako")).ok())
        .flat_map(|d| d.filter_map(|e| e.ok()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The run cgroups whose host uid is in `[uid_base, uid_base + 5 × 65536)`: a server's own.
pub fn run_cgroups_of_uids(uid_base: u32) -> Vec<String> {
    hako_cgroup_dirs()
        .into_iter()
        .filter(|dir| {
            let name = dir.rsplit('/').next().unwrap_or_default();
            let uid = name.rsplit('-').next().and_then(|u| u.parse::<u32>().ok());
            name.starts_with("run-")
                && uid.is_some_and(|u| u >= uid_base && u - uid_base < 5 * 65_536)
        })
        .collect()
}

/// The cgroup directories named after one of `helpers` (`run-<pid>-…`, `zygote-<pid>-…`).
pub fn cgroups_of_helpers(helpers: &std::collections::BTreeSet<u32>) -> Vec<String> {
    hako_cgroup_dirs()
        .into_iter()
        .filter(|dir| {
            let name = dir.rsplit('/').next().unwrap_or_default();
            (name.starts_with("run-") || name.starts_with("zygote-"))
                && name
                    .split('-')
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| helpers.contains(&p))
        })
        .collect()
}

/// Records the pid of every helper a server starts with `subcommand` (sampled every 5 ms from
/// its children, until dropped), so that cgroups left by a helper that is gone can be told
/// apart from those of other servers on the host.
pub struct HelperLog {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u32>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HelperLog {
    pub fn start(server: u32, subcommand: &str) -> HelperLog {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (record, done, subcommand) = (seen.clone(), stop.clone(), subcommand.to_string());
        let thread = std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let helpers = helpers_of(server);
                let mut record = record.lock().unwrap();
                record.extend(
                    helpers
                        .into_iter()
                        .filter(|(_, s)| s.starts_with(subcommand.as_str()))
                        .map(|(p, _)| p),
                );
                drop(record);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        HelperLog {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every helper seen so far (its subcommand starts with the one given).
    pub fn seen(&self) -> std::collections::BTreeSet<u32> {
        self.seen.lock().unwrap().clone()
    }

    /// Helpers seen that are gone now (no longer children of the server, even if their pid
    /// was reused since).
    pub fn gone(&self, server: u32) -> std::collections::BTreeSet<u32> {
        let now: std::collections::BTreeSet<u32> = children(server).into_iter().collect();
        self.seen().difference(&now).copied().collect()
    }
}

impl Drop for HelperLog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The HTTP client of the asynchronous end-to-end tests (a 120 s timeout per request).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A request `method path` to `server` that carries its key.
pub fn keyed(server: &Server, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, server.url(path))
        .header("X-Api-Key", &server.key)
}

/// `GET path` with the server's key; the JSON answer.
pub async fn get_json(server: &Server, path: &str) -> Value {
    keyed(server, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The server's `/metrics` text.
pub async fn metrics_text(server: &Server) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A blocking `GET path` without a key (for the synchronous tests); the text answer.
pub fn get_text(server: &Server, path: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::get(server.url(path))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

impl Runner {
    /// A server started with `config` whose warm zygotes are up.
    pub fn warm_server(config: &str) -> Runner {
        let server = Server::start(config, &[]);
        server.wait_warm();
        Runner::Server(server)
    }
}
