//! The supervisor of a run (in the helper, host side): output, deadline, output cap, seccomp
//! notifications, and the control channel's state machine.

use crate::seccomp::{self, notify};
use crate::spec::{BlockedSyscall, JailOutcome, Limits, SeccompMode};
use hako_wire::control::{self, ExitStatus, Message, Received, Receiver};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{read, Pid};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::memory_guard::MemoryGuard;
use super::{HelperError, CANCEL_FD};

struct Collected {
    data: Vec<u8>,
    open: bool,
}

/// What the supervisor watches: the limits, the policy mode, and whom to kill.
pub(crate) struct Watch<'a> {
    pub limits: &'a Limits,
    pub mode: SeccompMode,
    /// Killing it ends the run (the run's pid 1).
    pub target: Pid,
    pub started: Instant,
    /// The supervisor's memory limit where no memory cgroup holds the run.
    pub memory_guard: Option<MemoryGuard>,
}

/// The supervisor's end of a run's control channel: the socket, where its protocol stands,
/// the seccomp listener if READY already brought it, and the run's egress if it waits for
/// the run's first connection.
pub(crate) struct Supervised<'a> {
    pub control: &'a OwnedFd,
    pub receiver: Receiver,
    pub listener: Option<OwnedFd>,
    pub egress: Option<&'a mut crate::netns::Egress>,
}

/// What the supervisor says when a run sent a control message no state expects.
pub const TAMPERED: &str = "the run tampered with its supervisor channel";

/// Collects output, answers seccomp notifications and enforces the deadline and output cap
/// until the program has ended. Its exit status arrives on `control` from the program's
/// reaper (the jail's init, or the zygote after `wait4`), never from the program. A message
/// the channel's state does not expect kills the run (see [`TAMPERED`]).
pub(crate) fn supervise(
    watch: &Watch<'_>,
    channel: Supervised<'_>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<JailOutcome, HelperError> {
    let Supervised {
        control,
        mut receiver,
        mut listener,
        mut egress,
    } = channel;
    let init = watch.target;
    let deadline = watch.started + Duration::from_millis(watch.limits.timeout_ms);
    let cap = watch.limits.output_bytes as usize;
    let mut outcome = JailOutcome::default();
    let mut streams = [
        Collected {
            data: Vec::new(),
            open: true,
        },
        Collected {
            data: Vec::new(),
            open: true,
        },
    ];
    outcome.confined = receiver.state() != control::State::Confining;
    let mut blocked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut control_open = true;
    let mut status: Option<ExitStatus> = None;
    let mut killed = false;
    let mut memory_guard = watch.memory_guard.clone();

    loop {
        let status_known = status.is_some() || !control_open;
        if status_known && !streams[0].open && !streams[1].open {
            break;
        }
        if status.is_some() && !killed {
            // The program reported its end after flushing its output: what it wrote is in
            // the pipes now. Take it without waiting for the process to be torn down (its
            // caller kills it).
            drain(&stdout, &stderr, &mut streams, cap, &mut outcome);
            break;
        }
        let now = Instant::now();
        if now >= deadline && !killed {
            outcome.timed_out = status.is_none();
            let _ = kill(init, Signal::SIGKILL);
            killed = true;
        }
        if !killed && guard_kills(memory_guard.as_mut(), init) {
            outcome.oom_killed = true;
            killed = true;
        }
        let open = Open {
            control: control_open.then_some(control),
            streams: [
                streams[0].open.then_some(&stdout),
                streams[1].open.then_some(&stderr),
            ],
            listener: listener.as_ref(),
            first_connection: egress
                .as_deref()
                .filter(|_| !killed)
                .and_then(crate::netns::Egress::first_connection),
            cancel: !killed,
        };
        let events = match wait_for_events(
            open,
            poll_timeout(deadline, now, killed, memory_guard.is_some()),
        ) {
            Ok(Some(events)) => events,
            Ok(None) => continue,
            Err(err) => return Err(err),
        };
        if events.is_empty() {
            if killed {
                // Killed and nothing more arrives: everything in the namespace is gone.
                break;
            }
            continue;
        }
        for (role, revents) in events {
            match role {
                Role::Stream(i) => {
                    let fd = if i == 0 { &stdout } else { &stderr };
                    collect_some(fd, i, &mut streams, cap, &mut outcome);
                    if outcome.output_limited && !killed {
                        let _ = kill(init, Signal::SIGKILL);
                        killed = true;
                    }
                }
                Role::Listener => listener_event(&mut listener, revents, watch.mode, &mut blocked),
                Role::FirstConnection => {
                    if let Some(egress) = egress.as_deref_mut() {
                        egress.link(deadline);
                    }
                }
                Role::Control => match take_control(control, &mut receiver) {
                    Ok(Some((Message::Error(text), _))) => {
                        let _ = kill(init, Signal::SIGKILL);
                        return Err(HelperError::Setup(text));
                    }
                    Ok(Some((Message::Ready, fds))) => {
                        listener = super::unix_diag::ReadyFds::split(fds)
                            .listener_after_giving_diag(memory_guard.as_mut());
                        outcome.confined = true;
                    }
                    Ok(Some((Message::Exited(exit), _))) => status = Some(exit),
                    Ok(Some(_)) => {}
                    Ok(None) => control_open = false,
                    Err(why) => {
                        // Nothing the run sends may steer its supervisor: end it, say so.
                        let _ = kill(init, Signal::SIGKILL);
                        killed = true;
                        control_open = false;
                        listener = None;
                        mark_tampered(&mut outcome, &why);
                    }
                },
                Role::Cancel => {
                    let _ = kill(init, Signal::SIGKILL);
                    killed = true;
                }
            }
        }
    }

    if outcome.tampered {
        status = None;
    }
    let mut outcome = finish(outcome, status, blocked, streams);
    if let Some(guard) = &memory_guard {
        // What the guard saw is the run's memory, not only its largest process.
        outcome.peak_memory_bytes = outcome.peak_memory_bytes.max(guard.peak_bytes());
    }
    Ok(outcome)
}

