//! The bytes queued in the unix sockets of a run's network namespace, for the memory guard.
//! `/proc/net/unix` shows no queue sizes, so the guard asks the kernel's socket diagnostics
//! (`NETLINK_SOCK_DIAG`, `unix_diag`) through a netlink socket made inside that namespace:
//! a dump lists only the sockets of the namespace the netlink socket belongs to. hako's own
//! code makes that socket in the run, once the run's namespaces exist and before its
//! program does ([`socket_here`], in the lock-down), and hands it over with READY; the run
//! never holds it.
//!
//! Every queued buffer sits in one receive queue and is charged, at its full size, to the
//! socket that sent it (`SK_MEMINFO_WMEM_ALLOC`), as long as that socket is open. So the sum
//! is what every listed socket has sent and not yet had read, plus, for a stream or
//! seqpacket socket whose peer is gone (closed after sending), an estimate of its receive
//! queue, which nobody listed is charged for: the queue shows bytes (`UNIX_DIAG_RQLEN`), not
//! buffers, and a buffer of one byte takes about 1 KiB, so it is charged at 1 KiB a byte, up
//! to what one sender can have queued (twice `net.core.wmem_max`, plus one buffer).

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::socket::{
    recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const AF_UNIX: u8 = 1;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UDIAG_SHOW_ICONS: u32 = 0x8;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UDIAG_SHOW_MEMINFO: u32 = 0x20;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_MEMINFO: u16 = 5;
const SK_MEMINFO_WMEM_ALLOC: usize = 2;
const SOCK_STREAM: u8 = 1;
const SOCK_SEQPACKET: u8 = 5;
const TCP_LISTEN: u8 = 10;
const HEADER: usize = 16;
const DIAG_MSG: usize = 16;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// What a buffer of a single byte takes, about.
const BUFFER_PER_BYTE: u64 = 1024;

/// Makes a sock_diag socket in the calling thread's network namespace (in the run, before
/// its program exists).
pub(crate) fn socket_here() -> nix::Result<OwnedFd> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    // A dump answers at once; never let the supervisor wait long on it.
    let timeout = Duration::from_millis(200).as_micros() as libc::suseconds_t;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: 0,
            tv_usec: timeout,
        }),
    )?;
    Ok(socket)
}

/// Whether `fd` is a sock_diag netlink socket (as [`socket_here`] makes), not a seccomp
/// listener: READY may carry both.
fn is_diag_socket(fd: BorrowedFd<'_>) -> bool {
    let option = |name: libc::c_int| {
        let mut value: libc::c_int = 0;
        let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `length` bytes into `value`, which is that big;
        // on a descriptor that is not a socket it fails with ENOTSOCK.
        let done = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut length,
            )
        };
        (done == 0).then_some(value)
    };
    option(libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
        && option(libc::SO_PROTOCOL) == Some(libc::NETLINK_SOCK_DIAG)
}

/// The descriptors READY carries, told apart: the seccomp listener and the sock_diag socket
/// of the run's network namespace, each if any.
#[derive(Debug, Default)]
pub(crate) struct ReadyFds {
    pub listener: Option<OwnedFd>,
    pub unix_diag: Option<OwnedFd>,
}

impl ReadyFds {
    /// Tells apart the descriptors of a READY.
    pub(crate) fn split(fds: Vec<OwnedFd>) -> ReadyFds {
        let mut ready = ReadyFds::default();
        for fd in fds {
            if is_diag_socket(fd.as_fd()) {
                ready.unix_diag.get_or_insert(fd);
            } else {
                ready.listener.get_or_insert(fd);
            }
        }
        ready
    }

    /// Gives the sock_diag socket to the run's memory guard (if it has one) and returns the
    /// seccomp listener.
    pub(crate) fn listener_after_giving_diag(
        self,
        guard: Option<&mut super::memory_guard::MemoryGuard>,
    ) -> Option<OwnedFd> {
        if let (Some(guard), Some(socket)) = (guard, self.unix_diag) {
            guard.take_unix_diag(socket);
        }
        self.listener
    }
}

/// What one sender can have queued at most: twice `net.core.wmem_max` (what `SO_SNDBUF`
/// allows), plus one buffer of 64 KiB.
fn sender_cap() -> u64 {
    static CAP: OnceLock<u64> = OnceLock::new();
    *CAP.get_or_init(|| {
        let wmem_max = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(212_992);
        2 * wmem_max + (64 << 10)
    })
}

/// The guard's reader over a sock_diag socket of one run's network namespace.
#[derive(Debug)]
pub(crate) struct UnixDiag {
    socket: OwnedFd,
    /// The last dump's request number: answers to any other are left over from a dump that
    /// failed half way, and skipped.
    sequence: AtomicU32,
}

