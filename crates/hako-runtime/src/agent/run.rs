//! One-shot runs of the agent API: input files, stdin, env and per-request limits in;
//! output (streamed or not) and returned files out.

use super::live::{Frame, LiveRun};
use super::paths::{check_env, check_glob, check_path};
use super::{decode_base64, random_hex, Agent, AgentError};
use crate::executor::JailRequest;
use crate::language::Language;
use crate::result::{LimitOverrides, RunReport};
use crate::summary::summarize;
use hako_jail::spec::JailSpec;
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

pub(crate) const RUN_DRIVER_PY: &str = include_str!("run_driver.py");
pub(crate) const RUN_DRIVER_JS: &str = include_str!("run_driver.js");

/// `POST /v2/runs`. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunSpec {
    pub language: String,
    pub code: String,
    #[serde(default)]
    pub stdin: Option<String>,
    /// Relative path → base64 content.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Globs relative to the working directory.
    #[serde(default)]
    pub return_files: Vec<String>,
    #[serde(default)]
    pub timeout_s: Option<f64>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What became of an agent run, and the files it returned.
#[derive(Debug, Clone)]
pub struct AgentResult {
    pub run: RunReport,
    /// Relative path → base64 content.
    pub files: BTreeMap<String, String>,
    /// Files that matched but did not fit in `hako.agent.files_max_bytes`.
    pub files_skipped: Vec<String>,
}

/// Output as the program writes it (streamed runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(String),
    Stderr(String),
}

#[derive(Deserialize)]
struct Trailer {
    files: BTreeMap<String, String>,
    #[serde(default)]
    skipped: Vec<String>,
}

