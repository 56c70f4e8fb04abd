//! Installing the filter, and the user-notification listener (raw `seccomp(2)` and ioctls).
//!
//! Supervisor loop: poll the listener for `POLLIN`, [`receive`], then `respond_errno`
//! (enforce) or `respond_continue` (learn). `POLLHUP` means no task uses the filter any
//! more. [`SeccompError::TargetGone`] from either call is not a failure: the caller died or
//! was interrupted by a signal, and will retry the call if it restarts.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::bpf::{MAX_INSNS, SECCOMP_RET_USER_NOTIF};
use super::SeccompError;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
const SECCOMP_GET_NOTIF_SIZES: libc::c_ulong = 3;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// `_IOC(dir, '!', nr, size)` with the asm-generic layout (x86_64 and aarch64).
const fn seccomp_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'!' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `SECCOMP_IOWR(0, struct seccomp_notif)` = 0xc0502100.
pub const SECCOMP_IOCTL_NOTIF_RECV: u64 =
    seccomp_ioc(IOC_READ | IOC_WRITE, 0, size_of::<libc::seccomp_notif>());
/// `SECCOMP_IOWR(1, struct seccomp_notif_resp)` = 0xc0182101.
pub const SECCOMP_IOCTL_NOTIF_SEND: u64 = seccomp_ioc(
    IOC_READ | IOC_WRITE,
    1,
    size_of::<libc::seccomp_notif_resp>(),
);
/// `SECCOMP_IOW(2, __u64)` = 0x40082102. Kernels before 5.17 defined it as `SECCOMP_IOR`
/// (0x80082102); current kernels accept both, and only the `IOW` value is in uapi headers.
pub const SECCOMP_IOCTL_NOTIF_ID_VALID: u64 = seccomp_ioc(IOC_WRITE, 2, size_of::<u64>());

/// One stopped syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Cookie for the answer.
    pub id: u64,
    /// Thread id of the caller, in the listener's pid namespace.
    pub pid: u32,
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    pub args: [u64; 6],
}

