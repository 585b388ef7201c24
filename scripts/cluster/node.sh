# The real node of the local cluster (sourced by scripts/local-cluster.sh): containerd + runc,
# the CNI bridge, kubelet and kube-proxy on this machine, registered as node $NODE_NAME beside
# the kwok nodes. See docs/local-cluster.md.
#
#   node_build   build (or reuse cached) containerd, CNI plugins, kubelet, kube-proxy
#   node_up      start it (needs root); records what it changes on the machine
#   node_down    undo exactly that: pods, kube-proxy's rules, kubelet, containerd, mounts,
#                the bridge, /var/lib/cni, the sysctls it changed, the cgroups it made
#   node_status  processes and the Node object
#
# It is a machine-wide singleton: host paths, cgroups, the bridge and the firewall are shared.
# $NODE_LOCK serialises node_up/node_down; $NODE_OWNER names the cluster state dir that owns
# the node while it is up, so a second cluster that wants it fails and says whose it is.

NODE_NAME=ftpop-node
# Machine-wide paths, all ours: nothing here uses containerd's or the kubelet's default paths, so
# a containerd or kubelet already on the machine is never touched.
NODE_ROOT=/var/lib/ftp-operator/node
NODE_RUN=/run/ftp-operator/node
# The lock file stays (an empty file in /run/lock, as flock(1) expects); the owner file goes.
NODE_LOCK=/run/lock/ftp-operator-node.lock
NODE_OWNER=/run/ftp-operator-node.owner
CONTAINERD_SOCK=$NODE_RUN/containerd/containerd.sock
# containerd's per-registry settings (<host:port>/hosts.toml, read at each pull): empty until
# node_trust_registry adds a registry; inside NODE_ROOT, so node_down removes it with the rest.
NODE_REGISTRY_HOSTS=$NODE_ROOT/registry-hosts
CNI_BRIDGE=ftpop0
# Pods of the real node; kwok hands out fake pod IPs from the lower half of POD_CIDR.
NODE_POD_CIDR=10.244.128.0/24
# Listens on the node's address (the apiserver connects to it); the rest on loopback.
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
KUBE_PROXY_METRICS_PORT=10249
KUBE_PROXY_HEALTHZ_PORT=10256
# Stop order; start order is the reverse.
NODE_COMPONENTS=(kube-proxy kubelet containerd)
# Host state the node changes, saved by node_up and put back by node_down. The kubelet sets the
# vm/kernel ones at start (protectKernelDefaults: false), the bridge plugin sets ip_forward.
NODE_SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.forwarding vm.overcommit_memory vm.panic_on_oom
  kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# nftables tables kube-proxy (nftables mode), the kubelet's iptables canaries and the CNI plugins
# (masquerade, portmap) create; node_down deletes those that were not there before node_up.
NODE_NFT_TABLES=("ip kube-proxy" "ip6 kube-proxy" "ip nat" "ip filter" "ip mangle" "ip6 nat"
  "ip6 filter" "ip6 mangle" "inet cni_plugins_masquerade")
# Host directories the node may create outside its own roots; removed by node_down if they did
# not exist before node_up.
NODE_HOST_DIRS=(/var/lib/cni /var/log/containers /var/lib/ftp-operator /run/ftp-operator)

CONTAINERD_VERSION=$(modver "$HACK_DIR/containerd/go.mod" github.com/containerd/containerd/v2)
CNI_VERSION=$(modver "$HACK_DIR/cni/go.mod" github.com/containernetworking/plugins)
CONTAINERD_BIN=$CACHE_ROOT/containerd/$CONTAINERD_VERSION/bin
CNI_BIN=$CACHE_ROOT/cni/$CNI_VERSION/bin

NODE_STATE=$STATE_DIR/node

# The address of the interface that holds the default route: the node's InternalIP. Not
# loopback: pods reach the apiserver (the kubernetes Service) and the kubelet there.
node_ip() {
  ip -4 -o route get 192.0.2.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1
}

