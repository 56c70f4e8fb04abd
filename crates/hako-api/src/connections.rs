//! The API's connections: at most `hako.http.max_connections` open (more are closed at
//! once), a deadline for each request head (`header_timeout_secs`, counted from the
//! connection's start for its first request, from the first byte for later ones) and for
//! keep-alive connections waiting for their next request (`idle_timeout_secs`). While a
//! request is in flight (until its answer's body is handed to the socket) neither deadline
//! runs: runs have their own timeout. hyper serves each connection (HTTP/1.1).

use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// The connection settings of one server (`hako.http`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnLimits {
    pub(crate) fn from_config(http: &hako_runtime::config::HttpConfig) -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            max_connections: usize::try_from(http.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Accepts until `shutdown` completes, then lets every connection finish its request in
/// flight (idle ones close at once) and returns when all are closed.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of descriptors, or the peer gave up in the backlog: go on.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    metrics.connection_rejected();
                    refuse(stream);
                    continue;
                };
                let metrics = Arc::clone(&metrics);
                let conn = serve_one(stream, app.clone(), limits, metrics, stopping.clone());
                conns.spawn(async move {
                    conn.await;
                    drop(slot);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while conns.join_next().await.is_some() {}
}

/// Over the cap: a short 503 if the socket takes it at once, then closed.
fn refuse(stream: TcpStream) {
    const ANSWER: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let _ = stream.try_write(ANSWER);
    tracing::debug!("connection refused: hako.http.max_connections are open");
}

async fn serve_one(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let open = metrics.connections_open();
    open.increment(1.0);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let in_service = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let busy = Busy::begin(Arc::clone(&in_service));
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            // The request counts as in flight until hyper has taken the whole body.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stopping.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            phase = activity.expired(limits) => {
                tracing::debug!(phase, "connection closed: no request in time");
                metrics.connection_timed_out(phase);
                break;
            }
            changed = stopping.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    open.decrement(1.0);
}

/// What the deadlines of one connection depend on.
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the connection last became idle (accepted, or its last answer was handed over).
    idle_since: Mutex<Instant>,
    /// First byte of the next request head, received while idle.
    head_started: Mutex<Option<Instant>>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            head_started: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn received(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let mut head = Self::lock(&self.head_started);
            if head.is_none() {
                *head = Some(Instant::now());
                self.changed.notify_one();
            }
        }
    }

    /// The next deadline and its phase; `None` while a request is in flight.
    fn deadline(&self, limits: ConnLimits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if let Some(start) = *Self::lock(&self.head_started) {
            return Some((start + limits.header_timeout, "head"));
        }
        let since = *Self::lock(&self.idle_since);
        if self.requests.load(Ordering::SeqCst) == 0 {
            Some((since + limits.header_timeout, "head"))
        } else {
            Some((since + limits.idle_timeout, "idle"))
        }
    }

    /// Completes with the phase once a deadline passed with no request in flight.
    async fn expired(&self, limits: ConnLimits) -> &'static str {
        loop {
            match self.deadline(limits) {
                None => self.changed.notified().await,
                Some((at, phase)) => {
                    if Instant::now() >= at {
                        return phase;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// One request in flight on a connection, from its head to its answer's last frame.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.requests.fetch_add(1, Ordering::SeqCst);
        *Activity::lock(&activity.head_started) = None;
        activity.changed.notify_one();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *Activity::lock(&a.idle_since) = Instant::now();
        }
        a.changed.notify_one();
    }
}

/// The socket, noting each received byte for the head deadline.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
