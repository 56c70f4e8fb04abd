//! The Dify envelope and the one place where errors become HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hako_runtime::ExecError;
use serde::Serialize;

/// `{"code": 0, "message": "success", "data": ...}`, Dify Sandbox's answer shape.
#[derive(Debug, Serialize)]
pub struct Envelope<T> {
    pub code: i32,
    pub message: String,
    pub data: Option<T>,
}

impl<T: Serialize> Envelope<T> {
    pub fn success(data: T) -> Self {
        Envelope {
            code: 0,
            message: "success".into(),
            data: Some(data),
        }
    }
}

/// Every way a request can fail. [`IntoResponse`] below is the only mapping to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("missing or wrong X-Api-Key")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot read the request body: {0}")]
    ReadBody(#[source] axum::Error),
    #[error("invalid query: {0}")]
    Query(#[source] axum::extract::rejection::QueryRejection),
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported language")]
    UnsupportedLanguage,
    /// Dify answers this with HTTP 200 and code -400.
    #[error("network is disabled, please enable it in the configuration")]
    NetworkDisabled,
    #[error("Too many requests")]
    Overloaded,
    #[error("request body is larger than {limit} bytes (hako.max_body_bytes)")]
    BodyTooLarge { limit: u64 },
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("timed out reading the request body")]
    BodyTimeout,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Sandbox(#[source] ExecError),
    #[error("internal error while handling the request")]
    Panic,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The first package environment is still being installed: 503 with `Retry-After`.
    #[error("{0}")]
    PackagesNotReady(#[source] ExecError),
}

/// `Retry-After` (seconds) of an answer to a run that waited for packages in vain.
const PACKAGES_RETRY_AFTER_S: u32 = 10;

/// Attached to rejected answers so the metrics layer can count them by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectReason(pub &'static str);

impl Rejection {
    /// HTTP status and envelope code.
    pub(crate) fn status_and_code(&self) -> (StatusCode, i32) {
        match self {
            Rejection::Unauthorized => (StatusCode::UNAUTHORIZED, -401),
            Rejection::BadRequest(_)
            | Rejection::ReadBody(_)
            | Rejection::Query(_)
            | Rejection::Json { .. }
            | Rejection::UnsupportedLanguage => (StatusCode::BAD_REQUEST, -400),
            Rejection::NetworkDisabled => (StatusCode::OK, -400),
            Rejection::Overloaded | Rejection::ShuttingDown | Rejection::PackagesNotReady(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, -503)
            }
            Rejection::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, -413),
            Rejection::HeadersTooLarge { .. } => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, -431)
            }
            Rejection::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, -408),
            Rejection::NotFound => (StatusCode::NOT_FOUND, -404),
            Rejection::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, -405),
            Rejection::Sandbox(_) | Rejection::Panic => (StatusCode::INTERNAL_SERVER_ERROR, -500),
        }
    }

    fn metric_reason(&self) -> Option<&'static str> {
        match self {
            Rejection::Unauthorized => Some("auth"),
            Rejection::Overloaded => Some("overload"),
            Rejection::BadRequest(_)
            | Rejection::ReadBody(_)
            | Rejection::Query(_)
            | Rejection::Json { .. }
            | Rejection::UnsupportedLanguage
            | Rejection::BodyTooLarge { .. }
            | Rejection::HeadersTooLarge { .. }
            | Rejection::BodyTimeout => Some("bad_request"),
            _ => None,
        }
    }
}

impl From<ExecError> for Rejection {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::NetworkDisabled => Rejection::NetworkDisabled,
            e @ ExecError::PackagesNotReady { .. } => Rejection::PackagesNotReady(e),
            other => Rejection::Sandbox(other),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Rejection::Sandbox(error) => tracing::error!(%error, "run failed in the sandbox"),
            Rejection::Panic => {}
            other => tracing::debug!(status = status.as_u16(), reason = %other, "rejected"),
        }
        let mut response = if matches!(self, Rejection::Unauthorized) {
            // Dify Sandbox answers a bad key with an empty body.
            status.into_response()
        } else {
            let envelope = Envelope::<()> {
                code,
                message: self.to_string(),
                data: None,
            };
            (status, Json(envelope)).into_response()
        };
        if matches!(self, Rejection::PackagesNotReady(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(PACKAGES_RETRY_AFTER_S),
            );
        }
        if let Some(reason) = self.metric_reason() {
            response.extensions_mut().insert(RejectReason(reason));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Rejection) -> (StatusCode, String) {
        let response = r.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn envelopes_match_dify() {
        let (status, body) = body_of(Rejection::UnsupportedLanguage).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            r#"{"code":-400,"message":"unsupported language","data":null}"#
        );
        let (status, body) = body_of(Rejection::Overloaded).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            r#"{"code":-503,"message":"Too many requests","data":null}"#
        );
        let (status, body) = body_of(ExecError::NetworkDisabled.into()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"code":-400,"message":"network is disabled, please enable it in the configuration","data":null}"#
        );
        let (status, body) = body_of(Rejection::Unauthorized).await;
        assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, ""));
        let (status, body) = body_of(ExecError::Sandbox("no cgroup".into()).into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.starts_with(r#"{"code":-500,"message":""#) && body.contains("no cgroup"));
    }

    #[test]
    fn rejections_carry_their_metric_reason() {
        let reason = |r: Rejection| {
            r.into_response()
                .extensions()
                .get::<RejectReason>()
                .copied()
        };
        assert_eq!(reason(Rejection::Unauthorized), Some(RejectReason("auth")));
        assert_eq!(
            reason(Rejection::Overloaded),
            Some(RejectReason("overload"))
        );
        assert_eq!(
            reason(Rejection::BodyTooLarge { limit: 1 }),
            Some(RejectReason("bad_request"))
        );
        assert_eq!(reason(Rejection::Sandbox(ExecError::Cancelled)), None);
    }
}
