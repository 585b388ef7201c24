#!/usr/bin/env bash
# The release, end to end: scripts/release.sh publishes a release to a private registry on
# loopback (scripts/registry.sh: distribution's registry, TLS with a CA made here, a login
# required), then the local cluster's real node installs it from there with
# `helm install oci://…`: containerd pulls the operator's image, and an FtpServer's, with image
# pull secrets (the registry's name is not one the node imported). Every check fails on a
# broken release; none skips. Last line: "N passed, M failed".
#
#   scripts/test-release.sh
#
# Environment: FTPOP_KEEP_CLUSTER=1 leaves the cluster and the registry up;
# FTPOP_AUDITABLE_BIN_DIR: a directory holding ftp-operator and ftp-server built with
# `cargo auditable build` (default: built here). Needs root (the real node).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
WORK=$ROOT/target/release-test
export FTPOP_REGISTRY_DIR=$WORK/registry
export FTPOP_CLUSTER_DIR=$ROOT/target/release-cluster
export FTPOP_REAL_NODE=1
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
NS=ftp-operator
APP=release
SERVER=files
# The address a cloud's balancer would hand out (written into the Service's status below).
VIP=198.18.0.20
PULL_SECRET=registry-login

TIER=test-release CHECK_DETAILS=1
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"

cluster_started=0
cleanup() {
  [[ ${FTPOP_KEEP_CLUSTER:-0} == 1 ]] && return 0
  [[ $cluster_started == 1 ]] && scripts/local-cluster.sh down >/dev/null 2>&1
  scripts/registry.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ------------------------------------------------------------------------------------ setup

[[ $(id -u) -eq 0 ]] || die "needs root: the real node (containerd, kubelet, kube-proxy) pulls the release"
scripts/install-deps.sh || die "installing Debian packages failed"
rm -rf "$WORK"; mkdir -p "$WORK"
# Debug binaries (the test is about publishing and pulling, not the optimiser), with the crates
# they hold recorded in them as in a release, so the SBOM can list them.
if [[ -n ${FTPOP_AUDITABLE_BIN_DIR:-} ]]; then
  OPERATOR=$FTPOP_AUDITABLE_BIN_DIR/ftp-operator SERVER_BIN=$FTPOP_AUDITABLE_BIN_DIR/ftp-server
  [[ -x $OPERATOR && -x $SERVER_BIN ]] || die "no ftp-operator and ftp-server in FTPOP_AUDITABLE_BIN_DIR=$FTPOP_AUDITABLE_BIN_DIR"
else
  AUDITABLE=$(scripts/tools.sh path cargo-auditable) || die "building cargo-auditable failed"
  PATH="$(dirname "$AUDITABLE"):$PATH" cargo auditable build -q --locked --bins || die "cargo auditable build failed"
  OPERATOR=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-operator SERVER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ftp-server
fi
HELM=$(scripts/tools.sh path helm) || die "building helm failed"
ORAS=$(scripts/tools.sh path oras) || die "building oras failed"
scripts/registry.sh down >/dev/null 2>&1 || true
scripts/registry.sh up >/dev/null || die "the registry did not come up"
eval "$(scripts/registry.sh env)"

# The login the way a user makes one: `helm registry login` writes a docker config file, which
# oras reads too.
AUTH=$WORK/auth.json
login() {
  rm -f "$AUTH"
  echo "$REGISTRY_PASSWORD" | "$HELM" registry login "$REGISTRY" --registry-config "$AUTH" \
    --ca-file "$REGISTRY_CA_FILE" --username "$REGISTRY_USERNAME" --password-stdin >/dev/null 2>&1 ||
    die "helm registry login to $REGISTRY failed"
}

v2() { # <path> [curl args]: the registry's API with the login
  curl -fsS --cacert "$REGISTRY_CA_FILE" -u "$REGISTRY_USERNAME:$REGISTRY_PASSWORD" "https://$REGISTRY/v2/$1" "${@:2}"
}
release() { # [args]: scripts/release.sh with the binaries under test
  FTPOP_OPERATOR_BIN=$OPERATOR FTPOP_SERVER_BIN=$SERVER_BIN scripts/release.sh "$@"
}

# ------------------------------------------------------------------------ the release, no cluster

# up; down; up: `down` stops the registry and leaves nothing of it, and it comes up again.
t_registry_down_up() {
  local port=${REGISTRY##*:}
  scripts/registry.sh down >/dev/null 2>&1 || fail "registry.sh down failed"
  [[ ! -e $FTPOP_REGISTRY_DIR ]] || fail "down left $FTPOP_REGISTRY_DIR"
  [[ -z $(ss -Hltn "sport = :$port") ]] || fail "down left port $port listening"
  pgrep -f -- "$FTPOP_REGISTRY_DIR/config.yml" && fail "down left the registry process running"
  scripts/registry.sh up >/dev/null || fail "up after down failed"
}

t_registry_wants_login() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$REGISTRY_CA_FILE" "https://$REGISTRY/v2/")
  [[ $code == 401 ]] || fail "GET /v2/ without a login: HTTP $code, want 401"
  v2 "" -o /dev/null || fail "GET /v2/ with the login failed"
}
t_release_refuses_other_version() {
  local out
  if out=$(release --registry "$DEST" --version 99.0.0 2>&1); then fail "release.sh accepted --version 99.0.0: $out"; fi
  grep -q "Cargo.toml says $VERSION" <<<"$out" || fail "the refusal does not name Cargo.toml's version: $out"
}
t_release_needs_credentials() {
  local out
  mkdir -p "$WORK/no-home"
  if out=$(env -u REGISTRY_USERNAME -u REGISTRY_PASSWORD -u REGISTRY_AUTH_FILE -u DOCKER_CONFIG \
    HOME="$WORK/no-home" scripts/release.sh --registry "$DEST" 2>&1); then
    fail "release.sh ran without credentials: $out"
  fi
  grep -q "no credentials for $REGISTRY" <<<"$out" || fail "the refusal does not say what is missing: $out"
}
t_release() {
  release --registry "$DEST" --version "v$VERSION" --ca-file "$REGISTRY_CA_FILE" 2>&1 | tail -5
  [[ ${PIPESTATUS[0]} -eq 0 ]] || return 1
  grep -qx 'IMAGE_DIGEST=sha256:[0-9a-f]\{64\}' "$ROOT/target/release/$VERSION/published.env" ||
    fail "the release recorded no image digest in target/release/$VERSION/published.env"
}
manifest_accept=(-H "Accept: application/vnd.oci.image.manifest.v1+json")
t_image_labels() {
  local config labels revision
  config=$(v2 "team/ftp-operator/manifests/$VERSION" "${manifest_accept[@]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["digest"])') ||
    fail "no OCI manifest for $IMAGE"
  labels=$(v2 "team/ftp-operator/blobs/$config" | python3 -c '
import json, sys
for k, v in sorted(json.load(sys.stdin)["config"]["Labels"].items()):
    print(f"{k}={v}")')
  echo "$labels"
  revision=$(git rev-parse HEAD)
  grep -qx "org.opencontainers.image.version=$VERSION" <<<"$labels" || fail "version label is not $VERSION"
  grep -qE "^org.opencontainers.image.revision=$revision(-dirty)?$" <<<"$labels" || fail "revision label is not $revision"
  grep -qE '^org.opencontainers.image.created=[0-9]{4}-[0-9]{2}-[0-9]{2}T' <<<"$labels" || fail "no created label"
  grep -qx 'org.opencontainers.image.licenses=Apache-2.0' <<<"$labels" || fail "no licenses label"
  grep -q '^org.opencontainers.image.source=https://' <<<"$labels" || fail "no source label"
}
t_sbom_attached() {
  local referrers sbom
  referrers=$("$ORAS" discover --registry-config "$AUTH" --ca-file "$REGISTRY_CA_FILE" \
    --artifact-type application/spdx+json --format json "$IMAGE") || fail "oras discover failed"
  sbom=$(python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["referrers"][0]["digest"])' <<<"$referrers") ||
    fail "no SPDX SBOM refers to $IMAGE: $referrers"
  rm -rf "$WORK/sbom"
  "$ORAS" pull --registry-config "$AUTH" --ca-file "$REGISTRY_CA_FILE" -o "$WORK/sbom" "$DEST/ftp-operator@$sbom" >/dev/null ||
    fail "oras pull of the SBOM failed"
  python3 - "$WORK/sbom/ftp-operator-$VERSION.spdx.json" "$VERSION" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["spdxVersion"].startswith("SPDX-"), doc.get("spdxVersion")
names = {p["name"]: p.get("versionInfo") for p in doc["packages"]}
assert names.get("ftp-operator") == sys.argv[2], f"the SBOM describes {names.get('ftp-operator')!r}, not ftp-operator {sys.argv[2]}"
# The crates the binaries are built from, at the versions Cargo.lock pins.
lock = {}
for block in open("Cargo.lock").read().split("[[package]]")[1:]:
    fields = dict(line.split(" = ", 1) for line in block.strip().splitlines() if " = " in line)
    lock.setdefault(fields["name"].strip('"'), set()).add(fields["version"].strip('"'))
for crate in ("tokio", "kube-runtime", "rustls", "argon2"):
    assert crate in names, f"the SBOM lists no crate {crate}"
    assert names[crate] in lock[crate], f"the SBOM says {crate} {names[crate]}, Cargo.lock {lock[crate]}"
print(f"{doc['spdxVersion']}, {len(doc['packages'])} packages, {len(doc.get('files', []))} files; "
      + ", ".join(f"{c} {names[c]}" for c in ("tokio", "kube-runtime", "rustls", "argon2")))
EOF
}
t_chart_wants_login() {
  local out
  if out=$("$HELM" show chart "$CHART" --version "$VERSION" --registry-config "$WORK/empty.json" \
    --ca-file "$REGISTRY_CA_FILE" 2>&1); then
    fail "the chart was served without a login: $out"
  fi
  grep -qiE 'unauthorized|401|basic credential' <<<"$out" || fail "helm failed, but not for want of a login: $out"
}
t_chart_published() {
  local chart values
  chart=$("$HELM" show chart "$CHART" --version "$VERSION" --registry-config "$AUTH" --ca-file "$REGISTRY_CA_FILE") ||
    fail "helm show chart $CHART failed"
  grep -qx "version: $VERSION" <<<"$chart" && grep -qx "appVersion: $VERSION" <<<"$chart" ||
    fail "the chart is not version/appVersion $VERSION: $chart"
  values=$("$HELM" show values "$CHART" --version "$VERSION" --registry-config "$AUTH" --ca-file "$REGISTRY_CA_FILE")
  grep -qx "  repository: $DEST/ftp-operator" <<<"$values" || fail "the chart's image.repository is not $DEST/ftp-operator"
}

check "registry.sh: up, down (nothing left), up again" t_registry_down_up
eval "$(scripts/registry.sh env)" # a new password
login
# A namespace in the registry, as on ghcr.io/<owner>.
DEST=$REGISTRY/team
IMAGE=$DEST/ftp-operator:$VERSION
CHART=oci://$DEST/charts/ftp-operator
check "the registry refuses a client without a login" t_registry_wants_login
check "release.sh refuses a --version other than Cargo.toml's" t_release_refuses_other_version
check "release.sh without credentials fails and says so" t_release_needs_credentials
check "release.sh publishes $VERSION to $DEST" t_release
# The digest the release pushed, which the node must end up running (checks run in subshells).
IMAGE_DIGEST=$(sed -n 's/^IMAGE_DIGEST=//p' "$ROOT/target/release/$VERSION/published.env" 2>/dev/null)
check "the image in the registry carries the OCI labels of this commit" t_image_labels
check "an SPDX SBOM of the image, listing its crates, is attached to it (oras discover)" t_sbom_attached
check "the chart in the registry refuses helm without a login" t_chart_wants_login
check "the chart in the registry is $VERSION and installs the pushed image" t_chart_published

# ------------------------------------------------------------------------ from the registry to the node

k() { kubectl "$@"; }
cluster_up() {
  scripts/local-cluster.sh build >/dev/null || die "building the cluster failed"
  scripts/local-cluster.sh down >/dev/null 2>&1 || true
  cluster_started=1
  scripts/local-cluster.sh up || die "the local cluster with its real node did not come up"
  scripts/local-cluster.sh trust-registry "$REGISTRY" "$REGISTRY_CA_FILE" || die "the node does not trust the registry"
  eval "$(scripts/local-cluster.sh env)"
  local ns
  for ns in "$NS" "$APP"; do
    k create namespace "$ns" >/dev/null
    # Pods are refused until the controller-manager has made the namespace's default account.
    until_true 30 k -n "$ns" get serviceaccount default || die "no default ServiceAccount in $ns"
    k -n "$ns" create secret docker-registry "$PULL_SECRET" --docker-server="$REGISTRY" \
      --docker-username="$REGISTRY_USERNAME" --docker-password="$REGISTRY_PASSWORD" >/dev/null
  done
}
cluster_up

t_no_secret_no_pull() {
  k -n "$APP" run no-login --image="$IMAGE" --restart=Never --command -- ftp-operator --version >/dev/null
  until_true 60 bash -c "[[ \$(kubectl -n $APP get pod no-login -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}') =~ ErrImagePull|ImagePullBackOff ]]" ||
    fail "a pod without the pull secret is $(k -n "$APP" get pod no-login -o jsonpath='{.status.phase} {.status.containerStatuses[0].state}')"
  local events
  events=$(k -n "$APP" get events --field-selector involvedObject.name=no-login -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')
  grep -iE 'unauthorized|401|authoriz|credentials' <<<"$events" || fail "the pull failed, but not for want of a login: $events"
  k -n "$APP" delete pod no-login --wait=false >/dev/null
}
t_helm_install_oci() {
  local start=$SECONDS pod image_id
  "$HELM" install ftp-operator "$CHART" --version "$VERSION" --registry-config "$AUTH" \
    --ca-file "$REGISTRY_CA_FILE" --namespace "$NS" --set "imagePullSecrets[0].name=$PULL_SECRET" \
    --wait --timeout 180s >/dev/null || fail "helm install $CHART failed: $(k -n "$NS" get pods -o wide 2>&1)"
  echo "installed and Ready $((SECONDS - start)) s after helm install"
  pod=$(k -n "$NS" get pods -l app.kubernetes.io/name=ftp-operator -o jsonpath='{.items[0].metadata.name}')
  image_id=$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].imageID}')
  echo "operator pod $pod runs $image_id"
  [[ $image_id == "$DEST/ftp-operator@$IMAGE_DIGEST" ]] || fail "the operator runs $image_id, not $DEST/ftp-operator@$IMAGE_DIGEST"
  k -n "$NS" get events --field-selector "involvedObject.name=$pod,reason=Pulled" -o jsonpath='{.items[*].message}' |
    grep -q "Successfully pulled image \"$IMAGE\"" || fail "no 'Successfully pulled image' event for the operator pod"
}
ftpserver_ready() {
  [[ $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.publicAddress} {.status.conditions[?(@.type=="Ready")].status}') == "$VIP True" ]]
}
t_ftpserver_pulls() {
  local users start=$SECONDS pod image_id
  users="demo:$(printf '%s' "$(openssl rand -hex 12)" | "$SERVER_BIN" hash-password):ro"
  k -n "$APP" create secret generic ftp-users --from-literal=users="$users" >/dev/null
  k apply --server-side -f - >/dev/null <<EOF || fail "the FtpServer was refused"
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: $SERVER, namespace: $APP}
spec:
  passivePorts: {min: 20000, max: 20001}
  loadBalancer: {provider: generic}
  storage: {emptyDir: {}}
  users: {secretRef: {name: ftp-users}}
  imagePullSecrets: [{name: $PULL_SECRET}]
  # The operator's pod has put the image on the node: Always makes the kubelet pull again, with
  # this server's pull secret.
  imagePullPolicy: Always
EOF
  until_true 60 k -n "$APP" get service "$SERVER" || fail "the operator made no Service"
  k -n "$APP" patch service "$SERVER" --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$VIP\"}]}}}" >/dev/null
  until_true 180 ftpserver_ready || fail "not Ready: $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.conditions}') $(k -n "$APP" get pods -o wide)"
  echo "Ready $((SECONDS - start)) s after the apply"
  pod=$(k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o jsonpath='{.items[0].metadata.name}')
  image_id=$(k -n "$APP" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].imageID}')
  echo "server pod $pod runs $image_id"
  [[ $image_id == "$DEST/ftp-operator@$IMAGE_DIGEST" ]] || fail "the server runs $image_id, not $DEST/ftp-operator@$IMAGE_DIGEST"
  k -n "$APP" get events --field-selector "involvedObject.name=$pod,reason=Pulled" -o jsonpath='{.items[*].message}' |
    grep -q "Successfully pulled image \"$IMAGE\"" || fail "no 'Successfully pulled image' event for the server pod"
}

check "without a pull secret the node cannot pull the image (the registry wants a login)" t_no_secret_no_pull
check "helm install oci://…: the node pulls the operator's image with the pull secret; Ready" t_helm_install_oci
check "an FtpServer with spec.imagePullSecrets: its image pulled, Ready" t_ftpserver_pulls

# The node's registry settings live in its root, which `down` removes.
t_down_forgets_registry() {
  local hosts=/var/lib/ftp-operator/node/registry-hosts
  [[ -f $hosts/$REGISTRY/hosts.toml ]] || fail "trust-registry wrote no $hosts/$REGISTRY/hosts.toml"
  scripts/local-cluster.sh down >/dev/null || fail "local-cluster.sh down failed"
  [[ ! -e $hosts ]] || fail "down left $hosts"
}
[[ ${FTPOP_KEEP_CLUSTER:-0} == 1 ]] || check "local-cluster.sh down removes the node's registry settings" t_down_forgets_registry

summary
