#!/usr/bin/env bash
# Runs the PulseWave browser end-to-end tests (web/test/e2e.mjs):
#   1. installs Debian chromium if /usr/bin/chromium is missing (needs root),
#   2. npm ci + npm run build in web/,
#   3. runs the client module's protocol tests against the mock server
#      (client.test.mjs, node --test, no Rust server needed),
#   4. starts the server binary with --dev on a free port, inside a
#      loopback-only network namespace when possible (unshare -n; root),
#   5. runs e2e.mjs, the server API test admin-e2e.mjs (LiveKit's Node
#      server SDK, livekit-server-sdk, against the server with browsers in
#      the room), then the mediasoup-client compatibility matrix
#      compat.mjs (docs/compat.md), against it, stops the server by PID,
#      then turn-e2e.mjs (relay-only media through the embedded TURN
#      server over UDP, TCP and TLS; it starts its own servers),
#   6. starts redis-server and two cluster nodes (REDIS_ENABLED=true, demo
#      on, tokens from the API key) and runs cluster-e2e.mjs: two browsers
#      in one room through different nodes, after admin-e2e.mjs with the
#      pages on one node and every API call sent to the other; stops them
#      by PID,
#   7. runs the network tests (run-network-tests.sh: two browsers call over
#      ICE-TCP where UDP is dropped, come back by ICE restart after their
#      media ports were cut and after their address changed, call over
#      IPv6 only in a dual-stack namespace whose IPv4 media is dropped, and
#      through the embedded TURN server over TLS from a namespace that lets
#      only signaling and TURN TLS out),
#   8. exits with the tests' status.
#
# Environment:
#   PULSEWAVE_SERVER_BIN  server binary (default target/release/pulsewave-server,
#                         else target/debug/pulsewave-server)
#   PULSEWAVE_ARTIFACTS   screenshots and logs (default web/test/artifacts)
#   PULSEWAVE_NETNS=0     do not use a network namespace
#   PULSEWAVE_SKIP_NPM=1  skip npm ci / npm run build (web/dist must exist)
#   PULSEWAVE_CLUSTER_E2E=0  skip the cluster test (it needs redis-server);
#                         only together with PULSEWAVE_ALLOW_SKIP=1: a skip is
#                         a failure unless explicitly allowed
#   PULSEWAVE_E2E_BWE=true  run these servers with bandwidth estimation (off
#                         by default here: see the server start below)
#   PULSEWAVE_ICE_TCP_E2E=0  skip the network tests (they need root for
#                         their namespaces and iptables); only together
#                         with PULSEWAVE_ALLOW_SKIP=1
#   PULSEWAVE_COMPAT_ONLY=1  run only the compatibility matrix (compat.mjs):
#                         no client.test.mjs, no e2e.mjs, no cluster test
set -euo pipefail

WEB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$WEB_DIR/.." && pwd)"
SELF="$WEB_DIR/test/run-browser-tests.sh"
export PULSEWAVE_ARTIFACTS="${PULSEWAVE_ARTIFACTS:-$WEB_DIR/test/artifacts}"

say() { printf '[browser-tests] %s\n' "$*" >&2; }

# --- the cluster test: redis-server + two nodes + cluster-e2e.mjs ------------
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();})'
}

wait_http() { # url pid name
  for _ in $(seq 1 150); do
    if ! kill -0 "$2" 2>/dev/null; then
      say "$3 exited during start-up"
      return 1
    fi
    if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  say "$3 did not answer $1 within 30 s"
  return 1
}

