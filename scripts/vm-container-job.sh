# The guest's job for `HAKO_VM_CONTAINER=1 scripts/vm-cgroup2-test.sh` (sourced after an
# IMAGE= line): on a pure cgroup-v2 kernel, the image under podman with the documented
# options and no cgroup bind (hako mounts its own cgroup2), then the rendered Kubernetes pod
# spec under `podman kube play` in a user namespace, as `hostUsers: false` gives.
# Every figure is TCG-slow (13-20x the host for CPU-bound work).
set -u
passed=0; failed=0
say() { echo "hako-vm: $*"; }
ok() { passed=$((passed + 1)); say "ok     $*"; }
bad() { failed=$((failed + 1)); say "FAILED $*"; }
P=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
KEY=vm-container-key
REPO=$PWD

cat >/tmp/hako_vm_http.py <<'EOF'
# hako_vm_http.py METHOD URL [BODY]: prints "STATUS BODY" (status 0 when unreachable)
import json, sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"X-Api-Key": sys.argv[4] if len(sys.argv) > 4 else "",
                                      "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=300) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print(0, repr(e))
EOF
http() { python3 /tmp/hako_vm_http.py "$@"; }
run_json() { python3 -c 'import json, sys; print(json.dumps({"language": "python3", "code": sys.argv[1], "enable_network": False}))' "$1"; }
# field EXPR: evaluates EXPR on the JSON body of the answer on stdin ("a"), prints the result.
field() { python3 -c 'import json, sys; s, _, b = sys.stdin.read().partition(" "); a = json.loads(b) if b.strip().startswith(("{", "[", "\"")) else None; print(eval(sys.argv[1]))' "$1"; }

# wait_ready PORT: seconds until /ready answers 200, or fails after 900 s.
wait_ready() {
  local t0 answer
  t0=$(date +%s%N)
  for _ in $(seq 1 1800); do
    answer=$(http GET "http://127.0.0.1:$1/ready")
    [ "${answer%% *}" = 200 ] && { READY_MS=$((($(date +%s%N) - t0) / 1000000)); return 0; }
    sleep 0.5
  done
  say "last /ready: $answer"
  return 1
}

