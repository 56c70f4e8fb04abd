//! The jail, end to end: programs that must work, and attacks that must fail, each with the
//! specific outcome asserted. Every test runs the real `hako run` binary as root.

mod common;
use common::*;

/// Every isolation test runs in every execution mode: the CLI (spawn), and servers in spawn
/// and zygote mode (Node runs in the pool or spawn mode there).
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        mod cli_spawn {
            $(#[test] fn $name() { if super::can_run_jail() { super::$name(&super::Runner::cli()) } })*
        }
        mod server_spawn {
            $(#[test] fn $name() { if super::can_run_jail() { super::$name(&super::Runner::server("spawn")) } })*
        }
        mod server_zygote {
            $(#[test] fn $name() { if super::can_run_jail() { super::$name(&super::Runner::server("zygote")) } })*
        }
        mod agent_v2_runs {
            $(#[test] fn $name() { if super::can_run_jail() { super::$name(&super::Runner::agent("v2")) } })*
        }
    };
}

/// The attacks of the list again, each program as the one exec of a fresh session.
macro_rules! in_a_session {
    ($($name:ident),* $(,)?) => {
        mod agent_session {
            $(#[test] fn $name() { if super::can_run_jail() { super::$name(&super::Runner::agent("session")) } })*
        }
    };
}

in_a_session!(
    python_and_node_print,
    host_files_are_not_visible,
    listing_root_shows_only_the_jail,
    runs_do_not_see_each_others_tmp,
    proc_shows_only_the_run_and_no_host_environment,
    kill_all_processes_hurts_nobody_outside,
    fork_and_subprocess_are_not_permitted,
    thread_bomb_stops_at_the_pids_limit,
    huge_allocation_fails_and_gradual_allocation_hits_the_memory_limit,
    filling_tmp_stops_at_its_cap,
    infinite_loop_times_out,
    output_flood_is_capped,
    privileged_syscalls_are_denied_and_named,
    dangerous_sockets_are_denied,
    host_loopback_is_unreachable_without_network,
);

in_every_mode!(
    python_and_node_print,
    python_stdlib_runs_unchanged,
    node_builtins_run_unchanged,
    host_files_are_not_visible,
    listing_root_shows_only_the_jail,
    runs_do_not_see_each_others_tmp,
    proc_shows_only_the_run_and_no_host_environment,
    kill_all_processes_hurts_nobody_outside,
    fork_and_subprocess_are_not_permitted,
    thread_bomb_stops_at_the_pids_limit,
    failing_at_the_pids_limit_reports_pids_limit,
    home_is_private_and_dev_shm_is_fresh_per_run,
    huge_allocation_fails_and_gradual_allocation_hits_the_memory_limit,
    filling_tmp_stops_at_its_cap,
    infinite_loop_times_out,
    output_flood_is_capped,
    privileged_syscalls_are_denied_and_named,
    dangerous_sockets_are_denied,
    host_loopback_is_unreachable_without_network,
);

fn python_and_node_print(jail: &Runner) {
    let py = jail.run("python3", "print(1+1)", &[]);
    assert_eq!(
        (py.stdout(), py.status(), py.exit_code()),
        ("2\n", "ok", 0),
        "{:?}",
        py.json
    );
    let js = jail.run("nodejs", "console.log(1+1)", &[]);
    assert_eq!(
        (js.stdout(), js.status(), js.exit_code()),
        ("2\n", "ok", 0),
        "{:?}",
        js.json
    );
}

fn python_stdlib_runs_unchanged(jail: &Runner) {
    let code = r#"
import threading, sqlite3, zoneinfo, ssl, hashlib, tempfile, asyncio, datetime, os
out = []
t = threading.Thread(target=lambda: out.append("thread"))
t.start(); t.join()
db = sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.execute("insert into t values (42)")
out.append("sqlite=%d" % db.execute("select x from t").fetchone()[0])
tz = datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Shanghai"))
out.append("tz=" + tz.strftime("%z"))
ctx = ssl.create_default_context()
out.append("certs=%s" % (ctx.cert_store_stats()["x509_ca"] > 0))
out.append("sha=" + hashlib.sha256(b"x").hexdigest()[:8])
with tempfile.NamedTemporaryFile("w", delete=False) as f:
    f.write("hi")
out.append("tmp=" + os.path.dirname(f.name) + ":" + open(f.name).read())
async def main():
    await asyncio.sleep(0.01)
    return "async"
out.append(asyncio.run(main()))
print(" ".join(out))
"#;
    let r = jail.run("python3", code, &[]);
    assert_eq!(
        r.stdout(),
        "thread sqlite=42 tz=+0800 certs=True sha=2d711642 tmp=/tmp:hi async\n",
        "{:?}",
        r.json
    );
    assert_eq!(r.status(), "ok");
}

fn node_builtins_run_unchanged(jail: &Runner) {
    let code = r#"
const crypto = require('crypto');
const b = Buffer.from('hako').toString('base64');
const h = crypto.createHash('sha256').update('x').digest('hex').slice(0, 8);
const u = new URL('https://example.com/a?b=1').searchParams.get('b');
setTimeout(() => {
  Promise.resolve(7).then(v => console.log([b, h, u, v, crypto.randomUUID().length].join(' ')));
}, 10);
"#;
    let r = jail.run("nodejs", code, &[]);
    assert_eq!(r.stdout(), "aGFrbw== 2d711642 1 7 36\n", "{:?}", r.json);
}

fn host_files_are_not_visible(jail: &Runner) {
    let secret = format!("/var/tmp/hako-test-secret-{}", std::process::id());
    std::fs::write(&secret, "top secret").unwrap();
    let code = format!(
        "import os\nfor p in ['{secret}', '/etc/shadow', '/root', '/home', '/var']:\n    print(p, os.path.exists(p))\nprint(sorted(l.split(':')[0] for l in open('/etc/passwd')))\n"
    );
    let r = jail.run("python3", &code, &[]);
    std::fs::remove_file(&secret).unwrap();
    assert_eq!(
        r.stdout(),
        format!("{secret} False\n/etc/shadow False\n/root False\n/home False\n/var False\n['nobody', 'root', 'sandbox']\n"),
        "{:?}",
        r.json
    );
}

fn listing_root_shows_only_the_jail(jail: &Runner) {
    let r = jail.run("python3", "import os\nprint(sorted(os.listdir('/')))", &[]);
    let listed: Vec<String> = r
        .stdout()
        .trim()
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|s| s.trim_matches('\'').to_string())
        .collect();
    let allowed = [
        "bin", "dev", "etc", "lib", "lib64", "opt", "proc", "sandbox", "tmp", "usr",
    ];
    for entry in &listed {
        assert!(
            allowed.contains(&entry.as_str()),
            "unexpected /{entry} in the jail: {listed:?}"
        );
    }
    for needed in ["dev", "etc", "proc", "tmp", "usr"] {
        assert!(
            listed.iter().any(|e| e == needed),
            "missing /{needed}: {listed:?}"
        );
    }
}

fn runs_do_not_see_each_others_tmp(jail: &Runner) {
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            jail.run(
                "python3",
                "import time\nopen('/tmp/run-a-secret', 'w').write('a')\ntime.sleep(2)\nprint('wrote')",
                &[],
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(700));
        // The reader's /tmp holds only what every run starts with: its own empty home.
        let reader = jail.run(
            "python3",
            "import os\nprint('run-a-secret' in os.listdir('/tmp'), os.listdir('/tmp/home'))",
            &[],
        );
        let writer = writer.join().unwrap();
        assert_eq!(writer.stdout(), "wrote\n", "{:?}", writer.json);
        assert_eq!(reader.stdout(), "False []\n", "{:?}", reader.json);
    });
}

