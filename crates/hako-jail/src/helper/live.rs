//! Live runs (`hako __live`): the jail helper of a run whose caller talks to the program
//! while it runs. Used by streamed runs and sessions of the agent API.
//!
//! Caller → helper (stdin): the [`JailSpec`] frame (`u32 LE` length + JSON) and the program
//! text frame (`u64 LE` length + bytes, see [`protocol::write_bytes`]); every byte after that
//! is relayed, as it arrives, to the program's [`CODE_FD`] (EOF included).
//!
//! Helper → caller (stdout): frames of `kind: u8`, `u32 LE` length, payload:
//! [`FRAME_STDOUT`] / [`FRAME_STDERR`] carry output as the program writes it (at most
//! [`MAX_CHUNK`] bytes each); one last [`FRAME_OUTCOME`] carries the JSON [`JailOutcome`]
//! (its `stdout` and `stderr` are empty: they were relayed).
//!
//! The jail is built exactly as for `hako __jail` (same namespaces, root, cgroup, seccomp,
//! Landlock); only supervision differs: nothing is kept, everything is relayed, and the
//! output cap counts what was relayed.

use crate::helper::{
    self, channels, handle_notification, reap, start_jail, take_control, HelperError, KillOnDrop,
    CANCEL_FD, TAMPERED,
};
use crate::protocol;
use crate::seccomp;
use crate::spec::{JailOutcome, JailSpec};
use hako_wire::control::{ExitStatus, Message, Receiver};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, read, write, Pid};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Output the program wrote to its stdout.
pub const FRAME_STDOUT: u8 = b'1';
/// Output the program wrote to its stderr.
pub const FRAME_STDERR: u8 = b'2';
/// A syscall the policy denied, by name, each time it is denied.
pub const FRAME_BLOCKED: u8 = b'B';
/// The run's outcome; always the last frame.
pub const FRAME_OUTCOME: u8 = b'R';
/// Largest output frame payload.
pub const MAX_CHUNK: usize = 64 << 10;
/// Input bytes buffered for a program that does not read them yet.
const MAX_PENDING_INPUT: usize = 1 << 20;

/// Reads fd 0 without a buffer, so nothing meant for the relay is swallowed by the header read.
struct RawStdin;

impl Read for RawStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match read(libc::STDIN_FILENO, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Entry point of `hako __live`.
pub fn main() -> i32 {
    helper::watch_for_cancel();
    let mut input = RawStdin;
    let request = protocol::read_json::<JailSpec>(&mut input)
        .and_then(|spec| Ok((spec, protocol::read_bytes(&mut input)?)));
    let (outcome, leftover) = helper::run_leased(request, |spec, bootstrap| {
        let mut spec = spec.clone();
        spec.deferred = true;
        run(&spec, &bootstrap)
    });
    let reported = serde_json::to_vec(&outcome)
        .map_err(io::Error::other)
        .and_then(|json| write_frame(FRAME_OUTCOME, &json));
    helper::finish_helper(leftover, reported, "live")
}

/// Writes one frame to our stdout (blocking: the caller reads as long as the run lives).
fn write_frame(kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(&[kind])?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(payload)?;
    out.flush()
}

#[allow(clippy::type_complexity)]
fn run(
    spec: &JailSpec,
    bootstrap: &[u8],
) -> (
    Result<JailOutcome, HelperError>,
    Option<crate::cgroup::RunCgroup>,
) {
    let mut prepared = match helper::prepare_run(spec) {
        Ok(p) => p,
        Err(err) => return (Err(err), None),
    };
    // A proxy-mode run's registration with the guard; kept open while the run lives.
    let mut egress = None;
    let result = (|| {
        let pipes = channels()?;
        let (code_read, code_write) =
            pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| HelperError::Channel {
                what: "code pipe",
                source,
            })?;
        let started = Instant::now();
        let (init, control, link) = start_jail(
            prepared.plan(spec),
            bootstrap,
            prepared.cgroup.as_ref(),
            (pipes.stdout.1, pipes.stderr.1),
            Some(code_read),
            pipes.control,
        )?;
        egress = link;
        let mut guard = KillOnDrop(Some(init));
        let mut relay = Relay::new(spec, init, started, code_write);
        relay.memory_guard = super::memory_guard::MemoryGuard::for_run(
            prepared.coverage.memory,
            spec.limits.memory_bytes,
            init,
        );
        let mut outcome = relay.supervise(&control, pipes.stdout.0, pipes.stderr.0)?;
        guard.0 = None;
        let (cpu_ms, rss) = reap(init);
        outcome.cpu_ms = outcome.cpu_ms.max(cpu_ms);
        outcome.peak_memory_bytes = outcome.peak_memory_bytes.max(rss);
        outcome.wall_ms = started.elapsed().as_millis() as u64;
        Ok(outcome)
    })();
    prepared.egress = egress;
    prepared.finish(result)
}