run_cluster_tests() {
  if ! command -v redis-server >/dev/null 2>&1; then
    say "FATAL: redis-server is missing (apt-get install -y redis-server), needed by the cluster browser test (PULSEWAVE_CLUSTER_E2E=0 with PULSEWAVE_ALLOW_SKIP=1 skips it)"
    return 2
  fi
  local rport a_port b_port hook_port media key secret pids=() rc=0
  rport="$(free_port)"
  hook_port="$(free_port)"
  a_port="$(free_port)"
  b_port="$(free_port)"
  media=$((20000 + (RANDOM % 200) * 100))
  key="pulsewave-e2e"
  secret="cluster-e2e-secret-$RANDOM$RANDOM"
  say "cluster: redis-server on $rport, nodes on $a_port and $b_port"
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    >"$PULSEWAVE_ARTIFACTS/cluster-redis.log" 2>&1 &
  pids+=($!)
  local i=0
  for p in "$a_port" "$b_port"; do
    env HOST=127.0.0.1 PORT="$p" API_KEY="$key" API_SECRET="$secret" \
      REDIS_ENABLED=true REDIS_URL="redis://127.0.0.1:$rport" NODE_ID="e2e-node-$i" \
      MEDIASOUP_NUM_WORKERS=1 MEDIASOUP_MIN_PORT=$((media + i * 50)) MEDIASOUP_MAX_PORT=$((media + i * 50 + 49)) \
      ROOM_EMPTY_TIMEOUT=1s DRAIN_TIMEOUT=2s DEMO_ENABLED=true PULSEWAVE_WEB_DIR="$WEB_DIR" RUST_LOG="${RUST_LOG:-info}" \
      WEBHOOK_URLS="http://127.0.0.1:$hook_port/webhook" \
      BANDWIDTH_ESTIMATION="${PULSEWAVE_E2E_BWE:-false}" \
      "$PULSEWAVE_SERVER_BIN" >"$PULSEWAVE_ARTIFACTS/cluster-node-$i.log" 2>&1 &
    pids+=($!)
    i=$((i + 1))
  done
  if wait_http "http://127.0.0.1:$a_port/healthz" "${pids[1]}" "cluster node 0" &&
    wait_http "http://127.0.0.1:$b_port/healthz" "${pids[2]}" "cluster node 1"; then
    # The server API through the node that does not own the room (before
    # cluster-e2e.mjs, which kills node 0).
    PULSEWAVE_URLS="http://127.0.0.1:$a_port,http://127.0.0.1:$b_port" \
      PULSEWAVE_API_KEY="$key" PULSEWAVE_API_SECRET="$secret" PULSEWAVE_WEBHOOK_PORT="$hook_port" \
      PULSEWAVE_IPTABLES_LOSS=elsewhere node "$WEB_DIR/test/admin-e2e.mjs" || rc=$?
    PULSEWAVE_URLS="http://127.0.0.1:$a_port,http://127.0.0.1:$b_port" \
      PULSEWAVE_API_KEY="$key" PULSEWAVE_API_SECRET="$secret" PULSEWAVE_NODE0_PID="${pids[1]}" \
      node "$WEB_DIR/test/cluster-e2e.mjs" || rc=$?
  else
    rc=2
  fi
  # Stop the nodes, then Redis, by PID.
  for pid in "${pids[@]:1}" "${pids[0]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    say "cluster browser test failed (status $rc); the last lines of the node logs:"
    tail -n 30 "$PULSEWAVE_ARTIFACTS"/cluster-node-*.log >&2 || true
  fi
  return "$rc"
}

