#!/usr/bin/env bash
# Builds the tools the chart tests need from Go modules at pinned versions and caches them, like
# scripts/local-cluster.sh caches the Kubernetes binaries:
#   ~/.cache/ftp-operator/tools/<name>-<version>/<name>
#
#   scripts/tools.sh build [helm|kstatus ...]   # build what is missing (default: all)
#   scripts/tools.sh path  <name>                # print a tool's cached path (building it first)
#
# Environment: FTPOP_CACHE (default $HOME/.cache/ftp-operator).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${FTPOP_CACHE:-$HOME/.cache/ftp-operator}
TOOLS_DIR="$CACHE_ROOT/tools"

# Pins. Helm 4 is a plain `go install` (its go.mod has no replace directives).
HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.1
# tests/kstatus pins sigs.k8s.io/cli-utils in its go.mod/go.sum; the cache key hashes them.
KSTATUS_DIR="$REPO_ROOT/tests/kstatus"

die() { echo "tools: error: $*" >&2; exit 1; }
log() { echo "tools: $*" >&2; }

# A non-login shell (CI's, sudo's) may lack Go's usual directory on PATH.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null || die "Go is required (go1.26 or newer) to build the test tools"

# One Go build at a time on a 2-core machine: wait while another tools build holds the lock.
with_lock() {
  mkdir -p "$TOOLS_DIR"
  exec 9>"$TOOLS_DIR/.lock"
  flock 9
}

helm_path() { echo "$TOOLS_DIR/helm-$HELM_VERSION/helm"; }

build_helm() {
  local out; out=$(helm_path)
  [[ -x $out ]] && return 0
  with_lock
  [[ -x $out ]] && return 0
  log "building helm $HELM_VERSION from $HELM_MODULE (a few minutes, once)"
  local tmp="$TOOLS_DIR/helm-$HELM_VERSION.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  # Helm's Makefile stamps the version the same way; without it `helm version` says v4.0+unreleased.
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-trimpath go install \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.metadata=" \
    "$HELM_MODULE/cmd/helm@$HELM_VERSION" || die "building helm failed"
  rm -rf "$(dirname "$out")"; mv "$tmp" "$(dirname "$out")"
}

kstatus_key() { cat "$KSTATUS_DIR/go.mod" "$KSTATUS_DIR/go.sum" "$KSTATUS_DIR"/*.go | sha256sum | cut -c1-12; }
kstatus_path() { echo "$TOOLS_DIR/kstatus-$(kstatus_key)/kstatus"; }

build_kstatus() {
  local out; out=$(kstatus_path)
  [[ -x $out ]] && return 0
  with_lock
  [[ -x $out ]] && return 0
  log "building tests/kstatus (sigs.k8s.io/cli-utils kstatus)"
  mkdir -p "$(dirname "$out")"
  (cd "$KSTATUS_DIR" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$out.tmp" .) ||
    die "building tests/kstatus failed"
  mv "$out.tmp" "$out"
}

cmd=${1:-build}; shift || true
case $cmd in
  build)
    [[ $# -gt 0 ]] || set -- helm kstatus
    for t in "$@"; do
      case $t in helm) build_helm ;; kstatus) build_kstatus ;; *) die "unknown tool '$t' (helm, kstatus)" ;; esac
    done ;;
  path)
    [[ $# -eq 1 ]] || die "usage: tools.sh path helm|kstatus"
    case $1 in
      helm) build_helm; helm_path ;;
      kstatus) build_kstatus; kstatus_path ;;
      *) die "unknown tool '$1' (helm, kstatus)" ;;
    esac ;;
  *) die "usage: tools.sh build [helm|kstatus ...] | path <name>" ;;
esac
