//! The jail helper (`hako __jail`): a single-threaded process that builds one run's sandbox,
//! supervises it, and reports a [`JailOutcome`].
//!
//! Process tree of one run:
//! ```text
//! helper (host namespaces, privileged)      supervises: output, timeout, seccomp notifications
//!  └─ init (pid 1 of the run's namespaces)  builds the root, then only reaps
//!      └─ program (pid 2)                   rlimits, no_new_privs, Landlock, caps dropped,
//!                                           seccomp, then execs the interpreter
//! ```
//! When init exits, the kernel kills everything else in the run's pid namespace.

use crate::cgroup::{CgroupLimits, Cgroups, RunCgroup};
use crate::mounts::{self, RootPlan};
use crate::lockdown::{self, CgroupCoverage, LockDown, LockDownError};
use crate::protocol;
use crate::seccomp::{self, notify};
use crate::spec::{
    BlockedSyscall, JailOutcome, JailSpec, NetworkMode, SeccompMode, JAIL_GID, JAIL_UID,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, read, write, Pid};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("read the run request: {0}")]
    Request(#[from] protocol::ProtocolError),
    #[error("create {what}: {source}")]
    Channel { what: &'static str, source: Errno },
    #[error("create the run's namespaces (clone): {0}; check `hako doctor`")]
    Clone(Errno),
    #[error("write {path}: {source}")]
    IdMap { path: PathBuf, source: io::Error },
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("build the seccomp policy: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("jail setup failed: {0}")]
    Setup(String),
    #[error("supervise the run: {0}")]
    Supervise(Errno),
}

/// Entry point of `hako __jail`. Reads the request on stdin, writes the outcome on stdout.
pub fn main() -> i32 {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only changes this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let outcome = match protocol::decode_request(io::stdin().lock()) {
        Ok((spec, code)) => run(&spec, &code).unwrap_or_else(|err| JailOutcome {
            setup_error: Some(err.to_string()),
            ..Default::default()
        }),
        Err(err) => JailOutcome { setup_error: Some(err.to_string()), ..Default::default() },
    };
    match protocol::encode_outcome(&outcome, io::stdout().lock()) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("hako jail: cannot report the outcome: {err}");
            1
        }
    }
}

/// Messages on the control socket between the helper and the jail.
mod msg {
    /// helper → init: the id maps and cgroup are in place.
    pub const GO: u8 = b'G';
    /// jail → helper: setup failed, text follows.
    pub const ERROR: u8 = b'E';
    /// program → helper: about to exec; carries the seccomp listener fd (if any).
    pub const READY: u8 = crate::lockdown::READY;
    /// init → helper: the program ended; i32 exit code and i32 signal follow.
    pub const EXITED: u8 = b'X';
}

struct Pipes {
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    control: (OwnedFd, OwnedFd),
}

fn channels() -> Result<Pipes, HelperError> {
    let pipe = |what| pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| HelperError::Channel { what, source });
    let control = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| HelperError::Channel { what: "control socket", source })?;
    Ok(Pipes { stdout: pipe("stdout pipe")?, stderr: pipe("stderr pipe")?, control })
}

fn run(spec: &JailSpec, code: &[u8]) -> Result<JailOutcome, HelperError> {
    let started = Instant::now();
    let use_listener = notify::user_notif_supported();
    let program = seccomp::build_program(
        &spec.language,
        &spec.seccomp.extra_allowed,
        spec.seccomp.mode,
        use_listener,
    )?;

    let cgroups = Cgroups::detect(Path::new("/sys/fs/cgroup"));
    let run_cgroup = if nix::unistd::geteuid().is_root() {
        let name = format!("run-{}-{}", std::process::id(), spec.ids.host_uid);
        let limits = CgroupLimits { memory_bytes: spec.limits.memory_bytes, pids: spec.limits.pids };
        match cgroups.create_run(&name, &limits) {
            Ok(cg) => Some(cg),
            Err(err) if spec.insecure => {
                eprintln!("hako jail: running without cgroup limits: {err}");
                None
            }
            Err(err) if cgroups.support().version.is_none() => {
                let _ = err;
                None
            }
            Err(err) => return Err(err.into()),
        }
    } else {
        None
    };
    let support = cgroups.support();
    let cgroup_limits = CgroupCoverage {
        memory: run_cgroup.is_some() && support.memory,
        pids: run_cgroup.is_some() && support.pids,
    };

    let result = spawn_and_supervise(spec, code, &program, use_listener, cgroup_limits, run_cgroup.as_ref(), started);
    if let Some(cg) = run_cgroup {
        let stats = cg.stats();
        let removed = cg.remove();
        let mut outcome = result?;
        let killed = outcome.signal == Some(libc::SIGKILL);
        outcome.oom_killed |= stats.oom_kills > 0
            || (killed && stats.memory_limit_hits > 0 && !outcome.timed_out && !outcome.output_limited);
        outcome.pids_limited |= stats.pids_limit_hits > 0;
        if let Some(peak) = stats.peak_memory_bytes {
            outcome.peak_memory_bytes = peak;
        }
        if let Err(err) = removed {
            eprintln!("hako jail: {err}");
        }
        Ok(outcome)
    } else {
        result
    }
}

