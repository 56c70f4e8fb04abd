//! Binding, serving and graceful shutdown.

use crate::answer::Rejection;
use crate::connections::{serve_connections, ConnLimits};
use crate::{router, AppState, RunCode};
use axum::response::{IntoResponse, Response};
use hako_runtime::Config;
use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}; is another process using the port? Change SANDBOX_PORT or app.port")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// Serves on `0.0.0.0:app.port` until `shutdown` completes, then finishes admitted runs.
pub async fn serve<E: RunCode>(
    config: Arc<Config>,
    executor: E,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let addr = SocketAddr::from(([0, 0, 0, 0], config.app.port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    serve_on(listener, AppState::new(config, executor), shutdown).await
}

/// Like [`serve`] on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn serve_on<E: RunCode>(
    listener: TcpListener,
    state: AppState<E>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let addr = listener.local_addr().map_err(ApiError::LocalAddr)?;
    tracing::info!(%addr, "listening");
    let admission = Arc::clone(state.admission());
    let metrics = Arc::clone(state.metrics());
    let state_config = Arc::clone(&state.config);
    let app = router(state);
    let stop = async move {
        shutdown.await;
        tracing::info!(
            admitted = admission.admitted(),
            "shutting down: no new connections; finishing admitted runs"
        );
    };
    let limits = ConnLimits::from_config(&state_config.hako.http);
    serve_connections(listener, app, limits, metrics, stop).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let int = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = int => tracing::info!("SIGINT received"),
    }
}

pub(crate) fn panic_answer(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    Rejection::Panic.into_response()
}
