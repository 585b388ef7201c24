#!/usr/bin/env bash
# Tests the Helm chart, the GitOps health checks and the docs against a real local control plane
# (scripts/local-cluster.sh: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok).
# Runs only when asked; prints "N passed, M failed" last and exits non-zero on any failure.
#
#   scripts/test-helm.sh
#
# The operator Deployment's pod lands on a kwok node, where nothing really runs; so the controller
# runs here, on the host, with a kubeconfig that impersonates the chart's ServiceAccount: every call
# it makes is authorised by the chart's RBAC and nothing else.
#
# Environment:
#   FTPOP_OPERATOR_BIN   ftp-operator binary to run (default: cargo build --bin ftp-operator)
#   FTPOP_SERVER_BIN     ftp-server binary whose /metrics the dashboard test scrapes (default: cargo build)
#   FTPOP_KEEP_CLUSTER=1 leave the control plane up afterwards (it is reused by the next run)
#   FTPOP_PORT_BASE      first port for the control plane (default 25300, apart from other tests)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART="$ROOT/charts/ftp-operator"
export FTPOP_CLUSTER_DIR=${FTPOP_HELM_CLUSTER_DIR:-$ROOT/target/helm-cluster}
export FTPOP_PORT_BASE=${FTPOP_PORT_BASE:-25300}
# A control plane with kwok nodes only: the chart's tests need no real pods, and run while another
# cluster holds the machine's one real node.
export FTPOP_REAL_NODE=0
WORK="$ROOT/target/helm-test"
RELEASE=ftp-operator
NS=ftp-operator-system
SA=ftp-operator                 # the chart's ServiceAccount for this release name
APP_NS=ftp-helm-test            # where the example FtpServers live
METRICS_PORT=${FTPOP_HELM_METRICS_PORT:-25380}

TIER=test-helm
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"

# ------------------------------------------------------------------------------------ setup

"$ROOT/scripts/install-deps.sh" || die "installing Debian packages failed"
HELM=$("$ROOT/scripts/tools.sh" path helm) || die "building helm failed"
KSTATUS=$("$ROOT/scripts/tools.sh" path kstatus) || die "building tests/kstatus failed"
KUBECONFORM=$("$ROOT/scripts/tools.sh" path kubeconform) || die "building kubeconform failed"
KUBE_SCORE=$("$ROOT/scripts/tools.sh" path kube-score) || die "building kube-score failed"
ARGOCD_HEALTH=$("$ROOT/scripts/tools.sh" path argocd-health) || die "building tests/argocd/engine failed"
# Debian's Python: its packages (python3-yaml, python3-prometheus-client) are the tests' libraries.
PY3=/usr/bin/python3
"$ROOT/scripts/local-cluster.sh" build >/dev/null || die "building the control plane failed"
eval "$("$ROOT/scripts/local-cluster.sh" env 2>/dev/null)"
KUBECTL=$(command -v kubectl) # the pinned one, first in PATH after `env`

if [[ -n ${FTPOP_OPERATOR_BIN:-} && -n ${FTPOP_SERVER_BIN:-} ]]; then
  OPERATOR=$FTPOP_OPERATOR_BIN FTP_SERVER=$FTPOP_SERVER_BIN
else
  log "building ftp-operator and ftp-server (cargo build)"
  (cd "$ROOT" && cargo build -q --bin ftp-operator --bin ftp-server) || die "cargo build failed"
  OPERATOR=${FTPOP_OPERATOR_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-operator}
  FTP_SERVER=${FTPOP_SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-server}
fi
[[ -x $OPERATOR ]] || die "no ftp-operator binary at $OPERATOR"
[[ -x $FTP_SERVER ]] || die "no ftp-server binary at $FTP_SERVER"

STARTED_CLUSTER=0
cleanup() {
  # Defined further down: an early failure (no control plane) exits before it exists.
  if declare -F stop_controller >/dev/null; then stop_controller; fi
  if [[ $STARTED_CLUSTER -eq 1 && ${FTPOP_KEEP_CLUSTER:-0} != 1 ]]; then
    "$ROOT/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if ! "$ROOT/scripts/local-cluster.sh" status >/dev/null 2>&1; then
  log "starting the local control plane in $FTPOP_CLUSTER_DIR"
  # Set first, so a half-started control plane is stopped on the way out too.
  STARTED_CLUSTER=1
  "$ROOT/scripts/local-cluster.sh" up >/dev/null || die "the local control plane did not come up"
fi
k() { "$KUBECTL" "$@"; }
h() { "$HELM" "$@"; }

# A run against a reused cluster starts from nothing of ours.
h uninstall "$RELEASE" -n "$NS" --wait >/dev/null 2>&1 || true
k delete namespace "$APP_NS" --wait=true --timeout=60s >/dev/null 2>&1 || true
k delete pv ftp-helm-test-data --wait=true --timeout=30s >/dev/null 2>&1 || true
k delete crd ftpservers.ftpoperator.dev --wait=true --timeout=60s >/dev/null 2>&1 || true
rm -rf "$WORK"; mkdir -p "$WORK"

# The controller, impersonating the chart's ServiceAccount.
SA_KUBECONFIG="$WORK/sa.kubeconfig"
KUBECTL=$KUBECTL "$ROOT/scripts/impersonating-kubeconfig.sh" "system:serviceaccount:$NS:$SA" "$SA_KUBECONFIG" ||
  die "writing the impersonating kubeconfig failed"
[[ $(k --kubeconfig "$SA_KUBECONFIG" auth whoami -o jsonpath='{.status.userInfo.username}') == "system:serviceaccount:$NS:$SA" ]] ||
  die "the impersonating kubeconfig does not act as the ServiceAccount"
# Tests run in subshells (check captures their output), so the controller's PID lives in a file.
CONTROLLER_PID_FILE="$WORK/controller.pid"
start_controller() {
  stop_controller
  KUBECONFIG=$SA_KUBECONFIG RUST_LOG=info,kube=warn POD_NAMESPACE=$NS \
    "$OPERATOR" controller --metrics-listen "127.0.0.1:$METRICS_PORT" \
    --leader-election-namespace "$NS" --lease-name "$RELEASE" --identity helm-test \
    --verify-served-config=false --probe-interval-seconds=0 --node-tuning=true \
    >>"$WORK/controller.log" 2>&1 &
  echo $! >"$CONTROLLER_PID_FILE"
}
stop_controller() {
  local pid
  pid=$(cat "$CONTROLLER_PID_FILE" 2>/dev/null) || return 0
  rm -f "$CONTROLLER_PID_FILE"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
}
controller_log() { echo "--- controller log (last lines):"; tail -15 "$WORK/controller.log"; }

# ------------------------------------------------------------------------------------ offline

t_crd_copy() { "$ROOT/scripts/sync-chart-crd.sh" --check; }

# The chart adds only Helm's metadata: drop those lines and the rest is crds/ftpserver.yaml.
t_rendered_crd() {
  h template "$RELEASE" "$CHART" -n "$NS" --show-only templates/crd.yaml >"$WORK/crd.rendered" || return 1
  python3 - "$WORK/crd.rendered" "$ROOT/crds/ftpserver.yaml" <<'PY'
import sys
rendered = open(sys.argv[1]).read().split("\n")
rendered = [l for l in rendered if l not in ("---",) and not l.startswith("# Source:")]
out, skipping = [], False
for line in rendered:
    if line == "metadata:":
        out.append(line); skipping = True; continue
    if skipping and line.startswith("  name: "):
        skipping = False
    if not skipping:
        out.append(line)
want = open(sys.argv[2]).read()
got = "\n".join(out).strip("\n") + "\n"
if got != want:
    import difflib
    sys.stdout.writelines(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "crds/ftpserver.yaml", "rendered"))
    sys.exit(1)
PY
  grep -q 'helm.sh/resource-policy: keep' "$WORK/crd.rendered" || fail "rendered CRD lacks helm.sh/resource-policy: keep"
  h template "$RELEASE" "$CHART" -n "$NS" --show-only templates/crd-ftpuser.yaml >"$WORK/crd-ftpuser.rendered" || return 1
  grep -q 'helm.sh/resource-policy: keep' "$WORK/crd-ftpuser.rendered" || fail "rendered FtpUser CRD lacks helm.sh/resource-policy: keep"
  grep -q '^  name: ftpusers.ftpoperator.dev$' "$WORK/crd-ftpuser.rendered" || fail "the chart renders no FtpUser CRD"
}

