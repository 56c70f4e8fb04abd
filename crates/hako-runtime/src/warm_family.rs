//! The server's side of a zygote family (see `hako_jail::zygote::family`): one preloaded
//! parent per pool and template, and worker zygotes forked from it, each with a helper of
//! its own. The parent lives as long as the pool uses it or a worker of it still exists.

use crate::warm::{Finishing, WarmError};
use hako_jail::protocol;
use hako_jail::spec::JailSpec;
use hako_jail::zygote::ZygoteReport;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdout};

/// A preloaded parent zygote's helper.
pub(crate) struct Parent {
    /// The server's end of the helper's stdin: one byte and a socket per worker to fork.
    link: Mutex<UnixStream>,
    child: Mutex<Option<Child>>,
    pub generation: u64,
    /// Host pid of the parent interpreter (its tree holds every worker).
    pub pid: i32,
    /// Worker indexes in use, one bit each (each is a range of run ids in the parent's user
    /// namespace; at most `MAX_WORKERS`, 64).
    used: Mutex<u64>,
    finishing: Finishing,
}

// One bit of `Parent::used` per worker index.
const _: () = assert!(hako_jail::zygote::MAX_WORKERS <= u64::BITS);

/// A worker's index, held for as long as its zygote exists.
pub(crate) struct WorkerIndex {
    pub parent: Arc<Parent>,
    pub index: u8,
}

impl Drop for WorkerIndex {
    fn drop(&mut self) {
        let mut used = self
            .parent
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *used &= !(1u64 << self.index);
    }
}

impl Parent {
    /// Starts a parent helper and waits until it has imported the preload.
    pub async fn start(
        helper: &std::path::Path,
        spec: &JailSpec,
        bootstrap: &[u8],
        generation: u64,
        finishing: &Finishing,
    ) -> Result<(Arc<Parent>, ZygoteReport), WarmError> {
        let (mut child, link, stdout) = spawn(helper, "__zygote-parent")?;
        let mut frame = Vec::new();
        protocol::write_json(&mut frame, spec).map_err(|e| WarmError::Start(e.to_string()))?;
        protocol::write_bytes(&mut frame, bootstrap)
            .map_err(|e| WarmError::Start(e.to_string()))?;
        (&link)
            .write_all(&frame)
            .map_err(|e| WarmError::Start(e.to_string()))?;
        let mut stdout = BufReader::new(stdout);
        let report = match crate::warm::read_frame(&mut stdout, 4).await {
            Ok(header) => serde_json::from_slice::<ZygoteReport>(&header)
                .map_err(|e| WarmError::Start(e.to_string())),
            Err(e) => Err(WarmError::Start(e.to_string())),
        };
        match report {
            Ok(report) if report.ready => {
                let parent = Parent {
                    link: Mutex::new(link),
                    child: Mutex::new(Some(child)),
                    generation,
                    pid: report.zygote_pid,
                    used: Mutex::new(0),
                    finishing: finishing.clone(),
                };
                Ok((Arc::new(parent), report))
            }
            failed => {
                drop((link, stdout));
                crate::stop::stop_helper(&mut child, &spec.cgroup_root).await;
                Err(match failed {
                    Ok(report) => {
                        WarmError::Start(report.error.unwrap_or_else(|| "not ready".into()))
                    }
                    Err(err) => err,
                })
            }
        }
    }

    /// True once the parent's helper has ended (its workers are gone with it).
    pub fn ended(&self) -> bool {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Takes a free worker index.
    pub fn lease_index(self: &Arc<Self>) -> Option<WorkerIndex> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = (0..hako_jail::zygote::MAX_WORKERS).find(|i| *used & (1u64 << i) == 0)?;
        *used |= 1u64 << index;
        Some(WorkerIndex {
            parent: self.clone(),
            index: index as u8,
        })
    }

    /// Asks the parent to fork a worker; returns the end of its control socket that the
    /// worker's helper takes.
    fn fork_worker(&self) -> Result<OwnedFd, WarmError> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| WarmError::Start(format!("socket pair for a worker: {e}")))?;
        let link = self
            .link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pass(&link, 0, &theirs)?;
        Ok(ours)
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        // Its helper sees EOF once `link` is closed, ends the parent's jail and exits.
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // Outside a runtime (a server torn down without `close`) the helper exits by itself.
        if let (Some(child), Ok(_)) = (child, tokio::runtime::Handle::try_current()) {
            self.finishing.reap(child, None);
        }
    }
}

/// Starts a worker zygote's helper for `index` of its parent: it takes the worker's socket,
/// then its spec. Returns the helper, its stdin and its stdout.
pub(crate) fn start_worker(
    helper: &std::path::Path,
    spec: &JailSpec,
    index: &WorkerIndex,
) -> Result<(Child, tokio::net::UnixStream, ChildStdout), WarmError> {
    let socket = index.parent.fork_worker()?;
    let (child, link, stdout) = spawn(helper, "__zygote-worker")?;
    pass(&link, index.index, &socket)?;
    drop(socket);
    let mut frame = Vec::new();
    protocol::write_json(&mut frame, spec).map_err(|e| WarmError::Start(e.to_string()))?;
    protocol::write_bytes(&mut frame, b"").map_err(|e| WarmError::Start(e.to_string()))?;
    (&link)
        .write_all(&frame)
        .map_err(|e| WarmError::Start(e.to_string()))?;
    link.set_nonblocking(true)
        .map_err(|e| WarmError::Start(e.to_string()))?;
    let stdin =
        tokio::net::UnixStream::from_std(link).map_err(|e| WarmError::Start(e.to_string()))?;
    Ok((child, stdin, stdout))
}

/// Starts `hako <subcommand>` with a unix stream socket as its stdin (descriptors can be
/// passed on it); its stderr goes to the log.
fn spawn(
    helper: &std::path::Path,
    subcommand: &str,
) -> Result<(Child, UnixStream, ChildStdout), WarmError> {
    let start_err = |e: std::io::Error| WarmError::Start(e.to_string());
    let (ours, theirs) = UnixStream::pair().map_err(start_err)?;
    let mut child = tokio::process::Command::new(helper)
        .arg(subcommand)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(start_err)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| WarmError::Start("no stdout".into()))?;
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(crate::warm::forward_log(stderr));
    }
    Ok((child, ours, stdout))
}

/// Sends one byte and `fd` on `link`.
fn pass(link: &UnixStream, byte: u8, fd: &OwnedFd) -> Result<(), WarmError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let fds = [fd.as_fd().as_raw_fd()];
    let bytes = [byte];
    let iov = [std::io::IoSlice::new(&bytes)];
    loop {
        match sendmsg::<UnixAddr>(
            link.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(WarmError::Start(format!("pass a worker's socket: {e}"))),
        }
    }
}
