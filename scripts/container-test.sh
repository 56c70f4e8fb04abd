#!/usr/bin/env bash
# Builds the hako image, starts it the way docs/deploy.md says (the shipped seccomp profile,
# no --privileged, no CAP_SYS_ADMIN) under podman and under Docker, drives it over HTTP like
# Dify (Python, JavaScript and Jinja2 templates) with attacks (host file read, fork and
# thread bombs, a memory bomb beside a run that must survive it), measures it (with `hako
# bench` against the container and against `hako serve` on this host, as a figure), and
# stops it.
#
# HAKO_CONTAINER_ENGINES picks the engines (default "podman docker"). Docker is Debian's
# docker.io; this script starts its own dockerd (own socket, data and exec roots) and stops
# it at the end; the image built with podman is loaded into it.
#
# The egress guard is on (the image's default, proxy mode): runs fetching the metadata address,
# the container's own 127.0.0.1:8194 and a private address are refused and listed, and a
# local service the container allows (HAKO_NETWORK_ALLOW) is reached, warm and spawned.
#
# HAKO_TEST_IMAGE, HAKO_CI_DOCKER_ROOT, HAKO_CI_DOCKER_DATA and HAKO_CI_DOCKER_BRIDGE
# (a bridge of its own, made and removed here, instead of docker0) keep two concurrent runs
# of this script apart.
#
# Runs as root. Without a container registry it builds the runtime stage from a
# hako binary built here (HAKO_BINARY=prebuilt) on a Debian base image made with debootstrap
# and cached in /var/cache/hako-ci, so it is made once per machine.
# Skips (exit 0, saying why) only where podman cannot run containers at all.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${HAKO_CI_CACHE:-/var/cache/hako-ci}
IMAGE=${HAKO_TEST_IMAGE:-localhost/hako:container-test}
BASE=docker.io/library/debian:bookworm-slim
NAME=hako-container-test-$$
PORT=${HAKO_TEST_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
KEY=container-test-key
ENGINES=${HAKO_CONTAINER_ENGINES:-podman docker}
# crun refuses hosts with a hybrid cgroup v1 layout; runc works everywhere.
PODMAN=(podman --runtime runc)
DOCKER_ROOT=${HAKO_CI_DOCKER_ROOT:-/run/hako-ci-docker}
DOCKER=(docker -H "unix://$DOCKER_ROOT/docker.sock")
DOCKER_DATA=${HAKO_CI_DOCKER_DATA:-$CACHE/docker}
DOCKER_BRIDGE=${HAKO_CI_DOCKER_BRIDGE:-}
# The local service runs may reach: an address of the container's loopback the container
# allows (127.0.0.1, hako's own port, stays refused).
ALLOWED_ADDR=127.0.0.2
ALLOWED_PORT=8080
# The engine under test (set per engine by main).
ENGINE=("${PODMAN[@]}")
ENGINE_NAME=podman
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

log() { printf 'container-test: %s\n' "$*"; }
skip() { log "SKIPPED: $*"; exit 0; }
die() { log "FAILED: $*"; exit 1; }

# Every step has a bound; CI has 90 minutes for everything.
bounded() { local secs=$1; shift; timeout --kill-after=10 "$secs" "$@"; }

install_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  case " $ENGINES " in *" docker "*) command -v dockerd >/dev/null || missing+=(docker.io) ;; esac
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    skip "podman is not installed and cannot be installed here (needs root and apt-get)"
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  bounded 600 apt-get update -qq
  bounded 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" uidmap slirp4netns >/dev/null
}

check_podman() {
  [ "$(id -u)" = 0 ] || skip "needs root (rootful podman drives the per-run uids and cgroups)"
  command -v podman >/dev/null || skip "podman not found"
  if ! out=$(bounded 120 "${PODMAN[@]}" info 2>&1); then
    skip "podman cannot run here: $(printf '%s' "$out" | tail -1)"
  fi
}

