#!/usr/bin/env bash
# A real, local Kubernetes cluster (see docs/local-cluster.md), built from Go modules at pinned
# versions: a control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
# kwok nodes whose pods are fakes (for scale), and one real node (containerd + runc, the CNI
# bridge, kubelet, kube-proxy) that runs real pods from images built here. The parts live in
# scripts/cluster/: control-plane.sh, node.sh, images.sh, each with an up and a down.
#
#   scripts/local-cluster.sh build    # build (or reuse cached) binaries and the sandbox image
#   scripts/local-cluster.sh up       # start the cluster, write <state>/kubeconfig
#   eval "$(scripts/local-cluster.sh env)"
#   scripts/local-cluster.sh status
#   scripts/local-cluster.sh restart-apiserver  # stop kube-apiserver (SIGTERM) and start it again
#                                     # with the same flags, port and certificates (fault tests)
#   scripts/local-cluster.sh load-image [ARCHIVE]  # import an OCI archive into the real node
#                                     # (default: scripts/image.sh's target/image archive)
#   scripts/local-cluster.sh trust-registry HOST:PORT CA  # the real node pulls from that registry
#                                     # over TLS with that CA (credentials: image pull secrets)
#   scripts/local-cluster.sh down     # stop what `up` started, undo its changes, delete the state
#
# Environment:
#   FTPOP_CACHE        binary cache root   (default: $HOME/.cache/ftp-operator)
#   FTPOP_CLUSTER_DIR  cluster state dir   (default: $PWD/target/local-cluster)
#   FTPOP_PORT_BASE    first port to try   (default: 24300)
#   FTPOP_NODES        fake node count     (default: 2)
#   FTPOP_KCM_API_QPS  kube-controller-manager --kube-api-qps, burst 1.5x (default: its own, 20/30)
#   FTPOP_REAL_NODE    1: bring up the real node too (default; root; one per machine, so a second
#                      cluster asking for it fails naming the owner); 0: control plane and kwok only
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
# A cluster that is up keeps the mode it was started in (status, down).
REAL_NODE=${FTPOP_REAL_NODE:-$(cat "$STATE_DIR/real-node" 2>/dev/null || echo 1)}
[[ $REAL_NODE == 0 || $REAL_NODE == 1 ]] || { echo "local-cluster: error: FTPOP_REAL_NODE must be 0 or 1" >&2; exit 2; }

# Fixed cluster-internal ranges. kwok's fake pods get addresses from the lower half of the pod
# network (nothing routes them); the real node's pods from NODE_POD_CIDR in the upper half.
SERVICE_CIDR=10.96.0.0/16
SERVICE_APISERVER_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
KWOK_POD_CIDR=10.244.0.0/17
# Marker that proves a state dir is ours before `down` deletes it.
MARKER=.ftp-operator-local-cluster

# shellcheck source=cluster/lib.sh
source "$REPO_ROOT/scripts/cluster/lib.sh"

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

# shellcheck source=cluster/control-plane.sh
source "$REPO_ROOT/scripts/cluster/control-plane.sh"
# shellcheck source=cluster/images.sh
source "$REPO_ROOT/scripts/cluster/images.sh"
# shellcheck source=cluster/node.sh
source "$REPO_ROOT/scripts/cluster/node.sh"
NODE_IP=""
[[ $REAL_NODE == 1 ]] && NODE_IP=$(node_ip)
# What `up` starts, in stop order.
COMPONENTS=("${CP_COMPONENTS[@]}")
[[ $REAL_NODE == 1 ]] && COMPONENTS=("${NODE_COMPONENTS[@]}" "${CP_COMPONENTS[@]}")

# ------------------------------------------------------------------- commands

cmd_build() {
  local start=$SECONDS
  mkdir -p "$BIN_DIR"
  cp_build
  if [[ $REAL_NODE == 1 ]]; then
    node_build
    images_build
  fi
  log "binaries for Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION${NODE_IP:+, containerd $CONTAINERD_VERSION, CNI plugins $CNI_VERSION} ready ($((SECONDS - start))s)"
}

on_up_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "up failed; stopping what was started (logs kept in $LOGS; '$0 down' removes them)"
    [[ $REAL_NODE == 1 ]] && { node_down || true; }
    cp_down
  fi
}