# --- inner part: start the server, run the tests, stop the server ----------
# Runs either inside the network namespace or on the host network.
if [ "${1:-}" = "--inner" ]; then
  mode="${2:-host}"
  if [ "$mode" = "netns" ]; then
    ip link set lo up
  fi
  cd "$REPO_DIR"
  # The client module against the scripted mock server (no Rust server).
  client_status=0
  if [ "${PULSEWAVE_COMPAT_ONLY:-0}" != 1 ]; then
    say "client module tests (client.test.mjs, mock server)"
    (cd "$WEB_DIR" && node --test --test-reporter=spec test/client.test.mjs) || client_status=$?
    if [ "$client_status" != 0 ]; then say "client module tests failed (status $client_status)"; fi
  fi
  port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();})')"
  # Where the server sends webhooks: admin-e2e.mjs listens there.
  hook_port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();})')"
  server_log="$PULSEWAVE_ARTIFACTS/server.log"
  say "starting $PULSEWAVE_SERVER_BIN --dev --port $port (log: $server_log)"
  # The server serves the demo from web/ (see web/README.md).
  # Bandwidth estimation is off here: with three or four Chromium instances
  # and the server on two cores, scheduling delays read as queueing to the
  # delay-based estimator (the estimate toward each page on loopback falls
  # to ~0.3 Mbit/s) and these tests count frames. Adaptive media in
  # browsers is tested by run-bandwidth-tests.sh, with fewer pages and a real
  # bottleneck.
  BANDWIDTH_ESTIMATION="${PULSEWAVE_E2E_BWE:-false}" PULSEWAVE_WEB_DIR="$WEB_DIR" RUST_LOG="${RUST_LOG:-info}" \
    WEBHOOK_URLS="http://127.0.0.1:$hook_port/webhook" \
    "$PULSEWAVE_SERVER_BIN" --dev --port "$port" >"$server_log" 2>&1 &
  server_pid=$!
  stop_server() {
    if kill -0 "$server_pid" 2>/dev/null; then
      kill -TERM "$server_pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.2
      done
      if kill -0 "$server_pid" 2>/dev/null; then
        say "server $server_pid did not stop in 10 s; killing it"
        kill -KILL "$server_pid" 2>/dev/null || true
      fi
    fi
    wait "$server_pid" 2>/dev/null || true
  }
  trap stop_server EXIT

  # Wait (bounded) for the server to answer.
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
    say "the server did not answer /healthz within 30 s; its log:"
    cat "$server_log" >&2 || true
    exit 2
  fi

  status=0
  if [ "${PULSEWAVE_COMPAT_ONLY:-0}" != 1 ]; then
    PULSEWAVE_URL="http://127.0.0.1:$port" node "$WEB_DIR/test/e2e.mjs" || status=$?
    # The server API with LiveKit's Node server SDK (--dev: devkey / secret).
    admin_status=0
    # In the private network namespace, iptables may drop datagrams for
    # the lossy-link scenario (never on the host network).
    iptables_loss=0
    if [ "$mode" = "netns" ]; then iptables_loss=1; fi
    PULSEWAVE_URLS="http://127.0.0.1:$port" PULSEWAVE_WEBHOOK_PORT="$hook_port" PULSEWAVE_IPTABLES_LOSS="$iptables_loss" \
      node "$WEB_DIR/test/admin-e2e.mjs" || admin_status=$?
    if [ "$status" = 0 ]; then status=$admin_status; fi
  fi
  # The mediasoup-client compatibility matrix (docs/compat.md), same server.
  compat_status=0
  PULSEWAVE_URL="http://127.0.0.1:$port" node "$WEB_DIR/test/compat.mjs" || compat_status=$?
  if [ "$status" = 0 ]; then status=$compat_status; fi
  if [ "$status" = 0 ]; then status=$client_status; fi
  stop_server
  trap - EXIT
  if [ "$status" != 0 ]; then
    say "browser tests failed (status $status); the last lines of the server log:"
    tail -n 40 "$server_log" >&2 || true
  fi

  # The embedded TURN server: relay-only pages over UDP, TCP and TLS (it
  # starts its own servers with TURN_ENABLED=true).
  if [ "${PULSEWAVE_COMPAT_ONLY:-0}" != 1 ]; then
    turn_status=0
    PULSEWAVE_SERVER_BIN="$PULSEWAVE_SERVER_BIN" node "$WEB_DIR/test/turn-e2e.mjs" || turn_status=$?
    if [ "$status" = 0 ]; then status=$turn_status; fi
  fi

  if [ "${PULSEWAVE_CLUSTER_E2E:-1}" != 0 ] && [ "${PULSEWAVE_COMPAT_ONLY:-0}" != 1 ]; then
    cluster_status=0
    run_cluster_tests || cluster_status=$?
    if [ "$status" = 0 ]; then status=$cluster_status; fi
  fi
  # ICE-TCP with UDP blocked, ICE restart after a cut and an address change,
  # IPv6 media with IPv4 dropped, TURN over TLS only (run-network-tests.sh).
  if [ "${PULSEWAVE_ICE_TCP_E2E:-1}" != 0 ] && [ "${PULSEWAVE_COMPAT_ONLY:-0}" != 1 ]; then
    ice_status=0
    say "network browser tests (ICE-TCP, ICE restart, network change, IPv6, TURN TLS only)"
    "$WEB_DIR/test/run-network-tests.sh" || ice_status=$?
    if [ "$ice_status" != 0 ]; then say "network browser tests failed (status $ice_status)"; fi
    if [ "$status" = 0 ]; then status=$ice_status; fi
  fi
  exit "$status"
