//! Attacks on the supervisor's memory guard, which limits a run's memory where no memory
//! cgroup holds it (`hako.cgroup_root` pointing at no cgroup hierarchy, as in a
//! user-namespaced pod whose cgroup is not delegated). The guard sums what it can read of
//! the run from `/proc`; each attack keeps memory where that sum did not look: pages of a
//! memfd written and never mapped, page tables of sparse mappings, and data queued in the
//! sockets (TCP and unix) of the run's own network namespace. Every attack runs for real, in every mode it
//! applies to: the CLI (spawn), a server in spawn mode, a server in zygote mode (Python
//! zygote, Node pool), and the agent API's runs.

mod common;
use common::*;

/// A runner whose runs are limited by the memory guard, not by a cgroup.
struct Guarded {
    runner: Runner,
    no_cgroups: tempfile::TempDir,
}

impl Guarded {
    fn cli() -> Guarded {
        Guarded {
            runner: Runner::cli(),
            no_cgroups: tempfile::tempdir().unwrap(),
        }
    }

    /// A server in `mode` (spawn | zygote) that allows runs up to 20 s.
    fn server(mode: &str) -> Guarded {
        Guarded::server_with_env(mode, &[])
    }

    /// [`Guarded::server`] with `env` (e.g. [`FORKING`]).
    fn server_with_env(mode: &str, env: &[(&str, &str)]) -> Guarded {
        let no_cgroups = tempfile::tempdir().unwrap();
        let config = format!(
            "worker_timeout: 20\nmax_workers: 2\nhako:\n  mode: {mode}\n  cgroup_root: {}\n",
            no_cgroups.path().display()
        );
        let server = Server::start(&config, env);
        if mode == "zygote" {
            server.wait_warm();
        }
        Guarded {
            runner: Runner::Server(server),
            no_cgroups,
        }
    }

    /// The agent API's one-shot runs (`POST /v2/runs`, served by the live helper).
    fn agent_runs() -> Guarded {
        let no_cgroups = tempfile::tempdir().unwrap();
        let config = format!(
            "worker_timeout: 20\nmax_workers: 2\nhako:\n  mode: spawn\n  cgroup_root: {}\n",
            no_cgroups.path().display()
        );
        Guarded {
            runner: Runner::V2Runs(Server::start(&config, &[])),
            no_cgroups,
        }
    }

    fn run(&self, language: &str, code: &str, extra: &[&str]) -> Run {
        match &self.runner {
            Runner::Cli => {
                let root = self.no_cgroups.path().to_string_lossy().into_owned();
                run_with_env(language, code, extra, &[("HAKO_CGROUP_ROOT", &root)])
            }
            runner => runner.run(language, code, extra),
        }
    }
}

/// 256 MiB written into memfds (32 MiB each, within the file-size rlimit) and never mapped:
/// charged to no process, so no process's resident memory shows them. Held for a while so
/// that any poll would see them.
const MEMFD_HIDE: &str = r#"
import os, time
try:
    fds = [os.memfd_create("hide") for _ in range(8)]
except OSError as e:
    print("memfd refused", e.errno, flush=True)
else:
    chunk = b"x" * (1 << 20)
    for fd in fds:
        for _ in range(32):
            os.write(fd, chunk)
    print("hidden", sum(os.fstat(fd).st_size for fd in fds) >> 20, flush=True)
    time.sleep(2)
    print("held")
"#;

/// Page tables: reading one byte every 2 MiB of 96 GiB of untouched (calloc'd) buffers maps
/// the shared zero page and nothing else, yet takes a 4 KiB page table per 2 MiB: 192 MiB of
/// page tables against a few MiB of resident memory. Node has no address-space rlimit
/// (V8 reserves far more than it uses), so only the guard bounds this.
const PAGE_TABLES_JS: &str = r#"
const fs = require('fs');
const keep = [];
let sum = 0;
for (let i = 0; i < 96; i++) {
  const a = new Uint8Array(new ArrayBuffer(1 << 30));
  for (let off = 0; off < a.length; off += 1 << 21) sum += a[off];
  keep.push(a);
}
const pte = fs.readFileSync('/proc/self/status', 'utf8').match(/VmPTE:\s+(\d+)/)[1];
console.log('hidden', pte >> 10, sum);
setTimeout(() => console.log('held'), 2000);
"#;

