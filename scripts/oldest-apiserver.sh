#!/usr/bin/env bash
# The oldest Kubernetes the FtpServer CRD claims to install on (the chart's kubeVersion): builds
# its kube-apiserver from the Go module pinned in hack/k8s-oldest (cached under
# $FTPOP_CACHE/k8s/<version>/bin, like scripts/local-cluster.sh's), starts it on loopback with
# an etcd of its own, and runs the cluster tier's CRD tests against it.
#
#   scripts/oldest-apiserver.sh build   # build (or reuse) kube-apiserver <version>, etcd, kubectl
#   scripts/oldest-apiserver.sh up|down # start / stop it (kubeconfig in the state dir)
#   scripts/oldest-apiserver.sh test    # up, the CRD and CEL admission tests, down
#
# Environment: FTPOP_CACHE (default $HOME/.cache/ftp-operator), FTPOP_OLDEST_DIR (state,
# default $PWD/target/oldest-apiserver), FTPOP_PORT_BASE (first port to try, default 25300),
# FTPOP_CLUSTER_TEST_BIN (the cluster tier's test executable, already built; default: cargo test).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HACK_DIR="$REPO_ROOT/hack"
CACHE_ROOT=${FTPOP_CACHE:-$HOME/.cache/ftp-operator}
STATE_DIR=$(realpath -m -- "${FTPOP_OLDEST_DIR:-$PWD/target/oldest-apiserver}")
PORT_BASE=${FTPOP_PORT_BASE:-25300}
PIDS="$STATE_DIR/pids"
LOGS="$STATE_DIR/logs"
PKI="$STATE_DIR/pki"
MARKER=.ftp-operator-oldest-apiserver

# shellcheck source=cluster/lib.sh
source "$REPO_ROOT/scripts/cluster/lib.sh"

K8S_VERSION=$(modver "$HACK_DIR/k8s-oldest/go.mod" k8s.io/kubernetes)
[[ -n $K8S_VERSION ]] || die "could not read the pinned version from $HACK_DIR/k8s-oldest/go.mod"
BIN_DIR="$CACHE_ROOT/k8s/$K8S_VERSION/bin"
# etcd and kubectl come from the local cluster's cache.
CURRENT_K8S=$(modver "$HACK_DIR/k8s/go.mod" k8s.io/kubernetes)
CURRENT_BIN_DIR="$CACHE_ROOT/k8s/$CURRENT_K8S/bin"
KUBECONFIG_FILE="$STATE_DIR/kubeconfig"
# kc() (lib.sh) runs $BIN_DIR/kubectl: the local cluster's.
kc() { "$CURRENT_BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"; }

cmd_build() {
  # Only the apiserver: the CRD's schema and CEL rules are all that is checked on this version.
  build_group k8s-apiserver k8s-oldest "$BIN_DIR" kube-apiserver -- \
    -ldflags "$(k8s_ldflags)" k8s.io/kubernetes/cmd/kube-apiserver
  # etcd and kubectl are the local cluster's (etcd's v3 API is the one the older apiserver speaks).
  FTPOP_REAL_NODE=0 "$REPO_ROOT/scripts/local-cluster.sh" build
}

cmd_up() {
  ensure_cmd openssl openssl
  ensure_cmd curl curl
  ensure_cmd jq jq
  ensure_cmd setsid util-linux
  cmd_build
  if [[ -e $STATE_DIR ]]; then
    [[ -f $STATE_DIR/$MARKER ]] || die "$STATE_DIR exists and was not created by this script; remove it or set FTPOP_OLDEST_DIR"
    cmd_down
  fi
  mkdir -p "$STATE_DIR" "$PIDS" "$LOGS" "$PKI"
  touch "$STATE_DIR/$MARKER"
  trap 'cmd_down' EXIT
  pick_ports
  gen_ca ca ftp-operator-oldest-ca
  gen_cert ca apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost"
  gen_cert ca admin "/O=system:masters/CN=kubernetes-admin" "extendedKeyUsage=clientAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  (BIN_DIR=$CURRENT_BIN_DIR; write_kubeconfig "$KUBECONFIG_FILE" admin)
  start_component etcd "$CURRENT_BIN_DIR/etcd" \
    --name=oldest --data-dir="$STATE_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="oldest=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd health" 30 etcd curl -fs --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
  start_component kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=RBAC --profiling=false
  wait_for "kube-apiserver $K8S_VERSION /readyz" 120 kube-apiserver kc get --raw=/readyz
  local served
  served=$(kc get --raw=/version | jq -r .gitVersion)
  [[ $served == "$K8S_VERSION" ]] || die "the apiserver reports $served, not $K8S_VERSION"
  trap - EXIT
  log "kube-apiserver $K8S_VERSION at https://127.0.0.1:$APISERVER_PORT (kubeconfig $KUBECONFIG_FILE)"
}

cmd_down() {
  [[ -e $STATE_DIR ]] || return 0
  [[ -f $STATE_DIR/$MARKER ]] || die "$STATE_DIR was not created by this script; refusing to touch it"
  stop_components kube-apiserver etcd
  rm -rf "$STATE_DIR"
}

# The chart's kubeVersion must name the version tested here, so the claim is the tested one.
check_chart_claim() {
  local claim minor
  claim=$(awk -F'"' '/^kubeVersion:/ {print $2}' "$REPO_ROOT/charts/ftp-operator/Chart.yaml")
  minor=$(echo "$K8S_VERSION" | cut -d. -f1,2) # v1.31
  [[ $claim == ">=${minor#v}.0-0" ]] ||
    die "charts/ftp-operator/Chart.yaml says kubeVersion \"$claim\" but the oldest apiserver tested is $K8S_VERSION (hack/k8s-oldest/go.mod); make them agree"
}

cmd_test() {
  check_chart_claim
  cmd_up
  trap 'cmd_down' EXIT
  # The cluster tier's CRD tests, on this apiserver: the CRD installs and is Established, every
  # invalid manifest is rejected with its CEL message, and a valid one is accepted.
  local tests=(crd_installs_and_is_established invalid_manifests_are_rejected_by_the_apiserver_with_their_cel_message)
  if [[ -n ${FTPOP_CLUSTER_TEST_BIN:-} ]]; then
    (cd "$REPO_ROOT" && KUBECONFIG=$KUBECONFIG_FILE "$FTPOP_CLUSTER_TEST_BIN" --exact "${tests[@]}")
  else
    KUBECONFIG=$KUBECONFIG_FILE cargo test --features cluster-tests --test cluster -- --exact "${tests[@]}"
  fi
}

case ${1:-} in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  test) cmd_test ;;
  *) echo "usage: $0 build|up|down|test" >&2; exit 2 ;;
esac
