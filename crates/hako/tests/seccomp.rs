//! The syscall policy people can live with: named denials in every mode, additive
//! ALLOWED_SYSCALLS by name and number, `hako profile`, and stdlib corpora that run without
//! a single blocked call.

mod common;
use common::*;
use std::process::Command;

/// Calls syslog(SYSLOG_ACTION_SIZE_BUFFER), which the default policy does not allow, then
/// keeps going and exits with `exit`.
fn syslog_program(exit: i32) -> String {
    format!(
        "import ctypes, os, sys\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.klogctl(10, None, 0)\n\
print(r, ctypes.get_errno(), 'still running')\nsys.exit({exit})\n"
    )
}

fn server_with_allowed(mode: &str, allowed: Option<&str>) -> Runner {
    let mut env = vec![("HAKO_TEST_MARKER", "x")];
    if let Some(value) = allowed {
        env.push(("ALLOWED_SYSCALLS", value));
    }
    Runner::server_with_env(mode, &env)
}

fn named_denial(jail: &Runner) {
    let r = jail.run("python3", &syslog_program(3), &[]);
    assert_eq!(
        r.stdout(),
        "-1 1 still running\n",
        "the program must see EPERM and go on: {:?}",
        r.json
    );
    assert_eq!(r.blocked(), vec!["syslog".to_string()], "{:?}", r.json);
    assert_eq!(r.status(), "blocked");
    assert!(
        r.error().contains(
            "error: operation not permitted: syscall syslog blocked by the python3 policy; allow it with ALLOWED_SYSCALLS=syslog"
        ),
        "{:?}",
        r.json
    );
}

fn allowed_by(jail: &Runner) {
    let r = jail.run("python3", &syslog_program(0), &[]);
    assert!(r.blocked().is_empty(), "{:?}", r.json);
    assert!(!r.error().contains("syslog"), "{:?}", r.json);
    assert!(r.stdout().ends_with("still running\n"), "{:?}", r.json);
}

#[test]
fn blocked_syscall_is_named_in_every_mode() {
    if !can_run_jail() {
        return;
    }
    named_denial(&Runner::cli());
    for mode in ["spawn", "zygote"] {
        named_denial(&server_with_allowed(mode, None));
    }
}

#[test]
fn allowed_syscalls_adds_by_name_and_by_number() {
    if !can_run_jail() {
        return;
    }
    let nr = if cfg!(target_arch = "aarch64") {
        "116"
    } else {
        "103"
    };
    for value in ["syslog", nr] {
        let r = run_with_env(
            "python3",
            &syslog_program(0),
            &[],
            &[("ALLOWED_SYSCALLS", value)],
        );
        assert!(
            r.blocked().is_empty(),
            "ALLOWED_SYSCALLS={value}: {:?}",
            r.json
        );
        for mode in ["spawn", "zygote"] {
            allowed_by(&server_with_allowed(mode, Some(value)));
        }
    }
    // Still additive: the default policy is intact (fork stays denied).
    let r = run_with_env(
        "python3",
        "import os\nos.fork()",
        &[],
        &[("ALLOWED_SYSCALLS", "syslog")],
    );
    assert_eq!(r.blocked(), vec!["clone".to_string()], "{:?}", r.json);
}

