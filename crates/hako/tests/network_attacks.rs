//! Attacks on the egress guard that need addresses this machine does not have: the test runs
//! `hako run --network` inside a private network and mount namespace (`unshare`) whose
//! loopback carries the Azure WireServer address, the metadata address, a public-looking
//! address of "this host", and a local route for the IPv4-translated IPv6 addresses
//! (`::ffff:0:a.b.c.d`), with a local HTTP server answering on all of them and a private
//! /etc/hosts. Nothing leaves the namespace. Two more tests check what an upstream proxy
//! receives and what a run learns when a destination cannot be reached.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// An HTTP server on every address of the namespace (IPv4 and IPv6); logs each path it
/// serves and exits when its parent shell does.
const SERVER: &str = r#"
import http.server, os, socket, sys, threading, time
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(d, "hits"), "a") as f:
            f.write(self.path + "\n")
        body = b"hello " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
s = S(("::", 0), H)
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
with open(os.path.join(d, "port.tmp"), "w") as f:
    f.write(str(s.server_address[1]))
os.rename(os.path.join(d, "port.tmp"), os.path.join(d, "port"))
s.serve_forever()
"#;

/// The namespace: extra addresses on lo, a private /etc/hosts, the server, then the run.
const SETUP: &str = r#"
set -e
d="$1"; hako="$2"
ip link set lo up
for a in 168.63.129.16/32 169.254.169.254/32 11.22.33.44/32; do ip addr add "$a" dev lo; done
ip -6 addr add 2a01:4f8::44/128 dev lo
# Every IPv4-translated address is delivered locally, yet none is an interface address.
ip -6 route add local ::ffff:0:0:0/96 dev lo
mount --bind "$d/hosts" /etc/hosts
python3 -c "$(cat "$d/server.py")" "$d" </dev/null &
srv=$!
trap 'kill $srv 2>/dev/null' EXIT
while [ ! -s "$d/port" ]; do sleep 0.05; done
sed "s/PORT/$(cat "$d/port")/g" "$d/code.py" |
  "$hako" run --json --language python3 --config "$d/config.yaml" --network --timeout 30 -
"#;

/// Runs `code` (with `PORT` replaced by the server's port) in the namespace; returns the
/// result and what reached the server.
fn run_in_namespace(config: &str, code: &str) -> (Run, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("server.py"), SERVER).unwrap();
    std::fs::write(d.join("config.yaml"), config).unwrap();
    std::fs::write(d.join("code.py"), code).unwrap();
    std::fs::write(
        d.join("hosts"),
        "127.0.0.1 localhost\n169.254.169.254 meta.test\n::ffff:0:169.254.169.254 meta6.test\n",
    )
    .unwrap();
    let child = Command::new("unshare")
        .args(["--net", "--mount", "sh", "-c", SETUP, "sh"])
        .arg(d)
        .arg(HAKO)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "no JSON from hako run in the namespace ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let hits = std::fs::read_to_string(d.join("hits")).unwrap_or_default();
    (
        Run {
            json,
            exit: out.status.code().unwrap_or(-1),
        },
        hits,
    )
}

/// Fetches each URL through the guard; prints `<label> refused|reached|error <detail>`.
const FETCH: &str = r#"
import urllib.request, urllib.error
def fetch(label, url):
    try:
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        print(label, "reached", body[:60])
    except urllib.error.HTTPError as e:
        print(label, "refused" if e.code == 403 else "error", e.code, e.read().decode()[:300].strip())
    except Exception as e:
        print(label, "refused" if "403" in str(e) else "error", str(e)[:200])
"#;

fn line<'a>(r: &'a Run, label: &str) -> &'a str {
    r.stdout()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .unwrap_or_else(|| panic!("no line for {label} in {:?}", r.json))
}

/// Fetches every (label, url) target in one run and asserts that the guard refused each.
fn fetch_each_refused(config: &str, targets: &[(&str, &str)]) -> (Run, String) {
    let code = format!(
        "{FETCH}\nfor label, url in {}:\n    fetch(label, url)\n",
        serde_json::to_string(targets).unwrap()
    );
    let (r, hits) = run_in_namespace(config, &code);
    for (label, _) in targets {
        let l = line(&r, label);
        assert_eq!(
            l.split_whitespace().nth(1),
            Some("refused"),
            "{l}\n{:?}",
            r.json
        );
    }
    (r, hits)
}

#[test]
fn wireserver_metadata_this_host_and_embedded_forms_are_refused() {
    if !can_run_jail() {
        return;
    }
    let config = "hako:\n  mode: spawn\n  network:\n    allow: [\"meta.test\"]\n";
    let targets = [
        ("wireserver", "http://168.63.129.16:PORT/wire"),
        ("wireserver-tls", "https://168.63.129.16:PORT/wire"),
        ("self-v4", "http://11.22.33.44:PORT/self"),
        ("self-v6", "http://[2a01:4f8::44]:PORT/self6"),
        ("self-nat64", "http://[64:ff9b::b16:212c]:PORT/nat64"),
        ("mapped-loopback", "http://[::ffff:127.0.0.1]:PORT/mapped"),
        (
            "metadata-by-allowed-name",
            "http://meta.test:PORT/latest/meta-data/",
        ),
    ];
    let (r, hits) = fetch_each_refused(config, &targets);
    let out = r.stdout();
    assert!(line(&r, "wireserver").contains("Azure WireServer"), "{out}");
    assert!(line(&r, "self-v4").contains("this host"), "{out}");
    assert!(line(&r, "self-v6").contains("this host"), "{out}");
    assert!(
        line(&r, "metadata-by-allowed-name").contains("does not admit it"),
        "{out}"
    );
    assert_eq!(hits, "", "nothing reached the server");
    let refused = r.strings("refused_destinations");
    for want in [
        "168.63.129.16:",
        "11.22.33.44:",
        "[2a01:4f8::44]:",
        "[64:ff9b::b16:212c]:",
        "[::ffff:127.0.0.1]:",
        "meta.test:",
    ] {
        assert!(
            refused.iter().any(|d| d.starts_with(want)),
            "{want} in {refused:?}"
        );
    }
    assert_eq!(r.json["network"]["destinations"], serde_json::json!([]));
}

