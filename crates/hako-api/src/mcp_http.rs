//! MCP's streamable HTTP transport at `/mcp` (same key as the rest of the API).
//!
//! `POST` carries one JSON-RPC message: a request gets its answer as `application/json`;
//! a notification or response gets `202 Accepted`. `initialize` hands out an
//! `Mcp-Session-Id`, which later requests echo. The server opens no server-initiated stream,
//! so `GET` is `405`; `DELETE` ends the client's MCP session.

use crate::body::read_limited;
use crate::mcp::{McpServer, PROTOCOL_VERSIONS};
use crate::v2::key_matches;
use crate::{AppState, RunCode};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

fn refuse(status: StatusCode, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": message}});
    (status, Json(body)).into_response()
}

pub async fn post<E: RunCode>(
    State(state): State<AppState<E>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !key_matches(&headers, &state.config.app.key) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong API key");
    }
    if let Some(version) = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()) {
        if !PROTOCOL_VERSIONS.contains(&version) {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("unsupported MCP-Protocol-Version {version}"),
            );
        }
    }
    let Some(server) = state.mcp.clone() else {
        return refuse(
            StatusCode::NOT_IMPLEMENTED,
            "MCP is not available in this server",
        );
    };
    let bytes = match read_limited(&headers, body, state.config.hako.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(rejection) => return rejection.into_response(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let message: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => return answer(server.handle_text(&text).await, None),
    };
    let initializing = message.get("method").and_then(Value::as_str) == Some("initialize");
    let session = initializing.then(hako_runtime::agent::random_id);
    answer(server.handle(message).await, session)
}

fn answer(reply: Option<Value>, session: Option<String>) -> Response {
    let Some(reply) = reply else {
        return StatusCode::ACCEPTED.into_response();
    };
    let mut response = Json(reply).into_response();
    if let Some(value) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

pub async fn get() -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    response
}

pub async fn delete<E: RunCode>(State(state): State<AppState<E>>, headers: HeaderMap) -> Response {
    if !key_matches(&headers, &state.config.app.key) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong API key");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Builds the MCP server of an HTTP server's state.
pub(crate) fn server_for(
    agent: Option<&hako_runtime::agent::Agent>,
    admission: &std::sync::Arc<crate::Admission>,
) -> Option<McpServer> {
    agent.map(|a| McpServer::new(a.clone(), Some(std::sync::Arc::clone(admission))))
}
