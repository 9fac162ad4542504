# Shared by the namespace test scripts (run-network-tests.sh,
# run-bandwidth-tests.sh): sourced, not run. They each re-execute
# themselves in a fresh network namespace (unshare -n, root) and use these
# helpers to check their tools, pick a port, start the server binary there,
# wait for it, and stop it by PID.
#
# The caller sets `say` (its log prefix) before sourcing, and
# PULSEWAVE_ARTIFACTS.

# Exits 2 unless every named tool is installed.
pw_require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { say "FATAL: $tool is missing"; exit 2; }
  done
}

# Installs Debian packages with apt-get (as root), refreshing the package
# lists first: on a fresh machine the cached lists point at archives that
# are gone ("Unable to fetch some archives").
pw_apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "FATAL: $* missing and installing needs root (apt-get install -y $*)"
    exit 2
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs iptables (with apt-get, as root) when missing: the phases that
# drop traffic need iptables and ip6tables.
pw_ensure_iptables() {
  command -v iptables >/dev/null 2>&1 && command -v ip6tables >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    say "FATAL: iptables is missing and installing it needs root (apt-get install -y iptables)"
    exit 2
  fi
  say "installing iptables"
  pw_apt_install iptables
}

# Exits 2 unless this process may create network namespaces.
pw_require_netns() {
  if ! unshare -n true 2>/dev/null; then
    say "FATAL: cannot create a network namespace (needs root and unshare)"
    exit 2
  fi
}

# Prints a free TCP port on 127.0.0.1.
pw_free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();})'
}

# Enables IPv6 in this namespace and adds `addr` (with its prefix) to
# `dev` without duplicate address detection, so it is usable at once.
pw_add_ipv6() { # dev addr/prefix
  sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
  sysctl -qw "net.ipv6.conf.$1.disable_ipv6=0"
  ip -6 addr add "$2" dev "$1" nodad
}

PW_SERVER_PID=""

# Starts $PULSEWAVE_SERVER_BIN --dev on host:port with the environment
# assignments that follow, logging to `log`; waits (30 s at most) for
# /healthz. Exits 2 if it dies or does not answer.
pw_start_server() { # log host port [VAR=value...]
  local log="$1" host="$2" port="$3"
  shift 3
  env "$@" PULSEWAVE_WEB_DIR="${WEB_DIR:?}" RUST_LOG="${RUST_LOG:-info}" \
    "${PULSEWAVE_SERVER_BIN:?}" --dev --host "$host" --port "$port" >"$log" 2>&1 &
  PW_SERVER_PID=$!
  local _
  for _ in $(seq 1 150); do
    if ! kill -0 "$PW_SERVER_PID" 2>/dev/null; then
      say "the server exited during start-up; its log:"
      tail -n 30 "$log" >&2 || true
      exit 2
    fi
    if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' \
      "http://$host:$port/healthz" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  say "the server did not answer /healthz within 30 s"
  exit 2
}

# Stops the server started by pw_start_server (TERM, then KILL after 10 s).
pw_stop_server() {
  [ -n "$PW_SERVER_PID" ] || return 0
  if kill -0 "$PW_SERVER_PID" 2>/dev/null; then
    kill -TERM "$PW_SERVER_PID" 2>/dev/null || true
    local _
    for _ in $(seq 1 50); do
      kill -0 "$PW_SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$PW_SERVER_PID" 2>/dev/null || true
  fi
  wait "$PW_SERVER_PID" 2>/dev/null || true
  PW_SERVER_PID=""
}

# Makes a throwaway CA and a certificate it signs for `ip` in `dir`:
# ca.pem, cert.pem, key.pem (P-256, valid one day).
pw_test_certificate() { # dir ip
  local dir="$1" ip="$2"
  pw_require_tools openssl
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj '/CN=PulseWave test CA' -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$ip" \
      -keyout key.pem -out cert.csr 2>/dev/null
    printf 'subjectAltName=IP:%s\n' "$ip" >ext.cnf
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
      -extfile ext.cnf -out cert.pem 2>/dev/null
  )
}
