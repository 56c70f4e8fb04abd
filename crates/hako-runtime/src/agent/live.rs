//! The caller's side of a live jail helper (`hako __live`, see `hako_jail::live`).

use hako_jail::live::{FRAME_BLOCKED, FRAME_OUTCOME, FRAME_STDERR, FRAME_STDOUT, MAX_CHUNK};
use hako_jail::protocol;
use hako_jail::spec::{JailOutcome, JailSpec};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("start the jail helper {helper}: {source}")]
    Start {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encode the run for the jail helper: {0}")]
    Encode(#[source] protocol::ProtocolError),
    #[error("talk to the jail helper: {0}")]
    Io(#[source] std::io::Error),
    #[error("the jail helper sent a malformed frame (kind {kind}, {len} bytes)")]
    Frame { kind: u8, len: usize },
    #[error("the jail helper sent an unreadable outcome: {0}")]
    Outcome(#[source] serde_json::Error),
    #[error("the jail helper ended without an outcome")]
    Ended,
}

/// One frame from the helper.
#[derive(Debug)]
pub enum Frame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The policy denied this syscall just now.
    Blocked(String),
    Outcome(Box<JailOutcome>),
}

/// A running live helper. Dropping it before the outcome arrived ends the run.
pub struct LiveRun {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: Option<u32>,
}

/// The outcome frame is JSON of a few KiB at most.
const MAX_OUTCOME: usize = 1 << 20;

impl LiveRun {
    pub async fn start(
        helper: &Path,
        spec: &JailSpec,
        program: &[u8],
    ) -> Result<LiveRun, LiveError> {
        let mut child = tokio::process::Command::new(helper)
            .arg("__live")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| LiveError::Start {
                helper: helper.display().to_string(),
                source,
            })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(stderr));
        }
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(LiveError::Ended);
        };
        let mut run = LiveRun {
            child: Some(child),
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            pid,
        };
        let mut head = Vec::new();
        protocol::write_json(&mut head, spec).map_err(LiveError::Encode)?;
        protocol::write_bytes(&mut head, program).map_err(LiveError::Encode)?;
        run.send(&head).await?;
        Ok(run)
    }

    /// Relays bytes to the program's input (fd 4).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), LiveError> {
        let stdin = self.stdin.as_mut().ok_or(LiveError::Ended)?;
        stdin.write_all(bytes).await.map_err(LiveError::Io)?;
        stdin.flush().await.map_err(LiveError::Io)
    }

    /// The program sees EOF on its input once it has read everything sent.
    pub(crate) fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Asks the helper to kill the run; its outcome still follows.
    pub fn cancel(&self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill only sends a signal; the pid is our child, not yet reaped (it is
            // reaped only after the outcome arrived, when `pid` is cleared).
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }

    /// The next frame. After [`Frame::Outcome`] the helper is reaped in the background.
    pub async fn next(&mut self) -> Result<Frame, LiveError> {
        let mut head = [0u8; 5];
        if let Err(e) = self.stdout.read_exact(&mut head).await {
            self.finished();
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                LiveError::Ended
            } else {
                LiveError::Io(e)
            });
        }
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let max = match kind {
            FRAME_STDOUT | FRAME_STDERR => MAX_CHUNK,
            FRAME_OUTCOME => MAX_OUTCOME,
            FRAME_BLOCKED => 64,
            _ => 0,
        };
        if len > max || (max == 0) {
            self.cancel();
            return Err(LiveError::Frame { kind, len });
        }
        let mut payload = vec![0u8; len];
        self.stdout
            .read_exact(&mut payload)
            .await
            .map_err(LiveError::Io)?;
        Ok(match kind {
            FRAME_STDOUT => Frame::Stdout(payload),
            FRAME_STDERR => Frame::Stderr(payload),
            FRAME_BLOCKED => Frame::Blocked(String::from_utf8_lossy(&payload).into_owned()),
            _ => {
                self.finished();
                let outcome = serde_json::from_slice(&payload).map_err(LiveError::Outcome)?;
                Frame::Outcome(Box::new(outcome))
            }
        })
    }

    fn finished(&mut self) {
        self.pid = None;
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        self.cancel();
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            // The helper kills the run, cleans up and exits; reap it when it does.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    }
}

async fn log_stderr(stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(target: "hako::live", "{line}");
    }
}
