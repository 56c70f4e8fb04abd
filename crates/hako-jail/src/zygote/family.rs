//! Preload once, share it: one preloaded parent zygote per pool, and worker zygotes forked
//! from it, each driven by a helper of its own.
//!
//! ```text
//! parent helper (`hako __zygote-parent`)     worker helper (`hako __zygote-worker`), one per worker
//!  └─ init                                     │ cgroup of its own; supervises runs as `__zygote`
//!      └─ parent zygote (preloaded) ── fork ── worker zygote ── fork ── run child
//! ```
//! The server makes a socket pair per worker. It passes one end to the parent helper (one
//! byte and the descriptor on the helper's stdin, a unix stream socket), which hands it to
//! the parent zygote in [`Message::Worker`]; the parent forks a worker that speaks on it
//! and says ZYGOTE_READY with a pidfd of itself. The other end goes to the worker's helper
//! the same way, the byte being the worker's index (its range of run ids). The worker's
//! helper moves the worker into a cgroup of its own: pages the preload faulted stay charged
//! to the parent's group, so a run's limit counts the run's own memory only. The workers
//! share the parent's pages copy-on-write; when the parent helper ends, the parent's jail and
//! every worker in it end too.

use super::process::{set_nice, zygote_cgroup, ProcessHandle, PRELOAD_NICE};
use super::{take_settings, Owner, RemoveOnError, Zygote, ZygoteError};
use crate::helper::{self, HelperError};
use crate::protocol;
use crate::seccomp::notify;
use crate::spec::{JailSpec, WORKER_RUN_IDS, ZYGOTE_RUN_IDS};
use hako_wire::control::{self, Message, Receiver};
use hako_wire::zygote::ZygoteReport;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most worker zygotes one parent serves (each takes [`WORKER_RUN_IDS`] of its run ids).
pub const MAX_WORKERS: u32 = ZYGOTE_RUN_IDS / WORKER_RUN_IDS;

/// Entry point of `hako __zygote-parent`. stdin (a unix stream socket): the zygote's
/// [`JailSpec`] frame and bootstrap, then one byte with a socket per worker to fork; EOF ends
/// the parent and every worker. stdout: a [`ZygoteReport`] frame.
pub fn parent_main() -> i32 {
    helper::watch_for_cancel();
    let mut output = io::stdout().lock();
    let mut _ids = None;
    let started = {
        let mut input = io::stdin().lock();
        protocol::read_json::<JailSpec>(&mut input)
            .map_err(ZygoteError::from)
            .and_then(|mut spec| {
                _ids = helper::lease_ids(&mut spec)?;
                let bootstrap = protocol::read_bytes(&mut input)?;
                let settings = take_settings(&mut spec);
                Zygote::boot(&spec, &bootstrap, &settings)
            })
    };
    let report = match &started {
        Ok(zygote) => ZygoteReport {
            ready: true,
            skipped: zygote.skipped.clone(),
            zygote_pid: zygote.pid.as_raw(),
            ..Default::default()
        },
        Err(err) => ZygoteReport {
            error: Some(err.to_string()),
            ..Default::default()
        },
    };
    if protocol::write_json(&mut output, &report).is_err() {
        return 1;
    }
    drop(output);
    let Ok(zygote) = started else {
        return 1;
    };
    // Nothing more was sent before the report: the frames above were read whole, and what
    // follows is read from the socket itself.
    let stdin = io::stdin();
    loop {
        match receive_passed(stdin.as_fd()) {
            Ok(Some((_, socket))) => {
                if control::send(zygote.socket.as_fd(), &Message::Worker, &[socket.as_fd()])
                    .is_err()
                {
                    return 1;
                }
            }
            Ok(None) => return 0,
            Err(err) => {
                eprintln!("hako zygote parent: {err}");
                return 1;
            }
        }
    }
}

