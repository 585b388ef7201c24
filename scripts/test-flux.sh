#!/usr/bin/env bash
# GitOps with Flux's own controllers: source-controller and kustomize-controller (built from their
# Go modules, hack/flux) run against a local control plane of their own and sync the operator and
# an FtpServer from a Git repository served over HTTP on loopback by `git http-backend`
# (tests/flux/git_http.py). What they apply is docs/flux/, file for file:
#   - the repository holds docs/flux/infrastructure/ and docs/flux/ftp/, plus the rendered chart
#     made by the command in docs/flux/infrastructure/ftp-operator/kustomization.yaml;
#   - docs/flux/clusters/ftp.yaml (the two Kustomizations) is applied as `flux bootstrap` would
#     find it; the test writes only the `flux-system` GitRepository, which bootstrap creates.
# Prints "N passed, M failed" last and exits non-zero on any failure.
#
# As in scripts/test-helm.sh, the operator Deployment's pod lands on a kwok node, so the controller
# runs on the host, impersonating the ServiceAccount Flux applied: the chart's RBAC authorises it.
#
# Environment:
#   FTPOP_OPERATOR_BIN   ftp-operator binary (default: cargo build --bin ftp-operator)
#   FTPOP_KEEP_CLUSTER=1 leave the control plane up afterwards (the next run reuses it)
#   FTPOP_FLUX_PORT_BASE first port for the control plane (default 25600); Flux, the Git server
#                        and the controller take the ten ports from base+100
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART="$ROOT/charts/ftp-operator"
DOCS="$ROOT/docs/flux"
# Flux and kstatus are under test here, not pods: kwok nodes only, so this tier never holds the
# machine's one real node (scripts/test-node.sh has it), and no server runs to be asked which
# configuration it serves.
export FTPOP_REAL_NODE=0
export FTPOP_CLUSTER_DIR=${FTPOP_FLUX_CLUSTER_DIR:-$ROOT/target/flux-cluster}
export FTPOP_PORT_BASE=${FTPOP_FLUX_PORT_BASE:-25600}
WORK="$ROOT/target/flux-test"
P=$((FTPOP_PORT_BASE + 100))
STORAGE_PORT=$P METRICS_SC=$((P + 1)) HEALTH_SC=$((P + 2)) METRICS_KC=$((P + 3)) HEALTH_KC=$((P + 4))
GIT_PORT=$((P + 5)) OPERATOR_METRICS=$((P + 6))
OP_NS=ftp-operator-system SA=ftp-operator APP_NS=ftp FLUX_NS=flux-system

TIER=test-flux
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"

# ------------------------------------------------------------------------------------ setup

"$ROOT/scripts/install-deps.sh" || die "installing Debian packages failed"
command -v git >/dev/null || die "git is required (apt-get install git)"
HELM=$("$ROOT/scripts/tools.sh" path helm) || die "building helm failed"
SOURCE_CONTROLLER=$("$ROOT/scripts/tools.sh" path source-controller) || die "building source-controller failed"
KUSTOMIZE_CONTROLLER=$("$ROOT/scripts/tools.sh" path kustomize-controller) || die "building kustomize-controller failed"
FLUX_APICHECK=$("$ROOT/scripts/tools.sh" path flux-apicheck) || die "building tests/flux/apicheck failed"
"$ROOT/scripts/local-cluster.sh" build >/dev/null || die "building the control plane failed"
eval "$("$ROOT/scripts/local-cluster.sh" env 2>/dev/null)"
KUBECTL=$(command -v kubectl)
if [[ -n ${FTPOP_OPERATOR_BIN:-} ]]; then
  OPERATOR=$FTPOP_OPERATOR_BIN
else
  log "building ftp-operator (cargo build --bin ftp-operator)"
  (cd "$ROOT" && cargo build -q --bin ftp-operator) || die "cargo build failed"
  OPERATOR="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-operator"
