//! The jail's own processes: init (pid 1 of the run's namespaces), which builds the root
//! and reaps, and the program (pid 2), which confines itself and execs the interpreter.
//! Everything here runs in the cloned child; errors go to the helper as an ERROR message and
//! the child exits.

use crate::lockdown::{self, LockDown, LockDownError};
use crate::mounts::{self, RootPlan};
use crate::seccomp::{self};
use crate::spec::{JailSpec, NetworkMode, CODE_FD, JAIL_GID, JAIL_UID, ZYGOTE_FD};
use crate::sys::{Kernel, Prctl};
use hako_wire::control::{self, ExitStatus, Message, Received};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::Plan;

#[derive(Debug, thiserror::Error)]
enum JailError {
    #[error("wait for the helper: {0}")]
    Sync(Errno),
    #[error("set the run identity: {0}")]
    Identity(#[source] LockDownError),
    #[error("create the cgroup namespace: {0}")]
    CgroupNs(Errno),
    #[error("set the hostname: {0}")]
    Hostname(Errno),
    #[error("bring up loopback: {0}")]
    Loopback(Errno),
    #[error("{0}")]
    Egress(#[from] crate::netns::NetnsError),
    #[error("{0}")]
    Mount(#[from] mounts::MountError),
    #[error("fork the program: {0}")]
    Fork(Errno),
    #[error("open /dev/null: {0}")]
    DevNull(#[source] Errno),
    #[error("set up descriptor {target} of the program: {source}")]
    Stdio {
        target: i32,
        #[source]
        source: Errno,
    },
    #[error("open the interpreter {path}: {source}")]
    Interpreter {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("move the interpreter {path} to its exec descriptor: {source}")]
    ExecFd {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("hand the code pipe to the program: {0}")]
    CodeFd(#[source] Errno),
    #[error("move a descriptor out of the way: {0}")]
    RaiseFd(#[source] Errno),
    #[error("{0}")]
    LockDown(#[from] LockDownError),
    #[error("exec {path}: {source}")]
    Exec { path: PathBuf, source: Errno },
    #[error("start the zygote: no control socket")]
    ZygoteSocket,
    #[error("start the zygote: dup2: {0}")]
    ZygoteFd(#[source] Errno),
    #[error("start the zygote: no_new_privs: {0}")]
    ZygoteNoNewPrivs(#[source] Errno),
    #[error("start the zygote: {0}")]
    ZygoteCaps(#[source] caps::errors::CapsError),
    #[error("start the zygote: {0}")]
    ZygoteReady(#[source] control::ControlError),
    #[error("bad argument {0:?}: contains a NUL byte")]
    Nul(String),
    #[error("start a session of its own: {0}")]
    Session(#[source] Errno),
    #[error("make init non-dumpable: {0}")]
    Dumpable(#[source] Errno),
    #[error("set the per-namespace limit {path}: {source}")]
    NamespaceLimit {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn jail_init(
    kernel: &dyn Kernel,
    plan: Plan<'_>,
    code: &[u8],
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    inherit: Option<OwnedFd>,
) -> i32 {
    // The helper blocks SIGTERM for its own use; nothing in the jail inherits that.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let _ = kernel.prctl(Prctl::SetParentDeathSignal(Signal::SIGKILL));
    // Out of the caller's process group: nothing the run signals to its group reaches it.
    let _ = nix::unistd::setsid();
    hide_command_line();
    let program_pid = match prepare_jail(kernel, plan.spec, code, control) {
        Ok(()) => match forbid_dumping(kernel)
            .and_then(|()| fork_program(kernel, plan, control, stdout, stderr, inherit))
        {
            Ok(pid) => pid,
            Err(err) => return report_error(control, &err),
        },
        Err(err) => return report_error(control, &err),
    };
    // Init keeps no privileges and no descriptors (a pipe end it held would keep the
    // program from ever seeing EOF) while it waits.
    lockdown::close_other_fds(&[control.as_raw_fd()]);
    let _ = lockdown::drop_all_caps();
    let (code, signal) = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program_pid => break (code, 0),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program_pid => break (0, sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break (0, libc::SIGKILL),
        }
    };
    let exit = ExitStatus {
        code,
        signal,
        ..Default::default()
    };
    let _ = control::send(control.as_fd(), &Message::Exited(exit), &[]);
    0
}

/// Overwrites this process's argument area, which the run reads as `/proc/1/cmdline`: it
/// held the host path of the hako binary. Best effort (nothing secret is in it). Its name
/// is the one a zygote run's pid 1 has.
fn hide_command_line() {
    let _ = nix::sys::prctl::set_name(c"hako-init");
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // The fields after the command name (which may hold spaces) start with field 3; the
    // argument area is fields 48 and 49 (proc(5)).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let field = |n: usize| rest.split_whitespace().nth(n - 3)?.parse::<usize>().ok();
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return;
    };
    let Some(len) = end.checked_sub(start).filter(|&l| l > 0) else {
        return;
    };
    let name = b"hako-init";
    // SAFETY: [start, end) is this process's own argument area as the kernel reports it: a
    // mapped, writable part of the initial stack. This single-threaded process no longer
    // reads its arguments; the kernel only reads the area to answer /proc/<pid>/cmdline.
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, len);
        std::ptr::copy_nonoverlapping(name.as_ptr(), start as *mut u8, name.len().min(len - 1));
    }
}

fn report_error(control: &OwnedFd, err: &JailError) -> i32 {
    let _ = control::send(control.as_fd(), &Message::Error(err.to_string()), &[]);
    126
}

/// Init's set-up, one step per line: wait for GO (the id maps are written), take the jail's
/// identity, then its cgroup namespace, hostname, loopback, root and per-namespace limits.
fn prepare_jail(
    kernel: &dyn Kernel,
    spec: &JailSpec,
    code: &[u8],
    control: &OwnedFd,
) -> Result<(), JailError> {
    match control::receive(control) {
        Ok(Received::Message(Message::Go, _)) => {}
        _ => return Err(JailError::Sync(Errno::EPIPE)),
    }
    // Without root the namespace denies setgroups: clearing groups is best effort here.
    crate::lockdown::switch_identity(kernel, JAIL_UID, JAIL_GID, false)
        .map_err(JailError::Identity)?;
    // Again: changing the uid cleared the parent-death signal set at clone time. If the
    // helper dies, init (and with it the whole pid namespace) must die too.
    let _ = kernel.prctl(Prctl::SetParentDeathSignal(Signal::SIGKILL));
    // The helper may have died before that: then the control socket is closed.
    let mut probe = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
    if poll(&mut probe, PollTimeout::ZERO).is_ok()
        && probe[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    {
        return Err(JailError::Sync(Errno::EPIPE));
    }
    kernel
        .unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(JailError::CgroupNs)?;
    kernel.sethostname("hako").map_err(JailError::Hostname)?;
    match spec.network {
        NetworkMode::None => kernel.loopback_up().map_err(JailError::Loopback)?,
        // The run's only way out, made before its program exists; the program starts once
        // the guard has it (the helper's second GO).
        NetworkMode::Proxy => {
            kernel.loopback_up().map_err(JailError::Loopback)?;
            crate::netns::hand_over_listener(control.as_fd())?;
            match control::receive(control) {
                Ok(Received::Message(Message::Go, _)) => {}
                _ => return Err(JailError::Sync(Errno::EPIPE)),
            }
        }
        NetworkMode::Host => {}
    }
    mounts::build_root(
        kernel,
        &RootPlan {
            mountpoint: &spec.root_mountpoint,
            ro_binds: &spec.ro_binds,
            mapped_binds: &spec.mapped_binds,
            code_path: &spec.code_path,
            code,
            tmp_bytes: spec.limits.tmp_bytes,
            uid: JAIL_UID,
            gid: JAIL_GID,
        },
    )?;
    limit_namespace_counters(kernel)
}

/// Per-user kernel counters, limited in the run's user namespace (a zygote's run children
/// live in the zygote's, each with its own uid). The host level charges them to the
/// namespace's owner, the run's own host uid; these limits keep one run (or one zygote child)
/// from taking what the next needs. A run cannot raise them: it holds no capability.
const NAMESPACE_LIMITS: [(&str, &str); 5] = [
    ("/proc/sys/user/max_inotify_instances", "32"),
    ("/proc/sys/user/max_inotify_watches", "8192"),
    ("/proc/sys/user/max_fanotify_groups", "0"),
    ("/proc/sys/user/max_fanotify_marks", "0"),
    // No run needs a user namespace of its own (seccomp refuses them too).
    ("/proc/sys/user/max_user_namespaces", "0"),
];

fn limit_namespace_counters(kernel: &dyn Kernel) -> Result<(), JailError> {
    for (path, value) in NAMESPACE_LIMITS {
        match kernel.write_file(Path::new(path), value) {
            Ok(()) => {}
            // An older kernel without this counter.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(JailError::NamespaceLimit { path, source }),
        }
    }
    Ok(())
}

/// Switches to the run's in-jail uid/gid while keeping the namespace capabilities needed
/// to build the root (they are dropped before the program starts).
fn fork_program(
    kernel: &dyn Kernel,
    plan: Plan<'_>,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    inherit: Option<OwnedFd>,
) -> Result<Pid, JailError> {
    let spec = plan.spec;
    // Everything the program needs is prepared before fork; the child only makes syscalls.
    let argv = cstrings(
        std::iter::once(spec.interpreter.to_string_lossy().into_owned())
            .chain(spec.args.iter().cloned()),
    )?;
    let envp = cstrings(spec.env.iter().map(|(k, v)| format!("{k}={v}")))?;
    // SAFETY: init is single-threaded, so fork is sound.
    match unsafe { nix::unistd::fork() }.map_err(JailError::Fork)? {
        nix::unistd::ForkResult::Parent { child } => {
            drop((stdout, stderr, inherit));
            Ok(child)
        }
        nix::unistd::ForkResult::Child => {
            let err = match confine_and_exec(
                kernel, plan, control, stdout, stderr, inherit, &argv, &envp,
            ) {
                Ok(never) => match never {},
                Err(err) => err,
            };
            report_error(control, &err);
            // SAFETY: _exit ends the child immediately; nothing else must run here.
            unsafe { libc::_exit(127) }
        }
    }
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, JailError> {
    items
        .map(|s| CString::new(s.clone()).map_err(|_| JailError::Nul(s)))
        .collect()
}

enum Never {}

#[allow(clippy::too_many_arguments)]
fn confine_and_exec(
    kernel: &dyn Kernel,
    plan: Plan<'_>,
    control: &OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    inherit: Option<OwnedFd>,
    argv: &[CString],
    envp: &[CString],
) -> Result<Never, JailError> {
    let Plan {
        spec,
        filter: program,
        use_listener,
        coverage,
    } = plan;
    let _ = kernel.prctl(Prctl::SetParentDeathSignal(Signal::SIGKILL));
    // Move the descriptors we keep above the fixed numbers (3, 4) they could collide with.
    let control = &raise_fd(control)?;
    let inherit = inherit.map(|fd| raise_fd(&fd)).transpose()?;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(JailError::DevNull)?;
    for (fd, target) in [
        (devnull, 0),
        (stdout.as_raw_fd(), 1),
        (stderr.as_raw_fd(), 2),
    ] {
        kernel
            .dup2(fd, target)
            .map_err(|source| JailError::Stdio { target, source })?;
    }
    drop((stdout, stderr));
    if devnull > 2 {
        // SAFETY: `devnull` is our own descriptor, now duplicated onto stdin; left open it
        // would reach the program as a stray descriptor.
        unsafe { libc::close(devnull) };
    }
    // The run gets its own session and process group: `kill(0, ...)` reaches only itself.
    nix::unistd::setsid().map_err(JailError::Session)?;

    let interpreter = nix::fcntl::open(
        &spec.interpreter,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| JailError::Interpreter {
        path: spec.interpreter.clone(),
        source,
    })?;
    // SAFETY: dup3 onto the fixed descriptor the seccomp policy allows execveat from.
    if unsafe { libc::dup3(interpreter, seccomp::policy::EXEC_FD, libc::O_CLOEXEC) } < 0 {
        return Err(JailError::ExecFd {
            path: spec.interpreter.clone(),
            source: Errno::last(),
        });
    }
    if spec.zygote {
        keep_zygote_powers(kernel, control, inherit)?;
    } else {
        if let Some(code) = &inherit {
            // The fixed descriptor a deferred bootstrap reads its program from.
            kernel
                .dup2(code.as_raw_fd(), CODE_FD)
                .map_err(JailError::CodeFd)?;
        }
        let keep: &[RawFd] = if inherit.is_some() {
            &[seccomp::policy::EXEC_FD, CODE_FD]
        } else {
            &[seccomp::policy::EXEC_FD]
        };
        lockdown::lock_down(
            &LockDown {
                language: spec.language,
                limits: &spec.limits,
                coverage,
                seccomp: program,
                use_listener,
                insecure: spec.insecure,
                bounding_set: None,
            },
            control.as_raw_fd(),
            keep,
        )?;
    }

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
    Err(JailError::Exec {
        path: spec.interpreter.clone(),
        source: Errno::last(),
    })
}

/// A zygote execs with the capabilities its run children need to build their namespaces
/// (raised as ambient capabilities, so they survive the exec of a non-root uid), its control
/// socket as [`ZYGOTE_FD`], and no seccomp of its own: it runs only trusted start-up code,
/// and each run child locks itself down before it reads a request.
fn keep_zygote_powers(
    kernel: &dyn Kernel,
    control: &OwnedFd,
    socket: Option<OwnedFd>,
) -> Result<(), JailError> {
    let socket = socket.ok_or(JailError::ZygoteSocket)?;
    // The fixed descriptor; dup2 clears close-on-exec so it survives exec.
    kernel
        .dup2(socket.as_raw_fd(), ZYGOTE_FD)
        .map_err(JailError::ZygoteFd)?;
    drop(socket);
    lockdown::close_other_fds(&[seccomp::policy::EXEC_FD, ZYGOTE_FD, control.as_raw_fd()]);
    kernel
        .prctl(Prctl::SetNoNewPrivs)
        .map_err(JailError::ZygoteNoNewPrivs)?;
    let kept: caps::CapsHashSet = ZYGOTE_CAPS.iter().copied().collect();
    let err = JailError::ZygoteCaps;
    caps::set(None, caps::CapSet::Inheritable, &kept).map_err(err)?;
    for cap in ZYGOTE_CAPS {
        caps::raise(None, caps::CapSet::Ambient, *cap).map_err(err)?;
    }
    // It never gains another (it runs no program with file capabilities), and each run
    // child empties a five-entry bounding set instead of one of forty.
    for cap in caps::all().difference(&kept) {
        caps::drop(None, caps::CapSet::Bounding, *cap).map_err(err)?;
    }
    control::send(control.as_fd(), &Message::Ready, &[]).map_err(JailError::ZygoteReady)?;
    Ok(())
}

/// What a zygote keeps (within its own user namespace only): new namespaces and mounts for
/// each run child, switching to the run uid, and dropping the bounding set.
const ZYGOTE_CAPS: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_ADMIN,
    // Loopback up in each run child's own network namespace.
    caps::Capability::CAP_NET_ADMIN,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETPCAP,
];

/// A close-on-exec duplicate of `fd` numbered 900 or above (below [`seccomp::policy::EXEC_FD`]).
fn raise_fd(fd: &OwnedFd) -> Result<OwnedFd, JailError> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1) that we then own.
    let raised = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 900) };
    if raised < 0 {
        return Err(JailError::RaiseFd(Errno::last()));
    }
    // SAFETY: `raised` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raised) })
}

/// Makes init non-dumpable before the program exists, so the program can never read or write
/// init's memory through /proc (it was dumpable while the helper wrote its id maps).
fn forbid_dumping(kernel: &dyn Kernel) -> Result<(), JailError> {
    kernel
        .prctl(Prctl::SetDumpable(false))
        .map_err(JailError::Dumpable)
}

#[cfg(test)]
#[path = "jail_tests.rs"]
mod tests;