fn proc_shows_only_the_run_and_no_host_environment(jail: &Runner) {
    // The host (and the server) carry HAKO_TEST_MARKER; no process the run can see may.
    let code = "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n\
print(all(p <= 2 for p in pids), os.getpid() in pids)\nleaks = 0\nfor p in pids:\n    try:\n        leaks += open('/proc/%d/environ' % p, 'rb').read().count(b'HAKO_TEST_MARKER')\n    except OSError:\n        pass\n\
print(leaks, 'HAKO_TEST_MARKER' in os.environ)\n";
    let r = jail.run("python3", code, &[]);
    assert_eq!(r.stdout(), "True True\n0 False\n", "{:?}", r.json);
}

fn kill_all_processes_hurts_nobody_outside(jail: &Runner) {
    let mut canary = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let code = "import os\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    print('nobody to kill')\nprint('still here')";
    let r = jail.run("python3", code, &[]);
    let alive = canary.try_wait().unwrap().is_none();
    canary.kill().unwrap();
    canary.wait().unwrap();
    assert!(alive, "a host process died");
    assert_eq!(r.stdout(), "nobody to kill\nstill here\n", "{:?}", r.json);
    let again = jail.run("python3", "print('ok')", &[]);
    assert_eq!(again.stdout(), "ok\n");
}