# A stand-in for Debian's bookworm-slim, made with debootstrap: minbase, trimmed like slim.
# The machine's own extra CA certificates (a TLS-intercepting proxy's, if any) are added so
# that pip can reach PyPI during the build; an image built against a registry has none.
make_base() {
  if "${PODMAN[@]}" image exists "$BASE"; then
    log "base image $BASE present"
    return 0
  fi
  mkdir -p "$CACHE"
  local tarball="$CACHE/bookworm-minbase.tar.gz"
  if [ ! -s "$tarball" ]; then
    log "debootstrap bookworm (once per machine, cached in $CACHE)"
    local dir="$CACHE/rootfs.tmp"
    rm -rf "$dir"
    bounded 1200 debootstrap --variant=minbase bookworm "$dir" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
    tar -C "$dir" -c . | gzip -1 >"$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    rm -rf "$dir"
  fi
  local dir="$CACHE/rootfs.import"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$dir" -xzf "$tarball"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
  mkdir -p "$dir/etc/dpkg/dpkg.cfg.d"
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$dir/etc/dpkg/dpkg.cfg.d/slim"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
  fi
  log "importing $BASE"
  tar -C "$dir" -c . | bounded 300 "${PODMAN[@]}" import - "$BASE" >/dev/null
  rm -rf "$dir"
}

# Our own dockerd: its own socket, data root and exec root, the cgroupfs driver; it is
# stopped (and its bridge removed) by cleanup. Nothing of a host dockerd is touched.
start_dockerd() {
  command -v dockerd >/dev/null || die "dockerd not found (Debian's docker.io)"
  command -v docker >/dev/null || die "no docker client"
  mkdir -p "$DOCKER_ROOT" "$DOCKER_DATA"
  # Published ports go through docker-proxy to the bridge; no iptables rules are added.
  local bridge=(--bip 172.30.99.1/24)
  if [ -n "$DOCKER_BRIDGE" ]; then
    ip link add name "$DOCKER_BRIDGE" type bridge
    ip addr add 172.30.98.1/24 dev "$DOCKER_BRIDGE"
    ip link set "$DOCKER_BRIDGE" up
    bridge=(--bridge "$DOCKER_BRIDGE")
  else
    ip link show docker0 >/dev/null 2>&1 || DOCKER_BRIDGE_OURS=1
  fi
  log "starting dockerd ($(dockerd --version))"
  dockerd -H "unix://$DOCKER_ROOT/docker.sock" --pidfile "$DOCKER_ROOT/dockerd.pid" \
    --exec-root "$DOCKER_ROOT/exec" --data-root "$DOCKER_DATA" \
    --exec-opt native.cgroupdriver=cgroupfs "${bridge[@]}" --iptables=false --ip-forward=false \
    >"$LOGDIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 300); do
    bounded 10 "${DOCKER[@]}" version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$LOGDIR/dockerd.log"
  die "dockerd did not start within 60 s"
}

stop_dockerd() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
  [ -n "${DOCKER_BRIDGE_OURS:-}" ] && ip link delete docker0 2>/dev/null || true
  [ -n "$DOCKER_BRIDGE" ] && ip link delete "$DOCKER_BRIDGE" 2>/dev/null || true
}

# The image podman built, loaded into dockerd (one build for both engines).
load_into_docker() {
  log "loading $IMAGE into dockerd"
  "${PODMAN[@]}" save --format docker-archive "$IMAGE" | bounded 600 "${DOCKER[@]}" load >/dev/null \
    || die "docker load failed"
}

build_binary() {
  log "building hako (release)"
  bounded 1800 cargo build --release --locked -p hako -p hako-zygote
  local target=${CARGO_TARGET_DIR:-target}
  mkdir -p dist
  install -m 0755 "$target/release/hako" dist/hako
  install -m 0644 "$target/release/libhako_zygote.so" dist/libhako_zygote.so
}

build_image() {
  log "building $IMAGE (runtime stage, HAKO_BINARY=prebuilt)"
  local started=$SECONDS
  bounded 1500 "${PODMAN[@]}" build --pull=never --format docker "${ULIMITS[@]}" \
    --build-arg HAKO_BINARY=prebuilt -t "$IMAGE" . >"$LOGDIR/build.log" 2>&1 \
    || { tail -30 "$LOGDIR/build.log"; die "image build failed"; }
  log "image built in $((SECONDS - started)) s"
}