/// Entry point of `hako __zygote-worker`. stdin (a unix stream socket): one byte (the
/// worker's index) with the worker's control socket, then what `hako __zygote` reads.
pub fn worker_main() -> i32 {
    helper::watch_for_cancel();
    let passed = receive_passed(io::stdin().as_fd());
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let started = match passed {
        Ok(Some((index, socket))) => protocol::read_json::<JailSpec>(&mut input)
            .map_err(ZygoteError::from)
            .and_then(|mut spec| {
                let _bootstrap = protocol::read_bytes(&mut input)?;
                let settings = take_settings(&mut spec);
                Zygote::attach(&spec, socket, u32::from(index), &settings.warmup)
            }),
        Ok(None) => Err(ZygoteError::Gone),
        Err(err) => Err(ZygoteError::Start(format!(
            "receive the worker's socket: {err}"
        ))),
    };
    match started {
        Ok(zygote) => super::serve(zygote, &mut input, &mut output),
        Err(err) => {
            let report = ZygoteReport {
                error: Some(err.to_string()),
                ..Default::default()
            };
            let _ = protocol::write_json(&mut output, &report);
            1
        }
    }
}

impl Zygote {
    /// Takes over the worker zygote at the other end of `socket`: waits for its ZYGOTE_READY,
    /// moves it into a cgroup of its own, calibrates it.
    fn attach(
        spec: &JailSpec,
        socket: OwnedFd,
        index: u32,
        warmup: &str,
    ) -> Result<Zygote, ZygoteError> {
        if index >= MAX_WORKERS {
            return Err(ZygoteError::Start(format!(
                "worker {index}: a parent serves at most {MAX_WORKERS} workers"
            )));
        }
        let mut receiver = Receiver::zygote();
        let (skipped, handle) = match helper::take_control(&socket, &mut receiver) {
            Ok(Some((Message::ZygoteReady(skipped), fds))) => {
                let pidfd = fds
                    .into_iter()
                    .next()
                    .ok_or_else(|| ZygoteError::Start("the worker zygote sent no pidfd".into()))?;
                (skipped, ProcessHandle(pidfd))
            }
            Ok(Some((Message::Error(text), _))) => return Err(ZygoteError::Start(text)),
            Ok(_) => return Err(ZygoteError::Gone),
            Err(why) => return Err(ZygoteError::OutOfState(why)),
        };
        let pid = handle.pid().ok_or(ZygoteError::Gone)?;
        set_nice(pid, PRELOAD_NICE);
        let (cgroup, coverage) = zygote_cgroup(spec)?;
        let mut cgroup = RemoveOnError(cgroup);
        if let Some(cg) = &cgroup.0 {
            cg.add_pid(pid.as_raw()).map_err(HelperError::from)?;
        }
        let mut zygote = Zygote {
            owner: Owner::Worker(handle),
            held_mounts: None,
            handed_over: false,
            receiver,
            cgroup: cgroup.0.take(),
            coverage,
            pid,
            socket,
            skipped,
            use_listener: notify::user_notif_supported(),
            runs: 0,
            forks: 0,
            slots: (index * WORKER_RUN_IDS, WORKER_RUN_IDS),
            prepared: None,
            requested: None,
            last: None,
            prepared_bytes: 0,
            hot_pages: Vec::new(),
            filter: None,
        };
        zygote.calibrate(spec, warmup);
        set_nice(pid, 0);
        Ok(zygote)
    }
}

/// Receives one byte and the descriptor that came with it; `None` at EOF.
fn receive_passed(socket: BorrowedFd<'_>) -> io::Result<Option<(u8, OwnedFd)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let received = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(received) => received,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(io::Error::from(err)),
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in received.cmsgs()? {
            if let ControlMessageOwned::ScmRights(rights) = message {
                // SAFETY: the kernel just installed these descriptors for us; nobody else owns them.
                fds.extend(
                    rights
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if received.bytes == 0 {
            return Ok(None);
        }
        return match fds.into_iter().next() {
            Some(fd) => Ok(Some((byte[0], fd))),
            None => Err(io::Error::other("a byte without its descriptor")),
        };
    }
}
