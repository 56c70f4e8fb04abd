//! Sessions across replicas: a session id ends with its owner's name; a replica that gets a
//! request for another replica's session forwards it to `hako.agent.peer_url` with
//! `{replica}` replaced by the owner (e.g. a pod's name under a headless Service). A replica
//! that does not answer gives a 404 quickly, never a hang.

use super::sessions::is_local;
use super::V2Error;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hako_runtime::agent::Sessions;
use std::time::Duration;

/// Marks a forwarded request, so it is never forwarded again.
const FORWARDED: &str = "x-hako-forwarded";
/// How long a peer may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of a forwarded call (an exec waits for its own timeout inside it).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) struct Foreign {
    id: String,
    owner: String,
    base: String,
}

impl Foreign {
    /// `Some` when the session belongs to a reachable-by-config peer.
    pub(super) fn of(
        sessions: &Sessions,
        id: &str,
        headers: &HeaderMap,
        peer_url: &str,
    ) -> Option<Foreign> {
        if is_local(sessions, id) || peer_url.is_empty() || headers.contains_key(FORWARDED) {
            return None;
        }
        let owner = Sessions::owner(id)?;
        let safe = !owner.is_empty()
            && owner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        safe.then(|| Foreign {
            id: id.to_string(),
            owner: owner.to_string(),
            base: peer_url.replace("{replica}", owner),
        })
    }
}

pub(super) async fn forward(
    foreign: Foreign,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<Response, V2Error> {
    let gone = |source: reqwest::Error| V2Error::PeerGone {
        id: foreign.id.clone(),
        owner: foreign.owner.clone(),
        source,
    };
    // Handlers see the path inside `/v2`.
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}/v2{}", foreign.base.trim_end_matches('/'), path);
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(gone)?;
    let mut request = client.request(method, &url).header(FORWARDED, "1");
    for name in ["x-api-key", "authorization", "content-type", "x-request-id"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.body(body.to_vec());
    }
    let answer = request.send().await.map_err(gone)?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| HeaderValue::from_str(v).ok());
    let bytes = answer.bytes().await.map_err(gone)?;
    let mut response = (status, bytes.to_vec()).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    Ok(response)
}
