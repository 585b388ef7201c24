#!/usr/bin/env bash
# Runs every test tier, from a fresh machine to a verdict.
#
# One after another first:
#   1. the Debian packages the tiers need; lint: rustfmt and clippy (warnings are errors); the
#      GitHub workflows (actionlint)
#   2. the build: every test executable (all features, once) and the release tier's auditable
#      binaries; no tier compiles Rust after it. Beside lint and the build, from before lint
#      onwards, a job builds the Go parts (Kubernetes, the tools, the oldest apiserver) in the
#      order the tiers need them, and each tier waits only for the parts it uses
# Then two lanes side by side, since they share nothing but the CPUs:
#   lane "control planes of their own" (kwok nodes only, never the real node):
#   3. unit tests (the generated CRD and the chart's copy must match the code), and ftp-server
#      against real clients (curl, lftp, Python's ftplib, suppaftp, paramiko) and object stores
#   4. the controller against a real control plane built from Go modules (scripts/local-cluster.sh)
#   4b. the CRD on the oldest Kubernetes the chart claims (kube-apiserver v1.31, built from its
#      Go module): it installs, and the apiserver's CEL rejects every invalid manifest
#   5. the Helm chart (helm lint, kubeconform, kube-score, install/upgrade), the Grafana dashboard,
#      kstatus and Argo CD health against a control plane of their own
#   6. Flux's source-controller and kustomize-controller syncing docs/flux/ from a local Git
#      repository, on a control plane of their own
#   lane "the real node" (root; the machine has one, so these take turns):
#   6a. the container image, assembled with buildah from scratch, and both binaries run in it
#   6b. end to end on the local cluster's real node: the chart's operator pod, a server pod from
#      the image built here, clients through a forgetful balancer and kube-proxy
#   6c. the release: scripts/release.sh pushes image, SBOM and chart to a registry on loopback
#      that wants a login; `helm install oci://…` on the real node, whose containerd pulls the
#      operator's and an FtpServer's image with image pull secrets
#   6d. three replicas on the real node: concurrent sessions on each replica's passive slice,
#      kubectl scale, and a download that outlives a rollout of every replica
#   6e. the example's FtpServer on the real node under real logins (default-cost hashes, its
#      128Mi limit): sequential and concurrent sessions, plain and FTPS, no restart; the client
#      address the server sees through pass-through, masquerading and PROXY protocol balancers
#   7. long transfers through a namespace load balancer that forgets idle flows, and the node
#      tuner inside a namespace
# Each tier installs what it needs; a missing part is a failure that says what is missing. A
# lane's tiers print their output when they end, whole, so the lanes' lines never interleave.
# The last line counts the tests of every tier: "tests: N passed, M failed".
#
# Cargo builds into ~/.cache/ftp-operator/cargo/<rustc version> unless CARGO_TARGET_DIR is set,
# so a fresh clone compiles only this crate, not its dependencies.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
export CARGO_TERM_COLOR=never
# CI builds once per clone: incremental compilation only costs disk and time here.
export CARGO_INCREMENTAL=0
if [[ -z ${CARGO_TARGET_DIR:-} ]]; then
  cargo_cache=${FTPOP_CACHE:-$HOME/.cache/ftp-operator}/cargo
  rustc_key=$(rustc -vV 2>/dev/null | sed -n 's/^release: //p; s/^host: //p' | paste -sd- -)
  if [[ -n $rustc_key ]]; then
    export CARGO_TARGET_DIR=$cargo_cache/$rustc_key
    # Builds for other compilers are never used again.
    find "$cargo_cache" -mindepth 1 -maxdepth 1 -type d ! -name "$rustc_key" -exec rm -rf {} + 2>/dev/null
  fi
fi
target=${CARGO_TARGET_DIR:-$repo/target}
# What the tiers run, copied out of cargo's directory so nothing can replace them meanwhile.
bin=$repo/target/ci-bin
kwok_cluster=$repo/target/kwok-cluster

work=$(mktemp -d -t ftp-operator-tests.XXXXXX)
log=$work/all.log
: >"$log"