t_lint() {
  local out
  out=$(h lint --strict "$CHART" 2>&1) || { echo "$out"; return 1; }
  out+=$(h lint --strict "$CHART" --set networkPolicy.enabled=true --set metrics.serviceMonitor.enabled=true \
    --set replicas=3 --set crds.install=false 2>&1) || { echo "$out"; return 1; }
  ! grep -E '\[(WARNING|ERROR)\]' <<<"$out" || fail "helm lint reported warnings"
}

# Each bad value must be refused, naming the value's path.
t_schema_rejects() {
  local bad path out rc=0
  while IFS='|' read -r bad path; do
    if out=$(h template "$RELEASE" "$CHART" --set "$bad" 2>&1); then
      echo "accepted: --set $bad"; rc=1
    elif ! grep -qF "$path" <<<"$out"; then
      echo "refused --set $bad without naming $path:"; echo "$out"; rc=1
    fi
  done <<'EOF'
replicas=-1|/replicas
replicas=two|/replicas
image.pullPolicy=Sometimes|/image/pullPolicy
image.digest=sha256:abc|/image/digest
metrics.port=70000|/metrics/port
resources.limits.memory=lots|/resources/limits/memory
networkPolicy.apiServerCIDRs={10.0.0.1}|/networkPolicy/apiServerCIDRs/0
metrics.serviceMonitor.interval=soon|/metrics/serviceMonitor/interval
replicaCount=2|replicaCount
crds.install=maybe|/crds/install
probe.intervalSeconds=-1|/probe/intervalSeconds
EOF
  h template "$RELEASE" "$CHART" >/dev/null || { echo "defaults refused"; rc=1; }
  return $rc
}

t_schema_rejects_install() {
  local out
  if out=$(h install bad-values "$CHART" -n "$NS" --create-namespace --set replicas=-2 2>&1); then
    h uninstall bad-values -n "$NS" >/dev/null 2>&1; fail "helm install accepted replicas=-2"
  fi
  grep -q "/replicas" <<<"$out" || fail "no message naming /replicas: $out"
  ! h status bad-values -n "$NS" >/dev/null 2>&1 || fail "a release was recorded despite the bad value"
}

t_template_dry_run() {
  k create namespace "$NS" --dry-run=client -o yaml | k apply --server-side -f - >/dev/null
  h template "$RELEASE" "$CHART" -n "$NS" | k apply --server-side --dry-run=server -f - || return 1
  h template "$RELEASE" "$CHART" -n "$NS" --set networkPolicy.enabled=true --set replicas=2 \
    --set 'networkPolicy.apiServerCIDRs={127.0.0.1/32}' --set 'networkPolicy.probeCIDRs={198.18.0.0/15}' \
    --set-json 'networkPolicy.probePorts=[{"port":21},{"port":20000,"endPort":20019}]' |
    k apply --server-side --dry-run=server -f -
}

lua_health() { "$ROOT/tests/argocd/health.sh" "$1" | cut -f1; }
kstatus_of() { "$KSTATUS" "$1" | cut -f1; }
# Argo CD's own code (tests/argocd/engine) with the health check in an argocd-cm ConfigMap: first
# one written here as docs/argocd.md shows it, later the one its patch command makes in the cluster.
ARGOCD_CM="$WORK/argocd-cm.yaml"
$PY3 - "$ROOT/docs/argocd-health.lua" "$ARGOCD_CM" <<'PY' || die "writing argocd-cm failed"
import sys, yaml
cm = {"apiVersion": "v1", "kind": "ConfigMap",
      "metadata": {"name": "argocd-cm", "namespace": "argocd", "labels": {"app.kubernetes.io/part-of": "argocd"}},
      "data": {"resource.customizations.health.ftpoperator.dev_FtpServer": open(sys.argv[1]).read()}}
yaml.safe_dump(cm, open(sys.argv[2], "w"))
PY
argocd_health() { "$ARGOCD_HEALTH" "$ARGOCD_CM" "$1" | cut -f1; }

