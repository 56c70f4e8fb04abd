//! Attacks on the supervisor trust boundary: a run writing control messages to whatever it
//! holds, a seccomp filter with its own listener, a helper killed mid-run (the program must
//! never run twice), TCP state left for the next warm run, reading the operator's warm-up
//! code, and a syntax error quoting hako's own script. Every mode a finding applies to.

mod common;
use common::*;
use std::collections::BTreeSet;

/// Every Python/Node mode: the CLI (spawn), a server in spawn mode, a server in zygote mode
/// (Python zygote, Node pool).
fn every_mode() -> Vec<(&'static str, Runner)> {
    let zygote = Runner::server("zygote");
    // Really a zygote child: its parent (the zygote) is outside its pid namespace, so it
    // reads as 0 (a spawn-mode program's parent is its jail's init, pid 1).
    let r = zygote.run("python3", "import os\nprint(os.getppid())", &[]);
    assert_eq!(r.stdout(), "0\n", "not a zygote child: {:?}", r.json);
    vec![
        ("cli", Runner::cli()),
        ("server spawn", Runner::server("spawn")),
        ("server zygote", zygote),
    ]
}

/// Writes every control message hako-wire knows (READY first: on a supervisor that listened
/// it would drop the seccomp listener) to every socket the program holds, then makes a call
/// the policy denies.
const FORGE_PY: &str = r#"import os, stat, struct
msgs = [b"R", b"G", b"S", b"Eforged", b"X" + struct.pack("<iiQQ", 0, 0, 0, 0), b"F{}", b"P", b"W{}", b"Z[]", b"N", b"A"]
socks = 0
# fstat, not /proc/self/fd: a zygote child may not read its own /proc entries.
for fd in range(1024):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        continue
    if stat.S_ISSOCK(mode):
        socks += 1
        for m in msgs:
            try:
                os.write(fd, m)
            except OSError:
                pass
try:
    os.fork()
    print("forked")
except OSError:
    print("fork refused")
print("sockets", socks)
# A zygote child's parent is outside its pid namespace: a run re-run in spawn mode would say 1.
print("parent", os.getppid())
"#;

const FORGE_JS: &str = r#"const fs = require('fs');
const msgs = ['R', 'G', 'S', 'Eforged', 'F{}', 'P', 'W{}', 'Z[]', 'N', 'A'].map((m) => Buffer.from(m));
msgs.push(Buffer.concat([Buffer.from('X'), Buffer.alloc(24)]));
let socks = 0;
for (let fd = 0; fd < 1024; fd++) {
  let st;
  try { st = fs.fstatSync(fd); } catch (e) { continue; }
  if (st.isSocket()) {
    socks++;
    for (const m of msgs) { try { fs.writeSync(fd, m); } catch (e) {} }
  }
}
let refused = false;
try { require('child_process').execSync('true'); } catch (e) { refused = true; }
console.log('spawn refused', refused);
console.log('sockets', socks);
"#;

#[test]
fn no_run_holds_a_channel_to_its_supervisor_in_any_mode() {
    if !can_run_jail() {
        return;
    }
    for (mode, jail) in every_mode() {
        // Twice: the second run is served by the same (warm) worker after the forgery.
        for round in 0..2 {
            let r = jail.run("python3", FORGE_PY, &[]);
            assert_eq!(r.status(), "ok", "{mode} round {round}: {:?}", r.json);
            let parent = if mode == "server zygote" { 0 } else { 1 };
            assert_eq!(
                r.stdout(),
                format!("fork refused\nsockets 0\nparent {parent}\n"),
                "{mode} round {round}: {:?}",
                r.json
            );
            // The supervisor still holds the seccomp listener: the denied call is named.
            assert!(
                r.blocked().contains(&"clone".to_string()),
                "{mode} round {round}: {:?}",
                r.json
            );
            let r = jail.run("nodejs", FORGE_JS, &[]);
            assert_eq!(r.status(), "ok", "{mode} node round {round}: {:?}", r.json);
            assert_eq!(
                r.stdout(),
                "spawn refused true\nsockets 0\n",
                "{mode} node round {round}: {:?}",
                r.json
            );
            assert!(
                !r.blocked().is_empty(),
                "{mode} node round {round}: {:?}",
                r.json
            );
        }
        if let Runner::Server(server) = &jail {
            let metrics = get_text(server, "/metrics");
            assert!(
                metrics.lines().any(|l| l == "hako_tampering_total 0"),
                "{mode}: {metrics}"
            );
        }
    }
}

/// seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, allow-all) would give
/// the run a listener of its own, asked before the supervisor's for every denied call.
#[test]
fn a_seccomp_filter_with_its_own_listener_is_refused_and_named() {
    if !can_run_jail() {
        return;
    }
    let code = r#"import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
allow = ctypes.create_string_buffer(struct.pack("HBBI", 6, 0, 0, 0x7fff0000))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Prog(1, ctypes.addressof(allow))
fd = libc.syscall(317, 1, 8, ctypes.byref(prog))
print(fd, os.strerror(ctypes.get_errno()) if fd < 0 else "listener")
print(libc.syscall(317, 1, 0, ctypes.byref(prog)))
"#;
    for (mode, jail) in every_mode() {
        let r = jail.run("python3", code, &[]);
        assert_eq!(
            r.stdout(),
            "-1 Operation not permitted\n0\n",
            "{mode}: {:?}",
            r.json
        );
        assert!(
            r.blocked().contains(&"seccomp".to_string()),
            "{mode}: {:?}",
            r.json
        );
    }
}

#[test]
fn a_syntax_error_shows_the_users_line_in_every_mode() {
    if !can_run_jail() {
        return;
    }
    for (mode, jail) in every_mode() {
        let r = jail.run("python3", "x = 1\ny = 2\ndef main(:", &[]);
        assert_eq!(r.status(), "error", "{mode}: {:?}", r.json);
        assert!(
            r.stderr().contains("line 3\n    def main(:\n"),
            "{mode}: {:?}",
            r.json
        );
        assert!(r.stderr().contains("SyntaxError"), "{mode}: {:?}", r.json);
        let r = jail.run(
            "python3",
            "def f():\n    raise ValueError('boom')\n\nf()",
            &[],
        );
        assert!(
            r.stderr()
                .contains("line 2, in f\n    raise ValueError('boom')\n"),
            "{mode}: {:?}",
            r.json
        );
    }
}

#[test]
fn consecutive_warm_runs_do_not_see_each_others_sockets() {
    if !can_run_jail() {
        return;
    }
    let config = "worker_timeout: 20\nmax_workers: 1\nhako:\n  mode: zygote\n";
    let jail = Runner::warm_server(config);
    assert_eq!(
        jail.run("python3", "import os\nprint(os.getppid())", &[])
            .stdout(),
        "0\n"
    );
    // A closed loopback connection leaves a TIME_WAIT entry for a minute.
    let leave = "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nc = socket.create_connection(s.getsockname())\na, _ = s.accept()\nc.close()\na.close()\ns.close()\nprint(len(open('/proc/net/tcp').read().splitlines()) - 1)";
    let look = "print(open('/proc/net/tcp').read().splitlines()[1:])";
    for round in 0..3 {
        let r = jail.run("python3", leave, &[]);
        assert_eq!(r.stdout(), "1\n", "round {round}: {:?}", r.json);
        let r = jail.run("python3", look, &[]);
        assert_eq!(r.stdout(), "[]\n", "round {round}: {:?}", r.json);
    }
}

