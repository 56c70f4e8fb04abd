//! Route handlers. Failures are returned as [`Rejection`]s.

use crate::answer::{Envelope, Rejection};
use crate::body::{parse_json, parse_run_body, read_limited};
use crate::deps::DependencyReport;
use crate::middleware::RequestId;
use crate::result::RunData;
use crate::{AppState, RunCode};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use hako_runtime::stop::Cancel;
use hako_runtime::{Language, RunRequest};
use serde::Deserialize;
use std::time::Instant;

pub async fn health() -> Json<&'static str> {
    Json("ok")
}

/// Readiness, distinct from liveness: see [`crate::ready`].
pub async fn ready<E>(State(state): State<AppState<E>>) -> axum::response::Response {
    crate::ready::answer(state.readiness.as_ref())
}

pub async fn metrics<E: RunCode>(State(state): State<AppState<E>>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    text.push_str(&state.executor.worker_metrics());
    if let Some(agent) = &state.agent {
        text.push_str(&agent.sessions().metrics_text());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub async fn not_found() -> Rejection {
    Rejection::NotFound
}

pub async fn method_not_allowed() -> Rejection {
    Rejection::MethodNotAllowed
}

pub async fn run<E: RunCode>(
    State(state): State<AppState<E>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Envelope<RunData>>, Rejection> {
    let bytes = read_limited(&headers, body, state.config.hako.max_body_bytes).await?;
    let body = parse_run_body(&bytes)?;
    let language: Language = body
        .language
        .parse()
        .map_err(|_| Rejection::UnsupportedLanguage)?;
    let enable_network = body.enable_network.unwrap_or(false);
    if enable_network && !state.config.enable_network {
        return Err(Rejection::NetworkDisabled);
    }
    let ticket = state.admission.try_admit().ok_or(Rejection::Overloaded)?;
    let running = ticket.start().await.map_err(|_| Rejection::ShuttingDown)?;
    let request = RunRequest {
        language,
        code: body.code,
        preload: body.preload.filter(|p| !p.is_empty()),
        enable_network,
        limits: body.limits.unwrap_or_default(),
        request_id,
    };
    let started = Instant::now();
    // The run lives in its own task and holds its worker slot until its processes are gone.
    // If this request is dropped (the client went away), `caller` goes with it: the run is
    // stopped at once, and the slot is freed only after that.
    let (caller, cancel) = Cancel::pair();
    let executor = std::sync::Arc::clone(&state.executor);
    let task = tokio::spawn(async move {
        let outcome = executor.run_until(request, cancel).await;
        drop(running);
        outcome
    });
    let outcome = task.await.map_err(|_| Rejection::Panic)?;
    drop(caller);
    let status = match &outcome {
        Ok(result) => result.status.as_str(),
        Err(hako_runtime::ExecError::NetworkDisabled) => "network_disabled",
        Err(hako_runtime::ExecError::PackagesNotReady { .. }) => "packages_not_ready",
        Err(_) => "sandbox_error",
    };
    state
        .metrics
        .run_finished(language.as_str(), status, started.elapsed());
    Ok(Json(Envelope::success(RunData::from(outcome?))))
}

#[derive(Debug, Default, Deserialize)]
pub struct LanguageParam {
    language: Option<String>,
}

fn language_of(param: Option<String>) -> Result<Language, Rejection> {
    let name = param
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Rejection::BadRequest("missing parameter `language`".into()))?;
    name.parse().map_err(|_| Rejection::UnsupportedLanguage)
}

fn query_language(
    query: Result<Query<LanguageParam>, QueryRejection>,
) -> Result<Language, Rejection> {
    let Query(param) = query.map_err(Rejection::Query)?;
    language_of(param.language)
}

type ReportAnswer = Result<Json<Envelope<DependencyReport>>, Rejection>;

pub async fn dependencies<E>(
    State(state): State<AppState<E>>,
    query: Result<Query<LanguageParam>, QueryRejection>,
) -> ReportAnswer {
    let language = query_language(query)?;
    Ok(Json(Envelope::success(state.deps.list(language))))
}

pub async fn refresh_dependencies<E>(
    State(state): State<AppState<E>>,
    query: Result<Query<LanguageParam>, QueryRejection>,
) -> ReportAnswer {
    let language = query_language(query)?;
    Ok(Json(Envelope::success(state.deps.refresh(language).await)))
}

/// `language` comes from the query or from a JSON body.
pub(crate) async fn update_dependencies<E>(
    State(state): State<AppState<E>>,
    query: Result<Query<LanguageParam>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ReportAnswer {
    let Query(mut param) = query.map_err(Rejection::Query)?;
    if param.language.is_none() {
        let bytes = read_limited(&headers, body, state.config.hako.max_body_bytes).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            param = parse_json(&bytes)?;
        }
    }
    let language = language_of(param.language)?;
    Ok(Json(Envelope::success(state.deps.update(language).await)))
}
