#!/usr/bin/env bash
# A private OCI registry on loopback for the release tier: distribution's registry (built from
# its Go module by scripts/tools.sh), over TLS with a CA made at `up`, refusing anyone without a
# login (htpasswd, one user with a random password). Nothing outside its state directory changes.
#
#   scripts/registry.sh up      # start it; prints the env lines below
#   scripts/registry.sh env     # REGISTRY=127.0.0.1:PORT REGISTRY_USERNAME REGISTRY_PASSWORD
#                               # REGISTRY_CA_FILE, as shell exports
#   scripts/registry.sh down    # stop it and remove the state directory (images with it)
#
# Environment: FTPOP_REGISTRY_DIR (default target/registry), FTPOP_REGISTRY_PORT (first port to
# try, default 24900).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute: `down` matches it in the process's command line before stopping it.
STATE=$(realpath -m -- "${FTPOP_REGISTRY_DIR:-$ROOT/target/registry}")
PORT_BASE=${FTPOP_REGISTRY_PORT:-24900}
USERNAME=release
MARKER=.ftp-operator-registry

die() { echo "registry: error: $*" >&2; exit 2; }
log() { echo "registry: $*" >&2; }

need() { command -v "$1" >/dev/null || die "$1 is missing (apt-get install $2; scripts/install-deps.sh does it)"; }

pid() { # the registry's pid, if it runs from this state directory
  local p
  p=$(cat "$STATE/registry.pid" 2>/dev/null) || return 1
  # Read whole: `tr | grep -q` can fail under pipefail once grep exits early (SIGPIPE).
  local args
  args=$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null) || return 1
  [[ $'\n'$args$'\n' == *$'\n'"$STATE/config.yml"$'\n'* ]] && echo "$p"
}

free_port() {
  local p
  for ((p = PORT_BASE; p < PORT_BASE + 50; p++)); do
    [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return 0; }
  done
  die "no free port in $PORT_BASE-$((PORT_BASE + 49)) (set FTPOP_REGISTRY_PORT)"
}

certificates() {
  local pki=$STATE/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=ftp-operator test registry CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$pki/registry.key" -out "$pki/registry.csr" 2>/dev/null
  openssl x509 -req -in "$pki/registry.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/registry.crt" \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') 2>/dev/null ||
    die "openssl could not sign the registry's certificate"
}

cmd_up() {
  need htpasswd apache2-utils
  need openssl openssl
  need curl curl
  need ss iproute2
  if pid >/dev/null; then die "already up (state: $STATE); '$0 down' first"; fi
  [[ ! -e $STATE || -f $STATE/$MARKER ]] || die "$STATE exists and was not made by this script"
  rm -rf "$STATE"
  local registry port password
  registry=$("$ROOT/scripts/tools.sh" path registry) || die "building distribution's registry failed"
  mkdir -p "$STATE/data"
  touch "$STATE/$MARKER"
  certificates
  password=$(openssl rand -hex 16)
  htpasswd -Bbn "$USERNAME" "$password" >"$STATE/htpasswd" 2>/dev/null || die "htpasswd failed"
  port=$(free_port)
  cat >"$STATE/config.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $STATE/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port
  secret: $(openssl rand -hex 16)
  tls: {certificate: $STATE/pki/registry.crt, key: $STATE/pki/registry.key}
auth:
  htpasswd: {realm: ftp-operator-test-registry, path: $STATE/htpasswd}
EOF
  cat >"$STATE/env" <<EOF
export REGISTRY=127.0.0.1:$port
export REGISTRY_USERNAME=$USERNAME
export REGISTRY_PASSWORD=$password
export REGISTRY_CA_FILE=$STATE/pki/ca.crt
EOF
  # No telemetry exporters: nothing listens for them here, and the registry would keep retrying.
  OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
    setsid "$registry" serve "$STATE/config.yml" >"$STATE/registry.log" 2>&1 </dev/null &
  echo $! >"$STATE/registry.pid"
  local i code
  for ((i = 0; i < 100; i++)); do
    # Up means: TLS with our CA works, and /v2/ asks for a login.
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$STATE/pki/ca.crt" "https://127.0.0.1:$port/v2/" || true)
    [[ $code == 401 ]] && { log "up at 127.0.0.1:$port (user $USERNAME; state $STATE)"; cat "$STATE/env"; return 0; }
    pid >/dev/null || break
    sleep 0.2
  done
  tail -20 "$STATE/registry.log" >&2 || true
  cmd_down
  die "the registry did not answer /v2/ with 401 (last HTTP status: ${code:-none})"
}

cmd_env() {
  [[ -f $STATE/env ]] || die "not up (no $STATE/env); '$0 up' first"
  cat "$STATE/env"
}

cmd_down() {
  [[ -e $STATE ]] || return 0
  [[ -f $STATE/$MARKER ]] || die "$STATE was not made by this script; refusing to touch it"
  local p i
  if p=$(pid); then
    kill "$p" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do [[ -e /proc/$p ]] || break; sleep 0.1; done
    [[ -e /proc/$p ]] && kill -KILL "$p" 2>/dev/null || true
  fi
  rm -rf "$STATE"
  log "down; removed $STATE"
}

case ${1:-} in
up) cmd_up ;;
env) cmd_env ;;
down) cmd_down ;;
*) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