# The run options, exactly as docs/deploy.md gives them for podman and Docker.
run_options() {
  local unmask='unmask=/proc/*'
  [ "$ENGINE_NAME" = docker ] && unmask=systempaths=unconfined
  RUN_OPTS=(
    --security-opt seccomp="$PWD/deploy/seccomp/hako.json"
    --security-opt "$unmask"
    --security-opt no-new-privileges
    --cap-drop ALL
    --cap-add SETUID --cap-add SETGID --cap-add KILL --cap-add SETFCAP
  )
  delegate_cgroups
}

# A cgroup subtree for the container's runs, delegated by bind mount (docs/deploy.md,
# "cgroups"): the container writes only below it, and its limits cap all runs together.
delegate_cgroups() {
  CGROUP_DIRS=()
  if [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/pids ]; then
    local c
    for c in memory pids; do
      mkdir -p "/sys/fs/cgroup/$c/$NAME"
      CGROUP_DIRS+=("/sys/fs/cgroup/$c/$NAME")
      RUN_OPTS+=(-v "/sys/fs/cgroup/$c/$NAME:/sys/fs/cgroup/$c:rw")
    done
    echo $((4 << 30)) >"/sys/fs/cgroup/memory/$NAME/memory.limit_in_bytes"
    echo 2048 >"/sys/fs/cgroup/pids/$NAME/pids.max"
  elif [ -f /sys/fs/cgroup/cgroup.controllers ] && [ "${HAKO_TEST_CGROUP_BIND:-0}" = 1 ]; then
    # cgroup v2 needs no bind (hako mounts a private cgroup2); HAKO_TEST_CGROUP_BIND=1 tests
    # the delegated subtree instead.
    mkdir -p "/sys/fs/cgroup/$NAME"
    CGROUP_DIRS+=("/sys/fs/cgroup/$NAME")
    echo "+memory +pids" >/sys/fs/cgroup/cgroup.subtree_control || true
    echo $((4 << 30)) >"/sys/fs/cgroup/$NAME/memory.max"
    echo 2048 >"/sys/fs/cgroup/$NAME/pids.max"
    RUN_OPTS+=(-v "/sys/fs/cgroup/$NAME:/sys/fs/cgroup:rw")
  fi
}

remove_cgroups() {
  local dir
  for dir in "${CGROUP_DIRS[@]}"; do
    [ -d "$dir" ] || continue
    find "$dir" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$dir" 2>/dev/null || true
  done
}

api() { # api METHOD PATH [BODY]: prints "STATUS BODY"
  api_to "$LOGDIR/answer" "$@"
}

api_to() { # api_to FILE METHOD PATH [BODY]: as api, the answer kept in FILE
  local file=$1 method=$2 path=$3 body=${4:-}
  local args=(-sS -m 60 -o "$file" -w '%{http_code}' -X "$method" -H "X-Api-Key: $KEY")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  local code
  code=$(curl "${args[@]}" "http://127.0.0.1:$PORT$path") || code=000
  printf '%s %s' "$code" "$(cat "$file" 2>/dev/null)"
}

