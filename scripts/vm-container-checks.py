#!/usr/bin/env python3
"""Checks a running hako container over HTTP, the way Dify drives it, with attacks.

Run where the container's port is reachable (in CI: inside the cgroup-v2 VM, by
scripts/vm-container-job.sh). Python's standard library only.

    vm-container-checks.py --url http://127.0.0.1:8194 --key KEY \
        --exec "podman exec hako-vm" --allow 127.0.0.2:8080 [--runs 10]

The container must allow the --allow address (HAKO_NETWORK_ALLOW); this script serves HTTP
there itself. --exec is the command prefix that runs a command in the container (for
`hako doctor`). Prints one `ok` or `FAILED` line per check, `figure:` lines (Dify template
latencies), and a total; exits 1 when a check failed.
"""

import argparse
import base64
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PASSED = 0
FAILED = 0


def say(text):
    print(f"vm-container-checks: {text}", flush=True)


def check(name, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        say(f"ok     {name}")
    else:
        FAILED += 1
        say(f"FAILED {name}: {detail[:800]}")


class Client:
    def __init__(self, url, key, timeout):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method, path, body=None):
        """(HTTP status, parsed JSON or text); status 0 when the server cannot be reached."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"X-Api-Key": self.key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except Exception as e:  # noqa: BLE001 (any failure to reach the server is an answer)
            return 0, repr(e)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def run(self, language, code, network=True):
        """Dify's /v1/sandbox/run; returns (data or None, the whole answer for messages)."""
        status, answer = self.request(
            "POST",
            "/v1/sandbox/run",
            {"language": language, "code": code, "preload": "", "enable_network": network},
        )
        if status == 200 and isinstance(answer, dict) and answer.get("code") == 0:
            return answer.get("data") or {}, answer
        return None, {"status": status, "answer": answer}


# Dify's templates, as its TemplateTransformer writes them (docs/dify.md).
def b64(text):
    return base64.b64encode(text.encode()).decode()


def dify_python(main, inputs):
    return (
        f"{main}\n"
        "import json\n"
        "from base64 import b64decode\n"
        f"inputs_obj = json.loads(b64decode('{b64(json.dumps(inputs))}').decode('utf-8'))\n"
        "output_obj = main(**inputs_obj)\n"
        "output_json = json.dumps(output_obj, indent=4)\n"
        "result = f'''<<RESULT>>{output_json}<<RESULT>>'''\n"
        "print(result)\n"
    )


def dify_javascript(main, inputs):
    return (
        f"{main}\n"
        f"var inputs_obj = JSON.parse(Buffer.from('{b64(json.dumps(inputs))}', 'base64').toString('utf-8'))\n"
        "var output_obj = main(inputs_obj)\n"
        "var output_json = JSON.stringify(output_obj)\n"
        "var result = `<<RESULT>>${output_json}<<RESULT>>`\n"
        "console.log(result)\n"
    )


PY_MAIN = 'def main(arg1: str, arg2: str):\n    return {"result": arg1 + arg2}'
JS_MAIN = "function main({arg1, arg2}) { return { result: arg1 + arg2 } }"


def dify_result(data):
    """The <<RESULT>> payload as Dify extracts it, parsed; None when absent."""
    if not data:
        return None
    m = re.search(r"<<RESULT>>(.*)<<RESULT>>", data.get("stdout", ""), re.DOTALL)
    try:
        return json.loads(m.group(1)) if m else None
    except ValueError:
        return None


def check_templates(client):
    inputs = {"arg1": "ha", "arg2": "ko"}
    data, answer = client.run("python3", dify_python(PY_MAIN, inputs))
    check("Dify Python template", dify_result(data) == {"result": "hako"}, json.dumps(answer))
    data, answer = client.run("nodejs", dify_javascript(JS_MAIN, inputs))
    check("Dify JavaScript template", dify_result(data) == {"result": "hako"}, json.dumps(answer))