/// # Safety
/// `arg` must point to a live object of the type `op` reads or writes.
unsafe fn seccomp(
    op: libc::c_ulong,
    flags: libc::c_ulong,
    arg: *mut libc::c_void,
) -> io::Result<i64> {
    // SAFETY: the caller guarantees `arg` fits `op`; the kernel touches nothing else.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, op, flags, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Installs `program` on the calling thread (and what it later creates or execs).
///
/// The caller must have set no_new_privs (`prctl(PR_SET_NO_NEW_PRIVS, 1)`) first; this is
/// checked, so a root helper cannot install a filter that a setuid binary could shed. With
/// `want_listener`, returns the listener (close-on-exec): hand it to the supervisor before
/// exec. A task has at most one listener in its filter chain; a second one fails (EBUSY).
pub fn install(
    program: &[libc::sock_filter],
    want_listener: bool,
) -> Result<Option<OwnedFd>, SeccompError> {
    let install_err = |source| SeccompError::Install {
        instructions: program.len(),
        listener: want_listener,
        source,
    };
    if program.len() > MAX_INSNS {
        return Err(SeccompError::ProgramTooLong {
            len: program.len(),
            max: MAX_INSNS,
        });
    }
    // SAFETY: PR_GET_NO_NEW_PRIVS reads a flag of the calling thread; no pointers.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if nnp < 0 {
        return Err(SeccompError::NoNewPrivsCheck {
            source: io::Error::last_os_error(),
        });
    }
    if nnp != 1 {
        return Err(SeccompError::NoNewPrivs);
    }
    let mut prog = libc::sock_fprog {
        // Fits: checked against MAX_INSNS above.
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    let flags = if want_listener {
        SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    let ptr = (&mut prog as *mut libc::sock_fprog).cast();
    // SAFETY: SET_MODE_FILTER reads a sock_fprog; `prog` and the `program` it points at
    // live across the call, and the kernel copies the program.
    let rc = unsafe { seccomp(SECCOMP_SET_MODE_FILTER, flags, ptr) }.map_err(install_err)?;
    if !want_listener {
        return Ok(None);
    }
    let fd =
        i32::try_from(rc).map_err(|_| install_err(io::Error::from(io::ErrorKind::InvalidData)))?;
    // SAFETY: with NEW_LISTENER the kernel returns a new descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The kernel's sizes of the notification structs (`SECCOMP_GET_NOTIF_SIZES`).
pub(crate) fn notif_sizes() -> Result<libc::seccomp_notif_sizes, SeccompError> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    let ptr = (&mut sizes as *mut libc::seccomp_notif_sizes).cast();
    // SAFETY: GET_NOTIF_SIZES writes one seccomp_notif_sizes to `ptr`, which is `sizes`.
    unsafe { seccomp(SECCOMP_GET_NOTIF_SIZES, 0, ptr) }
        .map_err(|source| SeccompError::NotifUnsupported { source })?;
    Ok(sizes)
}

/// Whether this kernel has user notification (Linux 5.0+): the sizes query works, the
/// kernel's structs are the ones this code was built against, and the action is available.
pub(crate) fn user_notif_supported() -> bool {
    let Ok(sizes) = notif_sizes() else {
        return false;
    };
    let same_layout = usize::from(sizes.seccomp_notif) == size_of::<libc::seccomp_notif>()
        && usize::from(sizes.seccomp_notif_resp) == size_of::<libc::seccomp_notif_resp>();
    let mut action: u32 = SECCOMP_RET_USER_NOTIF;
    let ptr = (&mut action as *mut u32).cast();
    // SAFETY: GET_ACTION_AVAIL reads one u32 from `ptr`, which is `action`.
    let avail = unsafe { seccomp(SECCOMP_GET_ACTION_AVAIL, 0, ptr) };
    same_layout && avail.is_ok()
}

fn notif_ioctl<T>(listener: BorrowedFd<'_>, request: u64, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `arg` is the struct or integer the request's size encodes (see the
        // constants), valid and exclusively borrowed for the call.
        let rc =
            unsafe { libc::ioctl(listener.as_raw_fd(), request as libc::Ioctl, arg as *mut T) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Waits for the next notification (blocks; poll the listener first to bound the wait).
pub fn receive(listener: BorrowedFd<'_>) -> Result<Notification, SeccompError> {
    // SAFETY: seccomp_notif is plain integers, so all-zero is valid; the kernel requires a
    // zeroed buffer.
    let mut raw: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    match notif_ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &mut raw) {
        Ok(()) => Ok(Notification {
            id: raw.id,
            pid: raw.pid,
            nr: raw.data.nr,
            arch: raw.data.arch,
            args: raw.data.args,
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            Err(SeccompError::TargetGone { id: None })
        }
        Err(source) => Err(SeccompError::NotifRecv { source }),
    }
}

fn send(listener: BorrowedFd<'_>, mut resp: libc::seccomp_notif_resp) -> Result<(), SeccompError> {
    let id = resp.id;
    match notif_ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &mut resp) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            Err(SeccompError::TargetGone { id: Some(id) })
        }
        Err(source) => Err(SeccompError::NotifSend { id, source }),
    }
}

/// Fails the stopped call with `errno` (1..=4095).
pub(crate) fn respond_errno(
    listener: BorrowedFd<'_>,
    id: u64,
    errno: i32,
) -> Result<(), SeccompError> {
    if !(1..=4095).contains(&errno) {
        return Err(SeccompError::InvalidErrno {
            errno: errno.unsigned_abs(),
        });
    }
    send(
        listener,
        libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    )
}

/// Lets the stopped call run as if allowed (learn mode). Not a security decision: the
/// caller's memory may change between the check and the call.
pub(crate) fn respond_continue(listener: BorrowedFd<'_>, id: u64) -> Result<(), SeccompError> {
    let flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    send(
        listener,
        libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags,
        },
    )
}

/// Whether notification `id` is still pending (its caller is still waiting).
#[cfg(test)]
pub(crate) fn id_valid(listener: BorrowedFd<'_>, id: u64) -> Result<bool, SeccompError> {
    let mut cookie = id;
    match notif_ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &mut cookie) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(source) => Err(SeccompError::NotifIdValid { id, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::bpf::{self, DenyAction};
    use crate::seccomp::{build_program, policy, Arch, FilterFor, NATIVE_ARCH};
    use crate::spec::SeccompMode;
    use std::collections::BTreeSet;
    use std::ffi::CString;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::fd::AsFd;
    use std::process::{Command, ExitStatus, Stdio};
    use std::time::Duration;

    const CHILD_ENV: &str = "HAKO_SECCOMP_TEST_CHILD";
    const FD_LINE: &str = "HAKO_LISTENER_FD=";
    const CHILD_TEST: &str = "seccomp::notify::tests::child_role";

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        assert_eq!(SECCOMP_IOCTL_NOTIF_RECV, 0xc050_2100);
        assert_eq!(SECCOMP_IOCTL_NOTIF_SEND, 0xc018_2101);
        assert_eq!(SECCOMP_IOCTL_NOTIF_ID_VALID, 0x4008_2102);
    }

    #[test]
    fn kernel_supports_user_notif_with_our_struct_sizes() {
        let sizes = notif_sizes().expect("SECCOMP_GET_NOTIF_SIZES (Linux 5.0+)");
        assert_eq!(
            usize::from(sizes.seccomp_notif),
            size_of::<libc::seccomp_notif>()
        );
        assert_eq!(
            usize::from(sizes.seccomp_notif_resp),
            size_of::<libc::seccomp_notif_resp>()
        );
        assert_eq!(
            usize::from(sizes.seccomp_data),
            size_of::<libc::seccomp_data>()
        );
        assert!(user_notif_supported());
    }

    #[test]
    fn bad_errno_is_refused_before_the_kernel() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = respond_errno(a.as_fd(), 1, 0).unwrap_err();
        assert!(
            matches!(err, SeccompError::InvalidErrno { errno: 0 }),
            "{err}"
        );
        // Not a listener: the kernel refuses the ioctl.
        assert!(matches!(
            respond_continue(a.as_fd(), 1),
            Err(SeccompError::NotifSend { .. })
        ));
    }

    /// Child half of the tests below, run in a re-exec of this test binary.
    #[test]
    #[ignore = "child half of the notify tests; they run it with --ignored"]
    fn child_role() {
        match std::env::var(CHILD_ENV).as_deref() {
            Ok("no-nnp") => child_without_nnp(),
            Ok("syslog") => child_syslog(),
            Ok(language) => child_exec(language),
            Err(_) => {}
        }
    }

    fn set_no_new_privs() {
        // SAFETY: PR_SET_NO_NEW_PRIVS sets a flag of the calling thread; no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    fn child_without_nnp() {
        let program =
            build_program("python3", &[], FilterFor::jail(SeccompMode::Enforce, false)).unwrap();
        let err = install(&program, false).unwrap_err();
        println!("HAKO_RESULT={}", matches!(err, SeccompError::NoNewPrivs));
    }

    fn child_syslog() {
        let arch = Arch::native().unwrap();
        let syslog = arch.number("syslog").unwrap();
        let allowed: BTreeSet<u32> = (0..1024)
            .filter(|&nr| nr != syslog && arch.is_valid_number(nr))
            .collect();
        let none = BTreeSet::new();
        let program =
            bpf::compile(NATIVE_ARCH, &allowed, &[], &none, DenyAction::UserNotif).unwrap();
        set_no_new_privs();
        let listener = install(&program, true).unwrap().expect("listener");
        println!("{FD_LINE}{}", listener.as_raw_fd());
        // SAFETY: SYSLOG_ACTION_SIZE_BUFFER (10) takes no buffer.
        let rc = unsafe { libc::syscall(libc::SYS_syslog, 10, std::ptr::null_mut::<u8>(), 0) };
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("HAKO_RESULT={rc} {}", if rc < 0 { errno } else { 0 });
    }

    const PY_SCRIPT: &str = r#"
import ssl, sqlite3, asyncio, threading, json, zoneinfo, decimal, hashlib, tempfile, gzip
import zipfile, csv, uuid, logging, os, socket, subprocess, concurrent.futures, time
ssl.create_default_context()
db = sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.close()
with tempfile.TemporaryDirectory() as d:
    p = os.path.join(d, "a.gz")
    with gzip.open(p, "wt") as f: f.write("x" * 1000)
    os.rename(p, p + "2"); os.listdir(d)
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    list(ex.map(lambda i: hashlib.sha256(bytes(i)).hexdigest(), range(8)))
async def main():
    srv = await asyncio.start_server(lambda r, w: (w.write(b"hi"), w.close()), "127.0.0.1", 0)
    r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    assert await r.read(10) == b"hi"; w.close(); srv.close()
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.01)
asyncio.run(main())
for name, f in [("fork", os.fork), ("subprocess", lambda: subprocess.run(["/bin/true"])),
                ("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
                ("exec", lambda: os.execv("/bin/true", ["true"]))]:
    try: f(); print(name, "ALLOWED")
    except PermissionError: print(name, "EPERM")
print("HAKO_DONE")
"#;

    const JS_SCRIPT: &str = r#"
const crypto = require('crypto'), zlib = require('zlib'), fs = require('fs'), os = require('os');
const http = require('http'), path = require('path'), cp = require('child_process');
const { Worker } = require('worker_threads');
crypto.createHash('sha256').update('x').digest('hex'); zlib.gzipSync('x'.repeat(1000));
const d = fs.mkdtempSync('/tmp/hako-'); fs.writeFileSync(path.join(d, 'a'), 'hi');
fs.renameSync(path.join(d, 'a'), path.join(d, 'b')); fs.rmSync(d, { recursive: true });
os.cpus();
try { cp.execSync('true'); console.log('spawn ALLOWED'); }
catch (e) { console.log('spawn', e.code); }
const w = new Worker('require("worker_threads").parentPort.postMessage(1)', { eval: true });
w.on('message', () => {
  const srv = http.createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1', () => {
    http.get({ host: 'localhost', port: srv.address().port }, (res) => {
      res.resume(); res.on('end', () => { srv.close(); console.log('HAKO_DONE'); });
    });
  });
});
"#;

    fn child_exec(language: &str) {
        let (path, flag, script) = match language {
            "python3" => ("/usr/bin/python3.11", "-c", PY_SCRIPT),
            "nodejs" => ("/usr/bin/node", "-e", JS_SCRIPT),
            other => panic!("unknown child role {other}"),
        };
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: dup3 on a descriptor we own, to a number nothing in this process uses.
        let rc = unsafe { libc::dup3(file.as_raw_fd(), policy::EXEC_FD, libc::O_CLOEXEC) };
        assert_eq!(rc, policy::EXEC_FD, "{}", io::Error::last_os_error());
        let argv: Vec<CString> = [language, flag, script]
            .iter()
            .map(|s| CString::new(*s).unwrap())
            .collect();
        let env = ["PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"];
        let envp: Vec<CString> = env.iter().map(|s| CString::new(*s).unwrap()).collect();
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        let program =
            build_program(language, &[], FilterFor::jail(SeccompMode::Enforce, true)).unwrap();
        set_no_new_privs();
        let listener = install(&program, true).unwrap().expect("listener");
        println!("{FD_LINE}{}", listener.as_raw_fd());
        // The listener closes on exec: wait until the parent holds its copy.
        let mut ack = String::new();
        std::io::stdin().read_line(&mut ack).unwrap();
        // SAFETY: the path and both arrays are NUL-terminated and outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                policy::EXEC_FD,
                c"".as_ptr(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        panic!("execveat failed: {}", io::Error::last_os_error());
    }

    struct ChildRun {
        stdout: String,
        notes: Vec<Notification>,
        status: ExitStatus,
        pid: u32,
    }

    /// Runs the child role under supervision: every notification goes to `answer`.
    fn supervise(role: &str, answer: impl Fn(BorrowedFd<'_>, &Notification)) -> ChildRun {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id();
        let pidfd = pidfd_open(pid);
        watchdog(pidfd.try_clone().unwrap(), Duration::from_secs(60));
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut head = String::new();
        let fd_number = loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("child ended before sending its listener:\n{head}");
            }
            // libtest prints "test <name> ... " on the same line.
            if let Some((_, n)) = line.trim().split_once(FD_LINE) {
                break n.parse::<i32>().unwrap();
            }
            head.push_str(&line);
        };
        let listener = take_fd(pidfd.as_fd(), fd_number);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = reader.read_to_string(&mut s);
            s
        });
        let mut notes = Vec::new();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, 20) };
            if n <= 0 || pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            match receive(listener.as_fd()) {
                Ok(note) => {
                    answer(listener.as_fd(), &note);
                    notes.push(note);
                }
                Err(e) if e.is_target_gone() => {}
                Err(e) => panic!("{e}"),
            }
        };
        let stdout = rest.join().unwrap();
        ChildRun {
            stdout,
            notes,
            status,
            pid,
        }
    }

    fn pidfd_open(pid: u32) -> OwnedFd {
        // SAFETY: pidfd_open takes a pid and flags; no pointers.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(pidfd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: the kernel returned a new descriptor that we own.
        unsafe { OwnedFd::from_raw_fd(pidfd as i32) }
    }

    /// Copies descriptor `fd` of the process behind `pidfd` into this process.
    fn take_fd(pidfd: BorrowedFd<'_>, fd: i32) -> OwnedFd {
        // SAFETY: pidfd_getfd takes descriptors and flags; no pointers.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        assert!(got >= 0, "pidfd_getfd: {}", io::Error::last_os_error());
        // SAFETY: the kernel returned a new descriptor that we own.
        unsafe { OwnedFd::from_raw_fd(got as i32) }
    }

    /// Kills the process behind `pidfd` if it still runs after `limit`.
    fn watchdog(pidfd: OwnedFd, limit: Duration) {
        std::thread::spawn(move || {
            let mut pfd = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
            if n == 0 {
                eprintln!("child still running after {limit:?}; killing it");
                // SAFETY: pidfd_send_signal with a null siginfo; no other pointers.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
        });
    }

    fn result_line(stdout: &str) -> &str {
        stdout
            .lines()
            .find_map(|l| l.split_once("HAKO_RESULT=").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no result in child output:\n{stdout}"))
    }

    fn tgid_of(tid: u32) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Tgid:")).unwrap();
        line[5..].trim().parse().unwrap()
    }

    fn syslog_supervised(answer: impl Fn(BorrowedFd<'_>, &Notification)) -> (ChildRun, String) {
        assert!(
            user_notif_supported(),
            "this kernel lacks seccomp user notification"
        );
        let syslog = Arch::native().unwrap().number("syslog").unwrap() as i32;
        let run = supervise("syslog", |fd, note| {
            assert_eq!(note.nr, syslog);
            assert_eq!(note.arch, Arch::native().unwrap().audit_arch());
            assert_eq!(note.args[0], 10);
            assert!(id_valid(fd, note.id).unwrap());
            answer(fd, note);
            assert!(
                !id_valid(fd, note.id).unwrap(),
                "answered id is still pending"
            );
        });
        assert!(run.status.success(), "child failed:\n{}", run.stdout);
        assert_eq!(run.notes.len(), 1, "{:?}", run.notes);
        let result = result_line(&run.stdout).to_string();
        (run, result)
    }

    #[test]
    fn notified_call_gets_the_supervisors_errno() {
        let tgid = std::cell::Cell::new(0);
        let (run, result) = syslog_supervised(|fd, note| {
            tgid.set(tgid_of(note.pid));
            respond_errno(fd, note.id, libc::EPERM).unwrap();
        });
        assert_eq!(result, format!("-1 {}", libc::EPERM));
        assert_eq!(
            tgid.get(),
            run.pid,
            "the notifying thread belongs to the child"
        );
    }

    #[test]
    fn notified_call_continues_in_learn_mode() {
        // SAFETY: SYSLOG_ACTION_SIZE_BUFFER (10) takes no buffer.
        let direct = unsafe { libc::syscall(libc::SYS_syslog, 10, std::ptr::null_mut::<u8>(), 0) };
        assert!(
            direct > 0,
            "syslog size query needs root: {}",
            io::Error::last_os_error()
        );
        let (run, result) = syslog_supervised(|fd, note| respond_continue(fd, note.id).unwrap());
        assert_eq!(result, format!("{direct} 0"));
        assert_eq!(run.notes[0].args[1], 0, "syslog(10, NULL, 0)");
    }

    #[test]
    fn install_refuses_without_no_new_privs() {
        // Run in a child: this test process must stay free of filters.
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "no-nnp")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(result_line(&stdout), "true");
    }

    fn interpreter_run(language: &str, path: &str) -> Option<(String, Vec<String>)> {
        if !std::path::Path::new(path).exists() {
            eprintln!("skipping {language}: {path} is not installed");
            return None;
        }
        let arch = Arch::native().unwrap();
        let run = supervise(language, |fd, note| {
            if let Err(e) = respond_errno(fd, note.id, libc::EPERM) {
                assert!(e.is_target_gone(), "{e}");
            }
        });
        assert!(
            run.status.success(),
            "{language} failed ({}):\n{}",
            run.status,
            run.stdout
        );
        let mut blocked: Vec<String> = run
            .notes
            .iter()
            .map(|n| arch.syscall_name(n.nr as u32))
            .collect();
        blocked.sort();
        blocked.dedup();
        eprintln!("{language}: blocked {blocked:?}");
        Some((run.stdout, blocked))
    }

    #[test]
    fn python_runs_under_its_policy_and_cannot_spawn() {
        let Some((stdout, blocked)) = interpreter_run("python3", "/usr/bin/python3.11") else {
            return;
        };
        assert!(stdout.contains("HAKO_DONE"), "{stdout}");
        for line in [
            "fork EPERM",
            "subprocess EPERM",
            "packet EPERM",
            "exec EPERM",
        ] {
            assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
        }
        let expected = ["clone", "execve", "socket", "vfork"];
        assert!(
            blocked.iter().all(|b| expected.contains(&b.as_str())),
            "blocked: {blocked:?}"
        );
        assert!(
            blocked.contains(&"clone".to_string()),
            "blocked: {blocked:?}"
        );
    }

    #[test]
    fn node_runs_under_its_policy_and_cannot_spawn() {
        let Some((stdout, blocked)) = interpreter_run("nodejs", "/usr/bin/node") else {
            return;
        };
        assert!(
            stdout.contains("HAKO_DONE"),
            "{stdout}\nblocked: {blocked:?}"
        );
        assert!(stdout.contains("spawn EPERM"), "{stdout}");
        // clone: child_process; socket: glibc's netlink probe for getaddrinfo(AI_ADDRCONFIG).
        let expected = ["clone", "socket"];
        assert!(
            blocked.iter().all(|b| expected.contains(&b.as_str())),
            "blocked: {blocked:?}"
        );
    }
}
