//! hako-api: the Dify Sandbox compatible HTTP service.
//!
//! ```text
//! request ─ request id + span ─ header cap ─ catch panic ─ route
//!   /health, /ready                         (no key)
//!   /metrics                                (no key unless hako.http.metrics_public: false)
//!   /v1/sandbox/*  ─ X-Api-Key ─ handler ─ admission ─ RunCode
//!   /v2/*          ─ X-Api-Key or Bearer ─ handler ─ admission ─ Agent (see [`v2`])
//!   /mcp           ─ the same key ─ MCP streamable HTTP ─ McpServer (see [`mcp`])
//! ```

mod admission;
mod answer;
mod body;
mod connections;
pub mod deps;
mod handlers;
pub mod mcp;
mod mcp_http;
mod metrics;
mod middleware;
pub mod ready;
pub mod result;
mod run_code;
mod server;
pub mod v2;

pub use admission::Admission;
pub use answer::{Envelope, Rejection};
pub use connections::ConnLimits;
pub use deps::{Dependencies, DependencyReport, DependencyState, NoDependencies};
pub use metrics::Metrics;
pub use middleware::{RequestId, MAX_HEADER_BYTES};
pub use ready::{AlwaysReady, NotReady, Readiness, WithDegraded};
pub use result::{error_text, RunData};
pub use run_code::RunCode;
pub use server::{serve, serve_on, shutdown_signal, ApiError};

use axum::routing::{get, post};
use axum::Router;
use hako_runtime::Config;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;

/// What the handlers share.
pub struct AppState<E> {
    executor: Arc<E>,
    config: Arc<Config>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    deps: Arc<dyn Dependencies>,
    readiness: Arc<dyn Readiness>,
    /// Runs with files, streaming and sessions (absent with a fake executor).
    agent: Option<hako_runtime::agent::Agent>,
    mcp: Option<mcp::McpServer>,
}

impl<E> Clone for AppState<E> {
    fn clone(&self) -> Self {
        AppState {
            executor: Arc::clone(&self.executor),
            config: Arc::clone(&self.config),
            admission: Arc::clone(&self.admission),
            metrics: Arc::clone(&self.metrics),
            deps: Arc::clone(&self.deps),
            readiness: Arc::clone(&self.readiness),
            agent: self.agent.clone(),
            mcp: self.mcp.clone(),
        }
    }
}

impl<E: RunCode> AppState<E> {
    pub fn new(config: Arc<Config>, executor: E) -> Self {
        let metrics = Arc::new(Metrics::new());
        let admission = Arc::new(Admission::new(
            config.max_workers,
            config.max_requests,
            metrics.queue_depth(),
            metrics.in_flight(),
        ));
        let agent = executor.agent();
        let mcp = mcp_http::server_for(agent.as_ref(), &admission);
        AppState {
            agent,
            mcp,
            executor: Arc::new(executor),
            config,
            admission,
            metrics,
            deps: Arc::new(NoDependencies),
            readiness: Arc::new(AlwaysReady),
        }
    }

    /// Plugs in the package manager behind the dependencies endpoints.
    pub fn with_dependencies(mut self, deps: Arc<dyn Dependencies>) -> Self {
        self.deps = deps;
        self
    }

    /// Plugs in what `GET /ready` waits for (packages installed, a warm worker).
    pub fn with_readiness(mut self, readiness: Arc<dyn Readiness>) -> Self {
        self.readiness = readiness;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The whole HTTP surface.
pub(crate) fn router<E: RunCode>(state: AppState<E>) -> Router {
    let sandbox = Router::new()
        .route("/run", post(handlers::run::<E>))
        .route("/dependencies", get(handlers::dependencies::<E>))
        .route(
            "/dependencies/update",
            post(handlers::update_dependencies::<E>),
        )
        .route(
            "/dependencies/refresh",
            get(handlers::refresh_dependencies::<E>),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_api_key::<E>,
        ));
    let metrics = Arc::clone(&state.metrics);
    let mut metrics_route = get(handlers::metrics::<E>);
    if !state.config.hako.http.metrics_public {
        metrics_route = metrics_route.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_api_key::<E>,
        ));
    }
    Router::new()
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready::<E>))
        .route("/metrics", metrics_route)
        .nest("/v1/sandbox", sandbox)
        .nest("/v2", v2::routes(state.clone()))
        .route(
            "/mcp",
            post(mcp_http::post::<E>)
                .get(mcp_http::get)
                .delete(mcp_http::delete::<E>),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(server::panic_answer))
        .layer(axum::middleware::from_fn(middleware::limit_headers))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            middleware::count_rejections,
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
}
