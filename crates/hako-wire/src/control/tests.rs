use super::*;
use std::os::fd::AsFd;

fn sample(kind: Kind) -> Message {
    match kind {
        Kind::Go => Message::Go,
        Kind::Egress => Message::Egress,
        Kind::Ready => Message::Ready,
        Kind::Run => Message::Run,
        Kind::Error => Message::Error("boom".into()),
        Kind::Exited => Message::Exited(ExitStatus {
            code: 3,
            signal: 0,
            cpu_ms: 7,
            max_rss_bytes: 4096,
        }),
        Kind::Fork => Message::Fork(b"{}".to_vec()),
        Kind::Forked => Message::Forked,
        Kind::Settings => Message::Settings(b"{}".to_vec()),
        Kind::ZygoteReady => Message::ZygoteReady(vec!["numpy: ImportError".into()]),
        Kind::Worker => Message::Worker,
    }
}

/// Every state each channel can be in, with how to get there.
fn states(channel: Channel) -> Vec<(State, Receiver)> {
    let fresh = match channel {
        Channel::Jail => Receiver::jail(),
        Channel::ZygoteChild => Receiver::zygote_child(),
        Channel::Zygote => Receiver::zygote(),
    };
    let mut out = vec![(fresh.state(), fresh)];
    if channel == Channel::Jail {
        // A proxy-mode jail's helper starts at NETWORKING.
        let mut networking = Receiver::jail_egress();
        out.push((networking.state(), networking));
        networking.accept(Kind::Error).unwrap();
        out.push((networking.state(), networking));
    }
    let mut walk = |steps: &[&dyn Fn(&mut Receiver)]| {
        let mut r = fresh;
        for step in steps {
            step(&mut r);
        }
        out.push((r.state(), r));
    };
    let ready = |r: &mut Receiver| {
        if r.state() == State::Networking {
            r.accept(Kind::Egress).unwrap();
        }
        r.accept(Kind::Ready).unwrap();
    };
    let egress = |r: &mut Receiver| {
        r.accept(Kind::Egress).unwrap();
    };
    let exited = |r: &mut Receiver| {
        r.accept(Kind::Exited).unwrap();
    };
    let run = |r: &mut Receiver| r.handed_over().unwrap();
    let zready = |r: &mut Receiver| {
        r.accept(Kind::ZygoteReady).unwrap();
    };
    let fork = |r: &mut Receiver| r.fork_requested().unwrap();
    match channel {
        Channel::Jail => {
            walk(&[&ready]);
            walk(&[&ready, &exited]);
        }
        Channel::ZygoteChild => {
            walk(&[&egress]);
            walk(&[&ready]);
            walk(&[&ready, &run]);
            walk(&[&ready, &run, &exited]);
        }
        Channel::Zygote => {
            walk(&[&zready]);
            walk(&[&zready, &fork]);
            walk(&[&|r: &mut Receiver| {
                r.accept(Kind::Error).unwrap();
            }]);
        }
    }
    out
}

/// The only (channel, state, message) triples any receiver accepts.
fn expected(channel: Channel, state: State, kind: Kind) -> bool {
    use Channel as C;
    use Kind as K;
    use State as S;
    matches!(
        (channel, state, kind),
        (
            C::Jail | C::ZygoteChild,
            S::Networking,
            K::Egress | K::Error | K::Exited
        ) | (
            C::Jail | C::ZygoteChild,
            S::Confining,
            K::Ready | K::Error | K::Exited
        ) | (C::Jail | C::ZygoteChild, S::Confined, K::Error | K::Exited)
            | (C::ZygoteChild, S::Running, K::Exited)
            | (C::Zygote, S::ZygoteStarting, K::ZygoteReady | K::Error)
            | (C::Zygote, S::ForkRequested, K::Forked | K::Error)
    )
}

/// The states of the three channels: 5 (jail, including Ended twice) + 5 (zygote child) + 4.
const STATES: usize = 14;

#[test]
fn every_message_out_of_its_state_is_rejected_and_changes_nothing() {
    let mut checked = 0;
    for channel in [Channel::Jail, Channel::ZygoteChild, Channel::Zygote] {
        for (state, receiver) in states(channel) {
            for kind in Kind::ALL {
                let mut r = receiver;
                let result = r.accept(kind);
                checked += 1;
                if expected(channel, state, kind) {
                    assert!(
                        result.is_ok(),
                        "{channel:?} {state:?} {kind} must be accepted"
                    );
                } else {
                    assert_eq!(
                        result,
                        Err(OutOfState {
                            channel,
                            state,
                            kind
                        }),
                        "{channel:?} {state:?} {kind} must be refused"
                    );
                    assert_eq!(
                        r.state(),
                        state,
                        "a refused message must not move the state"
                    );
                }
            }
        }
    }
    // Every state of every channel (Ended counted per channel), every message.
    assert_eq!(checked, STATES * Kind::ALL.len());
}

