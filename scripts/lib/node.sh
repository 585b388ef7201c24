# What the tiers and benchmarks on the local cluster's real node share (scripts/test-node.sh,
# scripts/test-replicas.sh, scripts/bench-replicas.sh): sourced after lib/checks.sh, never run.
# The caller sets ROOT, WORK, LAB (the namespace balancer's name), NS (the operator's namespace),
# APP (the servers' namespace), LB_TIMEOUT and LINK_RATE, optionally HELM_VALUES (an array of
# extra `--set` arguments for the operator's chart), then calls node_tier_setup. The helpers
# about one FtpServer (live_pods, server_ready, copy_to_pods) also read SERVER and VIP.

export FTPOP_CLUSTER_DIR=$ROOT/target/node-cluster
export FTPOP_REAL_NODE=1

# The balancer's namespaces are named by LAB, the same in every worktree: only a run that holds the
# real node (and so made them) may remove them. A run that finds the node taken exits here too, and
# would otherwise tear down the namespaces of the run that holds it. Its own cluster's `down` only
# touches its own state directory.
node_tier_cleanup() {
  if [[ ${FTPOP_KEEP_CLUSTER:-0} != 1 ]]; then
    if [[ ${NODE_TIER_HOLDS_NODE:-0} == 1 ]]; then
      BACKEND=node scripts/netns-lb.sh down "$LAB" >/dev/null 2>&1 || true
    fi
    scripts/local-cluster.sh down >/dev/null 2>&1 || true
  fi
}

# Builds what the node runs, brings up the cluster with its real node and the namespace balancer
# in front of it, and installs the operator with the Helm chart. Sets OPERATOR, SERVER_BIN, HELM.
node_tier_setup() {
  [[ $(id -u) -eq 0 ]] || die "needs root: it runs the real node (containerd, kubelet, kube-proxy) and network namespaces"
  rm -rf "$WORK"; mkdir -p "$WORK"
  scripts/install-deps.sh || die "installing Debian packages failed"
  if [[ -n ${FTPOP_OPERATOR_BIN:-} ]]; then
    OPERATOR=$FTPOP_OPERATOR_BIN SERVER_BIN=$FTPOP_SERVER_BIN
  else
    cargo build -q --bins || die "cargo build failed"
    OPERATOR=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-operator SERVER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-server
  fi
  FTPOP_OPERATOR_BIN=$OPERATOR FTPOP_SERVER_BIN=$SERVER_BIN scripts/image.sh || die "building the image failed"
  HELM=$(scripts/tools.sh path helm) || die "building helm failed"
  scripts/local-cluster.sh build >/dev/null || die "building the cluster failed"
  scripts/local-cluster.sh down >/dev/null 2>&1 || true
  scripts/local-cluster.sh up || die "the local cluster with its real node did not come up"
  NODE_TIER_HOLDS_NODE=1
  eval "$(scripts/local-cluster.sh env)"
  BACKEND=node scripts/netns-lb.sh down "$LAB" >/dev/null 2>&1 || true
  BACKEND=node LB_TIMEOUT=$LB_TIMEOUT LINK_RATE=$LINK_RATE scripts/netns-lb.sh up "$LAB" >/dev/null ||
    die "the namespace balancer did not come up"
  log "installing the operator with the Helm chart"
  "$HELM" upgrade --install ftp-operator charts/ftp-operator --namespace "$NS" --create-namespace \
    ${HELM_VALUES[@]+"${HELM_VALUES[@]}"} --wait --timeout 180s >/dev/null || die "helm install failed"
  k create namespace "$APP" >/dev/null
}

k() { kubectl "$@"; }
in_client() { ip netns exec "$LAB-client" "$@"; }

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

hash() { printf '%s' "$1" | "$SERVER_BIN" hash-password; }
users_secret() { # <user:password...>
  local entry lines=""
  for entry in "$@"; do lines+="${entry%%:*}:$(hash "${entry#*:}"):rw"$'\n'; done
  k -n "$APP" create secret generic ftp-users --from-literal=users="$lines" --dry-run=client -o yaml | k apply -f - >/dev/null
}
set_address() { # <service> <address>: what a cloud's controller writes
  k -n "$APP" patch service "$1" --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$2\"}]}}}" >/dev/null
}
# The ftp-server process of the pod with this uid, for nsenter into its network namespace.
server_pid() {
  local uid=$1 pid
  for pid in $(pgrep -x ftp-server); do
    grep -q "pod$uid" "/proc/$pid/cgroup" 2>/dev/null && { echo "$pid"; return 0; }
  done
  return 1
}
# A pod's emptyDir volume "data", on the node's disk.
pod_data_dir() { echo "/var/lib/ftp-operator/node/kubelet/pods/$1/volumes/kubernetes.io~empty-dir/data"; }

# The client namespace has 198.51.100.2; these more addresses on its link make more clients.
add_client_addresses() { # <address,address...>
  local address
  for address in ${1//,/ }; do
    [[ $address == 198.51.100.2 ]] && continue
    in_client ip addr add "$address/24" dev lb0 || die "cannot add client address $address"
  done
}
# Pods of the server, not being deleted: "<name> <uid>" per line.
live_pods() {
  k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    if not p["metadata"].get("deletionTimestamp"):
        print(p["metadata"]["name"], p["metadata"]["uid"])'
}
server_ready() { # <replicas>: Ready at the VIP with that many replicas serving
  [[ $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.publicAddress} {.status.readyReplicas} {.status.conditions[?(@.type=="Ready")].status}') == "$VIP $1 True" ]]
}
# Puts a file into the storage of every live pod of the server, owned by the server's user.
copy_to_pods() { # <file>
  local name uid dir
  while read -r name uid; do
    dir=$(pod_data_dir "$uid")
    cp "$1" "$dir/" && chown 65532:65532 "$dir/$(basename "$1")" || return 1
  done < <(live_pods)
}
# The memory cgroup (cgroup v1) of the pod the ftp-server process <pid> runs in: the parent of
# its container's.
pod_memory_cgroup() { # <pid>
  local path
  path=$(awk -F: '$2 == "memory" {print $3}' "/proc/$1/cgroup") && [[ -n $path ]] || return 1
  echo "/sys/fs/cgroup/memory$(dirname "$path")"
}
# The file names (last path segment) of the transfers in one direction (upload | download) that
# a pod's audit log records as complete, one per line.
audit_transfers() { # <pod> <direction>
  k -n "$APP" logs "$1" --tail=-1 | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    fields = entry.get("fields", entry)
    if fields.get("event") == "transfer" and fields.get("direction") == sys.argv[1] and fields.get("result") == "ok":
        print(fields.get("path", "").rsplit("/", 1)[-1])' "$2"
}
