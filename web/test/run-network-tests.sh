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
#      browsers must decode each other over IPv6 UDP only;
#   5. TURN over TLS only (ice-tcp.mjs with PULSEWAVE_NETWORK=turn-tls):
#      Chromium (and the test script) in a namespace of their own, joined to
#      the server's by a veth pair (browser 10.78.0.2, server 10.78.0.1:
#      signaling, media and the embedded TURN server on UDP, TCP and TLS,
#      its TLS certificate issued by a CA this script makes); the browser
#      namespace's iptables drop everything to the server but the
#      signaling port and the TURN TLS port. Chromium trusts the test CA
#      (an NSS database in a throwaway HOME; certutil from libnss3-tools,
#      installed with apt-get when missing) and the unmodified demo must
#      decode video and audio both ways through TURN over TLS.
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
  if ! command -v certutil >/dev/null 2>&1; then
    say "installing libnss3-tools (certutil: Chromium's trust of the test CA)"
    pw_apt_install libnss3-tools
  fi
  for phase in ice-tcp ${PULSEWAVE_NETWORK_PHASES:-ice-restart net-change ipv6 turn-tls}; do
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
# Where the server listens for signaling, the namespace the test runs in
# (empty: this one), and a namespace to delete at the end.
host=127.0.0.1
run_in=()
cleanup_ns=""
cleanup() {
  pw_stop_server
  if [ -n "$cleanup_ns" ]; then ip netns del "$cleanup_ns" 2>/dev/null || true; fi
}
trap cleanup EXIT
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
    # The new address is added before the old one goes: without this the
    # kernel deletes the secondary (new) address with the primary.
    sysctl -qw net.ipv4.conf.v0.promote_secondaries=1
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
  turn-tls)
    # The browsers' namespace, joined to this one (the server's) by a veth.
    sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    browser_ns="pwtls$$"
    ip netns add "$browser_ns"
    cleanup_ns="$browser_ns"
    ip link add pws type veth peer name pwb
    ip link set pwb netns "$browser_ns"
    ip addr add 10.78.0.1/24 dev pws
    ip link set pws up
    ip netns exec "$browser_ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$browser_ns" addr add 10.78.0.2/24 dev pwb
    ip -n "$browser_ns" link set pwb up
    ip -n "$browser_ns" link set lo up
    certs="$(mktemp -d /tmp/pw-turn-tls.XXXXXX)"
    pw_test_certificate "$certs" 10.78.0.1
    tls_port=5349
    # The browsers' network lets out, to the server, only signaling and
    # TURN over TLS: no media UDP or ICE-TCP, no TURN over UDP or TCP.
    ip netns exec "$browser_ns" iptables -A OUTPUT -d 10.78.0.1 -p tcp --dport "$port" -j ACCEPT
    ip netns exec "$browser_ns" iptables -A OUTPUT -d 10.78.0.1 -p tcp --dport "$tls_port" -j ACCEPT
    ip netns exec "$browser_ns" iptables -A OUTPUT -d 10.78.0.1 -j DROP
    host=10.78.0.1
    run_in=(ip netns exec "$browser_ns")
    media_env=(
      MEDIASOUP_MIN_PORT=45000 MEDIASOUP_MAX_PORT=45009 MEDIASOUP_NUM_WORKERS=1
      MEDIASOUP_LISTEN_IP=10.78.0.1 MEDIASOUP_ANNOUNCED_IP=10.78.0.1
      TURN_ENABLED=true TURN_UDP_PORT=3478 TURN_TCP_PORT=3478 TURN_TLS_PORT="$tls_port"
      TURN_CERT_FILE="$certs/cert.pem" TURN_KEY_FILE="$certs/key.pem"
      TURN_RELAY_MIN_PORT=52000 TURN_RELAY_MAX_PORT=52049
      PULSEWAVE_NETWORK=turn-tls PULSEWAVE_TEST_CA="$certs/ca.pem"
    )
    say "TURN over TLS only: browsers in $browser_ns (10.78.0.2), server on 10.78.0.1; only TCP $port (signaling) and $tls_port (TURN TLS) let out to it"
    ;;
  *)
    say "FATAL: unknown phase $phase"
    exit 2
    ;;
esac

server_log="$PULSEWAVE_ARTIFACTS/$phase-server.log"
cd "$REPO_DIR"
pw_start_server "$server_log" "$host" "$port" "${media_env[@]}"

status=0
"${run_in[@]}" env PULSEWAVE_URL="http://$host:$port" PULSEWAVE_MEDIA_PORTS=45000:45009 \
  "${media_env[@]}" node "$WEB_DIR/test/$test_script" || status=$?
cleanup
trap - EXIT
if [ "$status" != 0 ]; then
  say "$phase browser test failed (status $status); the last lines of the server log:"
  tail -n 30 "$server_log" >&2 || true
fi
exit "$status"
