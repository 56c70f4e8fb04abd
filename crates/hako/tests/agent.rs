//! The agent API end to end over real HTTP against a real `hako serve`: one-shot runs with
//! files and streaming (`/v2/runs`), sessions (`/v2/sessions/...`) and their limits, and
//! sessions reached through another replica.

mod common;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// A spawn-mode server with the agent API's defaults and `extra` config under `hako:`.
fn server(extra: &str) -> Server {
    Server::start(
        &format!("worker_timeout: 20\nmax_workers: 4\nhako:\n  mode: spawn\n{extra}"),
        &[],
    )
}

async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(server.url(path))
        .header("Authorization", format!("Bearer {}", server.key))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

async fn create_session(server: &Server, body: Value) -> String {
    let (status, answer) = post(server, "/v2/sessions", &body).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

async fn exec(server: &Server, id: &str, code: &str) -> (u16, Value) {
    post(
        server,
        &format!("/v2/sessions/{id}/exec"),
        &json!({ "code": code }),
    )
    .await
}

/// A server whose Python environment has pandas and matplotlib (installed once, cached).
async fn data_server() -> Server {
    let cache = Path::new("/var/cache/hako-test");
    std::fs::create_dir_all(cache.join("state-agent")).unwrap();
    let state = cache.join("state-agent");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::create_dir_all(dir.path().join("dependencies")).unwrap();
    std::fs::write(
        dir.path().join("dependencies/python-requirements.txt"),
        "pandas\nmatplotlib\n",
    )
    .unwrap();
    let port = free_port();
    let key = format!("test-key-{port}");
    let yaml = format!(
        "app:\n  port: {port}\n  key: {key}\nworker_timeout: 60\nhako:\n  mode: spawn\n  state_dir: {}\n",
        state.display()
    );
    std::fs::write(dir.path().join("conf/config.yaml"), yaml).unwrap();
    let pip_cache = format!("{}/pip", cache.display());
    let server = Server::start_in(dir, port, key, &[("PIP_CACHE_DIR", &pip_cache)]);
    let report: Value = keyed(
        &server,
        reqwest::Method::GET,
        "/v1/sandbox/dependencies/refresh?language=python3",
    )
    .timeout(Duration::from_secs(900))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(report["data"]["state"], "ready", "{report}");
    server
}

#[tokio::test]
async fn a_run_reads_an_uploaded_csv_with_pandas_and_returns_the_png_it_drew() {
    if !can_run_jail() {
        return;
    }
    let server = data_server().await;
    let code = "import pandas as pd, matplotlib.pyplot as plt, os\n\
df = pd.read_csv('data/sales.csv')\n\
print(df.groupby('region')['amount'].sum().to_dict())\n\
os.makedirs('out', exist_ok=True)\n\
df.plot.bar(x='region', y='amount').get_figure().savefig('out/chart.png')\n\
open('out/skip.txt', 'w').write('not asked for')\n";
    let csv = "region,amount\nnorth,3\nsouth,5\nnorth,4\n";
    let (status, result) = post(
        &server,
        "/v2/runs",
        &json!({
            "language": "python3",
            "code": code,
            "files": { "data/sales.csv": b64(csv.as_bytes()) },
            "return_files": ["out/*.png"],
            "memory_mb": 256,
            "timeout_s": 60,
        }),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["stdout"], "{'north': 7, 'south': 5}\n", "{result}");
    let files = result["files"].as_object().unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["out/chart.png"],
        "{result}"
    );
    assert!(unb64(&files["out/chart.png"]).starts_with(b"\x89PNG\r\n\x1a\n"));

    // A figure in a session comes back as an image.
    let id = create_session(&server, json!({"language": "python3", "timeout_s": 60})).await;
    let (status, answer) = exec(
        &server,
        &id,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nlen(plt.get_fignums())",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["value"], "1", "{answer}");
    let images = answer["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{answer}");
    assert_eq!(images[0]["mime"], "image/png");
    assert!(unb64(&images[0]["base64"]).starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn runs_take_stdin_env_and_lowered_limits_and_refuse_bad_paths() {
    if !can_run_jail() {
        return;
    }
    let server = server("  limits:\n    memory_mb: 256\n");
    let (status, r) = post(
        &server,
        "/v2/runs",
        &json!({
            "language": "python3",
            "code": "import os, sys\nprint(sys.stdin.read().upper(), os.environ['GREETING'], os.getcwd())",
            "stdin": "from stdin",
            "env": { "GREETING": "hi" },
        }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["stdout"], "FROM STDIN hi /tmp\n", "{r}");
    let (_, r) = post(
        &server,
        "/v2/runs",
        &json!({
            "language": "nodejs",
            "code": "const fs = require('fs'); console.log(fs.readFileSync('in/a.txt', 'utf8')); fs.writeFileSync('b.txt', 'back')",
            "files": { "in/a.txt": b64(b"node in") },
            "return_files": ["*.txt"],
        }),
    )
    .await;
    assert_eq!(r["stdout"], "node in\n", "{r}");
    assert_eq!(unb64(&r["files"]["b.txt"]), b"back", "{r}");
    // Asking for more memory than the operator allows gets the operator's limit.
    let (_, r) = post(
        &server,
        "/v2/runs",
        &json!({
            "language": "python3",
            "code": "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
            "memory_mb": 100000,
        }),
    )
    .await;
    assert_eq!(r["status"], "memory_limit", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("memory limit of 256 MiB"),
        "{r}"
    );
    let (_, r) = post(
        &server,
        "/v2/runs",
        &json!({"language": "python3", "code": "while True: pass", "timeout_s": 1}),
    )
    .await;
    assert_eq!(r["status"], "timeout", "{r}");
    for (body, what) in [
        (
            json!({"language": "python3", "code": "1", "files": {"../x": ""}}),
            "without `..`",
        ),
        (
            json!({"language": "python3", "code": "1", "files": {"/etc/x": ""}}),
            "relative",
        ),
        (
            json!({"language": "python3", "code": "1", "return_files": ["../*"]}),
            "return_files",
        ),
        (
            json!({"language": "python3", "code": "1", "env": {"LD_PRELOAD": "x"}}),
            "LD_PRELOAD",
        ),
        (
            json!({"language": "python3", "code": "1", "files": {"a": "!!"}}),
            "base64",
        ),
        (json!({"language": "cobol", "code": "1"}), "unsupported"),
    ] {
        let (status, answer) = post(&server, "/v2/runs", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{body}: {message}");
    }
    // The key works in either header and is required.
    let resp = client()
        .post(server.url("/v2/runs"))
        .json(&json!({"language": "python3", "code": "print(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .post(server.url("/v2/runs"))
        .header("X-Api-Key", &server.key)
        .json(&json!({"language": "python3", "code": "print(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// Reads server-sent events, noting when each arrived.
async fn read_events(resp: reqwest::Response) -> Vec<(Instant, String, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = Value::Null;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            events.push((now, name, data));
        }
    }
    events
}

#[tokio::test]
async fn streamed_output_arrives_while_the_program_still_runs() {
    if !can_run_jail() {
        return;
    }
    let server = server("");
    let code = "import sys, time\nprint('first', flush=True)\ntime.sleep(2)\nprint('oops', file=sys.stderr, flush=True)\ntime.sleep(2)\nprint('last')";
    let resp = client()
        .post(server.url("/v2/runs"))
        .header("X-Api-Key", &server.key)
        .header("Accept", "text/event-stream")
        .json(&json!({"language": "python3", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = read_events(resp).await;
    let names: Vec<(&str, &Value)> = events.iter().map(|(_, n, d)| (n.as_str(), d)).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[0], ("stdout", &json!({"text": "first\n"})));
    assert_eq!(names[1], ("stderr", &json!({"text": "oops\n"})));
    assert_eq!(names[2], ("stdout", &json!({"text": "last\n"})));
    assert_eq!(names[3].0, "result");
    assert_eq!(names[3].1["stdout"], "first\nlast\n");
    assert_eq!(names[3].1["stderr"], "oops\n");
    // Each event came as it was written: the program slept 2 s between them.
    let gap = |a: usize, b: usize| events[b].0.duration_since(events[a].0);
    assert!(gap(0, 1) >= Duration::from_millis(1500), "{:?}", gap(0, 1));
    assert!(gap(1, 2) >= Duration::from_millis(1500), "{:?}", gap(1, 2));
}

#[tokio::test]
async fn a_client_that_goes_away_ends_its_streamed_run() {
    if !can_run_jail() {
        return;
    }
    let server = server("");
    let resp = client()
        .post(server.url("/v2/runs"))
        .header("X-Api-Key", &server.key)
        .header("Accept", "text/event-stream")
        .json(&json!({"language": "python3", "code": "import time\nprint('up', flush=True)\ntime.sleep(60)"}))
        .send()
        .await
        .unwrap();
    let mut resp = resp;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("up"));
    drop(resp);
    // The run ends (and leaves the worker slot) long before its 60 s sleep or the server's
    // 20 s limit would end it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(&server).await;
        if text.lines().any(|l| l == "hako_runs_in_flight 0") {
            break;
        }
        assert!(Instant::now() < deadline, "the run kept running:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_session_keeps_variables_imports_and_files_across_execs() {
    if !can_run_jail() {
        return;
    }
    let server = server("");
    let id = create_session(&server, json!({"language": "python3"})).await;
    let (_, a) = exec(
        &server,
        &id,
        "import json\ncount = 41\nopen('notes.txt', 'w').write('kept')\nprint('set')",
    )
    .await;
    assert_eq!(
        (a["stdout"].as_str(), a["status"].as_str()),
        (Some("set\n"), Some("ok")),
        "{a}"
    );
    let (_, b) = exec(&server, &id, "count += 1\njson.dumps({'n': count})").await;
    assert_eq!(b["value"], "'{\"n\": 42}'", "{b}");
    let (_, c) = exec(&server, &id, "open('notes.txt').read() + str(count)").await;
    assert_eq!(c["value"], "'kept42'", "{c}");
    let (_, d) = exec(&server, &id, "undefined_name").await;
    assert_eq!(d["status"], "error", "{d}");
    assert!(d["error"].as_str().unwrap().contains("NameError"), "{d}");
    assert_eq!(d["session_ended"], false);

    // Files in and out of the workspace.
    let put = keyed(
        &server,
        reqwest::Method::PUT,
        &format!("/v2/sessions/{id}/files/in/data.bin"),
    )
    .body(vec![0u8, 1, 2, 255])
    .send()
    .await
    .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let (_, e) = exec(&server, &id, "list(open('in/data.bin', 'rb').read())").await;
    assert_eq!(e["value"], "[0, 1, 2, 255]", "{e}");
    let got = keyed(
        &server,
        reqwest::Method::GET,
        &format!("/v2/sessions/{id}/files/notes.txt"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"kept");
    let listing: Value = get_json(&server, &format!("/v2/sessions/{id}/files")).await;
    let paths: Vec<&str> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"notes.txt") && paths.contains(&"in/data.bin"),
        "{listing}"
    );
    let missing = keyed(
        &server,
        reqwest::Method::GET,
        &format!("/v2/sessions/{id}/files/nothing.txt"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // Node keeps state the same way.
    let js = create_session(&server, json!({"language": "nodejs"})).await;
    let (_, a) = exec(
        &server,
        &js,
        "const path = require('path'); let n = 41; console.log('set')",
    )
    .await;
    assert_eq!(a["stdout"], "set\n", "{a}");
    let (_, b) = exec(&server, &js, "n += 1; path.join('a', String(n))").await;
    assert_eq!(b["value"], "'a/42'", "{b}");

    let metrics = metrics_text(&server).await;
    assert!(metrics.lines().any(|l| l == "hako_sessions 2"), "{metrics}");
    let closed = keyed(
        &server,
        reqwest::Method::DELETE,
        &format!("/v2/sessions/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(closed.status().as_u16(), 204);
    let (status, _) = exec(&server, &id, "count").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_memory_kill_ends_only_its_own_session() {
    if !can_run_jail() {
        return;
    }
    let server = server("");
    let doomed = create_session(&server, json!({"language": "python3", "memory_mb": 128})).await;
    let other = create_session(&server, json!({"language": "python3", "memory_mb": 128})).await;
    let (_, setup) = exec(&server, &other, "survivor = 'alive'").await;
    assert_eq!(setup["status"], "ok", "{setup}");
    let (status, killed) = exec(
        &server,
        &doomed,
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
    )
    .await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["status"], "memory_limit", "{killed}");
    assert_eq!(killed["session_ended"], true, "{killed}");
    assert!(
        killed["error"]
            .as_str()
            .unwrap()
            .contains("memory limit of 128 MiB exceeded"),
        "{killed}"
    );
    let (status, gone) = exec(&server, &doomed, "1").await;
    assert_eq!(status, 404, "{gone}");
    let (_, alive) = exec(&server, &other, "survivor").await;
    assert_eq!(alive["value"], "'alive'", "{alive}");

    // A timeout ends its session too, and says so.
    let slow = create_session(&server, json!({"language": "python3", "timeout_s": 1})).await;
    let (_, timed_out) = exec(&server, &slow, "while True: pass").await;
    assert_eq!(timed_out["status"], "timeout", "{timed_out}");
    assert_eq!(timed_out["session_ended"], true, "{timed_out}");
}

#[tokio::test]
async fn idle_sessions_expire_and_caps_hold() {
    if !can_run_jail() {
        return;
    }
    let server = server("  agent:\n    max_sessions: 2\n    sessions_memory_mb: 600\n");
    let busy = create_session(&server, json!({"language": "python3", "memory_mb": 256})).await;
    let filler = create_session(&server, json!({"language": "python3", "memory_mb": 256})).await;
    let (status, refused) = post(&server, "/v2/sessions", &json!({"language": "python3"})).await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_sessions"));
    let closed = keyed(
        &server,
        reqwest::Method::DELETE,
        &format!("/v2/sessions/{filler}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(closed.status().as_u16(), 204);
    let idle = create_session(
        &server,
        json!({"language": "python3", "idle_timeout_s": 1, "memory_mb": 256}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = get_json(&server, "/v2/sessions").await;
        let ids: Vec<&str> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        if !ids.contains(&idle.as_str()) {
            assert!(ids.contains(&busy.as_str()), "{list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle session never expired: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = exec(&server, &idle, "1").await;
    assert_eq!(status, 404);
    // Memory: 256 held, 600 in all; asking for more than 512 gets the operator's 512.
    let (status, refused) = post(
        &server,
        "/v2/sessions",
        &json!({"language": "python3", "memory_mb": 800}),
    )
    .await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sessions_memory_mb"));
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("hako_sessions_ended_total{reason=\"idle\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_session_is_reached_through_another_replica() {
    if !can_run_jail() {
        return;
    }
    // Replicas are named after their ports here, and the peer address pattern maps a name
    // to 127.0.0.1:<name> (in Kubernetes: <pod>.<headless service>).
    let port_a = free_port();
    let port_b = free_port();
    let start = |port: u16| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let yaml = format!(
            "app:\n  port: {port}\n  key: shared-key\nworker_timeout: 20\nhako:\n  mode: spawn\n  agent:\n    replica: \"{port}\"\n    peer_url: \"http://127.0.0.1:{{replica}}\"\n"
        );
        std::fs::write(dir.path().join("conf/config.yaml"), yaml).unwrap();
        Server::start_in(dir, port, "shared-key".into(), &[])
    };
    let a = start(port_a);
    let b = start(port_b);
    let id = create_session(&a, json!({"language": "python3"})).await;
    assert!(id.ends_with(&format!(".{port_a}")), "{id}");
    let (status, set) = exec(&b, &id, "x = 'from b'\nx").await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["value"], "'from b'", "{set}");
    let (_, read) = exec(&a, &id, "x").await;
    assert_eq!(read["value"], "'from b'", "{read}");
    let put = client()
        .put(b.url(&format!("/v2/sessions/{id}/files/f.txt")))
        .header("X-Api-Key", "shared-key")
        .body("via b")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let (_, f) = exec(&a, &id, "open('f.txt').read()").await;
    assert_eq!(f["value"], "'via b'", "{f}");
    // The owner goes away: a clear 404, quickly.
    a.stop();
    let started = Instant::now();
    let (status, gone) = exec(&b, &id, "x").await;
    assert_eq!(status, 404, "{gone}");
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{gone}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (status, _) = exec(&b, "abc.not-a-replica", "x").await;
    assert_eq!(status, 404);
}
