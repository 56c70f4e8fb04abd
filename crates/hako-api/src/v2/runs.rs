//! `POST /v2/runs`: JSON in, the result object out, or a stream of server-sent events.

use super::{admit, read_body, V2Error};
use crate::body::parse_json;
use crate::middleware::RequestId;
use crate::result::AgentRunData;
use crate::{AppState, RunCode};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hako_runtime::agent::{AgentError, AgentResult, Event, RunSpec};
use std::time::Instant;
use tokio::sync::mpsc;

pub async fn run<E: RunCode>(
    State(state): State<AppState<E>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let agent = state.agent.clone().ok_or(V2Error::Unavailable)?;
    let spec: RunSpec = parse_json(&read_body(&state, &headers, body).await?)?;
    let language = spec.language.clone();
    let streamed = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let running = admit(&state).await?;
    let metrics = std::sync::Arc::clone(&state.metrics);
    let finished = move |outcome: &Result<AgentResult, AgentError>, started: Instant| {
        let status = match outcome {
            Ok(result) => result.run.status.as_str(),
            Err(AgentError::Exec(hako_runtime::ExecError::NetworkDisabled)) => "network_disabled",
            Err(
                AgentError::Invalid(_)
                | AgentError::Base64 { .. }
                | AgentError::Encode(_)
                | AgentError::Path(_)
                | AgentError::UnsupportedLanguage,
            ) => "invalid",
            Err(_) => "sandbox_error",
        };
        metrics.run_finished(&language, status, started.elapsed());
    };
    let started = Instant::now();
    if !streamed {
        let outcome = agent.run(spec, &request_id, None).await;
        drop(running);
        finished(&outcome, started);
        return Ok(Json(AgentRunData::from(outcome?)).into_response());
    }
    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let forward = async {
            let mut events_rx = events_rx;
            loop {
                // A client that went away drops the body: stop, which ends the run.
                let event = tokio::select! {
                    event = events_rx.recv() => event,
                    _ = body_tx.closed() => return None,
                };
                let Some(event) = event else { break };
                let (name, text) = match event {
                    Event::Stdout(t) => ("stdout", t),
                    Event::Stderr(t) => ("stderr", t),
                };
                let data = serde_json::json!({ "text": text });
                if body_tx.send(sse(name, &data)).await.is_err() {
                    return None;
                }
            }
            Some(body_tx)
        };
        let (outcome, body_tx) =
            tokio::join!(agent.run(spec, &request_id, Some(events_tx)), forward);
        drop(running);
        finished(&outcome, started);
        let Some(body_tx) = body_tx else { return };
        let last = match outcome {
            Ok(result) => sse("result", &AgentRunData::from(result)),
            Err(e) => {
                let response = V2Error::from(e);
                let message = response.to_string();
                sse("error", &serde_json::json!({ "message": message }))
            }
        };
        let _ = body_tx.send(last).await;
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, std::convert::Infallible>(chunk), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// One server-sent event with a JSON payload.
fn sse(name: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}
