//! The MCP server, driven by the official MCP Python SDK client (`tests/mcp/client.py`)
//! over stdio (`hako mcp`) and over streamable HTTP (`/mcp` on `hako serve`): tools are
//! listed, `run_code` runs, and a session does an upload, two execs and a download.
//!
//! The client lives in a venv at /var/cache/hako-test/mcp-venv (`scripts/setup-debian.sh`
//! creates it; this test creates it when missing). HAKO_TEST_MCP_PYTHON overrides it.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

const VENV: &str = "/var/cache/hako-test/mcp-venv";

fn client_python() -> PathBuf {
    if let Ok(python) = std::env::var("HAKO_TEST_MCP_PYTHON") {
        return PathBuf::from(python);
    }
    let python = PathBuf::from(VENV).join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("/usr/bin/python3")
            .args(["-m", "venv", VENV])
            .status()
            .expect("python3 -m venv");
        assert!(made.success(), "cannot create {VENV}");
        let installed = Command::new(PathBuf::from(VENV).join("bin/pip"))
            .args(["install", "-q", "mcp"])
            .status()
            .expect("pip install mcp");
        assert!(installed.success(), "pip install mcp failed");
    }
    python
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py")
}

fn assert_ok(output: std::process::Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("MCP OK"),
        "{what}: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_official_sdk_client_works_over_stdio_and_streamable_http() {
    if !can_run_jail() {
        return;
    }
    let python = client_python();
    let server = Server::start("worker_timeout: 20\nhako:\n  mode: spawn\n", &[]);
    let http = Command::new(&python)
        .arg(script())
        .args(["http", &server.url("/mcp"), &server.key])
        .output()
        .expect("run the MCP client");
    assert_ok(http, "streamable HTTP");
    // The wrong key is refused before any MCP message is read.
    let refused = Command::new(&python)
        .arg(script())
        .args(["http", &server.url("/mcp"), "wrong-key"])
        .output()
        .expect("run the MCP client");
    assert!(!refused.status.success());
    transport_rules(&server);
    // stdio: `hako mcp` in a directory with a configuration, as an agent would start it.
    let stdio = Command::new(&python)
        .arg(script())
        .args(["stdio", HAKO, server.dir.path().to_str().unwrap()])
        .output()
        .expect("run the MCP client");
    assert_ok(stdio, "stdio");
}

/// What the streamable HTTP transport answers besides requests.
fn transport_rules(server: &Server) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let post = |body: serde_json::Value| {
            client
                .post(server.url("/mcp"))
                .header("Authorization", format!("Bearer {}", server.key))
                .header("Accept", "application/json, text/event-stream")
                .json(&body)
        };
        let init = post(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(init.status().as_u16(), 200);
        assert!(init.headers().contains_key("mcp-session-id"));
        let answer: serde_json::Value = init.json().await.unwrap();
        assert_eq!(
            answer["result"]["protocolVersion"], "2025-06-18",
            "{answer}"
        );
        let note =
            post(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .send()
                .await
                .unwrap();
        assert_eq!(note.status().as_u16(), 202);
        let old = post(serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
            .header("MCP-Protocol-Version", "1999-01-01")
            .send()
            .await
            .unwrap();
        assert_eq!(old.status().as_u16(), 400);
        let unknown: serde_json::Value =
            post(serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "no/such"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
        let get = client
            .get(server.url("/mcp"))
            .header("Authorization", format!("Bearer {}", server.key))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status().as_u16(), 405);
    });
}
