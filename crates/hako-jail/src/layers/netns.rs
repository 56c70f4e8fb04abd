//! The egress listener of a proxy-mode run.
//!
//! Every run's network namespace is owned by a user namespace of hako's own (a spawn-mode
//! jail creates both when it is cloned, `CLONE_NEWUSER | CLONE_NEWNET`; a zygote run child
//! unshares its network namespace inside its zygote's), so no step needs `CAP_SYS_ADMIN` in
//! the namespaces hako itself runs in (a container's). Before any code of the run exists,
//! hako's own code inside it brings loopback up, listens on `127.0.0.1:EGRESS_PORT`
//! ([`hand_over_listener`]) and passes that socket to the helper on its control channel
//! ([`hako_wire::control::Message::Egress`]). The helper hands it to the egress guard over
//! the guard's unix socket (SCM_RIGHTS; a path socket works across network namespaces) with
//! [`register`]: a spawned jail's before its program starts, a zygote run's when the run
//! first connects ([`Egress`]). The namespace has no other interface and no route, so the
//! listener is the run's only way out; the program holds no
//! capability in its user namespace and seccomp refuses it new namespaces, so it can neither
//! add a way out nor reach the helper's namespace.
//! The guard accepts the run's connections on the listener for the run's lifetime. When the
//! run ends the helper half-closes the link; the guard stops serving the run and answers with
//! a [`NetworkReport`].
//!
//! The link's messages and framing are [`hako_wire::egress`]'s; this file attaches the
//! listener to the registration.

use crate::spec::{EgressSpec, JailOutcome, NetworkReport};
use hako_wire::control::{self, Message};
use hako_wire::egress::{Answer, EgressError};
pub use hako_wire::egress::{Registration, EGRESS_PORT, MAX_MESSAGE};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long the helper waits for the guard to accept a run.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// The least a run whose deadline has come gives the guard (the deadline is enforced next).
const MIN_REGISTER_WAIT: Duration = Duration::from_millis(10);
/// How long the helper waits for the report at the end of a run.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("proxy network without an egress guard")]
    NoGuard,
    #[error("bring up loopback in the run's network namespace: {0}")]
    Loopback(Errno),
    #[error("listen on 127.0.0.1:{EGRESS_PORT} in the run's network namespace: {0}")]
    Listen(io::Error),
    #[error("connect to the egress guard at {path}: {source}")]
    Connect {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("hand the listener to the egress guard: {0}")]
    Send(Errno),
    #[error("pass the run's egress listener to its supervisor: {0}")]
    Handover(#[source] control::ControlError),
    #[error("the egress guard did not accept the run: {0}")]
    Refused(String),
    #[error("the egress guard did not accept the run: {0}")]
    Link(#[source] EgressError),
}

/// The helper's end of a registered run; keep it open while the run lives.
#[derive(Debug)]
pub struct EgressLink {
    stream: UnixStream,
}

/// A zygote run's egress in proxy mode. Its listener goes to the guard when the run first
/// connects ([`Egress::link`]): a run that never connects (most of them) costs the guard
/// nothing. Until then the run's connections wait in the listener's backlog.
#[derive(Debug)]
pub enum Egress {
    /// No connection yet; the helper holds the listener.
    Waiting {
        listener: OwnedFd,
        spec: EgressSpec,
    },
    Linked(EgressLink),
    /// The guard did not take the listener, which is closed: the run's connections are
    /// refused, and its report says why.
    Failed(String),
}

impl Egress {
    /// The listener to watch for the run's first connection, while it waits for one.
    pub fn first_connection(&self) -> Option<&OwnedFd> {
        match self {
            Egress::Waiting { listener, .. } => Some(listener),
            Egress::Linked(_) | Egress::Failed(_) => None,
        }
    }

    /// Hands a waiting listener to the guard (the run is connecting), waiting for the guard
    /// until `deadline` at most: the run goes on meanwhile, unsupervised.
    pub fn link(&mut self, deadline: Instant) {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(MIN_REGISTER_WAIT, REGISTER_TIMEOUT);
        let taken = std::mem::replace(self, Egress::Failed(String::new()));
        *self = match taken {
            Egress::Waiting { listener, spec } => match register_within(listener, &spec, wait) {
                Ok(link) => Egress::Linked(link),
                Err(err) => {
                    eprintln!("hako jail: {err}; the run's connections are refused");
                    Egress::Failed(err.to_string())
                }
            },
            other => other,
        };
    }

    /// What the guard saw (None if it did not answer). A run that never connected opened no
    /// connection.
    pub fn finish(self) -> Option<NetworkReport> {
        match self {
            Egress::Waiting { .. } => Some(NetworkReport::default()),
            Egress::Linked(link) => link.finish(),
            Egress::Failed(why) => Some(NetworkReport {
                failed: vec![format!("egress guard: {why}")],
                ..NetworkReport::default()
            }),
        }
    }
}

/// Inside a run's fresh network namespace (loopback up), before any program: listens on
/// 127.0.0.1:[`EGRESS_PORT`] and passes the listener to the supervisor on `control`
/// ([`Message::Egress`]). This process keeps no copy.
pub fn hand_over_listener(control: BorrowedFd<'_>) -> Result<(), NetnsError> {
    let listener = tcp_listen().map_err(NetnsError::Listen)?;
    control::send(control, &Message::Egress, &[listener.as_fd()]).map_err(NetnsError::Handover)
}

/// Adds the guard's report to the outcome of a run whose listener [`register`] handed over.
pub fn finish<E>(
    link: Option<EgressLink>,
    outcome: Result<JailOutcome, E>,
) -> Result<JailOutcome, E> {
    let report = link.and_then(EgressLink::finish);
    outcome.map(|mut o| {
        o.network = report;
        o
    })
}

/// Hands a run's listener to the guard for the run `egress` names. Fails closed: a run whose
/// listener the guard did not take must not start.
pub fn register(listener: OwnedFd, egress: &EgressSpec) -> Result<EgressLink, NetnsError> {
    register_within(listener, egress, REGISTER_TIMEOUT)
}

/// [`register`], waiting at most `wait` for the guard (to connect, and for its answer).
fn register_within(
    listener: OwnedFd,
    egress: &EgressSpec,
    wait: Duration,
) -> Result<EgressLink, NetnsError> {
    let connect = |source| NetnsError::Connect {
        path: egress.socket.clone(),
        source,
    };
    let mut stream = connect_within(&egress.socket, wait).map_err(connect)?;
    stream.set_read_timeout(Some(wait)).map_err(connect)?;
    let frame = Registration {
        run_id: egress.run_id.clone(),
    }
    .encode()
    .map_err(NetnsError::Link)?;
    send_with_fd(stream.as_fd(), &frame, listener.as_fd()).map_err(NetnsError::Send)?;
    drop(listener);
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).map_err(connect)?;
    match Answer::decode(&answer[..n]).map_err(NetnsError::Link)? {
        Answer::Accepted => Ok(EgressLink { stream }),
        Answer::Refused(why) => Err(NetnsError::Refused(why)),
    }
}

