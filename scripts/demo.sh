#!/usr/bin/env bash
# The local demo: the whole product on one machine, from a fresh clone, through Kubernetes only.
#
#   scripts/demo.sh        bring everything up, prove a download and an upload work, print how to try it
#   scripts/demo.sh down   undo all of it
#
# What `up` does, in the order a user of a real cluster would meet it:
#   1. builds ftp-operator and ftp-server, the container image (scripts/image.sh), and a local
#      cluster from Go modules (scripts/local-cluster.sh: control plane, kwok nodes, and one real
#      node: containerd + runc, CNI bridge, kubelet, kube-proxy), and loads the image into the node;
#   2. installs the operator with the Helm chart: a pod with its own ServiceAccount and RBAC;
#   3. applies an FtpServer and its users Secret, with a password made for this run (plain FTP
#      and a read-write user, for the demo only; examples/ftpserver.yaml is the safe start for a
#      real cluster): the operator creates the server's StatefulSet, Service and ConfigMap, and
#      the kubelet runs the server pod;
#   4. plays the cloud: a load balancer in network namespaces (scripts/netns-lb.sh, BACKEND=node)
#      owns a VIP, forwards it to the node (kube-proxy takes it to the pod from there), and forgets
#      flows idle for 240 s like Azure's default; the demo writes the VIP into the Service's
#      load-balancer status, as a cloud controller would, and the FtpServer turns Ready with it;
#   5. uploads a file through the VIP with curl, downloads it back, and prints what to try next.
# Needs root (the real node and the namespaces).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

state=$repo/target/demo
export FTPOP_CLUSTER_DIR=$repo/target/demo-cluster
export FTPOP_REAL_NODE=1
lab=ftpop-demo
server=contoso
namespace=default
release=ftp-operator
operator_namespace=ftp-operator
user=alice
# A fresh password each run, so no file of the repository holds a usable one.
password=$(head -c 15 /dev/urandom | base64 | tr '+/' 'xy')

say() { printf '\n==> %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

down() {
  # The cluster comes down even when the balancer's namespaces did not; the status says so.
  local status=0
  if ip netns list 2>/dev/null | grep -q "^$lab-"; then BACKEND=node scripts/netns-lb.sh down "$lab" >/dev/null || status=1; fi
  scripts/local-cluster.sh down || status=1
  [ "$status" = 0 ] || return 1
  rm -rf "$state"
  echo "demo: stopped"
}

# The demo's users Secret and FtpServer: plain FTP, as the client reaches it only inside this
# machine's network namespaces.
demo_manifest() { # <argon2id hash of the password>
  cat <<EOF
apiVersion: v1
kind: Secret
metadata: {name: ftp-users, namespace: $namespace}
type: Opaque
stringData:
  users: |
    $user:$1:rw
---
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: $server, namespace: $namespace}
spec:
  replicas: 1
  controlPort: 21
  passivePorts: {min: 20000, max: 20019}
  keepalive: {idleSeconds: 60, intervalSeconds: 10, probes: 6}
  loadBalancer: {provider: azure, idleTimeoutSeconds: 1800}
  storage: {emptyDir: {}}
  users: {secretRef: {name: ftp-users}}
  resources:
    requests: {cpu: 50m, memory: 32Mi}
    limits: {memory: 128Mi}
EOF
}

if [ "${1:-up}" = down ]; then
  down
  exit
fi
[ "${1:-up}" = up ] || die "usage: scripts/demo.sh [up|down]"
[ "$(id -u)" -eq 0 ] || die "the demo needs root: it runs a real Kubernetes node (containerd, kubelet, kube-proxy) and network namespaces"

# A half-finished start leaves nothing running behind.
trap 'echo "demo: failed; stopping what was started" >&2; down >/dev/null 2>&1 || true' ERR

say "installing what the demo needs (Debian packages)"
scripts/install-deps.sh

say "building ftp-operator and ftp-server, and the container image"
cargo build --bins --quiet
FTPOP_OPERATOR_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/ftp-operator FTPOP_SERVER_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/ftp-server scripts/image.sh

