//! The egress listener of a proxy-mode run.
//!
//! Before it clones the jail, the helper moves itself into a new network namespace, brings
//! loopback up, listens on `127.0.0.1:EGRESS_PORT` there and hands the listening socket to
//! the egress guard over the guard's unix socket (SCM_RIGHTS; a path socket works across
//! network namespaces). The jail's init is then cloned without `CLONE_NEWNET` and inherits
//! that namespace, so the listener exists before any code of the run does, and the run's user
//! namespace holds no capability over its network namespace (its owner is the host's).
//! The guard accepts the run's connections on the listener for the run's lifetime. When the
//! run ends the helper half-closes the link; the guard stops serving the run and answers with
//! a [`NetworkReport`].
//!
//! The link's messages and framing are [`hako_wire::egress`]'s; this file attaches the
//! listener to the registration.

use crate::spec::{EgressSpec, JailOutcome, JailSpec, NetworkMode, NetworkReport};
use crate::sys::{Kernel, REAL};
use hako_wire::egress::{Answer, EgressError};
pub use hako_wire::egress::{Registration, EGRESS_PORT, MAX_MESSAGE};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{
    recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long the helper waits for the guard to accept a run.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the helper waits for the report at the end of a run.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("create the run's network namespace: {0}")]
    Unshare(Errno),
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

/// For a proxy-mode run: moves this (single-threaded) helper into the run's new network
/// namespace and registers its listener with the guard. `None` for other modes. Fails closed:
/// a run whose listener the guard did not take does not start.
pub fn prepare(spec: &JailSpec) -> Result<Option<EgressLink>, NetnsError> {
    if spec.network != NetworkMode::Proxy {
        return Ok(None);
    }
    let egress = spec.egress.as_ref().ok_or(NetnsError::NoGuard)?;
    REAL.unshare(CloneFlags::CLONE_NEWNET)
        .map_err(NetnsError::Unshare)?;
    loopback_up().map_err(NetnsError::Loopback)?;
    let listener = tcp_listen().map_err(NetnsError::Listen)?;
    register(listener, egress).map(Some)
}

/// Adds the guard's report to the outcome of a run `prepare` registered.
/// Registers a listener on 127.0.0.1:[`EGRESS_PORT`] of the caller's current network
/// namespace with the guard, for one run (a zygote helper lives in its zygote's namespace).
pub(crate) fn listen_for_run(egress: &EgressSpec) -> Result<EgressLink, NetnsError> {
    let mut attempts = 0;
    let listener = loop {
        // The guard drops the previous run's listener asynchronously.
        match tcp_listen() {
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(NetnsError::Listen(e)),
        }
    };
    register(listener, egress)
}

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

fn register(listener: OwnedFd, egress: &EgressSpec) -> Result<EgressLink, NetnsError> {
    let connect = |source| NetnsError::Connect {
        path: egress.socket.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&egress.socket).map_err(connect)?;
    stream
        .set_read_timeout(Some(REGISTER_TIMEOUT))
        .map_err(connect)?;
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
    // In the new namespace: its own 127.0.0.1.
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
}
