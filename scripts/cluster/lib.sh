# Helpers shared by scripts/local-cluster.sh and its components in scripts/cluster/ (sourced, not
# run): prerequisites, Go builds cached by version, processes started and stopped by PID, free
# ports, certificates, waits. Callers define STATE_DIR, PIDS, LOGS, HACK_DIR and kc().

die() { echo "local-cluster: error: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

# The pins live in the committed go.mod files (hack/*/go.mod, with go.sum);
# read them from there so the script and the build can never disagree.
modver() { # <go.mod> <module path>
  awk -v m="$2" '$0 !~ /=>/ && $0 !~ /^[[:space:]]*\/\// {
      if ($1 == m) { print $2; exit }
      if ($1 == "require" && $2 == m) { print $3; exit } }' "$1"
}

# ---------------------------------------------------------------- prerequisites

APT_UPDATED=0
# Install a Debian package when we can (root + apt-get), otherwise say exactly what to do.
ensure_cmd() { # <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing $2 (needed for $1)"
    if [[ $APT_UPDATED -eq 0 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
      APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2 || die "apt-get install $2 failed"
    command -v "$1" >/dev/null 2>&1 && return 0
  fi
  die "'$1' is required but not installed; install the '$2' package (e.g. sudo apt-get install $2)"
}

ensure_go() {
  # The official tarball's location, often missing from PATH in non-login shells.
  if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    log "go is not on PATH; using /usr/local/go/bin/go"
    PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null 2>&1 ||
    die "'go' (>= 1.26) is required to build the control plane and is not on PATH; install a Go toolchain >= 1.26 and retry"
  local v
  v=$(go env GOVERSION) # e.g. go1.26.8
  v=${v#go}
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  if ((major < 1 || (major == 1 && minor < 26))); then
    die "Go >= 1.26 is required (k8s.io/kubernetes $K8S_VERSION needs it); found go$v"
  fi
}

# -------------------------------------------------------------------- build

# Version stamps that `kubectl version` and the apiserver's /version report
# (kube-rs and kubectl read them). A module download carries no git commit, so
# gitCommit is left empty and buildDate at its 1970 default: reproducible, and
# nothing here pretends to know more than the module version.
k8s_ldflags() {
  local f="-s -w" p major minor
  major=$(echo "${K8S_VERSION#v}" | cut -d. -f1)
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    f+=" -X $p.gitCommit= -X $p.gitTreeState=clean"
  done
  echo "$f"
}

stamp_of() { # <module dir> <flags...>: what the binaries of a group were built from
  local module=$1; shift
  { cat "$HACK_DIR/$module/go.mod"; cat "$HACK_DIR/$module/go.sum" 2>/dev/null || true; echo "$*"; } |
    sha256sum | cut -d' ' -f1
}

# go build in a pinned module dir. CGO off: static binaries like upstream's
# server releases, and no C toolchain needed. GOTOOLCHAIN=local: never fetch a
# toolchain behind our back. -mod=readonly: the committed go.sum must be complete.
gobuild() { # <module dir> <args...>
  local module=$1; shift
  (cd "$HACK_DIR/$module" &&
    GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath "$@")
}

# A group is one go build of binaries from the module in hack/<module>, installed into <bin dir>
# and stamped there. A binary is named NAME, or NAME=BUILT when go names it BUILT (see etcd).
build_group() { # <group> <module> <bin dir> <binaries...> -- <go build args...>
  local group=$1 module=$2 bin_dir=$3; shift 3
  local bins=()
  while [[ $1 != -- ]]; do bins+=("$1"); shift; done
  shift
  mkdir -p "$bin_dir"
  local stamp_file="$bin_dir/.stamp-$group" stamp b fresh=1
  stamp=$(stamp_of "$module" "$@")
  for b in "${bins[@]}"; do [[ -x $bin_dir/${b%%=*} ]] || fresh=0; done
  if [[ $fresh -eq 1 && -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
    log "$group: cached in $bin_dir"
    return 0
  fi
  ensure_go
  log "$group: building ${bins[*]%%=*} (this takes a while on a cold Go build cache)"
  # Build into a temp dir and move into place, so an interrupted build never
  # leaves a binary that a later run would mistake for a finished one.
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$bin_dir/.build-$group.XXXXXX")
  if ! gobuild "$module" -o "$tmp/" "$@" >&2; then
    rm -rf "$tmp"
    die "$group: go build failed (see the output above)"
  fi
  for b in "${bins[@]}"; do
    [[ -x $tmp/${b#*=} ]] || { rm -rf "$tmp"; die "$group: go build did not produce ${b#*=}"; }
    mv -f "$tmp/${b#*=}" "$bin_dir/${b%%=*}"
  done
  rm -rf "$tmp"
  echo "$stamp" >"$stamp_file"
  log "$group: built in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- processes

pid_of() { [[ -f $PIDS/$1.pid ]] && cat "$PIDS/$1.pid"; }

# Whether process <pid>'s command line contains <text>. Read whole, not piped into `grep -q`:
# a long command line (kube-apiserver's is about 6 KiB) reaches grep in several writes, grep -q
# exits at the first match, tr's next write dies of SIGPIPE, and under pipefail that reads as
# "not there", so a running component looked exited.
cmdline_has() { # <pid> <text>
  local cmdline
  [[ -n ${1:-} && -r /proc/$1/cmdline ]] || return 1
  cmdline=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$2"* ]]
}

# Alive AND still the process we started (its command line names our state
# dir), so a recycled PID is never mistaken for, or killed as, ours.
is_ours() { cmdline_has "${1:-}" "$STATE_DIR/"; } # <pid>

running_components() { # <component...>
  local c pid
  for c in "$@"; do
    pid=$(pid_of "$c" || true)
    if is_ours "$pid"; then echo "$c"; fi
  done
}

start_component() { # <name> <binary: a name in $BIN_DIR, or a path> <args...>
  local name=$1 bin=$2; shift 2
  [[ $bin == */* ]] || bin=$BIN_DIR/$bin
  # setsid: the components outlive the shell that ran `up` (CI steps, terminals)
  # and are not hit by that shell's job-control signals; `down` stops them by PID.
  # 8>&-: the real node's lock (scripts/cluster/node.sh) stays with this script.
  setsid "$bin" "$@" >"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$PIDS/$name.pid"
}

components_status() { # <component...>: one line each, running (with its PID) or stopped
  local c pid
  for c in "$@"; do
    pid=$(pid_of "$c" || true)
    if is_ours "$pid"; then
      printf '  %-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '  %-24s stopped\n' "$c"
    fi
  done
}

stop_components() { # <component...>, in the order given
  local c pid i
  for c in "$@"; do
    pid=$(pid_of "$c" || true)
    if is_ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do is_ours "$pid" || break; sleep 0.1; done
      if is_ours "$pid"; then
        log "$c (pid $pid) ignored SIGTERM for 10s; killing"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do is_ours "$pid" || break; sleep 0.1; done
      fi
      log "stopped $c (pid $pid)"
    fi
    rm -f "$PIDS/$c.pid"
  done
}

# --------------------------------------------------------------------- ports

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports: first free ones from PORT_BASE up (checked by connecting), recorded in
# <state>/ports.env so status/env and the tests see the same numbers.
pick_ports() {
  local p=$PORT_BASE name
  : >"$STATE_DIR/ports.env"
  for name in ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT; do
    while port_busy "$p"; do
      p=$((p + 1))
      ((p < PORT_BASE + 500)) || die "no free port in $PORT_BASE..$((PORT_BASE + 500)); set FTPOP_PORT_BASE"
    done
    printf -v "$name" '%s' "$p"
    echo "$name=$p" >>"$STATE_DIR/ports.env"
    p=$((p + 1))
  done
}

load_ports() {
  [[ -f $STATE_DIR/ports.env ]] || return 1
  # shellcheck disable=SC1091 # written by pick_ports
  source "$STATE_DIR/ports.env"
}

# ---------------------------------------------------------------------- PKI

gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

gen_ca() { # <name> <common name>
  gen_key "$PKI/$1.key"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt" 2>/dev/null
}

# <ca> <name> <subject> <extensions...>: a key and a certificate signed by <ca>.
gen_cert() {
  local ca=$1 name=$2 subj=$3; shift 3
  gen_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$@" \
    >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -CAserial "$PKI/$ca.srl" -days 3650 -sha256 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

write_kubeconfig() { # <file> <user cert/key basename>
  local f=$1 user=$2 k=("$BIN_DIR/kubectl" config --kubeconfig="$1")
  "${k[@]}" set-cluster ftpop-local --server="https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" set-credentials "$user" --client-certificate="$PKI/$user.crt" \
    --client-key="$PKI/$user.key" --embed-certs=true >/dev/null
  "${k[@]}" set-context ftpop-local --cluster=ftpop-local --user="$user" >/dev/null
  "${k[@]}" use-context ftpop-local >/dev/null
  chmod 600 "$f"
}

# --------------------------------------------------------------------- waits

kc() { "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"; }

wait_for() { # <what> <timeout s> <component whose log to show> <command...>
  local what=$1 timeout=$2 comp=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $comp ]] && ! is_ours "$(pid_of "$comp" || true)"; then
      tail -n 30 "$LOGS/$comp.log" >&2 || true
      die "$comp exited while waiting for $what (log: $LOGS/$comp.log)"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n $comp ]] && { tail -n 30 "$LOGS/$comp.log" >&2 || true; }
      die "timed out after ${timeout}s waiting for $what${comp:+ (log: $LOGS/$comp.log)}"
    fi
    sleep 0.5
  done
}

healthz() { curl -fsk --max-time 2 "https://127.0.0.1:$1/healthz"; }