fn spawn_and_supervise(
    spec: &JailSpec,
    code: &[u8],
    program: &[libc::sock_filter],
    use_listener: bool,
    coverage: CgroupCoverage,
    cgroup: Option<&RunCgroup>,
    started: Instant,
) -> Result<JailOutcome, HelperError> {
    let pipes = channels()?;
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if spec.network == NetworkMode::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: this process is single-threaded (the helper never starts threads), so a
    // fork-like clone with no new stack is sound: the child continues on a copy of our stack
    // and only this thread existed. The child never returns from `jail_init`.
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if pid < 0 {
        return Err(HelperError::Clone(Errno::last()));
    }
    if pid == 0 {
        drop((pipes.stdout.0, pipes.stderr.0, pipes.control.0));
        let control = pipes.control.1;
        let code = jail_init(spec, code, program, use_listener, coverage, &control, pipes.stdout.1, pipes.stderr.1);
        // SAFETY: _exit is async-signal-safe and ends the child without running the parent's
        // atexit handlers or destructors of copied state.
        unsafe { libc::_exit(code) }
    }
    let init = Pid::from_raw(pid as i32);
    drop((pipes.stdout.1, pipes.stderr.1, pipes.control.1));
    let mut guard = KillOnDrop(Some(init));

    map_ids(init, spec)?;
    if let Some(cg) = cgroup {
        cg.add_pid(init.as_raw())?;
    }
    write(&pipes.control.0, &[msg::GO]).map_err(HelperError::Supervise)?;

    let mut outcome = supervise(spec, init, &pipes.control.0, pipes.stdout.0, pipes.stderr.0, started)?;
    guard.0 = None;
    outcome.wall_ms = started.elapsed().as_millis() as u64;
    Ok(outcome)
}

/// Kills the run's init (and so its whole pid namespace) if supervision bails out early.
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn map_ids(init: Pid, spec: &JailSpec) -> Result<(), HelperError> {
    let proc_dir = PathBuf::from(format!("/proc/{init}"));
    let write_file = |name: &str, text: String| {
        let path = proc_dir.join(name);
        std::fs::write(&path, text).map_err(|source| HelperError::IdMap { path, source })
    };
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (spec.ids.host_uid, spec.ids.host_gid)
    } else {
        // Unprivileged: only our own ids can be mapped, and setgroups must be denied first.
        write_file("setgroups", "deny".into())?;
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    };
    write_file("uid_map", format!("{JAIL_UID} {uid} 1\n"))?;
    write_file("gid_map", format!("{JAIL_GID} {gid} 1\n"))
}

struct Collected {
    data: Vec<u8>,
    open: bool,
}