/// One unix socket as the dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnixSocket {
    pub inode: u32,
    pub kind: u8,
    pub state: u8,
    pub peer: Option<u32>,
    /// A listening socket's connections not yet accepted: each one's sender (0 once closed).
    pub pending_senders: Vec<u32>,
    /// Bytes in its receive queue (for a listening socket: its backlog, not bytes).
    pub receive_queue: u32,
    /// Bytes it sent that are still queued somewhere, at their full size.
    pub sent_queued: u32,
}

impl UnixDiag {
    /// A reader over `socket`, made by [`socket_here`] in the run.
    pub(crate) fn new(socket: OwnedFd) -> UnixDiag {
        UnixDiag {
            socket,
            sequence: AtomicU32::new(0),
        }
    }

    /// The bytes queued in the namespace's unix sockets (see the module's comment).
    pub(crate) fn queued_bytes(&self) -> io::Result<u64> {
        Ok(queued_bytes(&self.dump()?, sender_cap()))
    }

    fn dump(&self) -> io::Result<Vec<UnixSocket>> {
        let sequence = self
            .sequence
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let request = dump_request(sequence);
        send(self.socket.as_raw_fd(), &request, MsgFlags::empty())?;
        let mut sockets = Vec::new();
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
            if n == 0 || parse_dump(&buffer[..n], sequence, &mut sockets)? {
                return Ok(sockets);
            }
        }
    }
}