PASSED=0
FAILED=0
check() { # check NAME PYTHON-EXPR-ON-answer (answer is the parsed JSON, body the text, status the HTTP code)
  local name=$1 expr=$2 out
  out=$(python3 -c '
import json, re, sys
status, _, body = sys.stdin.read().partition(" ")
try:
    answer = json.loads(body)
except ValueError:
    answer = None
try:
    ok = eval(sys.argv[1], {"answer": answer, "body": body, "status": int(status), "json": json, "re": re})
except Exception as e:
    ok = False
    body = repr(e) + " " + body
print("ok" if ok else "bad: HTTP " + status + " " + body[:600])
' "$expr" <<<"$RESPONSE")
  if [ "$out" = ok ]; then
    PASSED=$((PASSED + 1)); log "ok     $name"
  else
    FAILED=$((FAILED + 1)); log "FAILED $name: $out"
  fi
}

run_body() { # run_body LANGUAGE CODE [NETWORK]: with network (Dify's default) unless NETWORK is 0
  python3 -c 'import json, sys; print(json.dumps({"language": sys.argv[1], "code": sys.argv[2], "preload": "", "enable_network": sys.argv[3] != "0"}))' "$1" "$2" "${3:-1}"
}

b64() { printf '%s' "$1" | base64 -w0; }

dify_python() { # Dify's Python 3 runner around main(arg1, arg2)
  printf '%s\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('"'"'%s'"'"').decode('"'"'utf-8'"'"'))\noutput_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nresult = f'"'''"'<<RESULT>>{output_json}<<RESULT>>'"'''"'\nprint(result)\n' "$1" "$(b64 "$2")"
}

dify_javascript() {
  printf '%s\nvar inputs_obj = JSON.parse(Buffer.from('"'"'%s'"'"', '"'"'base64'"'"').toString('"'"'utf-8'"'"'))\nvar output_obj = main(inputs_obj)\nvar output_json = JSON.stringify(output_obj)\nvar result = `<<RESULT>>${output_json}<<RESULT>>`\nconsole.log(result)\n' "$1" "$(b64 "$2")"
}

dify_jinja2() {
  printf 'def main(**inputs):\n    from base64 import b64decode\n    from jinja2.sandbox import SandboxedEnvironment\n    env = SandboxedEnvironment()\n    template = env.from_string(b64decode('"'"'%s'"'"').decode('"'"'utf-8'"'"'))\n    return template.render(**inputs)\n\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('"'"'%s'"'"').decode('"'"'utf-8'"'"'))\noutput = main(**inputs_obj)\nresult = f'"'''"'<<RESULT>>{output}<<RESULT>>'"'''"'\nprint(result)\n' "$(b64 "$1")" "$(b64 "$2")"
}

result_of() { # the <<RESULT>> payload as Dify extracts it, as a Python expression
  printf 're.search(r"<<RESULT>>(.*)<<RESULT>>", answer["data"]["stdout"], re.DOTALL).group(1)'
}

stop_container() {
  if [ -n "${STARTED:-}" ]; then
    "${ENGINE[@]}" logs "$NAME" >"$LOGDIR/server-$ENGINE_NAME.log" 2>&1 || true
    bounded 60 "${ENGINE[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    STARTED=""
  fi
  [ -n "${CGROUP_DIRS+x}" ] && remove_cgroups
  return 0
}

cleanup() {
  stop_host_server
  stop_container
  stop_dockerd
  return 0
}

main() {
  install_tools
  check_podman
  LOGDIR=$(mktemp -d /tmp/hako-container-test.XXXXXX)
  trap cleanup EXIT
  make_base
  [ "${HAKO_SKIP_BINARY_BUILD:-}" = 1 ] && [ -x dist/hako ] && [ -f dist/libhako_zygote.so ] || build_binary
  build_image
  local engine total_failed=0 summary=()
  for engine in $ENGINES; do
    local t0=$SECONDS
    ENGINE_NAME=$engine
    case "$engine" in
      podman) ENGINE=("${PODMAN[@]}") ;;
      docker) ENGINE=("${DOCKER[@]}"); start_dockerd; load_into_docker ;;
      *) die "unknown engine $engine (podman or docker)" ;;
    esac
    PASSED=0; FAILED=0
    test_engine
    summary+=("$engine: $PASSED passed, $FAILED failed in $((SECONDS - t0)) s")
    total_failed=$((total_failed + FAILED))
    [ "$engine" = docker ] && { bounded 120 "${DOCKER[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true; stop_dockerd; }
  done
  local line
  for line in "${summary[@]}"; do echo "container-test: $line"; done
  [ "$total_failed" -eq 0 ]
}