/// IPv4-translated addresses (`::ffff:0:0:0/96`, SIIT) carry an IPv4 address as mapped
/// (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::/96`) ones do: each is judged by that IPv4 address,
/// even where it is routed as an IPv6 address of its own (here to the namespace's loopback,
/// where the server answers every one of them).
#[test]
fn ipv4_translated_forms_are_judged_by_their_ipv4() {
    if !can_run_jail() {
        return;
    }
    let config = "hako:\n  mode: spawn\n  network:\n    allow: [\"meta6.test\"]\n";
    let targets = [
        (
            "translated-loopback",
            "http://[::ffff:0:127.0.0.1]:PORT/t-loop",
        ),
        (
            "translated-loopback-hex",
            "http://[::ffff:0:7f00:1]:PORT/t-hex",
        ),
        (
            "translated-metadata",
            "http://[::ffff:0:169.254.169.254]:PORT/t-meta",
        ),
        (
            "translated-private",
            "http://[::ffff:0:10.0.0.1]:PORT/t-private",
        ),
        (
            "translated-self",
            "http://[::ffff:0:11.22.33.44]:PORT/t-self",
        ),
        (
            "translated-by-allowed-name",
            "http://meta6.test:PORT/t-name",
        ),
        (
            "mapped-metadata",
            "http://[::ffff:169.254.169.254]:PORT/m-meta",
        ),
        (
            "nat64-metadata",
            "http://[64:ff9b::169.254.169.254]:PORT/n-meta",
        ),
    ];
    let (r, hits) = fetch_each_refused(config, &targets);
    let out = r.stdout();
    for label in ["translated-loopback", "translated-loopback-hex"] {
        assert!(line(&r, label).contains("a loopback address"), "{out}");
    }
    for label in ["translated-metadata", "mapped-metadata", "nat64-metadata"] {
        assert!(line(&r, label).contains("cloud metadata"), "{out}");
    }
    assert!(line(&r, "translated-private").contains("RFC 1918"), "{out}");
    assert!(line(&r, "translated-self").contains("this host"), "{out}");
    assert!(
        line(&r, "translated-by-allowed-name").contains("does not admit it"),
        "{out}"
    );
    assert_eq!(hits, "", "nothing reached the server");
    assert_eq!(r.json["network"]["destinations"], serde_json::json!([]));
}

/// A fake upstream proxy on 127.0.0.1: records each request line and answers 200.
const UPSTREAM: &str = r#"
import socket, sys, threading
d = sys.argv[1]
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        b = c.recv(4096)
        if not b:
            break
        head += b
    with open(d + "/requests", "a") as f:
        f.write(head.split(b"\r\n")[0].decode() + "\n")
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream")
    c.close()
def loop():
    while True:
        threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
threading.Thread(target=loop, daemon=True).start()
sys.stdin.read()
"#;

#[test]
fn the_upstream_proxy_gets_the_judged_address_not_the_name() {
    if !can_run_jail() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Command::new("python3")
        .arg("-c")
        .arg(UPSTREAM)
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(upstream.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy:\n  http: http://127.0.0.1:{}\nhako:\n  mode: spawn\n  network:\n    allow: [\"127.0.0.1\"]\n",
            port.trim()
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let code = "import urllib.request\nprint(urllib.request.urlopen('http://localhost:8080/path?q=1', timeout=10).read().decode())\n";
    let r = run(
        "python3",
        code,
        &["--config", &config, "--network", "--timeout", "30"],
    );
    let _ = upstream.kill();
    let _ = upstream.wait();
    assert_eq!(r.stdout(), "upstream\n", "{:?}", r.json);
    let requests = std::fs::read_to_string(dir.path().join("requests")).unwrap_or_default();
    assert_eq!(
        requests, "GET http://127.0.0.1:8080/path?q=1 HTTP/1.1\n",
        "the upstream must not resolve the name again"
    );
}

#[test]
fn a_destination_the_guard_cannot_reach_is_named_with_the_reason() {
    if !can_run_jail() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "hako:\n  mode: spawn\n  network:\n    allow: [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    // Nothing listens on a port that was free a moment ago.
    let closed = free_port();
    let code = format!(
        "{FETCH}\nfetch('tunnel', 'https://127.0.0.1:{closed}/')\nfetch('plain', 'http://127.0.0.1:{closed}/')\n"
    );
    let r = run(
        "python3",
        &code,
        &["--config", &config, "--network", "--timeout", "30"],
    );
    for label in ["tunnel", "plain"] {
        let l = line(&r, label);
        assert!(
            l.contains("cannot connect") && l.contains("refused"),
            "the reason reaches the program: {l}"
        );
    }
    let failed = &r.json["network"]["failed"];
    assert!(
        failed
            .to_string()
            .contains(&format!("127.0.0.1:{closed}: cannot connect")),
        "{:?}",
        r.json
    );
}
