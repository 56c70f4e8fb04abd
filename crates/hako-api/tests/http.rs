//! The HTTP contract over real connections on 127.0.0.1, with a fake executor.

use hako_api::{serve_on, AppState, RunCode};
use hako_runtime::{Config, ExecError, RunReport, RunRequest, Usage};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "test-key";

/// `sleep:N` sleeps N ms; `panic` panics; `sandbox-error` and `network` fail;
/// `echo-request` prints the request; anything else is echoed to stdout.
#[derive(Default)]
struct Fake {
    finished: Arc<AtomicUsize>,
}

impl RunCode for Fake {
    async fn run(&self, req: RunRequest) -> Result<RunReport, ExecError> {
        let stdout = match req.code.as_str() {
            "panic" => panic!("fake executor panics on purpose"),
            "sandbox-error" => return Err(ExecError::Sandbox("cannot create cgroup".into())),
            "network" => return Err(ExecError::NetworkDisabled),
            "echo-request" => format!(
                "{} {} {:?} {} {:?} {:?}",
                req.language,
                req.request_id,
                req.preload,
                req.enable_network,
                req.limits.timeout_ms,
                req.limits.memory_mb
            ),
            code => match code.strip_prefix("sleep:").and_then(|ms| ms.parse().ok()) {
                Some(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "slept".to_string()
                }
                None => code.to_string(),
            },
        };
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(RunReport {
            usage: Usage {
                wall_ms: 1,
                cpu_ms: 1,
                peak_memory_bytes: 1024,
            },
            ..RunReport::ok(req.language, stdout)
        })
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), hako_api::ApiError>>,
    finished: Arc<AtomicUsize>,
}

fn config() -> Config {
    let mut config = Config::default();
    config.app.key = KEY.into();
    config
}

async fn start(config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = Fake::default();
    let finished = Arc::clone(&fake.finished);
    let state = AppState::new(Arc::new(config), fake);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    Server {
        base,
        client: reqwest::Client::new(),
        stop: Some(stop),
        task,
        finished,
    }
}

impl Server {
    fn run_request(&self, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/sandbox/run", self.base))
            .header("X-Api-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body)
    }

    async fn run(&self, language: &str, code: &str) -> (StatusCode, Value) {
        let body =
            json!({"language": language, "code": code, "preload": "", "enable_network": true});
        let response = self.run_request(body.to_string()).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn assert_serving(&self) {
        let (status, body) = self.run("python3", "still here").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["stdout"], "still here");
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn health_is_the_json_string_ok_without_a_key() {
    let s = start(config()).await;
    let response = s
        .client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "\"ok\"");
}

#[tokio::test]
async fn a_run_answers_with_difys_envelope_and_hakos_extras() {
    let s = start(config()).await;
    let (status, body) = s.run("python3", "print('hi')").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"code": 0, "message": "success", "data": {
            "stdout": "print('hi')", "stderr": "", "error": "", "exit_code": 0,
            "status": "ok", "blocked_syscalls": [],
            "usage": {"wall_ms": 1, "cpu_ms": 1, "peak_memory_bytes": 1024},
            "refused_destinations": []
        }})
    );
    let (status, body) = s.run("nodejs", "console.log(1)").await;
    assert_eq!((status, body["code"].as_i64()), (StatusCode::OK, Some(0)));
}