node_build() {
  # kubelet and kube-proxy come from the same pinned module as the control plane.
  build_group k8s-node k8s "$BIN_DIR" kubelet kube-proxy -- -ldflags "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  # Static, without the snapshotters this node does not use (they need C headers or kernels
  # features it lacks); overlayfs is built in.
  build_group containerd containerd "$CONTAINERD_BIN" containerd containerd-shim-runc-v2 ctr -- \
    -tags "no_btrfs no_devmapper no_zfs" -ldflags "-s -w" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
  build_group cni cni "$CNI_BIN" bridge host-local loopback portmap -- -ldflags "-s -w" \
    github.com/containernetworking/plugins/plugins/main/bridge \
    github.com/containernetworking/plugins/plugins/ipam/host-local \
    github.com/containernetworking/plugins/plugins/main/loopback \
    github.com/containernetworking/plugins/plugins/meta/portmap
}

# ------------------------------------------------------------------------- the lock

# Holds $NODE_LOCK on fd 8 for the rest of the calling process (node_up or node_down).
node_lock() {
  exec 8>"$NODE_LOCK"
  flock -w 120 8 || die "another local cluster has been starting or stopping the real node for 2 min ($NODE_LOCK)"
}

# The state dir that owns the node, if its kubelet or containerd still runs.
node_owner() {
  [[ -f $NODE_OWNER ]] || return 1
  local owner c pid
  owner=$(cat "$NODE_OWNER")
  for c in "${NODE_COMPONENTS[@]}"; do
    pid=$(cat "$owner/pids/$c.pid" 2>/dev/null || true)
    cmdline_has "$pid" "$owner/" && { echo "$owner"; return 0; }
  done
  return 1
}

# ------------------------------------------------------------------------- configs

node_write_configs() {
  local cfg=$NODE_STATE
  mkdir -p "$cfg/cni" "$NODE_ROOT/cni/ipam"
  # The apiserver's CA signs the kubelet's and kube-proxy's client certificates; the users are
  # the ones the built-in RBAC (system:nodes through the Node authorizer, system:kube-proxy) knows.
  gen_cert ca kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
  gen_cert ca kubelet-serving "/CN=$NODE_NAME" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  gen_cert ca kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  write_kubeconfig "$cfg/kubelet.kubeconfig" kubelet
  write_kubeconfig "$cfg/kube-proxy.kubeconfig" kube-proxy

  # restrict_oom_score_adj: this VM withholds CAP_SYS_RESOURCE, so runc cannot lower a
  # container's oom_score_adj below containerd's own; unrestricted, every sandbox fails with
  # "can't get final child's PID from pipe" when the kubelet asks for -998.
  # netns_mounts_under_state_dir: pod network namespaces stay under $NODE_RUN instead of
  # /run/netns, where `ip netns` (and the namespace balancer's own namespaces) live.
  # Disabled plugins would otherwise make /opt/containerd, an NRI socket, CDI watches.
  cat >"$cfg/containerd.toml" <<EOF
version = 3
root = "$NODE_ROOT/containerd"
state = "$NODE_RUN/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$NODE_REGISTRY_HOSTS"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$cfg/cni"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

  # One bridge, host-local addresses from NODE_POD_CIDR, masquerade for traffic leaving the pod
  # network; hairpin so a pod reaches itself through a Service; portmap for hostPort.
  cat >"$cfg/cni/10-ftpop.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ftpop",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_ROOT/cni/ipam",
              "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # failCgroupV1: false -- this VM is cgroup v1 (hybrid); the kubelet refuses v1 at config
  # validation otherwise. Image GC never runs (thresholds at 100%): the images are built here
  # and cannot be pulled back. Eviction only when the disk is really full (absolute thresholds):
  # the disk is the machine's, shared with builds, and the defaults (10-15%) evict test pods.
  cat >"$cfg/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $NODE_ROOT/pod-logs
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 200Mi, imagefs.available: 200Mi, nodefs.inodesFree: 1%}
serializeImagePulls: false
maxPods: 110
registerNode: true
EOF

  # nftables mode, as on current clusters. The conntrack settings at 0 leave the machine's
  # conntrack sysctls as they are (kube-proxy would raise nf_conntrack_max otherwise).
  cat >"$cfg/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $cfg/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: nftables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# ----------------------------------------------------------------------------- up

