#!/usr/bin/env bash
# Builds the container image without pulling anything: buildah (Debian's package) assembles it
# FROM scratch out of the binaries built here and the shared libraries they link (what
# distroless/cc holds: glibc, libgcc), a passwd entry for the non-root user and the CA bundle.
# The Dockerfile builds the same layout where base images can be pulled.
#
#   scripts/image.sh           # build; writes target/image/ftp-operator-<version>.oci.tar
#   scripts/image.sh --test    # build, then run both binaries inside it as the non-root user;
#                              # prints "N passed, M failed"
#
# Environment:
#   FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN  use these binaries (default: cargo build --release --bins)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
IMAGE=ghcr.io/ftp-operator/ftp-operator:$VERSION
OUT="$ROOT/target/image"
ARCHIVE="$OUT/ftp-operator-$VERSION.oci.tar"
UID_NONROOT=65532

die() { echo "image: error: $*" >&2; exit 2; }
log() { echo "image: $*" >&2; }

command -v buildah >/dev/null || die "buildah is required (apt-get install buildah; scripts/install-deps.sh does it)"
command -v strip >/dev/null || die "strip is required (apt-get install binutils; scripts/install-deps.sh does it)"
# Self-contained storage under target/: no daemon, no global image store, vfs works anywhere.
bah() { buildah --storage-driver vfs --root "$OUT/storage" --runroot "$OUT/run" "$@"; }

if [[ -n ${FTPOP_OPERATOR_BIN:-} || -n ${FTPOP_SERVER_BIN:-} ]]; then
  [[ -x ${FTPOP_OPERATOR_BIN:-} && -x ${FTPOP_SERVER_BIN:-} ]] ||
    die "set both FTPOP_OPERATOR_BIN and FTPOP_SERVER_BIN to executables"
  operator=$FTPOP_OPERATOR_BIN server=$FTPOP_SERVER_BIN
else
  log "cargo build --release --bins"
  (cd "$ROOT" && cargo build -q --release --locked --bins) || die "cargo build failed"
  operator="${CARGO_TARGET_DIR:-$ROOT/target}/release/ftp-operator" server="${CARGO_TARGET_DIR:-$ROOT/target}/release/ftp-server"
fi

mkdir -p "$OUT"
rootfs=$(mktemp -d "$OUT/rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
# Stripped: a debug build's symbols are nine tenths of its size (290 MB -> 30 MB), and an image
# needs none of them.
install -D -m 0755 -s "$operator" "$rootfs/usr/local/bin/ftp-operator"
install -D -m 0755 -s "$server" "$rootfs/usr/local/bin/ftp-server"
# The libraries both binaries load, at the paths the dynamic loader looks for them.
for lib in $(ldd "$operator" "$server" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" 2>/dev/null ||
  die "no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates)"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n' \
  $UID_NONROOT $UID_NONROOT >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:%d:\n' $UID_NONROOT >"$rootfs/etc/group"
install -d -m 0755 -o $UID_NONROOT -g $UID_NONROOT "$rootfs/home/nonroot"

# The commit the image is built from ("-dirty" when the work tree differs from it), and when.
# SOURCE_DATE_EPOCH, where set, makes `created` reproducible.
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null) || die "cannot read the git revision of $ROOT (the image's org.opencontainers.image.revision)"
[[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || REVISION+=-dirty
CREATED=$(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +%Y-%m-%dT%H:%M:%SZ)

bah rmi -f "$IMAGE" >/dev/null 2>&1 || true
ctr=$(bah from --name "ftp-operator-build-$$" scratch)
bah copy "$ctr" "$rootfs/" / >/dev/null
bah config --user "$UID_NONROOT:$UID_NONROOT" --workingdir /home/nonroot \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --cmd '["ftp-operator", "controller"]' \
  --label org.opencontainers.image.title=ftp-operator \
  --label org.opencontainers.image.description="Kubernetes operator for FTP servers behind cloud load balancers, and its FTP server" \
  --label org.opencontainers.image.source=https://github.com/ftp-operator/ftp-operator \
  --label org.opencontainers.image.url=https://github.com/ftp-operator/ftp-operator \
  --label org.opencontainers.image.documentation=https://github.com/ftp-operator/ftp-operator/tree/main/docs \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.revision="$REVISION" \
  --label org.opencontainers.image.created="$CREATED" \
  --label org.opencontainers.image.version="$VERSION" "$ctr"
bah commit --rm -q "$ctr" "$IMAGE" >/dev/null
rm -f "$ARCHIVE"
bah push -q "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE" >/dev/null
log "built $IMAGE ($(du -h "$ARCHIVE" | cut -f1)) -> $ARCHIVE"

[[ ${1:-} == --test ]] || exit 0

# ------------------------------------------------------------------------------------ test
PASSED=0 FAILED=0
check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then PASSED=$((PASSED + 1)); echo "ok    $name"
  else FAILED=$((FAILED + 1)); echo "FAIL  $name"; printf '%s\n' "$out" | tail -15 | sed 's/^/      /'; fi
}
in_image() { # runs a command in a container of the image (chroot isolation: no runtime daemon)
  local c rc=0
  c=$(bah from -q "$IMAGE")
  bah run --isolation chroot "$c" -- "$@" || rc=$?
  bah rm "$c" >/dev/null
  return $rc
}
t_user() {
  [[ $(bah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE") == "$UID_NONROOT:$UID_NONROOT" ]]
}
t_operator_runs() { in_image ftp-operator --version | grep -q "ftp-operator $VERSION"; }
t_operator_crd() { in_image ftp-operator crd | cmp - "$ROOT/crds/ftpserver.yaml" && in_image ftp-operator crd ftpuser | cmp - "$ROOT/crds/ftpuser.yaml"; }
t_server_runs() { in_image ftp-server --help | grep -ci "usage" >/dev/null; } # -c reads to the end: no SIGPIPE
t_archive() { # the listing first: grep -q quitting early would fail the pipe under pipefail
  local listing
  listing=$(tar -tf "$ARCHIVE")
  grep -qx 'index.json' <<<"$listing" && grep -qx 'oci-layout' <<<"$listing"
}
check "image user is $UID_NONROOT:$UID_NONROOT (non-root)" t_user
check "ftp-operator runs in the image and reports $VERSION" t_operator_runs
check "ftp-operator crd in the image prints crds/ftpserver.yaml and crds/ftpuser.yaml" t_operator_crd
check "ftp-server runs in the image" t_server_runs
t_labels() { # the annotations registries and scanners read, each set and the version right
  local label value
  for label in title description source url documentation licenses revision created version; do
    value=$(bah inspect --type image --format "{{index .OCIv1.Config.Labels \"org.opencontainers.image.$label\"}}" "$IMAGE")
    [[ -n $value ]] || { echo "no org.opencontainers.image.$label label"; return 1; }
  done
  [[ $(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$IMAGE") == "$VERSION" ]]
}
check "the OCI archive is a valid OCI layout" t_archive
check "the image carries the OCI labels (version $VERSION, revision, created, ...)" t_labels
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
