//! Network of runs, end to end: the egress guard lets allow-listed destinations through for
//! every common client, refuses the rest before any packet leaves and names them in the
//! result, cuts runs off at their limits, and a run without network reaches nothing. Local
//! servers on 127.0.0.1 only; no test sends traffic anywhere else.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Local servers for one test: HTTP, HTTPS (certificate from a test CA), a TCP sink, a UDP
/// receiver and unix sockets (a path and an abstract name). Each records what reached it.
const SERVERS: &str = r#"
import http.server, json, os, socket, socketserver, ssl, sys, threading
d = sys.argv[1]
def log(kind, what):
    with open(os.path.join(d, "hits-" + kind), "a") as f:
        f.write(what + "\n")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log("http", self.path)
        body = b"hello " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
plain = S(("127.0.0.1", 0), H)
tls = S(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(d, "leaf.pem"), os.path.join(d, "leaf.key"))
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
sink = socket.socket(); sink.bind(("127.0.0.1", 0)); sink.listen(64)
def drain(c):
    n = 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        n += len(b)
    log("sink", str(n))
def sink_loop():
    while True:
        c, _ = sink.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
def udp_loop():
    while True:
        data, _ = udp.recvfrom(65536)
        log("udp", data.decode(errors="replace"))
def unix_loop(s, kind):
    while True:
        c, _ = s.accept()
        log(kind, "connected")
        c.close()
upath = os.path.join(d, "unix.sock")
us = socket.socket(socket.AF_UNIX); us.bind(upath); us.listen(8)
abstract = "\0hako-test-" + str(os.getpid())
ab = socket.socket(socket.AF_UNIX); ab.bind(abstract); ab.listen(8)
for target, args in [(plain.serve_forever, ()), (tls.serve_forever, ()), (sink_loop, ()), (udp_loop, ()),
                     (unix_loop, (us, "unix")), (unix_loop, (ab, "abstract"))]:
    threading.Thread(target=target, args=args, daemon=True).start()
print(json.dumps({"http": plain.server_address[1], "https": tls.server_address[1], "sink": sink.getsockname()[1],
                  "udp": udp.getsockname()[1], "unix": upath, "abstract": abstract[1:]}), flush=True)
sys.stdin.read()
"#;

struct Servers {
    child: Child,
    dir: tempfile::TempDir,
    http: u16,
    https: u16,
    sink: u16,
    udp: u16,
    unix: String,
    abstract_name: String,
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Servers {
    fn start() -> Servers {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVERS)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test servers");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("servers said {line:?}: {e}"));
        let port = |k: &str| v[k].as_u64().unwrap() as u16;
        Servers {
            http: port("http"),
            https: port("https"),
            sink: port("sink"),
            udp: port("udp"),
            unix: v["unix"].as_str().unwrap().to_string(),
            abstract_name: v["abstract"].as_str().unwrap().to_string(),
            child,
            dir,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// What reached one server kind (`http`, `sink`, `udp`, `unix`, `abstract`).
    fn hits(&self, kind: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("hits-{kind}"))).unwrap_or_default()
    }

