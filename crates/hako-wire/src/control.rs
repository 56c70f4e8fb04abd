//! The control messages of hako's processes, and the state machines that receive them.
//!
//! Every control channel is a unix SEQPACKET socket: one datagram is one message, its first
//! byte names the message, the rest is its body; descriptors ride along as SCM_RIGHTS.
//! This enum is the only specification of the format (`zygote.py` cites it).
//!
//! | message | byte | body | descriptors | sender → receiver |
//! |---|---|---|---|---|
//! | [`Message::Go`] | `G` | – | – | helper → jail init: id maps and cgroup are in place (and again, for a proxy-mode run, once the guard took its egress listener) |
//! | [`Message::Egress`] | `N` | – | 1: a listening TCP socket on `127.0.0.1:3128` of the run's network namespace | jail init of a proxy-mode run, or every zygote run child (hako's Rust code, before any program) → supervisor |
//! | [`Message::Ready`] | `R` | – | 0 to 2: the seccomp listener, and where the memory guard limits the run a sock_diag socket of its network namespace (told apart by kind) | confined process (hako's Rust code, before any program) → supervisor |
//! | [`Message::Run`] | `S` | – | – | zygote helper → prepared run child: the program is in place |
//! | [`Message::Error`] | `E` | UTF-8 text | – | jail init, a process being confined, or the zygote → supervisor: setup failed |
//! | [`Message::Exited`] | `X` | `i32 code, i32 signal, u64 cpu_ms, u64 max_rss_bytes` (LE; the two u64 optional) | – | the program's reaper (jail init, or the zygote after `wait4`) → supervisor |
//! | [`Message::Fork`] | `F` | JSON [`crate::zygote::ChildParams`] | 4: control, stdout, stderr, program memfd | zygote helper → zygote |
//! | [`Message::Forked`] | `P` | – | 2: the child's pidfd, then its pid namespace's reaper's (pid 1) | zygote → zygote helper |
//! | [`Message::Settings`] | `W` | JSON [`crate::zygote::ZygoteSettings`] | – | zygote helper → zygote, once, first (the operator's preload and warm-up code, never in the environment) |
//! | [`Message::ZygoteReady`] | `Z` | JSON list of skipped preload modules | 0 or 1 (a worker zygote's pidfd of itself) | zygote → zygote helper, once |
//! | [`Message::Worker`] | `A` | – | 1: the new worker's control socket | zygote helper → preloaded parent zygote: fork a worker zygote that speaks on this socket |
//!
//! The program of a run never holds a control socket: in spawn mode the socket is
//! close-on-exec, and a zygote's run child closes its end before the program is read. The
//! receivers below still accept a message only in the state that expects it
//! ([`Receiver::accept`]); anything else is tampering.

use rustix::net::{
    recv, recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Largest control message (a fork request carries the hot-page list).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Most descriptors one message carries ([`Message::Fork`]).
pub const MAX_FDS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket: {0}")]
    Io(#[source] std::io::Error),
    #[error("control message {0:?} is unknown")]
    Unknown(u8),
    #[error("control message {kind} is malformed: {why}")]
    Malformed { kind: Kind, why: &'static str },
    #[error("control message {kind} has a bad JSON body")]
    Json {
        kind: Kind,
        #[source]
        source: serde_json::Error,
    },
}

/// How the program ended, as its reaper reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i32,
    pub signal: i32,
    pub cpu_ms: u64,
    pub max_rss_bytes: u64,
}

/// One control message (see the module's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Go,
    Egress,
    Ready,
    Run,
    Error(String),
    Exited(ExitStatus),
    Fork(Vec<u8>),
    Forked,
    Settings(Vec<u8>),
    ZygoteReady(Vec<String>),
    Worker,
}