fn supervise(
    spec: &JailSpec,
    init: Pid,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    started: Instant,
) -> Result<JailOutcome, HelperError> {
    let deadline = started + Duration::from_millis(spec.limits.timeout_ms);
    let cap = spec.limits.output_bytes as usize;
    let mut outcome = JailOutcome::default();
    let mut streams = [Collected { data: Vec::new(), open: true }, Collected { data: Vec::new(), open: true }];
    let mut listener: Option<OwnedFd> = None;
    let mut blocked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut control_open = true;
    let mut status: Option<(i32, i32)> = None;
    let mut killed = false;

    loop {
        let program_done = status.is_some() || (!control_open && killed);
        if program_done && !streams[0].open && !streams[1].open {
            break;
        }
        if !control_open && !streams[0].open && !streams[1].open {
            break;
        }
        let now = Instant::now();
        if now >= deadline && !killed {
            outcome.timed_out = status.is_none();
            let _ = kill(init, Signal::SIGKILL);
            killed = true;
        }
        let wait = if killed {
            PollTimeout::from(200u16)
        } else {
            let left = deadline.saturating_duration_since(now).as_millis().min(60_000) as u16;
            PollTimeout::from(left.max(1))
        };
        let mut fds = Vec::with_capacity(4);
        let mut roles = Vec::with_capacity(4);
        if control_open {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Control);
        }
        for (i, fd) in [&stdout, &stderr].into_iter().enumerate() {
            if streams[i].open {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                roles.push(Role::Stream(i));
            }
        }
        if let Some(l) = &listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Listener);
        }
        let ready = match poll(&mut fds, wait) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(HelperError::Supervise(err)),
        };
        if ready == 0 {
            if killed {
                // Killed and nothing more arrives: everything in the namespace is gone.
                break;
            }
            continue;
        }
        let events: Vec<(Role, PollFlags)> = fds
            .iter()
            .zip(roles.iter())
            .filter_map(|(fd, role)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*role, r)))
            .collect();
        drop(fds);
        for (role, revents) in events {
            match role {
                Role::Stream(i) => {
                    let fd = if i == 0 { &stdout } else { &stderr };
                    let total: usize = streams.iter().map(|s| s.data.len()).sum();
                    match read_some(fd.as_raw_fd(), &mut streams[i].data, cap.saturating_sub(total) + 1) {
                        Ok(0) => streams[i].open = false,
                        Ok(_) => {
                            let total: usize = streams.iter().map(|s| s.data.len()).sum();
                            if total > cap {
                                let over = total - cap;
                                let keep = streams[i].data.len() - over;
                                streams[i].data.truncate(keep);
                                outcome.output_limited = true;
                                if !killed {
                                    let _ = kill(init, Signal::SIGKILL);
                                    killed = true;
                                }
                                streams[i].open = false;
                            }
                        }
                        Err(Errno::EINTR | Errno::EAGAIN) => {}
                        Err(_) => streams[i].open = false,
                    }
                    let _ = revents;
                }
                Role::Listener => {
                    if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) && !revents.contains(PollFlags::POLLIN) {
                        listener = None;
                        continue;
                    }
                    if let Some(l) = &listener {
                        handle_notification(l.as_fd(), spec.seccomp.mode, &mut blocked);
                    }
                }
                Role::Control => match receive_control(control)? {
                    Control::Closed => control_open = false,
                    Control::Error(text) => {
                        let _ = kill(init, Signal::SIGKILL);
                        reap(init);
                        return Err(HelperError::Setup(text));
                    }
                    Control::Ready(fd) => listener = fd,
                    Control::Exited(code, signal) => status = Some((code, signal)),
                    Control::Other => {}
                },
            }
        }
    }

    let usage = reap(init);
    outcome.cpu_ms = usage.0;
    outcome.peak_memory_bytes = usage.1;
    if let Some((code, signal)) = status {
        if signal != 0 {
            outcome.signal = Some(signal);
        } else {
            outcome.exit_code = Some(code);
        }
    } else {
        outcome.signal = Some(libc::SIGKILL);
    }
    outcome.blocked = blocked
        .into_iter()
        .map(|(nr, count)| BlockedSyscall { nr, name: seccomp::syscall_name(nr), count })
        .collect();
    let [out, err] = streams;
    outcome.stdout = out.data;
    outcome.stderr = err.data;
    Ok(outcome)
}

#[derive(Clone, Copy)]
enum Role {
    Control,
    Stream(usize),
    Listener,
}

fn read_some(fd: RawFd, into: &mut Vec<u8>, max: usize) -> Result<usize, Errno> {
    let mut buf = [0u8; 65536];
    let want = buf.len().min(max.max(1));
    let n = read(fd, &mut buf[..want])?;
    into.extend_from_slice(&buf[..n]);
    Ok(n)
}

fn handle_notification(listener: BorrowedFd<'_>, mode: SeccompMode, blocked: &mut BTreeMap<u32, u64>) {
    let Ok(note) = notify::receive(listener) else { return };
    let nr = note.nr as u32;
    *blocked.entry(nr).or_insert(0) += 1;
    let _ = match mode {
        SeccompMode::Learn => notify::respond_continue(listener, note.id),
        SeccompMode::Enforce => notify::respond_errno(listener, note.id, libc::EPERM),
    };
}

enum Control {
    Closed,
    Error(String),
    Ready(Option<OwnedFd>),
    Exited(i32, i32),
    Other,
}

fn receive_control(control: &OwnedFd) -> Result<Control, HelperError> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let received = match recvmsg::<()>(control.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(m) => m,
        Err(Errno::EINTR | Errno::EAGAIN) => return Ok(Control::Other),
        Err(err) => return Err(HelperError::Supervise(err)),
    };
    let mut fd = None;
    if let Ok(cmsgs) = received.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel just installed this descriptor in our table for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
    }
    let len = received.bytes;
    let data = &buf[..len];
    Ok(match data.first() {
        None => Control::Closed,
        Some(&msg::ERROR) => Control::Error(String::from_utf8_lossy(&data[1..]).into_owned()),
        Some(&msg::READY) => Control::Ready(fd),
        Some(&msg::EXITED) if len >= 9 => {
            let code = i32::from_le_bytes([data[1], data[2], data[3], data[4]]);
            let signal = i32::from_le_bytes([data[5], data[6], data[7], data[8]]);
            Control::Exited(code, signal)
        }
        Some(_) => Control::Other,
    })
}

