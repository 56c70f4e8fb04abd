//! Sessions: one long-lived interpreter per session, each in its own jail (every layer of a
//! run, its own cgroup and /tmp), driven by a hako REPL driver over the live helper.
//!
//! Requests go to the driver's fd 4 and replies come back on its stdout, each a `u32 LE`
//! length and a JSON object. Everything the driver sends is hostile (the session's code runs
//! in the same process): replies are size-bounded and parsed into fixed types; a malformed
//! reply ends the session.

use super::live::{Frame, LiveRun};
use super::paths::{check_env, check_path};
use super::run::{overrides, set_env};
use super::{decode_base64, encode_base64, random_hex, AgentError};
use crate::executor::{Executor, JailRequest};
use crate::language::Language;
use crate::packages::Env;
use crate::result::{Ending, Failure, RunReport, RunStatus, Usage};
use crate::summary::{blocked_reasons, summarize};
use hako_jail::spec::{JailOutcome, Limits};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPL_PY: &str = include_str!("session_repl.py");
const REPL_JS: &str = include_str!("session_repl.js");
/// How long a new session's interpreter may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed session may take to report its end.
const END_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IMAGES: usize = 32;

/// `POST /v2/sessions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SessionSpec {
    pub language: String,
    /// Per exec.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub idle_timeout_s: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What `GET /v2/sessions` shows of one session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub language: String,
    pub memory_mb: u64,
    pub timeout_s: f64,
    pub idle_timeout_s: u64,
    pub idle_s: u64,
    pub age_s: u64,
    pub execs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub mime: String,
    pub base64: String,
}

/// The answer to an exec: what became of it, plus the notebook parts.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    pub run: RunReport,
    /// `repr` of the final expression (Python) or `util.inspect` of the completion value (Node).
    pub value: Option<String>,
    pub images: Vec<Image>,
    /// The session is gone (timeout, memory limit, crash); later calls get 404.
    pub session_ended: bool,
}

/// A file of a session's workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct ExecReply {
    stdout: String,
    stderr: String,
    value: Option<String>,
    #[serde(default)]
    images: Vec<Image>,
    error: Option<String>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct FileReply {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    missing: bool,
    #[serde(default)]
    failed: Option<String>,
    #[serde(default)]
    files: Option<Vec<FileEntry>>,
}

/// This replica's sessions. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    state: Arc<State>,
}

struct State {
    executor: Executor,
    replica: String,
    table: Mutex<Table>,
    sweeping: AtomicBool,
    created: AtomicU64,
    ended: Mutex<BTreeMap<&'static str, u64>>,
}

/// Most sessions one replica tracks at once (each holds a slot while open or starting).
const SESSION_SLOTS: u32 = 16_384;

#[derive(Default)]
struct Table {
    live: HashMap<String, Arc<Session>>,
    /// Id slots of open (and starting) sessions.
    slots: std::collections::BTreeSet<u32>,
    /// Memory of sessions being started.
    starting_mb: u64,
    starting: usize,
}