impl Agent {
    /// Runs once. With `events`, output is sent as it arrives; a closed receiver (the client
    /// went away) kills the run.
    pub async fn run(
        &self,
        spec: RunSpec,
        request_id: &str,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<AgentResult, AgentError> {
        let language: Language = spec
            .language
            .parse()
            .map_err(|_| AgentError::UnsupportedLanguage)?;
        if spec.code.is_empty() {
            return Err(AgentError::Invalid("field `code` must not be empty".into()));
        }
        let files_max = self.config().files_max_bytes;
        let input_bytes = check_inputs(&spec, files_max)?;
        let request = JailRequest {
            enable_network: spec.network,
            limits: overrides(spec.timeout_s, spec.memory_mb)?,
            ..JailRequest::new(language)
        };
        let (mut jail, _packages) = self.executor.plan(&request, request_id)?;
        if input_bytes > jail.limits.tmp_bytes {
            return Err(AgentError::Invalid(format!(
                "input files hold {input_bytes} bytes; the run's /tmp holds {} (hako.limits.tmp_mb)",
                jail.limits.tmp_bytes
            )));
        }
        let user_cap = jail.limits.output_bytes;
        let marker = format!("\u{1}hako-files-{}\u{1}", random_hex(16));
        if !spec.return_files.is_empty() {
            // Room for the returned files (base64) after the program's own output.
            jail.limits.output_bytes = user_cap + files_max / 3 * 4 + (64 << 10);
        }
        set_env(&mut jail, language, &spec.env);
        let driver = match language {
            Language::Python3 => [hako_jail::zygote::EXIT_STATUS_PY, RUN_DRIVER_PY].concat(),
            Language::Nodejs => RUN_DRIVER_JS.to_string(),
        };
        let payload = serde_json::json!({
            "code": spec.code,
            "files": spec.files,
            "stdin": spec.stdin.as_ref().map(|s| super::encode_base64(s.as_bytes())),
            "return": spec.return_files,
            "marker": marker,
            "limit": files_max,
        });
        let payload = serde_json::to_vec(&payload).map_err(AgentError::Encode)?;
        let mut live =
            LiveRun::start(self.executor.helper_path(), &jail, driver.as_bytes()).await?;
        live.send(&payload).await?;
        live.close_input();
        let mut output = Output::new(marker.into_bytes(), user_cap, events);
        let mut outcome = loop {
            let frame = match &output.events {
                Some(tx) => {
                    let tx = tx.clone();
                    tokio::select! {
                        frame = live.next() => frame?,
                        _ = tx.closed() => {
                            live.cancel();
                            output.events = None;
                            continue;
                        }
                    }
                }
                None => live.next().await?,
            };
            match frame {
                Frame::Stdout(bytes) => output.add(0, &bytes).await,
                Frame::Stderr(bytes) => output.add(1, &bytes).await,
                // The outcome lists them all.
                Frame::Blocked(_) => {}
                Frame::Outcome(outcome) => break *outcome,
            }
            if output.over_cap && !output.cancelled {
                live.cancel();
                output.cancelled = true;
            }
        };
        output.flush(true).await;
        if let Some(err) = &outcome.setup_error {
            if !outcome.confined {
                return Err(crate::executor::ExecError::Sandbox(err.clone()).into());
            }
        }
        let (stdout, trailer) = output.split();
        outcome.stdout = stdout;
        outcome.stderr = std::mem::take(&mut output.streams[1]);
        outcome.output_limited |= output.over_cap;
        let mut limits = jail.limits;
        limits.output_bytes = user_cap;
        let run = summarize(&outcome, language, &limits);
        let (files, files_skipped) = match trailer {
            Some(bytes) => parse_trailer(&bytes, files_max),
            None => (BTreeMap::new(), Vec::new()),
        };
        Ok(AgentResult {
            run,
            files,
            files_skipped,
        })
    }
}

/// Checks a run's files, globs and env; returns the bytes of input files and stdin.
fn check_inputs(spec: &RunSpec, files_max: u64) -> Result<u64, AgentError> {
    let mut input_bytes = spec.stdin.as_ref().map_or(0, |s| s.len() as u64);
    for (path, data) in &spec.files {
        check_path(path)?;
        input_bytes += decode_base64(&format!("files[{path:?}]"), data)?.len() as u64;
    }
    if input_bytes > files_max {
        return Err(AgentError::Invalid(format!(
            "input files and stdin hold {input_bytes} bytes; the limit is {files_max} (hako.agent.files_max_bytes)"
        )));
    }
    for pattern in &spec.return_files {
        check_glob(pattern)?;
    }
    check_env(spec.env.iter())?;
    Ok(input_bytes)
}

/// Per-request limits: positive, and lowered (never raised) by the executor.
pub(crate) fn overrides(
    timeout_s: Option<f64>,
    memory_mb: Option<u64>,
) -> Result<LimitOverrides, AgentError> {
    let timeout_ms = match timeout_s {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => {
            Some((s * 1000.0).ceil().min(u64::MAX as f64) as u64)
        }
        Some(s) => {
            return Err(AgentError::Invalid(format!(
                "timeout_s must be a positive number of seconds, not {s}"
            )))
        }
    };
    if memory_mb == Some(0) {
        return Err(AgentError::Invalid(
            "memory_mb must be greater than 0".into(),
        ));
    }
    Ok(LimitOverrides {
        timeout_ms,
        memory_mb,
    })
}

/// The request's variables over the adapter's (checked by `check_env`).
pub(crate) fn set_env(jail: &mut JailSpec, language: Language, env: &BTreeMap<String, String>) {
    if language == Language::Python3 {
        jail.env.push(("MPLBACKEND".into(), "Agg".into()));
    }
    for (name, value) in env {
        jail.env.retain(|(k, _)| k != name);
        jail.env.push((name.clone(), value.clone()));
    }
}

/// Returned files as the driver wrote them: hostile input, checked path by path.
fn parse_trailer(bytes: &[u8], limit: u64) -> (BTreeMap<String, String>, Vec<String>) {
    let Ok(trailer) = serde_json::from_slice::<Trailer>(bytes) else {
        return (BTreeMap::new(), vec!["(unreadable file list)".into()]);
    };
    let mut files = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut total = 0u64;
    for (path, data) in trailer.files {
        let size = decode_base64("file", &data).map(|d| d.len() as u64);
        match size {
            Ok(size) if check_path(&path).is_ok() && total + size <= limit => {
                total += size;
                files.insert(path, data);
            }
            _ => skipped.push(path),
        }
    }
    skipped.extend(
        trailer
            .skipped
            .into_iter()
            .filter(|p| check_path(p).is_ok()),
    );
    (files, skipped)
}

/// Output collected so far, streamed as text when asked, with the returned-files trailer
/// held back from the stream.
struct Output {
    streams: [Vec<u8>; 2],
    sent: [usize; 2],
    marker: Vec<u8>,
    marker_at: Option<usize>,
    searched: usize,
    user_cap: u64,
    over_cap: bool,
    cancelled: bool,
    events: Option<mpsc::Sender<Event>>,
}

impl Output {
    fn new(marker: Vec<u8>, user_cap: u64, events: Option<mpsc::Sender<Event>>) -> Output {
        Output {
            streams: [Vec::new(), Vec::new()],
            sent: [0, 0],
            marker,
            marker_at: None,
            searched: 0,
            user_cap,
            over_cap: false,
            cancelled: false,
            events,
        }
    }

