//! The one place where agent API failures become HTTP answers.

use crate::answer::{RejectReason, Rejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hako_runtime::agent::AgentError;
use hako_runtime::ExecError;

#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    #[error("missing or wrong API key (X-Api-Key or Authorization: Bearer)")]
    Unauthorized,
    #[error("{0}")]
    Agent(#[from] AgentError),
    /// A failure of the shared request plumbing (body size, JSON, overload).
    #[error("{0}")]
    Request(#[from] Rejection),
    #[error("the agent API is not available in this server")]
    Unavailable,
    #[error("session {id} is on replica {owner}, which does not answer: {source}")]
    PeerGone {
        id: String,
        owner: String,
        #[source]
        source: reqwest::Error,
    },
}

impl V2Error {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            V2Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            V2Error::Agent(e) => match e {
                AgentError::Invalid(_)
                | AgentError::Base64 { .. }
                | AgentError::Encode(_)
                | AgentError::Path(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                AgentError::UnsupportedLanguage => {
                    (StatusCode::BAD_REQUEST, "unsupported_language")
                }
                AgentError::Exec(ExecError::NetworkDisabled) => {
                    (StatusCode::BAD_REQUEST, "network_disabled")
                }
                AgentError::Exec(ExecError::Unavailable { .. }) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "language_unavailable")
                }
                AgentError::NoSession(_) => (StatusCode::NOT_FOUND, "session_not_found"),
                AgentError::NoFile(_) => (StatusCode::NOT_FOUND, "file_not_found"),
                AgentError::Capacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "capacity"),
                AgentError::Exec(_)
                | AgentError::Live(_)
                | AgentError::Protocol(_)
                | AgentError::Reply { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "sandbox_error"),
            },
            V2Error::Request(r) => {
                let (status, _) = r.status_and_code();
                let code = match r {
                    Rejection::Overloaded => "overloaded",
                    Rejection::ShuttingDown => "shutting_down",
                    Rejection::BodyTooLarge { .. } => "body_too_large",
                    _ if status.is_server_error() => "internal",
                    _ => "invalid_request",
                };
                (status, code)
            }
            V2Error::Unavailable => (StatusCode::NOT_IMPLEMENTED, "unavailable"),
            V2Error::PeerGone { .. } => (StatusCode::NOT_FOUND, "session_not_found"),
        }
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "agent API request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "agent API request refused");
        }
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        let mut response = (status, Json(body)).into_response();
        let reason = match code {
            "overloaded" => Some("overload"),
            "invalid_request" | "unsupported_language" | "body_too_large" => Some("bad_request"),
            _ => None,
        };
        if let Some(reason) = reason {
            response.extensions_mut().insert(RejectReason(reason));
        }
        response
    }
}
