//! The supervisor against a peer that breaks the protocol: a real process stands in for the
//! run (it is what gets killed), a socket pair for its control channel.

use super::*;
use crate::helper::seqpacket_pair;
use nix::unistd::pipe2;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

fn limits() -> Limits {
    Limits {
        memory_bytes: 0,
        pids: 0,
        tmp_bytes: 0,
        output_bytes: 1 << 20,
        timeout_ms: 20_000,
        nofile: 64,
        cpu_percent: 0,
    }
}

/// Supervises a `sleep` whose channel is in `receiver`'s state after `peer` sent `message`.
fn supervise_after(
    receiver: Receiver,
    message: Message,
) -> (JailOutcome, std::process::ExitStatus) {
    let mut run = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (ours, theirs) = seqpacket_pair().unwrap();
    let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    control::send(theirs.as_fd(), &message, &[]).unwrap();
    let limits = limits();
    let watch = Watch {
        limits: &limits,
        mode: SeccompMode::Enforce,
        target: Pid::from_raw(run.id() as i32),
        started: Instant::now(),
        memory_guard: None,
    };
    let channel = Supervised {
        control: &ours,
        receiver,
        listener: None,
        egress: None,
    };
    // The output pipes close once the run is gone (the test holds their write ends).
    let closer = std::thread::spawn(move || {
        let status = run.wait().unwrap();
        drop((out_w, err_w, theirs));
        status
    });
    let outcome = supervise(&watch, channel, out_r, err_r).unwrap();
    // A run that ended normally is killed here (the child is not reaped before the join).
    let _ = kill(watch.target, Signal::SIGKILL);
    (outcome, closer.join().unwrap())
}

fn running() -> Receiver {
    let mut r = Receiver::zygote_child();
    r.accept(control::Kind::Egress).unwrap();
    r.accept(control::Kind::Ready).unwrap();
    r.handed_over().unwrap();
    r
}

#[test]
fn any_message_but_exited_after_run_kills_the_run_as_tampering() {
    let forged = [
        Message::Ready,
        Message::Egress,
        Message::Go,
        Message::Run,
        Message::Error("forged".into()),
        Message::Fork(b"{}".to_vec()),
        Message::Settings(b"{}".to_vec()),
        Message::ZygoteReady(Vec::new()),
    ];
    for message in forged {
        let kind = message.kind();
        let (outcome, status) = supervise_after(running(), message);
        assert!(outcome.tampered, "{kind}: {outcome:?}");
        let failure = outcome.failure.unwrap_or_default();
        assert!(failure.starts_with(TAMPERED), "{kind}: {failure}");
        assert_eq!(outcome.signal, Some(libc::SIGKILL), "{kind}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{kind}: the run was not killed"
        );
    }
}

#[test]
fn exited_from_the_reaper_ends_the_run_normally() {
    let exit = ExitStatus {
        code: 3,
        ..Default::default()
    };
    let (outcome, _) = supervise_after(running(), Message::Exited(exit));
    assert!(!outcome.tampered);
    assert_eq!(outcome.exit_code, Some(3));
    assert!(outcome.confined);
}

#[test]
fn a_second_ready_on_a_spawn_channel_is_tampering() {
    let mut r = Receiver::jail();
    r.accept(control::Kind::Ready).unwrap();
    let (outcome, _) = supervise_after(r, Message::Ready);
    assert!(outcome.tampered, "{outcome:?}");
}

#[test]
fn a_report_names_a_bounded_number_of_distinct_syscalls() {
    let mut blocked = BTreeMap::new();
    for nr in 0x4000_0000..0x4000_0000 + 10_000u32 {
        count_blocked(&mut blocked, nr);
    }
    count_blocked(&mut blocked, 0x4000_0000);
    assert_eq!(blocked.len(), seccomp::MAX_DISTINCT_BLOCKED + 1);
    assert_eq!(blocked[&0x4000_0000], 2);
    assert_eq!(
        blocked[&seccomp::OTHER_SYSCALLS],
        10_000 - seccomp::MAX_DISTINCT_BLOCKED as u64
    );
}
