#!/usr/bin/env bash
# The churn soak: a pulsewave-server --dev on loopback, and
# `pulsewave-loadtest --churn` against it for N minutes: participants join,
# publish, subscribe, use data channels and leave (cleanly or abruptly) many
# rooms in waves; at the end the server's rooms, sessions, media rooms,
# transports, routing entries and open files must be back to their baseline
# and its resident memory within a tolerance (docs/benchmarks.md, "Churn
# soak"). Exits non-zero with the reason when they are not.
#
#   scripts/churn-soak.sh [--minutes N] [--debug] [-- extra pulsewave-loadtest options]
#
# Default: 20 minutes with release binaries. `--minutes 2 --debug` is the
# CI step of scripts/test.sh (debug binaries, smaller waves). The server's
# log and the reports go to target/churn/.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=20
profile=release
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--minutes N] [--debug] [-- loadtest options]" >&2; exit 2 ;;
  esac
done
case "$minutes" in
  ''|*[!0-9]*|0) echo "--minutes takes a whole number of minutes, at least 1" >&2; exit 2 ;;
esac

if [ "$profile" = release ]; then
  cargo build --release --locked -p pulsewave-server -p pulsewave-loadtest >&2
  bin=target/release
  # 8 rooms, up to 40 participants online, waves of a minute.
  load=(--rooms 8 --churn-participants 40 --ramp 8 --churn-wave 60s
        --churn-min-life 2s --churn-max-life 16s --video-bitrate 300kbps --video-fps 15)
else
  cargo build --locked -p pulsewave-server -p pulsewave-loadtest >&2
  bin=target/debug
  # Debug binaries are slower: fewer participants, shorter waves.
  load=(--rooms 4 --churn-participants 12 --ramp 3 --churn-wave 25s
        --churn-min-life 2s --churn-max-life 12s --video-bitrate 150kbps --video-fps 10)
fi

out=target/churn
mkdir -p "$out"
server=""
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap stop_server EXIT

# A free loopback port: try random ones below the ephemeral range
# (32768-60999 on Linux, where the tests' own connections take theirs).
for _ in $(seq 20); do
  port=$((20000 + RANDOM % 12000))
  # Every connection comes from 127.0.0.1; empty rooms close after 2 s so
  # that waves open and close them.
  MAX_CONNECTIONS_PER_IP=0 ROOM_EMPTY_TIMEOUT=2s MEDIASOUP_NUM_WORKERS=2 RUST_LOG=warn \
    "$bin/pulsewave-server" --dev --host 127.0.0.1 --port "$port" >"$out/server.log" 2>&1 &
  server=$!
  up=""
  # Up to 30 s: right after the test suite the machine may still be busy.
  for _ in $(seq 300); do
    if ! kill -0 "$server" 2>/dev/null; then break; fi
    if command -v curl >/dev/null 2>&1; then
      if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then up=1; break; fi
    elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  if [ -n "$up" ]; then break; fi
  echo "churn soak: no server on port $port; the last line of its log:" >&2
  tail -n 1 "$out/server.log" >&2 || true
  stop_server
done
if [ -z "$server" ]; then
  echo "churn soak: the server did not start; its log:" >&2
  cat "$out/server.log" >&2
  exit 1
fi

started=$SECONDS
status=0
# The load tester stops by itself (waves for --duration, then at most
# --settle-timeout); `timeout` is a last resort against a hang.
# str0m warns when a data channel message arrives on a stream the client has
# not opened yet (a subscriber between `subscribe-data` and opening its
# channel): expected under churn, not worth a line each.
RUST_LOG="${LOADTEST_LOG:-warn,str0m=error}" \
  timeout $((minutes * 60 + 600)) "$bin/pulsewave-loadtest" --churn \
  --url "ws://127.0.0.1:$port" --server-pid "$server" --metrics \
  --duration "${minutes}m" --room-prefix "churn-$RANDOM" "${load[@]}" \
  --json-file "$out/report.json" "${extra[@]}" | tee "$out/report.txt" || status=$?

if ! kill -0 "$server" 2>/dev/null; then
  echo "churn soak: the server died; see $out/server.log" >&2
  status=1
fi
if grep -q "panicked" "$out/server.log"; then
  echo "churn soak: the server logged a panic:" >&2
  grep -m 5 "panicked" "$out/server.log" >&2
  status=1
fi
echo "churn soak: $((SECONDS - started)) s, exit $status (report: $out/report.txt, $out/report.json)"
exit "$status"