# check_server NAME PORT GUARD: a run, a memory bomb beside a run that survives, /ready's
# word on cgroups (GUARD=1: the memory guard is expected, 0: a cgroup).
check_server() {
  local name=$1 port=$2 guard=$3 url answer
  url="http://127.0.0.1:$port/v1/sandbox/run"
  answer=$(http POST "$url" "$(run_json 'print(6 * 7)')" "$KEY")
  [ "$(field 'a["data"]["stdout"]' <<<"$answer")" = 42 ] && ok "$name: a run" || bad "$name: a run: $answer"
  http POST "$url" "$(run_json 'import time
b = b"x" * (32 << 20)
time.sleep(20)
print("survived")')" "$KEY" >/tmp/survivor &
  local survivor=$!
  answer=$(http POST "$url" "$(run_json 'chunks = []
while True:
    chunks.append(b"x" * (16 << 20))')" "$KEY")
  [ "$(field 'a["data"]["status"]' <<<"$answer")" = memory_limit ] \
    && ok "$name: a memory bomb ends as memory_limit" || bad "$name: memory bomb: ${answer:0:400}"
  wait "$survivor"
  [ "$(field 'a["data"]["stdout"].strip()' </tmp/survivor)" = survived ] \
    && ok "$name: the run beside the bomb survives" || bad "$name: survivor: $(head -c 400 /tmp/survivor)"
  answer=$(http GET "http://127.0.0.1:$port/ready")
  say "$name: /ready: $answer"
  local degraded
  degraded=$(field '"degraded" in a' <<<"$answer")
  if [ "$guard" = 1 ]; then
    [ "$degraded" = True ] && ok "$name: /ready names the memory guard" || bad "$name: /ready does not name the guard"
  else
    [ "$degraded" = False ] && ok "$name: runs are limited by cgroups, not the guard" || bad "$name: /ready: degraded"
  fi
  # Dify-like latency: 10 sequential small runs.
  local t0 i
  t0=$(date +%s%N)
  for i in 1 2 3 4 5 6 7 8 9 10; do http POST "$url" "$(run_json 'print(1)')" "$KEY" >/dev/null; done
  say "$name: figure: 10 sequential Python runs, $((($(date +%s%N) - t0) / 10000000)) ms per run (TCG)"
}

podman_run() {
  local t0
  t0=$(date +%s)
  say "podman: image $IMAGE, $("${P[@]}" image inspect -f '{{.Size}}' "$IMAGE" 2>&1) bytes"
  "${P[@]}" run -d --name hako-vm --network host --no-healthcheck \
    --security-opt seccomp="$REPO/deploy/seccomp/hako.json" --security-opt 'unmask=/proc/*' \
    --security-opt no-new-privileges --cap-drop ALL --cap-add SETUID --cap-add SETGID --cap-add KILL --cap-add SETFCAP \
    --ulimit nofile=20000:20000 -e API_KEY="$KEY" -e WORKER_TIMEOUT=60 -e SANDBOX_PORT=8194 \
    "$IMAGE" >/dev/null 2>/tmp/run.log || { bad "podman run: $(tail -3 /tmp/run.log)"; return; }
  if wait_ready 8194; then
    ok "podman: ready after $READY_MS ms (TCG)"
  else
    bad "podman: not ready"; "${P[@]}" logs hako-vm 2>&1 | tail -20 | sed 's/^/    /'
  fi
  "${P[@]}" exec hako-vm hako doctor 2>&1 | grep -v ' INFO ' | sed 's/^/hako-vm: podman: doctor: /'
  "${P[@]}" exec hako-vm hako doctor 2>/dev/null | grep -q '^cgroups *enforced' \
    && ok "podman: doctor: cgroups enforced" || bad "podman: doctor: cgroups not enforced"
  say "podman: figure: idle memory $("${P[@]}" stats --no-stream --format '{{.MemUsage}}' hako-vm 2>&1)"
  check_server podman 8194 0
  "${P[@]}" logs hako-vm 2>&1 | grep -iE 'cgroup|guard|WARN|ERROR' | head -10 | sed 's/^/hako-vm: podman: log: /'
  "${P[@]}" rm -f hako-vm >/dev/null 2>&1
}

# The rendered manifests' Deployment and ConfigMaps, made playable here: one replica, the
# local image, a podman secret for the key, the seccomp profile from the repository.
kube_play() {
  [ -s /job/rendered.yaml ] || { bad "kube: no rendered manifests (kubectl missing on the host)"; return; }
  mkdir -p /tmp/kube/profiles
  cp "$REPO/deploy/seccomp/hako.json" /tmp/kube/profiles/hako.json
  python3 - "$IMAGE" "$KEY" <<'EOF' >/tmp/kube/pod.yaml
import re, sys
image, key = sys.argv[1], sys.argv[2]
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
        d = re.sub(r"\n( *)- KILL\n", r"\n\1- KILL\n\1- SETFCAP\n", d)
    out.append(d)
print("\n---\n".join(out))
EOF
  # podman 4.3 takes a secretKeyRef from a podman secret holding the Secret as JSON.
  printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"hako-api-key"},"data":{"api-key":"%s"}}' \
    "$(printf %s "$KEY" | base64 -w0)" | "${P[@]}" secret create hako-api-key - >/dev/null
  grep -q '^containers:' /etc/subuid 2>/dev/null || echo 'containers:200000:1000000' >>/etc/subuid
  grep -q '^containers:' /etc/subgid 2>/dev/null || echo 'containers:200000:1000000' >>/etc/subgid
  if ! "${P[@]}" kube play --network host --seccomp-profile-root /tmp/kube \
      --userns auto:size=65536 /tmp/kube/pod.yaml >/tmp/kube/play.log 2>&1; then
    bad "kube play: $(tail -5 /tmp/kube/play.log)"; return
  fi
  local ctr
  ctr=$("${P[@]}" ps --format '{{.Names}}' | grep -- '-hako$' | head -1)
  say "kube: container $ctr, uid map: $("${P[@]}" exec "$ctr" cat /proc/self/uid_map 2>&1 | tr -s ' ' | head -1)"
  if wait_ready 8194; then ok "kube: ready after $READY_MS ms (TCG)"; else
    bad "kube: not ready"; "${P[@]}" logs "$ctr" 2>&1 | tail -20 | sed 's/^/    /'; fi
  "${P[@]}" exec "$ctr" hako doctor 2>&1 | grep -v '"level":"INFO"' | sed 's/^/hako-vm: kube: doctor: /'
  check_server kube 8194 "${HAKO_VM_KUBE_GUARD:-1}"
  "${P[@]}" kube down /tmp/kube/pod.yaml >/dev/null 2>&1 || true
}

say "kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers), $(podman --version)"
echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
podman_run
kube_play
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && echo pass >/job/result || echo fail >/job/result
