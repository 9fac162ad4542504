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
#      mid-call; the call must come back the same way;
#   4. dual stack (ice-tcp.mjs with PULSEWAVE_NETWORK=ipv6): the server's
#      media sockets on 10.78.0.1 and fd00:78::1 (loopback,
#      MEDIASOUP_LISTEN_IP6), the browsers' addresses 10.77.0.2 and
#      fd00:77::2 on a veth (ULA, no DAD), and every IPv4 media packet
#      dropped (iptables: all IPv4 UDP, and TCP to the media ports); the
#      browsers must decode each other over IPv6 UDP only.
# The namespace helpers (tools, free port, server start and stop by PID)
# are netns-lib.sh's, shared with run-bandwidth-tests.sh.
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
# shellcheck source=web/test/netns-lib.sh
. "$WEB_DIR/test/netns-lib.sh"

if [ "${1:-}" != "--inner" ]; then
  mkdir -p "$PULSEWAVE_ARTIFACTS"
  pw_ensure_iptables
  pw_require_netns
  status=0
  for phase in ice-tcp ${PULSEWAVE_NETWORK_PHASES:-ice-restart net-change ipv6}; do
    phase_status=0
    unshare -n "$SELF" --inner "$phase" || phase_status=$?
    if [ "$status" = 0 ]; then status=$phase_status; fi
  done
  exit "$status"
fi
phase="${2:-ice-tcp}"

ip link set lo up
port="$(pw_free_port)"
media_env=()
test_script=ice-tcp.mjs
case "$phase" in
  ice-tcp)
    # Drop all UDP (IPv4 and IPv6) in this namespace: a corporate firewall.
    iptables -A INPUT -p udp -j DROP
    ip6tables -A INPUT -p udp -j DROP
    say "ICE-TCP: UDP dropped in this namespace"
    ;;
  ice-restart)
    # Known media ports, for the test to cut.
    media_env=(MEDIASOUP_MIN_PORT=45000 MEDIASOUP_MAX_PORT=45009)
    test_script=ice-restart.mjs
    say "ICE restart: media ports 45000-45009"
    ;;
  net-change)
    # The browsers' media address on a veth, the server's on loopback.
    sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip addr add 10.78.0.1/32 dev lo
    ip link add v0 type veth peer name v1
    ip addr add 10.77.0.2/24 dev v0
    ip link set v0 up
    ip link set v1 up
    media_env=(MEDIASOUP_LISTEN_IP=10.78.0.1 MEDIASOUP_ANNOUNCED_IP=10.78.0.1 PULSEWAVE_NET_CHANGE=address)
    test_script=ice-restart.mjs
    say "network change: browsers on 10.77.0.2 (v0), server media on 10.78.0.1"
    ;;
  ipv6)
    # Dual stack: both families on both sides, IPv4 media dropped.
    ip addr add 10.78.0.1/32 dev lo
    pw_add_ipv6 lo fd00:78::1/128
    ip link add v0 type veth peer name v1
    ip link set v0 up
    ip link set v1 up
    ip addr add 10.77.0.2/24 dev v0
    pw_add_ipv6 v0 fd00:77::2/64
    pw_add_ipv6 v1 fd00:77::3/64
    # Every IPv4 UDP packet, and IPv4 TCP to the media ports (ICE-TCP), is
    # dropped; signaling (TCP to $port on 127.0.0.1) and all IPv6 pass.
    iptables -A INPUT -p udp -j DROP
    iptables -A INPUT -p tcp --dport 45000:45009 -j DROP
    media_env=(
      MEDIASOUP_MIN_PORT=45000 MEDIASOUP_MAX_PORT=45009 MEDIASOUP_NUM_WORKERS=1
      MEDIASOUP_LISTEN_IP=10.78.0.1 MEDIASOUP_ANNOUNCED_IP=10.78.0.1
      MEDIASOUP_LISTEN_IP6=fd00:78::1
      PULSEWAVE_NETWORK=ipv6 PULSEWAVE_IPV6_ADDRESS=fd00:78::1
    )
    say "dual stack: browsers on 10.77.0.2 and fd00:77::2 (v0), server media on 10.78.0.1 and fd00:78::1, IPv4 media dropped"
    ;;
  *)
    say "FATAL: unknown phase $phase"
    exit 2
    ;;
esac

server_log="$PULSEWAVE_ARTIFACTS/$phase-server.log"
cd "$REPO_DIR"
trap pw_stop_server EXIT
pw_start_server "$server_log" 127.0.0.1 "$port" "${media_env[@]}"

status=0
PULSEWAVE_URL="http://127.0.0.1:$port" PULSEWAVE_MEDIA_PORTS=45000:45009 \
  env "${media_env[@]}" node "$WEB_DIR/test/$test_script" || status=$?
pw_stop_server
trap - EXIT
if [ "$status" != 0 ]; then
  say "$phase browser test failed (status $status); the last lines of the server log:"
  tail -n 30 "$server_log" >&2 || true
fi
exit "$status"