/// A unix stream connected to `path`; connecting and sending give up after `wait` (a guard
/// that does not accept fills its backlog).
fn connect_within(path: &std::path::Path, wait: Duration) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, setsockopt, sockopt, UnixAddr};
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let timeout = nix::sys::time::TimeVal::new(
        wait.as_secs() as libc::time_t,
        wait.subsec_micros() as libc::suseconds_t,
    );
    setsockopt(&socket, sockopt::SendTimeout, &timeout)?;
    connect(socket.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(socket))
}

impl EgressLink {
    /// Ends the run's egress and returns what the guard saw (None if it did not answer).
    pub fn finish(mut self) -> Option<NetworkReport> {
        self.stream.shutdown(Shutdown::Write).ok()?;
        self.stream.set_read_timeout(Some(REPORT_TIMEOUT)).ok()?;
        let mut text = Vec::new();
        (&mut self.stream)
            .take(MAX_MESSAGE as u64)
            .read_to_end(&mut text)
            .ok()?;
        hako_wire::egress::decode_report(&text).ok()
    }
}

fn tcp_listen() -> Result<OwnedFd, io::Error> {
    // In the run's own namespace: its own 127.0.0.1.
    let listener = std::net::TcpListener::bind(("127.0.0.1", EGRESS_PORT))?;
    Ok(OwnedFd::from(listener))
}