/// The name of a message, for state tables and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Go,
    Egress,
    Ready,
    Run,
    Error,
    Exited,
    Fork,
    Forked,
    Settings,
    ZygoteReady,
    Worker,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Go,
        Kind::Egress,
        Kind::Ready,
        Kind::Run,
        Kind::Error,
        Kind::Exited,
        Kind::Fork,
        Kind::Forked,
        Kind::Settings,
        Kind::ZygoteReady,
        Kind::Worker,
    ];

    pub fn byte(self) -> u8 {
        match self {
            Kind::Go => b'G',
            Kind::Egress => b'N',
            Kind::Ready => b'R',
            Kind::Run => b'S',
            Kind::Error => b'E',
            Kind::Exited => b'X',
            Kind::Fork => b'F',
            Kind::Forked => b'P',
            Kind::Settings => b'W',
            Kind::ZygoteReady => b'Z',
            Kind::Worker => b'A',
        }
    }

    fn of_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.byte() == byte)
    }

    /// How many descriptors the message carries: (fewest, most).
    fn fds(self) -> (usize, usize) {
        match self {
            Kind::Ready => (0, 2),
            Kind::Egress => (1, 1),
            Kind::Fork => (MAX_FDS, MAX_FDS),
            Kind::Forked => (2, 2),
            Kind::Worker => (1, 1),
            Kind::ZygoteReady => (0, 1),
            _ => (0, 0),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::Go => "GO",
            Kind::Egress => "EGRESS",
            Kind::Ready => "READY",
            Kind::Run => "RUN",
            Kind::Error => "ERROR",
            Kind::Exited => "EXITED",
            Kind::Fork => "FORK",
            Kind::Forked => "FORKED",
            Kind::Settings => "SETTINGS",
            Kind::ZygoteReady => "ZYGOTE_READY",
            Kind::Worker => "WORKER",
        };
        f.write_str(name)
    }
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Go => Kind::Go,
            Message::Egress => Kind::Egress,
            Message::Ready => Kind::Ready,
            Message::Run => Kind::Run,
            Message::Error(_) => Kind::Error,
            Message::Exited(_) => Kind::Exited,
            Message::Fork(_) => Kind::Fork,
            Message::Forked => Kind::Forked,
            Message::Settings(_) => Kind::Settings,
            Message::ZygoteReady(_) => Kind::ZygoteReady,
            Message::Worker => Kind::Worker,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.kind().byte()];
        match self {
            Message::Error(text) => out.extend_from_slice(text.as_bytes()),
            Message::Exited(s) => {
                out.extend_from_slice(&s.code.to_le_bytes());
                out.extend_from_slice(&s.signal.to_le_bytes());
                out.extend_from_slice(&s.cpu_ms.to_le_bytes());
                out.extend_from_slice(&s.max_rss_bytes.to_le_bytes());
            }
            Message::Fork(params) | Message::Settings(params) => out.extend_from_slice(params),
            Message::ZygoteReady(skipped) => {
                // A list of strings always serializes.
                out.extend_from_slice(&serde_json::to_vec(skipped).unwrap_or_default())
            }
            Message::Go
            | Message::Egress
            | Message::Ready
            | Message::Run
            | Message::Forked
            | Message::Worker => {}
        }
        out
    }

    /// Decodes one datagram that came with `fds` descriptors.
    pub fn decode(data: &[u8], fds: usize) -> Result<Message, ControlError> {
        let (&first, body) = data.split_first().ok_or(ControlError::Malformed {
            kind: Kind::Go,
            why: "empty",
        })?;
        let kind = Kind::of_byte(first).ok_or(ControlError::Unknown(first))?;
        let malformed = |why| ControlError::Malformed { kind, why };
        let (fewest, most) = kind.fds();
        if fds < fewest || fds > most {
            return Err(malformed("wrong number of descriptors"));
        }
        let empty = |message: Message| {
            if body.is_empty() {
                Ok(message)
            } else {
                Err(malformed("unexpected body"))
            }
        };
        match kind {
            Kind::Go => empty(Message::Go),
            Kind::Egress => empty(Message::Egress),
            Kind::Ready => empty(Message::Ready),
            Kind::Run => empty(Message::Run),
            Kind::Forked => empty(Message::Forked),
            Kind::Worker => empty(Message::Worker),
            Kind::Error => Ok(Message::Error(String::from_utf8_lossy(body).into_owned())),
            Kind::Fork => Ok(Message::Fork(body.to_vec())),
            Kind::Settings => Ok(Message::Settings(body.to_vec())),
            Kind::ZygoteReady => serde_json::from_slice(body)
                .map(Message::ZygoteReady)
                .map_err(|source| ControlError::Json { kind, source }),
            Kind::Exited => {
                if body.len() != 8 && body.len() != 24 {
                    return Err(malformed("wrong length"));
                }
                let word = |at: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&body[at..at + 4]);
                    i32::from_le_bytes(b)
                };
                let long = |at: usize| {
                    let mut b = [0u8; 8];
                    if let Some(s) = body.get(at..at + 8) {
                        b.copy_from_slice(s);
                    }
                    u64::from_le_bytes(b)
                };
                Ok(Message::Exited(ExitStatus {
                    code: word(0),
                    signal: word(4),
                    cpu_ms: long(8),
                    max_rss_bytes: long(16),
                }))
            }
        }
    }
}