struct Session {
    id: String,
    slot: u32,
    language: Language,
    memory_mb: u64,
    exec_timeout: Duration,
    idle: Duration,
    created: Instant,
    last_used: Mutex<Instant>,
    execs: AtomicU64,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

struct Conn {
    live: LiveRun,
    /// Bytes of replies received and not yet parsed.
    pending: Vec<u8>,
    /// What the driver itself wrote to stderr (its own failures), bounded.
    diag: Vec<u8>,
    limits: Limits,
    /// Syscalls denied during the current call.
    blocked: Vec<String>,
    max_reply: usize,
    _packages: Option<Arc<Env>>,
}

/// How a call to the driver ended.
enum Call {
    Reply(serde_json::Value),
    Ended(Box<JailOutcome>),
}

impl Sessions {
    pub fn new(executor: Executor) -> Sessions {
        let replica = executor.config().hako.agent.replica_name();
        Sessions {
            state: Arc::new(State {
                executor,
                replica,
                table: Mutex::new(Table::default()),
                sweeping: AtomicBool::new(false),
                created: AtomicU64::new(0),
                ended: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// This replica's name, the part of every session id after the dot.
    pub fn replica(&self) -> &str {
        &self.state.replica
    }

    /// The replica that owns a session id.
    pub fn owner(id: &str) -> Option<&str> {
        id.split_once('.').map(|(_, owner)| owner)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.state.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_end(&self, reason: &'static str) {
        let mut ended = self.state.ended.lock().unwrap_or_else(|e| e.into_inner());
        *ended.entry(reason).or_insert(0) += 1;
    }

    /// Starts a session; answers once its interpreter is ready.
    pub async fn create(&self, spec: SessionSpec, request_id: &str) -> Result<String, AgentError> {
        let language: Language = spec
            .language
            .parse()
            .map_err(|_| AgentError::UnsupportedLanguage)?;
        check_env(spec.env.iter())?;
        let executor = &self.state.executor;
        let config = executor.config();
        let agent = &config.hako.agent;
        let request = JailRequest {
            enable_network: spec.network,
            limits: overrides(spec.timeout_s, spec.memory_mb)?,
            ..JailRequest::new(language)
        };
        let (mut jail, packages) = executor.plan(&request, request_id)?;
        let memory_mb = jail.limits.memory_bytes >> 20;
        let slot = self.reserve(memory_mb)?;
        let reserved = Reservation(self, memory_mb, slot);
        // Host ids: the live helper leases them (across hako processes) for the session's life.
        let exec_timeout = Duration::from_millis(jail.limits.timeout_ms);
        let limits = jail.limits;
        jail.limits.timeout_ms = agent.session_lifetime_s.saturating_mul(1000).max(1);
        // The runtime bounds each exec's output; the relay itself only bounds the lifetime.
        jail.limits.output_bytes = u64::MAX / 2;
        set_env(&mut jail, language, &spec.env);
        jail.env.push((
            "HAKO_SESSION_OUTPUT_BYTES".into(),
            limits.output_bytes.to_string(),
        ));
        jail.env.push((
            "HAKO_SESSION_FILE_BYTES".into(),
            agent.files_max_bytes.to_string(),
        ));
        let driver = match language {
            Language::Python3 => REPL_PY,
            Language::Nodejs => REPL_JS,
        };
        let live = LiveRun::start(executor.helper_path(), &jail, driver.as_bytes()).await?;
        let mut conn = Conn {
            live,
            pending: Vec::new(),
            diag: Vec::new(),
            limits,
            blocked: Vec::new(),
            max_reply: (64usize << 20)
                .saturating_add((limits.output_bytes as usize).saturating_mul(12))
                .saturating_add(agent.files_max_bytes as usize * 2),
            _packages: packages,
        };
        match conn.wait_reply(START_TIMEOUT).await? {
            Call::Reply(v) if v.get("ready") == Some(&serde_json::Value::Bool(true)) => {}
            Call::Reply(_) => return Err(AgentError::Protocol("no ready message".into())),
            Call::Ended(outcome) => {
                let diag = String::from_utf8_lossy(&conn.diag).into_owned();
                return Err(AgentError::Protocol(format!(
                    "the interpreter ended while starting ({}): {diag}",
                    outcome.setup_error.clone().unwrap_or_default()
                )));
            }
        }
        let id = format!("{}.{}", random_hex(16), self.state.replica);
        let idle_max = agent.session_idle_s.max(1);
        let idle = spec
            .idle_timeout_s
            .map_or(idle_max, |s| s.clamp(1, idle_max));
        let session = Arc::new(Session {
            id: id.clone(),
            slot,
            language,
            memory_mb,
            exec_timeout,
            idle: Duration::from_secs(idle),
            created: Instant::now(),
            last_used: Mutex::new(Instant::now()),
            execs: AtomicU64::new(0),
            conn: tokio::sync::Mutex::new(Some(conn)),
        });
        {
            let mut table = self.table();
            table.live.insert(id.clone(), session);
            reserved_into_table(&mut table, reserved);
        }
        self.state.created.fetch_add(1, Ordering::Relaxed);
        self.start_sweeper();
        Ok(id)
    }

    /// Reserves memory and an id slot for a session being started.
    fn reserve(&self, memory_mb: u64) -> Result<u32, AgentError> {
        let agent = &self.state.executor.config().hako.agent;
        let mut table = self.table();
        let count = table.live.len() + table.starting;
        let used: u64 = table.live.values().map(|s| s.memory_mb).sum::<u64>() + table.starting_mb;
        if count >= agent.max_sessions {
            return Err(AgentError::Capacity(format!(
                "{count} sessions are open on this replica; the limit is {} (hako.agent.max_sessions)",
                agent.max_sessions
            )));
        }
        if used + memory_mb > agent.sessions_memory_mb {
            return Err(AgentError::Capacity(format!(
                "sessions hold {used} MiB of {} MiB (hako.agent.sessions_memory_mb); ask for less memory_mb or close a session",
                agent.sessions_memory_mb
            )));
        }
        let slot = (0..SESSION_SLOTS)
            .find(|s| !table.slots.contains(s))
            .ok_or_else(|| AgentError::Capacity("no free session identity".into()))?;
        table.slots.insert(slot);
        table.starting += 1;
        table.starting_mb += memory_mb;
        Ok(slot)
    }

    fn get(&self, id: &str) -> Result<Arc<Session>, AgentError> {
        let session = self
            .table()
            .live
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::NoSession(id.to_string()))?;
        session.touch();
        Ok(session)
    }

    /// Whether this replica has the session now.
    pub fn has(&self, id: &str) -> bool {
        self.table().live.contains_key(id)
    }

    fn remove(&self, id: &str, reason: &'static str) -> Option<Arc<Session>> {
        let removed = {
            let mut table = self.table();
            let removed = table.live.remove(id);
            if let Some(session) = &removed {
                table.slots.remove(&session.slot);
            }
            removed
        };
        if removed.is_some() {
            self.count_end(reason);
        }
        removed
    }

    /// Runs code in the session.
    pub async fn exec(&self, id: &str, code: &str) -> Result<SessionAnswer, AgentError> {
        let session = self.get(id)?;
        let started = Instant::now();
        let mut guard = session.conn.lock().await;
        let conn = guard
            .as_mut()
            .ok_or_else(|| AgentError::NoSession(id.to_string()))?;
        let request = serde_json::json!({"op": "exec", "code": code});
        let call = conn.call(&request, session.exec_timeout).await;
        session.execs.fetch_add(1, Ordering::Relaxed);
        session.touch();
        let call = match call {
            Ok(Call::Reply(value)) if value.get("output_limited") == Some(&true.into()) => {
                // The code flooded its output: the session ends, as a run would.
                conn.live.cancel();
                let ended = tokio::time::timeout(END_TIMEOUT, conn.read_until_end()).await;
                let mut outcome = match ended {
                    Ok(Ok(outcome)) => outcome,
                    _ => Box::default(),
                };
                let text = |key: &str| value[key].as_str().unwrap_or_default().as_bytes().to_vec();
                outcome.stdout = text("stdout");
                outcome.stderr = text("stderr");
                outcome.output_limited = true;
                outcome.exit_code = None;
                outcome.signal = Some(libc::SIGKILL);
                Ok(Call::Ended(outcome))
            }
            other => other,
        };
        let answer = match call {
            Ok(Call::Reply(value)) => match serde_json::from_value::<ExecReply>(value) {
                Ok(reply) => Ok(answer_of(reply, started, &conn.blocked, session.language)),
                Err(source) => Err(AgentError::Reply {
                    what: "exec reply",
                    source,
                }),
            },
            Ok(Call::Ended(outcome)) => {
                let mut outcome = *outcome;
                if !outcome.output_limited {
                    outcome.stderr = std::mem::take(&mut conn.diag);
                }
                for name in &conn.blocked {
                    if !outcome.blocked.iter().any(|b| &b.name == name) {
                        outcome.blocked.push(hako_jail::spec::BlockedSyscall {
                            nr: 0,
                            name: name.clone(),
                            count: 1,
                        });
                    }
                }
                let run = summarize(&outcome, session.language, &conn.limits);
                let reason = run.status.as_str();
                *guard = None;
                self.remove(id, reason);
                return Ok(SessionAnswer {
                    run,
                    value: None,
                    images: Vec::new(),
                    session_ended: true,
                });
            }
            Err(e) => Err(e),
        };
        if answer.is_err() {
            // A session that broke its protocol is not trusted with another call.
            *guard = None;
            self.remove(id, "protocol");
        }
        answer
    }

    /// Writes a file into the session's workspace.
    pub async fn put_file(&self, id: &str, path: &str, data: &[u8]) -> Result<(), AgentError> {
        check_path(path)?;
        let limit = self.state.executor.config().hako.agent.files_max_bytes;
        if data.len() as u64 > limit {
            return Err(AgentError::Invalid(format!(
                "the file holds {} bytes; the limit is {limit} (hako.agent.files_max_bytes)",
                data.len()
            )));
        }
        let request = serde_json::json!({"op": "put", "path": path, "data": encode_base64(data)});
        let reply = self.file_call(id, &request).await?;
        match reply.failed {
            Some(text) => Err(AgentError::Invalid(text)),
            None => Ok(()),
        }
    }

    /// Reads a file of the session's workspace.
    pub async fn get_file(&self, id: &str, path: &str) -> Result<Vec<u8>, AgentError> {
        check_path(path)?;
        let request = serde_json::json!({"op": "get", "path": path});
        let reply = self.file_call(id, &request).await?;
        if reply.missing {
            return Err(AgentError::NoFile(path.to_string()));
        }
        if let Some(text) = reply.failed {
            return Err(AgentError::Invalid(text));
        }
        let data = reply
            .data
            .ok_or_else(|| AgentError::Protocol("file reply without data".into()))?;
        decode_base64("file", &data)
    }

    /// The files of the session's workspace.
    pub async fn list_files(&self, id: &str) -> Result<Vec<FileEntry>, AgentError> {
        let reply = self
            .file_call(id, &serde_json::json!({"op": "list"}))
            .await?;
        let mut files = reply
            .files
            .ok_or_else(|| AgentError::Protocol("list reply without files".into()))?;
        files.retain(|f| check_path(&f.path).is_ok());
        Ok(files)
    }

    async fn file_call(
        &self,
        id: &str,
        request: &serde_json::Value,
    ) -> Result<FileReply, AgentError> {
        let session = self.get(id)?;
        let mut guard = session.conn.lock().await;
        let conn = guard
            .as_mut()
            .ok_or_else(|| AgentError::NoSession(id.to_string()))?;
        let timeout = session.exec_timeout.max(Duration::from_secs(10));
        let parsed = match conn.call(request, timeout).await {
            Ok(Call::Reply(value)) => {
                serde_json::from_value::<FileReply>(value).map_err(|source| AgentError::Reply {
                    what: "file reply",
                    source,
                })
            }
            Ok(Call::Ended(_)) => {
                *guard = None;
                self.remove(id, "crashed");
                return Err(AgentError::NoSession(id.to_string()));
            }
            Err(e) => Err(e),
        };
        if parsed.is_err() {
            *guard = None;
            self.remove(id, "protocol");
        }
        parsed
    }

    /// Ends a session; false if there was none.
    pub fn close(&self, id: &str) -> bool {
        self.remove(id, "closed").is_some()
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut list: Vec<SessionInfo> = self.table().live.values().map(|s| s.info()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Prometheus text: open sessions, their memory, and how sessions ended.
    pub fn metrics_text(&self) -> String {
        let (open, memory) = {
            let table = self.table();
            let memory: u64 = table.live.values().map(|s| s.memory_mb).sum();
            (table.live.len(), memory)
        };
        let mut text =
            String::from("# HELP hako_sessions Open sessions.\n# TYPE hako_sessions gauge\n");
        text.push_str(&format!("hako_sessions {open}\n"));
        text.push_str("# HELP hako_sessions_memory_bytes Memory limits of the open sessions, summed.\n# TYPE hako_sessions_memory_bytes gauge\n");
        text.push_str(&format!("hako_sessions_memory_bytes {}\n", memory << 20));
        text.push_str("# HELP hako_sessions_created_total Sessions started.\n# TYPE hako_sessions_created_total counter\n");
        let created = self.state.created.load(Ordering::Relaxed);
        text.push_str(&format!("hako_sessions_created_total {created}\n"));
        text.push_str("# HELP hako_sessions_ended_total Sessions ended, by reason.\n# TYPE hako_sessions_ended_total counter\n");
        let ended = self.state.ended.lock().unwrap_or_else(|e| e.into_inner());
        for (reason, n) in ended.iter() {
            text.push_str(&format!(
                "hako_sessions_ended_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        text
    }

    /// Closes sessions idle for longer than their idle timeout, once a second.
    fn start_sweeper(&self) {
        if self.state.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(state) = weak.upgrade() else { return };
                let sessions = Sessions { state };
                let expired: Vec<String> = sessions
                    .table()
                    .live
                    .values()
                    .filter(|s| s.idle_for() > s.idle)
                    .map(|s| s.id.clone())
                    .collect();
                for id in expired {
                    tracing::info!(session = %id, "session expired (idle)");
                    sessions.remove(&id, "idle");
                }
            }
        });
    }
}

/// Memory and an id slot reserved for a session being started; given back when dropped.
struct Reservation<'a>(&'a Sessions, u64, u32);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut table = self.0.table();
        table.starting = table.starting.saturating_sub(1);
        table.starting_mb = table.starting_mb.saturating_sub(self.1);
        table.slots.remove(&self.2);
    }
}

/// Ends a reservation while the table is already locked (the session is in it now).
fn reserved_into_table(table: &mut Table, reservation: Reservation<'_>) {
    table.starting = table.starting.saturating_sub(1);
    table.starting_mb = table.starting_mb.saturating_sub(reservation.1);
    std::mem::forget(reservation);
}

impl Session {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            language: self.language.as_str().to_string(),
            memory_mb: self.memory_mb,
            timeout_s: self.exec_timeout.as_secs_f64(),
            idle_timeout_s: self.idle.as_secs(),
            idle_s: self.idle_for().as_secs(),
            age_s: self.created.elapsed().as_secs(),
            execs: self.execs.load(Ordering::Relaxed),
        }
    }
}

impl Conn {
    /// Sends one request and waits for its reply; on timeout the session is killed.
    async fn call(
        &mut self,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Call, AgentError> {
        let body = serde_json::to_vec(request).map_err(AgentError::Encode)?;
        self.blocked.clear();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        if let Err(e) = self.live.send(&frame).await {
            tracing::warn!("session input closed: {e}");
        }
        self.wait_reply(timeout).await
    }

    async fn wait_reply(&mut self, timeout: Duration) -> Result<Call, AgentError> {
        match tokio::time::timeout(timeout, self.read_reply()).await {
            Ok(call) => call,
            Err(_) => {
                self.live.cancel();
                let ended = tokio::time::timeout(END_TIMEOUT, self.read_until_end()).await;
                let mut outcome = match ended {
                    Ok(Ok(outcome)) => outcome,
                    _ => Box::default(),
                };
                outcome.timed_out = true;
                outcome.exit_code = None;
                outcome.signal = Some(libc::SIGKILL);
                Ok(Call::Ended(outcome))
            }
        }
    }

    async fn read_reply(&mut self) -> Result<Call, AgentError> {
        loop {
            if self.pending.len() >= 4 {
                let len = u32::from_le_bytes([
                    self.pending[0],
                    self.pending[1],
                    self.pending[2],
                    self.pending[3],
                ]) as usize;
                if len > self.max_reply {
                    self.live.cancel();
                    return Err(AgentError::Protocol(format!(
                        "a reply of {len} bytes is over the limit of {}",
                        self.max_reply
                    )));
                }
                if self.pending.len() >= 4 + len {
                    let value =
                        serde_json::from_slice(&self.pending[4..4 + len]).map_err(|source| {
                            AgentError::Reply {
                                what: "unreadable reply",
                                source,
                            }
                        });
                    self.pending.drain(..4 + len);
                    return value.map(Call::Reply);
                }
            }
            match self.live.next().await? {
                Frame::Stdout(bytes) => self.pending.extend_from_slice(&bytes),
                Frame::Blocked(name) => {
                    if !self.blocked.contains(&name) && self.blocked.len() < 64 {
                        self.blocked.push(name);
                    }
                }
                Frame::Stderr(bytes) => {
                    let room = (64usize << 10).saturating_sub(self.diag.len());
                    self.diag.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                Frame::Outcome(outcome) => return Ok(Call::Ended(outcome)),
            }
        }
    }

    async fn read_until_end(&mut self) -> Result<Box<JailOutcome>, AgentError> {
        loop {
            if let Frame::Outcome(outcome) = self.live.next().await? {
                return Ok(outcome);
            }
        }
    }
}

fn answer_of(
    reply: ExecReply,
    started: Instant,
    blocked: &[String],
    language: Language,
) -> SessionAnswer {
    let failed = reply.error.is_some();
    let status = if reply.truncated {
        RunStatus::OutputLimit
    } else if failed && !blocked.is_empty() {
        RunStatus::Blocked
    } else if failed {
        RunStatus::Error
    } else {
        RunStatus::Ok
    };
    let failure = (status != RunStatus::Ok).then(|| Failure {
        // As a run's error names them.
        reasons: if failed {
            blocked_reasons(blocked).collect()
        } else {
            Vec::new()
        },
        ending: Ending::Raised(reply.error.unwrap_or_default()),
    });
    let images: Vec<Image> = reply
        .images
        .into_iter()
        .filter(|i| i.mime == "image/png" && decode_base64("image", &i.base64).is_ok())
        .take(MAX_IMAGES)
        .collect();
    SessionAnswer {
        run: RunReport {
            language,
            stdout: reply.stdout,
            stderr: reply.stderr,
            exit_code: i32::from(failed),
            status,
            blocked_syscalls: blocked.to_vec(),
            usage: Usage {
                wall_ms: started.elapsed().as_millis() as u64,
                cpu_ms: 0,
                peak_memory_bytes: 0,
            },
            network: None,
            failure,
        },
        value: reply.value,
        images,
        session_ended: false,
    }
}