#[test]
fn unknown_allowed_syscall_stops_start_up() {
    if !can_run_jail() {
        return;
    }
    for value in ["no_such_call", "99999"] {
        let out = Command::new(HAKO)
            .args(["run", "-"])
            .env("ALLOWED_SYSCALLS", value)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(value) && err.contains("ALLOWED_SYSCALLS"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(HAKO)
            .arg("serve")
            .current_dir(dir.path())
            .env("ALLOWED_SYSCALLS", value)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "serve started with ALLOWED_SYSCALLS={value}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(value));
    }
}

#[test]
fn profile_prints_the_line_that_makes_the_run_pass() {
    if !can_run_jail() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("needs_syslog.py");
    std::fs::write(&program, syslog_program(0)).unwrap();
    let out = Command::new(HAKO)
        .args(["profile", program.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("syslog") && l.contains("call(s)")),
        "{text}"
    );
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ALLOWED_SYSCALLS="))
        .expect("an ALLOWED_SYSCALLS line");
    let value = line.trim_start_matches("ALLOWED_SYSCALLS=");
    assert_eq!(value, "syslog");
    // Pasted into the environment...
    let r = run_with_env(
        "python3",
        &syslog_program(0),
        &[],
        &[("ALLOWED_SYSCALLS", value)],
    );
    assert!(r.blocked().is_empty() && r.status() == "ok", "{:?}", r.json);
    // ...or its YAML into conf/config.yaml.
    let yaml_start = text.find("allowed_syscalls:").expect("YAML lines");
    let yaml: String = text[yaml_start..]
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("program:"))
        .map(|l| format!("{}\n", l.trim_start_matches("  ")))
        .collect();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::write(dir.path().join("conf/config.yaml"), &yaml).unwrap();
    let out = Command::new(HAKO)
        .args(["run", "--json", program.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(
        json["blocked_syscalls"],
        serde_json::json!([]),
        "{yaml}\n{json}"
    );
    // A failing program makes profile exit non-zero.
    std::fs::write(&program, "raise SystemExit(4)").unwrap();
    let out = Command::new(HAKO)
        .args(["profile", program.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn doctor_prints_the_effective_policy() {
    let out = Command::new(HAKO)
        .args(["doctor", "--policy", "python3"])
        .env("ALLOWED_SYSCALLS", "syslog")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("[threads]") && text.contains("futex"),
        "{text}"
    );
    assert!(text.contains("extra allowed: syslog"), "{text}");
}

const PYTHON_CORPUS: &str = r#"
import json, re, datetime, zoneinfo, decimal, sqlite3, threading, asyncio, ssl, hashlib
import tempfile, gzip, zipfile, csv, uuid, logging, io, os, concurrent.futures, random, base64
out = {}
out['json'] = json.loads(json.dumps({'a': [1, 2]}))['a'][1]
out['re'] = re.sub(r'(\d+)', r'<\1>', 'a1b22')
out['tz'] = datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo('Asia/Shanghai')).utcoffset().seconds
out['decimal'] = str(decimal.Decimal('1.1') + decimal.Decimal('2.2'))
db = sqlite3.connect(os.path.join(tempfile.mkdtemp(), 'x.db'))
db.execute('create table t (x)'); db.executemany('insert into t values (?)', [(i,) for i in range(10)]); db.commit()
out['sqlite'] = db.execute('select sum(x) from t').fetchone()[0]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    out['threads'] = sum(pool.map(lambda x: x * x, range(10)))
lock = threading.Lock(); ev = threading.Event(); t = threading.Thread(target=ev.set); t.start(); t.join()
out['event'] = ev.is_set()
async def agen():
    await asyncio.sleep(0.01)
    r, w = await asyncio.open_connection(sock=None) if False else (None, None)
    return 'ok'
out['asyncio'] = asyncio.run(agen())
out['ssl'] = ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED
out['hash'] = hashlib.sha256(b'x').hexdigest()[:6] + hashlib.md5(b'x').hexdigest()[:2]
buf = io.BytesIO(); gzip.GzipFile(fileobj=buf, mode='wb').write(b'abc' * 100)
out['gzip'] = len(gzip.decompress(buf.getvalue()))
zpath = os.path.join(tempfile.gettempdir(), 'a.zip')
with zipfile.ZipFile(zpath, 'w', zipfile.ZIP_DEFLATED) as z: z.writestr('f.txt', 'hello')
out['zip'] = zipfile.ZipFile(zpath).read('f.txt').decode()
s = io.StringIO(); csv.writer(s).writerow(['a', 'b,c']); out['csv'] = list(csv.reader(io.StringIO(s.getvalue())))[0][1]
out['uuid'] = len(str(uuid.uuid4())) + len(str(uuid.uuid1()))
logging.basicConfig(level=logging.INFO); logging.getLogger('x').info('logged')
out['os'] = [os.getcwd(), len(os.listdir('/tmp')) >= 1, os.cpu_count() >= 1, len(os.urandom(4)), os.getpid() > 0, os.stat('/tmp').st_mode > 0, os.path.exists('/etc/passwd')]
print(json.dumps(out, sort_keys=True))
"#;

const NODE_CORPUS: &str = r#"
const fs = require('fs'), crypto = require('crypto'), zlib = require('zlib'), path = require('path');
const { Worker } = require('worker_threads');
const out = {};
fs.writeFileSync('/tmp/a.txt', 'hello'); out.fs = fs.readFileSync('/tmp/a.txt', 'utf8') + fs.readdirSync('/tmp').length;
fs.unlinkSync('/tmp/a.txt');
out.crypto = crypto.createHash('sha256').update('x').digest('hex').slice(0, 6) + crypto.randomBytes(4).length;
out.zlib = zlib.gunzipSync(zlib.gzipSync(Buffer.from('abc'.repeat(100)))).length;
const w = new Worker('require("worker_threads").parentPort.postMessage(21 * 2)', { eval: true });
w.on('message', async (v) => {
  out.worker = v;
  await new Promise((r) => setTimeout(r, 10));
  out.timers = true;
  try { await fetch('http://example.com/'); out.fetch = 'reached'; } catch (e) { out.fetch = e.name; }
  console.log(JSON.stringify(out));
});
"#;

fn corpora_run_clean(jail: &Runner) {
    let r = jail.run("python3", PYTHON_CORPUS, &[]);
    assert_eq!(r.status(), "ok", "{:?}", r.json);
    assert!(
        r.blocked().is_empty(),
        "python corpus hit the policy: {:?}",
        r.json
    );
    let got: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
    assert_eq!(got["sqlite"], 45);
    assert_eq!(got["threads"], 285);
    assert_eq!(got["tz"], 28800);
    assert_eq!(got["zip"], "hello");
    assert_eq!(got["asyncio"], "ok");
    assert!(r.stderr().contains("INFO:x:logged"));

    let r = jail.run("nodejs", NODE_CORPUS, &[]);
    assert_eq!(r.status(), "ok", "{:?}", r.json);
    assert!(
        r.blocked().is_empty(),
        "node corpus hit the policy: {:?}",
        r.json
    );
    let got: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
    // The file it wrote and the run's private home (`/tmp/home`).
    assert_eq!(got["fs"], "hello2");
    assert_eq!(got["zlib"], 300);
    assert_eq!(got["worker"], 42);
    assert_eq!(
        got["fetch"], "TypeError",
        "fetch must fail cleanly without network: {got}"
    );
}

#[test]
fn stdlib_corpora_need_nothing_outside_the_default_policy() {
    if !can_run_jail() {
        return;
    }
    corpora_run_clean(&Runner::cli());
    for mode in ["spawn", "zygote"] {
        corpora_run_clean(&Runner::server(mode));
    }
}

/// A run that calls thousands of distinct denied numbers gets a bounded report: the first
/// ones are named, the rest counted in one line.
fn a_flood_of_distinct_denied_numbers(jail: &Runner) {
    let program = "import ctypes\nlibc = ctypes.CDLL(None)\nfor i in range(3000):\n    libc.syscall(0x40000000 + i)\nprint('done')\n";
    let r = jail.run("python3", program, &[]);
    assert_eq!(r.stdout(), "done\n", "{:?}", r.json);
    let blocked = r.blocked();
    assert!(
        blocked.len() <= 65 && blocked.iter().any(|b| b == "other_syscalls"),
        "{blocked:?}"
    );
    assert!(
        r.error().len() < 64 << 10,
        "error text of {} bytes",
        r.error().len()
    );
}

#[test]
fn the_blocked_syscall_report_is_bounded_in_every_mode() {
    if !can_run_jail() {
        return;
    }
    a_flood_of_distinct_denied_numbers(&Runner::cli());
    for mode in ["spawn", "zygote"] {
        a_flood_of_distinct_denied_numbers(&server_with_allowed(mode, None));
    }
}