    async fn add(&mut self, stream: usize, bytes: &[u8]) {
        self.streams[stream].extend_from_slice(bytes);
        if stream == 0 && self.marker_at.is_none() {
            let out = &self.streams[0];
            let from = self.searched.saturating_sub(self.marker.len());
            self.marker_at = out[from..]
                .windows(self.marker.len())
                .position(|w| w == self.marker.as_slice())
                .map(|i| from + i);
            self.searched = out.len();
        }
        let user = self.marker_at.unwrap_or(self.streams[0].len()) + self.streams[1].len();
        if user as u64 > self.user_cap {
            self.over_cap = true;
            // Keep exactly the cap of the program's own output.
            let excess = user as u64 - self.user_cap;
            let own = if stream == 0 {
                self.marker_at.unwrap_or(self.streams[0].len())
            } else {
                self.streams[1].len()
            };
            let keep = own.saturating_sub(excess as usize);
            if stream == 1 || self.marker_at.is_none() {
                self.streams[stream].truncate(keep);
            }
        }
        self.flush(false).await;
    }

    /// Sends what can be sent: whole UTF-8 characters, never a possible start of the marker.
    async fn flush(&mut self, last: bool) {
        let Some(tx) = self.events.clone() else {
            return;
        };
        for stream in 0..2 {
            let data = &self.streams[stream];
            let end = match (stream, self.marker_at) {
                (0, Some(at)) => at,
                (0, None) if !last => data.len() - held_back(data, &self.marker),
                _ => data.len(),
            };
            if end <= self.sent[stream] {
                continue;
            }
            let chunk = &data[self.sent[stream]..end];
            let cut = match std::str::from_utf8(chunk) {
                Ok(_) => chunk.len(),
                Err(e) if e.error_len().is_none() && !last => e.valid_up_to(),
                Err(_) => chunk.len(),
            };
            if cut == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&chunk[..cut]).into_owned();
            self.sent[stream] += cut;
            let event = if stream == 0 {
                Event::Stdout(text)
            } else {
                Event::Stderr(text)
            };
            if tx.send(event).await.is_err() {
                self.events = None;
                return;
            }
        }
    }

    /// The program's stdout, and the trailer after the marker.
    fn split(&mut self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut stdout = std::mem::take(&mut self.streams[0]);
        match self.marker_at {
            Some(at) => {
                let trailer = stdout.split_off(at);
                (stdout, Some(trailer[self.marker.len()..].to_vec()))
            }
            None => (stdout, None),
        }
    }
}

/// How many bytes at the end of `data` could be the start of `marker`.
fn held_back(data: &[u8], marker: &[u8]) -> usize {
    (1..marker.len().min(data.len() + 1))
        .rev()
        .find(|&k| data.ends_with(&marker[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_trailer_is_held_back_and_split_off() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut out = Output::new(b"<M>".to_vec(), 100, Some(tx));
        out.add(0, b"hello <").await;
        out.add(0, b"M>{\"files\":{}}").await;
        out.flush(true).await;
        drop(out.events.take());
        let mut seen = String::new();
        while let Some(Event::Stdout(t)) = rx.recv().await {
            seen.push_str(&t);
        }
        assert_eq!(seen, "hello ");
        let (stdout, trailer) = out.split();
        assert_eq!(stdout, b"hello ");
        assert_eq!(trailer.unwrap(), b"{\"files\":{}}");
    }

    #[tokio::test]
    async fn a_split_character_waits_for_its_end() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut out = Output::new(b"<M>".to_vec(), 100, Some(tx));
        let snow = "é".as_bytes();
        out.add(1, &[b'a', snow[0]]).await;
        out.add(1, &[snow[1]]).await;
        assert_eq!(rx.recv().await, Some(Event::Stderr("a".into())));
        assert_eq!(rx.recv().await, Some(Event::Stderr("é".into())));
    }

    #[test]
    fn only_a_possible_marker_start_is_held_back() {
        assert_eq!(held_back(b"hello", b"<M>"), 0);
        assert_eq!(held_back(b"hello <", b"<M>"), 1);
        assert_eq!(held_back(b"hello <M", b"<M>"), 2);
        assert_eq!(held_back(b"", b"<M>"), 0);
    }

    #[test]
    fn trailers_are_checked() {
        let (files, skipped) = parse_trailer(
            br#"{"files":{"ok.txt":"aGk=","../x":"aGk=","bad":"!!"},"skipped":["big.bin"]}"#,
            100,
        );
        assert_eq!(files.keys().collect::<Vec<_>>(), ["ok.txt"]);
        assert_eq!(skipped, ["../x", "bad", "big.bin"]);
        let (files, skipped) = parse_trailer(b"not json", 100);
        assert!(files.is_empty() && skipped.len() == 1);
    }

    #[test]
    fn limits_must_be_positive() {
        assert!(overrides(Some(0.0), None).is_err());
        assert!(overrides(Some(f64::NAN), None).is_err());
        assert!(overrides(None, Some(0)).is_err());
        assert_eq!(
            overrides(Some(1.5), Some(64)).unwrap().timeout_ms,
            Some(1500)
        );
    }
}