def check_host_file(client):
    code = """import os
for path in ["/usr/local/bin/hako", "/etc/shadow", "/proc/1/environ", "/conf", "/var/lib/hako"]:
    try:
        open(path, "rb").read(16)
        print("READ", path)
    except Exception as e:
        print("denied", path, type(e).__name__)
"""
    data, answer = client.run("python3", code)
    out = (data or {}).get("stdout", "")
    check(
        "a read of the container's files is refused",
        data is not None and "READ" not in out and "denied /usr/local/bin/hako" in out,
        json.dumps(answer),
    )


def check_bombs(client):
    # The forked children are killed before the thread bomb, so that it meets the limit anew.
    fork = """import os, signal, threading, time
children = []
try:
    for _ in range(100000):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except OSError as e:
    print("forks stopped after", len(children), type(e).__name__)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
t = 0
try:
    for _ in range(100000):
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        t += 1
except RuntimeError:
    pass
print("threads stopped after", t)
"""
    data, answer = client.run("python3", fork, network=False)
    out = (data or {}).get("stdout", "")
    for kind in ("forks", "threads"):
        m = re.search(kind + r" stopped after (\d+)", out)
        check(
            f"a {kind[:-1]} bomb is contained by the per-run pids limit",
            data is not None and m is not None and int(m.group(1)) < 1000,
            json.dumps(answer),
        )


def check_memory(client, guard):
    """A memory bomb beside a run holding 64 MiB: only the bomb ends, as memory_limit (with
    the memory guard, also as a MemoryError: the guard's address-space limit refuses the
    allocation before a poll sees it)."""
    survivor = """import time
b = bytearray(64 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("holding", flush=True)
time.sleep(25)
print("survived", len(b) >> 20)
"""
    bomb = """import time
time.sleep(1)
chunks = []
while True:
    chunks.append(bytearray(64 << 20))
    for i in range(0, len(chunks[-1]), 4096):
        chunks[-1][i] = 1
"""
    results = {}

    def run(name, code):
        results[name] = client.run("python3", code, network=False) + (time.monotonic(),)

    threads = [threading.Thread(target=run, args=("survivor", survivor))]
    threads[0].start()
    time.sleep(1)
    threads.append(threading.Thread(target=run, args=("bomb", bomb)))
    threads[1].start()
    for t in threads:
        t.join()
    bomb_data, bomb_answer, bomb_done = results["bomb"]
    stopped = bomb_data is not None and bomb_data.get("status") == "memory_limit"
    if guard:
        stopped = stopped or (bomb_data is not None and "MemoryError" in bomb_data.get("stderr", ""))
    check(
        "a memory bomb is stopped by the per-run limit"
        + (" (memory_limit or MemoryError under the memory guard)" if guard else " (memory_limit)"),
        stopped,
        json.dumps(bomb_answer),
    )
    data, answer, done = results["survivor"]
    check(
        "a concurrent run holding 64 MiB survives the bomb",
        data is not None and data.get("stdout", "").endswith("survived 64\n") and bomb_done < done,
        json.dumps(answer),
    )