# Every fixture gets the health its expect.tsv line names, from Lua, Argo CD's code and kstatus.
t_fixtures() {
  local name want_lua want_ks got rc=0
  while IFS=$'\t' read -r name want_lua want_ks; do
    [[ -z $name || $name == \#* ]] && continue
    got=$(lua_health "$ROOT/tests/argocd/fixtures/$name.json") || { echo "$name: lua failed"; rc=1; }
    [[ $got == "$want_lua" ]] || { echo "$name: Argo CD health $got, want $want_lua"; rc=1; }
    got=$(argocd_health "$ROOT/tests/argocd/fixtures/$name.json") || { echo "$name: argocd-health failed"; rc=1; }
    [[ $got == "$want_lua" ]] || { echo "$name: Argo CD's code says $got, want $want_lua"; rc=1; }
    got=$(kstatus_of "$ROOT/tests/argocd/fixtures/$name.json") || { echo "$name: kstatus failed"; rc=1; }
    [[ $got == "$want_ks" ]] || { echo "$name: kstatus $got, want $want_ks"; rc=1; }
  done <"$ROOT/tests/argocd/fixtures/expect.tsv"
  return $rc
}

# ------------------------------------------------------------------------------------ linters

# What the chart renders with its defaults and with every optional object on, but the
# ServiceMonitor: its CRD is the Prometheus Operator's, which this cluster (and so the schemas
# made from it) does not have.
render_variants() { # DIR
  h template "$RELEASE" "$CHART" -n "$NS" >"$1/defaults.yaml" &&
    h template "$RELEASE" "$CHART" -n "$NS" --set networkPolicy.enabled=true --set grafanaDashboard.enabled=true \
      --set nodeTuning.enabled=true --set replicas=3 --set 'networkPolicy.apiServerCIDRs={10.0.0.1/32}' >"$1/features.yaml"
}

# kubeconform, strict, against JSON schemas made from this API server's OpenAPI document and from
# crds/ftpserver.yaml (tests/chart/jsonschemas.py); no schema location but ours, nothing downloaded.
t_kubeconform() {
  local dir="$WORK/kubeconform" out
  rm -rf "$dir"; mkdir -p "$dir"
  k get --raw /openapi/v2 >"$dir/openapi-v2.json" || return 1
  $PY3 "$ROOT/tests/chart/jsonschemas.py" "$dir/openapi-v2.json" "$ROOT/crds/ftpserver.yaml" "$dir/schemas" || return 1
  render_variants "$dir" || return 1
  local conform=("$KUBECONFORM" -strict -summary -schema-location "$dir/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json")
  "${conform[@]}" "$dir/defaults.yaml" "$dir/features.yaml" "$ROOT/docs/flux/ftp" \
    "$ROOT/docs/flux/infrastructure/ftp-operator/namespace.yaml" || return 1
  # The schemas are strict and complete: a misspelt field, a wrong type and an unknown kind fail.
  sed 's/^  replicas: /  replica: /' "$dir/defaults.yaml" >"$dir/bad-field.yaml"
  sed 's/^  passivePorts: {min: 20000,/  passivePorts: {min: "low",/' "$ROOT/docs/flux/ftp/ftpserver.yaml" >"$dir/bad-type.yaml"
  printf 'apiVersion: example.com/v1\nkind: Unknown\nmetadata: {name: x}\n' >"$dir/bad-kind.yaml"
  for bad in bad-field bad-type bad-kind; do
    if out=$("${conform[@]}" "$dir/$bad.yaml" 2>&1); then echo "kubeconform accepted $bad.yaml: $out"; return 1; fi
  done
}

# kube-score on the same renderings, one at a time (it matches NetworkPolicies to pods across its
# inputs), warnings included. Its only exceptions are the kube-score/ignore annotation in
# templates/deployment.yaml, each with its reason there.
t_kube_score() {
  local dir="$WORK/kube-score" f rc=0
  rm -rf "$dir"; mkdir -p "$dir"
  render_variants "$dir" || return 1
  for f in defaults features; do
    "$KUBE_SCORE" score --output-format ci --exit-one-on-warning "$dir/$f.yaml" >"$dir/$f.out" ||
      { echo "$f:"; grep -v '^\[OK\]\|^\[SKIPPED\]' "$dir/$f.out"; rc=1; }
  done
  return $rc
}

# ------------------------------------------------------------------------------------ live

t_install() {
  h install "$RELEASE" "$CHART" -n "$NS" --create-namespace --wait --timeout 3m \
    --set nodeTuning.enabled=true >"$WORK/install.out" || return 1
  grep -q "kubectl -n ftp wait --for=condition=Ready" "$WORK/install.out" || fail "NOTES do not say what to do next"
  k wait --for=condition=Established crd/ftpservers.ftpoperator.dev --timeout=60s >/dev/null || return 1
  k -n "$NS" get serviceaccount/"$SA" deployment/"$RELEASE" service/"$RELEASE-metrics" \
    role/"$RELEASE-leader-election" rolebinding/"$RELEASE-leader-election" >/dev/null || return 1
  k get clusterrole/"$RELEASE" clusterrolebinding/"$RELEASE" >/dev/null || return 1
  k -n "$NS" get configmap/ftp-operator-node-tuner serviceaccount/ftp-operator-node-tuner \
    serviceaccount/ftp-operator-node-tuner-uninstall >/dev/null || return 1
  k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.containers[0].args}' |
    grep -q -- '--node-tuning=true' || fail "nodeTuning.enabled did not reach the operator's --node-tuning"
  [[ $(k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.containers[0].image}') == \
    "ghcr.io/ftp-operator/ftp-operator:$(awk -F'"' '/^appVersion:/ {print $2}' "$CHART/Chart.yaml")" ]] ||
    fail "operator image is not ghcr.io/ftp-operator/ftp-operator:<appVersion>"
}

# The FtpServer example Artifact Hub shows (Chart.yaml) is one the API server accepts.
t_artifacthub_example() {
  awk '/artifacthub.io\/crdsExamples: \|/ {on=1; next} on && /^  [^ ]/ {on=0} on {sub(/^    /, ""); print}' \
    "$CHART/Chart.yaml" | sed -e 's/^- apiVersion/apiVersion/' -e 's/^  //' \
    -e "s/namespace: ftp\$/namespace: $NS/" >"$WORK/example.yaml"
  grep -q "kind: FtpServer" "$WORK/example.yaml" || fail "no FtpServer example in Chart.yaml"
  k create --dry-run=server -f "$WORK/example.yaml" >/dev/null
}

# What the ServiceAccount may do, and what it may not: the RBAC is least privilege.
t_rbac() {
  local as=(--as "system:serviceaccount:$NS:$SA") rc=0 want verb res ns sub got
  while read -r want verb res ns sub; do
    [[ -z $want || $want == \#* ]] && continue
    [[ $ns == - ]] && ns=""
    got=$(k auth can-i "${as[@]}" "$verb" "$res" ${ns:+-n "$ns"} ${sub:+--subresource "$sub"} 2>/dev/null)
    [[ ${got:-no} == "$want" ]] || { echo "can-i $verb $res${sub:+/$sub} in ${ns:-(cluster)}: ${got:-no}, want $want"; rc=1; }
  done <<EOF
yes list ftpservers.ftpoperator.dev -
yes watch ftpservers.ftpoperator.dev -
yes patch ftpservers.ftpoperator.dev $APP_NS status
yes watch ftpusers.ftpoperator.dev -
yes patch ftpusers.ftpoperator.dev $APP_NS status
no patch ftpusers.ftpoperator.dev $APP_NS
yes update ftpservers.ftpoperator.dev $APP_NS finalizers
yes create deployments.apps $APP_NS
yes create statefulsets.apps $APP_NS
yes delete endpointslices.discovery.k8s.io $APP_NS
yes create poddisruptionbudgets.policy $APP_NS
yes watch pods $APP_NS
yes watch persistentvolumeclaims $APP_NS
yes delete daemonsets.apps $NS
no delete daemonsets.apps $APP_NS
yes patch services $APP_NS
yes create configmaps $APP_NS
yes watch secrets $APP_NS
yes create events.events.k8s.io $APP_NS
yes list nodes -
yes update leases.coordination.k8s.io $NS
yes list pods $APP_NS
yes patch pods $APP_NS
no create ftpservers.ftpoperator.dev $APP_NS
no delete ftpservers.ftpoperator.dev $APP_NS
yes create secrets $APP_NS
yes patch secrets $APP_NS
no update secrets $APP_NS
no delete secrets $APP_NS
no create pods $APP_NS
yes watch pods $APP_NS
no delete pods $APP_NS
no create pods/exec $APP_NS
no create events $APP_NS
no update leases.coordination.k8s.io default
no patch nodes -
no create clusterroles.rbac.authorization.k8s.io -
no create persistentvolumeclaims $APP_NS
no delete persistentvolumeclaims $APP_NS
no patch services $APP_NS status
EOF
  return $rc
}

# The node tuner's ServiceAccount (the controller's DaemonSet runs as it): reads FtpServers,
# annotates Nodes, and nothing else.
t_rbac_node_tuner() {
  local as=(--as "system:serviceaccount:$NS:ftp-operator-node-tuner") rc=0 want verb res ns got
  while read -r want verb res ns; do
    [[ $ns == - ]] && ns=""
    got=$(k auth can-i "${as[@]}" "$verb" "$res" ${ns:+-n "$ns"} 2>/dev/null)
    [[ ${got:-no} == "$want" ]] || { echo "node tuner can-i $verb $res in ${ns:-(cluster)}: ${got:-no}, want $want"; rc=1; }
  done <<EOF
yes watch ftpservers.ftpoperator.dev -
yes patch nodes -
no patch ftpservers.ftpoperator.dev $APP_NS
no delete nodes -
no get secrets $APP_NS
no create pods $APP_NS
EOF
  return $rc
}

# The uninstall hook's ServiceAccount: stops this release's operator, annotates Nodes, removes
# FtpServers' finalizers, and nothing else.
t_rbac_uninstall_hook() {
  local as=(--as "system:serviceaccount:$NS:ftp-operator-node-tuner-uninstall") rc=0 want verb res ns got
  while read -r want verb res ns; do
    [[ $ns == - ]] && ns=""
    got=$(k auth can-i "${as[@]}" "$verb" "$res" ${ns:+-n "$ns"} 2>/dev/null)
    [[ ${got:-no} == "$want" ]] || { echo "uninstall hook can-i $verb $res in ${ns:-(cluster)}: ${got:-no}, want $want"; rc=1; }
  done <<EOF
yes patch nodes -
yes patch ftpservers.ftpoperator.dev $APP_NS
yes patch deployments.apps/$RELEASE $NS
no patch deployments.apps/other $NS
no patch deployments.apps/$RELEASE $APP_NS
yes get configmaps/ftp-operator-node-tuner $NS
no get configmaps/other $NS
no delete nodes -
no delete ftpservers.ftpoperator.dev $APP_NS
no get secrets $APP_NS
EOF
  return $rc
}

# A server asking for node sysctls brings the tuner DaemonSet, owned by the chart's ConfigMap.
t_node_tuner_daemon_set() {
  k apply --server-side -f - >/dev/null <<EOF || return 1
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: tuned, namespace: $APP_NS}
spec:
  passivePorts: {min: 30000, max: 30001}
  keepalive: {nodeSysctls: true}
  nodeSelector: {ftpoperator.dev/helm-test-none: "true"}
EOF
  until_true 60 k -n "$NS" get daemonset ftp-operator-node-tuner || { controller_log; fail "no node tuner DaemonSet"; }
  local owner uid
  owner=$(k -n "$NS" get daemonset ftp-operator-node-tuner -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].uid}')
  uid=$(k -n "$NS" get configmap ftp-operator-node-tuner -o jsonpath='{.metadata.uid}')
  [[ $owner == "ConfigMap/$uid" ]] || fail "the DaemonSet's owner is $owner, not the chart's ConfigMap ($uid)"
  until_true 60 has_node_finalizer tuned || fail "the tuned FtpServer did not get the node-keepalive finalizer"
}
has_node_finalizer() { k -n "$APP_NS" get ftpserver "$1" -o jsonpath='{.metadata.finalizers}' | has ftpoperator.dev/node-keepalive; }
finalizers_left() {
  k get ftpservers -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.finalizers}{"\n"}{end}' |
    grep ftpoperator.dev/node-keepalive
}

