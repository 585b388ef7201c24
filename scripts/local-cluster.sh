#!/usr/bin/env bash
# A real, local Kubernetes control plane for tier-4 tests (see docs/local-cluster.md):
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler, built from Go
# modules at pinned versions, plus the kwok controller so that pods on fake nodes
# become Running/Ready. Everything listens on 127.0.0.1 only.
#
#   scripts/local-cluster.sh build    # build (or reuse cached) binaries
#   scripts/local-cluster.sh up       # start the cluster, write <state>/kubeconfig
#   eval "$(scripts/local-cluster.sh env)"
#   scripts/local-cluster.sh status
#   scripts/local-cluster.sh down     # stop what `up` started, delete the state
#
# Environment:
#   FTPOP_CACHE        binary cache root   (default: $HOME/.cache/ftp-operator)
#   FTPOP_CLUSTER_DIR  cluster state dir   (default: $PWD/target/local-cluster)
#   FTPOP_PORT_BASE    first port to try   (default: 24300)
#   FTPOP_NODES        fake node count     (default: 2)
#   FTPOP_KCM_API_QPS  kube-controller-manager --kube-api-qps, burst 1.5x (default: its own, 20/30)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HACK_DIR="$REPO_ROOT/hack"
CACHE_ROOT=${FTPOP_CACHE:-$HOME/.cache/ftp-operator}
# Absolute, because PIDs are matched against it in each process's command line.
STATE_DIR=$(realpath -m -- "${FTPOP_CLUSTER_DIR:-$PWD/target/local-cluster}")
PORT_BASE=${FTPOP_PORT_BASE:-24300}
NODE_COUNT=${FTPOP_NODES:-2}
[[ $NODE_COUNT =~ ^[1-9][0-9]*$ ]] || { echo "local-cluster: error: FTPOP_NODES must be a positive integer" >&2; exit 2; }
KCM_API_QPS=${FTPOP_KCM_API_QPS:-}
[[ -z $KCM_API_QPS || $KCM_API_QPS =~ ^[1-9][0-9]*$ ]] || { echo "local-cluster: error: FTPOP_KCM_API_QPS must be a positive integer" >&2; exit 2; }
[[ $PORT_BASE =~ ^[1-9][0-9]*$ ]] || { echo "local-cluster: error: FTPOP_PORT_BASE must be a port number" >&2; exit 2; }

# Fixed cluster-internal ranges. Nothing routes them: pods on kwok nodes never run.
SERVICE_CIDR=10.96.0.0/16
SERVICE_APISERVER_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
# Marker that proves a state dir is ours before `down` deletes it.
MARKER=.ftp-operator-local-cluster

