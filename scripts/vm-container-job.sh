# The guest's job for `HAKO_VM_CONTAINER=1 scripts/vm-cgroup2-test.sh` (sourced after
# IMAGE= and PARTS= lines): on a pure cgroup-v2 kernel, the image under podman ("podman")
# and under Docker ("docker") with the documented options (no --privileged, no
# CAP_SYS_ADMIN, hako's seccomp profile, no cgroup bind: hako mounts its own cgroup2),
# checked by scripts/vm-container-checks.py; with "bench", per engine, `hako bench` against
# the container and against the image's binary served on the guest; with "pod", the
# rendered Kubernetes pod spec's container in the pod's user namespace; with "setfcap",
# `hako doctor` without CAP_SETFCAP (the memory guard, not cgroups); with "kube", the
# rendered Kubernetes pod spec under `podman kube play`.
# Every figure is TCG-slow (13-20x the host for CPU-bound work).
set -u
passed=0; failed=0
say() { echo "hako-vm: $*"; }
ok() { passed=$((passed + 1)); say "ok     $*"; }
bad() { failed=$((failed + 1)); say "FAILED $*"; }
P=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
D=(docker)
# The engine the checks exec into (set by engine_run).
E=("${P[@]}")
KEY=vm-container-key
REPO=$PWD
# The local server runs may reach (the checks serve it in the guest; the container shares
# the guest's network, whose 127.0.0.1:8194 is the container's own port, refused).
ALLOW_ADDR=127.0.0.2
ALLOW_PORT=8080

# stop_pid PID SECONDS: SIGTERM to a background job of this shell, SIGKILL after SECONDS;
# its exit status (137 when it had to be killed).
stop_pid() {
  local pid=$1 killer rc
  kill -TERM "$pid" 2>/dev/null
  (sleep "$2"; kill -KILL "$pid" 2>/dev/null) &
  killer=$!
  wait "$pid"; rc=$?
  kill "$killer" 2>/dev/null
  return "$rc"
}

# status URL: the HTTP status of a GET (0 when unreachable).
status() {
  python3 -c 'import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=30).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)' "$1"
}

# wait_ready PORT: milliseconds until /ready answers 200 in READY_MS; fails after 900 s.
wait_ready() {
  local t0
  t0=$(date +%s%N)
  for _ in $(seq 1 1800); do
    [ "$(status "http://127.0.0.1:$1/ready")" = 200 ] && { READY_MS=$((($(date +%s%N) - t0) / 1000000)); return 0; }
    sleep 0.5
  done
  return 1
}

# checks NAME CONTAINER: scripts/vm-container-checks.py against the container on 8194; its
# ok and FAILED lines count here.
# With INSIDE=1 the checks run in the container itself (a pod with its own network).
checks() {
  local name=$1 ctr=$2 line
  if [ "${INSIDE:-0}" = 1 ]; then
    # shellcheck disable=SC2086
    "${P[@]}" exec -i "$ctr" python3 - --url http://127.0.0.1:8194 --key "$KEY" --exec "" \
      --allow "$ALLOW_ADDR:$ALLOW_PORT" --runs "${HAKO_VM_RUNS:-10}" ${CHECK_ARGS:-} \
      <"$REPO/scripts/vm-container-checks.py" >/tmp/checks.log 2>&1
  else
    python3 "$REPO/scripts/vm-container-checks.py" --url http://127.0.0.1:8194 --key "$KEY" \
      --exec "${E[*]} exec $ctr" --allow "$ALLOW_ADDR:$ALLOW_PORT" --runs "${HAKO_VM_RUNS:-10}" \
      >/tmp/checks.log 2>&1
  fi
  say "$name: checks exited with $?"
  while IFS= read -r line; do
    case "$line" in
      "vm-container-checks: ok "*) ok "$name: ${line#vm-container-checks: ok     }" ;;
      "vm-container-checks: FAILED "*) bad "$name: ${line#vm-container-checks: FAILED }" ;;
      *) say "$name: ${line#vm-container-checks: }" ;;
    esac
  done </tmp/checks.log
  grep -q '^vm-container-checks: [0-9]* passed' /tmp/checks.log || bad "$name: the checks did not finish"
}

