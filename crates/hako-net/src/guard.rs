//! The egress guard: a tokio service in the caller's process (the server, or the CLI).
//!
//! Jail helpers connect to its unix socket and hand over one listener per proxy-mode run
//! (see `hako_jail::netns`). For each run the guard accepts the run's connections, reads one
//! proxy request per connection, resolves the destination itself, decides with the
//! [`Policy`] before any packet leaves, and relays bytes within the run's limits.

use crate::http::{self, Destination, Request};
use crate::local::LocalAddrs;
use crate::policy::{Policy, Verdict};
use crate::upstream::{Route, Upstreams};
use hako_jail::netns;
use hako_wire::egress::{Answer, EgressError, Registration};
use hako_wire::spec::NetworkReport;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries kept per list of a run's report.
const MAX_LISTED: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("egress guard socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("egress guard socket path {0} is too long for a unix socket (max 107 bytes); shorten hako.runtime_dir")]
    PathTooLong(PathBuf),
    #[error("registration timed out")]
    RegisterTimeout,
    #[error("receive the registration: {0}")]
    Receive(#[source] std::io::Error),
    #[error("closed before registering")]
    ClosedBeforeRegistering,
    #[error(transparent)]
    Link(#[from] EgressError),
    #[error("no listener attached")]
    NoListener,
    #[error("the descriptor is not a listening socket")]
    NotListening,
    #[error("use the run's listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("no address")]
    NoAddress,
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Upstream(#[source] crate::upstream::UpstreamError),
    #[error("timed out")]
    ConnectTimeout,
}

/// Per-run limits of the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Connections a run may open in total; then the guard stops accepting for it.
    pub max_connections: u64,
    /// Connections a run may have open at once; more are answered 429.
    pub max_concurrent: u64,
    /// Bytes relayed in both directions; then every connection of the run is cut.
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub policy: Policy,
    pub upstreams: Upstreams,
    pub limits: NetLimits,
}

/// A running guard. Dropping it stops it and removes its socket.
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Guard {
    /// Listens on `path` (replacing a stale socket). Must be called inside a tokio runtime.
    pub fn start(config: GuardConfig, path: PathBuf) -> Result<Guard, GuardError> {
        use std::os::unix::fs::PermissionsExt;
        if path.as_os_str().len() > 107 {
            return Err(GuardError::PathTooLong(path));
        }
        raise_nofile();
        let bind = |source| GuardError::Bind {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(bind)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind)?;
        let shared = Arc::new(Shared {
            config,
            local: LocalAddrs::default(),
        });
        let task = tokio::spawn(accept_runs(listener, shared));
        Ok(Guard { path, task })
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }
}

/// Each run's connections hold descriptors in this process: use the hard limit.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// What every run's tasks share.
struct Shared {
    config: GuardConfig,
    local: LocalAddrs,
}

async fn accept_runs(listener: UnixListener, shared: Arc<Shared>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Only our own helpers (same uid) may register runs.
                if stream.peer_cred().map(|c| c.uid()).ok() != Some(me) {
                    tracing::warn!("egress guard: refused a registration from another user");
                    continue;
                }
                tokio::spawn(serve_run(stream, shared.clone()));
            }
            Err(err) => {
                tracing::warn!(error = %err, "egress guard: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[derive(Default)]
struct Lists {
    destinations: Vec<String>,
    refused: Vec<String>,
    failed: Vec<String>,
    limit: Option<String>,
}

struct RunState {
    id: String,
    limits: NetLimits,
    connections: AtomicU64,
    active: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    lists: Mutex<Lists>,
    cut: Notify,
}

impl RunState {
    fn lists(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_cut(&self) -> bool {
        self.lists().limit.is_some()
    }

    fn cut_off(&self, what: &str) {
        let mut lists = self.lists();
        if lists.limit.is_none() {
            lists.limit = Some(what.to_string());
            tracing::warn!(run = %self.id, limit = what, "egress: run reached its network limit; cut off");
            self.cut.notify_one();
        }
    }

    fn note(&self, refused: bool, dest: &Destination) {
        let entry = dest.to_string();
        let mut lists = self.lists();
        let list = if refused {
            &mut lists.refused
        } else {
            &mut lists.destinations
        };
        if list.len() < MAX_LISTED && !list.contains(&entry) {
            list.push(entry);
        }
    }

    /// A destination the guard could not resolve or reach, with the reason.
    fn note_failure(&self, dest: &Destination, why: &str) {
        let mut lists = self.lists();
        if lists.failed.len() < MAX_LISTED {
            lists.failed.push(format!("{dest}: {why}"));
        }
    }

    fn report(&self) -> NetworkReport {
        let lists = self.lists();
        NetworkReport {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
            destinations: lists.destinations.clone(),
            refused: lists.refused.clone(),
            limit: lists.limit.clone(),
            failed: lists.failed.clone(),
        }
    }
}

async fn receive_registration(stream: &UnixStream) -> Result<(Registration, OwnedFd), GuardError> {
    let mut buf = vec![0u8; 4096];
    let mut got = 0usize;
    let mut fd = None;
    loop {
        stream.readable().await.map_err(GuardError::Receive)?;
        let received = stream.try_io(Interest::READABLE, || {
            netns::recv_with_fd(stream.as_fd(), &mut buf[got..]).map_err(std::io::Error::from)
        });
        let (n, new_fd) = match received {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(GuardError::Receive(e)),
        };
        if n == 0 {
            return Err(GuardError::ClosedBeforeRegistering);
        }
        fd = fd.or(new_fd);
        got += n;
        if let Some(total) = Registration::frame_len(&buf[..got])? {
            if buf.len() < total {
                buf.resize(total, 0);
            }
        }
        if let Some(reg) = Registration::decode(&buf[..got])? {
            return fd.map(|fd| (reg, fd)).ok_or(GuardError::NoListener);
        }
    }
}

fn into_listener(fd: OwnedFd) -> Result<TcpListener, GuardError> {
    use nix::sys::socket::{getsockopt, sockopt};
    if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err(GuardError::NotListening);
    }
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true).map_err(GuardError::Listener)?;
    TcpListener::from_std(std).map_err(GuardError::Listener)
}

async fn accept_on(listener: &Option<TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// One run: from registration to the report.
async fn serve_run(mut stream: UnixStream, shared: Arc<Shared>) {
    let config = &shared.config;
    let registered = tokio::time::timeout(REGISTER_TIMEOUT, receive_registration(&stream))
        .await
        .unwrap_or(Err(GuardError::RegisterTimeout))
        .and_then(|(reg, fd)| into_listener(fd).map(|l| (reg, l)));
    let (reg, listener) = match registered {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(error = %err, "egress guard: bad registration");
            let refused = Answer::Refused(err.to_string()).encode();
            let _ = stream.write_all(&refused).await;
            return;
        }
    };
    if stream.write_all(&Answer::Accepted.encode()).await.is_err() {
        return;
    }
    let run = Arc::new(RunState {
        id: reg.run_id,
        limits: config.limits,
        connections: AtomicU64::new(0),
        active: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        lists: Mutex::new(Lists::default()),
        cut: Notify::new(),
    });
    tracing::debug!(run = %run.id, "egress: run registered");
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = run.cut.notified() => {
                listener = None;
                if run.lists().limit.as_deref() == Some("bytes") {
                    conns.abort_all();
                }
            }
            accepted = accept_on(&listener) => {
                let Ok(client) = accepted else { continue };
                let n = run.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let limits = run.limits;
                if n > limits.max_connections {
                    run.cut_off("connections");
                    listener = None;
                    let text = format!("hako egress: this run opened more than {} connections (hako.network.max_connections)\n", limits.max_connections);
                    conns.spawn(refuse(client, 429, "Too Many Requests", text));
                } else if run.active.load(Ordering::Relaxed) >= limits.max_concurrent {
                    let text = format!("hako egress: more than {} connections open at once (hako.network.max_concurrent)\n", limits.max_concurrent);
                    conns.spawn(refuse(client, 429, "Too Many Requests", text));
                } else {
                    conns.spawn(handle_client(client, run.clone(), shared.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    let report = run.report();
    tracing::info!(
        run = %run.id,
        connections = report.connections,
        bytes_sent = report.bytes_sent,
        bytes_received = report.bytes_received,
        refused = report.refused.len(),
        limit = report.limit.as_deref().unwrap_or("-"),
        "egress: run finished"
    );
    if let Ok(text) = hako_wire::egress::encode_report(&report) {
        let _ = stream.write_all(&text).await;
    }
    let _ = stream.shutdown().await;
}

/// Answers with the guard's own error, lets the client read it, and closes.
async fn refuse(mut client: TcpStream, status: u16, reason: &str, body: String) {
    let _ = client.write_all(&http::answer(status, reason, &body)).await;
    let _ = client.shutdown().await;
    // Drain what the client still sends so that closing does not reset the answer away.
    let mut sink = [0u8; 8192];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = client.read(&mut sink).await {
            total += n;
            if n == 0 || total > 64 << 10 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

struct Active(Arc<RunState>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn read_head(client: &mut TcpStream) -> Result<Option<(Request, Vec<u8>)>, http::HeadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some((request, len)) = http::parse(&buf)? {
            return Ok(Some((request, buf.split_off(len))));
        }
    }
}

async fn handle_client(mut client: TcpStream, run: Arc<RunState>, shared: Arc<Shared>) {
    let config = &shared.config;
    run.active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(run.clone());
    let (request, leftover) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await
    {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(err)) => {
            return refuse(client, 400, "Bad Request", format!("hako egress: {err}\n")).await
        }
    };
    let (dest, connect) = match &request {
        Request::Connect(dest) => (dest.clone(), true),
        Request::Http { dest, .. } => (dest.clone(), false),
    };
    let route = config.upstreams.route(connect);
    let local = shared.local.get();
    let addrs = match decide(&dest, route, &config.policy, &local, &run).await {
        Ok(addrs) => addrs,
        Err((status, reason, text)) => {
            if status == 403 {
                run.note(true, &dest);
                tracing::warn!(run = %run.id, destination = %dest, reason = %text, "egress refused");
            } else {
                if status == 502 {
                    run.note_failure(&dest, &text);
                }
                tracing::info!(run = %run.id, destination = %dest, reason = %text, "egress failed");
            }
            let body = if status == 502 {
                format!("hako egress: cannot reach {dest}: {text}\n")
            } else {
                format!("hako egress: connection to {dest} refused: {text}\n")
            };
            return refuse(client, status, reason, body).await;
        }
    };
    let upstream = match open(&dest, &addrs, route).await {
        Ok(s) => s,
        Err(err) => {
            tracing::info!(run = %run.id, destination = %dest, error = %err, "egress connect failed");
            run.note_failure(&dest, &format!("cannot connect: {err}"));
            let body = format!("hako egress: cannot connect to {dest}: {err}\n");
            return refuse(client, 502, "Bad Gateway", body).await;
        }
    };
    run.note(false, &dest);
    tracing::info!(run = %run.id, destination = %dest, address = ?addrs.first(), via = ?route_name(route), "egress allowed");
    let mut upstream = upstream;
    let first = match &request {
        Request::Connect(_) => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            leftover
        }
        Request::Http {
            method,
            path,
            url,
            headers,
            ..
        } => {
            let mut head = match route {
                Route::HttpProxy(p) => {
                    // The judged address, not the name: the upstream must not resolve again.
                    let target = match addrs.first() {
                        Some(ip) => format!("http://{}{path}", SocketAddr::new(*ip, dest.port)),
                        None => url.clone(),
                    };
                    let auth = p.basic_auth();
                    http::forward_head(method, &target, &dest, headers, auth.as_deref())
                }
                _ => http::forward_head(method, path, &dest, headers, None),
            };
            head.extend_from_slice(&leftover);
            head
        }
    };
    if !first.is_empty() {
        if !account(&run, &run.sent, first.len()) {
            return;
        }
        if upstream.write_all(&first).await.is_err() {
            return;
        }
    }
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = pump(&mut cr, &mut uw, &run, &run.sent);
    let down = pump(&mut ur, &mut cw, &run, &run.received);
    let _ = tokio::try_join!(up, down);
}

fn route_name(route: Route<'_>) -> String {
    match route {
        Route::Direct => "direct".into(),
        Route::HttpProxy(p) | Route::Tunnel(p) => format!("http proxy {p}"),
        Route::Socks5(p) => format!("socks5 {p}"),
    }
}

/// Adds `n` bytes to the run's budget; false (and the run cut off) when it is spent.
fn account(run: &RunState, counter: &AtomicU64, n: usize) -> bool {
    counter.fetch_add(n as u64, Ordering::Relaxed);
    let total = run.sent.load(Ordering::Relaxed) + run.received.load(Ordering::Relaxed);
    if total > run.limits.max_bytes {
        // Those bytes are dropped, not relayed.
        counter.fetch_sub(n as u64, Ordering::Relaxed);
        run.cut_off("bytes");
        return false;
    }
    true
}

async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    run: &RunState,
    counter: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        if !account(run, counter, n) {
            return Err(std::io::Error::other("network byte limit reached"));
        }
        to.write_all(&buf[..n]).await?;
    }
}

type Refusal = (u16, &'static str, String);

/// Resolves and judges a destination before anything is sent to it. Returns the addresses
/// to use (empty: the upstream proxy resolves the name).
async fn decide(
    dest: &Destination,
    route: Route<'_>,
    policy: &Policy,
    local: &[IpAddr],
    run: &RunState,
) -> Result<Vec<IpAddr>, Refusal> {
    if run.is_cut() {
        return Err((
            429,
            "Too Many Requests",
            "this run reached its network limit".into(),
        ));
    }
    let literal = dest.host.parse::<IpAddr>().ok();
    let name_verdict = if literal.is_some() {
        None
    } else {
        policy.check_name(&dest.host)
    };
    if let Some(Verdict::Deny(reason)) = name_verdict {
        return Err((403, "Forbidden", reason));
    }
    let ips: Vec<IpAddr> = match literal {
        Some(ip) => vec![ip],
        None => {
            let lookup = tokio::net::lookup_host((dest.host.as_str(), dest.port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                // The upstream may know names the guard cannot resolve; it decides on those.
                _ if route != Route::Direct => return Ok(Vec::new()),
                Ok(Err(err)) => {
                    let why = format!("cannot resolve {}: {err}", dest.host);
                    return Err((502, "Bad Gateway", why));
                }
                Err(_) => {
                    let why = format!(
                        "cannot resolve {}: no answer in {} s",
                        dest.host,
                        RESOLVE_TIMEOUT.as_secs()
                    );
                    return Err((502, "Bad Gateway", why));
                }
            }
        }
    };
    let name_allowed = name_verdict == Some(Verdict::Allow);
    let mut allowed = Vec::new();
    let mut reason = None;
    for ip in ips {
        match policy.check_ip(ip, name_allowed, local) {
            Verdict::Allow => allowed.push(ip),
            Verdict::Deny(why) => {
                reason.get_or_insert(why);
            }
        }
    }
    if allowed.is_empty() {
        let why = reason.unwrap_or_else(|| format!("{} has no address", dest.host));
        return Err((403, "Forbidden", why));
    }
    Ok(allowed)
}

async fn open(
    dest: &Destination,
    addrs: &[IpAddr],
    route: Route<'_>,
) -> Result<TcpStream, GuardError> {
    let first = addrs.first().copied();
    // Upstreams get the address the guard judged, so they cannot resolve the name elsewhere.
    let judged = first.map_or_else(
        || dest.to_string(),
        |ip| SocketAddr::new(ip, dest.port).to_string(),
    );
    let attempt = async {
        match route {
            Route::Direct => {
                let mut last = GuardError::NoAddress;
                for ip in addrs {
                    match TcpStream::connect(SocketAddr::new(*ip, dest.port)).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = GuardError::Connect(e),
                    }
                }
                Err(last)
            }
            Route::HttpProxy(p) => p.connect().await.map_err(GuardError::Upstream),
            Route::Tunnel(p) => p.tunnel(&judged).await.map_err(GuardError::Upstream),
            Route::Socks5(p) => p.socks5(dest, first).await.map_err(GuardError::Upstream),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(GuardError::ConnectTimeout))
}
