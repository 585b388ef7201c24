# The control plane of the local cluster (sourced by scripts/local-cluster.sh): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, and the kwok controller that makes pods
# on fake nodes Running/Ready. Listens on 127.0.0.1, except the apiserver when a real node is up:
# pods reach it through the `kubernetes` Service, whose endpoint is then the node's address.
#
#   cp_build   build (or reuse cached) binaries
#   cp_up      start it; pki, kubeconfigs and ports in $STATE_DIR
#   cp_down    stop exactly what cp_up started
#   cp_status  one line per component

# Stop order; start order is the reverse.
CP_COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

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

cp_build() {
  # One go build per module: all four Kubernetes commands in a single invocation
  # so the shared packages compile once (2-core machines: this is most of the time).
  build_group k8s k8s "$BIN_DIR" kube-apiserver kube-controller-manager kube-scheduler kubectl -- \
    -ldflags "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  # The etcd main package is the server module's root (server/main.go), which
  # go names "server" (the element before the /v3 suffix); install it as etcd.
  build_group etcd etcd "$BIN_DIR" etcd=server -- -ldflags "-s -w" go.etcd.io/etcd/server/v3
  build_group kwok kwok "$BIN_DIR" kwok -- -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok
  build_kwok_stages
}

gen_pki() {
  mkdir -p "$PKI"
  gen_ca ca ftp-operator-local-ca
  # The apiserver is reached as 127.0.0.1/localhost from the host and as the
  # kubernetes Service (that is, the node's address) from pods on the real node.
  gen_cert ca apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SERVICE_APISERVER_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local${NODE_IP:+,IP:$NODE_IP}"
  # The apiserver's identity towards kubelets (kubectl logs/exec/port-forward).
  gen_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
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

nodes_yaml() {
  local i spec=""
  [[ $REAL_NODE == 1 ]] && spec="spec: {taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]}"
  for ((i = 0; i < NODE_COUNT; i++)); do
    # kwok manages nodes carrying the kwok.x-k8s.io/node=fake annotation (our
    # --manage-nodes-with-annotation-selector). Beside a real node they carry kwok's
    # usual NoSchedule taint, so real workloads land on the real node and only pods that
    # tolerate it (the scale tests) land here; without one, ordinary Deployments must
    # schedule here without tolerations.
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
$spec
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "500", ephemeral-storage: 1Ti}
  capacity: {cpu: "64", memory: 256Gi, pods: "500", ephemeral-storage: 1Ti}
EOF
  done
}

cp_up() {
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

  # Without a real node: loopback only, and --endpoint-reconciler-type=none, since Endpoints
  # validation rejects the loopback advertise address (retried and logged forever otherwise).
  # With one: pods reach the apiserver through the kubernetes Service, so it advertises the
  # node's address (the default lease reconciler then writes that endpoint) and listens there too.
  local where=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
  if [[ $REAL_NODE == 1 ]]; then
    where=(--bind-address=0.0.0.0 --advertise-address="$NODE_IP"
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP,Hostname)
  fi
  # Every deletion is recorded (who, what, when; no bodies), so a test that finds an object gone
  # can say who removed it: $LOGS/audit.log.
  cat >"$STATE_DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [delete, deletecollection]
- level: None
EOF
  # Node,RBAC like a real cluster, so Helm/RBAC tests see real authorization.
  start_component kube-apiserver kube-apiserver \
    --audit-policy-file="$STATE_DIR/audit-policy.yaml" --audit-log-path="$LOGS/audit.log" \
    --audit-log-maxsize=50 --audit-log-maxbackup=1 \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    "${where[@]}" --secure-port="$APISERVER_PORT" \
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
    --node-ip=127.0.0.1 --cidr="$KWOK_POD_CIDR" --node-lease-duration-seconds=40

  wait_for "kube-controller-manager /healthz" 60 kube-controller-manager healthz "$KCM_PORT"
  wait_for "kube-scheduler /healthz" 60 kube-scheduler healthz "$SCHEDULER_PORT"

  nodes_yaml | kc apply -f - >/dev/null
  wait_for "fake nodes to be Ready" 60 kwok kc wait --for=condition=Ready node -l type=kwok --timeout=5s
  # Pods cannot be created in a namespace before its default ServiceAccount
  # exists (kcm's serviceaccount controller makes it); wait so tests can start at once.
  wait_for "the default ServiceAccount" 60 kube-controller-manager kc -n default get serviceaccount default

}

cp_down() { stop_components "${CP_COMPONENTS[@]}"; }

cp_status() { components_status etcd kube-apiserver kube-controller-manager kube-scheduler kwok; }