/// A seccomp notification to answer, or the listener gone (hung up without data).
fn listener_event(
    listener: &mut Option<OwnedFd>,
    revents: PollFlags,
    mode: SeccompMode,
    blocked: &mut BTreeMap<u32, u64>,
) {
    if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        && !revents.contains(PollFlags::POLLIN)
    {
        *listener = None;
    } else if let Some(l) = listener {
        handle_notification(l.as_fd(), mode, blocked);
    }
}

/// Nothing the run sends may steer its supervisor: the run (already killed) is answered as
/// tampering, and the helper's log says so.
fn mark_tampered(outcome: &mut JailOutcome, why: &ControlFault) {
    outcome.tampered = true;
    outcome.failure = Some(format!("{TAMPERED} ({why})"));
    eprintln!("hako jail: {TAMPERED}: {why}; the run was killed");
}

/// How long to wait for the next event: until the deadline (at most a minute), or a short
/// while for what a killed run still sends.
pub(super) fn poll_timeout(
    deadline: Instant,
    now: Instant,
    killed: bool,
    guarded: bool,
) -> PollTimeout {
    if killed {
        PollTimeout::from(200u16)
    } else {
        let mut left = deadline
            .saturating_duration_since(now)
            .as_millis()
            .min(60_000) as u16;
        if guarded {
            // The memory guard reads the run's memory this often.
            left = left.min(super::memory_guard::POLL_INTERVAL.as_millis() as u16);
        }
        PollTimeout::from(left.max(1))
    }
}

/// The channels the supervisor still listens on.
struct Open<'a> {
    control: Option<&'a OwnedFd>,
    streams: [Option<&'a OwnedFd>; 2],
    listener: Option<&'a OwnedFd>,
    /// The egress listener of a run that has not connected yet.
    first_connection: Option<&'a OwnedFd>,
    /// The caller's cancellation (SIGTERM), until the run is killed.
    cancel: bool,
}

