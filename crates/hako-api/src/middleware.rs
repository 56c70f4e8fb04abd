//! Request context (id and span), header size cap, API key check and rejection metrics.

use crate::answer::{RejectReason, Rejection};
use crate::metrics::Metrics;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tower_http::request_id::{MakeRequestId, MakeRequestUuid};
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Total size of all request headers that we accept. hyper's own cap is about 400 KiB.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of the request, from `x-request-id` or generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn usable_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= MAX_REQUEST_ID_LEN
        && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_string())
}

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(usable_id)
        .or_else(|| {
            let generated = MakeRequestUuid.make_request_id(&request)?;
            generated.header_value().to_str().ok().map(str::to_string)
        })
        .unwrap_or_default();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "answered"
        )
    });
    response
}

pub async fn limit_headers(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return Rejection::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        }
        .into_response();
    }
    next.run(request).await
}

pub async fn count_rejections(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(RejectReason(reason)) = response.extensions().get::<RejectReason>() {
        metrics.rejected(reason);
    }
    response
}

/// `X-Api-Key` must equal `app.key`; compared in constant time (the length may leak).
pub(crate) async fn require_api_key<E>(
    State(state): State<AppState<E>>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.config.app.key.as_bytes();
    let given = request
        .headers()
        .get("x-api-key")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if bool::from(given.ct_eq(expected)) {
        next.run(request).await
    } else {
        Rejection::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_clients_are_checked() {
        assert_eq!(
            usable_id(&HeaderValue::from_static("abc-123")).as_deref(),
            Some("abc-123")
        );
        assert_eq!(usable_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(usable_id(&HeaderValue::from_static("")), None);
        let long = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap();
        assert_eq!(usable_id(&long), None);
    }
}
