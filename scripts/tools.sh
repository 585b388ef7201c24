#!/usr/bin/env bash
# Builds the tools the chart and GitOps tests need from Go modules at pinned versions and caches
# them, like scripts/local-cluster.sh caches the Kubernetes binaries:
#   ~/.cache/ftp-operator/tools/<name>-<version or hash of its go.mod/go.sum>/<binary>
#
#   scripts/tools.sh build [TOOL ...]   # build what is missing (default: all)
#   scripts/tools.sh path  TOOL         # print a tool's cached path (building it first)
#
# Tools: helm, kstatus, kubeconform, kube-score, argocd-health, flux-apicheck, source-controller,
# kustomize-controller (the last two are one build of hack/flux); for releases: syft (SBOMs),
# oras (attaches the SBOM to the image), registry (distribution's, the release tier's registry),
# actionlint (the GitHub workflows), cargo-auditable (from crates.io: records the crates a binary
# is built from inside it, where syft reads them).
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
# Plain `go install`s (their go.mod files have no replace directives).
KUBECONFORM_MODULE=github.com/yannh/kubeconform
KUBECONFORM_VERSION=v0.8.0
KUBE_SCORE_MODULE=github.com/zegl/kube-score
KUBE_SCORE_VERSION=v1.20.0
# Release tooling, plain `go install`s too. distribution's registry is built without CGO, so
# its storage drivers need nothing but Go.
SYFT_MODULE=github.com/anchore/syft
SYFT_VERSION=v1.57.2
ORAS_MODULE=oras.land/oras
ORAS_VERSION=v1.3.6
REGISTRY_MODULE=github.com/distribution/distribution/v3
REGISTRY_VERSION=v3.1.2
ACTIONLINT_MODULE=github.com/rhysd/actionlint
ACTIONLINT_VERSION=v1.7.12
CARGO_AUDITABLE_VERSION=0.7.7
# tests/argocd/engine pins Argo CD's health code; hack/flux pins Flux's controllers.
ARGOCD_HEALTH_DIR="$REPO_ROOT/tests/argocd/engine"
FLUX_DIR="$REPO_ROOT/hack/flux"
FLUX_APICHECK_DIR="$REPO_ROOT/tests/flux/apicheck"

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

# go install MODULE/PKG@VERSION into the cache, under <name>-<version>.
goinstall_path() { echo "$TOOLS_DIR/$1-$2/$1"; } # <name> <version>
build_goinstall() { # <name> <module> <version> <package inside the module> [ldflags]
  local name=$1 module=$2 version=$3 pkg=$4 ldflags=${5:-"-s -w"} out
  out=$(goinstall_path "$name" "$version")
  [[ -x $out ]] && return 0
  with_lock
  [[ -x $out ]] && return 0
  log "building $name $version from $module"
  local tmp="$TOOLS_DIR/$name-$version.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath nice go install -ldflags "$ldflags" \
    "$module/$pkg@$version" || die "building $name failed"
  rm -rf "$(dirname "$out")"; mv "$tmp" "$(dirname "$out")"
}