# One engine: start the container, the checks, the measurements, a clean stop.
test_engine() {
  run_options
  log "[$ENGINE_NAME] starting $NAME on port $PORT"
  local t0
  t0=$(date +%s%N)
  STARTED=1
  # podman schedules HEALTHCHECK with systemd timers; without systemd there are none, and
  # this script polls /ready itself.
  local health=()
  [ "$ENGINE_NAME" = podman ] && [ ! -d /run/systemd/system ] && health=(--no-healthcheck)
  "${ENGINE[@]}" run -d --name "$NAME" "${ULIMITS[@]}" "${RUN_OPTS[@]}" "${health[@]}" \
    -p "127.0.0.1:$PORT:8194" -e API_KEY="$KEY" -e WORKER_TIMEOUT=10 \
    -e HAKO_NETWORK_ALLOW="$ALLOWED_ADDR" "$IMAGE" >/dev/null
  local ready=""
  for _ in $(seq 1 600); do
    if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null; then ready=1; break; fi
    if [ "$("${ENGINE[@]}" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    "${ENGINE[@]}" logs "$NAME" 2>&1 | tail -30
    die "[$ENGINE_NAME] the container did not become ready within 60 s"
  fi
  local cold_ms=$((($(date +%s%N) - t0) / 1000000))
  log "[$ENGINE_NAME] ready after $cold_ms ms ($ENGINE_NAME run to 200 on /ready)"
  "${ENGINE[@]}" exec "$NAME" hako doctor 2>&1 | sed "s/^/container-test: [$ENGINE_NAME] doctor: /" || true

  RESPONSE=$(api GET /health); check "GET /health is \"ok\"" 'status == 200 and answer == "ok"'
  RESPONSE=$(api GET /ready); check "GET /ready is 200" 'status == 200 and answer["ready"] is True'

  # Dify's templates, byte for byte as its TemplateTransformer writes them.
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 "$(dify_python 'def main(arg1: str, arg2: str):
    return {"result": arg1 + arg2}' '{"arg1":"ha","arg2":"ko"}')")")
  check "Dify Python template" 'answer["code"] == 0 and answer["data"]["error"] == "" and json.loads('"$(result_of)"') == {"result": "hako"}'
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body nodejs "$(dify_javascript 'function main({arg1, arg2}) { return { result: arg1 + arg2 } }' '{"arg1":"ha","arg2":"ko"}')")")
  check "Dify JavaScript template" 'answer["code"] == 0 and answer["data"]["error"] == "" and json.loads('"$(result_of)"') == {"result": "hako"}'
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 "$(dify_jinja2 'Hello {{ name }}! {% for i in items %}{{ i }},{% endfor %}' '{"name":"Dify","items":[1,2,3]}')")")
  check "Dify Jinja2 template (jinja2 pre-installed in the image)" 'answer["code"] == 0 and answer["data"]["error"] == "" and '"$(result_of)"' == "Hello Dify! 1,2,3,"'

  # Warm mode works in the container: a Python run without network forks from a zygote, whose
  # pid is outside the run's pid namespace (a spawned program's parent is its init, pid 1).
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'import os
print(os.getppid())' 0)")
  check "warm: a Python run forks from a working zygote" 'answer["code"] == 0 and answer["data"]["stdout"] == "0\n"'
  # Each pool's calibration run listed the pages a run writes (it reads its own page map: the
  # container's root has no CAP_SYS_PTRACE to read another uid's), so runs start prefaulted.
  RESPONSE=$(api GET /metrics)
  check "warm: every pool's calibration found the pages a run writes" 'status == 200 and (lambda hot: len(hot) >= 1 and all(int(n) > 0 for n in hot))(re.findall(r"^hako_pool_hot_pages\{pool=\"\w+\"\} (\d+)$", body, re.M))'

  # The run's mount table names no path of the container's hako files: every mount's root is
  # "/", its own mount point or a device, and the package environment is an overlay whose
  # layers are named by descriptor (a bind would name its path). Binds from the container's
  # own root carry its options, which name the engine's storage (as in every container).
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'shown, env = [], None
for line in open("/proc/self/mountinfo"):
    f = line.split()
    root, point, kind = f[3], f[4], f[f.index("-") + 1]
    if point == "/opt/hako/python/site-packages":
        env = kind
    layers = [l for o in f[-1].split(",") if o.startswith("lowerdir=") for l in o[9:].split(":")] if point.startswith("/opt/hako/") else []
    if root not in ("/", point, "/null", "/zero", "/full", "/random", "/urandom") or any(not l.startswith("/proc/self/fd/") for l in layers):
        shown.append(" ".join(f[3:5]))