/// Sets `lo` up in the current network namespace.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes into the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: ifru_flags is the active union member after SIOCGIFFLAGS.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Sends `data` with `fd` attached (SCM_RIGHTS).
pub(crate) fn send_with_fd(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let raw = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != data.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// Receives into `buf`; returns the byte count and the first descriptor attached, if any
/// (further ones are closed).
pub fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut first = None;
    for cmsg in msg.cmsgs().map_err(|_| Errno::EBADMSG)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_descriptor_crosses_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        send_with_fd(a.as_fd(), b"hello", r.as_fd()).unwrap();
        let mut buf = [0u8; 16];
        let (n, fd) = recv_with_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(fd.is_some());
    }

    #[test]
    fn a_missing_guard_is_an_error_that_names_it() {
        let spec = EgressSpec {
            socket: "/nonexistent/guard.sock".into(),
            run_id: "r".into(),
        };
        let err = UnixStream::connect(&spec.socket)
            .map_err(|source| NetnsError::Connect {
                path: spec.socket.clone(),
                source,
            })
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/guard.sock"));
    }

    /// A stand-in for the guard on a real unix socket, and a waiting egress whose listener
    /// is a real TCP listener on loopback.
    fn waiting_run() -> (
        tempfile::TempDir,
        std::os::unix::net::UnixListener,
        Egress,
        u16,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("guard.sock");
        let guard = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        guard.set_nonblocking(true).unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let egress = Egress::Waiting {
            listener: OwnedFd::from(listener),
            spec: EgressSpec {
                socket,
                run_id: "run#1".into(),
            },
        };
        (dir, guard, egress, port)
    }

    #[test]
    fn a_run_that_never_connects_never_reaches_the_guard() {
        let (_dir, guard, egress, _) = waiting_run();
        assert!(egress.first_connection().is_some());
        assert_eq!(egress.finish(), Some(NetworkReport::default()));
        let err = guard.accept().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    }

    #[test]
    fn the_first_connection_hands_the_listener_to_the_guard() {
        let (_dir, guard, mut egress, port) = waiting_run();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let served = std::thread::spawn(move || {
            guard.set_nonblocking(false).unwrap();
            let (stream, _) = guard.accept().unwrap();
            let mut frame = [0u8; 256];
            let (n, listener) = recv_with_fd(stream.as_fd(), &mut frame).unwrap();
            (&stream).write_all(&Answer::Accepted.encode()).unwrap();
            // The run's waiting connection is there to accept on the listener it got.
            let listener = std::net::TcpListener::from(listener.unwrap());
            listener.accept().unwrap();
            let mut rest = Vec::new();
            (&stream).read_to_end(&mut rest).unwrap();
            let report = NetworkReport {
                connections: 1,
                ..NetworkReport::default()
            };
            (&stream)
                .write_all(&hako_wire::egress::encode_report(&report).unwrap())
                .unwrap();
            String::from_utf8_lossy(&frame[4..n]).into_owned()
        });
        egress.link(Instant::now() + Duration::from_secs(5));
        assert!(matches!(egress, Egress::Linked(_)), "{egress:?}");
        assert!(egress.first_connection().is_none());
        let report = egress.finish().unwrap();
        assert_eq!(report.connections, 1);
        assert_eq!(served.join().unwrap(), r#"{"run_id":"run#1"}"#);
    }

    #[test]
    fn a_guard_that_is_gone_refuses_the_connections_and_the_report_says_so() {
        let (dir, guard, mut egress, port) = waiting_run();
        drop(guard);
        std::fs::remove_file(dir.path().join("guard.sock")).unwrap();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        egress.link(Instant::now() + Duration::from_secs(5));
        // The listener is closed: the connection waiting on it is reset.
        let mut buf = [0u8; 1];
        let read = (&client).read(&mut buf);
        assert!(
            matches!(&read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        let report = egress.finish().unwrap();
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert!(
            report.failed[0].starts_with("egress guard: connect to the egress guard at")
                && report.failed[0].contains("guard.sock"),
            "{report:?}"
        );
    }

    #[test]
    fn a_guard_that_never_answers_holds_the_run_only_until_its_deadline() {
        let (_dir, guard, mut egress, _) = waiting_run();
        // Accepts the registration and never answers.
        guard.set_nonblocking(false).unwrap();
        let silent = std::thread::spawn(move || guard.accept().map(|(stream, _)| stream));
        let deadline = Instant::now() + Duration::from_millis(200);
        egress.link(deadline);
        assert!(
            Instant::now() < deadline + REGISTER_TIMEOUT / 2,
            "waited past the run's deadline"
        );
        let Egress::Failed(why) = &egress else {
            panic!("{egress:?}");
        };
        assert!(why.contains("connect to the egress guard at"), "{why}");
        drop(silent.join().unwrap());
    }
}