# go build of main packages required by a committed module (go.mod + go.sum), keyed by their hash.
gomod_key() { cat "$1/go.mod" "$1/go.sum" "$1"/*.go 2>/dev/null | sha256sum | cut -c1-12; }
gomod_dir() { echo "$TOOLS_DIR/$1-$(gomod_key "$2")"; } # <name> <module dir>
build_gomod() { # <name> <module dir> <package...>
  local name=$1 dir=$2 out; shift 2
  out=$(gomod_dir "$name" "$dir")
  [[ -f $out/.complete ]] && return 0
  with_lock
  [[ -f $out/.complete ]] && return 0
  log "building $name from ${dir#"$REPO_ROOT"/} (several minutes on a cold Go build cache, once)"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  (cd "$dir" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 nice go build -trimpath \
    -ldflags "-s -w" -o "$out.tmp/" "$@") || die "building $name failed"
  touch "$out.tmp/.complete"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# cargo install of a pinned crate into the cache, under <name>-<version>/bin.
cargo_install_path() { echo "$TOOLS_DIR/$1-$2/bin/$1"; } # <name> <version>
build_cargo_install() { # <name> <version>
  local name=$1 version=$2 out
  out=$(cargo_install_path "$name" "$version")
  [[ -x $out ]] && return 0
  command -v cargo >/dev/null || die "cargo is required to build $name"
  with_lock
  [[ -x $out ]] && return 0
  log "building $name $version from crates.io"
  local tmp="$TOOLS_DIR/$name-$version.tmp"
  rm -rf "$tmp"
  nice cargo install -q --locked --version "=$version" --root "$tmp" "$name" || die "building $name failed"
  rm -rf "$(dirname "$(dirname "$out")")"; mv "$tmp" "$(dirname "$(dirname "$out")")"
}

build_tool() {
  case $1 in
    helm) build_helm ;;
    kstatus) build_kstatus ;;
    kubeconform) build_goinstall kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_VERSION" cmd/kubeconform ;;
    kube-score)
      build_goinstall kube-score "$KUBE_SCORE_MODULE" "$KUBE_SCORE_VERSION" cmd/kube-score \
        "-s -w -X main.version=$KUBE_SCORE_VERSION" ;;
    # Their version strings, as their own release builds stamp them.
    syft) build_goinstall syft "$SYFT_MODULE" "$SYFT_VERSION" cmd/syft \
      "-s -w -X main.version=${SYFT_VERSION#v}" ;;
    oras) build_goinstall oras "$ORAS_MODULE" "$ORAS_VERSION" cmd/oras \
      "-s -w -X oras.land/oras/internal/version.Version=${ORAS_VERSION#v} -X oras.land/oras/internal/version.BuildMetadata=" ;;
    registry) build_goinstall registry "$REGISTRY_MODULE" "$REGISTRY_VERSION" cmd/registry \
      "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" ;;
    actionlint) build_goinstall actionlint "$ACTIONLINT_MODULE" "$ACTIONLINT_VERSION" cmd/actionlint \
      "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" ;;
    cargo-auditable) build_cargo_install cargo-auditable "$CARGO_AUDITABLE_VERSION" ;;
    argocd-health) build_gomod argocd-health "$ARGOCD_HEALTH_DIR" . ;;
    flux-apicheck) build_gomod flux-apicheck "$FLUX_APICHECK_DIR" . ;;
    source-controller | kustomize-controller | flux)
      build_gomod flux "$FLUX_DIR" github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller ;;
    *) die "unknown tool '$1' ($ALL_TOOLS)" ;;
  esac
}
tool_path() {
  case $1 in
    helm) helm_path ;;
    kstatus) kstatus_path ;;
    kubeconform) goinstall_path kubeconform "$KUBECONFORM_VERSION" ;;
    kube-score) goinstall_path kube-score "$KUBE_SCORE_VERSION" ;;
    syft) goinstall_path syft "$SYFT_VERSION" ;;
    oras) goinstall_path oras "$ORAS_VERSION" ;;
    registry) goinstall_path registry "$REGISTRY_VERSION" ;;
    actionlint) goinstall_path actionlint "$ACTIONLINT_VERSION" ;;
    cargo-auditable) cargo_install_path cargo-auditable "$CARGO_AUDITABLE_VERSION" ;;
    argocd-health) echo "$(gomod_dir argocd-health "$ARGOCD_HEALTH_DIR")/argocd-health" ;;
    flux-apicheck) echo "$(gomod_dir flux-apicheck "$FLUX_APICHECK_DIR")/flux-apicheck" ;;
    source-controller | kustomize-controller) echo "$(gomod_dir flux "$FLUX_DIR")/$1" ;;
    *) die "unknown tool '$1' ($ALL_TOOLS)" ;;
  esac
}
ALL_TOOLS="helm kstatus kubeconform kube-score argocd-health flux-apicheck source-controller kustomize-controller syft oras registry actionlint cargo-auditable"

cmd=${1:-build}; shift || true
case $cmd in
  build)
    [[ $# -gt 0 ]] || set -- $ALL_TOOLS
    for t in "$@"; do build_tool "$t"; done ;;
  path)
    [[ $# -eq 1 ]] || die "usage: tools.sh path TOOL ($ALL_TOOLS)"
    build_tool "$1"; tool_path "$1" ;;
  *) die "usage: tools.sh build [TOOL ...] | path TOOL" ;;
esac