lanes=()
cleanup() {
  [[ ${#lanes[@]} -gt 0 ]] && kill "${lanes[@]}" 2>/dev/null
  FTPOP_CLUSTER_DIR=$kwok_cluster scripts/local-cluster.sh down >/dev/null 2>&1 || true
  scripts/local-cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# tier NAME CMD...: runs one tier, keeps its output for the final count, and records a failure
# without stopping, so one run reports every broken tier. Outside a lane its output streams; in a
# lane (LANE set) it is printed whole when the tier ends. Returns the tier's verdict.
tier() {
  local name=$1; shift
  local start=$SECONDS out rc
  if [[ -z ${LANE:-} ]]; then
    echo "=== $name"
    "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
  else
    { flock 9; echo "=== $name: started ($LANE)"; } 9>"$work/print.lock"
    out=$(mktemp -p "$work" tier.XXXXXX)
    "$@" >"$out" 2>&1
    rc=$?
  fi
  {
    flock 9
    if [[ -n ${LANE:-} ]]; then echo "=== $name"; cat "$out"; cat "$out" >>"$log"; fi
    if [[ $rc -eq 0 ]]; then
      echo "=== $name: ok ($((SECONDS - start)) s)"
    else
      echo "=== $name: FAILED ($((SECONDS - start)) s)"
      echo "$name" >>"$work/failed"
    fi
  } 9>"$work/print.lock"
  return "$rc"
}

lint() {
  cargo fmt --check &&
    cargo clippy --all-targets --all-features -- -D warnings
}

# Every test executable, built once with all features (the features only select test targets),
# listed as "name<TAB>path" in $work/tests.
build_tests() {
  cargo test --all-targets --all-features --locked --no-run --message-format=json-render-diagnostics >"$work/build.json" &&
    python3 - "$work/build.json" >"$work/tests" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(f"{m['target']['name']}\t{m['executable']}")
PY
  [[ -s $work/tests ]] || { echo "no test executables were built"; return 1; }
  rm -rf "$bin"; mkdir -p "$bin/auditable"
  cp "$target/debug/ftp-operator" "$target/debug/ftp-server" "$bin/"
}

# The release tier's binaries: debug, with the crates they hold recorded in them (cargo
# auditable), as a release's are. Built after the tests, and copied aside, because they replace
# the binaries in cargo's directory.
build_auditable() {
  local auditable
  auditable=$(scripts/tools.sh path cargo-auditable) &&
    PATH="$(dirname "$auditable"):$PATH" cargo auditable build -q --locked --bins &&
    cp "$target/debug/ftp-operator" "$target/debug/ftp-server" "$bin/auditable/"
}

# The Go builds (Kubernetes, the tools, the oldest apiserver), cached under ~/.cache/ftp-operator,
# in the order the tiers need them. Each part leaves $work/built.PART or $work/unbuilt.PART, and
# a tier waits only for the parts it uses (`needs`), so on a cold machine the tiers run while
# the later parts build. Its log: $work/build-go.log.
GO_PARTS="kubernetes helm release-tools chart-tools flux oldest-apiserver"
build_go_part() {
  case $1 in
    kubernetes) scripts/local-cluster.sh build ;;
    helm) scripts/tools.sh build helm ;;
    release-tools) scripts/tools.sh build syft oras registry ;;
    chart-tools) scripts/tools.sh build kstatus kubeconform kube-score argocd-health ;;
    flux) scripts/tools.sh build flux flux-apicheck ;;
    oldest-apiserver) scripts/oldest-apiserver.sh build ;;
  esac
}
build_go() {
  local part start
  for part in $GO_PARTS; do
    echo "--- building $part"
    start=$SECONDS
    if build_go_part "$part"; then touch "$work/built.$part"; else touch "$work/unbuilt.$part"; fi
    echo "--- built $part in $((SECONDS - start)) s, $SECONDS s into the run"
  done
}

# needs PART... -- CMD...: waits until the Go build job built every PART, then runs CMD; a part
# that failed to build (or a build job that is gone) fails the tier, naming the part.
needs() {
  local part
  while [[ $1 != -- ]]; do
    part=$1; shift
    until [[ -e $work/built.$part ]]; do
      if [[ -e $work/unbuilt.$part ]] || ! kill -0 "$go_build" 2>/dev/null && [[ ! -e $work/built.$part ]]; then
        echo "the Go build of $part failed; its log:"; tail -40 "$work/build-go.log"
        return 1
      fi
      sleep 2
    done
  done
  shift
  "$@"
}

# The Rust side of the build, while the Go builds run beside it (cargo's link steps and Go's
# package builds leave each other cores to use).
build() {
  build_tests && build_auditable
}

test_exe() { awk -F'\t' -v n="$1" '$1 == n {print $2}' "$work/tests"; }

# The unit and real-client tests: every test executable but the three that need a control plane
# or root, run from the repository root as cargo runs them.
unit_tests() {
  local name exe rc=0
  while IFS=$'\t' read -r name exe; do
    case $name in cluster | netns | node_tuner) continue ;; esac
    echo "     Running $name"
    "$exe" || rc=1
  done <"$work/tests"
  return "$rc"
}