print(env, shown)')")
  check "the mount table names no host path (package environment: overlay)" 'answer["code"] == 0 and answer["data"]["stdout"] == "overlay []\n"'

  # Attacks: each must fail inside the sandbox while the server keeps serving.
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'import os
for path in ["/usr/local/bin/hako", "/etc/shadow", "/proc/1/environ", "/conf", "/var/lib/hako"]:
    try:
        open(path, "rb").read(16)
        print("READ", path)
    except Exception as e:
        print("denied", path, type(e).__name__)
print("root:", sorted(os.listdir("/")))')")
  check "attack: reading the container's files fails" 'answer["code"] == 0 and "READ" not in answer["data"]["stdout"] and "denied /usr/local/bin/hako" in answer["data"]["stdout"]'
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'import os, time
n = 0
try:
    for _ in range(100000):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("fork stopped after", n, type(e).__name__)')")
  check "attack: fork bomb is stopped by the pids limit" 'answer["code"] == 0 and "fork stopped after" in answer["data"]["stdout"] and int(answer["data"]["stdout"].split()[3]) < 1000'
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'chunks = []
while True:
    chunks.append(bytearray(64 * 1024 * 1024))
    for i in range(0, len(chunks[-1]), 4096):
        chunks[-1][i] = 1')")
  check "attack: memory bomb is stopped by the memory limit" 'answer["code"] == 0 and answer["data"]["exit_code"] != 0 and answer["data"]["status"] in ("memory_limit", "error")'
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'import threading, time
n = 0
try:
    for _ in range(100000):
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        n += 1
except RuntimeError as e:
    print("threads stopped after", n)')")
  check "attack: thread bomb is stopped by the pids limit" 'answer["code"] == 0 and "threads stopped after" in answer["data"]["stdout"] and int(answer["data"]["stdout"].split()[3]) < 1000'
  # A memory bomb beside a run that holds 64 MiB: the limit is per run, so only the bomb dies.
  api_to "$LOGDIR/bomb" POST /v1/sandbox/run "$(run_body python3 'import time
time.sleep(0.5)
chunks = []
while True:
    chunks.append(bytearray(64 * 1024 * 1024))
    for i in range(0, len(chunks[-1]), 4096):
        chunks[-1][i] = 1')" >"$LOGDIR/bomb.status" &
  local bomb=$!
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 'import time
b = bytearray(64 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
time.sleep(3)
print("survived", len(b) >> 20)')")
  wait "$bomb" || true
  check "a run beside a memory bomb survives" 'answer["code"] == 0 and answer["data"]["stdout"] == "survived 64\n"'
  RESPONSE=$(cat "$LOGDIR/bomb.status")
  check "the concurrent memory bomb is stopped by its own limit" 'answer["code"] == 0 and answer["data"]["status"] in ("memory_limit", "error") and answer["data"]["exit_code"] != 0'
  ssrf_checks
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 "$(dify_python 'def main(arg1: str, arg2: str):
    return {"result": arg1 + arg2}' '{"arg1":"still","arg2":"serving"}')")")
  check "the server still serves after the attacks" 'answer["code"] == 0 and json.loads('"$(result_of)"') == {"result": "stillserving"}'

  measure
  bench_once container
  CONTAINER_P50=$P50
  log "[$ENGINE_NAME] stopping $NAME (SIGTERM)"
  local stop0=$SECONDS
  bounded 60 "${ENGINE[@]}" stop -t 20 "$NAME" >/dev/null
  local exit_code
  exit_code=$("${ENGINE[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")
  local server_log=$LOGDIR/server-$ENGINE_NAME.log
  "${ENGINE[@]}" logs "$NAME" >"$server_log" 2>&1 || true
  if [ "$exit_code" = 0 ] && grep -q "stopped" "$server_log"; then
    PASSED=$((PASSED + 1)); log "ok     clean stop in $((SECONDS - stop0)) s (exit code 0)"
  else
    FAILED=$((FAILED + 1)); log "FAILED clean stop: exit code $exit_code"; tail -20 "$server_log"
  fi
  if grep -qE "zygote did not start|new pid namespace|calibration failed" "$server_log"; then
    FAILED=$((FAILED + 1)); log "FAILED warm workers started cleanly:"; grep -E "zygote" "$server_log" | head -5
  else
    PASSED=$((PASSED + 1)); log "ok     warm workers started cleanly (no zygote error in the log)"
  fi
  bench_host
  stop_container
  if [ "$FAILED" -ne 0 ]; then
    log "[$ENGINE_NAME] server log (last 40 lines):"; tail -40 "$server_log"
  fi
  echo "container-test: [$ENGINE_NAME] $PASSED passed, $FAILED failed"
}