fn fork_and_subprocess_are_not_permitted(jail: &Runner) {
    let r = jail.run("python3", "import os\nwhile True:\n    os.fork()", &[]);
    assert_eq!(r.status(), "blocked", "{:?}", r.json);
    assert!(
        r.stderr()
            .contains("PermissionError: [Errno 1] Operation not permitted"),
        "{:?}",
        r.json
    );
    assert!(
        r.error().contains(
            "error: operation not permitted: syscall clone blocked by the python3 policy"
        ),
        "{:?}",
        r.json
    );

    let r = jail.run("python3", "import subprocess\nsubprocess.run(['ls'])", &[]);
    assert!(
        r.error().contains("Operation not permitted"),
        "{:?}",
        r.json
    );
    let r = jail.run(
        "python3",
        "import os\nos.execl('/usr/bin/python3', 'python3', '-c', 'print(1)')",
        &[],
    );
    assert!(
        r.error().contains("Operation not permitted"),
        "{:?}",
        r.json
    );
    assert!(r.blocked().contains(&"execve".to_string()), "{:?}", r.json);
    let r = jail.run("nodejs", "require('child_process').execSync('ls')", &[]);
    assert_ne!(r.exit_code(), 0);
    assert!(
        r.error().contains("EPERM") || r.error().contains("operation not permitted"),
        "{:?}",
        r.json
    );
}

fn thread_bomb_stops_at_the_pids_limit(jail: &Runner) {
    let code = "import threading, time\nn = 0\ntry:\n    for _ in range(1000):\n        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n        n += 1\nexcept RuntimeError as e:\n    print('stopped', e)\nprint(n < 1000)\n";
    let r = jail.run("python3", code, &["--timeout", "10"]);
    assert_eq!(
        r.stdout(),
        "stopped can't start new thread\nTrue\n",
        "{:?}",
        r.json
    );
    assert_eq!(jail.run("python3", "print('ok')", &[]).stdout(), "ok\n");
}

fn failing_at_the_pids_limit_reports_pids_limit(jail: &Runner) {
    let code = "import threading, time\nfor _ in range(1000):\n    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n";
    let r = jail.run("python3", code, &["--timeout", "10"]);
    assert_eq!(r.status(), "pids_limit", "{:?}", r.json);
    assert!(r.error().contains("process limit of"), "{:?}", r.json);
    assert_ne!(r.exit_code(), 0);
}

/// nltk refuses a world-writable home; joblib and multiprocessing need /dev/shm for POSIX
/// semaphores. Neither may carry anything from one run to the next.
fn home_is_private_and_dev_shm_is_fresh_per_run(jail: &Runner) {
    let code = r#"
import os, stat
home = os.path.expanduser("~")
st = os.stat(home)
print(home, oct(stat.S_IMODE(st.st_mode)), st.st_uid == os.getuid())
open(os.path.join(home, "note"), "w").write("x")
from _multiprocessing import SemLock
SemLock(0, 0, 1, name="/hako-test", unlink=True)
print(sorted(os.listdir("/dev/shm")), sorted(os.listdir(home)))
open("/dev/shm/left-behind", "w").write("secret")
"#;
    for _ in 0..2 {
        let r = jail.run("python3", code, &[]);
        assert_eq!(
            r.stdout(),
            "/tmp/home 0o700 True
[] ['note']
",
            "{:?}",
            r.json
        );
        assert_eq!(r.status(), "ok", "{:?}", r.json);
    }
}

fn huge_allocation_fails_and_gradual_allocation_hits_the_memory_limit(jail: &Runner) {
    let r = jail.run(
        "python3",
        "try:\n    b = bytearray(64 << 30)\nexcept MemoryError:\n    print('MemoryError')",
        &[],
    );
    assert_eq!(r.stdout(), "MemoryError\n", "{:?}", r.json);
    let r = jail.run(
        "python3",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
        &["--memory-mb", "128", "--timeout", "20"],
    );
    assert_eq!(r.status(), "memory_limit", "{:?}", r.json);
    assert!(
        r.error().contains("memory limit of 128 MiB exceeded"),
        "{:?}",
        r.json
    );
}

