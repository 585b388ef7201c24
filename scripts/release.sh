#!/usr/bin/env bash
# Builds a release and publishes it to an OCI registry:
#   - the release binaries (cargo auditable build --release: the crates they hold are recorded
#     in them), as a tarball with checksums;
#   - the container image (scripts/image.sh: FROM scratch, the OCI labels) as
#     <registry>/ftp-operator:<version>, and its SBOM (SPDX JSON, made by syft from the image:
#     the crates in the binaries, the files of the image),
#     attached to the image as an OCI referrer (oras attach; `oras discover` lists it);
#   - the Helm chart, packaged with that version and that image, as
#     oci://<registry>/charts/ftp-operator:<version> (helm push).
# The version is Cargo.toml's, the one source: the binaries, the image tag, the chart's
# version and appVersion all say it. Everything also lands in target/release/<version>/.
#
#   scripts/release.sh --registry HOST[:PORT][/NAMESPACE] [--version V] [--ca-file FILE]
#
#   --registry  where to push, e.g. ghcr.io/ftp-operator (image ghcr.io/ftp-operator/ftp-operator,
#               chart oci://ghcr.io/ftp-operator/charts/ftp-operator)
#   --version   the version you mean to release; refused unless Cargo.toml says the same (a
#               tag's version, say, checked against the source before anything is pushed)
#   --ca-file   the CA that signed the registry's certificate, if the system does not trust it
#
# Credentials: REGISTRY_USERNAME and REGISTRY_PASSWORD (a token), or else a docker config file:
# REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json (`docker login`,
# `buildah login`, `helm registry login` all write that format). Nothing is pushed without one.
#
# Environment (for tests): FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN put these binaries in the image
# instead of building release binaries (built with cargo-auditable, or the SBOM lists no crate).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
CHART_DIR=$ROOT/charts/ftp-operator
# The image tag scripts/image.sh gives its archive; the pushed name is the registry's.
LOCAL_IMAGE=ghcr.io/ftp-operator/ftp-operator:$CARGO_VERSION
ARCHIVE=$ROOT/target/image/ftp-operator-$CARGO_VERSION.oci.tar
SBOM_TYPE=application/spdx+json