# The kwok tier: fake pods only (no server runs), so no real node, and a state directory and
# ports of its own, so it runs while the other lane holds the real node's cluster. A subshell:
# its cluster's settings stay out of the lane's later tiers.
cluster_tier() (
  export FTPOP_CLUSTER_DIR=$kwok_cluster FTPOP_PORT_BASE=24700 FTPOP_REAL_NODE=0
  scripts/local-cluster.sh up >/dev/null || { echo "the local control plane did not come up"; return 1; }
  eval "$(scripts/local-cluster.sh env)"
  local rc=0
  "$(test_exe cluster)" || rc=1
  scripts/local-cluster.sh down >/dev/null
  return "$rc"
)

control_plane_lane() {
  export LANE="control planes of their own"
  tier "unit and real-client tests" unit_tests
  tier "controller on a real control plane" needs kubernetes -- cluster_tier
  # The Helm tier brings up a control plane of its own, so it can install and uninstall freely.
  tier "helm, linters, dashboard, kstatus and argo cd" needs kubernetes helm chart-tools -- \
    scripts/test-helm.sh
  # Flux's own controllers sync the operator and an FtpServer from a local Git repository.
  tier "flux: from a git repository to a ready ftpserver" needs kubernetes helm flux -- \
    scripts/test-flux.sh
  # Its own apiserver and etcd; the chart's kubeVersion must name the version tested.
  tier "the CRD on the oldest supported apiserver" needs oldest-apiserver -- \
    env FTPOP_CLUSTER_TEST_BIN="$(test_exe cluster)" scripts/oldest-apiserver.sh test
}

node_lane() {
  export LANE="the real node"
  # The image is assembled from the debug binaries just built: the test is about its layout
  # (non-root user, both binaries, their libraries), not about optimised code.
  tier "container image" scripts/image.sh --test
  tier "end to end on the real node" needs kubernetes helm -- scripts/test-node.sh
  tier "release: a private registry, helm install oci://, pulled on the real node" \
    needs kubernetes helm release-tools -- env FTPOP_AUDITABLE_BIN_DIR="$bin/auditable" scripts/test-release.sh
  tier "replicas on the real node" needs kubernetes helm -- scripts/test-replicas.sh
  tier "load and client addresses on the real node" needs kubernetes helm -- scripts/test-load.sh
  tier "network namespaces: forgetful load balancer, node tuner" namespace_tests
}
namespace_tests() {
  local rc=0
  "$(test_exe netns)" || rc=1
  "$(test_exe node_tuner)" || rc=1
  return "$rc"
}

tier "install dependencies" scripts/install-deps.sh
# The Go builds start before lint: on a cold machine their module downloads wait on the network
# while clippy uses the cores.
build_go >"$work/build-go.log" 2>&1 &
go_build=$!
lanes+=("$go_build")
tier "lint" lint
tier "github workflows (actionlint)" scripts/lint-workflows.sh
if tier "build: the test executables and the release binaries (Go parts building beside)" build; then
  # Every tier runs the binaries built above.
  export FTPOP_OPERATOR_BIN=$bin/ftp-operator FTPOP_SERVER_BIN=$bin/ftp-server
  control_plane_lane &
  lanes+=($!)
  node_lane &
  lanes+=($!)
fi
wait "${lanes[@]}"
lanes=()
echo "=== the Go builds (Kubernetes, tools, the oldest apiserver)"
grep -E '^--- built|ready|error' "$work/build-go.log" | tail -20
if ls "$work"/unbuilt.* >/dev/null 2>&1; then
  echo "=== the Go builds: FAILED"
  echo "the Go builds" >>"$work/failed"
fi

passed=$(grep -Eo '(test result: [a-zA-Z]+\. [0-9]+ passed|^[0-9]+ passed, [0-9]+ failed)' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '(; [0-9]+ failed|^[0-9]+ passed, [0-9]+ failed)' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
failed_tiers=()
[[ -f $work/failed ]] && mapfile -t failed_tiers <"$work/failed"
if [ ${#failed_tiers[@]} -gt 0 ]; then
  echo "failed tiers: $(printf '%s, ' "${failed_tiers[@]}" | sed 's/, $//')"
  [ "$failed" -gt 0 ] || failed=${#failed_tiers[@]}
fi
echo "tests: $passed passed, $failed failed"
[ ${#failed_tiers[@]} -eq 0 ]