# engine_run NAME ENGINE...: the image under that engine with docs/deploy.md's command line
# for a cgroup-v2 host, with the guest's network (the guest has no network to bridge) and no
# healthcheck (podman schedules it with systemd); the checks, its figures, a clean stop.
engine_run() {
  local name=$1; shift
  E=("$@")
  local unmask='unmask=/proc/*' size
  [ "$name" = docker ] && unmask=systempaths=unconfined
  size=$("${E[@]}" image inspect -f '{{.Size}}' "$IMAGE" 2>&1)
  say "$name: figure: image $IMAGE, $((size / 1000000)) MB"
  local t0
  t0=$(date +%s%N)
  if ! "${E[@]}" run -d --name hako-vm --network host --no-healthcheck \
      --security-opt seccomp="$REPO/deploy/seccomp/hako.json" --security-opt "$unmask" \
      --security-opt no-new-privileges --cap-drop ALL \
      --cap-add SETUID --cap-add SETGID --cap-add KILL --cap-add SETFCAP \
      --ulimit nofile=20000:20000 -e API_KEY="$KEY" -e WORKER_TIMEOUT=60 \
      -e HAKO_NETWORK_ALLOW="$ALLOW_ADDR" "$IMAGE" >/dev/null 2>/tmp/run.log; then
    bad "$name run: $(tail -3 /tmp/run.log)"; return
  fi
  if wait_ready 8194; then
    READY_MS=$((($(date +%s%N) - t0) / 1000000))
    ok "$name: ready"
    say "$name: figure: $name run to 200 on /ready: $((READY_MS / 1000)).$((READY_MS % 1000 / 100)) s"
  else
    bad "$name: not ready within 900 s"; "${E[@]}" logs hako-vm 2>&1 | tail -20 | sed 's/^/    /'
    "${E[@]}" rm -f hako-vm >/dev/null 2>&1; return
  fi
  sleep 5
  say "$name: figure: idle memory $("${E[@]}" stats --no-stream --format '{{.MemUsage}}' hako-vm 2>&1)"
  checks "$name" hako-vm
  "${E[@]}" logs hako-vm 2>&1 | grep -E 'WARN|ERROR' | head -10 | sed "s/^/hako-vm: $name: log: /"
  case " $PARTS " in *" bench "*) bench_container "$name" ;; esac
  local t1
  t1=$(date +%s)
  "${E[@]}" stop -t 30 hako-vm >/dev/null 2>&1
  local code
  code=$("${E[@]}" inspect -f '{{.State.ExitCode}}' hako-vm 2>&1)
  [ "$code" = 0 ] && ok "$name: clean stop in $(($(date +%s) - t1)) s" || bad "$name: stop: exit code $code"
  case " $PARTS " in *" bench "*) bench_host "$name" ;; esac
  "${E[@]}" rm -f hako-vm >/dev/null 2>&1
}

# bench_once NAME WHERE: `hako bench` (the image's own binary, in the guest) against the
# server on 127.0.0.1:8194, Dify's python-hello with network; its report and p50 in P50.
BENCH=(/tmp/hostsrv/hako bench --url http://127.0.0.1:8194 --key "$KEY" --workload python-hello
  --duration "${HAKO_VM_BENCH_SECONDS:-10}" --warmup 5)
bench_once() {
  local name=$1 where=$2
  timeout 600 "${BENCH[@]}" >/tmp/bench.log 2>&1
  sed "s/^/hako-vm: $name: bench $where: /" /tmp/bench.log | grep -E 'runs|error' | head -5
  P50=$(sed -n 's/^server *runs .* p50 *\([0-9.]*\) ms.*/\1/p' /tmp/bench.log | tail -1)
}

# The same bench against the container, then against a server on the guest itself: the
# image's binary and package environment copied out of the stopped container, started with
# the container's settings (built-in defaults, the same environment variables, from /).
bench_container() {
  local name=$1
  CONTAINER_P50=""
  rm -rf /tmp/hostsrv && mkdir -p /tmp/hostsrv
  "${E[@]}" cp hako-vm:/usr/local/bin/hako /tmp/hostsrv/hako &&
    "${E[@]}" cp hako-vm:/usr/local/bin/libhako_zygote.so /tmp/hostsrv/libhako_zygote.so ||
    { bad "$name: bench: the image's binary could not be copied out"; return; }
  bench_once "$name" container
  CONTAINER_P50=$P50
}