# The pre-delete hook's own command, as its Job would run it: kwok completes a Job's pods without
# running anything, so the command runs here, as the hook's ServiceAccount, with the arguments
# the release's hook renders. `helm uninstall` (next test) then creates the hook Job itself.
t_uninstall_hook() {
  local hook_kubeconfig="$WORK/uninstall-hook.kubeconfig" args
  stop_controller
  KUBECTL=$KUBECTL "$ROOT/scripts/impersonating-kubeconfig.sh" \
    "system:serviceaccount:$NS:ftp-operator-node-tuner-uninstall" "$hook_kubeconfig" || fail "no hook kubeconfig"
  h get hooks "$RELEASE" -n "$NS" >"$WORK/hooks.yaml" || return 1
  args=$($PY3 - "$WORK/hooks.yaml" <<'PY'
import sys, yaml
jobs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "Job"]
assert len(jobs) == 1, f"{len(jobs)} hook Jobs"
job = jobs[0]
assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete", "not a pre-delete hook"
pod = job["spec"]["template"]["spec"]
assert pod["serviceAccountName"] == "ftp-operator-node-tuner-uninstall", pod["serviceAccountName"]
c = pod["containers"][0]
print(" ".join(c["command"][1:] + c["args"]))
PY
) || return 1
  # shellcheck disable=SC2086 # the hook's arguments, word by word
  KUBECONFIG=$hook_kubeconfig POD_NAMESPACE=$NS RUST_LOG=info "$OPERATOR" $args >"$WORK/uninstall-hook.log" 2>&1 ||
    { tail -20 "$WORK/uninstall-hook.log"; return 1; }
  ! finalizers_left || fail "FtpServers still hold the node-keepalive finalizer"
  [[ $(k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.spec.replicas}') == 0 ]] || fail "the operator was not scaled to zero"
}

# Storage that binds without a provisioner: a PV reserved for the claim.
apply_app_fixtures() {
  k apply --server-side -f - <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $APP_NS}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: ftp-helm-test-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $APP_NS, name: ftp-data}
  hostPath: {path: /tmp/ftp-helm-test-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ftp-data, namespace: $APP_NS}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: ftp-helm-test-data
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Secret
metadata: {name: ftp-users, namespace: $APP_NS}
stringData:
  users: |
    alice:\$argon2id\$v=19\$m=19456,t=2,p=1\$c2FsdHNhbHRzYWx0\$k7N7r0d2H1n5c3q4l8y6g5m2h1j0k9l8m7n6b5v4c3w:rw
