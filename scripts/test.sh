#!/usr/bin/env bash
# Runs every test tier, from a fresh machine to a verdict, in this order:
#   1. lint: rustfmt and clippy (warnings are errors); the GitHub workflows (actionlint)
#   2. `cargo test`: unit tests (the generated CRD and the chart's copy must match the code),
#      and ftp-server against real clients (curl, lftp, Python's ftplib, suppaftp)
#   3. the container image, assembled with buildah from scratch, and both binaries run in it
#   4. the controller against a real control plane built from Go modules (scripts/local-cluster.sh)
#   4b. the CRD on the oldest Kubernetes the chart claims (kube-apiserver v1.31, built from its
#      Go module): it installs, and the apiserver's CEL rejects every invalid manifest
#   5. the Helm chart (helm lint, kubeconform, kube-score, install/upgrade), the Grafana dashboard,
#      kstatus and Argo CD health against a control plane of their own
#   6. Flux's source-controller and kustomize-controller syncing docs/flux/ from a local Git
#      repository, on a control plane of their own
#   6b. (root) end to end on the local cluster's real node: the chart's operator pod, a server
#      pod from the image built here, clients through a forgetful balancer and kube-proxy
#   6c. (root) the release: scripts/release.sh pushes image, SBOM and chart to a registry on
#      loopback that wants a login; `helm install oci://…` on the real node, whose containerd pulls
#      the operator's and an FtpServer's image with image pull secrets
#   6d. (root) three replicas on the real node: concurrent sessions on each replica's passive slice,
#      kubectl scale, and a download that outlives a rollout of every replica
#   6d. (root) the example's FtpServer on the real node under real logins (default-cost hashes,
#      its 128Mi limit): sequential and concurrent sessions, plain and FTPS, no restart; the client
#      address the server sees through pass-through, masquerading and PROXY protocol balancers
#   7. (root) long transfers through a namespace load balancer that forgets idle flows, and the
#      node tuner inside a namespace
# Each tier installs what it needs; a missing part is a failure that says what is missing.
# The last line counts the tests of every tier: "tests: N passed, M failed".
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
export CARGO_TERM_COLOR=never

log=$(mktemp -t ftp-operator-tests.XXXXXX)
failed_tiers=()
cluster_started=0

cleanup() {
  if [ "$cluster_started" = 1 ]; then scripts/local-cluster.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Runs one tier, keeps its output for the final count, and records a failure without stopping,
# so one run reports every broken tier. Returns the tier's verdict.
tier() {
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name"
  if "$@" 2>&1 | tee -a "$log"; then
    echo "=== $name: ok ($((SECONDS - start)) s)"
  else
    echo "=== $name: FAILED ($((SECONDS - start)) s)"
    failed_tiers+=("$name")
    return 1
  fi
}

lint() {
  cargo fmt --check &&
    cargo clippy --all-targets --all-features -- -D warnings
}

# The kwok tier: fake pods only (no server runs), so no real node; its kwok nodes are then untainted.
cluster_up() {
  FTPOP_REAL_NODE=0 scripts/local-cluster.sh build && FTPOP_REAL_NODE=0 scripts/local-cluster.sh up
}

tier "install dependencies" scripts/install-deps.sh
tier "lint" lint
tier "github workflows (actionlint)" scripts/lint-workflows.sh
tier "unit and real-client tests" cargo test --all-targets
# The image is assembled from the debug binaries just built: the test is about its layout (non-root
# user, both binaries, their libraries), not about optimised code.
tier "container image" env FTPOP_OPERATOR_BIN="$repo/target/debug/ftp-operator" \
  FTPOP_SERVER_BIN="$repo/target/debug/ftp-server" scripts/image.sh --test
cluster_started=1 # from here on, the exit trap stops whatever part of the cluster came up
if tier "local control plane" cluster_up; then
  eval "$(scripts/local-cluster.sh env)"
  tier "controller on a real control plane" cargo test --features cluster-tests --test cluster
  scripts/local-cluster.sh down >/dev/null
else
  failed_tiers+=("controller on a real control plane (not run: no control plane)")
fi
# Its own apiserver and etcd; the chart's kubeVersion must name the version tested.
tier "the CRD on the oldest supported apiserver" scripts/oldest-apiserver.sh test
# The Helm tier brings up a control plane of its own, so it can install and uninstall freely.
tier "helm, linters, dashboard, kstatus and argo cd" scripts/test-helm.sh
# Flux's own controllers sync the operator and an FtpServer from a local Git repository.
tier "flux: from a git repository to a ready ftpserver" scripts/test-flux.sh
# The debug binaries the unit tier built, in the image the real node runs.
tier "end to end on the real node" env FTPOP_OPERATOR_BIN="$repo/target/debug/ftp-operator" \
  FTPOP_SERVER_BIN="$repo/target/debug/ftp-server" scripts/test-node.sh
tier "release: a private registry, helm install oci://, pulled on the real node" scripts/test-release.sh
tier "replicas on the real node" env FTPOP_OPERATOR_BIN="$repo/target/debug/ftp-operator" \
  FTPOP_SERVER_BIN="$repo/target/debug/ftp-server" scripts/test-replicas.sh
tier "load and client addresses on the real node" env FTPOP_OPERATOR_BIN="$repo/target/debug/ftp-operator" \
  FTPOP_SERVER_BIN="$repo/target/debug/ftp-server" scripts/test-load.sh
tier "network namespaces: forgetful load balancer, node tuner" cargo test --features netns-tests --test netns --test node_tuner

passed=$(grep -Eo '(test result: [a-zA-Z]+\. [0-9]+ passed|^[0-9]+ passed, [0-9]+ failed)' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '(; [0-9]+ failed|^[0-9]+ passed, [0-9]+ failed)' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
rm -f "$log"
if [ ${#failed_tiers[@]} -gt 0 ]; then
  echo "failed tiers: ${failed_tiers[*]}"
  [ "$failed" -gt 0 ] || failed=${#failed_tiers[@]}
fi
echo "tests: $passed passed, $failed failed"
[ ${#failed_tiers[@]} -eq 0 ]