# Records the machine as it is before the node changes it; node_down puts it back.
node_save_host() {
  local s d t
  : >"$NODE_STATE/sysctls"
  for s in "${NODE_SYSCTLS[@]}"; do
    [[ -e /proc/sys/${s//.//} ]] && echo "$s=$(sysctl -n "$s")" >>"$NODE_STATE/sysctls"
  done
  : >"$NODE_STATE/absent-dirs"
  for d in "${NODE_HOST_DIRS[@]}"; do [[ -e $d ]] || echo "$d" >>"$NODE_STATE/absent-dirs"; done
  : >"$NODE_STATE/absent-tables"
  for t in "${NODE_NFT_TABLES[@]}"; do
    # shellcheck disable=SC2086 # "family name"
    nft list table $t >/dev/null 2>&1 || echo "$t" >>"$NODE_STATE/absent-tables"
  done
  : >"$NODE_STATE/absent-cgroups"
  for d in /sys/fs/cgroup/*/; do [[ -e ${d}kubepods ]] || echo "${d}kubepods" >>"$NODE_STATE/absent-cgroups"; done
  ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && die "a link named $CNI_BRIDGE already exists; the real node's bridge needs that name"
  return 0
}

node_check_prereqs() {
  [[ $(id -u) -eq 0 ]] || die "the real node needs root (containerd, kubelet, network); run as root, or set FTPOP_REAL_NODE=0 for a control plane only"
  ensure_cmd runc runc
  ensure_cmd nft nftables
  ensure_cmd iptables iptables
  ensure_cmd ip iproute2
  ensure_cmd flock util-linux
  ensure_cmd conntrack conntrack
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    die "the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)"
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
    die "the kernel lacks br_netfilter (kube-proxy must see traffic between pods on the bridge)"
  [[ -n $NODE_IP ]] || die "cannot tell the node's address (no default route); the real node needs a non-loopback address"
}

# kube-proxy has (rarely) exited during start-up on a machine where it usually starts. Its log is
# kept beside the cluster's state (`down` removes the state, not that copy), its rules are cleaned
# up, and it gets one more start; a second failure stops `up`.
node_start_kube_proxy() {
  local attempt kept
  for attempt in 1 2; do
    node_wait_ports_free "$KUBE_PROXY_HEALTHZ_PORT" "$KUBE_PROXY_METRICS_PORT"
    start_component kube-proxy kube-proxy --config="$NODE_STATE/kube-proxy.yaml"
    if (wait_for "kube-proxy /healthz" 60 kube-proxy curl -fs --max-time 2 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"); then
      return 0
    fi
    kept=$(dirname "$STATE_DIR")/failed-logs/kube-proxy-$(date +%Y%m%dT%H%M%S).log
    mkdir -p "$(dirname "$kept")" && cp "$LOGS/kube-proxy.log" "$kept" 2>/dev/null || true
    stop_components kube-proxy
    "$BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true
    ((attempt == 1)) && log "kube-proxy did not start (log kept in $kept); starting it once more"
  done
  die "kube-proxy did not start twice (logs kept in $(dirname "$kept"))"
}

# The node's components listen on fixed ports (as on a real node). A component of the cluster
# before this one may still be closing them; anything else holding them is named.
node_wait_ports_free() { # <port...>
  local port i
  for port in "$@"; do
    for ((i = 0; i < 20; i++)); do port_busy "$port" || continue 2; sleep 0.5; done
    die "port $port, which the real node needs, is taken: $(ss -Hltnp "sport = :$port" 2>/dev/null | head -1)"
  done
}

node_up() {
  local owner
  node_check_prereqs
  node_lock
  if owner=$(node_owner); then
    [[ $owner == "$STATE_DIR" ]] && die "the real node already runs for this cluster"
    die "the real node is in use by the local cluster in $owner (one per machine); bring that one down, or set FTPOP_REAL_NODE=0 for a control plane only"
  fi
  # A node left by a cluster that crashed: clean it first, from the records it left.
  if [[ -f $NODE_OWNER ]]; then
    owner=$(cat "$NODE_OWNER")
    log "the real node of $owner was not brought down; cleaning up after it"
    NODE_STATE=$owner/node node_cleanup_host
  fi
  mkdir -p "$NODE_STATE"
  node_save_host
  mkdir -p "$NODE_ROOT" "$NODE_RUN"
  echo "$STATE_DIR" >"$NODE_OWNER"
  node_write_configs

  start_component containerd "$CONTAINERD_BIN/containerd" --config "$NODE_STATE/containerd.toml" --log-level warn
  wait_for "containerd" 30 containerd "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" version
  images_import

  node_wait_ports_free "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT"
  start_component kubelet kubelet --config="$NODE_STATE/kubelet.yaml" \
    --kubeconfig="$NODE_STATE/kubelet.kubeconfig" --root-dir="$NODE_ROOT/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels=ftpoperator.dev/local-node=real --v=1
  wait_for "node $NODE_NAME to register" 60 kubelet kc get node "$NODE_NAME"
  node_start_kube_proxy
  wait_for "node $NODE_NAME to be Ready" 90 kubelet kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

# --------------------------------------------------------------------------- down

# Every process of a pod of this node: whatever sits in the kubelet's pod cgroups, and the shims.
node_pod_pids() {
  cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs \
    2>/dev/null || true
  pgrep -f -- "-address $CONTAINERD_SOCK" || true
}

node_down() {
  node_lock
  [[ -d $NODE_STATE ]] || return 0
  # 1. The pods, through the kubelet while it runs, so each sandbox's network is torn down by
  #    the CNI plugins (veth, address, masquerade rules). Nothing recreates them: the
  #    controller-manager and scheduler are stopped first.
  if is_ours "$(pid_of kubelet || true)" && is_ours "$(pid_of kube-apiserver || true)"; then
    stop_components kube-controller-manager kube-scheduler
    kc delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
      --grace-period=2 --wait=false >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 60; i++)); do
      [[ -z $(kc get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null) ]] &&
        [[ -z $("$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null) ]] && break
      sleep 1
    done
  fi
  stop_components "${NODE_COMPONENTS[@]}"
  node_cleanup_host
}

# Puts the machine back as node_save_host found it (idempotent; also after a crash).
node_cleanup_host() {
  local pids d t s m
  [[ -d $NODE_STATE ]] || return 0
  # 2. Anything a pod left running (the kubelet gone before it could stop it).
  mapfile -t pids < <(node_pod_pids)
  if [[ ${#pids[@]} -gt 0 ]]; then
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.5
  fi
  # 3. kube-proxy's own cleanup of every mode's rules, then the tables the node made.
  if [[ -x $BIN_DIR/kube-proxy ]]; then "$BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  if [[ -f $NODE_STATE/absent-tables ]]; then
    # shellcheck disable=SC2086 # "family name"
    while read -r t; do nft delete table $t 2>/dev/null || true; done <"$NODE_STATE/absent-tables"
  fi
  # 4. Mounts under the node's roots (pod volumes, netns, overlay snapshots, shm), deepest first.
  for m in $(awk -v a="$NODE_ROOT" -v b="$NODE_RUN" '$5 ~ "^"a || $5 ~ "^"b {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  # 5. The bridge. A pod's veth pair went with its network namespace (unmounted above, its
  #    processes gone).
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  # 6. Cgroups the kubelet made (leaves first).
  if [[ -f $NODE_STATE/absent-cgroups ]]; then
    while read -r d; do
      [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done <"$NODE_STATE/absent-cgroups"
  fi
  # 7. Sysctls back to what they were.
  if [[ -f $NODE_STATE/sysctls ]]; then
    while IFS= read -r s; do sysctl -qw "$s" >/dev/null 2>&1 || log "could not restore sysctl $s"; done <"$NODE_STATE/sysctls"
  fi
  # 8. Files and directories.
  rm -rf "$NODE_ROOT" "$NODE_RUN"
  if [[ -f $NODE_STATE/absent-dirs ]]; then
    while read -r d; do [[ -n $d ]] && rm -rf "$d"; done <"$NODE_STATE/absent-dirs"
  fi
  rm -f "$NODE_OWNER"
  rm -rf "$NODE_STATE"
}

# Lets the node pull from a registry whose certificate a private CA signed (a test registry):
# containerd verifies it with that CA, for that host only. Credentials come from the pods'
# image pull secrets, as on any cluster.
node_trust_registry() { # <host:port> <CA file>
  local host=$1 ca=$2 dir
  [[ $host =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] || die "trust-registry: '$host' is not host[:port]"
  [[ -s $ca ]] || die "trust-registry: no CA certificate at $ca"
  [[ -d $NODE_ROOT ]] || die "trust-registry: the real node is not up"
  dir=$NODE_REGISTRY_HOSTS/$host
  mkdir -p "$dir"
  cp "$ca" "$dir/ca.crt"
  cat >"$dir/hosts.toml" <<EOF
server = "https://$host"

[host."https://$host"]
  capabilities = ["pull", "resolve"]
  ca = "$dir/ca.crt"
EOF
  log "the real node trusts $host with the CA $ca"
}

node_status() { components_status containerd kubelet kube-proxy; }
