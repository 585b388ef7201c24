#!/usr/bin/env bash
# Benchmark on the local cluster's real node: seconds from `kubectl apply` of an FtpServer to the
# first download through its VIP (the demo's path: balancer, kube-proxy, a pod from the image built
# here), for one FtpServer and for N applied at once; and the memory of the operator and server pods
# (the kubelet's working set). Figures go into docs/benchmarks.md by hand.
#
#   scripts/bench-node.sh            # N=20
#   N=5 scripts/bench-node.sh
#
# The cloud's part is played at once: as soon as a Service exists its VIP is written into its
# status, so the figure is the cluster's and the operator's time, not a cloud's provisioning.
# Environment: N, FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN (default: release binaries).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export FTPOP_CLUSTER_DIR=$ROOT/target/bench-node-cluster
export FTPOP_REAL_NODE=1
N=${N:-20}
[[ $N =~ ^[1-9][0-9]?$ && $N -le 50 ]] || { echo "bench-node: N must be 1..50" >&2; exit 2; }
LAB=ftpop-bench
WORK=$ROOT/target/bench-node
log() { echo "bench-node: $*" >&2; }
[[ $(id -u) -eq 0 ]] || { echo "bench-node: needs root (the real node)" >&2; exit 1; }

cleanup() {
  BACKEND=node scripts/netns-lb.sh down "$LAB" >/dev/null 2>&1 || true
  scripts/local-cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
rm -rf "$WORK"; mkdir -p "$WORK"

scripts/install-deps.sh
if [[ -z ${FTPOP_OPERATOR_BIN:-} ]]; then
  log "cargo build --release --bins"
  cargo build -q --release --locked --bins
  export FTPOP_OPERATOR_BIN=$ROOT/target/release/ftp-operator FTPOP_SERVER_BIN=$ROOT/target/release/ftp-server
fi
scripts/image.sh
helm=$(scripts/tools.sh path helm)
scripts/local-cluster.sh build >/dev/null
scripts/local-cluster.sh up >/dev/null
eval "$(scripts/local-cluster.sh env)"
BACKEND=node LB_TIMEOUT=240 scripts/netns-lb.sh up "$LAB" >/dev/null
"$helm" upgrade --install ftp-operator charts/ftp-operator -n ftp-operator --create-namespace --wait --timeout 180s >/dev/null
kubectl create namespace bench >/dev/null
hash=$(printf '%s' bench-pw | "$FTPOP_SERVER_BIN" hash-password)
kubectl -n bench create secret generic ftp-users --from-literal=users="bench:$hash:rw" >/dev/null
echo "bench $(date)" >"$WORK/probe.txt"

now() { date +%s.%N; }
manifest() { # <index>
  cat <<EOF
---
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: s$1, namespace: bench}
spec:
  controlPort: 21
  passivePorts: {min: $((20000 + $1 * 10)), max: $((20009 + $1 * 10))}
  storage: {emptyDir: {}}
  users: {secretRef: {name: ftp-users}}
EOF
}
vip() { echo "198.18.0.$((100 + $1))"; }
# Plays the cloud for server <index>, then tries until a file goes up and comes back; prints the
# seconds since <t0>.
first_download() { # <index> <t0>
  local i=$1 t0=$2 v ok=0
  v=$(vip "$i")
  until kubectl -n bench get service "s$i" >/dev/null 2>&1; do sleep 0.1; done
  kubectl -n bench patch service "s$i" --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$v\"}]}}}" >/dev/null
  for _ in $(seq 1200); do
    if ip netns exec "$LAB-client" curl -sS --max-time 5 --ftp-pasv --user bench:bench-pw \
      -T "$WORK/probe.txt" "ftp://$v/probe.txt" 2>/dev/null &&
      ip netns exec "$LAB-client" curl -sS --max-time 5 --ftp-pasv --user bench:bench-pw \
        "ftp://$v/probe.txt" 2>/dev/null | cmp -s - "$WORK/probe.txt"; then
      ok=1; break
    fi
    sleep 0.1
  done
  [[ $ok == 1 ]] || { echo "s$i never served" >&2; return 1; }
  echo "$(now) - $t0" | bc
}

log "one FtpServer"
t0=$(now)
manifest 0 | kubectl apply -f - >/dev/null
one=$(first_download 0 "$t0")
printf 'one FtpServer: apply -> first download through the VIP: %.1f s\n' "$one"

log "$N FtpServers at once"
for ((i = 1; i <= N; i++)); do manifest "$i"; done >"$WORK/many.yaml"
t0=$(now)
kubectl apply -f "$WORK/many.yaml" >/dev/null
pids=()
for ((i = 1; i <= N; i++)); do first_download "$i" "$t0" >"$WORK/t$i" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid"; done
sort -n "$WORK"/t* | awk -v n="$N" '{ a[NR] = $1 } END {
  printf "%d FtpServers at once: first download after min %.1f s, median %.1f s, max %.1f s\n", n, a[1], a[int((NR + 1) / 2)], a[NR] }'

# The kubelet's working set per pod (its summary API, through the apiserver).
kubectl get --raw /api/v1/nodes/ftpop-node/proxy/stats/summary >"$WORK/summary.json"
python3 - "$WORK/summary.json" <<'PY'
import json, sys
pods = json.load(open(sys.argv[1]))["pods"]
def mib(p): return p.get("memory", {}).get("workingSetBytes", 0) / 2**20
op = [mib(p) for p in pods if p["podRef"]["namespace"] == "ftp-operator"]
srv = sorted(mib(p) for p in pods if p["podRef"]["namespace"] == "bench")
print(f"operator pod working set: {op[0]:.1f} MiB" if op else "operator pod: no stats")
if srv:
    print(f"server pods ({len(srv)}) working set: min {srv[0]:.1f} MiB, median {srv[len(srv)//2]:.1f} MiB, max {srv[-1]:.1f} MiB")
PY
