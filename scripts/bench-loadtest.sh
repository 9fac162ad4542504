#!/usr/bin/env bash
# Reproduces the end-to-end figures of docs/benchmarks.md: a release
# pulsewave-server with one media worker pinned to CPU 1, the load tester
# pinned to CPU 0, one run per scenario, one JSON report each in
# target/loadtest/<label>/, and a summary table on stdout.
#
#   scripts/bench-loadtest.sh [label] [scenario...]
#
# Scenarios: fanout-N (1 publisher x N subscribers, 1 Mbit/s video + audio),
# rooms10 (10 rooms x (2 publishers + 8 subscribers)), video-N (1 publisher
# x N subscribers, video only, for the largest-room search).
# DURATION (default 10s) sets the measurement window; SERVER_BIN runs another
# server binary (a baseline build, say) instead of target/release's;
# LOADTEST_ARGS adds load tester flags (`--transport tcp`, say).
set -euo pipefail
cd "$(dirname "$0")/.."

label="${1:-run}"
shift || true
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  scenarios=(fanout-1 fanout-10 fanout-50 fanout-100 fanout-200 rooms10)
fi
duration="${DURATION:-10s}"
out="target/loadtest/$label"
mkdir -p "$out"

cargo build --release --locked -p pulsewave-server -p pulsewave-loadtest >&2

port=$((20000 + RANDOM % 20000))
# One IP (127.0.0.1) opens every connection, and rooms may be large.
MAX_CONNECTIONS_PER_IP=0 MAX_PARTICIPANTS=0 MEDIASOUP_NUM_WORKERS=1 RUST_LOG=warn taskset -c 1 \
  "${SERVER_BIN:-target/release/pulsewave-server}" --dev --port "$port" >"$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done

for s in "${scenarios[@]}"; do
  case "$s" in
    fanout-*) args=(--rooms 1 --publishers 1 --subscribers "${s#fanout-}") ;;
    video-*) args=(--rooms 1 --publishers 1 --subscribers "${s#video-}" --audio off) ;;
    rooms10) args=(--rooms 10 --publishers 2 --subscribers 8) ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  taskset -c 0 target/release/pulsewave-loadtest --url "ws://127.0.0.1:$port" \
    "${args[@]}" --room-prefix "$s-$RANDOM" --video-bitrate 1mbps --duration "$duration" \
    --ramp 50 --json --server-pid "$server" --metrics --max-errors 1000 ${LOADTEST_ARGS:-} \
    >"$out/$s.json" || true
  sleep 2
done

printf '%-12s %9s %9s %8s %8s %8s %9s %9s %8s %8s\n' scenario fwd/s cpu% us/pkt loss% p50ms p99ms peakMiB clientCPU behind
for s in "${scenarios[@]}"; do
  # A figure the run could not measure (no server CPU, nothing
  # forwarded, no latency sample) prints as "-".
  jq -r --arg s "$s" 'def r(n): if . == null then "-" else (. * n | round / n) end;
    [$s,
      (.server.forwarded_per_second|r(1)),
      (.server.cpu_percent|r(10)),
      (.server.cpu_us_per_forwarded_packet|r(100)),
      (.packets.loss_percent|r(1000)),
      (.latency_ms.p50|r(100)),
      (.latency_ms.p99|r(100)),
      (if .server.peak_rss_bytes == null then null else .server.peak_rss_bytes/1048576 end|r(10)),
      (.client.cpu_percent|r(1)),
      .pacing.fell_behind] | @tsv' "$out/$s.json" |
    awk -F'\t' '{printf "%-12s %9s %9s %8s %8s %8s %9s %9s %8s %8s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}'
done