# The egress guard in the image's default configuration (proxy mode), warm and spawned:
# each run fetches the cloud metadata address, the container's own hako port, a private
# address and an allow-listed service the test starts in the container. The three must be
# refused by the guard (403) and listed in refused_destinations; the service must answer.
ssrf_urls() {
  printf '["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8194/health", "http://10.0.0.1/", "http://%s:%s/"]' \
    "$ALLOWED_ADDR" "$ALLOWED_PORT"
}

ssrf_python() {
  printf 'import os, urllib.request
for u in %s:
    try:
        urllib.request.urlopen(u, timeout=10).read()
        print("reached", u)
    except Exception as e:
        print("refused" if "403" in str(e) else "failed", u, str(e)[:160])
print("parent", os.getppid())
' "$(ssrf_urls)"
}

ssrf_node() {
  printf 'const http = require("http");
const urls = %s;
(async () => {
  for (const u of urls) {
    const r = await new Promise((ok) => http.get(u, (res) => { res.resume(); ok(res.statusCode === 200 ? "reached" : "status " + res.statusCode); }).on("error", (e) => ok(/hako egress: connection to .* refused/.test(e.message) ? "refused" : "failed " + e.message)));
    console.log(r, u);
  }
})();
' "$(ssrf_urls)"
}

# What every SSRF run must show, as a Python expression on `answer`.
SSRF_EXPECTED='(answer["code"] == 0
  and [l.split()[0] for l in answer["data"]["stdout"].splitlines() if not l.startswith("parent")] == ["refused", "refused", "refused", "reached"]
  and {"169.254.169.254:80", "127.0.0.1:8194", "10.0.0.1:80"} <= set(answer["data"].get("refused_destinations") or []))'

ssrf_checks() {
  # The allow-listed local service, inside the container's own network namespace.
  "${ENGINE[@]}" exec -d "$NAME" python3 -m http.server "$ALLOWED_PORT" --bind "$ALLOWED_ADDR" --directory /tmp >/dev/null
  local up=""
  for _ in $(seq 1 100); do
    "${ENGINE[@]}" exec "$NAME" python3 -c "import socket; socket.create_connection(('$ALLOWED_ADDR', $ALLOWED_PORT), 1)" 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  [ -n "$up" ] || log "note   the allow-listed service did not come up"
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body python3 "$(ssrf_python)")")
  check "ssrf: warm Python (zygote): metadata, own port, private refused and listed; allowed service reached" \
    "$SSRF_EXPECTED"' and "parent 0\n" in answer["data"]["stdout"]'
  RESPONSE=$(api POST /v1/sandbox/run "$(run_body nodejs "$(ssrf_node)")")
  check "ssrf: Node (pool): metadata, own port, private refused and listed; allowed service reached" "$SSRF_EXPECTED"
  # Spawn: `hako run` in the container (same capabilities and seccomp profile as the server).
  local out
  out=$(ssrf_python | "${ENGINE[@]}" exec -i "$NAME" hako run --json --network --timeout 30 --language python3 - 2>/dev/null) || true
  RESPONSE="200 $(printf '%s' "$out" | python3 -c 'import json, sys
try:
    print(json.dumps({"code": 0, "data": json.loads(sys.stdin.read())}))
except ValueError as e:
    print(json.dumps({"code": -1, "error": str(e)}))')"
  check "ssrf: spawned Python (hako run): metadata, own port, private refused and listed; allowed service reached" "$SSRF_EXPECTED"
}