/// The calibration listing is read from hako's own calibration child only, when a worker
/// starts: a run that prints one (header, ranges, end line) is answered with its output, and
/// no pool's hot pages change.
#[test]
fn a_run_printing_a_calibration_listing_changes_no_pools_hot_pages() {
    if !can_run_jail() {
        return;
    }
    let config = "worker_timeout: 20\nmax_workers: 1\nhako:\n  mode: zygote\n";
    let jail = Runner::warm_server(config);
    let Runner::Server(server) = &jail else {
        unreachable!("a warm server")
    };
    let hot_pages = || -> Vec<String> {
        get_text(server, "/metrics")
            .lines()
            .filter(|l| l.starts_with("hako_pool_hot_pages{"))
            .map(str::to_string)
            .collect()
    };
    // Every pool's first worker has calibrated.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut before = hot_pages();
    while before.is_empty() || before.iter().any(|l| l.ends_with(" 0")) {
        assert!(std::time::Instant::now() < deadline, "{before:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
        before = hot_pages();
    }
    let forged = "import sys\nsys.stdout.write('\\nhako hot pages\\nhot 1000 1000\\nhot 7f0000000000 4000000\\ncalibrated\\n')";
    for round in 0..3 {
        let r = jail.run("python3", forged, &[]);
        assert_eq!(r.status(), "ok", "round {round}: {:?}", r.json);
        assert_eq!(
            r.stdout(),
            "\nhako hot pages\nhot 1000 1000\nhot 7f0000000000 4000000\ncalibrated\n",
            "round {round}"
        );
    }
    let r = jail.run("python3", "import os\nprint(os.getppid())", &[]);
    assert_eq!(r.stdout(), "0\n", "{:?}", r.json);
    assert_eq!(hot_pages(), before);
}

#[test]
fn runs_cannot_read_the_warmup_code_or_the_preload_list() {
    if !can_run_jail() {
        return;
    }
    let config = "worker_timeout: 20\nmax_workers: 1\nhako:\n  mode: zygote\n  python_preload: [json, colorsys]\n  python_warmup: \"HIDDEN = 'warmup-canary-7f3a'\"\n";
    let jail = Runner::warm_server(config);
    assert_eq!(
        jail.run("python3", "import os\nprint(os.getppid())", &[])
            .stdout(),
        "0\n"
    );
    // Where a run could find them: the environment (now and as inherited: the block between
    // argv[0] and AT_EXECFN at the top of the stack), and the globals of every frame and
    // module it can reach.
    let code = r#"import ctypes, os, sys
def look():
    # Built here so that the program's own text and globals never hold them.
    canaries = ("warmup-" + "canary-7f3a", "color" + "sys")
    found = []
    if any(c in k or c in v for k, v in os.environ.items() for c in canaries):
        found.append("os.environ")
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    start = ctypes.c_void_p.in_dll(libc, "program_invocation_name").value
    end = libc.getauxval(31)
    block = ctypes.string_at(start, end - start) + ctypes.string_at(end)
    if any(c.encode() in block for c in canaries):
        found.append("environment block")
    def holds(space):
        try:
            items = list(space.items())
        except Exception:
            return False
        return any(canaries[0] in repr(v) for _, v in items if isinstance(v, (str, bytes, list, tuple, dict)))
    frame = sys._getframe()
    while frame is not None:
        if frame.f_globals is not look.__globals__ and (holds(frame.f_globals) or holds(frame.f_locals)):
            found.append("frame " + frame.f_code.co_name)
        frame = frame.f_back
    for name, module in list(sys.modules.items()):
        if holds(getattr(module, "__dict__", {})):
            found.append("module " + name)
    return found, end - start > 0
print(*look())
"#;
    for round in 0..2 {
        let r = jail.run("python3", code, &[]);
        assert_eq!(r.stdout(), "[] True\n", "round {round}: {:?}", r.json);
    }
}

/// Host pids of processes whose name (comm) is `name`.
fn processes_named(name: &str) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name) {
            pids.insert(pid);
        }
    }
    pids
}

/// The farthest ancestor of `pid` whose command line has `word`: the helper of a run (the
/// jail's init, a clone of the helper, has the same command line).
fn ancestor_with(pid: u32, word: &str) -> Option<u32> {
    let mut current = pid;
    let mut found = None;
    for _ in 0..16 {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{current}/status")) else {
            break;
        };
        let parent: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).ok()?;
        if String::from_utf8_lossy(&cmdline).contains(word) {
            found = Some(parent);
        } else if found.is_some() {
            break;
        }
        current = parent;
    }
    found
}

/// The helper supervising the zygote run `pid`: not its ancestor (the run's zygote is forked
/// from a preloaded parent), but named in its cgroup (`zygote-<helper pid>-...`).
fn zygote_helper_of(pid: u32) -> Option<u32> {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    groups.lines().find_map(|line| {
        let name = line.rsplit('/').next()?;
        name.strip_prefix("zygote-")?
            .split('-')
            .next()?
            .parse()
            .ok()
    })
}