cmd_up() {
  local running start=$SECONDS
  running=$(running_components "${COMPONENTS[@]}")
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
  # Fail before building anything when the real node cannot be had.
  if [[ $REAL_NODE == 1 ]]; then
    node_check_prereqs
    local owner
    if owner=$(node_owner); then
      die "the real node is in use by the local cluster in $owner (one per machine); bring that one down, or set FTPOP_REAL_NODE=0 for a control plane only"
    fi
  fi
  cmd_build

  # A leftover state dir from a crashed run: clear it, but only if it is ours.
  if [[ -e $STATE_DIR ]]; then
    [[ -f $STATE_DIR/$MARKER ]] || [[ -z $(ls -A "$STATE_DIR") ]] ||
      die "$STATE_DIR exists and was not created by this script; remove it or set FTPOP_CLUSTER_DIR"
    [[ -d $STATE_DIR/node ]] && { node_down || true; }
    rm -rf "$STATE_DIR"
  fi
  mkdir -p "$STATE_DIR" "$PIDS" "$LOGS"
  touch "$STATE_DIR/$MARKER"
  echo "$REAL_NODE" >"$STATE_DIR/real-node"

  # On any failure from here on, stop whatever was started; keep the logs.
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM # so an interrupted up also cleans up through on_up_exit

  cp_up
  [[ $REAL_NODE == 1 ]] && node_up

  trap - EXIT INT TERM
  log "up in $((SECONDS - start))s: Kubernetes $K8S_VERSION at https://127.0.0.1:$APISERVER_PORT, $NODE_COUNT kwok nodes${NODE_IP:+, real node $NODE_NAME at $NODE_IP}"
  log "kubeconfig: $KUBECONFIG_FILE   (eval \"\$($0 env)\")"
}

# --------------------------------------------------------------- down/env/status

cmd_down() {
  if [[ ! -e $STATE_DIR ]]; then
    log "not up (no $STATE_DIR); nothing to do"
    return 0
  fi
  [[ -f $STATE_DIR/$MARKER ]] || die "$STATE_DIR was not created by this script; refusing to touch it"
  # The node first: its pods are deleted through the still-running control plane.
  [[ -d $STATE_DIR/node ]] && node_down
  cp_down
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
  cp_status
  [[ $REAL_NODE == 1 ]] && { echo "real node: $NODE_NAME at ${NODE_IP:-?} (containerd $CONTAINERD_VERSION, CNI plugins $CNI_VERSION)"; node_status; }
  up=$(running_components "${COMPONENTS[@]}" | wc -l)
  if [[ $up -gt 0 ]] && is_ours "$(pid_of kube-apiserver || true)"; then
    kc get --raw=/readyz >/dev/null 2>&1 && echo "apiserver: ready" || echo "apiserver: NOT ready"
    kc get nodes -o wide 2>/dev/null || true
  fi
  [[ $up -eq ${#COMPONENTS[@]} ]]
}

# The apiserver's own command line (from /proc) is started again, so the port, certificates and
# flags are exactly those `up` chose; the previous log is kept beside the new one.
cmd_restart_apiserver() {
  [[ -f $STATE_DIR/$MARKER ]] || die "not up (no $STATE_DIR/$MARKER); run '$0 up' first"
  local pid start=$SECONDS argv=()
  pid=$(pid_of kube-apiserver || true)
  is_ours "$pid" || die "kube-apiserver is not running (state: $STATE_DIR)"
  mapfile -d '' argv <"/proc/$pid/cmdline"
  [[ ${argv[0]} == */* ]] || argv[0]=$BIN_DIR/${argv[0]}
  stop_components kube-apiserver
  mv -f "$LOGS/kube-apiserver.log" "$LOGS/kube-apiserver.previous.log"
  start_component kube-apiserver "${argv[@]}"
  wait_for "kube-apiserver /readyz" 90 kube-apiserver kc get --raw=/readyz
  log "kube-apiserver restarted in $((SECONDS - start))s"
}

case ${1:-} in
build) cmd_build ;;
load-image)
  [[ $REAL_NODE == 1 ]] || die "load-image needs the real node (FTPOP_REAL_NODE=1)"
  images_load "${2:-$PROJECT_ARCHIVE}"
  ;;
trust-registry)
  [[ $REAL_NODE == 1 ]] || die "trust-registry needs the real node (FTPOP_REAL_NODE=1)"
  [[ $# -eq 3 ]] || die "usage: $0 trust-registry HOST:PORT CA-FILE"
  node_trust_registry "$2" "$3"
  ;;
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
restart-apiserver) cmd_restart_apiserver ;;
*)
  echo "usage: $0 build|up|down|env|status|restart-apiserver|load-image [ARCHIVE]|trust-registry HOST:PORT CA" >&2
  exit 2
  ;;
esac