bench_host() {
  local name=$1
  [ -x /tmp/hostsrv/hako ] || return
  rm -rf /var/lib/hako
  "${E[@]}" cp hako-vm:/var/lib/hako /var/lib/hako || { bad "$name: bench: no package environment"; return; }
  # PIP_NO_INDEX: if the copied environment were not taken, the install fails at once.
  (cd / && API_KEY=$KEY WORKER_TIMEOUT=60 HAKO_NETWORK_ALLOW=$ALLOW_ADDR PIP_NO_INDEX=1 \
    exec /tmp/hostsrv/hako serve) \
    >/tmp/hostsrv/serve.log 2>&1 &
  local pid=$!
  bench_once "$name" host
  local host_p50=$P50
  stop_pid "$pid" 60 || bad "$name: bench: the server on the guest did not stop cleanly ($?)"
  rm -rf /var/lib/hako
  if [ -z "$CONTAINER_P50" ] || [ -z "$host_p50" ]; then
    bad "$name: bench: no p50 (container '${CONTAINER_P50:-}', host '$host_p50')"
    tail -5 /tmp/hostsrv/serve.log | sed 's/^/    /'; return
  fi
  local ratio
  ratio=$(python3 -c "print(f'{$CONTAINER_P50 / $host_p50:.2f}')")
  # A figure, not a pass mark: speed is not asserted on a shared machine.
  say "$name: figure: bench python-hello p50: container $CONTAINER_P50 ms, server on the guest $host_p50 ms, container / guest $ratio"
  ok "$name: bench: figures against the container and a server on the guest"
}