    /// A config file for `hako run --config`.
    fn config(&self, network: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("config-{}.yaml", network.len()));
        let text = format!(
            "hako:\n  mode: spawn\n  network:\n    ca_file: {}\n{network}",
            self.ca().display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn make_certs(dir: &Path) {
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hako test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn run_net(config: &Path, language: &str, code: &str) -> Run {
    let config = config.to_string_lossy().into_owned();
    run(
        language,
        code,
        &["--config", &config, "--network", "--timeout", "30"],
    )
}

fn refused(r: &Run) -> Vec<String> {
    r.strings("refused_destinations")
}

/// One program per client; each prints `<client> <url> ok|refused <detail>` per URL.
fn python_clients(urls: &[String]) -> String {
    format!(
        r#"
import json, urllib.request, requests, httpx
urls = {urls}
def attempt(name, fn, url):
    try:
        body = fn(url)
        print(name, url, "ok" if body.startswith("hello") else "bad " + body[:80])
    except Exception as e:
        print(name, url, "refused" if "403" in str(e) or "egress" in str(e) else "error", type(e).__name__, str(e)[:200])
for url in urls:
    attempt("urllib", lambda u: urllib.request.urlopen(u, timeout=10).read().decode(), url)
    def req(u):
        r = requests.get(u, timeout=10)
        if r.status_code != 200:
            raise Exception("%d %s" % (r.status_code, r.text))
        return r.text
    attempt("requests", req, url)
    def hx(u):
        r = httpx.get(u, timeout=10)
        if r.status_code != 200:
            raise Exception("%d %s" % (r.status_code, r.text))
        return r.text
    attempt("httpx", hx, url)
"#,
        urls = serde_json::to_string(urls).unwrap()
    )
}

fn node_clients(urls: &[String]) -> String {
    format!(
        r#"
const http = require('http'), https = require('https');
const urls = {urls};
function verdict(name, url, err, status, body) {{
  if (err) {{
    const text = String(err.message) + ' ' + String(err.cause && err.cause.message);
    console.log(name, url, /egress|403/.test(text) ? 'refused' : 'error', text.slice(0, 200));
  }} else if (status === 200 && body.startsWith('hello')) {{
    console.log(name, url, 'ok');
  }} else {{
    console.log(name, url, status === 403 ? 'refused' : 'bad', status, body.slice(0, 80));
  }}
}}
function get(mod, name, url) {{
  return new Promise((done) => {{
    mod.get(url, (res) => {{
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {{ verdict(name, url, null, res.statusCode, body); done(); }});
    }}).on('error', (e) => {{ verdict(name, url, e); done(); }});
  }});
}}
(async () => {{
  for (const url of urls) {{
    await get(url.startsWith('https') ? https : http, url.startsWith('https') ? 'https' : 'http', url);
    try {{
      const r = await fetch(url);
      verdict('fetch', url, null, r.status, await r.text());
    }} catch (e) {{
      verdict('fetch', url, e);
    }}
  }}
}})();
"#,
        urls = serde_json::to_string(urls).unwrap()
    )
}

fn lines_with<'a>(out: &'a str, word: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(word))
        .collect()
}

#[test]
fn allow_listed_servers_are_reached_by_every_client() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let config = s.config("    allow: [\"127.0.0.1\"]\n");
    let urls = vec![
        format!("http://127.0.0.1:{}/plain", s.http),
        format!("https://127.0.0.1:{}/tls", s.https),
    ];
    let py = run_net(&config, "python3", &python_clients(&urls));
    assert_eq!(lines_with(py.stdout(), "ok").len(), 6, "{:?}", py.json);
    let js = run_net(&config, "nodejs", &node_clients(&urls));
    assert_eq!(lines_with(js.stdout(), "ok").len(), 4, "{:?}", js.json);
    assert!(refused(&py).is_empty() && refused(&js).is_empty());
    let dests = &py.json["network"]["destinations"];
    assert!(
        dests
            .to_string()
            .contains(&format!("127.0.0.1:{}", s.https)),
        "{dests}"
    );
    assert!(s.hits("http").contains("/tls") && s.hits("http").contains("/plain"));
}

#[test]
fn destinations_not_allow_listed_are_refused_and_named() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let config = s.config("");
    let urls = vec![
        format!("http://127.0.0.1:{}/nope", s.http),
        format!("https://127.0.0.1:{}/nope-tls", s.https),
    ];
    let py = run_net(&config, "python3", &python_clients(&urls));
    assert_eq!(lines_with(py.stdout(), "refused").len(), 6, "{:?}", py.json);
    let js = run_net(&config, "nodejs", &node_clients(&urls));
    assert_eq!(lines_with(js.stdout(), "refused").len(), 4, "{:?}", js.json);
    for r in [&py, &js] {
        let names = refused(r);
        assert!(
            names.contains(&format!("127.0.0.1:{}", s.http)),
            "{names:?}"
        );
        assert!(
            names.contains(&format!("127.0.0.1:{}", s.https)),
            "{names:?}"
        );
    }
    assert!(
        js.stdout().contains("loopback"),
        "the reason reaches the program: {}",
        js.stdout()
    );
    assert_eq!(s.hits("http"), "", "nothing reached the server");
}

#[test]
fn internal_addresses_are_refused_before_any_packet_leaves() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let config = s.config("");
    let code = r#"
import socket, time, urllib.request
for url in ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]:80/",
            "https://169.254.169.254/", "https://10.0.0.1/", "https://[::1]/", "http://[::ffff:169.254.169.254]/"]:
    t = time.monotonic()
    try:
        urllib.request.urlopen(url, timeout=10)
        print("reached", url)
    except Exception as e:
        print("refused" if "403" in str(e) else "error", url, "%.3f" % (time.monotonic() - t), str(e)[:100])
# Around the proxy: the run's namespace has no route anywhere.
for addr in [("10.0.0.1", 80), ("169.254.169.254", 80)]:
    try:
        socket.create_connection(addr, timeout=5)
        print("reached", addr)
    except OSError as e:
        print("unreachable", addr, e.errno)