say "starting a local cluster with a real node (first run builds Kubernetes and containerd from Go modules: ~15 min)"
scripts/local-cluster.sh build
scripts/local-cluster.sh up
eval "$(scripts/local-cluster.sh env)"
scripts/local-cluster.sh load-image
helm=$(scripts/tools.sh path helm)

say "installing the operator with the Helm chart (namespace $operator_namespace)"
"$helm" upgrade --install "$release" charts/ftp-operator --namespace "$operator_namespace" --create-namespace \
  --wait --timeout 180s
kubectl -n "$operator_namespace" get pods -o wide

mkdir -p "$state"
demo_manifest "$("${CARGO_TARGET_DIR:-$repo/target}/debug/ftp-server" hash-password <<<"$password")" >"$state/ftpserver.yaml"
say "applying $state/ftpserver.yaml (user $user, password $password)"
kubectl apply --server-side -f "$state/ftpserver.yaml"

say "playing the cloud: a balancer owns a VIP and forwards it to the node"
ip netns list 2>/dev/null | grep -q "^$lab-" && BACKEND=node scripts/netns-lb.sh down "$lab" >/dev/null
BACKEND=node LB_TIMEOUT=240 scripts/netns-lb.sh up "$lab" >/dev/null
eval "$(BACKEND=node scripts/netns-lb.sh env | grep -E '^VIP=')"
for _ in $(seq 100); do kubectl -n "$namespace" get service "$server" >/dev/null 2>&1 && break; sleep 0.2; done
kubectl -n "$namespace" patch service "$server" --subresource=status --type=merge \
  -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$VIP\"}]}}}"

say "waiting for the FtpServer to be Ready"
kubectl -n "$namespace" wait --for=condition=Ready --timeout=180s "ftpserver/$server"
kubectl -n "$namespace" get ftpservers -o wide
kubectl -n "$namespace" get pods -l "app.kubernetes.io/instance=$server" -o wide

echo "Hello from ftp-operator: served by a pod on the real node, through $VIP" >"$state/hello.txt"
in_client=(scripts/netns-lb.sh exec "$lab" client)
curl_ftp=(curl -sS --ftp-pasv --no-ftp-skip-pasv-ip --user "$user:$password")
say "uploading hello.txt through ftp://$VIP/ and downloading it back"
ok=0
for _ in $(seq 30); do
  if "${in_client[@]}" "${curl_ftp[@]}" -T "$state/hello.txt" "ftp://$VIP/hello.txt" 2>/dev/null &&
    "${in_client[@]}" "${curl_ftp[@]}" "ftp://$VIP/hello.txt" >"$state/downloaded.txt" 2>/dev/null &&
    cmp -s "$state/hello.txt" "$state/downloaded.txt"; then
    ok=1
    break
  fi
  sleep 1
done
[ "$ok" = 1 ] || die "the transfer through $VIP failed; see: kubectl -n $namespace logs -l app.kubernetes.io/instance=$server"
cat "$state/downloaded.txt"

trap - ERR
cat <<EOF

The demo is running:
  kubectl:   export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):\$PATH
  watch:     kubectl get ftpservers -w
  logs:      kubectl -n $operator_namespace logs deploy/$release
             kubectl -n $namespace logs -l app.kubernetes.io/instance=$server
  download:  ip netns exec $lab-client curl --ftp-pasv --no-ftp-skip-pasv-ip --user '$user:$password' ftp://$VIP/hello.txt
  upload:    ip netns exec $lab-client curl --ftp-pasv --no-ftp-skip-pasv-ip --user '$user:$password' -T README.md ftp://$VIP/
  passive range: kubectl patch ftpserver $server --type=merge -p '{"spec":{"passivePorts":{"min":20100,"max":20119}}}'
             (the Service and the running server follow; watch PASV replies with curl -v)
  address:   kubectl patch service $server --subresource=status --type=merge \\
               -p '{"status":{"loadBalancer":{"ingress":[{"ip":"198.18.0.11"}]}}}'
             (the balancer forwards all of 198.18.0.0/24; Ready turns True again once PASV says 198.18.0.11)
  stop it:   scripts/demo.sh down
EOF
