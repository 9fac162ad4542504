#!/usr/bin/env bash
# Runs every PulseWave test on a fresh machine. It installs what it needs
# itself (system packages, npm packages), then checks formatting, lints,
# documentation, and runs the unit, end-to-end and browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

if [ "${PULSEWAVE_ALLOW_SKIP:-}" = 1 ]; then
  echo "FATAL: PULSEWAVE_ALLOW_SKIP=1 is set; the full test run never skips a test (unset it)" >&2
  exit 2
fi

step "toolchain"
cargo --version
rustc --version

step "system packages: redis-server (cluster tests), iproute2 (shaped-link tests)"
# The cluster tests start their own redis-server on a free loopback port
# (never the system one); only the binary is needed. The shaped-link
# browser test needs ip and tc.
PACKAGES=""
command -v redis-server >/dev/null 2>&1 || PACKAGES="$PACKAGES redis-server"
command -v tc >/dev/null 2>&1 || PACKAGES="$PACKAGES iproute2"
# The network browser tests drop traffic with iptables/ip6tables and make
# Chromium trust their test CA with certutil (libnss3-tools).
command -v iptables >/dev/null 2>&1 || PACKAGES="$PACKAGES iptables"
command -v certutil >/dev/null 2>&1 || PACKAGES="$PACKAGES libnss3-tools"
if [ -n "$PACKAGES" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $PACKAGES
fi
redis-server --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo test"
# A test whose dependency is missing fails (never skips): this command
# never sets PULSEWAVE_ALLOW_SKIP, and refuses to run with it.
cargo test --workspace --locked

step "churn soak, 2 minutes (scripts/churn-soak.sh; 20 minutes without --minutes)"
# Participants join, publish, subscribe and leave rooms in waves against a
# debug server; its rooms, sessions, transports, routing entries, open files
# and memory must be back to their baseline at the end. About 2 minutes.
scripts/churn-soak.sh --minutes 2 --debug

step "example: embedding pulsewave-core over a UDP socket"
cargo run --locked -p pulsewave-examples --example embed_core

step "browser end-to-end tests (headless Chromium, mediasoup-client)"
cargo build -p pulsewave-server --locked
PULSEWAVE_SERVER_BIN="$PWD/target/debug/pulsewave-server" bash web/test/run-browser-tests.sh

step "browser over a shaped link: adaptive media (network namespaces, tbf)"
PULSEWAVE_SERVER_BIN="$PWD/target/debug/pulsewave-server" bash web/test/run-bandwidth-tests.sh

step "all tests passed"