/// Waits for init; returns (cpu ms of the whole run, max RSS in bytes).
fn reap(init: Pid) -> (u64, u64) {
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
    (ms(usage.ru_utime) + ms(usage.ru_stime), usage.ru_maxrss.max(0) as u64 * 1024)
}

// ---------------------------------------------------------------------------------------
// Inside the jail. Everything below runs in the cloned child; errors are sent to the helper
// as text and the child exits.

#[derive(Debug, thiserror::Error)]
enum JailError {
    #[error("wait for the helper: {0}")]
    Sync(Errno),
    #[error("set the run identity: {0}")]
    Identity(String),
    #[error("create the cgroup namespace: {0}")]
    CgroupNs(Errno),
    #[error("set the hostname: {0}")]
    Hostname(Errno),
    #[error("bring up loopback: {0}")]
    Loopback(Errno),
    #[error("{0}")]
    Mount(#[from] mounts::MountError),
    #[error("fork the program: {0}")]
    Fork(Errno),
    #[error("open the interpreter {path}: {source}")]
    Interpreter { path: PathBuf, source: Errno },
    #[error("{0}")]
    LockDown(#[from] LockDownError),
    #[error("exec {path}: {source}")]
    Exec { path: PathBuf, source: Errno },
    #[error("bad argument {0:?}: contains a NUL byte")]
    Nul(String),
}

#[allow(clippy::too_many_arguments)]
fn jail_init(
    spec: &JailSpec,
    code: &[u8],
    program: &[libc::sock_filter],
    use_listener: bool,
    coverage: CgroupCoverage,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> i32 {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only changes this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let program_pid = match prepare_jail(spec, code, control) {
        Ok(()) => match fork_program(spec, program, use_listener, coverage, control, stdout, stderr) {
            Ok(pid) => pid,
            Err(err) => return report_error(control, &err),
        },
        Err(err) => return report_error(control, &err),
    };
    // Init keeps no privileges while it waits.
    let _ = lockdown::drop_all_caps();
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes this process's dumpable flag, which
    // keeps the program from reading init's memory through /proc.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let (code, signal) = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program_pid => break (code, 0),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program_pid => break (0, sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break (0, libc::SIGKILL),
        }
    };
    let mut message = vec![msg::EXITED];
    message.extend_from_slice(&code.to_le_bytes());
    message.extend_from_slice(&signal.to_le_bytes());
    let _ = write(control, &message);
    0
}

fn report_error(control: &OwnedFd, err: &JailError) -> i32 {
    let mut message = vec![msg::ERROR];
    message.extend_from_slice(err.to_string().as_bytes());
    let _ = write(control, &message);
    126
}

fn prepare_jail(spec: &JailSpec, code: &[u8], control: &OwnedFd) -> Result<(), JailError> {
    let mut go = [0u8; 1];
    match read(control.as_raw_fd(), &mut go) {
        Ok(1) if go[0] == msg::GO => {}
        Ok(_) => return Err(JailError::Sync(Errno::EPIPE)),
        Err(err) => return Err(JailError::Sync(err)),
    }
    become_run_user()?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(JailError::CgroupNs)?;
    nix::unistd::sethostname("hako").map_err(JailError::Hostname)?;
    if spec.network == NetworkMode::None {
        loopback_up()?;
    }
    mounts::build_root(&RootPlan {
        mountpoint: &spec.root_mountpoint,
        ro_binds: &spec.ro_binds,
        mapped_binds: &spec.mapped_binds,
        code_path: &spec.code_path,
        code,
        tmp_bytes: spec.limits.tmp_bytes,
        uid: JAIL_UID,
        gid: JAIL_GID,
    })?;
    Ok(())
}

/// Switches to the run's in-jail uid/gid while keeping the namespace capabilities needed
/// to build the root (they are dropped before the program starts).
fn become_run_user() -> Result<(), JailError> {
    let id = |e: Errno| JailError::Identity(e.to_string());
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().as_raw() != JAIL_UID {
        // setgroups is denied in unprivileged user namespaces; there are no groups to clear.
        let _ = nix::unistd::setgroups(&[]);
    }
    let gid = nix::unistd::Gid::from_raw(JAIL_GID);
    let uid = nix::unistd::Uid::from_raw(JAIL_UID);
    nix::unistd::setresgid(gid, gid, gid).map_err(id)?;
    // SAFETY: PR_SET_KEEPCAPS only changes this process's securebits for the next setuid.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    nix::unistd::setresuid(uid, uid, uid).map_err(id)?;
    let permitted = caps::read(None, caps::CapSet::Permitted).map_err(|e| JailError::Identity(e.to_string()))?;
    caps::set(None, caps::CapSet::Effective, &permitted).map_err(|e| JailError::Identity(e.to_string()))
}

fn loopback_up() -> Result<(), JailError> {
    // SAFETY: socket() returns a new descriptor or -1; we own and close it below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(JailError::Loopback(Errno::last()));
    }
    // SAFETY: sock is a descriptor we just created and nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(JailError::Loopback(Errno::last()));
    }
    // SAFETY: ifru_flags is the active union member after SIOCGIFFLAGS.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(JailError::Loopback(Errno::last()));
    }
    Ok(())
}