"#;
    let r = run_net(&config, "python3", code);
    let out = r.stdout();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("refused")).count(),
        7,
        "{:?}",
        r.json
    );
    for line in out.lines().filter(|l| l.starts_with("refused")) {
        let secs: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(secs < 1.0, "refusal must be immediate: {line}");
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("unreachable")).count(),
        2,
        "{out}"
    );
    let names = refused(&r);
    for want in [
        "169.254.169.254:80",
        "10.0.0.1:80",
        "[::1]:80",
        "169.254.169.254:443",
        "10.0.0.1:443",
        "[::1]:443",
    ] {
        assert!(names.contains(&want.to_string()), "{want} in {names:?}");
    }
    // The guard never connected anywhere: no destination was used.
    assert_eq!(
        r.json["network"]["destinations"],
        serde_json::json!([]),
        "{:?}",
        r.json
    );
}

#[test]
fn a_run_without_network_reaches_nothing() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let code = format!(
        r#"
import os, socket
print("proxy", os.environ.get("HTTP_PROXY"))
for port in [{http}, {https}, 3128]:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3); print("tcp reached", port)
    except OSError as e:
        print("tcp refused", port, e.errno)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5):
    try:
        u.sendto(b"leak", ("127.0.0.1", {udp}))
    except OSError as e:
        pass
for path in ["{unix}", "\0{abstract_name}"]:
    try:
        c = socket.socket(socket.AF_UNIX); c.connect(path); print("unix reached", repr(path))
    except OSError as e:
        print("unix refused", e.errno)
