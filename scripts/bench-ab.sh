#!/usr/bin/env bash
# A/B of server binaries end to end: runs scripts/bench-loadtest.sh for
# each variant in alternating rounds (A B C, A B C, ...), so slow drift of
# the machine hits every variant alike, and prints the CPU µs per forwarded
# packet of every run (with the loss in % and the datagrams sent per
# forwarded packet) and the median per variant and scenario.
#
#   scripts/bench-ab.sh ROUNDS "SCENARIOS" LABEL=BINARY[:ENV=VALUE,...] ...
#
# Example (a baseline build against this tree, with and without bandwidth
# estimation):
#   scripts/bench-ab.sh 3 "fanout-200 fanout-500" \
#     base=/work/pw-server-base head=target/release/pulsewave-server \
#     head-nobwe=target/release/pulsewave-server:BANDWIDTH_ESTIMATION=false
#
# DURATION (default 15s) is each run's measurement window. Reports go to
# target/loadtest/ab-<label>-<round>/.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:?rounds}"
scenarios="${2:?scenarios}"
shift 2
[ $# -ge 1 ] || { echo "no variants" >&2; exit 2; }
export DURATION="${DURATION:-15s}"

cargo build --release --locked -p pulsewave-server -p pulsewave-loadtest >&2

results=$(mktemp)
for round in $(seq "$rounds"); do
  for variant in "$@"; do
    label="${variant%%=*}"
    rest="${variant#*=}"
    bin="${rest%%:*}"
    envs=()
    if [[ "$rest" == *:* ]]; then
      IFS=',' read -r -a envs <<<"${rest#*:}"
    fi
    # shellcheck disable=SC2086
    env "${envs[@]}" SERVER_BIN="$bin" scripts/bench-loadtest.sh "ab-$label-$round" $scenarios >/dev/null
    for s in $scenarios; do
      us=$(jq -r '.server.cpu_us_per_forwarded_packet' "target/loadtest/ab-$label-$round/$s.json")
      loss=$(jq -r '.packets.loss_percent' "target/loadtest/ab-$label-$round/$s.json")
      # Datagrams sent per forwarded RTP packet: padding, probes, RTCP.
      dg=$(jq -r 'if .server.datagrams_sent and .server.rtp_forwarded > 0 then (.server.datagrams_sent / .server.rtp_forwarded * 1000 | round / 1000) else "-" end' "target/loadtest/ab-$label-$round/$s.json")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$label" "$s" "$us" "$loss" "$dg" | tee -a "$results"
    done
  done
done

echo
printf '%-14s %-12s %10s   %s\n' variant scenario median-us "runs (µs/pkt)"
for variant in "$@"; do
  label="${variant%%=*}"
  for s in $scenarios; do
    runs=$(awk -F'\t' -v l="$label" -v s="$s" '$2==l && $3==s {printf "%.2f ", $4}' "$results")
    median=$(awk -F'\t' -v l="$label" -v s="$s" '$2==l && $3==s {print $4}' "$results" |
      sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
    printf '%-14s %-12s %10.2f   %s\n' "$label" "$s" "$median" "$runs"
  done
done
rm -f "$results"