/// What [`receive`] got.
#[derive(Debug)]
pub enum Received {
    /// The peer closed its end (or every copy of it).
    Closed,
    /// Interrupted; nothing was read.
    Nothing,
    Message(Message, Vec<OwnedFd>),
}

/// Sends one message with its descriptors.
pub fn send(
    socket: BorrowedFd<'_>,
    message: &Message,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ControlError> {
    let bytes = message.encode();
    let iov = [IoSlice::new(&bytes)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ControlError::Malformed {
            kind: message.kind(),
            why: "too many descriptors",
        });
    }
    loop {
        match sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(ControlError::Io(err.into())),
        }
    }
}

/// Receives one message and its descriptors (close-on-exec). A message that is unknown,
/// malformed or came with the wrong descriptors is an error; its descriptors are closed.
pub fn receive(socket: impl AsFd) -> Result<Received, ControlError> {
    // The message's length first (nothing is taken), so that a buffer of its size, not of
    // MAX_MESSAGE, is zeroed for it; a longer one still arrives truncated and is refused.
    let length = match recv(
        socket.as_fd(),
        &mut [0u8; 1][..],
        RecvFlags::PEEK | RecvFlags::TRUNC,
    ) {
        Ok((_, length)) => length,
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return Ok(Received::Nothing),
        Err(err) => return Err(ControlError::Io(err.into())),
    };
    let mut buf = vec![0u8; length.clamp(1, MAX_MESSAGE)];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = match recvmsg(
        socket.as_fd(),
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(r) => r,
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return Ok(Received::Nothing),
        Err(err) => return Err(ControlError::Io(err.into())),
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    if received.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || received.flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(ControlError::Malformed {
            kind: Kind::of_byte(buf[0]).unwrap_or(Kind::Error),
            why: "truncated",
        });
    }
    let message = Message::decode(&buf[..received.bytes.min(buf.len())], fds.len())?;
    Ok(Received::Message(message, fds))
}

/// Which channel a [`Receiver`] listens on: each has its own protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A spawn-mode jail (or a zygote's own jail) → its helper: the program (before exec)
    /// says READY, init reports its exit.
    Jail,
    /// A zygote's run child (and the zygote, which reaps it) → the zygote helper.
    ZygoteChild,
    /// The zygote itself → the zygote helper (start, then fork answers).
    Zygote,
}

/// Where a receiver is in its channel's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The run's network namespace is being set up: its egress listener (EGRESS) is due
    /// (or a setup ERROR, or EXITED of a child that died).
    Networking,
    /// The process is being confined: READY (or a setup ERROR) is due.
    Confining,
    /// Confined; in spawn mode the interpreter is being exec'd, in zygote mode the child
    /// waits for RUN. Only hako's own code runs.
    Confined,
    /// The program was handed over: only its reaper's EXITED is valid.
    Running,
    /// The program ended, or setup failed: nothing more is valid.
    Ended,
    /// The zygote is importing its preload modules.
    ZygoteStarting,
    /// The zygote waits for a fork request: nothing is valid.
    ZygoteIdle,
    /// A fork request is out: FORKED (or ERROR) is due.
    ForkRequested,
}