"#,
        http = s.http,
        https = s.https,
        udp = s.udp,
        unix = s.unix,
        abstract_name = s.abstract_name
    );
    let r = run("python3", &code, &[]);
    let out = r.stdout();
    assert!(out.contains("proxy None"), "{out}");
    assert_eq!(out.matches("tcp refused").count(), 3, "{:?}", r.json);
    assert_eq!(out.matches("unix refused").count(), 2, "{:?}", r.json);
    assert!(!out.contains("reached"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    for kind in ["http", "udp", "unix", "abstract"] {
        assert_eq!(s.hits(kind), "", "{kind} was reached");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_run_limits_stop_a_run_and_spare_the_others() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let server = Server::start(
        &format!(
            "worker_timeout: 60\nhako:\n  mode: spawn\n  network:\n    allow: [\"127.0.0.1\"]\n    max_connections: 100\n    max_bytes: 16777216\n    ca_file: {}\n",
            s.ca().display()
        ),
        &[],
    );
    let flood = r#"
import socket, time
t = time.monotonic(); opened = failed = 0
for i in range(10000):
    try:
        c = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        c.close(); opened += 1
    except OSError:
        failed += 1
print("opened", opened, "failed", failed, "%.1f" % (time.monotonic() - t))
"#;
    let upload = format!(
        r#"
import socket
c = socket.create_connection(("127.0.0.1", 3128))
c.sendall(b"CONNECT 127.0.0.1:{sink} HTTP/1.1\r\nHost: x\r\n\r\n")
print(c.recv(100).split(b"\r\n")[0].decode())
chunk = b"x" * (1 << 20); sent = 0
try:
    for i in range(1024):
        c.sendall(chunk); sent += len(chunk)
    print("sent all")
except OSError as e:
    print("cut after", sent >> 20, "MiB")
"#,
        sink = s.sink
    );
    let polite = format!(
        "import requests, time\nok = 0\nfor i in range(20):\n    ok += requests.get('http://127.0.0.1:{}/polite').status_code == 200\n    time.sleep(0.05)\nprint('polite', ok)\n",
        s.http
    );
    let post = |code: String| {
        let client = reqwest::Client::new();
        let url = server.url("/v1/sandbox/run");
        let key = server.key.clone();
        async move {
            let body =
                serde_json::json!({"language": "python3", "code": code, "enable_network": true});
            let resp = client
                .post(url)
                .header("X-Api-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            resp.json::<Value>().await.unwrap()["data"].clone()
        }
    };
    let (a, b, c) = tokio::join!(post(flood.to_string()), post(upload), post(polite));
    let stdout = |v: &Value| v["stdout"].as_str().unwrap_or_default().to_string();
    assert_eq!(a["network"]["limit"], "connections", "{a}");
    assert!(a["network"]["connections"].as_u64().unwrap() <= 101, "{a}");
    // Past the limit the listener is gone: connections fail (those already queued in its
    // backlog were accepted by the kernel, then reset).
    let failed: u64 = stdout(&a)
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed >= 9000, "connections past the limit fail: {a}");
    assert_eq!(b["network"]["limit"], "bytes", "{b}");
    assert!(
        stdout(&b).contains("200") && stdout(&b).contains("cut after"),
        "{b}"
    );
    assert!(
        b["network"]["bytes_sent"].as_u64().unwrap() <= 16 << 20,
        "{b}"
    );
    assert_eq!(stdout(&c), "polite 20\n", "other runs are unaffected: {c}");
    assert_eq!(c["network"]["limit"], Value::Null);
}

#[test]
fn host_mode_shares_the_host_network() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let config = s.config("    mode: host\n");
    let code = format!(
        "import os, urllib.request\nprint(os.environ.get('HTTP_PROXY'), urllib.request.urlopen('http://127.0.0.1:{}/host').read().decode())\n",
        s.http
    );
    let r = run_net(&config, "python3", &code);
    assert_eq!(r.stdout(), "None hello /host\n", "{:?}", r.json);
    assert!(r.json.get("network").is_none() || r.json["network"].is_null());
}

/// POSTs a run with network to a server; returns `data`.
fn post_with_network(server: &Server, language: &str, code: &str) -> Value {
    post_run(
        server,
        &serde_json::json!({"language": language, "code": code, "enable_network": true}),
    )
}

#[test]
fn the_guard_serves_warm_runs_too() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let urls = vec![
        format!("http://127.0.0.1:{}/warm", s.http),
        format!("https://127.0.0.1:{}/warm-tls", s.https),
    ];
    for (allow, expect) in [("    allow: [\"127.0.0.1\"]\n", "ok"), ("", "refused")] {
        let config = format!(
            "worker_timeout: 30\nhako:\n  mode: zygote\n  network:\n    ca_file: {}\n{allow}",
            s.ca().display()
        );
        let server = Server::start(&config, &[]);
        server.wait_warm();
        let whoami = post_with_network(
            &server,
            "python3",
            "import os\nprint(os.getppid(), os.getuid())",
        );
        // Its parent (the zygote) outside its pid namespace, and one of the zygote's run uids
        // (1001 and up).
        let text = whoami["stdout"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("0 10"),
            "not forked from a zygote: {whoami}"
        );
        // It never connected: the guard never saw it, and its report says so.
        assert_eq!(whoami["network"]["connections"], 0, "{whoami}");
        assert_eq!(
            whoami["network"]["failed"],
            serde_json::json!([]),
            "{whoami}"
        );
        let py = post_with_network(&server, "python3", &python_clients(&urls));
        let out = py["stdout"].as_str().unwrap_or_default();
        assert_eq!(lines_with(out, expect).len(), 6, "{py}");
        let js = post_with_network(&server, "nodejs", &node_clients(&urls));
        let out = js["stdout"].as_str().unwrap_or_default();
        assert_eq!(lines_with(out, expect).len(), 4, "{js}");
        if expect == "refused" {
            let names = py["refused_destinations"].to_string();
            assert!(names.contains(&format!("127.0.0.1:{}", s.https)), "{names}");
        }
    }
    assert!(s.hits("http").contains("/warm-tls"));
}

#[test]
fn a_runtime_directory_under_tmp_does_not_hide_what_network_runs_need() {
    if !can_run_jail() {
        return;
    }
    let s = Servers::start();
    let urls = vec![
        format!("http://127.0.0.1:{}/under-tmp", s.http),
        format!("https://127.0.0.1:{}/under-tmp-tls", s.https),
    ];
    // The run's private /tmp covers this directory inside the jail.
    let runtime = tempfile::tempdir_in("/tmp").unwrap();
    for mode in ["spawn", "zygote"] {
        let config = format!(
            "worker_timeout: 30\nhako:\n  mode: {mode}\n  runtime_dir: {}/{mode}\n  network:\n    ca_file: {}\n    allow: [\"127.0.0.1\"]\n",
            runtime.path().display(),
            s.ca().display()
        );
        let server = Server::start(&config, &[]);
        if mode == "zygote" {
            server.wait_warm();
        }
        let js = post_with_network(&server, "nodejs", &node_clients(&urls));
        let out = js["stdout"].as_str().unwrap_or_default();
        assert_eq!(lines_with(out, "ok").len(), 4, "{mode}: {js}");
        // The operator's CA bundle, at its fixed jail path (urllib: no packages needed).
        // nltk downloads through the guard only when told the proxy is expected.
        let code = format!(
            "import os, urllib.request\nfor u in {}:\n    print(urllib.request.urlopen(u, timeout=10).read().decode())\nprint(os.environ.get('NLTK_ALLOW_PROXIED_URLOPEN'))",
            serde_json::to_string(&urls).unwrap()
        );
        let py = post_with_network(&server, "python3", &code);
        assert_eq!(
            py["stdout"], "hello /under-tmp\nhello /under-tmp-tls\n1\n",
            "{mode}: {py}"
        );
    }
}