fn filling_tmp_stops_at_its_cap(jail: &Runner) {
    let code = "import errno\nblock = b'x' * (1 << 20)\nwritten = 0\ntry:\n    with open('/tmp/fill', 'wb') as f:\n        for _ in range(10 * 1024):\n            f.write(block); f.flush(); written += 1\nexcept OSError as e:\n    print(errno.errorcode[e.errno], written <= 64)\n";
    let r = jail.run("python3", code, &["--timeout", "20"]);
    assert!(
        r.stdout() == "ENOSPC True\n" || r.stdout() == "EFBIG True\n",
        "{:?}",
        r.json
    );
}

fn infinite_loop_times_out(jail: &Runner) {
    let r = jail.run("python3", "while True:\n    pass", &["--timeout", "1"]);
    assert_eq!(r.status(), "timeout", "{:?}", r.json);
    assert_eq!(r.error(), "process exited with code -1\nerror: timeout\n");
    let r = jail.run("nodejs", "while (true) {}", &["--timeout", "1"]);
    assert_eq!(r.status(), "timeout", "{:?}", r.json);
}

fn output_flood_is_capped(jail: &Runner) {
    let r = jail.run(
        "python3",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        &["--timeout", "10"],
    );
    assert_eq!(r.status(), "output_limit", "{:?}", r.json["status"]);
    assert!(
        r.stdout().len() <= 4 << 20 && r.stdout().len() > 1 << 20,
        "{}",
        r.stdout().len()
    );
}

fn privileged_syscalls_are_denied_and_named(jail: &Runner) {
    let cases = [
        ("mount", "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)"),
        ("unshare", "libc.unshare(0x10000000)"),
        ("setuid", "libc.setuid(0)"),
        ("ptrace", "libc.ptrace(0, 0, None, None)"),
        ("chroot", "libc.chroot(b'/tmp')"),
    ];
    for (name, call) in cases {
        let r = jail.run("python3", &ctypes_call(name, call), &[]);
        assert_eq!(
            r.stdout(),
            format!("{name}=-1 errno=Operation not permitted\n"),
            "{name}: {:?}",
            r.json
        );
        assert!(
            r.blocked().contains(&name.to_string()),
            "{name}: {:?}",
            r.json
        );
    }
}

fn dangerous_sockets_are_denied(jail: &Runner) {
    let code = "import socket\nfor fam, typ in [(socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_INET, socket.SOCK_RAW)]:\n    try:\n        socket.socket(fam, typ)\n        print('opened')\n    except PermissionError:\n        print('denied')\n";
    let r = jail.run("python3", code, &[]);
    assert_eq!(r.stdout(), "denied\ndenied\ndenied\n", "{:?}", r.json);
}

fn host_loopback_is_unreachable_without_network(jail: &Runner) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)\n"
    );
    let r = jail.run("python3", &code, &[]);
    assert_eq!(r.stdout(), "ConnectionRefusedError\n", "{:?}", r.json);
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
}

/// `hako run` as an unprivileged user: namespaces and seccomp still apply; cgroups degrade to
/// rlimits, and `hako doctor` says so.
#[test]
fn unprivileged_users_get_the_jail_with_rlimits_instead_of_cgroups() {
    if !can_run_jail() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let reachable = std::path::Path::new(HAKO)
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if !reachable {
        eprintln!("skipped: {HAKO} is not reachable by an unprivileged user from this checkout");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(HAKO)
            .args(args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env_remove("XDG_RUNTIME_DIR")
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let code = "import os\nprint(os.getuid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.path.exists('/root'))\ntry:\n    os.fork()\nexcept PermissionError:\n    print('fork denied')";
    let out = as_nobody(&["run", "--json", "-"], code);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(json["stdout"], "1000 [1, 2] False\nfork denied\n", "{json}");
    let doctor = as_nobody(&["doctor"], "");
    let text = String::from_utf8_lossy(&doctor.stdout);
    let cgroups = text
        .lines()
        .find(|l| l.starts_with("cgroups"))
        .unwrap_or_default();
    assert!(
        cgroups.contains("degraded") && cgroups.contains("memory guard only"),
        "{text}"
    );
}
