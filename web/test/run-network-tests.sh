#!/usr/bin/env bash
# The browser network tests, each in a network namespace of its own (unshare
# -n, needs root) whose only interface is loopback:
#   1. ICE-TCP (ice-tcp.mjs): every UDP packet is dropped (iptables and
#      ip6tables INPUT rules; the iptables package is installed with apt-get
#      when missing); two Chromium pages on the demo must decode each other's
#      video and receive each other's audio over ICE-TCP;
#   2. ICE restart (ice-restart.mjs): a call whose media ports are cut (all
#      packets to them dropped, signaling untouched) until its transports go
#      `disconnected`, then restored, must come back by ICE restart on the
#      same transports with the same ids;
#   3. network change (ice-restart.mjs with PULSEWAVE_NET_CHANGE=address):
#      the browsers' only media address (10.77.0.2 on a veth, IPv6 off;
#      the server's media address 10.78.0.1 on loopback, which Chrome does
#      not use for media; signaling on 127.0.0.1) is replaced by 10.77.0.3
#      mid-call; the call must come back the same way.
# Each phase starts the server binary with --dev on a free port and stops it
# by PID. Exits with the first failure's status.
#
# Environment: PULSEWAVE_SERVER_BIN (default target/debug/pulsewave-server),
# PULSEWAVE_ARTIFACTS (default web/test/artifacts). web/dist must be built
# (npm run build).
set -euo pipefail

WEB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$WEB_DIR/.." && pwd)"
SELF="$WEB_DIR/test/run-network-tests.sh"
export PULSEWAVE_ARTIFACTS="${PULSEWAVE_ARTIFACTS:-$WEB_DIR/test/artifacts}"
export PULSEWAVE_SERVER_BIN="${PULSEWAVE_SERVER_BIN:-$REPO_DIR/target/debug/pulsewave-server}"

say() { printf '[network-tests] %s\n' "$*" >&2; }

if [ "${1:-}" != "--inner" ]; then
  mkdir -p "$PULSEWAVE_ARTIFACTS"
  if ! command -v iptables >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      say "FATAL: iptables is missing and installing it needs root (apt-get install -y iptables)"
      exit 2
    fi
    say "installing iptables"
    apt-get install -y iptables >/dev/null || { apt-get update >/dev/null && apt-get install -y iptables >/dev/null; }
  fi
  if ! unshare -n true 2>/dev/null; then
    say "FATAL: cannot create a network namespace (needs root and unshare)"
    exit 2
  fi
  status=0
  unshare -n "$SELF" --inner ice-tcp || status=$?
  for phase in ${PULSEWAVE_NETWORK_PHASES:-ice-restart net-change}; do
    phase_status=0
    unshare -n "$SELF" --inner "$phase" || phase_status=$?
    if [ "$status" = 0 ]; then status=$phase_status; fi
  done
  exit "$status"
fi
phase="${2:-ice-tcp}"

ip link set lo up
media_env=()
if [ "$phase" = ice-tcp ]; then
  # Drop all UDP (IPv4 and IPv6) in this namespace: a corporate firewall.
  iptables -A INPUT -p udp -j DROP
  ip6tables -A INPUT -p udp -j DROP
  say "ICE-TCP: UDP dropped in this namespace"
elif [ "$phase" = ice-restart ]; then
  # Known media ports, for the test to cut.
  media_env=(MEDIASOUP_MIN_PORT=45000 MEDIASOUP_MAX_PORT=45009)
  say "ICE restart: media ports 45000-45009"
else
  # The browsers' media address on a veth, the server's on loopback.
  sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip addr add 10.78.0.1/32 dev lo
  ip link add v0 type veth peer name v1
  ip addr add 10.77.0.2/24 dev v0
  ip link set v0 up
  ip link set v1 up
  media_env=(MEDIASOUP_LISTEN_IP=10.78.0.1 MEDIASOUP_ANNOUNCED_IP=10.78.0.1 PULSEWAVE_NET_CHANGE=address)
  say "network change: browsers on 10.77.0.2 (v0), server media on 10.78.0.1"
fi

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();})')"
server_log="$PULSEWAVE_ARTIFACTS/$phase-server.log"
cd "$REPO_DIR"
env "${media_env[@]}" PULSEWAVE_WEB_DIR="$WEB_DIR" RUST_LOG="${RUST_LOG:-info}" \
  "$PULSEWAVE_SERVER_BIN" --dev --port "$port" >"$server_log" 2>&1 &
server_pid=$!
stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

ready=0
for _ in $(seq 1 150); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    say "the server exited during start-up; its log:"
    cat "$server_log" >&2 || true
    exit 2
  fi
  if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' \
    "http://127.0.0.1:$port/healthz" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  say "the server did not answer /healthz within 30 s"
  exit 2
fi

status=0
PULSEWAVE_URL="http://127.0.0.1:$port" PULSEWAVE_MEDIA_PORTS=45000:45009 \
  env "${media_env[@]}" node "$WEB_DIR/test/${phase/net-change/ice-restart}.mjs" || status=$?
stop_server
trap - EXIT
if [ "$status" != 0 ]; then
  say "$phase browser test failed (status $status); the last lines of the server log:"
  tail -n 30 "$server_log" >&2 || true
fi
exit "$status"
