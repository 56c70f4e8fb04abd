//! `/v2/sessions/...`. A session id names the replica that owns it; a request for another
//! replica's session is forwarded there (see [`super::forward`]).

use super::forward::{forward, Foreign};
use super::{admit, read_body, V2Error};
use crate::body::parse_json;
use crate::middleware::RequestId;
use crate::result::ExecData;
use crate::{AppState, RunCode};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hako_runtime::agent::{Agent, SessionSpec, Sessions};
use serde::Deserialize;
use std::time::Instant;

fn agent<E>(state: &AppState<E>) -> Result<Agent, V2Error> {
    state.agent.clone().ok_or(V2Error::Unavailable)
}

pub async fn create<E: RunCode>(
    State(state): State<AppState<E>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let agent = agent(&state)?;
    let spec: SessionSpec = parse_json(&read_body(&state, &headers, body).await?)?;
    let id = agent.sessions().create(spec, &request_id).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

pub async fn list<E: RunCode>(State(state): State<AppState<E>>) -> Result<Response, V2Error> {
    let agent = agent(&state)?;
    let sessions = agent.sessions().list();
    Ok(
        Json(serde_json::json!({ "sessions": sessions, "replica": agent.sessions().replica() }))
            .into_response(),
    )
}

/// The request as it came, for forwarding it to the replica that owns a session.
pub struct Hop {
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Hop {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Hop {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// Serves a request for session `id` with `serve` when this replica owns it; forwards it to
/// its owner otherwise.
async fn on_owner<E, F, Fut>(
    state: &AppState<E>,
    id: &str,
    hop: Hop,
    body: Option<Bytes>,
    serve: F,
) -> Result<Response, V2Error>
where
    F: FnOnce(Agent) -> Fut,
    Fut: std::future::Future<Output = Result<Response, V2Error>>,
{
    let agent = agent(state)?;
    match Foreign::of(agent.sessions(), id, &hop.headers, &agent.config().peer_url) {
        None => serve(agent).await,
        Some(foreign) => Ok(forward(foreign, hop.method, &hop.uri, &hop.headers, body).await?),
    }
}

pub async fn close<E: RunCode>(
    State(state): State<AppState<E>>,
    Path(id): Path<String>,
    hop: Hop,
) -> Result<Response, V2Error> {
    let (state, id) = (&state, id.as_str());
    on_owner(state, id, hop, None, |agent| async move {
        if agent.sessions().close(id) {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(hako_runtime::agent::AgentError::NoSession(id.to_string()).into())
        }
    })
    .await
}

#[derive(Deserialize)]
struct ExecBody {
    code: String,
}

pub async fn exec<E: RunCode>(
    State(state): State<AppState<E>>,
    Path(id): Path<String>,
    hop: Hop,
    body: Body,
) -> Result<Response, V2Error> {
    let bytes = read_body(&state, &hop.headers, body).await?;
    let forwarded = Some(bytes.clone());
    let (state, id) = (&state, id.as_str());
    on_owner(state, id, hop, forwarded, |agent| async move {
        let body: ExecBody = parse_json(&bytes)?;
        let running = admit(state).await?;
        let started = Instant::now();
        let answer = agent.sessions().exec(id, &body.code).await;
        drop(running);
        let status = match &answer {
            Ok(a) => a.run.status.as_str(),
            Err(_) => "sandbox_error",
        };
        state
            .metrics
            .run_finished("session", status, started.elapsed());
        Ok(Json(ExecData::from(answer?)).into_response())
    })
    .await
}

pub async fn list_files<E: RunCode>(
    State(state): State<AppState<E>>,
    Path(id): Path<String>,
    hop: Hop,
) -> Result<Response, V2Error> {
    let (state, id) = (&state, id.as_str());
    on_owner(state, id, hop, None, |agent| async move {
        let files = agent.sessions().list_files(id).await?;
        Ok(Json(serde_json::json!({ "files": files })).into_response())
    })
    .await
}

pub async fn get_file<E: RunCode>(
    State(state): State<AppState<E>>,
    Path((id, path)): Path<(String, String)>,
    hop: Hop,
) -> Result<Response, V2Error> {
    let (state, id) = (&state, id.as_str());
    on_owner(state, id, hop, None, |agent| async move {
        let data = agent.sessions().get_file(id, &path).await?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
    })
    .await
}

pub async fn put_file<E: RunCode>(
    State(state): State<AppState<E>>,
    Path((id, path)): Path<(String, String)>,
    hop: Hop,
    body: Body,
) -> Result<Response, V2Error> {
    let bytes = read_body(&state, &hop.headers, body).await?;
    let forwarded = Some(bytes.clone());
    let (state, id) = (&state, id.as_str());
    on_owner(state, id, hop, forwarded, |agent| async move {
        agent.sessions().put_file(id, &path, &bytes).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// Used by [`Foreign::of`]: whether the id belongs to this replica.
pub(super) fn is_local(sessions: &Sessions, id: &str) -> bool {
    sessions.has(id) || Sessions::owner(id).is_none_or(|owner| owner == sessions.replica())
}