# Debian's dockerd, as the guest has no systemd: the cgroupfs driver, no bridge, no
# iptables (the container uses the guest's network); its image was loaded on the host.
docker_run() {
  say "docker: $(dockerd --version)"
  dockerd --bridge none --iptables=false --ip-forward=false \
    --exec-opt native.cgroupdriver=cgroupfs >/tmp/dockerd.log 2>&1 &
  local pid=$! up=""
  for _ in $(seq 1 600); do
    timeout 30 "${D[@]}" version >/dev/null 2>&1 && { up=1; break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if [ -z "$up" ]; then
    bad "docker: dockerd did not start"; tail -20 /tmp/dockerd.log | sed 's/^/    /'; return
  fi
  say "docker: $("${D[@]}" info -f 'cgroup {{.CgroupVersion}}, driver {{.CgroupDriver}}, storage {{.Driver}}, security {{.SecurityOptions}}' 2>&1)"
  engine_run docker "${D[@]}"
  stop_pid "$pid" 60
}

# CAP_SETFCAP is what the documented options add for cgroup v2: without it hako cannot map
# the container's root into the user namespace of its private cgroup2 mount (Linux >= 5.12),
# and `hako doctor` must say so and name the memory guard instead of claiming cgroups.
without_setfcap() {
  "${P[@]}" run --rm --network host --entrypoint sh \
    --security-opt seccomp="$REPO/deploy/seccomp/hako.json" --security-opt 'unmask=/proc/*' \
    --security-opt no-new-privileges --cap-drop ALL --cap-add SETUID --cap-add SETGID --cap-add KILL \
    "$IMAGE" -c 'ls -l /usr/bin/newuidmap 2>&1; grep CapBnd /proc/self/status; hako doctor 2>&1' >/tmp/nofcap.log 2>&1
  sed 's/^/hako-vm: no SETFCAP: /' /tmp/nofcap.log | grep -vE ' INFO |interpreter|packages' | head -30
  if grep -qE '^cgroups +(degraded|missing)' /tmp/nofcap.log && grep -qE '^memory limit +guard' /tmp/nofcap.log; then
    ok "no SETFCAP: hako doctor reports the memory guard, not cgroups"
  else
    bad "no SETFCAP: hako doctor does not report the memory guard"
  fi
}

# The ids `--userns auto` takes user namespaces from.
auto_userns_ids() {
  grep -q '^containers:' /etc/subuid 2>/dev/null || echo 'containers:200000:1000000' >>/etc/subuid
  grep -q '^containers:' /etc/subgid 2>/dev/null || echo 'containers:200000:1000000' >>/etc/subgid
}

# The rendered pod spec's container as `podman run` (scripts/kube-pod-to-podman.py, on the
# host): the pod's user namespace (hostUsers: false, 65536 ids), its securityContext,
# limits, ConfigMaps and emptyDirs, a network namespace of its own (as a pod's); the checks
# run inside it. What `podman kube play` would start, without its infra container.
pod_run() {
  [ -s /job/pod/args ] || { bad "pod: no translated pod spec"; return; }
  auto_userns_ids
  local args=() cmd=()
  mapfile -t args </job/pod/args
  mapfile -t cmd </job/pod/cmd
  if ! "${P[@]}" run -d --name hako-pod --network none --no-healthcheck "${args[@]}" \
      -e API_KEY="$KEY" -e WORKER_TIMEOUT=60 -e HAKO_NETWORK_ALLOW="$ALLOW_ADDR" \
      "$IMAGE" "${cmd[@]}" >/dev/null 2>/tmp/pod.log; then
    bad "pod: podman run: $(tail -3 /tmp/pod.log | tr '\n' ' ')"; return
  fi
  say "pod: uid map $("${P[@]}" exec hako-pod cat /proc/self/uid_map 2>&1 | tr -s ' ' | head -1)"
  local t0 ready="" body=""
  t0=$(date +%s)
  while [ $(($(date +%s) - t0)) -lt 900 ]; do
    body=$("${P[@]}" exec hako-pod curl -s -w ' %{http_code}' http://127.0.0.1:8194/ready 2>&1)
    case "$body" in *" 200") ready=1; break ;; *"failed"*) break ;; esac
    "${P[@]}" inspect -f '{{.State.Running}}' hako-pod 2>/dev/null | grep -q true || break
    sleep 2
  done
  if [ -n "$ready" ]; then ok "pod: ready after about $(($(date +%s) - t0)) s"; else
    bad "pod: not ready: $body"; "${P[@]}" logs hako-pod 2>&1 | tail -20 | cut -c1-400 | sed 's/^/    /'
    "${P[@]}" exec hako-pod hako doctor 2>&1 | sed 's/^/    doctor: /'
    "${P[@]}" rm -f hako-pod >/dev/null 2>&1; return; fi
  # Under podman 4.3 and runc 1.1.5 the pod's cgroup is not delegated to its user
  # namespace: hako must say so and limit memory with its guard (docs/deploy.md).
  INSIDE=1 CHECK_ARGS=--memory-guard checks pod hako-pod
  "${P[@]}" logs hako-pod 2>&1 | grep -E '"level":"(WARN|ERROR)"' | head -10 | cut -c1-300 | sed 's/^/hako-vm: pod: log: /'
  local t1 code
  t1=$(date +%s)
  "${P[@]}" stop -t 30 hako-pod >/dev/null 2>&1
  code=$("${P[@]}" inspect -f '{{.State.ExitCode}}' hako-pod 2>&1)
  [ "$code" = 0 ] && ok "pod: clean stop in $(($(date +%s) - t1)) s" || bad "pod: stop: exit code $code"
  "${P[@]}" rm -f hako-pod >/dev/null 2>&1
}

# Why a played pod did not start: its containers' states and errors, runc's log lines.
kube_why() {
  local c
  for c in $("${P[@]}" ps -a --format '{{.Names}}' | grep -E -- '-(infra|hako)$'); do
    say "kube:   $c: $("${P[@]}" inspect -f '{{.State.Status}} {{.State.Error}} {{.ImageName}}' "$c" 2>&1 | head -3 | tr '\n' ' ')"
    "${P[@]}" logs "$c" 2>&1 | tail -5 | sed "s/^/hako-vm: kube:     /"
  done
  grep -v '^Trying\|^Getting\|^Copying\|^Writing\|^Storing' /tmp/kube/play.log | head -12 | sed 's/^/hako-vm: kube:   play: /'
}