/// What a container grants hako (docs/deploy.md): root with only SETUID, SETGID and KILL, no
/// CAP_SYS_ADMIN. `setpriv` drops the rest from the bounding set before hako starts.
const CONTAINER_CAPS: [&str; 6] = [
    "setpriv",
    "--bounding-set",
    "-all,+setuid,+setgid,+kill",
    "--inh-caps",
    "-all",
    "--",
];

/// Python: fetches each URL through the guard, prints `ok <url>` or `refused <url>`.
fn fetch_each(urls: &[String]) -> String {
    format!(
        "import urllib.request\nfor u in {}:\n    try:\n        urllib.request.urlopen(u, timeout=10).read()\n        print('ok', u)\n    except Exception as e:\n        print('refused' if '403' in str(e) else 'failed ' + str(e)[:200], u)\n",
        serde_json::to_string(urls).unwrap()
    )
}

#[test]
fn proxy_runs_need_no_cap_sys_admin_in_any_mode() {
    if !can_run_jail() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let s = Servers::start();
    let allowed = format!("http://127.0.0.1:{}/no-sys-admin", s.http);
    let urls = vec![
        allowed.clone(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
    ];
    let expected = format!(
        "ok {allowed}\nrefused http://169.254.169.254/latest/meta-data/\nrefused http://10.0.0.1/\n"
    );
    let check = |what: &str, stdout: &str, refused: &Value| {
        assert_eq!(stdout, expected, "{what}: {refused}");
        let refused = refused.to_string();
        for dest in ["169.254.169.254:80", "10.0.0.1:80"] {
            assert!(
                refused.contains(dest),
                "{what}: {dest} not listed: {refused}"
            );
        }
    };
    // Spawn, from the CLI.
    let config = s.config("    allow: [\"127.0.0.1\"]\n");
    let mut cli = Command::new(CONTAINER_CAPS[0])
        .args(&CONTAINER_CAPS[1..])
        .arg(HAKO)
        .args(["run", "--json", "--network", "--timeout", "30", "--config"])
        .arg(&config)
        .args(["--language", "python3", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cli.stdin.take().unwrap(), fetch_each(&urls).as_bytes())
        .unwrap();
    let out = cli.wait_with_output().unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    check(
        "cli spawn",
        json["stdout"].as_str().unwrap_or_default(),
        &json["refused_destinations"],
    );
    // The server: a Python zygote child, the Node pool, and spawn.
    for mode in ["zygote", "spawn"] {
        let yaml = format!(
            "worker_timeout: 30\nhako:\n  mode: {mode}\n  network:\n    allow: [\"127.0.0.1\"]\n"
        );
        let port = free_port();
        let key = format!("test-key-{port}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(
            dir.path().join("conf/config.yaml"),
            format!("app:\n  port: {port}\n  key: {key}\n{yaml}"),
        )
        .unwrap();
        let server = Server::start_wrapped(dir, port, key, &[], &CONTAINER_CAPS);
        if mode == "zygote" {
            server.wait_warm();
            let whoami = post_with_network(&server, "python3", "import os\nprint(os.getppid())");
            assert_eq!(
                whoami["stdout"], "0\n",
                "not forked from a zygote: {whoami}"
            );
        }
        let py = post_with_network(&server, "python3", &fetch_each(&urls));
        check(
            &format!("{mode} python3"),
            py["stdout"].as_str().unwrap_or_default(),
            &py["refused_destinations"],
        );
        let js = post_with_network(
            &server,
            "nodejs",
            &format!(
                "const http = require('http');\nconst urls = {};\n(async () => {{\n  for (const u of urls) {{\n    const code = await new Promise((ok) => http.get(u, (r) => {{ r.resume(); ok(r.statusCode); }}).on('error', (e) => ok(/403|hako egress: connection to .* refused/.test(String(e.message)) ? 403 : e.message)));\n    console.log(code === 200 ? 'ok' : code === 403 ? 'refused' : 'failed ' + code, u);\n  }}\n}})();\n",
                serde_json::to_string(&urls).unwrap()
            ),
        );
        check(
            &format!("{mode} nodejs"),
            js["stdout"].as_str().unwrap_or_default(),
            &js["refused_destinations"],
        );
    }
}
