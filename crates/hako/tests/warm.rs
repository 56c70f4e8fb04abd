//! Attacks that only a warm design invites: state left in the zygote, reading or signalling
//! the zygote, and concurrent runs talking to each other. Real server in zygote mode.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn zygote_server(workers: usize) -> Option<Runner> {
    if !can_run_jail() {
        return None;
    }
    let config = format!("worker_timeout: 20\nmax_workers: {workers}\nhako:\n  mode: zygote\n");
    let server = Server::start(&config, &[]);
    server.wait_warm();
    Some(Runner::Server(server))
}

/// A run in zygote mode has its parent (the zygote) outside its pid namespace: it reads as
/// 0 (a spawn-mode program's parent is its jail's init, pid 1).
fn assert_forked_from_zygote(jail: &Runner) {
    let r = jail.run(
        "python3",
        "import os\nprint(os.getppid(), os.getuid())",
        &[],
    );
    // Each child of a zygote has its own run uid, 1001 and up.
    let (parent, uid) = r.stdout().trim().split_once(' ').unwrap_or_default();
    let uid: u32 = uid.parse().unwrap_or(0);
    assert!(
        parent == "0" && (1001..1017).contains(&uid),
        "not a zygote child: {:?}",
        r.json
    );
}

#[test]
fn module_and_global_changes_do_not_reach_the_next_run() {
    let Some(jail) = zygote_server(1) else { return };
    assert_forked_from_zygote(&jail);
    let poison = "import json, builtins, sys\njson.dumps = lambda *a, **k: 'poisoned'\nbuiltins.LEAK = 'x'\nsys.modules['evil'] = object()\nimport os\nos.environ['LEAK'] = '1'\nprint('poisoned')";
    assert_eq!(jail.run("python3", poison, &[]).stdout(), "poisoned\n");
    let check = "import json, builtins, sys, os\nprint(json.dumps({'a': 1}), hasattr(builtins, 'LEAK'), 'evil' in sys.modules, 'LEAK' in os.environ)";
    for _ in 0..3 {
        let r = jail.run("python3", check, &[]);
        assert_eq!(r.stdout(), "{\"a\": 1} False False False\n", "{:?}", r.json);
    }
}

#[test]
fn the_zygote_is_out_of_reach() {
    let Some(jail) = zygote_server(1) else { return };
    assert_forked_from_zygote(&jail);
    // No parent is visible, /proc shows only the run and its reaper (pid 1, which shares
    // the zygote's memory), and neither the reaper nor guessed host pids can be opened for
    // their memory, maps or environment (the kernel checks at open), or signalled.
    let code = "import os\nme = os.getpid()\nppid = os.getppid()\nvisible = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n\
readable = 0\nfor pid in range(1, 4096):\n    for part in ('mem', 'maps', 'environ'):\n        try:\n            open('/proc/%d/%s' % (pid, part), 'rb').close()\n            readable += pid != me\n        except OSError:\n            pass\n\
killed = 0\nfor pid in range(1, 4096):\n    if pid == me:\n        continue\n    try:\n        os.kill(pid, 9)\n        killed += 1\n    except OSError:\n        pass\nprint(ppid, visible, readable, killed)";
    let r = jail.run("python3", code, &["--timeout", "15"]);
    assert_eq!(r.stdout(), "0 [1, 2] 0 0\n", "{:?}", r.json);
    // The zygote survived and still serves.
    assert_forked_from_zygote(&jail);
}

/// The plain pool (no package imported) and the lean one (jinja2, which preloads `random`
/// and `threading` in its zygote).
const POOL_PREFIXES: [&str; 2] = ["", "import jinja2\n"];

#[test]
fn entropy_is_fresh_in_every_run() {
    let Some(jail) = zygote_server(1) else { return };
    for prefix in POOL_PREFIXES {
        let code = format!(
            "{prefix}import random, uuid, os\nprint(random.random(), uuid.uuid4(), os.urandom(8).hex())"
        );
        let a = jail.run("python3", &code, &[]);
        let b = jail.run("python3", &code, &[]);
        assert_eq!(a.status(), "ok", "{:?}", a.json);
        let (a, b): (Vec<&str>, Vec<&str>) = (
            a.stdout().split(' ').collect(),
            b.stdout().split(' ').collect(),
        );
        for i in 0..3 {
            assert_ne!(a[i], b[i], "value {i} repeated across runs ({prefix:?})");
        }
    }
}

#[test]
fn a_programs_threads_finish_before_its_answer() {
    let Some(jail) = zygote_server(1) else { return };
    // As when the interpreter exits: non-daemon threads are waited for, then atexit runs.
    for prefix in POOL_PREFIXES {
        let code = format!(
            "{prefix}import atexit, threading, time\n\
def late():\n    time.sleep(0.3)\n    print('thread done', flush=True)\n\
atexit.register(lambda: print('atexit'))\n\
threading.Thread(target=late).start()\nprint('main done', flush=True)"
        );
        let r = jail.run("python3", &code, &[]);
        assert_eq!(
            r.stdout(),
            "main done\nthread done\natexit\n",
            "{prefix:?}: {:?}",
            r.json
        );
    }
}

