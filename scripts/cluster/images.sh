# Images of the local cluster's real node (sourced by scripts/local-cluster.sh). No image can be
# pulled, so the node runs only images built here, imported into its containerd:
#   - the pod sandbox ("pause") image, from the project's own hack/pause program;
#   - the project's image (scripts/image.sh, the Dockerfile's layout), by `local-cluster.sh
#     load-image` or at `up` when target/image holds an archive of the current version.
# Each is labelled pinned (io.cri-containerd.pinned): the kubelet's image GC never deletes a
# pinned image, and its thresholds are at 100% besides (scripts/cluster/node.sh).
#
#   images_build    build (or reuse cached) the sandbox image archive
#   images_import   import the sandbox image, and the project image if built (node_up calls it)
#   images_load     import one OCI archive
# Removing the images is node_down's: they live in the node's containerd root.

PAUSE_KEY=$(cat "$HACK_DIR/pause/go.mod" "$HACK_DIR/pause/main.go" | sha256sum | cut -c1-12)
PAUSE_IMAGE=localhost/ftp-operator/pause:$PAUSE_KEY
PAUSE_DIR=$CACHE_ROOT/pause/$PAUSE_KEY
PAUSE_ARCHIVE=$PAUSE_DIR/pause.oci.tar
PROJECT_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -1)
PROJECT_ARCHIVE=$REPO_ROOT/target/image/ftp-operator-$PROJECT_VERSION.oci.tar

images_build() {
  [[ -s $PAUSE_ARCHIVE ]] && { log "pause image: cached in $PAUSE_DIR"; return 0; }
  ensure_cmd buildah buildah
  ensure_go
  mkdir -p "$PAUSE_DIR"
  local tmp ctr
  tmp=$(mktemp -d "$PAUSE_DIR/.build.XXXXXX")
  gobuild pause -ldflags "-s -w" -o "$tmp/rootfs/pause" . >&2 || { rm -rf "$tmp"; die "pause: go build failed"; }
  bah() { buildah --storage-driver vfs --root "$tmp/storage" --runroot "$tmp/run" "$@"; }
  ctr=$(bah from scratch)
  bah copy "$ctr" "$tmp/rootfs/pause" /pause >/dev/null
  # 65535, like the upstream sandbox image: the sandbox process needs no privilege.
  bah config --user 65535:65535 --entrypoint '["/pause"]' --cmd '[]' \
    --label org.opencontainers.image.title=ftp-operator-pause "$ctr"
  bah commit --rm -q "$ctr" "$PAUSE_IMAGE" >/dev/null
  bah push -q "$PAUSE_IMAGE" "oci-archive:$tmp/pause.oci.tar:$PAUSE_IMAGE" >/dev/null
  mv -f "$tmp/pause.oci.tar" "$PAUSE_ARCHIVE"
  bah rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$tmp"
  log "pause image: built $PAUSE_IMAGE"
}

node_ctr() { "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

images_load() { # <OCI archive>: import it into the real node's containerd and pin what it holds
  local archive=$1 out name
  [[ -s $archive ]] || die "no image archive at $archive (scripts/image.sh builds the project's)"
  out=$(node_ctr images import --local "$archive" 2>&1) || die "ctr images import $archive failed: $out"
  # ctr prints "unpacking NAME (sha256:...)...done" per image.
  for name in $(echo "$out" | sed -n 's/^unpacking \([^ ]*\) .*/\1/p'); do
    node_ctr images label "$name" io.cri-containerd.pinned=pinned >/dev/null
    log "image $name imported into the real node (pinned)"
  done
}

images_import() {
  images_load "$PAUSE_ARCHIVE"
  if [[ -s $PROJECT_ARCHIVE ]]; then images_load "$PROJECT_ARCHIVE"; fi
}