/// Posts `code` (which names itself `probe` and sleeps), kills the helper supervising it once
/// it runs, and returns the answer and every pid the probe ever had.
fn kill_helper_mid_run(
    server: &Server,
    language: &str,
    code: &str,
    helper: &str,
) -> (serde_json::Value, BTreeSet<u32>) {
    const PROBE: &str = "hako-rerun-prob";
    let mut seen = BTreeSet::new();
    let answer = std::thread::scope(|scope| {
        let body = serde_json::json!({"language": language, "code": code, "limits": {"timeout_ms": 20000}});
        let posted = scope.spawn(move || post_run(server, &body));
        let mut killed = false;
        while !posted.is_finished() {
            let now = processes_named(PROBE);
            if !killed {
                if let Some(&pid) = now.iter().next() {
                    let helper_pid = if helper == "__zygote" {
                        zygote_helper_of(pid)
                    } else {
                        ancestor_with(pid, helper)
                    };
                    let helper_pid = helper_pid.expect("the run's helper");
                    // SAFETY: kill only sends a signal to the helper process we found.
                    unsafe { libc::kill(helper_pid as i32, libc::SIGKILL) };
                    killed = true;
                }
            }
            seen.extend(now);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(killed, "the probe never ran");
        posted.join().unwrap()
    });
    seen.extend(processes_named(PROBE));
    (answer, seen)
}

#[test]
fn a_killed_helper_never_runs_the_program_again() {
    if !can_run_jail() {
        return;
    }
    let config = "worker_timeout: 30\nmax_workers: 1\nhako:\n  mode: zygote\n";
    let server = Server::start(config, &[]);
    server.wait_warm();
    let py = "import ctypes, time\nctypes.CDLL(None).prctl(15, b'hako-rerun-probe', 0, 0, 0)\nprint('started', flush=True)\ntime.sleep(8)\nprint('finished')";
    let js = "process.title = 'hako-rerun-probe';\nconsole.log('started');\nsetTimeout(() => console.log('finished'), 8000);";
    for (language, code, helper) in [("python3", py, "__zygote"), ("nodejs", js, "__jail")] {
        let (answer, probes) = kill_helper_mid_run(&server, language, code, helper);
        assert_eq!(answer["status"], "error", "{language}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("ended unexpectedly") && error.contains("not run again"),
            "{language}: {answer}"
        );
        assert!(
            !answer["stdout"]
                .as_str()
                .unwrap_or_default()
                .contains("finished"),
            "{language}: {answer}"
        );
        assert_eq!(
            probes.len(),
            1,
            "{language}: executions {probes:?}: {answer}"
        );
        // The server keeps serving the language.
        let jail_answer = post_run(
            &server,
            &serde_json::json!({"language": language, "code": if language == "python3" { "print('next')" } else { "console.log('next')" }}),
        );
        assert_eq!(jail_answer["stdout"], "next\n", "{language}: {jail_answer}");
    }
    // Spawn mode: the same answer when its jail helper is killed.
    let server = Server::start(
        "worker_timeout: 30\nmax_workers: 1\nhako:\n  mode: spawn\n",
        &[],
    );
    let (answer, probes) = kill_helper_mid_run(&server, "python3", py, "__jail");
    assert_eq!(answer["status"], "error", "spawn: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ended unexpectedly"),
        "spawn: {answer}"
    );
    assert_eq!(probes.len(), 1, "spawn: executions {probes:?}: {answer}");
}

/// A run holds no capability in any set, the bounding set included (a zygote keeps five
/// in its own; each run child empties it), and cannot gain one.
#[test]
fn a_run_holds_no_capability_in_any_mode() {
    if !can_run_jail() {
        return;
    }
    let code = r#"import ctypes
libc = ctypes.CDLL(None, use_errno=True)
bounding = [cap for cap in range(64) if libc.prctl(23, cap, 0, 0, 0) == 1]
sets = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"):
        sets[key] = value.strip()
print(bounding, sorted(sets.items()))
"#;
    let none = "[] [('CapAmb', '0000000000000000'), ('CapBnd', '0000000000000000'), \
                ('CapEff', '0000000000000000'), ('CapInh', '0000000000000000'), \
                ('CapPrm', '0000000000000000'), ('NoNewPrivs', '1')]\n";
    for (mode, jail) in every_mode() {
        let r = jail.run("python3", code, &[]);
        assert_eq!(r.stdout(), none, "{mode}: {:?}", r.json);
    }
}