#[test]
fn concurrent_runs_cannot_talk() {
    let Some(jail) = zygote_server(2) else { return };
    let listener = "import socket, time\n\
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\nu.bind('\\0hako-rendezvous')\nu.listen(1)\n\
t = socket.socket()\nt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\nt.bind(('127.0.0.1', 47123))\nt.listen(1)\n\
u.settimeout(3)\nt.settimeout(0.1)\ngot = []\nfor s in (u, t):\n    try:\n        s.accept()\n        got.append('accepted')\n    except OSError:\n        got.append('alone')\nprint(got)";
    let dialer = "import socket, time\ntime.sleep(0.5)\nout = []\n\
for fam, addr in ((socket.AF_UNIX, '\\0hako-rendezvous'), (socket.AF_INET, ('127.0.0.1', 47123))):\n    s = socket.socket(fam, socket.SOCK_STREAM)\n    try:\n        s.connect(addr)\n        out.append('connected')\n    except OSError as e:\n        out.append(type(e).__name__)\nprint(out)";
    std::thread::scope(|scope| {
        let first = scope.spawn(|| jail.run("python3", listener, &["--timeout", "10"]));
        std::thread::sleep(Duration::from_millis(300));
        let second = jail.run("python3", dialer, &["--timeout", "10"]);
        let first = first.join().unwrap();
        assert_eq!(
            second.stdout(),
            "['ConnectionRefusedError', 'ConnectionRefusedError']\n",
            "{:?}",
            second.json
        );
        assert_eq!(first.stdout(), "['alone', 'alone']\n", "{:?}", first.json);
    });
}

#[test]
fn a_forged_exit_report_does_not_wedge_the_zygote() {
    let Some(jail) = zygote_server(1) else { return };
    assert_forked_from_zygote(&jail);
    // Claim to have exited on every socket we hold, hide our output, and keep running. The
    // run holds no channel to its supervisor (see warm_attacks.rs), so the claim reaches
    // nobody: the run ends at its deadline, and the zygote serves the next one.
    let forger = "import os, stat, struct\nfor fd in range(1024):\n    try:\n        if stat.S_ISSOCK(os.fstat(fd).st_mode):\n            os.write(fd, b'X' + struct.pack('<iiQQ', 0, 0, 0, 0))\n    except OSError:\n        pass\nos.close(1)\nos.close(2)\nwhile True:\n    pass";
    let r = jail.run("python3", forger, &["--timeout", "3"]);
    assert_eq!(r.status(), "timeout", "{:?}", r.json);
    // The next run on the same (only) zygote is served: the forger did not survive.
    let r = jail.run("python3", "print('next')", &["--timeout", "20"]);
    assert_eq!(r.stdout(), "next\n", "{:?}", r.json);
    assert_forked_from_zygote(&jail);
}

#[test]
fn a_run_leaves_nothing_running_for_the_next_one() {
    // One zygote: the next run's child is prepared while this one runs, in the same network
    // namespace. Whatever a run starts must be gone before the next run begins, even when it
    // claims to have exited and keeps serving.
    let Some(jail) = zygote_server(1) else { return };
    assert_forked_from_zygote(&jail);
    let leaver = "import socket, threading\n\
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\nu.bind('\\0hako-leftover')\nu.listen(8)\n\
t = socket.socket()\nt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\nt.bind(('127.0.0.1', 47124))\nt.listen(8)\n\
def serve(s):\n    while True:\n        s.accept()\n\
for s in (u, t):\n    threading.Thread(target=serve, args=(s,), daemon=True).start()\n\
print('left', flush=True)\n\
import os, struct, time\nfor fd in os.listdir('/proc/self/fd'):\n    try:\n        if os.readlink('/proc/self/fd/' + fd).startswith('socket:['):\n            os.write(int(fd), b'X' + struct.pack('<iiQQ', 0, 0, 0, 0))\n    except OSError:\n        pass\n\
while True:\n    time.sleep(1)";
    let dialer = "import socket\nout = []\n\
for fam, addr in ((socket.AF_UNIX, '\\0hako-leftover'), (socket.AF_INET, ('127.0.0.1', 47124))):\n    s = socket.socket(fam, socket.SOCK_STREAM)\n    try:\n        s.connect(addr)\n        out.append('connected')\n    except OSError as e:\n        out.append(type(e).__name__)\nprint(out)";
    for _ in 0..5 {
        // The leaver never ends by itself (its forged exit report reaches nobody): its own
        // timeout ends it, whatever the server's default (a slow test VM raises that).
        let r = jail.run("python3", leaver, &["--timeout", "5"]);
        assert_eq!(r.stdout(), "left\n", "{:?}", r.json);
        let r = jail.run("python3", dialer, &[]);
        assert_eq!(
            r.stdout(),
            "['ConnectionRefusedError', 'ConnectionRefusedError']\n",
            "{:?}",
            r.json
        );
    }
}