/// What a run needs to fork, which the default Python policy refuses.
const FORKING: (&str, &str) = ("ALLOWED_SYSCALLS", "clone,clone3,wait4");

/// 150 MiB held by an orphan: a grandchild whose parent exited, so it hangs under the run's
/// pid 1. In zygote mode that pid 1 is a reaper, not the run, and outside the run's tree.
const ORPHAN_HOG: &str = r#"
import os, time
if os.fork() == 0:
    if os.fork() == 0:
        hog = b"x" * (150 << 20)
        time.sleep(5)
        os._exit(0)
    os._exit(0)
os.wait()
time.sleep(5)
print("survived")
"#;

/// The orphan's memory counts against the run's 64 MiB.
fn orphans_are_counted(jail: &Guarded, mode: &str) {
    let r = jail.run(
        "python3",
        ORPHAN_HOG,
        &["--memory-mb", "64", "--timeout", "20"],
    );
    assert_eq!(r.status(), "memory_limit", "{mode}: {:?}", r.json);
    assert!(!r.stdout().contains("survived"), "{mode}: {:?}", r.json);
}

#[test]
fn orphans_cannot_hide_from_the_guard_server_spawn() {
    if can_run_jail() {
        orphans_are_counted(
            &Guarded::server_with_env("spawn", &[FORKING]),
            "server spawn",
        );
    }
}

#[test]
fn orphans_cannot_hide_from_the_guard_server_zygote() {
    if can_run_jail() {
        orphans_are_counted(
            &Guarded::server_with_env("zygote", &[FORKING]),
            "server zygote",
        );
    }
}

/// A memfd's pages are refused where the guard limits the run (they would be nobody's), and
/// the refusal is named like any other denied call.
fn memfd_is_refused(jail: &Guarded, mode: &str) {
    let r = jail.run(
        "python3",
        MEMFD_HIDE,
        &["--memory-mb", "64", "--timeout", "20"],
    );
    assert_eq!(
        r.stdout(),
        format!("memfd refused {}\n", libc::EPERM),
        "{mode}: {:?}",
        r.json
    );
    assert!(
        r.blocked().contains(&"memfd_create".to_string()),
        "{mode}: {:?}",
        r.json
    );
}

/// Page tables count: the run is stopped at its limit before it holds them.
fn page_tables_are_counted(jail: &Guarded, mode: &str) {
    let r = jail.run(
        "nodejs",
        PAGE_TABLES_JS,
        &["--memory-mb", "128", "--timeout", "20"],
    );
    assert_eq!(r.status(), "memory_limit", "{mode}: {:?}", r.json);
    assert!(!r.stdout().contains("hidden"), "{mode}: {:?}", r.json);
    // The reported peak is what the guard saw, past the limit.
    let peak = r.json["usage"]["peak_memory_bytes"]
        .as_u64()
        .unwrap_or_default();
    assert!(peak > 128 << 20, "{mode}: peak {peak}: {:?}", r.json);
}

#[test]
fn memory_outside_processes_cannot_hide_from_the_guard_cli_spawn() {
    if !can_run_jail() {
        return;
    }
    let jail = Guarded::cli();
    memfd_is_refused(&jail, "cli");
    page_tables_are_counted(&jail, "cli");
}

#[test]
fn memory_outside_processes_cannot_hide_from_the_guard_server_spawn() {
    if !can_run_jail() {
        return;
    }
    let jail = Guarded::server("spawn");
    memfd_is_refused(&jail, "server spawn");
    page_tables_are_counted(&jail, "server spawn");
}

#[test]
fn memory_outside_processes_cannot_hide_from_the_guard_server_zygote_and_node_pool() {
    if !can_run_jail() {
        return;
    }
    let jail = Guarded::server("zygote");
    // Really a zygote child: its parent (the zygote) is outside its pid namespace, so it
    // reads as 0 (a spawn-mode program's parent is its jail's init, pid 1).
    let r = jail.run("python3", "import os\nprint(os.getppid())", &[]);
    assert_eq!(r.stdout(), "0\n", "not a zygote child: {:?}", r.json);
    memfd_is_refused(&jail, "server zygote");
    page_tables_are_counted(&jail, "node pool");
    // The zygote still serves after both.
    let r = jail.run("python3", "print('fine')", &[]);
    assert_eq!(r.stdout(), "fine\n", "{:?}", r.json);
}