# The rendered manifests' Deployment and ConfigMaps, made playable here: one replica, the
# local image, a podman secret for the key, the seccomp profile from the repository.
kube_play() {
  [ -s /job/rendered.yaml ] || { bad "kube: no rendered manifests (kubectl missing on the host)"; return; }
  mkdir -p /tmp/kube/profiles
  cp "$REPO/deploy/seccomp/hako.json" /tmp/kube/profiles/hako.json
  python3 - "$IMAGE" <<'EOF' >/tmp/kube/pod.yaml
import re, sys
image = sys.argv[1]
docs = open("/job/rendered.yaml").read().split("\n---\n")
keep = [d for d in docs if re.search(r"^kind: (Deployment|ConfigMap)$", d, re.M)]
out = []
for d in keep:
    if "kind: Deployment" in d:
        d = d.replace("replicas: 2", "replicas: 1")
        d = re.sub(r"image: \S+", "image: " + image, d)
        d = d.replace("imagePullPolicy: Always", "imagePullPolicy: Never")
        # The guest has no network: the pod shares the guest's (no port mapping).
        d = re.sub(r"\n( *)ports:\n *- containerPort: 8194\n *name: http\n", "\n", d)
        # The checks' allow-listed server; WORKER_TIMEOUT as in the podman part (TCG).
        d = re.sub(r"\n( *)env:\n", r"\n\1env:\n\1- name: HAKO_NETWORK_ALLOW\n\1  value: 127.0.0.2\n"
                   r"\1- name: WORKER_TIMEOUT\n\1  value: '60'\n", d, count=1)
    else:
        # The guest has no Dify ssrf_proxy to chain to: the guard connects itself.
        d = re.sub(r"\n *proxy:\n( +(http|https): \S+\n)+", "\n", d)
    out.append(d)
print("\n---\n".join(out))
EOF
  auto_userns_ids
  # podman 4.3 takes a secretKeyRef from a podman secret holding a JSON map of keys to
  # base64 values (not a Secret object: that fails with "not valid JSON: illegal base64").
  local userns played=""
  "${P[@]}" secret rm hako-api-key >/dev/null 2>&1
  printf '{"api-key":"%s"}' "$(printf %s "$KEY" | base64 -w0)" | "${P[@]}" secret create hako-api-key - >/dev/null
  # The pod gets its own network namespace (--network none: loopback only): in a user
  # namespace the infra container cannot mount sysfs over a network namespace it does not
  # own (with --network host: "mount sysfs:/sys ... operation not permitted").
  for userns in "auto:size=65536" "auto"; do
    if "${P[@]}" kube play --network none --seccomp-profile-root /tmp/kube \
        --userns "$userns" /tmp/kube/pod.yaml >/tmp/kube/play.log 2>&1; then
      played=$userns; break
    fi
    say "kube: play --userns $userns: $(tail -3 /tmp/kube/play.log | tr '\n' ' ')"
    kube_why
    "${P[@]}" kube down /tmp/kube/pod.yaml >/dev/null 2>&1 || true
  done
  [ -n "$played" ] || { bad "kube play"; return; }
  local ctr
  ctr=$("${P[@]}" ps --format '{{.Names}}' | grep -- '-hako$' | head -1)
  say "kube: --userns $played, container $ctr, uid map: $("${P[@]}" exec "$ctr" cat /proc/self/uid_map 2>&1 | tr -s ' ' | head -1)"
  local t0 ready=""
  t0=$(date +%s)
  for _ in $(seq 1 900); do
    [ "$("${P[@]}" exec "$ctr" curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8194/ready 2>/dev/null)" = 200 ] && { ready=1; break; }
    sleep 1
  done
  if [ -n "$ready" ]; then ok "kube: ready after about $(($(date +%s) - t0)) s"; else
    bad "kube: not ready"; "${P[@]}" logs "$ctr" 2>&1 | tail -20 | sed 's/^/    /'; fi
  INSIDE=1 checks kube "$ctr"
  "${P[@]}" kube down /tmp/kube/pod.yaml >/dev/null 2>&1 || true
}

say "kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers), $(podman --version), $(runc --version | head -1)"
echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
for part in ${PARTS:-podman}; do
  case "$part" in
    podman) engine_run podman "${P[@]}" ;;
    setfcap) without_setfcap ;;
    docker) docker_run ;;
    pod) pod_run ;;
    kube) kube_play ;;
    bench) ;;
    *) bad "unknown part $part (podman, setfcap, docker, bench, pod, kube)" ;;
  esac
done
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && echo pass >/job/result || echo fail >/job/result
