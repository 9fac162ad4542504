#!/usr/bin/env bash
# Runs PulseWave with embedded defaults (--dev: development keys, no Redis,
# one node) and the demo app at http://127.0.0.1:3000/demo/.
# Builds the demo's JavaScript bundle first (npm ci + esbuild, once).
# Extra arguments go to the server, e.g. ./scripts/dev.sh --port 4000
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v npm >/dev/null 2>&1; then
  if [ ! -f web/dist/pulsewave.esm.js ] || [ web/src/pulsewave.js -nt web/dist/pulsewave.esm.js ]; then
    echo "building the demo bundle (web/dist) ..."
    (cd web && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build)
  fi
else
  echo "npm not found: the server runs, but /demo/ needs web/dist (npm ci && npm run build in web/)" >&2
fi

exec cargo run --release -p pulsewave-server -- --dev "$@"
