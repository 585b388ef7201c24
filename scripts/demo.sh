#!/usr/bin/env bash
# The local demo: the whole product on one machine, from a fresh clone.
#
#   scripts/demo.sh        bring everything up, prove a download works, print how to try it, exit
#   scripts/demo.sh down   stop everything the demo started
#
# What `up` does, in the order a user of a real cluster would meet it:
#   1. builds ftp-operator and ftp-server, and a real control plane from Go modules
#      (scripts/local-cluster.sh: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes);
#   2. installs the FtpServer CRD and runs the controller against it;
#   3. applies examples/ftpserver.yaml (an FtpServer and its users Secret);
#   4. plays the cloud: a load balancer in network namespaces (scripts/netns-lb.sh) owns a virtual
#      IP, forwards the control port and the passive range, and forgets flows idle for 240 s like
#      Azure's default; the demo writes that VIP into the Service's load-balancer status, as a
#      cloud controller would, and the FtpServer turns Ready with it as its public address;
#   5. kwok's pods never really run, so the demo runs the real ftp-server "pod" itself, in the
#      server namespace, with the configuration the controller rendered into the ConfigMap;
#   6. downloads a file through the VIP with curl, and prints the command to do it yourself.
# Without root (no network namespaces) step 4 falls back to loopback: 127.0.0.1 is the address.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

state=$repo/target/demo
lab=ftpop-demo
server=contoso
namespace=default
metrics_port=28080

say() { printf '\n==> %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

stop_pidfile() {
  local file=$1
  [ -f "$file" ] || return 0
  local pid
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

down() {
  stop_pidfile "$state/ftp-server.pid"
  stop_pidfile "$state/controller.pid"
  if [ "$(id -u)" -eq 0 ] && ip netns list 2>/dev/null | grep -q "^$lab-"; then
    scripts/netns-lb.sh down "$lab" >/dev/null
  fi
  scripts/local-cluster.sh down
  echo "demo: stopped"
}

if [ "${1:-up}" = down ]; then
  down
  exit 0
fi
[ "${1:-up}" = up ] || die "usage: scripts/demo.sh [up|down]"

# A half-finished start leaves nothing running behind.
trap 'echo "demo: failed; stopping what was started (logs in $state)" >&2; down >/dev/null 2>&1 || true' ERR

say "installing what the demo needs (Debian packages)"
scripts/install-deps.sh

say "building ftp-operator and ftp-server"
cargo build --bins --quiet
bin=$repo/target/debug

say "starting a local control plane (first run builds Kubernetes from Go modules: ~10 min)"
scripts/local-cluster.sh build
scripts/local-cluster.sh up
eval "$(scripts/local-cluster.sh env)"

say "installing the FtpServer CRD"
kubectl apply --server-side -f crds/ftpserver.yaml
kubectl wait --for condition=Established --timeout=60s crd/ftpservers.ftpoperator.dev

mkdir -p "$state"
say "starting the controller (log: $state/controller.log)"
stop_pidfile "$state/controller.pid"
"$bin/ftp-operator" controller --metrics-listen "127.0.0.1:$metrics_port" \
  --leader-election-namespace default --identity demo >"$state/controller.log" 2>&1 &
echo $! >"$state/controller.pid"

# Where the balancer lives: namespaces when we may make them, else loopback.
if [ "$(id -u)" -eq 0 ]; then
  say "starting the load balancer: namespaces $lab-{client,balancer,server}"
  ip netns list 2>/dev/null | grep -q "^$lab-" && scripts/netns-lb.sh down "$lab" >/dev/null
  LB_TIMEOUT=240 PASV_MIN=20000 PASV_MAX=20019 scripts/netns-lb.sh up "$lab" >/dev/null
  eval "$(scripts/netns-lb.sh env | grep -E '^(VIP|LB_CONTROL_PORT)=')"
  public_address=$VIP
  control_port=$LB_CONTROL_PORT
  in_server=(scripts/netns-lb.sh exec "$lab" server)
  in_client=(scripts/netns-lb.sh exec "$lab" client)
  client_prefix="ip netns exec $lab-client "
else
  say "not root: no network namespaces, serving on loopback instead"
  public_address=127.0.0.1
  control_port=2121
  in_server=()
  in_client=()
  client_prefix=""
fi

say "applying examples/ftpserver.yaml (user alice, password alice-change-me)"
kubectl apply --server-side -f examples/ftpserver.yaml
user=alice
password=alice-change-me

say "playing the cloud: the balancer's address goes into the Service's status"
for _ in $(seq 100); do kubectl -n "$namespace" get service "$server" >/dev/null 2>&1 && break; sleep 0.2; done
kubectl -n "$namespace" patch service "$server" --subresource=status --type=merge \
  -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$public_address\"}]}}}"

say "waiting for the FtpServer to be Ready"
kubectl -n "$namespace" wait --for=condition=Ready --timeout=120s "ftpserver/$server"
kubectl -n "$namespace" get ftpservers -o wide

say "running the server pod's process for real, with the ConfigMap the controller rendered"
kubectl -n "$namespace" get configmap "$server-config" -o jsonpath='{.data.ftp-server\.toml}' >"$state/ftp-server.toml"
mkdir -p "$state/root"
echo "Hello from ftp-operator: served through $public_address" >"$state/root/hello.txt"
kubectl -n "$namespace" get secret ftp-users -o jsonpath='{.data.users}' | base64 -d >"$state/users"
stop_pidfile "$state/ftp-server.pid"
# The pod's mount paths (/srv/ftp, /etc/ftp-users) are local directories here.
extra=()
[ ${#in_server[@]} -eq 0 ] && extra=(--listen "127.0.0.1:$control_port" --metrics-listen 127.0.0.1:0)
"${in_server[@]}" "$bin/ftp-server" --config "$state/ftp-server.toml" \
  --root "$state/root" --users "$state/users" "${extra[@]}" >"$state/ftp-server.log" 2>&1 &
echo $! >"$state/ftp-server.pid"

url="ftp://$public_address:$control_port/hello.txt"
say "downloading $url through the balancer"
for _ in $(seq 50); do
  if "${in_client[@]}" curl -sS --ftp-pasv --no-ftp-skip-pasv-ip --user "$user:$password" "$url" 2>/dev/null; then
    ok=1
    break
  fi
  sleep 0.2
done
[ "${ok:-0}" = 1 ] || die "the download through $public_address failed; see $state/ftp-server.log"

trap - ERR
cat <<EOF

The demo is running:
  kubectl:     export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):\$PATH
               kubectl get ftpservers
  download:    ${client_prefix}curl --ftp-pasv --no-ftp-skip-pasv-ip --user '$user:$password' $url
  upload:      ${client_prefix}curl --ftp-pasv --no-ftp-skip-pasv-ip --user '$user:$password' -T README.md ftp://$public_address:$control_port/
  logs:        $state/controller.log  $state/ftp-server.log
  stop it:     scripts/demo.sh down
EOF