# Numbers for docs/deploy.md: image size, idle memory, sequential runs per second.
measure() {
  local size
  size=$("${ENGINE[@]}" image inspect -f '{{.Size}}' "$IMAGE")
  log "[$ENGINE_NAME] measure: image size $((size / 1000000)) MB"
  sleep 2
  local mem
  mem=$("${ENGINE[@]}" stats --no-stream --format '{{.MemUsage}}' "$NAME" 2>/dev/null || echo "n/a")
  log "[$ENGINE_NAME] measure: idle memory $mem"
  local n=${HAKO_TEST_RUNS:-30} body t0 t1
  for language in python3 nodejs; do
    if [ "$language" = python3 ]; then
      body=$(run_body python3 "$(dify_python 'def main(arg1: str, arg2: str):
    return {"result": arg1 + arg2}' '{"arg1":"a","arg2":"b"}')")
    else
      body=$(run_body nodejs "$(dify_javascript 'function main({arg1, arg2}) { return { result: arg1 + arg2 } }' '{"arg1":"a","arg2":"b"}')")
    fi
    t0=$(date +%s%N)
    for _ in $(seq 1 "$n"); do
      curl -fsS -m 30 -o /dev/null -H "X-Api-Key: $KEY" --data-binary "$body" "http://127.0.0.1:$PORT/v1/sandbox/run" || true
    done
    t1=$(date +%s%N)
    log "[$ENGINE_NAME] measure: $language $n sequential Dify runs: $(((t1 - t0) / 1000000 / n)) ms each"
  done
}

stop_host_server() {
  [ -n "${HOST_SERVER:-}" ] || return 0
  kill -TERM "$HOST_SERVER" 2>/dev/null
  (sleep 30; kill -KILL "$HOST_SERVER" 2>/dev/null) &
  wait "$HOST_SERVER" 2>/dev/null || true
  HOST_SERVER=""
}

# bench_once WHERE: `hako bench` of Dify's python-hello (with network) against the server
# on PORT; its report line is logged and its p50 left in P50.
bench_once() {
  P50=""
  bounded 300 dist/hako bench --url "http://127.0.0.1:$PORT" --key "$KEY" --workload python-hello \
    --duration "${HAKO_TEST_BENCH_SECONDS:-8}" --warmup 10 >"$LOGDIR/bench-$ENGINE_NAME-$1.log" 2>&1 || true
  local line
  line=$(grep -E '^server +runs' "$LOGDIR/bench-$ENGINE_NAME-$1.log" | tail -1) || true
  log "[$ENGINE_NAME] measure: bench $1: ${line:-none ($(tail -1 "$LOGDIR/bench-$ENGINE_NAME-$1.log"))}"
  P50=$(printf '%s\n' "$line" | sed -n 's/.* p50 *\([0-9.]*\) ms.*/\1/p')
}

# The same bench against `hako serve` on this host, same sitting, same binary, with the
# container's package environment copied out of the stopped container: the container's
# ratio to the host (a figure; speed is not asserted on a shared machine).
bench_host() {
  # Its environment must be reachable by run uids: not under the private log directory.
  local state binary=$PWD/dist/hako
  state=$(mktemp -d /var/tmp/hako-container-test-state.XXXXXX)
  chmod 0755 "$state"
  mkdir -p "$LOGDIR/host-wd"
  if ! "${ENGINE[@]}" cp "$NAME:/var/lib/hako/packages" "$state/packages" >/dev/null 2>&1; then
    log "[$ENGINE_NAME] measure: bench host: the container's environment could not be copied"; return
  fi
  (cd "$LOGDIR/host-wd" && API_KEY=$KEY SANDBOX_PORT=$PORT WORKER_TIMEOUT=10 HAKO_STATE_DIR=$state \
    PIP_NO_INDEX=1 exec "$binary" serve) >"$LOGDIR/host-server-$ENGINE_NAME.log" 2>&1 &
  HOST_SERVER=$!
  bench_once host
  stop_host_server
  rm -rf "$state"
  if [ -n "$CONTAINER_P50" ] && [ -n "$P50" ]; then
    log "[$ENGINE_NAME] measure: bench python-hello p50 container $CONTAINER_P50 ms, host $P50 ms, container / host $(python3 -c "print(f'{$CONTAINER_P50 / $P50:.2f}')")"
  else
    tail -5 "$LOGDIR/host-server-$ENGINE_NAME.log"
  fi
}

main "$@"
