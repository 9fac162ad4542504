#!/usr/bin/env bash
# Runs web/test/bandwidth.mjs: adaptive media in headless Chromium over a
# shaped link. Needs root (network namespaces, veth, tc).
#
# Re-executes itself in a private network namespace (unshare -n), so every
# address lives in namespaces this script creates: there it makes a veth
# pair to a second namespace for the constrained subscriber (10.99.0.1 on
# the server side, 10.99.0.2 on the subscriber side), starts the server on
# 10.99.0.1, runs bandwidth.mjs (which shapes the server-side veth with tbf),
# and removes the namespace and stops the server (by PID) on exit. The
# server start and stop are netns-lib.sh's, shared with run-network-tests.sh.
#
# Environment:
#   PULSEWAVE_SERVER_BIN  server binary (default target/debug/pulsewave-server)
#   PULSEWAVE_ARTIFACTS   logs (default web/test/artifacts)
set -euo pipefail

WEB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$WEB_DIR/.." && pwd)"
SELF="$WEB_DIR/test/run-bandwidth-tests.sh"
export PULSEWAVE_ARTIFACTS="${PULSEWAVE_ARTIFACTS:-$WEB_DIR/test/artifacts}"
say() { printf '[bandwidth-tests] %s\n' "$*" >&2; }
# shellcheck source=web/test/netns-lib.sh
. "$WEB_DIR/test/netns-lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E env "PATH=$PATH" bash "$SELF" "$@"
  fi
  say "FATAL: needs root or sudo (network namespaces, veth pairs, tc)"
  exit 2
fi
pw_require_tools ip tc unshare node

if [ "${PULSEWAVE_IN_NETNS:-}" != 1 ]; then
  exec env PULSEWAVE_IN_NETNS=1 unshare -n -- bash "$SELF" "$@"
fi

export PULSEWAVE_SERVER_BIN="${PULSEWAVE_SERVER_BIN:-$REPO_DIR/target/debug/pulsewave-server}"
BIN="$PULSEWAVE_SERVER_BIN"
[ -x "$BIN" ] || { say "FATAL: no server binary at $BIN (cargo build -p pulsewave-server)"; exit 2; }
mkdir -p "$PULSEWAVE_ARTIFACTS"

NS="pwnet$$"
HOST_IF="pwh$$"
NS_IF="pwn$$"
cleanup() {
  pw_stop_server
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

ip link set lo up
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NS"
ip addr add 10.99.0.1/24 dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" addr add 10.99.0.2/24 dev "$NS_IF"
ip -n "$NS" link set "$NS_IF" up
ip -n "$NS" link set lo up
ip -n "$NS" route add default via 10.99.0.1

PORT=3000
say "starting $BIN --dev on 10.99.0.1:$PORT (log: $PULSEWAVE_ARTIFACTS/bandwidth-server.log)"
pw_start_server "$PULSEWAVE_ARTIFACTS/bandwidth-server.log" 10.99.0.1 "$PORT" \
  MEDIASOUP_LISTEN_IP=10.99.0.1 MEDIASOUP_ANNOUNCED_IP=10.99.0.1 MEDIASOUP_NUM_WORKERS=1

set +e
PULSEWAVE_URL="http://10.99.0.1:$PORT" PULSEWAVE_NETNS="$NS" PULSEWAVE_VETH="$HOST_IF" \
  node "$WEB_DIR/test/bandwidth.mjs"
STATUS=$?
set -e
exit "$STATUS"
