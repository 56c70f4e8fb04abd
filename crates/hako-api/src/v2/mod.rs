//! The agent API (`/v2`): one-shot runs with files and streamed output, and sessions.
//!
//! ```text
//! /v2/runs                        POST   run once (JSON, or SSE with Accept: text/event-stream)
//! /v2/sessions                    POST   start a session; GET lists them
//! /v2/sessions/{id}               DELETE end it
//! /v2/sessions/{id}/exec          POST   run code in it
//! /v2/sessions/{id}/files         GET    list its workspace
//! /v2/sessions/{id}/files/{path}  PUT    upload (raw body); GET downloads (raw bytes)
//! ```
//! Auth: `X-Api-Key: KEY` or `Authorization: Bearer KEY`. Errors are
//! `{"error": {"code": …, "message": …}}` with a matching HTTP status.

mod error;
mod forward;
mod runs;
mod sessions;

pub use error::V2Error;

use crate::admission::Running;
use crate::answer::Rejection;
use crate::body::read_limited;
use crate::{AppState, RunCode};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

/// The `/v2` routes, behind the API key.
pub(crate) fn routes<E: RunCode>(state: AppState<E>) -> Router<AppState<E>> {
    Router::new()
        .route("/runs", post(runs::run::<E>))
        .route(
            "/sessions",
            post(sessions::create::<E>).get(sessions::list::<E>),
        )
        .route(
            "/sessions/{id}",
            axum::routing::delete(sessions::close::<E>),
        )
        .route("/sessions/{id}/exec", post(sessions::exec::<E>))
        .route("/sessions/{id}/files", get(sessions::list_files::<E>))
        .route(
            "/sessions/{id}/files/{*path}",
            get(sessions::get_file::<E>).put(sessions::put_file::<E>),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            require_key::<E>,
        ))
}

/// The request's body, within `hako.max_body_bytes`.
async fn read_body<E>(
    state: &AppState<E>,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, V2Error> {
    Ok(read_limited(headers, body, state.config.hako.max_body_bytes).await?)
}

/// A worker slot for one run or exec: refused at once when the queue is full.
async fn admit<E>(state: &AppState<E>) -> Result<Running, V2Error> {
    let ticket = state.admission.try_admit().ok_or(Rejection::Overloaded)?;
    Ok(ticket.start().await.map_err(|_| Rejection::ShuttingDown)?)
}

/// True when `X-Api-Key` or `Authorization: Bearer` carries `app.key` (constant time).
pub(crate) fn key_matches(headers: &HeaderMap, expected: &str) -> bool {
    let expected = expected.as_bytes();
    let api_key = headers.get("x-api-key").map(|v| v.as_bytes());
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let check = |given: Option<&[u8]>| given.is_some_and(|g| bool::from(g.ct_eq(expected)));
    check(api_key) | check(bearer)
}

pub async fn require_key<E>(
    State(state): State<AppState<E>>,
    request: Request,
    next: Next,
) -> Response {
    if key_matches(request.headers(), &state.config.app.key) {
        next.run(request).await
    } else {
        let mut response = V2Error::Unauthorized.into_response();
        response
            .extensions_mut()
            .insert(crate::answer::RejectReason("auth"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_header_carries_the_key() {
        let mut h = HeaderMap::new();
        assert!(!key_matches(&h, "k"));
        h.insert("x-api-key", "k".parse().unwrap());
        assert!(key_matches(&h, "k"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer k".parse().unwrap());
        assert!(key_matches(&h, "k"));
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert!(!key_matches(&h, "k"));
        h.insert("authorization", "Basic k".parse().unwrap());
        assert!(!key_matches(&h, "k"));
    }
}