/// A request to dump every unix socket with its peer, receive queue and memory counters.
fn dump_request(sequence: u32) -> [u8; HEADER + 24] {
    let mut request = [0u8; HEADER + 24];
    request[0..4].copy_from_slice(&((HEADER + 24) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request[8..12].copy_from_slice(&sequence.to_ne_bytes());
    // struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
    request[HEADER] = AF_UNIX;
    request[HEADER + 4..HEADER + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let show = UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN | UDIAG_SHOW_MEMINFO;
    request[HEADER + 12..HEADER + 16].copy_from_slice(&show.to_ne_bytes());
    request[HEADER + 16..HEADER + 24].fill(0xff);
    request
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unix_diag: {what}"))
}

/// Adds the sockets of one datagram of the answer to request `sequence` to `sockets`; true
/// once that dump is done. Messages of other requests are skipped.
fn parse_dump(
    mut datagram: &[u8],
    sequence: u32,
    sockets: &mut Vec<UnixSocket>,
) -> io::Result<bool> {
    while datagram.len() >= HEADER {
        let length = u32_at(datagram, 0).unwrap_or(0) as usize;
        let kind = u16_at(datagram, 4).unwrap_or(0);
        if length < HEADER || length > datagram.len() {
            return Err(malformed("bad message length"));
        }
        if u32_at(datagram, 8) == Some(sequence) {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = u32_at(datagram, HEADER).map(|e| -(e as i32)).unwrap_or(0);
                    return Err(io::Error::from_raw_os_error(errno));
                }
                SOCK_DIAG_BY_FAMILY => sockets.push(parse_socket(&datagram[HEADER..length])?),
                _ => {}
            }
        }
        datagram = datagram.get((length + 3) & !3..).unwrap_or_default();
    }
    Ok(false)
}

/// One `unix_diag_msg` and its attributes.
fn parse_socket(message: &[u8]) -> io::Result<UnixSocket> {
    if message.len() < DIAG_MSG {
        return Err(malformed("short socket message"));
    }
    let mut socket = UnixSocket {
        inode: u32_at(message, 4).unwrap_or(0),
        kind: message[1],
        state: message[2],
        peer: None,
        pending_senders: Vec::new(),
        receive_queue: 0,
        sent_queued: 0,
    };
    let mut attributes = &message[DIAG_MSG..];
    while attributes.len() >= 4 {
        let length = u16_at(attributes, 0).unwrap_or(0) as usize;
        let kind = u16_at(attributes, 2).unwrap_or(0) & NLA_TYPE_MASK;
        if length < 4 || length > attributes.len() {
            return Err(malformed("bad attribute length"));
        }
        let value = &attributes[4..length];
        match kind {
            UNIX_DIAG_PEER => socket.peer = u32_at(value, 0),
            UNIX_DIAG_ICONS => {
                socket.pending_senders = (0..value.len() / 4)
                    .filter_map(|i| u32_at(value, i * 4))
                    .collect()
            }
            UNIX_DIAG_RQLEN => socket.receive_queue = u32_at(value, 0).unwrap_or(0),
            UNIX_DIAG_MEMINFO => {
                socket.sent_queued = u32_at(value, SK_MEMINFO_WMEM_ALLOC * 4).unwrap_or(0)
            }
            _ => {}
        }
        attributes = attributes.get((length + 3) & !3..).unwrap_or_default();
    }
    Ok(socket)
}

/// What `sockets` keep queued: what each sent and is still charged for, plus an estimate of
/// the receive queues of stream and seqpacket sockets whose sender is not listed any more
/// (1 KiB a byte, at most `sender_cap`, at least the bytes themselves), plus `sender_cap` for
/// each connection not yet accepted whose sender is gone (its queue shows nowhere).
pub(crate) fn queued_bytes(sockets: &[UnixSocket], sender_cap: u64) -> u64 {
    let listed: BTreeSet<u32> = sockets.iter().map(|s| s.inode).collect();
    sockets
        .iter()
        .map(|s| {
            let orphaned = matches!(s.kind, SOCK_STREAM | SOCK_SEQPACKET)
                && s.state != TCP_LISTEN
                && !s.peer.is_some_and(|peer| listed.contains(&peer));
            let queue = u64::from(s.receive_queue);
            let sender_gone = if orphaned {
                (queue * BUFFER_PER_BYTE).min(sender_cap).max(queue)
            } else {
                0
            };
            let pending_gone = s
                .pending_senders
                .iter()
                .filter(|sender| !listed.contains(sender))
                .count() as u64;
            u64::from(s.sent_queued) + sender_gone + pending_gone * sender_cap
        })
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(inode: u32, kind: u8, peer: Option<u32>, receive: u32, sent: u32) -> UnixSocket {
        UnixSocket {
            inode,
            kind,
            state: 1,
            peer,
            pending_senders: Vec::new(),
            receive_queue: receive,
            sent_queued: sent,
        }
    }

    #[test]
    fn data_is_counted_once_at_its_sender_or_at_its_receiver_once_the_sender_is_gone() {
        // A pair 1 <-> 2: 1 sent 9000 bytes (at full size) that 2 holds as 8192 bytes.
        let cap = 1 << 20;
        let pair = [
            socket(1, SOCK_STREAM, Some(2), 0, 9000),
            socket(2, SOCK_STREAM, Some(1), 8192, 1),
        ];
        assert_eq!(queued_bytes(&pair, cap), 9001);
        // The sender closed: only the receiver is listed, with its queue in bytes, which may
        // be as many buffers of one byte (1 KiB each), up to what a sender can queue.
        let orphan = [socket(2, SOCK_STREAM, Some(1), 100, 1)];
        assert_eq!(queued_bytes(&orphan, cap), 100 * 1024 + 1);
        let orphan = [socket(2, SOCK_STREAM, Some(1), 8192, 1)];
        assert_eq!(queued_bytes(&orphan, cap), cap + 1);
        let orphan = [socket(2, SOCK_SEQPACKET, None, 3 << 20, 0)];
        assert_eq!(queued_bytes(&orphan, cap), 3 << 20);
        // A datagram receiver's queue figure is its first datagram only: never added.
        let datagram = [socket(3, 2, None, 5000, 0)];
        assert_eq!(queued_bytes(&datagram, cap), 0);
        // A listening socket's queue is a backlog of connections.
        let mut listening = socket(4, SOCK_STREAM, None, 3, 0);
        listening.state = TCP_LISTEN;
        assert_eq!(queued_bytes(&[listening.clone()], cap), 0);
        // Of its three pending connections, one sender is open (and counts itself) and two
        // are gone: those may have queued as much as a sender can.
        listening.pending_senders = vec![5, 0, 77];
        let client = socket(5, SOCK_STREAM, None, 0, 300);
        assert_eq!(queued_bytes(&[listening, client], cap), 300 + 2 * cap);
    }

    /// One answer message to request `sequence` as the kernel writes it.
    fn answer(sequence: u32, inode: u32, peer: u32, receive: u32, wmem: u32) -> Vec<u8> {
        let mut body = vec![AF_UNIX, SOCK_STREAM, 1, 0];
        body.extend_from_slice(&inode.to_ne_bytes());
        body.extend_from_slice(&[0xff; 8]);
        let mut attribute = |kind: u16, value: &[u8]| {
            body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(value);
        };
        attribute(UNIX_DIAG_PEER, &peer.to_ne_bytes());
        let rqlen: Vec<u8> = [receive, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        attribute(UNIX_DIAG_RQLEN, &rqlen);
        let meminfo: Vec<u8> = [0, 0, wmem, 0, 0, 0, 0, 0, 0]
            .iter()
            .flat_map(|v: &u32| v.to_ne_bytes())
            .collect();
        attribute(UNIX_DIAG_MEMINFO, &meminfo);
        let mut message = Vec::new();
        message.extend_from_slice(&((HEADER + body.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        message.extend_from_slice(&[0; 2]);
        message.extend_from_slice(&sequence.to_ne_bytes());
        message.extend_from_slice(&[0; 4]);
        message.extend_from_slice(&body);
        message
    }

    #[test]
    fn a_dump_is_read_until_done_and_bad_lengths_are_errors() {
        let mut datagram = answer(5, 7, 8, 100, 4096);
        datagram.extend(answer(5, 8, 7, 0, 1));
        // Left over from an earlier request that failed half way: skipped.
        datagram.extend(answer(4, 9, 0, 0, 1 << 30));
        let mut sockets = Vec::new();
        assert!(!parse_dump(&datagram, 5, &mut sockets).unwrap());
        assert_eq!(sockets.len(), 2);
        assert_eq!(
            sockets[0],
            UnixSocket {
                inode: 7,
                kind: SOCK_STREAM,
                state: 1,
                peer: Some(8),
                pending_senders: Vec::new(),
                receive_queue: 100,
                sent_queued: 4096
            }
        );
        let mut done = vec![0u8; HEADER];
        done[0..4].copy_from_slice(&(HEADER as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert!(
            !parse_dump(&done, 6, &mut sockets).unwrap(),
            "another dump's end"
        );
        assert!(parse_dump(&done, 5, &mut sockets).unwrap());
        let mut bad = answer(5, 9, 1, 0, 0);
        bad[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_dump(&bad, 5, &mut Vec::new()).is_err());
        // A last message whose length is not a multiple of 4 ends the datagram, no panic.
        let mut odd = vec![0u8; HEADER + 1];
        odd[0..4].copy_from_slice(&((HEADER + 1) as u32).to_ne_bytes());
        odd[4..6].copy_from_slice(&0x99u16.to_ne_bytes());
        odd[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert!(!parse_dump(&odd, 5, &mut Vec::new()).unwrap());
    }

    #[test]
    fn a_real_namespace_shows_what_its_sockets_keep_queued() {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // A process in a network namespace of its own sends 100,000 bytes over a socket
        // pair nobody reads, then closes the sending end.
        let script = "import socket, sys\na, b = socket.socketpair()\na.sendall(b'x' * 100000)\n\
print('sent', flush=True)\nsys.stdin.readline()\na.close()\nprint('closed', flush=True)\n\
sys.stdin.readline()\nl = socket.socket(socket.AF_UNIX)\nl.bind('\\0hako-diag-test')\nl.listen(8)\n\
c = socket.socket(socket.AF_UNIX)\nc.connect('\\0hako-diag-test')\nc.sendall(b'y' * 1000)\nc.close()\n\
print('pending', flush=True)\nsys.stdin.readline()";
        let mut child = Command::new("unshare")
            .args(["--net", "/usr/bin/python3", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut input = child.stdin.take().unwrap();
        let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line, "sent\n");
        // As the lock-down does in a run: the socket is made in the namespace (here by a
        // thread that joins it; unshare execs python3 in place, so the pid is the child's).
        let namespace = std::fs::File::open(format!("/proc/{}/ns/net", child.id())).unwrap();
        let socket = std::thread::spawn(move || {
            nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            socket_here().unwrap()
        })
        .join()
        .unwrap();
        assert!(is_diag_socket(socket.as_fd()));
        let diag = UnixDiag::new(socket);
        let sent = diag.queued_bytes().unwrap();
        writeln!(input).unwrap();
        line.clear();
        output.read_line(&mut line).unwrap();
        assert_eq!(line, "closed\n");
        let orphaned = diag.queued_bytes().unwrap();
        writeln!(input).unwrap();
        line.clear();
        output.read_line(&mut line).unwrap();
        assert_eq!(line, "pending\n");
        let pending = diag.queued_bytes().unwrap();
        writeln!(input).unwrap();
        child.wait().unwrap();
        // Counted once (at full buffer size while the sender is open), never twice; once
        // the sender is closed, as much as a sender can have queued.
        assert!((100_000..150_000).contains(&sent), "sender open: {sent}");
        let cap = sender_cap();
        assert!(
            (cap..=cap + 1).contains(&orphaned),
            "sender closed: {orphaned}"
        );
        // A connection not yet accepted whose sender closed: as much as a sender can queue.
        let added = pending - orphaned;
        assert!((cap..=cap + 1).contains(&added), "pending: {added}");
    }
}