die() { echo "local-cluster: error: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

# The pins live in the committed go.mod files (hack/*/go.mod, with go.sum);
# read them from there so the script and the build can never disagree.
modver() { # <go.mod> <module path>
  awk -v m="$2" '$0 !~ /=>/ && $0 !~ /^[[:space:]]*\/\// {
      if ($1 == m) { print $2; exit }
      if ($1 == "require" && $2 == m) { print $3; exit } }' "$1"
}
K8S_VERSION=$(modver "$HACK_DIR/k8s/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(modver "$HACK_DIR/etcd/go.mod" go.etcd.io/etcd/server/v3)
KWOK_VERSION=$(modver "$HACK_DIR/kwok/go.mod" sigs.k8s.io/kwok)
[[ -n $K8S_VERSION && -n $ETCD_VERSION && -n $KWOK_VERSION ]] ||
  die "could not read pinned versions from $HACK_DIR/{k8s,etcd,kwok}/go.mod"

# Keyed by the Kubernetes version (the one the Rust side must match); each group
# also writes a stamp hashing its go.mod/go.sum/flags, so bumping etcd or kwok
# in their go.mod rebuilds just that group.
K8S_DIR="$CACHE_ROOT/k8s/$K8S_VERSION"
BIN_DIR="$K8S_DIR/bin"
KWOK_STAGES="$K8S_DIR/share/kwok-stages.yaml"

PKI="$STATE_DIR/pki"
PIDS="$STATE_DIR/pids"
LOGS="$STATE_DIR/logs"
KUBECONFIG_FILE="$STATE_DIR/kubeconfig"
# Stop order; start order is the reverse.
COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

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

stamp_of() { # <group> <flags...>: what the binaries of a group were built from
  local group=$1; shift
  { cat "$HACK_DIR/$group/go.mod" "$HACK_DIR/$group/go.sum"; echo "$*"; } | sha256sum | cut -d' ' -f1
}

# go build in a pinned module dir. CGO off: static binaries like upstream's
# server releases, and no C toolchain needed. GOTOOLCHAIN=local: never fetch a
# toolchain behind our back. -mod=readonly: the committed go.sum must be complete.
gobuild() { # <group> <args...>
  local group=$1; shift
  (cd "$HACK_DIR/$group" &&
    GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath "$@")
}

# A binary is named NAME, or NAME=BUILT when go names it BUILT (see etcd).
build_group() { # <group> <binaries...> -- <go build args...>
  local group=$1; shift
  local bins=()
  while [[ $1 != -- ]]; do bins+=("$1"); shift; done
  shift
  local stamp_file="$BIN_DIR/.stamp-$group" stamp b fresh=1
  stamp=$(stamp_of "$group" "$@")
  for b in "${bins[@]}"; do [[ -x $BIN_DIR/${b%%=*} ]] || fresh=0; done
  if [[ $fresh -eq 1 && -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
    log "$group: cached in $BIN_DIR"
    return 0
  fi
  ensure_go
  log "$group: building ${bins[*]%%=*} (this takes a while on a cold Go build cache)"
  # Build into a temp dir and move into place, so an interrupted build never
  # leaves a binary that a later run would mistake for a finished one.
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$BIN_DIR/.build-$group.XXXXXX")
  if ! gobuild "$group" -o "$tmp/" "$@" >&2; then
    rm -rf "$tmp"
    die "$group: go build failed (see the output above)"
  fi
  for b in "${bins[@]}"; do
    [[ -x $tmp/${b#*=} ]] || { rm -rf "$tmp"; die "$group: go build did not produce ${b#*=}"; }
    mv -f "$tmp/${b#*=}" "$BIN_DIR/${b%%=*}"
  done
  rm -rf "$tmp"
  echo "$stamp" >"$stamp_file"
  log "$group: built in $((SECONDS - start))s"
}

# kwok's default node/pod stages (what kwokctl feeds the controller) ship as YAML
# inside the pinned kwok module; without them the controller refuses to start.
build_kwok_stages() {
  local header="# kwok stages from sigs.k8s.io/kwok@$KWOK_VERSION"
  [[ -s $KWOK_STAGES && $(head -n 1 "$KWOK_STAGES") == "$header" ]] && return 0
  ensure_go
  local dir f tmp
  dir=$(cd "$HACK_DIR/kwok" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [[ -d $dir ]] || die "kwok module source not found in the Go module cache"
  mkdir -p "$(dirname "$KWOK_STAGES")"
  tmp=$(mktemp "$KWOK_STAGES.XXXXXX")
  {
    echo "$header"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$dir/kustomize/stage/$f"
    done
  } >"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$KWOK_STAGES"
}

cmd_build() {
  mkdir -p "$BIN_DIR"
  local start=$SECONDS
  # One go build per module: all four Kubernetes commands in a single invocation
  # so the shared packages compile once (2-core machines: this is most of the time).
  build_group k8s kube-apiserver kube-controller-manager kube-scheduler kubectl -- \
    -ldflags "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  # The etcd main package is the server module's root (server/main.go), which
  # go names "server" (the element before the /v3 suffix); install it as etcd.
  build_group etcd etcd=server -- -ldflags "-s -w" go.etcd.io/etcd/server/v3
  build_group kwok kwok -- -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok
  build_kwok_stages
  log "binaries for Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION in $BIN_DIR ($((SECONDS - start))s)"
}

# ---------------------------------------------------------------- processes

pid_of() { [[ -f $PIDS/$1.pid ]] && cat "$PIDS/$1.pid"; }

# Alive AND still the process we started (its command line names our state
# dir), so a recycled PID is never mistaken for, or killed as, ours.
is_ours() { # <pid>
  [[ -n ${1:-} && -r /proc/$1/cmdline ]] || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" | grep -qF -- "$STATE_DIR/"
}

running_components() {
  local c pid
  for c in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$c" || true)
    if is_ours "$pid"; then echo "$c"; fi
  done
}

start_component() { # <name> <binary> <args...>
  local name=$1 bin=$2; shift 2
  # setsid: the components outlive the shell that ran `up` (CI steps, terminals)
  # and are not hit by that shell's job-control signals; `down` stops them by PID.
  setsid "$BIN_DIR/$bin" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

stop_components() {
  local c pid i
  for c in "${COMPONENTS[@]}"; do
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

gen_pki() {
  mkdir -p "$PKI"
  gen_ca ca ftp-operator-local-ca
  # The apiserver is reached as 127.0.0.1/localhost from the host and as the
  # kubernetes Service from (hypothetical) in-cluster clients.
  gen_cert ca apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SERVICE_APISERVER_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # Client identities: the admin is a cluster superuser through O=system:masters;
  # the controller-manager and scheduler use the users that the built-in RBAC
  # bootstrap policy grants exactly their permissions.
  gen_cert ca admin "/O=system:masters/CN=kubernetes-admin" "extendedKeyUsage=clientAuth"
  gen_cert ca kube-controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  gen_cert ca kube-scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  gen_cert ca kwok "/O=system:masters/CN=kwok-controller" "extendedKeyUsage=clientAuth"
  # Front proxy (aggregation layer), a separate CA as kubeadm does: without a
  # requestheader CA, the controller-manager and scheduler, which delegate
  # authentication to the apiserver, log an error every few seconds.
  gen_ca front-proxy-ca ftp-operator-local-front-proxy-ca
  gen_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth"
  # Service-account token signing key pair (apiserver signs/verifies, kcm signs
  # tokens for its per-controller service accounts).
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
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

# ----------------------------------------------------------------------- up

nodes_yaml() {
  local i
  for ((i = 0; i < NODE_COUNT; i++)); do
    # kwok manages nodes carrying the kwok.x-k8s.io/node=fake annotation (our
    # --manage-nodes-with-annotation-selector). No NoSchedule taint, unlike kwok's
    # docs: ordinary Deployments must schedule here without tolerations.
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    beta.kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    topology.kubernetes.io/zone: zone-$i
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "500", ephemeral-storage: 1Ti}
  capacity: {cpu: "64", memory: 256Gi, pods: "500", ephemeral-storage: 1Ti}
EOF
  done
}

on_up_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "up failed; stopping what was started (logs kept in $LOGS; '$0 down' removes them)"
    stop_components
  fi
}

cmd_up() {
  local running start=$SECONDS
  running=$(running_components)
  if [[ -n $running ]]; then
    if [[ $(echo "$running" | wc -l) -eq ${#COMPONENTS[@]} ]]; then
      log "already up (state: $STATE_DIR); nothing to do"
      return 0
    fi
    die "partially up (running: $(echo "$running" | tr '\n' ' ')); run '$0 down' first"
  fi

  ensure_cmd openssl openssl
  ensure_cmd curl curl
  ensure_cmd setsid util-linux
  cmd_build

  # A leftover state dir from a crashed run: clear it, but only if it is ours.
  if [[ -e $STATE_DIR ]]; then
    [[ -f $STATE_DIR/$MARKER ]] || [[ -z $(ls -A "$STATE_DIR") ]] ||
      die "$STATE_DIR exists and was not created by this script; remove it or set FTPOP_CLUSTER_DIR"
    rm -rf "$STATE_DIR"
  fi
  mkdir -p "$STATE_DIR" "$PIDS" "$LOGS"
  touch "$STATE_DIR/$MARKER"

  # On any failure from here on, stop whatever was started; keep the logs.
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM # so an interrupted up also cleans up through on_up_exit

  pick_ports
  gen_pki
  write_kubeconfig "$KUBECONFIG_FILE" admin
  write_kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$STATE_DIR/kwok.kubeconfig" kwok

  # --unsafe-no-fsync: throwaway test data; fsync dominates etcd latency on VMs.
  start_component etcd etcd \
    --name=local --data-dir="$STATE_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd health" 30 etcd curl -fs --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  # Node,RBAC like a real cluster, so Helm/RBAC tests see real authorization.
  # --endpoint-reconciler-type=none: Endpoints validation rejects the loopback
  # advertise address, which would otherwise be retried and logged forever.
  start_component kube-apiserver kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false
  wait_for "kube-apiserver /readyz" 90 kube-apiserver kc get --raw=/readyz

  # --controllers=*: every default controller (garbage collector, deployment,
  # replicaset, serviceaccount-token, ...). Per-controller service-account
  # credentials, as kubeadm does, so RBAC is exercised here too.
  start_component kube-controller-manager kube-controller-manager \
    --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --leader-elect=false --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --cluster-name=ftpop-local \
    ${KCM_API_QPS:+--kube-api-qps="$KCM_API_QPS" --kube-api-burst="$((KCM_API_QPS * 3 / 2))"} \
    --profiling=false
  start_component kube-scheduler kube-scheduler \
    --kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
    --leader-elect=false --profiling=false
  # No --server-address: kwok then opens no port of its own.
  start_component kwok kwok \
    --kubeconfig="$STATE_DIR/kwok.kubeconfig" --config="$KWOK_STAGES" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --cidr="$POD_CIDR" --node-lease-duration-seconds=40

  wait_for "kube-controller-manager /healthz" 60 kube-controller-manager healthz "$KCM_PORT"
  wait_for "kube-scheduler /healthz" 60 kube-scheduler healthz "$SCHEDULER_PORT"

  nodes_yaml | kc apply -f - >/dev/null
  wait_for "fake nodes to be Ready" 60 kwok kc wait --for=condition=Ready node -l type=kwok --timeout=5s
  # Pods cannot be created in a namespace before its default ServiceAccount
  # exists (kcm's serviceaccount controller makes it); wait so tests can start at once.
  wait_for "the default ServiceAccount" 60 kube-controller-manager kc -n default get serviceaccount default

  trap - EXIT INT TERM
  log "up in $((SECONDS - start))s: Kubernetes $K8S_VERSION at https://127.0.0.1:$APISERVER_PORT, $NODE_COUNT kwok nodes"
  log "kubeconfig: $KUBECONFIG_FILE   (eval \"\$($0 env)\")"
}

# --------------------------------------------------------------- down/env/status

cmd_down() {
  if [[ ! -e $STATE_DIR ]]; then
    log "not up (no $STATE_DIR); nothing to do"
    return 0
  fi
  [[ -f $STATE_DIR/$MARKER ]] || die "$STATE_DIR was not created by this script; refusing to touch it"
  stop_components
  rm -rf "$STATE_DIR"
  log "down; removed $STATE_DIR"
}

cmd_env() {
  echo "export KUBECONFIG=\"$KUBECONFIG_FILE\""
  echo "export PATH=\"$BIN_DIR:\$PATH\""
  [[ -f $KUBECONFIG_FILE ]] || log "note: the cluster is not up yet ($0 up)"
}

cmd_status() {
  local c pid up=0
  echo "versions:  Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
  echo "binaries:  $BIN_DIR"
  echo "state:     $STATE_DIR"
  if load_ports; then
    echo "ports:     etcd $ETCD_CLIENT_PORT (peer $ETCD_PEER_PORT), apiserver $APISERVER_PORT, controller-manager $KCM_PORT, scheduler $SCHEDULER_PORT"
  fi
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    pid=$(pid_of "$c" || true)
    if is_ours "$pid"; then
      printf '  %-24s running (pid %s)\n' "$c" "$pid"
      up=$((up + 1))
    else
      printf '  %-24s stopped\n' "$c"
    fi
  done
  if [[ $up -gt 0 ]] && is_ours "$(pid_of kube-apiserver || true)"; then
    kc get --raw=/readyz >/dev/null 2>&1 && echo "apiserver: ready" || echo "apiserver: NOT ready"
    kc get nodes -o wide 2>/dev/null || true
  fi
  [[ $up -eq ${#COMPONENTS[@]} ]]
}

case ${1:-} in
build) cmd_build ;;
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
*)
  echo "usage: $0 build|up|down|env|status" >&2
  exit 2
  ;;
esac