#[derive(Clone, Copy)]
enum Role {
    Control,
    Stream(usize),
    Listener,
    Cancel,
    Input,
    Sink,
}

/// The relay's state: what flows in, what flowed out, and whether the run was killed.
struct Relay<'a> {
    spec: &'a JailSpec,
    init: Pid,
    deadline: Instant,
    sink: Option<OwnedFd>,
    pending: Vec<u8>,
    input_open: bool,
    streams_open: [bool; 2],
    relayed: u64,
    killed: bool,
    outcome: JailOutcome,
    blocked: BTreeMap<u32, u64>,
    listener: Option<OwnedFd>,
    /// Where no memory cgroup holds the run, the supervisor limits its memory.
    memory_guard: Option<super::memory_guard::MemoryGuard>,
}

impl<'a> Relay<'a> {
    fn new(spec: &'a JailSpec, init: Pid, started: Instant, sink: OwnedFd) -> Self {
        // A program that stops reading must never block the relay.
        let _ = nix::fcntl::fcntl(
            sink.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        Relay {
            spec,
            init,
            deadline: started + Duration::from_millis(spec.limits.timeout_ms),
            sink: Some(sink),
            pending: Vec::new(),
            input_open: true,
            streams_open: [true, true],
            relayed: 0,
            killed: false,
            outcome: JailOutcome::default(),
            blocked: BTreeMap::new(),
            listener: None,
            memory_guard: None,
        }
    }

    fn kill(&mut self) {
        if !self.killed {
            let _ = kill(self.init, Signal::SIGKILL);
            self.killed = true;
        }
    }

    fn supervise(
        &mut self,
        control: &OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<JailOutcome, HelperError> {
        let streams = [stdout, stderr];
        let mut control_open = true;
        let mut status: Option<ExitStatus> = None;
        let mut receiver = Receiver::jail();
        loop {
            if status.is_some() && !self.killed {
                // The program's end was reported after its output was flushed.
                self.drain(&streams);
                break;
            }
            if (status.is_some() || !control_open) && self.streams_open == [false, false] {
                break;
            }
            let now = Instant::now();
            if now >= self.deadline && !self.killed {
                self.outcome.timed_out = status.is_none();
                self.kill();
            }
            if !self.killed && super::supervise::guard_kills(self.memory_guard.as_mut(), self.init)
            {
                self.outcome.oom_killed = true;
                self.killed = true;
            }
            let guarded = self.memory_guard.is_some();
            let wait = super::supervise::poll_timeout(self.deadline, now, self.killed, guarded);
            let events = self.wait(control_open.then_some(control), &streams, wait)?;
            if events.is_empty() {
                if self.killed {
                    break;
                }
                continue;
            }
            for (role, revents) in events {
                match role {
                    Role::Stream(i) => self.relay_output(&streams[i], i),
                    Role::Input => self.take_input(),
                    Role::Sink => self.feed_sink(),
                    Role::Listener => {
                        let gone = revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)
                            && !revents.contains(PollFlags::POLLIN);
                        if gone {
                            self.listener = None;
                        } else if let Some(l) = &self.listener {
                            let before = self.blocked.clone();
                            handle_notification(
                                l.as_fd(),
                                self.spec.seccomp.mode,
                                &mut self.blocked,
                            );
                            self.report_blocked(&before);
                        }
                    }
                    Role::Control => match take_control(control, &mut receiver) {
                        Ok(Some((Message::Error(text), _))) => {
                            self.kill();
                            return Err(HelperError::Setup(text));
                        }
                        Ok(Some((Message::Ready, fds))) => {
                            self.listener = super::unix_diag::ReadyFds::split(fds)
                                .listener_after_giving_diag(self.memory_guard.as_mut());
                            self.outcome.confined = true;
                        }
                        Ok(Some((Message::Exited(exit), _))) => status = Some(exit),
                        Ok(Some(_)) => {}
                        Ok(None) => control_open = false,
                        Err(why) => {
                            // Nothing the run sends may steer its supervisor: end it, say so.
                            self.kill();
                            control_open = false;
                            self.listener = None;
                            status = None;
                            self.outcome.tampered = true;
                            self.outcome.failure = Some(format!("{TAMPERED} ({why})"));
                            eprintln!("hako live: {TAMPERED}: {why}; the run was killed");
                        }
                    },
                    Role::Cancel => self.kill(),
                }
            }
        }
        Ok(self.finish(status))
    }

    /// Polls every open channel; returns the ready ones.
    fn wait(
        &self,
        control: Option<&OwnedFd>,
        streams: &[OwnedFd; 2],
        timeout: PollTimeout,
    ) -> Result<Vec<(Role, PollFlags)>, HelperError> {
        let mut fds = Vec::with_capacity(7);
        let mut roles = Vec::with_capacity(7);
        if let Some(c) = control {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Control);
        }
        for (i, fd) in streams.iter().enumerate() {
            if self.streams_open[i] {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                roles.push(Role::Stream(i));
            }
        }
        if let Some(l) = &self.listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Listener);
        }
        // SAFETY: fd 0 stays open for the helper's lifetime.
        let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
        if self.input_open && self.pending.len() < MAX_PENDING_INPUT {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            roles.push(Role::Input);
        }
        if let (Some(sink), false) = (&self.sink, self.pending.is_empty()) {
            fds.push(PollFd::new(sink.as_fd(), PollFlags::POLLOUT));
            roles.push(Role::Sink);
        }
        let cancel = CANCEL_FD.load(std::sync::atomic::Ordering::Relaxed);
        if cancel >= 0 && !self.killed {
            // SAFETY: CANCEL_FD is a signalfd that stays open for the helper's lifetime.
            let fd = unsafe { BorrowedFd::borrow_raw(cancel) };
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            roles.push(Role::Cancel);
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(HelperError::Supervise(err)),
        }
        Ok(fds
            .iter()
            .zip(roles)
            .filter_map(|(fd, role)| fd.revents().filter(|r| !r.is_empty()).map(|r| (role, r)))
            .collect())
    }

    /// Tells the caller which syscall was just denied (sessions report them per exec).
    fn report_blocked(&mut self, before: &BTreeMap<u32, u64>) {
        let denied = self
            .blocked
            .iter()
            .find(|(nr, count)| before.get(nr) != Some(count))
            .map(|(nr, _)| *nr);
        if let Some(nr) = denied {
            if write_frame(FRAME_BLOCKED, seccomp::syscall_name(nr).as_bytes()).is_err() {
                self.kill();
            }
        }
    }

    /// Reads once from the caller; EOF closes the program's input once it has everything.
    fn take_input(&mut self) {
        let mut buf = [0u8; 65536];
        match read(libc::STDIN_FILENO, &mut buf) {
            Ok(0) | Err(Errno::EBADF | Errno::EIO) => self.input_open = false,
            Ok(n) if self.sink.is_some() => self.pending.extend_from_slice(&buf[..n]),
            Ok(_) | Err(_) => {}
        }
        self.close_sink_when_done();
    }

    fn feed_sink(&mut self) {
        let Some(sink) = &self.sink else { return };
        match write(sink, &self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => {
                // The program closed its end: what it did not read is dropped.
                self.sink = None;
                self.pending.clear();
            }
        }
        self.close_sink_when_done();
    }

    fn close_sink_when_done(&mut self) {
        if !self.input_open && self.pending.is_empty() {
            self.sink = None;
        }
    }

    /// Relays one read of output stream `i`, within the output cap.
    fn relay_output(&mut self, fd: &OwnedFd, i: usize) {
        let mut buf = vec![0u8; MAX_CHUNK];
        match read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => self.streams_open[i] = false,
            Ok(n) => {
                let cap = self.spec.limits.output_bytes;
                let room = cap.saturating_sub(self.relayed) as usize;
                let keep = n.min(room);
                self.relayed += keep as u64;
                let kind = if i == 0 { FRAME_STDOUT } else { FRAME_STDERR };
                if keep > 0 && write_frame(kind, &buf[..keep]).is_err() {
                    // The caller is gone: end the run.
                    self.kill();
                }
                if keep < n {
                    self.outcome.output_limited = true;
                    self.streams_open[i] = false;
                    self.kill();
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.streams_open[i] = false,
        }
    }

    /// Relays what is already buffered in the output pipes.
    fn drain(&mut self, streams: &[OwnedFd; 2]) {
        for (i, fd) in streams.iter().enumerate() {
            while self.streams_open[i] {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let readable = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
                    && fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN));
                if !readable {
                    break;
                }
                self.relay_output(fd, i);
            }
        }
    }

    fn finish(&mut self, status: Option<ExitStatus>) -> JailOutcome {
        let mut outcome = std::mem::take(&mut self.outcome);
        match status {
            Some(exit) if exit.signal != 0 => outcome.signal = Some(exit.signal),
            Some(exit) => outcome.exit_code = Some(exit.code),
            None => outcome.signal = Some(libc::SIGKILL),
        }
        if let Some(exit) = status {
            outcome.cpu_ms = exit.cpu_ms;
            outcome.peak_memory_bytes = exit.max_rss_bytes;
        }
        if let Some(guard) = &self.memory_guard {
            // What the guard saw is the run's memory, not only its largest process.
            outcome.peak_memory_bytes = outcome.peak_memory_bytes.max(guard.peak_bytes());
        }
        outcome.blocked = super::supervise::blocked_list(std::mem::take(&mut self.blocked));
        outcome
    }
}