/// Polls every open channel; returns the ready ones (none on timeout), or `None` when a
/// signal interrupted the wait.
fn wait_for_events(
    open: Open<'_>,
    wait: PollTimeout,
) -> Result<Option<Vec<(Role, PollFlags)>>, HelperError> {
    let mut fds = Vec::with_capacity(6);
    let mut roles = Vec::with_capacity(6);
    if let Some(control) = open.control {
        fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        roles.push(Role::Control);
    }
    for (i, fd) in open.streams.into_iter().enumerate() {
        if let Some(fd) = fd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Stream(i));
        }
    }
    if let Some(l) = open.listener {
        fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        roles.push(Role::Listener);
    }
    if let Some(l) = open.first_connection {
        fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        roles.push(Role::FirstConnection);
    }
    let cancel = CANCEL_FD.load(std::sync::atomic::Ordering::Relaxed);
    if cancel >= 0 && open.cancel {
        // SAFETY: CANCEL_FD is a signalfd that stays open for the helper's lifetime.
        let fd = unsafe { BorrowedFd::borrow_raw(cancel) };
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
        roles.push(Role::Cancel);
    }
    match poll(&mut fds, wait) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(None),
        Err(err) => return Err(HelperError::Supervise(err)),
    }
    Ok(Some(
        fds.iter()
            .zip(roles)
            .filter_map(|(fd, role)| fd.revents().filter(|r| !r.is_empty()).map(|r| (role, r)))
            .collect(),
    ))
}

/// The outcome once the run has ended: its exit status (a SIGKILL when none came), the
/// calls the policy denied, and the output collected.
fn finish(
    mut outcome: JailOutcome,
    status: Option<ExitStatus>,
    blocked: BTreeMap<u32, u64>,
    streams: [Collected; 2],
) -> JailOutcome {
    if let Some(exit) = status {
        if exit.signal != 0 {
            outcome.signal = Some(exit.signal);
        } else {
            outcome.exit_code = Some(exit.code);
        }
        outcome.cpu_ms = exit.cpu_ms;
        outcome.peak_memory_bytes = exit.max_rss_bytes;
    } else {
        outcome.signal = Some(libc::SIGKILL);
    }
    outcome.blocked = blocked_list(blocked);
    let [out, err] = streams;
    outcome.stdout = out.data;
    outcome.stderr = err.data;
    outcome
}

/// The denied calls a supervisor counted, named, as the outcome lists them.
pub(super) fn blocked_list(blocked: BTreeMap<u32, u64>) -> Vec<BlockedSyscall> {
    blocked
        .into_iter()
        .map(|(nr, count)| BlockedSyscall {
            nr,
            name: seccomp::syscall_name(nr),
            count,
        })
        .collect()
}

/// Reads the run's memory where the supervisor guards it; kills the run over the limit.
pub(super) fn guard_kills(guard: Option<&mut MemoryGuard>, init: Pid) -> bool {
    let Some(over) = guard.and_then(MemoryGuard::check) else {
        return false;
    };
    let _ = kill(init, Signal::SIGKILL);
    eprintln!(
        "hako jail: memory guard: the run used {} bytes, over its limit of {}; killed",
        over.used_bytes, over.limit_bytes
    );
    true
}

/// Reads what is already buffered in the output pipes, up to the cap.
fn drain(
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    streams: &mut [Collected; 2],
    cap: usize,
    outcome: &mut JailOutcome,
) {
    for (i, fd) in [stdout, stderr].into_iter().enumerate() {
        while streams[i].open {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(1)
                    if fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN)) => {}
                _ => break,
            }
            collect_some(fd, i, streams, cap, outcome);
        }
    }
}

/// Reads once from output stream `i` into `streams[i]`, keeping both streams together within
/// `cap` bytes: past the cap the excess is cut, `output_limited` is set and the stream closed.
fn collect_some(
    fd: &OwnedFd,
    i: usize,
    streams: &mut [Collected; 2],
    cap: usize,
    outcome: &mut JailOutcome,
) {
    let total: usize = streams.iter().map(|s| s.data.len()).sum();
    match read_some(
        fd.as_raw_fd(),
        &mut streams[i].data,
        cap.saturating_sub(total) + 1,
    ) {
        Ok(0) => streams[i].open = false,
        Ok(_) => {
            let total: usize = streams.iter().map(|s| s.data.len()).sum();
            if total > cap {
                let keep = streams[i].data.len() - (total - cap);
                streams[i].data.truncate(keep);
                outcome.output_limited = true;
                streams[i].open = false;
            }
        }
        Err(Errno::EINTR | Errno::EAGAIN) => {}
        Err(_) => streams[i].open = false,
    }
}