fn fork_program(
    spec: &JailSpec,
    program: &[libc::sock_filter],
    use_listener: bool,
    coverage: CgroupCoverage,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Pid, JailError> {
    // Everything the program needs is prepared before fork; the child only makes syscalls.
    let argv = cstrings(std::iter::once(spec.interpreter.to_string_lossy().into_owned()).chain(spec.args.iter().cloned()))?;
    let envp = cstrings(spec.env.iter().map(|(k, v)| format!("{k}={v}")))?;
    // SAFETY: init is single-threaded, so fork is sound.
    match unsafe { nix::unistd::fork() }.map_err(JailError::Fork)? {
        nix::unistd::ForkResult::Parent { child } => {
            drop((stdout, stderr));
            Ok(child)
        }
        nix::unistd::ForkResult::Child => {
            let err = exec_program(spec, program, use_listener, coverage, control, stdout, stderr, &argv, &envp);
            report_error(control, &err);
            // SAFETY: _exit ends the child immediately; nothing else must run here.
            unsafe { libc::_exit(127) }
        }
    }
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, JailError> {
    items.map(|s| CString::new(s.clone()).map_err(|_| JailError::Nul(s))).collect()
}

#[allow(clippy::too_many_arguments)]
fn exec_program(
    spec: &JailSpec,
    program: &[libc::sock_filter],
    use_listener: bool,
    coverage: CgroupCoverage,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    argv: &[CString],
    envp: &[CString],
) -> JailError {
    match confine_and_exec(spec, program, use_listener, coverage, control, stdout, stderr, argv, envp) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

enum Never {}

#[allow(clippy::too_many_arguments)]
fn confine_and_exec(
    spec: &JailSpec,
    program: &[libc::sock_filter],
    use_listener: bool,
    coverage: CgroupCoverage,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    argv: &[CString],
    envp: &[CString],
) -> Result<Never, JailError> {
    // SAFETY: PR_SET_PDEATHSIG only changes this process's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let devnull = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
        .map_err(|e| JailError::Interpreter { path: "/dev/null".into(), source: e })?;
    for (fd, target) in [(devnull, 0), (stdout.as_raw_fd(), 1), (stderr.as_raw_fd(), 2)] {
        // SAFETY: dup2 onto the standard descriptors; both are valid open descriptors.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(JailError::Interpreter { path: "/dev/stdio".into(), source: Errno::last() });
        }
    }
    drop((stdout, stderr));

    let interpreter = nix::fcntl::open(
        &spec.interpreter,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| JailError::Interpreter { path: spec.interpreter.clone(), source })?;
    // SAFETY: dup3 onto the fixed descriptor the seccomp policy allows execveat from.
    if unsafe { libc::dup3(interpreter, seccomp::policy::EXEC_FD, libc::O_CLOEXEC) } < 0 {
        return Err(JailError::Interpreter { path: spec.interpreter.clone(), source: Errno::last() });
    }
    lockdown::lock_down(
        &LockDown {
            language: &spec.language,
            limits: &spec.limits,
            coverage,
            seccomp: program,
            use_listener,
            insecure: spec.insecure,
        },
        control.as_raw_fd(),
        &[seccomp::policy::EXEC_FD],
    )?;

    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: argv/envp are NUL-terminated arrays of pointers to CStrings that outlive the
    // call; the empty path with AT_EMPTY_PATH executes the file behind EXEC_FD.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            seccomp::policy::EXEC_FD,
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(JailError::Exec { path: spec.interpreter.clone(), source: Errno::last() })
}