#[tokio::test]
async fn content_type_is_not_required() {
    let s = start(config()).await;
    let response = s
        .client
        .post(format!("{}/v1/sandbox/run", s.base))
        .header("X-Api-Key", KEY)
        .body(r#"{"language":"python3","code":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn missing_or_wrong_keys_get_401_with_an_empty_body() {
    let s = start(config()).await;
    let body = r#"{"language":"python3","code":"x"}"#;
    let url = format!("{}/v1/sandbox/run", s.base);
    for key in [
        None,
        Some("wrong"),
        Some("test-kez"),
        Some(""),
        Some("test-key-longer"),
    ] {
        let mut request = s.client.post(&url).body(body);
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(response.text().await.unwrap(), "", "{key:?}");
    }
    for path in [
        "dependencies?language=python3",
        "dependencies/refresh?language=python3",
    ] {
        let response = s
            .client
            .get(format!("{}/v1/sandbox/{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let response = s
        .client
        .post(format!("{}/v1/sandbox/dependencies/update", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(s
        .metrics()
        .await
        .contains(r#"hako_rejected_total{reason="auth"} 8"#));
}

#[tokio::test]
async fn unsupported_language_is_400() {
    let s = start(config()).await;
    let (status, body) = s.run("ruby", "puts 1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"code": -400, "message": "unsupported language", "data": null})
    );
}

#[tokio::test]
async fn malformed_requests_get_400_envelopes_and_the_server_keeps_serving() {
    let s = start(config()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated",
            br#"{"language":"python3","code":"pri"#.to_vec(),
        ),
        (
            "code is a number",
            br#"{"language":"python3","code":5}"#.to_vec(),
        ),
        (
            "language is a list",
            br#"{"language":["python3"],"code":"x"}"#.to_vec(),
        ),
        (
            "not UTF-8",
            b"{\"language\":\"python3\",\"code\":\"\xff\xfe\"}".to_vec(),
        ),
        ("empty", Vec::new()),
        ("missing code", br#"{"language":"python3"}"#.to_vec()),
        ("missing language", br#"{"code":"x"}"#.to_vec()),
        (
            "empty code",
            br#"{"language":"python3","code":""}"#.to_vec(),
        ),
        ("not an object", b"42".to_vec()),
        (
            "trailing garbage",
            br#"{"language":"python3","code":"x"} {"#.to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let response = s.run_request(bytes).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], -400, "{what}: {body}");
        assert!(body["data"].is_null(), "{what}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{what}");
    }
    s.assert_serving().await;
    assert!(s
        .metrics()
        .await
        .contains(r#"hako_rejected_total{reason="bad_request"} 10"#));
}

#[tokio::test]
async fn a_30_mib_body_gets_413() {
    let s = start(config()).await;
    let code = "x".repeat(30 << 20);
    let body = json!({"language": "python3", "code": code}).to_string();
    let response = s.run_request(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], -413);
    s.assert_serving().await;
}

#[tokio::test]
async fn the_body_limit_follows_the_config() {
    let mut c = config();
    c.hako.max_body_bytes = 100;
    let s = start(c).await;
    let (status, _) = s.run("python3", &"y".repeat(100)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    s.assert_serving().await;
}

#[tokio::test]
async fn a_100_kib_header_gets_431() {
    let s = start(config()).await;
    let response = s
        .run_request(r#"{"language":"python3","code":"x"}"#)
        .header("X-Padding", "p".repeat(100 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], -431);
    s.assert_serving().await;
}

#[tokio::test]
async fn a_header_beyond_hypers_buffer_gets_431_too() {
    let s = start(config()).await;
    let response = s
        .run_request(r#"{"language":"python3","code":"x"}"#)
        .header("X-Padding", "p".repeat(1 << 20))
        .send()
        .await;
    // hyper answers 431 itself and closes; the client may see either.
    if let Ok(response) = response {
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
    s.assert_serving().await;
}

#[tokio::test]
async fn a_panic_is_a_500_envelope_and_the_next_request_works() {
    let s = start(config()).await;
    let (status, body) = s.run("python3", "panic").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], -500);
    assert!(body["data"].is_null());
    s.assert_serving().await;
    // The panicking run gave its admission back.
    assert!(s.metrics().await.contains("hako_runs_in_flight 0"));
}

#[tokio::test]
async fn sandbox_failures_are_500() {
    let s = start(config()).await;
    let (status, body) = s.run("python3", "sandbox-error").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], -500);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot create cgroup"),
        "{body}"
    );
    assert!(body["data"].is_null());
}

#[tokio::test]
async fn network_disabled_is_200_with_code_minus_400() {
    let expected = json!({"code": -400,
        "message": "network is disabled, please enable it in the configuration", "data": null});
    let mut c = config();
    c.enable_network = false;
    let s = start(c).await;
    let (status, body) = s.run("python3", "print(1)").await;
    assert_eq!((status, &body), (StatusCode::OK, &expected));
    // Without enable_network the run goes ahead.
    let body = r#"{"language":"python3","code":"fine","enable_network":false}"#;
    let response: Value = s
        .run_request(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["data"]["stdout"], "fine");
    // The executor may refuse too.
    let s = start(config()).await;
    let (status, body) = s.run("python3", "network").await;
    assert_eq!((status, &body), (StatusCode::OK, &expected));
}

#[tokio::test]
async fn the_request_id_preload_and_limits_reach_the_executor() {
    let s = start(config()).await;
    let body = json!({"language": "nodejs", "code": "echo-request", "preload": "import os",
        "enable_network": true, "limits": {"timeout_ms": 250, "memory_mb": 64}, "unknown": 1});
    let response = s
        .run_request(body.to_string())
        .header("x-request-id", "req-42")
        .send()
        .await;
    let response = response.unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["stdout"],
        "nodejs req-42 Some(\"import os\") true Some(250) Some(64)"
    );

    let body = json!({"language": "python3", "code": "echo-request"});
    let response = s.run_request(body.to_string()).send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(id.len() >= 16, "{id}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["stdout"],
        format!("python3 {id} None false None None")
    );
}

#[tokio::test]
async fn admission_runs_two_queues_four_and_refuses_the_rest() {
    let mut c = config();
    c.max_workers = 2;
    c.max_requests = 6;
    let s = Arc::new(start(c).await);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let body = r#"{"language":"python3","code":"sleep:1000"}"#;
            let response = s.run_request(body).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    body,
                    json!({"code": -503, "message": "Too many requests", "data": null})
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, refused), (6, 6));
    s.assert_serving().await;
    let text = s.metrics().await;
    assert!(
        text.contains(r#"hako_rejected_total{reason="overload"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hako_runs_total{language="python3",status="ok"} 7"#),
        "{text}"
    );
    assert!(
        text.contains("hako_queue_depth 0") && text.contains("hako_runs_in_flight 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_gives_its_place_back() {
    let mut c = config();
    c.max_workers = 1;
    c.max_requests = 1;
    let s = start(c).await;
    let body = r#"{"language":"python3","code":"sleep:3000"}"#;
    let gone = s
        .run_request(body)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gone.is_err(), "the client should have timed out");
    // The server notices the closed connection and drops the run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _) = s.run("python3", "back").await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dependencies_endpoints_answer_with_the_list_shape() {
    let s = start(config()).await;
    let expected = json!({"code": 0, "message": "success",
        "data": {"dependencies": [], "state": "none"}});
    for path in [
        "dependencies?language=python3",
        "dependencies/refresh?language=nodejs",
    ] {
        let url = format!("{}/v1/sandbox/{path}", s.base);
        let response = s
            .client
            .get(url)
            .header("X-Api-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap(), expected, "{path}");
    }
    let update = format!("{}/v1/sandbox/dependencies/update", s.base);
    for (query, body) in [("?language=python3", ""), ("", r#"{"language":"python3"}"#)] {
        let response = s
            .client
            .post(format!("{update}{query}"))
            .header("X-Api-Key", KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            expected,
            "{query} {body}"
        );
    }
    for (path, status, message) in [
        ("dependencies?language=ruby", 400, "unsupported language"),
        ("dependencies", 400, "missing parameter `language`"),
        (
            "dependencies/refresh?language=",
            400,
            "missing parameter `language`",
        ),
    ] {
        let url = format!("{}/v1/sandbox/{path}", s.base);
        let response = s
            .client
            .get(url)
            .header("X-Api-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["code"].as_i64(), body["message"].as_str()),
            (Some(-400), Some(message))
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_envelopes() {
    let s = start(config()).await;
    let response = s
        .client
        .get(format!("{}/nope", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], -404);
    let url = format!("{}/v1/sandbox/run", s.base);
    let response = s
        .client
        .get(url)
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], -405);
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_per_server() {
    let s = start(config()).await;
    let other = start(config()).await;
    s.run("python3", "one").await;
    s.run("nodejs", "sandbox-error").await;
    let text = s.metrics().await;
    for needle in [
        r#"hako_runs_total{language="python3",status="ok"} 1"#,
        r#"hako_runs_total{language="nodejs",status="sandbox_error"} 1"#,
        r#"hako_run_duration_seconds_bucket{language="python3",le="0.005"}"#,
        "hako_queue_depth 0",
        "hako_runs_in_flight 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!other.metrics().await.contains("hako_runs_total"));
}

#[tokio::test]
async fn shutdown_finishes_the_run_in_flight() {
    let mut s = start(config()).await;
    let client = s.client.clone();
    let request = s.run_request(r#"{"language":"python3","code":"sleep:500"}"#);
    let in_flight = tokio::spawn(async move { request.send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.stop.take().unwrap().send(()).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["stdout"], "slept");
    let served = tokio::time::timeout(Duration::from_secs(5), s.task).await;
    served
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(s.finished.load(Ordering::SeqCst), 1);
    // Nothing listens any more.
    assert!(client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .is_err());
}
