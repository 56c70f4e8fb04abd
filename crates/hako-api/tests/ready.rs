//! `GET /ready` over a real connection: ready by default, 503 naming what is not ready
//! while a readiness source says so, and distinct from `/health` throughout.

use hako_api::{serve_on, AppState, NotReady, Readiness, RunCode};
use hako_runtime::{Config, ExecError, RunReport, RunRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct NeverRuns;

impl RunCode for NeverRuns {
    async fn run(&self, _: RunRequest) -> Result<RunReport, ExecError> {
        Err(ExecError::Sandbox("not used by these tests".into()))
    }
}

/// Not ready until `packages` is set, like a package install finishing.
#[derive(Default)]
struct Packages {
    installed: AtomicBool,
}

impl Readiness for Packages {
    fn not_ready(&self) -> Vec<NotReady> {
        if self.installed.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            vec![NotReady::new(
                "python3 packages",
                "installing 3 requirements",
            )]
        }
    }
}

async fn start(readiness: Option<Arc<dyn Readiness>>) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut state = AppState::new(Arc::new(Config::default()), NeverRuns);
    if let Some(source) = readiness {
        state = state.with_readiness(source);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    (base, stop)
}

async fn get(url: String) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "application/json");
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn ready_without_a_source_and_without_a_key() {
    let (base, _stop) = start(None).await;
    let (status, body) = get(format!("{base}/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"ready": true}));
}

#[tokio::test]
async fn not_ready_is_503_naming_the_component_while_health_stays_ok() {
    let packages = Arc::new(Packages::default());
    let (base, _stop) = start(Some(packages.clone())).await;

    let (status, body) = get(format!("{base}/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"ready": false, "not_ready": [
            {"component": "python3 packages", "reason": "installing 3 requirements"}
        ]})
    );
    let (status, body) = get(format!("{base}/health")).await;
    assert_eq!(status, StatusCode::OK, "liveness must not follow readiness");
    assert_eq!(body, json!("ok"));

    packages.installed.store(true, Ordering::SeqCst);
    let (status, body) = get(format!("{base}/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"ready": true}));
}

#[tokio::test]
async fn a_closure_is_a_readiness_source() {
    let source: Arc<dyn Readiness> = Arc::new(|| vec![NotReady::new("python3 zygote", "starting")]);
    let (base, _stop) = start(Some(source)).await;
    let (status, body) = get(format!("{base}/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["not_ready"][0]["component"], "python3 zygote");
}
