//! The API's connections over real sockets on 127.0.0.1, with a fake executor: request heads
//! that never finish are closed, keep-alive connections expire, connections beyond the cap
//! are closed at once, and each of those is counted in /metrics.

use hako_api::{serve_on, AppState, RunCode};
use hako_runtime::{Config, ExecError, RunReport, RunRequest, Usage};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const KEY: &str = "test-key";
/// Only guards against a hang; every wait below ends on a state, far earlier.
const GUARD: Duration = Duration::from_secs(60);

/// `sleep:N` sleeps N ms, anything else is echoed.
struct Fake;

impl RunCode for Fake {
    async fn run(&self, req: RunRequest) -> Result<RunReport, ExecError> {
        if let Some(ms) = req.code.strip_prefix("sleep:").and_then(|s| s.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(RunReport {
            usage: Usage {
                wall_ms: 1,
                cpu_ms: 1,
                peak_memory_bytes: 1,
            },
            ..RunReport::ok(req.language, req.code)
        })
    }
}

struct Server {
    addr: String,
    _stop: oneshot::Sender<()>,
}

async fn start(edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::default();
    config.app.key = KEY.into();
    edit(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = AppState::new(std::sync::Arc::new(config), Fake);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    Server { addr, _stop: stop }
}

impl Server {
    /// One request on its own connection (`Connection: close`); the whole answer.
    async fn request(&self, head: &str, body: &str) -> String {
        let mut s = TcpStream::connect(&self.addr).await.unwrap();
        let text = format!(
            "{head}\r\nHost: x\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(text.as_bytes()).await.unwrap();
        read_until_closed(&mut s).await
    }

    async fn run(&self, code: &str) -> String {
        let body = serde_json::json!({"language": "python3", "code": code}).to_string();
        self.request("POST /v1/sandbox/run HTTP/1.1", &body).await
    }

    async fn metrics(&self) -> String {
        self.request("GET /metrics HTTP/1.1", "").await
    }
}

/// Everything the server sends until it closes (a reset counts as closed).
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_are_closed_after_the_header_timeout_and_others_are_served() {
    let s = start(|c| c.hako.http.header_timeout_secs = 2).await;
    let mut held = Vec::new();
    for i in 0..200 {
        let mut c = TcpStream::connect(&s.addr).await.unwrap();
        // Half of them send part of a head, the other half nothing at all.
        if i % 2 == 0 {
            c.write_all(b"POST /v1/sandbox/run HTTP/1.1\r\nHost: x\r\nX-Api-")
                .await
                .unwrap();
        }
        held.push(c);
    }
    let answer = s.run("still served").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("still served"), "{answer}");
    for c in &mut held {
        let got = read_until_closed(c).await;
        assert_eq!(got, "", "no answer to a head that never finished");
    }
    let text = s.metrics().await;
    let timed_out = metric(
        &text,
        "hako_http_connections_timed_out_total{phase=\"head\"}",
    );
    assert_eq!(timed_out, 200.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_but_requests_in_flight_are_never_cut() {
    let s = start(|c| {
        c.hako.http.header_timeout_secs = 1;
        c.hako.http.idle_timeout_secs = 1;
    })
    .await;
    // A run longer than both timeouts answers in full.
    let answer = s.run("sleep:2500").await;
    assert!(answer.contains("sleep:2500"), "{answer}");
    // A keep-alive connection that asks nothing more is closed.
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let text = s.metrics().await;
    let idle = metric(
        &text,
        "hako_http_connections_timed_out_total{phase=\"idle\"}",
    );
    assert_eq!(idle, 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let s = start(|c| c.hako.http.max_connections = 8).await;
    // Eight keep-alive connections, each answered once, so the server holds all eight.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(&s.addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(GUARD, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let refused = s.request("GET /health HTTP/1.1", "").await;
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "the ninth connection is closed at once: {refused:?}"
    );
    // A freed place serves again (the server sees the close asynchronously).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + GUARD;
    let text = loop {
        let text = s.metrics().await;
        if text.starts_with("HTTP/1.1 200") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::task::yield_now().await;
    };
    assert!(
        metric(&text, "hako_http_connections_rejected_total") >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "hako_http_connections_open"), 8.0, "{text}");
}

#[tokio::test]
async fn metrics_can_require_the_key() {
    let s = start(|c| c.hako.http.metrics_public = false).await;
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let without = read_until_closed(&mut c).await;
    assert!(without.starts_with("HTTP/1.1 401"), "{without}");
    let with = s.metrics().await;
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
    assert!(with.contains("hako_http_connections_open"), "{with}");
    let open = start(|_| {}).await;
    let mut c = TcpStream::connect(&open.addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let public = read_until_closed(&mut c).await;
    assert!(
        public.starts_with("HTTP/1.1 200"),
        "public by default: {public}"
    );
}