/// Host pids of the zygote interpreters under `root`: Python processes whose parent is not
/// Python (run children are forked by a zygote).
fn zygote_pids(root: u32) -> Vec<u32> {
    let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let comm = |pid: u32| {
        let s = stat(pid);
        s.split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name.to_string())
            .unwrap_or_default()
    };
    let parent = |pid: u32| -> u32 {
        stat(pid)
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        if comm(pid).starts_with("python") && !comm(parent(pid)).starts_with("python") {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

#[test]
fn a_run_holding_every_pid_does_not_cost_the_zygote() {
    // The next child is forked while a run runs, in the same cgroup: a run that takes every
    // pid it may have must not break the zygote.
    if !can_run_jail() {
        return;
    }
    let server = Server::start(
        "worker_timeout: 20\nmax_workers: 1\nhako:\n  mode: zygote\n  limits:\n    pids: 16\n",
        &[],
    );
    // Each pool's parent is up. Not `wait_settled`: where no package index is reachable (the
    // cgroup-v2 VM) the install fails and `/ready` stays 503, while the pools still start.
    server.wait_warm();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut zygotes = zygote_pids(server.pid());
    while zygotes.len() != 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        zygotes = zygote_pids(server.pid());
    }
    // The preloaded parents of the plain, the lean and the heavy pool.
    assert_eq!(
        zygotes.len(),
        3,
        "three parent zygotes expected: {zygotes:?}"
    );
    let jail = Runner::Server(server);
    let bomb = "import threading, time\nthreads = []\ntry:\n    while True:\n        t = threading.Thread(target=time.sleep, args=(1,))\n        t.start()\n        threads.append(t)\nexcept RuntimeError:\n    pass\nprint('threads', len(threads))";
    for _ in 0..5 {
        let r = jail.run("python3", bomb, &[]);
        assert!(
            r.stdout().starts_with("threads "),
            "the bomb was not contained: {:?}",
            r.json
        );
        // 16 pids: the run's own task and 15 threads, plus at most the two slots kept for the
        // next prepared child and its reaper when the run takes them before the zygote forks.
        let count: usize = r.stdout().trim()["threads ".len()..].parse().unwrap();
        assert!(count <= 17, "{count} threads under a 16-pid limit");
        assert_forked_from_zygote(&jail);
    }
    let Runner::Server(server) = &jail else {
        unreachable!()
    };
    assert_eq!(
        zygote_pids(server.pid()),
        zygotes,
        "the zygote was replaced"
    );
}

/// A run's `peak_memory_bytes` is its own, not the zygote group's: runs share the zygote's
/// cgroup, whose lifetime `memory.peak` (cgroup v2) keeps the largest run's peak forever.
#[test]
fn each_run_reports_its_own_peak_memory() {
    let Some(jail) = zygote_server(1) else { return };
    assert_forked_from_zygote(&jail);
    let peak = |r: &Run| r.json["usage"]["peak_memory_bytes"].as_u64().unwrap_or(0);
    let fill =
        "b = bytearray(300 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('filled')";
    let big = jail.run("python3", fill, &["--memory-mb", "512", "--timeout", "20"]);
    assert_eq!(big.stdout(), "filled\n", "{:?}", big.json);
    assert!(peak(&big) >= 300 << 20, "{:?}", big.json);
    for _ in 0..2 {
        let small = jail.run("python3", "print('small')", &[]);
        assert_eq!(small.stdout(), "small\n", "{:?}", small.json);
        assert!(
            (1..100 << 20).contains(&peak(&small)),
            "a small run reports another run's peak: {:?}",
            small.json
        );
    }
}

/// An exception that escapes the interpreter's epilogue (here from a signal handler while
/// the program's thread is waited for) ends the run quietly with 126, never with a
/// traceback through hako's loader.
#[test]
fn what_escapes_the_epilogue_ends_the_run_without_the_loaders_lines() {
    let Some(jail) = zygote_server(1) else { return };
    assert_forked_from_zygote(&jail);
    let code = "import signal, threading, time\n\
def boom(*_):\n    raise RuntimeError('from the handler')\n\
signal.signal(signal.SIGALRM, boom)\n\
threading.Thread(target=time.sleep, args=(1.5,)).start()\n\
signal.alarm(1)\nprint('main done', flush=True)";
    let r = jail.run("python3", code, &[]);
    assert_eq!(r.stdout(), "main done\n", "{:?}", r.json);
    assert_eq!(r.exit_code(), 126, "{:?}", r.json);
    assert!(!r.stderr().contains("zygote.py"), "{:?}", r.json);
}