die() { echo "release: error: $*" >&2; exit 2; }
log() { echo "release: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

registry="" version="" ca_file=${REGISTRY_CA_FILE:-}
while [[ $# -gt 0 ]]; do
  case $1 in
    --registry) [[ $# -ge 2 ]] || usage; registry=$2; shift 2 ;;
    --version) [[ $# -ge 2 ]] || usage; version=$2; shift 2 ;;
    --ca-file) [[ $# -ge 2 ]] || usage; ca_file=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "release: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ -n $registry ]] || die "--registry is required (e.g. --registry ghcr.io/<owner>)"
registry=${registry%/}
[[ $registry =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$ ]] ||
  die "--registry '$registry' is not HOST[:PORT][/NAMESPACE] (lower-case namespace, no scheme)"
host=${registry%%/*}
[[ -n $CARGO_VERSION ]] || die "no version in $ROOT/Cargo.toml"
version=${version#v}
[[ -z $version || $version == "$CARGO_VERSION" ]] ||
  die "--version $version, but Cargo.toml says $CARGO_VERSION: set the version in Cargo.toml (and commit it) first"
version=$CARGO_VERSION
[[ -z $ca_file || -s $ca_file ]] || die "--ca-file $ca_file: no such file"
IMAGE_REPO=$registry/ftp-operator
IMAGE=$IMAGE_REPO:$version
CHART_REPO=oci://$registry/charts
DIST=$ROOT/target/release/$version

work=$(mktemp -d -t ftp-operator-release.XXXXXX)
trap 'buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run" rmi -a -f >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# ------------------------------------------------------------------------ credentials
# One docker config file for all three clients (buildah --authfile, helm and oras
# --registry-config): from the environment, made here, or the user's own.
if [[ -n ${REGISTRY_USERNAME:-} || -n ${REGISTRY_PASSWORD:-} ]]; then
  [[ -n ${REGISTRY_USERNAME:-} && -n ${REGISTRY_PASSWORD:-} ]] ||
    die "set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither (and use a docker config file)"
  auth_file=$work/auth.json # in a directory only we can read (mktemp -d)
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$host" \
    "$(printf '%s:%s' "$REGISTRY_USERNAME" "$REGISTRY_PASSWORD" | base64 -w0)" >"$auth_file"
else
  auth_file=""
  for f in "${REGISTRY_AUTH_FILE:-}" "${DOCKER_CONFIG:+$DOCKER_CONFIG/config.json}" "$HOME/.docker/config.json"; do
    [[ -n $f && -s $f ]] && { auth_file=$f; break; }
  done
  [[ -n $auth_file ]] ||
    die "no credentials for $host: set REGISTRY_USERNAME and REGISTRY_PASSWORD, or REGISTRY_AUTH_FILE to a docker config file (docker login / buildah login --authfile FILE $host)"
  grep -qF "\"$host\"" "$auth_file" || grep -qE '"credsStore"|"credHelpers"' "$auth_file" ||
    die "$auth_file has no login for $host (docker login $host, or set REGISTRY_USERNAME and REGISTRY_PASSWORD)"
fi
tls_buildah=() tls_helm=() tls_oras=()
if [[ -n $ca_file ]]; then
  mkdir -p "$work/certs" && cp "$ca_file" "$work/certs/ca.crt" # buildah reads a directory of CAs
  tls_buildah=(--cert-dir "$work/certs") tls_helm=(--ca-file "$ca_file") tls_oras=(--ca-file "$ca_file")
fi

# ------------------------------------------------------------------------ build
command -v buildah >/dev/null || die "buildah is missing (apt-get install buildah; scripts/install-deps.sh does it)"
HELM=$("$ROOT/scripts/tools.sh" path helm) || die "building helm failed"
SYFT=$("$ROOT/scripts/tools.sh" path syft) || die "building syft failed"
ORAS=$("$ROOT/scripts/tools.sh" path oras) || die "building oras failed"
rm -rf "$DIST"; mkdir -p "$DIST"
if [[ -n ${FTPOP_OPERATOR_BIN:-} || -n ${FTPOP_SERVER_BIN:-} ]]; then
  operator=${FTPOP_OPERATOR_BIN:-} server=${FTPOP_SERVER_BIN:-}
else
  # cargo-auditable records the crates in each binary; syft reads them back for the SBOM.
  AUDITABLE=$("$ROOT/scripts/tools.sh" path cargo-auditable) || die "building cargo-auditable failed"
  log "cargo auditable build --release --locked --bins"
  (cd "$ROOT" && PATH="$(dirname "$AUDITABLE"):$PATH" cargo auditable build -q --release --locked --bins) ||
    die "cargo build failed"
  operator=${CARGO_TARGET_DIR:-$ROOT/target}/release/ftp-operator server=${CARGO_TARGET_DIR:-$ROOT/target}/release/ftp-server
fi
[[ -x $operator && -x $server ]] || die "set both FTPOP_OPERATOR_BIN and FTPOP_SERVER_BIN to executables"
got=$("$operator" --version) || die "$operator --version failed"
[[ $got == "ftp-operator $version" ]] || die "$operator says '$got', not ftp-operator $version: rebuild it"

arch=$(uname -m)
mkdir -p "$work/bin/ftp-operator-$version"
install -m 0755 -s "$operator" "$server" "$work/bin/ftp-operator-$version/"
tar -C "$work/bin" -czf "$DIST/ftp-operator-$version-linux-$arch.tar.gz" "ftp-operator-$version"

FTPOP_OPERATOR_BIN=$operator FTPOP_SERVER_BIN=$server "$ROOT/scripts/image.sh" || die "building the image failed"
[[ -s $ARCHIVE ]] || die "scripts/image.sh made no archive at $ARCHIVE"
cp "$ARCHIVE" "$DIST/"

log "SBOM of the image (syft)"
SYFT_CHECK_FOR_APP_UPDATE=false "$SYFT" scan "oci-archive:$ARCHIVE" --quiet \
  --source-name ftp-operator --source-version "$version" \
  -o "spdx-json=$DIST/ftp-operator-$version.spdx.json" || die "syft could not make the SBOM"

cp -r "$CHART_DIR" "$work/chart"
# The packaged chart installs the image this release pushed, wherever it was pushed: the first
# `  repository:` of values.yaml is image.repository.
sed -i "0,/^  repository: .*/s||  repository: $IMAGE_REPO|" "$work/chart/values.yaml"
grep -qx "  repository: $IMAGE_REPO" "$work/chart/values.yaml" ||
  die "$CHART_DIR/values.yaml has no '  repository:' line (image.repository) to point at $IMAGE_REPO"
"$HELM" package "$work/chart" --version "$version" --app-version "$version" -d "$DIST" >/dev/null ||
  die "helm package failed"
CHART_TGZ=$DIST/ftp-operator-$version.tgz
[[ -s $CHART_TGZ ]] || die "helm package made no $CHART_TGZ"
(cd "$DIST" && sha256sum -- *.tar.gz *.oci.tar *.spdx.json *.tgz >SHA256SUMS)

# ------------------------------------------------------------------------ push
bah() { buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run" "$@"; }
log "pushing $IMAGE"
bah pull -q "oci-archive:$ARCHIVE" >/dev/null || die "buildah could not read $ARCHIVE"
bah tag "$LOCAL_IMAGE" "$IMAGE" >/dev/null
bah push -q --authfile "$auth_file" "${tls_buildah[@]}" --digestfile "$work/digest" \
  "$IMAGE" "docker://$IMAGE" || die "pushing $IMAGE failed (credentials for $host? its certificate?)"
digest=$(cat "$work/digest")

log "attaching the SBOM to $IMAGE_REPO@$digest"
(cd "$DIST" && "$ORAS" attach --no-tty --registry-config "$auth_file" "${tls_oras[@]}" \
  --artifact-type "$SBOM_TYPE" "$IMAGE_REPO@$digest" "ftp-operator-$version.spdx.json:$SBOM_TYPE" >/dev/null) ||
  die "oras could not attach the SBOM to $IMAGE_REPO@$digest"

log "pushing the chart to $CHART_REPO"
"$HELM" push "$CHART_TGZ" "$CHART_REPO" --registry-config "$auth_file" "${tls_helm[@]}" >"$work/helm-push.log" 2>&1 ||
  { cat "$work/helm-push.log" >&2; die "helm push to $CHART_REPO failed"; }

chart_digest=$(sed -n 's/^Digest: //p' "$work/helm-push.log")
cat >"$DIST/published.env" <<EOF
VERSION=$version
IMAGE=$IMAGE
IMAGE_DIGEST=$digest
CHART=$CHART_REPO/ftp-operator
CHART_DIGEST=$chart_digest
EOF
log "released $version:"
log "  image  $IMAGE@$digest (SBOM attached: $SBOM_TYPE)"
log "  chart  helm install ftp-operator $CHART_REPO/ftp-operator --version $version"
log "  files  $DIST"
