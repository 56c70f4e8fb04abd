//! `/v2/sessions/...`. A session id names the replica that owns it; a request for another
//! replica's session is forwarded there (see [`super::forward`]).

use super::forward::{forward, Foreign};
use super::V2Error;
use crate::body::{parse_json, read_limited};
use crate::middleware::RequestId;
use crate::result::ExecData;
use crate::{AppState, RunCode};
use axum::body::Body;
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
    let bytes = read_limited(&headers, body, state.config.hako.max_body_bytes).await?;
    let spec: SessionSpec = parse_json(&bytes)?;
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

/// Where a session lives: here, or on a peer (then the request is forwarded).
async fn locate<E>(
    state: &AppState<E>,
    id: &str,
    method: Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Option<axum::body::Bytes>,
) -> Result<Result<Agent, Response>, V2Error> {
    let agent = agent(state)?;
    match Foreign::of(agent.sessions(), id, headers, &agent.config().peer_url) {
        None => Ok(Ok(agent)),
        Some(foreign) => Ok(Err(forward(foreign, method, uri, headers, body).await?)),
    }
}

pub async fn close<E: RunCode>(
    State(state): State<AppState<E>>,
    Path(id): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, V2Error> {
    let agent = match locate(&state, &id, method, &uri, &headers, None).await? {
        Ok(agent) => agent,
        Err(forwarded) => return Ok(forwarded),
    };
    if agent.sessions().close(&id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(hako_runtime::agent::AgentError::NoSession(id).into())
    }
}

#[derive(Deserialize)]
struct ExecBody {
    code: String,
}

pub async fn exec<E: RunCode>(
    State(state): State<AppState<E>>,
    Path(id): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let bytes = read_limited(&headers, body, state.config.hako.max_body_bytes).await?;
    let agent = match locate(&state, &id, method, &uri, &headers, Some(bytes.clone())).await? {
        Ok(agent) => agent,
        Err(forwarded) => return Ok(forwarded),
    };
    let body: ExecBody = parse_json(&bytes)?;
    let ticket = state
        .admission
        .try_admit()
        .ok_or(crate::answer::Rejection::Overloaded)?;
    let running = ticket
        .start()
        .await
        .map_err(|_| crate::answer::Rejection::ShuttingDown)?;
    let started = Instant::now();
    let answer = agent.sessions().exec(&id, &body.code).await;
    drop(running);
    let status = match &answer {
        Ok(a) => a.run.status.as_str(),
        Err(_) => "sandbox_error",
    };
    state
        .metrics
        .run_finished("session", status, started.elapsed());
    Ok(Json(ExecData::from(answer?)).into_response())
}

pub async fn list_files<E: RunCode>(
    State(state): State<AppState<E>>,
    Path(id): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, V2Error> {
    let agent = match locate(&state, &id, method, &uri, &headers, None).await? {
        Ok(agent) => agent,
        Err(forwarded) => return Ok(forwarded),
    };
    let files = agent.sessions().list_files(&id).await?;
    Ok(Json(serde_json::json!({ "files": files })).into_response())
}

pub async fn get_file<E: RunCode>(
    State(state): State<AppState<E>>,
    Path((id, path)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, V2Error> {
    let agent = match locate(&state, &id, method, &uri, &headers, None).await? {
        Ok(agent) => agent,
        Err(forwarded) => return Ok(forwarded),
    };
    let data = agent.sessions().get_file(&id, &path).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

pub async fn put_file<E: RunCode>(
    State(state): State<AppState<E>>,
    Path((id, path)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let bytes = read_limited(&headers, body, state.config.hako.max_body_bytes).await?;
    let agent = match locate(&state, &id, method, &uri, &headers, Some(bytes.clone())).await? {
        Ok(agent) => agent,
        Err(forwarded) => return Ok(forwarded),
    };
    agent.sessions().put_file(&id, &path, &bytes).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Used by [`Foreign::of`]: whether the id belongs to this replica.
pub(super) fn is_local(sessions: &Sessions, id: &str) -> bool {
    sessions.has(id) || Sessions::owner(id).is_none_or(|owner| owner == sessions.replica())
}