#[derive(Clone, Copy)]
enum Role {
    Control,
    Stream(usize),
    Listener,
    FirstConnection,
    Cancel,
}

fn read_some(fd: RawFd, into: &mut Vec<u8>, max: usize) -> Result<usize, Errno> {
    let mut buf = [0u8; 65536];
    let want = buf.len().min(max.max(1));
    let n = read(fd, &mut buf[..want])?;
    into.extend_from_slice(&buf[..n]);
    Ok(n)
}

pub(crate) fn handle_notification(
    listener: BorrowedFd<'_>,
    mode: SeccompMode,
    blocked: &mut BTreeMap<u32, u64>,
) {
    let Ok(note) = notify::receive(listener) else {
        return;
    };
    let nr = note.nr as u32;
    if is_resolver_probe(&note) {
        // glibc's getaddrinfo(AI_ADDRCONFIG) asks the kernel for interface addresses over
        // NETLINK_ROUTE and falls back when refused: expected, never reported or allowed.
        let _ = notify::respond_errno(listener, note.id, libc::EPERM);
        return;
    }
    count_blocked(blocked, nr);
    let _ = match mode {
        SeccompMode::Learn => notify::respond_continue(listener, note.id),
        SeccompMode::Enforce => notify::respond_errno(listener, note.id, libc::EPERM),
    };
}

/// Counts a denied call: by its number for the first [`seccomp::MAX_DISTINCT_BLOCKED`]
/// numbers, under [`seccomp::OTHER_SYSCALLS`] after that.
fn count_blocked(blocked: &mut BTreeMap<u32, u64>, nr: u32) {
    let key = if blocked.contains_key(&nr) || blocked.len() < seccomp::MAX_DISTINCT_BLOCKED {
        nr
    } else {
        seccomp::OTHER_SYSCALLS
    };
    *blocked.entry(key).or_insert(0) += 1;
}

fn is_resolver_probe(note: &notify::Notification) -> bool {
    note.nr as i64 == libc::SYS_socket
        && note.args[0] == libc::AF_NETLINK as u64
        && note.args[2] == libc::NETLINK_ROUTE as u64
}

/// Why a control channel is no longer trusted (the run tampered with it).
#[derive(Debug, thiserror::Error)]
pub enum ControlFault {
    #[error(transparent)]
    OutOfState(#[from] control::OutOfState),
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

/// Receives one control message and checks it against the channel's state. `Ok(None)`: the
/// channel closed. `Err`: a message out of state or malformed (tampering).
pub(crate) fn take_control(
    control: &OwnedFd,
    receiver: &mut Receiver,
) -> Result<Option<(Message, Vec<OwnedFd>)>, ControlFault> {
    loop {
        match control::receive(control) {
            Ok(Received::Closed) => return Ok(None),
            Ok(Received::Nothing) => continue,
            Ok(Received::Message(message, fds)) => {
                return match receiver.accept(message.kind()) {
                    Ok(_) => Ok(Some((message, fds))),
                    Err(out) => Err(out.into()),
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Waits for init; returns (cpu ms of the whole run, max RSS in bytes).
pub(crate) fn reap(init: Pid) -> (u64, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes only into the status and rusage we own.
        let r = unsafe { libc::wait4(init.as_raw(), &mut status, 0, &mut usage) };
        if r >= 0 || Errno::last() != Errno::EINTR {
            break;
        }
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    (
        ms(usage.ru_utime) + ms(usage.ru_stime),
        usage.ru_maxrss.max(0) as u64 * 1024,
    )
}

#[cfg(test)]
#[path = "supervise_tests.rs"]
mod tests;