class Allowed(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"allowed service\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def check_egress(client, allow):
    host, port = allow.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Allowed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    targets = [
        ("the metadata address", "http://169.254.169.254/latest/meta-data/", "169.254.169.254:80"),
        ("the container's own loopback port", "http://127.0.0.1:8194/health", "127.0.0.1:8194"),
        ("a private address", "http://10.0.0.1/", "10.0.0.1:80"),
    ]
    urls = [t[1] for t in targets] + [f"http://{allow}/"]
    code = f"""import urllib.request
for u in {urls!r}:
    try:
        body = urllib.request.urlopen(u, timeout=20).read()
        print("reached", u, body[:40])
    except Exception as e:
        print("refused" if "403" in str(e) else "failed", u, str(e)[:160])
"""
    try:
        data, answer = client.run("python3", code)
    finally:
        server.shutdown()
    lines = {line.split()[1]: line.split()[0] for line in (data or {}).get("stdout", "").splitlines() if len(line.split()) > 1}
    refused = set((data or {}).get("refused_destinations") or [])
    for name, url, dest in targets:
        check(
            f"SSRF to {name} is refused by the egress guard and listed",
            lines.get(url) == "refused" and dest in refused,
            json.dumps(answer),
        )
    check(
        f"the allow-listed local server {allow} is reached through the guard",
        lines.get(urls[-1]) == "reached",
        json.dumps(answer),
    )


def check_doctor(exec_prefix, guard):
    try:
        out = subprocess.run(
            shlex.split(exec_prefix) + ["hako", "doctor"],
            capture_output=True, text=True, timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        check("hako doctor: every layer enforced", False, repr(e))
        return
    for line in out.stdout.splitlines():
        say(f"doctor: {line}")
    # Lines are "LAYER (28 columns) STATE DETAIL"; the layers' states are these words.
    layers = {}
    for line in out.stdout.splitlines():
        words = line[29:].split()
        if len(line) > 29 and words and words[0] in ("enforced", "degraded", "missing", "guard"):
            layers[line[:28].strip()] = words[0]
    # Where no cgroup can be had, doctor must say so: cgroups degraded, the memory guard
    # named, the cpu limit missing; everything else enforced.
    expected = {"cgroups": "degraded", "memory limit": "guard", "cpu limit": "missing"} if guard else {}
    not_enforced = {k: v for k, v in layers.items() if v != expected.get(k, "enforced")}
    warm = re.search(r"^warm pool python3\s+(\S+)", out.stdout, re.M)
    if warm and warm.group(1) != "ok":
        not_enforced["warm pool python3"] = warm.group(1)
    needed = {"cgroups", "seccomp", "cpu limit", "egress guard"} | set(expected)
    what = (
        "cgroups degraded and the memory guard named, every other layer enforced"
        if guard
        else "every layer enforced (cgroups, egress guard included)"
    )
    check(
        f"hako doctor in the container: {what}",
        out.returncode == 0 and not not_enforced and needed <= set(layers),
        f"exit {out.returncode}; not as expected: {not_enforced}; layers: {sorted(layers)}; {out.stderr[-400:]}",
    )


def figures(client, runs):
    """Sequential Dify template runs: per-run latency (p50 and mean) per language."""
    for language, code in [
        ("python3", dify_python(PY_MAIN, {"arg1": "a", "arg2": "b"})),
        ("nodejs", dify_javascript(JS_MAIN, {"arg1": "a", "arg2": "b"})),
    ]:
        times = []
        for _ in range(runs):
            t0 = time.monotonic()
            data, _ = client.run(language, code)
            if dify_result(data) == {"result": "ab"}:
                times.append((time.monotonic() - t0) * 1000)
        if times:
            times.sort()
            say(
                f"figure: Dify {language} template, {len(times)}/{runs} sequential runs: "
                f"p50 {times[len(times) // 2]:.0f} ms, mean {sum(times) / len(times):.0f} ms"
            )
        else:
            say(f"figure: Dify {language} template: no run succeeded")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8194")
    parser.add_argument("--key", required=True)
    parser.add_argument("--exec", dest="exec_prefix", required=True,
                        help="command prefix running a command in the container")
    parser.add_argument("--allow", default="127.0.0.2:8080",
                        help="ADDR:PORT the container allows; served here")
    parser.add_argument("--runs", type=int, default=10, help="runs per latency figure")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per request")
    parser.add_argument("--memory-guard", action="store_true",
                        help="the container has no per-run cgroup: expect the memory guard")
    args = parser.parse_args()
    client = Client(args.url, args.key, args.timeout)
    started = time.monotonic()
    check_templates(client)
    check_host_file(client)
    check_bombs(client)
    check_memory(client, args.memory_guard)
    check_egress(client, args.allow)
    check_doctor(args.exec_prefix, args.memory_guard)
    status, answer = client.request("GET", "/ready")
    say(f"/ready after the checks: {status} {json.dumps(answer)}")
    if args.runs > 0:
        figures(client, args.runs)
    say(f"{PASSED} passed, {FAILED} failed in {time.monotonic() - started:.0f} s")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