/// A message that arrived in a state that does not expect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} message while {state:?} on the {channel:?} channel")]
pub struct OutOfState {
    pub channel: Channel,
    pub state: State,
    pub kind: Kind,
}

/// The receiving end of one control channel, as an explicit state machine.
#[derive(Debug, Clone, Copy)]
pub struct Receiver {
    channel: Channel,
    state: State,
}

impl Receiver {
    /// A jail's helper: READY once, then EXITED.
    pub fn jail() -> Receiver {
        Receiver {
            channel: Channel::Jail,
            state: State::Confining,
        }
    }

    /// The helper of a proxy-mode jail before its GO: init's EGRESS listener once, then
    /// (continued by [`Receiver::jail`]) READY and EXITED.
    pub fn jail_egress() -> Receiver {
        Receiver {
            channel: Channel::Jail,
            state: State::Networking,
        }
    }

    /// A zygote run child's supervisor: EGRESS once, READY once, then (after
    /// [`Receiver::handed_over`]) EXITED from the zygote.
    pub fn zygote_child() -> Receiver {
        Receiver {
            channel: Channel::ZygoteChild,
            state: State::Networking,
        }
    }

    /// The zygote helper's end of the zygote's socket.
    pub fn zygote() -> Receiver {
        Receiver {
            channel: Channel::Zygote,
            state: State::ZygoteStarting,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Accepts `kind` if the current state expects it and moves on; anything else leaves
    /// the state as it was and is tampering (or a broken peer).
    pub fn accept(&mut self, kind: Kind) -> Result<State, OutOfState> {
        use Channel as C;
        use Kind as K;
        use State as S;
        let next = match (self.channel, self.state, kind) {
            (C::Jail | C::ZygoteChild, S::Networking, K::Egress) => Some(S::Confining),
            (C::Jail | C::ZygoteChild, S::Networking, K::Error | K::Exited) => Some(S::Ended),
            (C::Jail | C::ZygoteChild, S::Confining, K::Ready) => Some(S::Confined),
            (C::Jail | C::ZygoteChild, S::Confining, K::Error | K::Exited) => Some(S::Ended),
            // Spawn: exec of the interpreter failed (hako's code; the channel is
            // close-on-exec) or the program ended. Zygote: a prepared child that failed or
            // died before its run.
            (C::Jail | C::ZygoteChild, S::Confined, K::Error | K::Exited) => Some(S::Ended),
            (C::ZygoteChild, S::Running, K::Exited) => Some(S::Ended),
            (C::Zygote, S::ZygoteStarting, K::ZygoteReady) => Some(S::ZygoteIdle),
            (C::Zygote, S::ZygoteStarting, K::Error) => Some(S::Ended),
            (C::Zygote, S::ForkRequested, K::Forked | K::Error) => Some(S::ZygoteIdle),
            _ => None,
        };
        match next {
            Some(state) => {
                self.state = state;
                Ok(state)
            }
            None => Err(self.out_of_state(kind)),
        }
    }

    /// The supervisor handed the program over (sent RUN to a confined zygote child).
    pub fn handed_over(&mut self) -> Result<(), OutOfState> {
        match (self.channel, self.state) {
            (Channel::ZygoteChild, State::Confined) => {
                self.state = State::Running;
                Ok(())
            }
            _ => Err(self.out_of_state(Kind::Run)),
        }
    }

    /// The zygote helper sent a fork request.
    pub fn fork_requested(&mut self) -> Result<(), OutOfState> {
        match (self.channel, self.state) {
            (Channel::Zygote, State::ZygoteIdle) => {
                self.state = State::ForkRequested;
                Ok(())
            }
            _ => Err(self.out_of_state(Kind::Fork)),
        }
    }

    fn out_of_state(&self, kind: Kind) -> OutOfState {
        OutOfState {
            channel: self.channel,
            state: self.state,
            kind,
        }
    }
}

#[cfg(test)]
mod tests;
