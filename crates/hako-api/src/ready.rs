//! Readiness (`GET /ready`), distinct from liveness (`GET /health`).
//!
//! `/health` says the process serves HTTP. `/ready` says a run sent now would be served
//! without waiting for start-up work: the package environment installed, a warm worker
//! started. Orchestrators route traffic on `/ready` and restart on `/health`. Until a
//! source is plugged in with [`crate::AppState::with_readiness`], the server is ready.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// One thing that is not ready yet, with one line an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    /// What is not ready, e.g. `python3 packages` or `python3 zygote`.
    pub component: String,
    /// Why, e.g. `installing 3 requirements` or `install failed: ...`.
    pub reason: String,
}

impl NotReady {
    pub fn new(component: impl Into<String>, reason: impl Into<String>) -> Self {
        NotReady {
            component: component.into(),
            reason: reason.into(),
        }
    }
}

/// A source of readiness: what is not ready yet, empty when everything is.
///
/// Called on every `GET /ready`, so it must be cheap and must not block. Closures
/// `Fn() -> Vec<NotReady>` implement it.
pub trait Readiness: Send + Sync + 'static {
    fn not_ready(&self) -> Vec<NotReady>;
    /// What the server serves without (ready all the same), e.g. per-run cgroups.
    fn degraded(&self) -> Vec<NotReady> {
        Vec::new()
    }
}

/// A readiness source plus what the server runs without, found once at start.
pub struct WithDegraded {
    pub source: std::sync::Arc<dyn Readiness>,
    pub degraded: Vec<NotReady>,
}

impl Readiness for WithDegraded {
    fn not_ready(&self) -> Vec<NotReady> {
        self.source.not_ready()
    }

    fn degraded(&self) -> Vec<NotReady> {
        self.degraded.clone()
    }
}

impl<F> Readiness for F
where
    F: Fn() -> Vec<NotReady> + Send + Sync + 'static,
{
    fn not_ready(&self) -> Vec<NotReady> {
        self()
    }
}

/// The default source: nothing to wait for.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    fn not_ready(&self) -> Vec<NotReady> {
        Vec::new()
    }
}

#[derive(Debug, Serialize)]
struct ReadyBody {
    ready: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_ready: Vec<NotReady>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<NotReady>,
}

/// 200 `{"ready":true}`, or 503 `{"ready":false,"not_ready":[{component,reason}]}`.
pub(crate) fn answer(source: &dyn Readiness) -> Response {
    let not_ready = source.not_ready();
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadyBody {
        ready: not_ready.is_empty(),
        not_ready,
        degraded: source.degraded(),
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn ready_by_default() {
        let response = answer(&AlwaysReady);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response).await, serde_json::json!({"ready": true}));
    }

    #[tokio::test]
    async fn degraded_layers_are_listed_and_still_ready() {
        let source = WithDegraded {
            source: std::sync::Arc::new(AlwaysReady),
            degraded: vec![NotReady::new("cgroups", "memory guard")],
        };
        let response = answer(&source);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            body_of(response).await,
            serde_json::json!({
                "ready": true,
                "degraded": [{"component": "cgroups", "reason": "memory guard"}]
            })
        );
    }

    #[tokio::test]
    async fn a_closure_names_what_is_not_ready() {
        let source = || vec![NotReady::new("python3 packages", "installing")];
        let response = answer(&source);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body_of(response).await,
            serde_json::json!({
                "ready": false,
                "not_ready": [{"component": "python3 packages", "reason": "installing"}]
            })
        );
    }
}