fi
[[ -x $OPERATOR ]] || die "no ftp-operator binary at $OPERATOR"
# Flux's CRDs ship in the controllers' modules (config/crd/bases), at the pinned versions.
flux_crds() {
  local m dir
  for m in github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller; do
    dir=$(cd "$ROOT/hack/flux" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' "$m") || return 1
    ls "$dir"/config/crd/bases/*.yaml
  done
}
FLUX_CRDS=$(flux_crds) || die "Flux's CRDs not found in the Go module cache (hack/flux)"

k() { "$KUBECTL" "$@"; }
rm -rf "$WORK"; mkdir -p "$WORK/pids" "$WORK/logs" "$WORK/artifacts"

# Processes of this test, each recorded by PID (tests run in subshells).
start_bg() { # NAME CMD...
  local name=$1; shift
  stop_bg "$name"
  "$@" >>"$WORK/logs/$name.log" 2>&1 &
  echo $! >"$WORK/pids/$name"
}
stop_bg() {
  local pid
  pid=$(cat "$WORK/pids/$1" 2>/dev/null) || return 0
  rm -f "$WORK/pids/$1"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
}
logs_of() { echo "--- $1 log (last lines):"; tail -"${2:-15}" "$WORK/logs/$1.log" 2>/dev/null; }

STARTED_CLUSTER=0
cleanup() {
  local f
  for f in "$WORK"/pids/*; do [[ -e $f ]] && stop_bg "$(basename "$f")"; done
  if [[ $STARTED_CLUSTER -eq 1 && ${FTPOP_KEEP_CLUSTER:-0} != 1 ]]; then
    "$ROOT/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap "exit 130" INT TERM

if ! "$ROOT/scripts/local-cluster.sh" status >/dev/null 2>&1; then
  log "starting the local control plane in $FTPOP_CLUSTER_DIR"
  "$ROOT/scripts/local-cluster.sh" up >/dev/null || die "the local control plane did not come up"
  STARTED_CLUSTER=1
fi
# A reused cluster starts from nothing of ours. Nothing runs the finalizers of the last run's Flux
# objects and FtpServers any more, so drop them first, or their namespaces never go.
drop_finalizers() { # NAMESPACE RESOURCE
  local o
  for o in $(k -n "$1" get "$2" -o name 2>/dev/null); do
    k -n "$1" patch "$o" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
  done
}
drop_finalizers "$FLUX_NS" kustomizations.kustomize.toolkit.fluxcd.io
drop_finalizers "$FLUX_NS" gitrepositories.source.toolkit.fluxcd.io
drop_finalizers "$APP_NS" ftpservers.ftpoperator.dev
for ns in "$FLUX_NS" "$APP_NS" "$OP_NS"; do k delete namespace "$ns" --wait=true --timeout=90s >/dev/null 2>&1 || true; done
k delete crd ftpservers.ftpoperator.dev --wait=true --timeout=60s >/dev/null 2>&1 || true

# ------------------------------------------------------------------------------------ the Git repository

GIT_ROOT="$WORK/git" REPO="$WORK/git/fleet.git" CHECKOUT="$WORK/fleet"
git_c() { git -C "$CHECKOUT" -c user.name=ftp-operator-tests -c user.email=tests@ftp-operator.invalid "$@"; }
# The repository a user would have: docs/flux's tree, the rendered chart, committed to main.
make_repo() {
  mkdir -p "$GIT_ROOT"
  git init -q --bare --initial-branch=main "$REPO" || return 1
  git init -q --initial-branch=main "$CHECKOUT" || return 1
  cp -r "$DOCS/infrastructure" "$DOCS/ftp" "$CHECKOUT/"
  # The command docs/flux/infrastructure/ftp-operator/kustomization.yaml names.
  (cd "$ROOT" && "$HELM" template ftp-operator charts/ftp-operator --namespace ftp-operator-system) \
    >"$CHECKOUT/infrastructure/ftp-operator/ftp-operator.yaml" || return 1
  git_c add -A && git_c commit -qm "ftp-operator and an FtpServer" && git_c push -q "$REPO" main
}
commit_and_push() { # MESSAGE
  git_c commit -qam "$1" && git_c push -q "$REPO" main
}
head_commit() { git_c rev-parse HEAD; }

# ------------------------------------------------------------------------------------ Flux

flux_env=(env KUBECONFIG="$KUBECONFIG" RUNTIME_NAMESPACE="$FLUX_NS")
start_flux() {
  start_bg source-controller "${flux_env[@]}" "$SOURCE_CONTROLLER" \
    --storage-path="$WORK/artifacts" --storage-addr="127.0.0.1:$STORAGE_PORT" \
    --storage-adv-addr="127.0.0.1:$STORAGE_PORT" --metrics-addr="127.0.0.1:$METRICS_SC" \
    --health-addr="127.0.0.1:$HEALTH_SC" --enable-leader-election=false --log-level=info
  start_bg kustomize-controller "${flux_env[@]}" "$KUSTOMIZE_CONTROLLER" \
    --metrics-addr="127.0.0.1:$METRICS_KC" --health-addr="127.0.0.1:$HEALTH_KC" \
    --enable-leader-election=false --log-level=info --no-remote-bases=true
}
# `flux reconcile` does this: ask for a reconcile now instead of at the next interval.
request_reconcile() { # KIND NAME
  k -n "$FLUX_NS" annotate --overwrite "$1" "$2" "reconcile.fluxcd.io/requestedAt=$(date +%s%N)" >/dev/null
}
cond() { # KIND NAME TYPE FIELD
  k -n "$FLUX_NS" get "$1" "$2" -o jsonpath="{.status.conditions[?(@.type==\"$3\")].$4}" 2>/dev/null
}
ks_ready() { [[ $(cond kustomization "$1" Ready status) == True ]]; }
ks_failed_with() { # NAME TEXT: Ready=False and the message holds TEXT
  [[ $(cond kustomization "$1" Ready status) == False && $(cond kustomization "$1" Ready message) == *"$2"* ]]
}
# Ready for the commit now at the head of main.
ks_ready_at() { # NAME COMMIT
  ks_ready "$1" && [[ $(k -n "$FLUX_NS" get kustomization "$1" -o jsonpath='{.status.lastAppliedRevision}') == *"$2" ]]
}
flux_state() {
  k -n "$FLUX_NS" get gitrepositories,kustomizations 2>&1
  logs_of kustomize-controller 8
}

# ------------------------------------------------------------------------------------ the operator

SA_KUBECONFIG="$WORK/sa.kubeconfig"
write_sa_kubeconfig() {
  KUBECTL=$KUBECTL "$ROOT/scripts/impersonating-kubeconfig.sh" "system:serviceaccount:$OP_NS:$SA" "$SA_KUBECONFIG"
}
start_operator() {
  start_bg operator env KUBECONFIG="$SA_KUBECONFIG" RUST_LOG=info,kube=warn POD_NAMESPACE="$OP_NS" \
    "$OPERATOR" controller --metrics-listen "127.0.0.1:$OPERATOR_METRICS" \
    --leader-election-namespace "$OP_NS" --lease-name ftp-operator --identity flux-test \
    --verify-served-config=false --probe-interval-seconds=0
}
ftp_cond() { k -n "$APP_NS" get ftpserver contoso -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}" 2>/dev/null; }
# No cloud here: play its load-balancer controller and give the Service an address.
assign_lb_address() {
  until_true 60 k -n "$APP_NS" get service contoso || { logs_of operator; fail "the operator made no Service"; }
  k -n "$APP_NS" patch service contoso --subresource=status --type merge \
    -p '{"status":{"loadBalancer":{"ingress":[{"ip":"198.18.0.10"}]}}}' >/dev/null
}

# ------------------------------------------------------------------------------------ tests

t_git_server() {
  make_repo || return 1
  start_bg git-http python3 "$ROOT/tests/flux/git_http.py" "$GIT_ROOT" "$GIT_PORT"
  until_true 10 git ls-remote "http://127.0.0.1:$GIT_PORT/fleet.git" || { logs_of git-http; return 1; }
  [[ $(git ls-remote "http://127.0.0.1:$GIT_PORT/fleet.git" refs/heads/main | cut -f1) == "$(head_commit)" ]] ||
    fail "the server does not serve main at $(head_commit)"
  # Read-only: a push over HTTP is refused.
  ! git_c push -q "http://127.0.0.1:$GIT_PORT/fleet.git" main:refs/heads/pushed 2>/dev/null || fail "the server accepted a push"
}

t_flux_up() {
  k apply --server-side $(printf -- '-f %s ' $FLUX_CRDS) >/dev/null || return 1
  k wait --for=condition=Established crd/gitrepositories.source.toolkit.fluxcd.io \
    crd/kustomizations.kustomize.toolkit.fluxcd.io --timeout=60s >/dev/null || return 1
  k create namespace "$FLUX_NS" >/dev/null || return 1
  start_flux
  until_true 60 curl -fsS "http://127.0.0.1:$HEALTH_SC/readyz" || { logs_of source-controller; fail "source-controller is not ready"; }
  until_true 60 curl -fsS "http://127.0.0.1:$HEALTH_KC/readyz" || { logs_of kustomize-controller; fail "kustomize-controller is not ready"; }
}

# What `flux bootstrap` leaves behind, pointing at our repository; then docs/flux/clusters/.
t_source_and_kustomizations() {
  # The users Secret is not in Git: a secret manager makes it (docs/gitops.md); here, kubectl.
  k create namespace "$APP_NS" >/dev/null || return 1
  # An argon2id PHC string of random salt and digest: well-formed, and no password matches it.
  local phc
  phc=$(python3 -c 'import base64, os; b = lambda n: base64.b64encode(os.urandom(n)).decode().rstrip("=")
print(f"$argon2id$v=19$m=19456,t=2,p=1${b(16)}${b(32)}")') || return 1
  k -n "$APP_NS" create secret generic ftp-users --from-literal=users="alice:$phc:ro" >/dev/null || return 1
  k apply --server-side -f - >/dev/null <<EOF || return 1
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: $FLUX_NS}
spec:
  interval: 10m
  url: http://127.0.0.1:$GIT_PORT/fleet.git
  ref: {branch: main}
EOF
  k apply --server-side -f "$DOCS/clusters/ftp.yaml" >/dev/null || return 1
  until_true 90 eval '[[ $(k -n "$FLUX_NS" get gitrepository flux-system -o jsonpath="{.status.artifact.revision}") == "main@sha1:$(head_commit)" ]]' ||
    { flux_state; logs_of source-controller; fail "the GitRepository has no artifact of main@sha1:$(head_commit)"; }
}

t_operator_synced() {
  until_true 180 ks_ready ftp-operator || { flux_state; fail "Kustomization ftp-operator is not Ready"; }
  k wait --for=condition=Established crd/ftpservers.ftpoperator.dev --timeout=10s >/dev/null || return 1
  k -n "$OP_NS" get deployment/ftp-operator serviceaccount/"$SA" >/dev/null || return 1
  [[ $(k -n "$OP_NS" get deployment ftp-operator -o jsonpath='{.metadata.labels.kustomize\.toolkit\.fluxcd\.io/name}') == ftp-operator ]] ||
    fail "the operator Deployment was not applied by the ftp-operator Kustomization"
}

# Ready only once the FtpServer is: while nobody reconciles it, the Kustomization waits.
t_ready_follows_ftpserver() {
  until_true 120 k -n "$APP_NS" get ftpserver contoso || { flux_state; fail "Kustomization ftp-servers applied no FtpServer"; }
  # kstatus takes an object with no status at all for Current, so before any operator has seen the
  # FtpServer Flux may call it Ready; with the operator of the ftp-operator Kustomization running
  # (here started by hand: its Deployment's pod is a kwok one) the status says Ready=False at once.
  write_sa_kubeconfig || return 1
  start_operator
  until_true 60 eval '[[ $(ftp_cond Ready) == False ]]' || { logs_of operator; fail "the operator wrote no Ready=False status"; }
  request_reconcile kustomization ftp-servers
  sleep 15 # a few of kustomize-controller's health-check polls
  ! ks_ready ftp-servers || fail "ftp-servers is Ready although FtpServer contoso is not (no balancer address yet)"
  [[ $(cond kustomization ftp-servers Ready reason) == Progressing ]] ||
    { flux_state; fail "ftp-servers is not Progressing while it waits"; }
  assign_lb_address || return 1
  k -n "$APP_NS" wait --for=condition=Ready ftpserver/contoso --timeout=120s >/dev/null ||
    { k -n "$APP_NS" get ftpserver contoso -o yaml; logs_of operator; return 1; }
  until_true 300 ks_ready_at ftp-servers "$(head_commit)" || { flux_state; fail "ftp-servers did not become Ready after the FtpServer did"; }
  [[ $(cond kustomization ftp-servers Ready message) == *"Applied revision: main@sha1:$(head_commit)"* ]] ||
    fail "Ready message: $(cond kustomization ftp-servers Ready message)"
}

# A commit that makes the FtpServer Stalled fails the Kustomization; reverting it heals.
t_stalled_reported() {
  sed -i 's/secretRef: {name: ftp-users}/secretRef: {name: ftp-users-typo}/' "$CHECKOUT/ftp/ftpserver.yaml"
  commit_and_push "contoso: a users Secret that does not exist" || return 1
  request_reconcile gitrepository flux-system
  until_true 60 eval '[[ $(k -n "$FLUX_NS" get gitrepository flux-system -o jsonpath="{.status.artifact.revision}") == *"$(head_commit)" ]]' ||
    { flux_state; fail "the new commit never reached the GitRepository"; }
  request_reconcile kustomization ftp-servers
  until_true 180 ks_failed_with ftp-servers "FtpServer/ftp/contoso status: 'Failed'" ||
    { flux_state; k -n "$APP_NS" get ftpserver contoso -o yaml | tail -30; fail "ftp-servers does not report the Stalled FtpServer"; }
  [[ $(ftp_cond Stalled) == True ]] || fail "FtpServer contoso is not Stalled"
  [[ $(cond kustomization ftp-servers Ready reason) == HealthCheckFailed ]] ||
    fail "reason $(cond kustomization ftp-servers Ready reason), want HealthCheckFailed"
  k -n "$APP_NS" get ftpserver contoso -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}' | has ftp-users-typo ||
    fail "the FtpServer's Stalled message does not name the missing Secret"
  git_c revert --no-edit HEAD >/dev/null && git_c push -q "$REPO" main || return 1
  request_reconcile gitrepository flux-system
  until_true 60 eval '[[ $(k -n "$FLUX_NS" get gitrepository flux-system -o jsonpath="{.status.artifact.revision}") == *"$(head_commit)" ]]' || return 1
  request_reconcile kustomization ftp-servers
  until_true 240 ks_ready_at ftp-servers "$(head_commit)" || { flux_state; fail "ftp-servers did not heal after the revert"; }
  [[ $(ftp_cond Ready) == True ]] || fail "FtpServer contoso is not Ready after the revert"
}

# A hand edit of a field Git sets is put back on the next reconcile.
t_drift_reverted() {
  k -n "$APP_NS" patch ftpserver contoso --type merge -p '{"spec":{"passivePorts":{"min":20000,"max":20004}}}' >/dev/null || return 1
  [[ $(k -n "$APP_NS" get ftpserver contoso -o jsonpath='{.spec.passivePorts.max}') == 20004 ]] || fail "the hand edit did not land"
  k -n "$OP_NS" delete serviceaccount "$SA" >/dev/null || return 1
  request_reconcile kustomization ftp-servers
  request_reconcile kustomization ftp-operator
  until_true 120 eval '[[ $(k -n "$APP_NS" get ftpserver contoso -o jsonpath="{.spec.passivePorts.max}") == 20009 ]]' ||
    { flux_state; fail "the hand edit of spec.passivePorts.max was not reverted"; }
  until_true 120 k -n "$OP_NS" get serviceaccount "$SA" || { flux_state; fail "the deleted ServiceAccount was not recreated"; }
  until_true 240 ks_ready ftp-servers || { flux_state; fail "ftp-servers is not Ready after the drift was corrected"; }
  until_true 240 ks_ready ftp-operator || { flux_state; fail "ftp-operator is not Ready after the drift was corrected"; }
  k -n "$APP_NS" wait --for=condition=Ready ftpserver/contoso --timeout=120s >/dev/null || { logs_of operator; return 1; }
}

# A user added by one commit and removed by another: the FtpUser is in Git, its password Secret
# is made beside it as a secret manager would (Secrets stay out of Git).
generated_users() { k -n "$APP_NS" get secret contoso-generated-users -o jsonpath='{.data.users}' 2>/dev/null | base64 -d; }
user_accepted() { [[ $(k -n "$APP_NS" get ftpuser partner -o jsonpath='{.status.conditions[?(@.type=="Accepted")].status}' 2>/dev/null) == True ]]; }
sync_head() {
  request_reconcile gitrepository flux-system
  until_true 60 eval '[[ $(k -n "$FLUX_NS" get gitrepository flux-system -o jsonpath="{.status.artifact.revision}") == *"$(head_commit)" ]]' ||
    { flux_state; fail "the new commit never reached the GitRepository"; }
  request_reconcile kustomization ftp-servers
}
t_user_by_commit() {
  k -n "$APP_NS" create secret generic partner-password --type=kubernetes.io/basic-auth \
    --from-literal=username=partner --from-literal=password=partner-pw-1 >/dev/null || return 1
  cat >"$CHECKOUT/ftp/ftpuser-partner.yaml" <<EOF
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpUser
metadata: {name: partner, namespace: $APP_NS}
spec:
  serverRef: {name: contoso}
  passwordSecretRef: {name: partner-password}
  home: partners/partner
  access: ro
EOF
  git_c add ftp/ftpuser-partner.yaml && commit_and_push "contoso: the partner's login" || return 1
  sync_head || return 1
  until_true 120 user_accepted || { flux_state; k -n "$APP_NS" get ftpuser partner -o yaml; fail "FtpUser partner from Git is not Accepted"; }
  until_true 60 eval 'generated_users | has "^partner:"' || { generated_users; fail "the server's users file has no partner"; }
  ! generated_users | has "partner-pw-1" || fail "the clear password reached the generated users file"
  until_true 240 ks_ready_at ftp-servers "$(head_commit)" || { flux_state; fail "ftp-servers is not Ready with the FtpUser"; }
  echo "added by commit $(head_commit | cut -c1-7): partner's line in contoso-generated-users"
  git_c rm -q ftp/ftpuser-partner.yaml && commit_and_push "contoso: the partner leaves" || return 1
  sync_head || return 1
  until_true 120 eval '! k -n "$APP_NS" get ftpuser partner >/dev/null 2>&1' || { flux_state; fail "Flux did not prune FtpUser partner"; }
  until_true 60 eval '! generated_users | has "^partner:"' || { generated_users; fail "partner is still in the server's users file"; }
  generated_users | has "^alice:" || fail "alice (the users Secret's line) went with partner"
  until_true 240 ks_ready_at ftp-servers "$(head_commit)" || { flux_state; fail "ftp-servers is not Ready after the removal"; }
  echo "removed by commit $(head_commit | cut -c1-7): no partner line; alice's stays"
}

# helm-controller is not built (its module is not available), so the HelmRelease path is checked
# against helm-controller's own API types, strictly: an unknown field or a wrong type fails.
t_helmrelease_types() {
  "$FLUX_APICHECK" "$DOCS/helmrelease.yaml" || return 1
  sed 's/^  releaseName:/  releaseNme:/' "$DOCS/helmrelease.yaml" >"$WORK/bad-helmrelease.yaml"
  ! "$FLUX_APICHECK" "$WORK/bad-helmrelease.yaml" >/dev/null || fail "a misspelt HelmRelease field was accepted"
  sed 's/^  interval: 30m/  interval: [30m]/' "$DOCS/helmrelease.yaml" >"$WORK/bad-helmrelease.yaml"
  ! "$FLUX_APICHECK" "$WORK/bad-helmrelease.yaml" >/dev/null || fail "a HelmRelease interval of the wrong type was accepted"
}

# ------------------------------------------------------------------------------------ run

START=$SECONDS
check "docs/flux/helmrelease.yaml decodes strictly into helm-controller's API types" t_helmrelease_types
check "git http-backend serves the repository on loopback, read-only" t_git_server
check "Flux source-controller and kustomize-controller start on the control plane" t_flux_up
check "GitRepository fetches main; docs/flux/clusters/ftp.yaml applies" t_source_and_kustomizations
check "Kustomization ftp-operator (wait): CRD Established, operator Deployment available" t_operator_synced
check "Kustomization ftp-servers is Ready only once the FtpServer is Ready" t_ready_follows_ftpserver
check "a commit that stalls the FtpServer fails the Kustomization; a revert heals it" t_stalled_reported
check "hand edits are reverted: an FtpServer field, a deleted ServiceAccount" t_drift_reverted
check "an FtpUser added by a commit reaches the server's users file; another commit removes it" t_user_by_commit

log "finished in $((SECONDS - START))s; logs in $WORK/logs"
summary