#[test]
fn memory_outside_processes_cannot_hide_from_the_guard_agent_runs() {
    if !can_run_jail() {
        return;
    }
    let jail = Guarded::agent_runs();
    memfd_is_refused(&jail, "agent runs");
    page_tables_are_counted(&jail, "agent runs");
}

/// Where a cgroup limits the run, its memfd pages are charged to it: memfd stays allowed.
#[test]
fn memfd_stays_allowed_under_a_memory_cgroup() {
    if !can_run_jail() {
        return;
    }
    let doctor = std::process::Command::new(HAKO)
        .arg("doctor")
        .output()
        .unwrap();
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    if doctor
        .lines()
        .any(|l| l.starts_with("memory limit") && l.contains("guard"))
    {
        eprintln!("skipped: no memory cgroup on this host (the memory guard limits runs)");
        return;
    }
    let r = run(
        "python3",
        "import os\nfd = os.memfd_create('x')\nos.write(fd, b'abc')\nprint(os.fstat(fd).st_size)\n",
        &[],
    );
    assert_eq!(r.stdout(), "3\n", "{:?}", r.json);
}

/// Data queued on loopback TCP connections the run never reads: kept in socket buffers of
/// the run's own network namespace, charged to no process. Queued within its first second,
/// then held.
const QUEUE_ON_LOOPBACK: &str = r#"
import socket, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(256)
keep, queued, chunk = [], 0, b"x" * 65536
for _ in range(200):
    try:
        c = socket.create_connection(server.getsockname())
        keep.append((c, server.accept()[0]))
    except OSError:
        break
    c.setblocking(False)
    while True:
        try:
            queued += c.send(chunk)
        except OSError:
            break
    if queued > 256 << 20:
        break
print("queued", queued >> 20, flush=True)
time.sleep(4)
print("held")
"#;

/// Data queued on unix socket pairs the run never reads (no `/proc` table shows their
/// queues), `chunk` bytes per send, with the sending end of every `close_every`-th pair
/// closed so that only its receiver holds the data. With one-byte sends each buffer takes
/// about 1 KiB in the kernel while the receiver's queue shows one byte.
fn queue_on_unix_pairs(chunk: usize, close_every: usize) -> String {
    format!(
        r#"
import socket, time
keep, queued, buffers = [], 0, 0
for i in range(900):
    try:
        a, b = socket.socketpair()
    except OSError:
        break
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    except OSError:
        pass
    a.setblocking(False)
    while True:
        try:
            queued += a.send(b"x" * {chunk})
            buffers += 1
        except OSError:
            break
    if i % {close_every} == {close_every} - 1:
        a.close()
        keep.append(b)
    else:
        keep.append((a, b))
    if queued > 256 << 20 or buffers > 300000:
        break
print("queued", queued >> 20, "buffers", buffers, flush=True)
time.sleep(4)
print("held")
"#
    )
}

fn socket_buffers_are_counted(jail: &Guarded, mode: &str) {
    for (attack, code) in [
        ("tcp", QUEUE_ON_LOOPBACK.to_string()),
        (
            "unix, half the senders closed",
            queue_on_unix_pairs(65536, 2),
        ),
        (
            "unix, one-byte buffers, every sender closed",
            queue_on_unix_pairs(1, 1),
        ),
    ] {
        let r = jail.run("python3", &code, &["--memory-mb", "64", "--timeout", "20"]);
        assert_eq!(r.status(), "memory_limit", "{mode}, {attack}: {:?}", r.json);
        assert!(
            !r.stdout().contains("held"),
            "{mode}, {attack}: {:?}",
            r.json
        );
    }
}

#[test]
fn socket_buffers_stay_within_the_memory_guard_cli_spawn() {
    if !can_run_jail() {
        return;
    }
    socket_buffers_are_counted(&Guarded::cli(), "cli");
}

#[test]
fn socket_buffers_stay_within_the_memory_guard_server_zygote() {
    if !can_run_jail() {
        return;
    }
    socket_buffers_are_counted(&Guarded::server("zygote"), "server zygote");
}