fi

# --- outer part --------------------------------------------------------------
mkdir -p "$PULSEWAVE_ARTIFACTS"

if [ "${PULSEWAVE_CLUSTER_E2E:-1}" = 0 ] && [ "${PULSEWAVE_ALLOW_SKIP:-0}" != 1 ]; then
  say "FATAL: PULSEWAVE_CLUSTER_E2E=0 skips the cluster test; a skip is a failure unless PULSEWAVE_ALLOW_SKIP=1 allows it"
  exit 2
fi
if [ "${PULSEWAVE_ICE_TCP_E2E:-1}" = 0 ] && [ "${PULSEWAVE_ALLOW_SKIP:-0}" != 1 ]; then
  say "FATAL: PULSEWAVE_ICE_TCP_E2E=0 skips the network tests; a skip is a failure unless PULSEWAVE_ALLOW_SKIP=1 allows it"
  exit 2
fi

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    say "FATAL: /usr/bin/chromium is missing and installing it needs root (apt-get install -y chromium)"
    exit 2
  fi
  say "installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
if [ -z "${CHROMIUM_PATH:-}" ] && ! /usr/bin/chromium --version >/dev/null 2>&1; then
  say "FATAL: /usr/bin/chromium does not run"
  exit 2
fi

if [ "${PULSEWAVE_SKIP_NPM:-0}" != 1 ]; then
  say "npm ci && npm run build in $WEB_DIR"
  (cd "$WEB_DIR" && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
fi

if [ -z "${PULSEWAVE_SERVER_BIN:-}" ]; then
  if [ -x "$REPO_DIR/target/release/pulsewave-server" ]; then
    PULSEWAVE_SERVER_BIN="$REPO_DIR/target/release/pulsewave-server"
  elif [ -x "$REPO_DIR/target/debug/pulsewave-server" ]; then
    PULSEWAVE_SERVER_BIN="$REPO_DIR/target/debug/pulsewave-server"
  else
    say "FATAL: no server binary: build it (cargo build -p pulsewave-server) or set PULSEWAVE_SERVER_BIN"
    exit 2
  fi
fi
if [ ! -x "$PULSEWAVE_SERVER_BIN" ]; then
  say "FATAL: PULSEWAVE_SERVER_BIN=$PULSEWAVE_SERVER_BIN is not executable"
  exit 2
fi
export PULSEWAVE_SERVER_BIN
say "server binary: $PULSEWAVE_SERVER_BIN"

if [ "${PULSEWAVE_NETNS:-1}" = 0 ]; then
  say "WARNING: PULSEWAVE_NETNS=0: using the host network"
elif unshare -n true 2>/dev/null && command -v ip >/dev/null; then
  if ! command -v iptables >/dev/null 2>&1; then
    # The lossy-link scenario of admin-e2e.mjs drops datagrams with
    # iptables inside the namespace.
    say "installing iptables with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
  fi
  say "running in a loopback-only network namespace"
  exec unshare -n "$SELF" --inner netns
else
  say "WARNING: cannot create a network namespace (needs root, unshare and ip); using the host network"
fi
exec "$SELF" --inner host