#[test]
fn ready_is_accepted_once_and_never_after_run() {
    let mut r = Receiver::zygote_child();
    assert!(r.accept(Kind::Ready).is_err(), "READY before EGRESS");
    r.accept(Kind::Egress).unwrap();
    assert!(r.accept(Kind::Egress).is_err(), "EGRESS twice");
    r.accept(Kind::Ready).unwrap();
    assert!(r.accept(Kind::Ready).is_err());
    r.handed_over().unwrap();
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Exited) {
        assert!(r.accept(kind).is_err(), "{kind} after RUN");
    }
    assert!(r.handed_over().is_err(), "RUN twice");
    assert_eq!(r.accept(Kind::Exited), Ok(State::Ended));
    for kind in Kind::ALL {
        assert!(r.accept(kind).is_err(), "{kind} after the end");
    }
}

#[test]
fn run_is_refused_before_ready_and_fork_only_when_idle() {
    let mut r = Receiver::zygote_child();
    assert!(r.handed_over().is_err());
    assert!(Receiver::jail().handed_over().is_err());
    let mut z = Receiver::zygote();
    assert!(
        z.fork_requested().is_err(),
        "fork before the zygote is ready"
    );
    z.accept(Kind::ZygoteReady).unwrap();
    z.fork_requested().unwrap();
    assert!(z.fork_requested().is_err(), "two fork requests at once");
    let _ = r;
}

#[test]
fn every_message_round_trips() {
    for kind in Kind::ALL {
        let message = sample(kind);
        let fds = kind.fds().0;
        assert_eq!(Message::decode(&message.encode(), fds).unwrap(), message);
    }
}

#[test]
fn short_exit_report_still_decodes_and_bad_ones_do_not() {
    let mut bytes = vec![b'X'];
    bytes.extend_from_slice(&1i32.to_le_bytes());
    bytes.extend_from_slice(&9i32.to_le_bytes());
    let Message::Exited(status) = Message::decode(&bytes, 0).unwrap() else {
        panic!("not an exit report");
    };
    assert_eq!((status.code, status.signal, status.cpu_ms), (1, 9, 0));
    assert!(Message::decode(&bytes[..5], 0).is_err());
    assert!(Message::decode(b"Rjunk", 0).is_err());
    assert!(Message::decode(b"R", 2).is_ok());
    assert!(Message::decode(b"R", 3).is_err());
    assert!(Message::decode(b"P", 0).is_err());
    assert!(Message::decode(b"P", 1).is_err());
    assert!(Message::decode(b"F{}", 1).is_err());
    assert!(Message::decode(b"?", 0).is_err());
    assert!(Message::decode(b"", 0).is_err());
}

#[test]
fn messages_and_descriptors_cross_a_socket() {
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    send(a.as_fd(), &Message::Forked, &[file.as_fd(), file.as_fd()]).unwrap();
    match receive(&b).unwrap() {
        Received::Message(Message::Forked, fds) => assert_eq!(fds.len(), 2),
        other => panic!("{other:?}"),
    }
    send(a.as_fd(), &sample(Kind::Exited), &[]).unwrap();
    match receive(&b).unwrap() {
        Received::Message(message, fds) => {
            assert_eq!(message, sample(Kind::Exited));
            assert!(fds.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // A READY that carries three descriptors is refused (and they are closed).
    send(
        a.as_fd(),
        &Message::Ready,
        &[file.as_fd(), file.as_fd(), file.as_fd()],
    )
    .unwrap();
    assert!(receive(&b).is_err());
}

#[test]
fn a_message_is_received_whole_at_any_size_and_a_closed_peer_reads_as_closed() {
    use rustix::net::{socketpair, sockopt, AddressFamily, SocketFlags, SocketType};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    sockopt::set_socket_send_buffer_size(&a, 1 << 20).unwrap();
    // Larger than any buffer a first guess would use, then the smallest, in order.
    let settings = Message::Settings(vec![b'x'; 300 << 10]);
    send(a.as_fd(), &settings, &[]).unwrap();
    send(a.as_fd(), &Message::Run, &[]).unwrap();
    match receive(&b).unwrap() {
        Received::Message(message, _) => assert_eq!(message, settings),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        receive(&b).unwrap(),
        Received::Message(Message::Run, _)
    ));
    drop(a);
    assert!(matches!(receive(&b).unwrap(), Received::Closed));
}