---
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: contoso, namespace: $APP_NS}
spec:
  replicas: 1
  publicAddress: 192.0.2.10
  passivePorts: {min: 20000, max: 20009}
  loadBalancer: {provider: azure, idleTimeoutSeconds: 240}
  storage: {persistentVolumeClaim: {claimName: ftp-data}}
  users: {secretRef: {name: ftp-users}}
---
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: no-users, namespace: $APP_NS}
spec:
  publicAddress: 192.0.2.11
  passivePorts: {min: 21000, max: 21004}
  storage: {emptyDir: {}}
  users: {secretRef: {name: does-not-exist}}
EOF
}

condition() { # <ftpserver> <type>
  k -n "$APP_NS" get ftpserver "$1" -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status}"
}
stalled() { [[ $(condition "$1" Stalled) == True ]]; }
current_generation_observed() {
  [[ $(k -n "$APP_NS" get ftpserver "$1" -o jsonpath='{.metadata.generation}') == \
    $(k -n "$APP_NS" get ftpserver "$1" -o jsonpath='{.status.observedGeneration}') ]]
}

t_ftpserver_ready() {
  apply_app_fixtures >/dev/null || return 1
  k -n "$APP_NS" wait --for=jsonpath='{.status.phase}'=Bound pvc/ftp-data --timeout=60s >/dev/null ||
    fail "the test PVC did not bind"
  start_controller
  # No cloud here: play its load-balancer controller and give the Service an address.
  until_true 60 k -n "$APP_NS" get service contoso || { controller_log; fail "the controller made no Service"; }
  k -n "$APP_NS" patch service contoso --subresource=status --type merge \
    -p '{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}}' >/dev/null || return 1
  if ! k -n "$APP_NS" wait --for=condition=Ready ftpserver/contoso --timeout=120s >/dev/null; then
    k -n "$APP_NS" get ftpserver contoso -o yaml; controller_log; return 1
  fi
  k -n "$APP_NS" get configmap,service,statefulset -o name | has statefulset || fail "no StatefulSet for the FtpServer"
  [[ $(k -n "$APP_NS" get ftpserver contoso -o jsonpath='{.status.readyReplicas}') == 1 ]] || fail "readyReplicas is not 1"
  # The controller really acted as the ServiceAccount: it holds the chart's Lease.
  [[ $(k -n "$NS" get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity}') == helm-test ]] ||
    fail "the Lease in $NS is not held by the local controller"
}

t_stalled() {
  until_true 60 stalled no-users ||
    { k -n "$APP_NS" get ftpserver no-users -o yaml; controller_log; return 1; }
}

# docs/argocd.md's patch command, run against an argocd-cm like the one Argo CD's install makes;
# what the API server then holds is what Argo CD's settings manager reads in t_health_live.
ARGOCD_CM_LIVE="$WORK/argocd-cm.live.yaml"
t_argocd_cm_live() {
  k create namespace argocd --dry-run=client -o yaml | k apply --server-side -f - >/dev/null || return 1
  k -n argocd create configmap argocd-cm --dry-run=client -o yaml |
    k label --local -f - app.kubernetes.io/part-of=argocd -o yaml | k apply --server-side -f - >/dev/null || return 1
  (cd "$ROOT" && k -n argocd patch configmap argocd-cm --type merge -p "$(
    python3 -c 'import json,sys; print(json.dumps({"data": {"resource.customizations.health.ftpoperator.dev_FtpServer": open(sys.argv[1]).read()}}))' \
    docs/argocd-health.lua)") >/dev/null || return 1
  k -n argocd get configmap argocd-cm -o yaml >"$ARGOCD_CM_LIVE"
}
argocd_live() { "$ARGOCD_HEALTH" "$ARGOCD_CM_LIVE" "$1"; }

# kstatus, the Argo CD script and Argo CD's code on objects straight from the API server.
t_health_live() {
  local rc=0 got
  k -n "$APP_NS" get ftpserver contoso -o json >"$WORK/healthy.json"
  k -n "$APP_NS" get ftpserver no-users -o json >"$WORK/stalled.json"
  got=$(kstatus_of "$WORK/healthy.json"); [[ $got == Current ]] || { echo "kstatus healthy: $got, want Current"; rc=1; }
  got=$(lua_health "$WORK/healthy.json"); [[ $got == Healthy ]] || { echo "argocd healthy: $got, want Healthy"; rc=1; }
  got=$(kstatus_of "$WORK/stalled.json"); [[ $got == Failed ]] || { echo "kstatus stalled: $got, want Failed"; rc=1; }
  got=$(lua_health "$WORK/stalled.json"); [[ $got == Degraded ]] || { echo "argocd stalled: $got, want Degraded"; rc=1; }
  "$ROOT/tests/argocd/health.sh" "$WORK/stalled.json" | has "does-not-exist" ||
    { echo "Degraded message does not name the missing Secret: $("$ROOT/tests/argocd/health.sh" "$WORK/stalled.json")"; rc=1; }
  got=$(argocd_live "$WORK/healthy.json" | cut -f1); [[ $got == Healthy ]] || { echo "argo cd's code, healthy: $got, want Healthy"; rc=1; }
  got=$(argocd_live "$WORK/stalled.json"); [[ $got == Degraded$'\t'*does-not-exist* ]] ||
    { echo "argo cd's code, stalled: '$got', want Degraded naming the missing Secret"; rc=1; }
  # A fresh generation, before any controller has seen it: stop ours, change the spec.
  stop_controller
  k -n "$APP_NS" patch ftpserver contoso --type merge -p '{"spec":{"keepalive":{"probes":5}}}' >/dev/null
  k -n "$APP_NS" get ftpserver contoso -o json >"$WORK/fresh.json"
  got=$(kstatus_of "$WORK/fresh.json"); [[ $got == InProgress ]] || { echo "kstatus fresh generation: $got, want InProgress"; rc=1; }
  got=$(lua_health "$WORK/fresh.json"); [[ $got == Progressing ]] || { echo "argocd fresh generation: $got, want Progressing"; rc=1; }
  got=$(argocd_live "$WORK/fresh.json" | cut -f1); [[ $got == Progressing ]] || { echo "argo cd's code, fresh generation: $got, want Progressing"; rc=1; }
  # And back to Ready once the controller returns.
  start_controller
  until_true 90 current_generation_observed contoso || { echo "the new generation was never observed"; controller_log; rc=1; }
  k -n "$APP_NS" wait --for=condition=Ready ftpserver/contoso --timeout=90s >/dev/null || { controller_log; rc=1; }
  [[ $(kstatus_of <(k -n "$APP_NS" get ftpserver contoso -o json)) == Current ]] || { echo "not Current after healing"; rc=1; }
  return $rc
}

# docs/api.md names every field and every CEL message of the CRDs the API server serves.
t_api_doc() {
  local crd
  for crd in ftpservers ftpusers; do
  k get crd $crd.ftpoperator.dev -o json >"$WORK/crd.json" || return 1
  python3 - "$ROOT/docs/api.md" "$WORK/crd.json" <<'PY' || return 1
import json, sys
crd = json.load(open(sys.argv[2]))
doc = open(sys.argv[1]).read()
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
native = {"resources", "affinity", "tolerations", "emptyDir", "conditions"}  # Kubernetes' own types
missing = []
def walk(node, path):
    for rule in node.get("x-kubernetes-validations", []):
        if rule.get("message") and rule["message"] not in doc:
            missing.append(f"CEL message on {path}: {rule['message']}")
    for name, sub in node.get("properties", {}).items():
        p = f"{path}.{name}"
        # An object is documented through its fields (`spec.tls.secretRef.name` covers spec.tls).
        if f"`{p}`" not in doc and f"`{p}." not in doc:
            missing.append(f"field {p}")
        if name not in native:
            walk(sub, p)
walk({"x-kubernetes-validations": schema.get("x-kubernetes-validations", [])}, "the object")
walk(schema["properties"]["spec"], "spec")
walk(schema["properties"]["status"], "status")
if missing:
    print(f"docs/api.md lacks ({crd['spec']['names']['kind']}):"); print("\n".join(missing)); sys.exit(1)
PY
  done
}

# docs/metrics.md names only operator metrics the running controller exports.
t_metrics_doc() {
  local body name rc=0
  body=$(curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics") || fail "no /metrics on 127.0.0.1:$METRICS_PORT"
  for name in $(grep -oE '`ftp_operator_[a-z_]+`' "$ROOT/docs/metrics.md" | tr -d '`' | sort -u); do
    grep -qE "^(# TYPE )?${name}(_bucket|_count|_sum)?[{ ]" <<<"$body" ||
      { echo "docs/metrics.md names $name; /metrics has no such metric"; rc=1; }
  done
  curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/healthz" >/dev/null || { echo "/healthz failed"; rc=1; }
  return $rc
}

# The Grafana dashboard: a ConfigMap with the sidecar's label, and every metric it queries is one
# the binaries export under that name, as scraped from them (the controller, running, and an
# ftp-server started here).
FTP_PORT=${FTPOP_HELM_FTP_PORT:-25385}
t_dashboard() {
  local dir="$WORK/dashboard" pid rc=0
  rm -rf "$dir"; mkdir -p "$dir/root"
  h template "$RELEASE" "$CHART" -n "$NS" --set grafanaDashboard.enabled=true \
    --show-only templates/dashboard.yaml >"$dir/configmap.yaml" || return 1
  $PY3 - "$dir/configmap.yaml" "$dir/dashboard.json" "$CHART/files/dashboards/ftp-operator.json" <<'PY' || return 1
import json, sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
assert cm["kind"] == "ConfigMap", cm["kind"]
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "no grafana_dashboard: \"1\" label"
board = json.loads(cm["data"]["ftp-operator.json"])
assert board == json.load(open(sys.argv[3])), "the ConfigMap's JSON differs from files/dashboards/ftp-operator.json"
json.dump(board, open(sys.argv[2], "w"))
PY
  ! h template "$RELEASE" "$CHART" -n "$NS" --show-only templates/dashboard.yaml >/dev/null 2>&1 ||
    fail "the dashboard ConfigMap is rendered although grafanaDashboard.enabled is false"
  # A fresh server, scraped before any session: every series the dashboard and the alert rules
  # query must already be there (at 0), or their panels read "no data" on a healthy server.
  echo hello >"$dir/root/hello.txt"
  # One user of the TOML form, whose per-user series the dashboard's user panels query.
  printf '[[user]]\nname = "acme"\npassword_hash = "%s"\n' \
    "$(printf dashboard | "$FTP_SERVER" hash-password)" >"$dir/users.toml"
  cat >"$dir/ftp-server.toml" <<EOF
root = "$dir/root"
listen = "127.0.0.1:$FTP_PORT"
passive_ports = {min = $((FTP_PORT + 2)), max = $((FTP_PORT + 3))}
public_address = "127.0.0.1"
metrics_listen = "127.0.0.1:$((FTP_PORT + 1))"
users_file = "$dir/users.toml"
EOF
  "$FTP_SERVER" --config "$dir/ftp-server.toml" >"$dir/ftp-server.log" 2>&1 &
  pid=$!
  until_true 20 curl -fsS "http://127.0.0.1:$((FTP_PORT + 1))/readyz" || { cat "$dir/ftp-server.log"; rc=1; }
  curl -fsS "http://127.0.0.1:$((FTP_PORT + 1))/metrics" >"$dir/ftp-server.metrics" || rc=1
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$dir/operator.metrics" || { controller_log; rc=1; }
  [[ $rc -eq 0 ]] || return 1
  $PY3 "$ROOT/tests/chart/dashboard_metrics.py" "$dir/dashboard.json" --alerts "$ROOT/docs/metrics.md" \
    "$dir/operator.metrics" "$dir/ftp-server.metrics"
}

# A changed value and a changed CRD both arrive through helm upgrade.
t_upgrade() {
  local next="$WORK/chart-next"
  rm -rf "$next"; cp -r "$CHART" "$next"
  sed -i 's/^version: .*/version: 0.1.1-test/' "$next/Chart.yaml"
  # The next version's CRD: one more category (what a generator change would look like).
  python3 - "$next/files/crds/ftpserver.yaml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
old = "    categories:\n    - ftp\n"
assert old in s, "categories block not found"
open(p, "w").write(s.replace(old, old + "    - ftp-upgraded\n", 1))
PY
  h upgrade "$RELEASE" "$next" -n "$NS" --set replicas=2 --set logLevel=debug --set nodeTuning.enabled=true \
    --wait --timeout 3m >/dev/null || return 1
  [[ $(k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.spec.replicas}') == 2 ]] || fail "replicas did not become 2"
  k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="RUST_LOG")].value}' |
    grep -qx debug || fail "logLevel did not reach RUST_LOG"
  k get crd ftpservers.ftpoperator.dev -o jsonpath='{.spec.names.categories}' | has ftp-upgraded ||
    fail "the CRD change did not arrive through helm upgrade"
  # A fresh discovery cache: kubectl would not look for a category it has not seen.
  k --cache-dir "$WORK/discovery" get ftp-upgraded -A -o name | has ftpserver.ftpoperator.dev/contoso || fail "the new category does not list FtpServers"
  [[ $(h history "$RELEASE" -n "$NS" -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') == 2 ]] ||
    fail "expected two revisions"
  # The FtpServers lived through it.
  k -n "$APP_NS" wait --for=condition=Ready ftpserver/contoso --timeout=60s >/dev/null
}

t_uninstall_keeps_data() {
  local pvc_uid set_uid
  pvc_uid=$(k -n "$APP_NS" get pvc ftp-data -o jsonpath='{.metadata.uid}')
  set_uid=$(k -n "$APP_NS" get statefulset contoso -o jsonpath='{.metadata.uid}')
  [[ -n $set_uid ]] || { who_deleted statefulsets contoso; fail "the FtpServer's StatefulSet was gone before uninstall"; }
  stop_controller
  h uninstall "$RELEASE" -n "$NS" --wait --timeout 2m >/dev/null || return 1
  ! k -n "$NS" get deploy "$RELEASE" >/dev/null 2>&1 || fail "the operator Deployment survived uninstall"
  ! k get clusterrole "$RELEASE" >/dev/null 2>&1 || fail "the ClusterRole survived uninstall"
  k get crd ftpservers.ftpoperator.dev >/dev/null || fail "uninstall deleted the CRD (and with it every FtpServer)"
  k -n "$APP_NS" get ftpserver contoso no-users >/dev/null || fail "uninstall deleted FtpServers"
  [[ $(k -n "$APP_NS" get pvc ftp-data -o jsonpath='{.metadata.uid}') == "$pvc_uid" ]] || fail "the PVC was replaced or deleted"
  [[ $(k -n "$APP_NS" get pvc ftp-data -o jsonpath='{.status.phase}') == Bound ]] || fail "the PVC is no longer Bound"
  [[ -z $(k -n "$APP_NS" get pvc ftp-data -o jsonpath='{.metadata.deletionTimestamp}') ]] || fail "the PVC is being deleted"
  [[ $(k -n "$APP_NS" get statefulset contoso -o jsonpath='{.metadata.uid}') == "$set_uid" ]] ||
    { who_deleted statefulsets contoso; fail "the FtpServer's StatefulSet went with the operator"; }
  # The hook Job ran (kwok completed its pod) and was deleted on success; its Events remain.
  k -n "$NS" get events --field-selector involvedObject.kind=Job,reason=Completed -o jsonpath='{.items[*].involvedObject.name}' |
    grep -qw "$RELEASE-node-tuner-uninstall" || fail "no completed pre-delete hook Job"
  ! k -n "$NS" get job "$RELEASE-node-tuner-uninstall" >/dev/null 2>&1 || fail "the hook Job was kept after succeeding"
  # The DaemonSet goes with the chart's ConfigMap (garbage collector), and no FtpServer is stuck.
  until_true 60 daemon_set_gone || fail "the node tuner DaemonSet survived uninstall"
  ! finalizers_left || fail "FtpServers still hold the node-keepalive finalizer"
  k -n "$APP_NS" delete ftpserver tuned --timeout=30s >/dev/null || fail "the tuned FtpServer cannot be deleted"
}
daemon_set_gone() { ! k -n "$NS" get daemonset ftp-operator-node-tuner; }

# With the chart's RBAC gone, the same impersonating kubeconfig is refused: the earlier passes
# really were authorised by the chart's RBAC, not by the admin credentials underneath.
t_impersonation_is_real() {
  ! k --kubeconfig "$SA_KUBECONFIG" get ftpservers -A >/dev/null 2>&1 || fail "the SA kubeconfig can still list FtpServers"
  k --kubeconfig "$SA_KUBECONFIG" auth whoami -o jsonpath='{.status.userInfo.username}' |
    grep -qx "system:serviceaccount:$NS:$SA" || fail "the SA kubeconfig does not act as the ServiceAccount"
}

# The chart at its previous version, from git history: the newest commit whose Chart.yaml names
# another version than the working tree's (the last state of that version).
previous_chart() { # DIR: prints the version
  local want rev v
  want=$(awk '/^version:/ {print $2}' "$CHART/Chart.yaml")
  for rev in $(git -C "$ROOT" log --format=%H -- charts/ftp-operator); do
    v=$(git -C "$ROOT" show "$rev:charts/ftp-operator/Chart.yaml" | awk '/^version:/ {print $2}')
    [[ -n $v && $v != "$want" ]] || continue
    rm -rf "$1"; mkdir -p "$1"
    git -C "$ROOT" archive "$rev" charts/ftp-operator | tar -x -C "$1" || return 1
    echo "$v"; return 0
  done
  echo "no earlier chart version than $want in git history (a shallow clone? git fetch --unshallow)" >&2
  return 1
}

# A user's upgrade: the previous chart version installed, then `helm upgrade --wait` to this one
# under Helm 4's kstatus waiter (--wait=watcher), which waits on every object the release holds.
t_upgrade_from_previous() {
  local prev_dir="$WORK/chart-previous" prev now
  prev=$(previous_chart "$prev_dir") || return 1
  now=$(awk '/^version:/ {print $2}' "$CHART/Chart.yaml")
  h install "$RELEASE" "$prev_dir/charts/ftp-operator" -n "$NS" --create-namespace --wait=watcher --timeout 3m >/dev/null ||
    { echo "installing chart $prev failed"; return 1; }
  [[ $(k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.metadata.labels.helm\.sh/chart}') == "ftp-operator-$prev" ]] ||
    { echo "the installed Deployment is not from chart $prev"; return 1; }
  h upgrade "$RELEASE" "$CHART" -n "$NS" --wait=watcher --timeout 3m --set grafanaDashboard.enabled=true >/dev/null ||
    { echo "helm upgrade --wait=watcher from $prev to $now failed"; return 1; }
  [[ $(h status "$RELEASE" -n "$NS" -o json | $PY3 -c 'import json,sys; s=json.load(sys.stdin); print(s["info"]["status"], s["version"])') == "deployed 2" ]] ||
    { echo "the release is not deployed at revision 2"; return 1; }
  [[ $(k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.metadata.labels.helm\.sh/chart}') == "ftp-operator-$now" ]] ||
    { echo "the Deployment is not from chart $now after the upgrade"; return 1; }
  k -n "$NS" get configmap "$RELEASE-dashboard" >/dev/null || { echo "the upgrade did not add the dashboard ConfigMap"; return 1; }
  k -n "$APP_NS" get ftpserver contoso no-users >/dev/null || { echo "FtpServers did not survive the upgrade"; return 1; }
  h uninstall "$RELEASE" -n "$NS" --wait --timeout 2m >/dev/null
}

# ------------------------------------------------------------------------------------ run

# watchNamespaces: Roles in the listed namespaces and nothing cluster-scoped (with crds.install=false
# not even the CRD); the controller told the list; node tuning refused beside it, saying why.
t_namespaced_template() {
  local out kinds rc=0
  out=$(h template "$RELEASE" "$CHART" -n "$NS" --set crds.install=false \
    --set 'watchNamespaces={team-a,team-b}') || return 1
  kinds=$("$PY3" -c '
import sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc:
        print(doc["kind"], doc["metadata"].get("namespace", "-"), doc["metadata"]["name"])
' <<<"$out") || return 1
  if grep -E '^(ClusterRole|ClusterRoleBinding|CustomResourceDefinition) | - ' <<<"$kinds"; then
    echo "the namespaced install renders cluster-scoped objects (above)"; rc=1
  fi
  for ns in team-a team-b; do
    grep -qx "Role $ns $RELEASE" <<<"$kinds" || { echo "no Role in $ns"; rc=1; }
    grep -qx "RoleBinding $ns $RELEASE" <<<"$kinds" || { echo "no RoleBinding in $ns"; rc=1; }
  done
  grep -qx "Role $NS $RELEASE-leader-election" <<<"$kinds" || { echo "no Lease Role in $NS"; rc=1; }
  grep -q -- '- --namespace=team-a,team-b' <<<"$out" || { echo "the controller is not told the namespaces"; rc=1; }
  grep -q -- '- --cluster-budgets=false' <<<"$out" || { echo "the budgets would list Services cluster-wide"; rc=1; }
  if grep -q 'resources: \["nodes"\]' <<<"$out"; then echo "the namespaced Roles grant Nodes"; rc=1; fi
  if out=$(h template "$RELEASE" "$CHART" -n "$NS" --set 'watchNamespaces={team-a}' \
    --set nodeTuning.enabled=true 2>&1); then
    echo "nodeTuning.enabled was accepted with watchNamespaces"; rc=1
  elif ! grep -q "nodeTuning.enabled cannot be combined with watchNamespaces" <<<"$out"; then
    echo "the refusal does not say why: $out"; rc=1
  fi
  return $rc
}

START=$SECONDS
check "chart CRD is a byte copy of crds/ftpserver.yaml" t_crd_copy
check "rendered CRD = crds/ftpserver.yaml + Helm metadata (resource-policy keep)" t_rendered_crd
check "helm lint --strict is clean (defaults and all features on)" t_lint
check "values.schema.json refuses bad values, naming them" t_schema_rejects
check "Argo CD Lua and kstatus agree with the fixtures" t_fixtures
check "helm template applies with server-side dry run" t_template_dry_run
check "namespaced install (watchNamespaces): Roles only, nothing cluster-scoped, no node tuning" t_namespaced_template
check "kubeconform -strict: every rendering, schemas from this API server and our CRD" t_kubeconform
check "kube-score: no warnings beyond the documented exceptions" t_kube_score
check "helm install refuses a bad value and records no release" t_schema_rejects_install
check "helm install --wait: CRD Established, RBAC, operator Deployment" t_install
check "the Artifact Hub FtpServer example is accepted by the API server" t_artifacthub_example
check "RBAC: the ServiceAccount may do what the operator needs, nothing more" t_rbac
check "RBAC: the node tuner may read FtpServers and annotate Nodes, nothing more" t_rbac_node_tuner
check "RBAC: the uninstall hook may stop this operator, annotate Nodes, release FtpServers" t_rbac_uninstall_hook
check "controller as the chart's ServiceAccount makes an FtpServer Ready" t_ftpserver_ready
check "a missing users Secret makes an FtpServer Stalled" t_stalled
check "node tuning: the DaemonSet is owned by the chart's ConfigMap" t_node_tuner_daemon_set
check "docs/argocd.md's patch command puts the health check into argocd-cm" t_argocd_cm_live
check "kstatus/Argo CD (Lua and Argo CD's code) on live objects: Current/Healthy, Failed/Degraded, InProgress/Progressing" t_health_live
check "docs/api.md covers every CRD field and CEL message" t_api_doc
check "docs/metrics.md names only metrics the controller exports" t_metrics_doc
check "Grafana dashboard: labelled ConfigMap; every metric it queries is exported" t_dashboard
check "helm upgrade: changed values and a changed CRD arrive" t_upgrade
check "the pre-delete hook's command releases every FtpServer and stops the operator" t_uninstall_hook
check "helm uninstall runs the hook, removes the DaemonSet, keeps the CRD, FtpServers and PVCs" t_uninstall_keeps_data
check "the impersonating kubeconfig is refused once the chart's RBAC is gone" t_impersonation_is_real
check "helm upgrade --wait=watcher from the previous chart version" t_upgrade_from_previous

log "finished in $((SECONDS - START))s; controller log: $WORK/controller.log"
summary
