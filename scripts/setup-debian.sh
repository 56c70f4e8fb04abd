#!/usr/bin/env bash
# Installs what hako and its tests need on a fresh Debian 12 machine. Run as root; idempotent.
set -euo pipefail

packages=(python3 python3-venv python3-pip ca-certificates tzdata iproute2 openssl gcc fonts-dejavu-core fontconfig)
[ -x /usr/bin/node ] || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The official MCP Python SDK client, for the MCP tests (crates/hako/tests/mcp.rs).
mcp_venv=/var/cache/hako-test/mcp-venv
if ! "$mcp_venv/bin/python" -c "import mcp" 2>/dev/null; then
  echo "setup: installing the MCP Python SDK into $mcp_venv"
  mkdir -p "$(dirname "$mcp_venv")"
  python3 -m venv "$mcp_venv"
  "$mcp_venv/bin/pip" install -q mcp
fi
