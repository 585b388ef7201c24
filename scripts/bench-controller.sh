#!/usr/bin/env bash
# Controller benchmark — a script, not a test:
#   1. N FtpServers (default 200) applied at once -> seconds until all are Ready
#      (Ready=True, observedGeneration == generation). The local cluster has no cloud
#      load-balancer controller, so scripts/bench-helper.py plays it: it writes an ingress IP
#      into each Service's status as soon as the Service appears, and its time is reported.
#   2. a quiet minute after: API writes by the controller (its /metrics counter, and the
#      apiserver's view: resourceVersions, managedFields times, Events, apiserver_request_total)
#   3. the controller's peak RSS (VmHWM) and CPU seconds, with SECRETS unrelated Secrets of
#      SECRET_KIB each in the cluster before it starts (its memory must follow the FtpServers,
#      not the cluster), and what the apiserver sent for Secrets meanwhile
#   4. a summary table, and a row in docs/benchmarks.md's "Controller" section.
# It builds the controller (release), brings up its own local control plane
# (scripts/local-cluster.sh, state in target/bench-cluster) and takes it down at the end.
#
# Knobs: N (200), NAMESPACES (4), PASSIVE_PORTS (5 per server; each LoadBalancer Service takes
# 1 + PASSIVE_PORTS NodePorts of 2768, so N=500 needs PASSIVE_PORTS=3 or fewer),
# PROBE_INTERVAL (60 s, the chart's probe.intervalSeconds; 0 turns the probe off), SECRETS (2000), SECRET_KIB (512), QUIET (60 s), SETTLE (10 s after all Ready, before the
# quiet minute), READY_TIMEOUT (300 s), RECORD (1: add a row to docs/benchmarks.md),
# MAX_LOAD (e.g. 2.0: wait up to LOAD_WAIT s, default 600, for the 1-min load to drop
# below it before applying), FTPOP_KCM_API_QPS (passed to scripts/local-cluster.sh), KEEP_CLUSTER (1: leave the cluster up, to look at its logs).
# Note: with 5 passive ports each LoadBalancer Service takes 6 NodePorts (of 2768), so N must stay
# below ~460.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

N=${N:-200}
NAMESPACES=${NAMESPACES:-4}
PASSIVE_PORTS=${PASSIVE_PORTS:-5}
# The chart's defaults: probe every 60 s, 5 s per step. The probe logs in through each server's
# public address (here the stand-in balancer's 198.18.0.0/15 addresses, where nothing answers),
# so it makes each server's probe account and tries a session per server every round.
PROBE_INTERVAL=${PROBE_INTERVAL:-60}
QUIET=${QUIET:-60}
SECRETS=${SECRETS:-2000}
SECRET_KIB=${SECRET_KIB:-512}
SETTLE=${SETTLE:-10}
READY_TIMEOUT=${READY_TIMEOUT:-300}
RECORD=${RECORD:-1}
MAX_LOAD=${MAX_LOAD:-}
LOAD_WAIT=${LOAD_WAIT:-600}
TARGET_READY_S=30
TARGET_RSS_MIB=64
for knob in N NAMESPACES PASSIVE_PORTS PROBE_INTERVAL QUIET SETTLE READY_TIMEOUT SECRETS SECRET_KIB; do
  [[ ${!knob} =~ ^[0-9]+$ ]] || { echo "bench: $knob must be a number" >&2; exit 2; }
done

export FTPOP_CLUSTER_DIR="$repo/target/bench-cluster"
# 200 servers on kwok's fake nodes (no pod runs): a control plane without the real node, whose
# absence also leaves the kwok nodes untainted (scripts/bench-node.sh measures real pods).
export FTPOP_REAL_NODE=0
work=$(mktemp -d -t ftp-operator-bench.XXXXXX)
log() { echo "bench: $*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# What the apiserver sent for Secrets so far (all clients): "<LIST+WATCH requests> <response
# bytes of the LISTs> <WATCH event bytes>", from its own metrics.
secret_reads() {
  kubectl get --raw /metrics | awk '
    /^apiserver_request_total\{/ && /resource="secrets"/ && /verb="(LIST|WATCH)"/ {requests += $NF}
    /^apiserver_response_sizes_sum\{/ && /resource="secrets"/ && /verb="LIST"/ {listed += $NF}
    /^apiserver_watch_events_sizes_sum\{/ && /resource="secrets"/ {watched += $NF}
    END {printf "%d %d %d\n", requests, listed, watched}'
}
secret_objects() {
  kubectl get --raw /metrics | awk '/^apiserver_(storage|resource)_objects\{/ && /resource="secrets"/ && !n++ {print $NF}'
}

controller_pid='' lb_pid='' ready_pid='' cluster_up=0
cleanup() {
  local rc=$?
  for pid in $ready_pid $lb_pid $controller_pid; do
    if kill "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
  done
  if [[ $cluster_up = 1 && ${KEEP_CLUSTER:-0} != 1 ]]; then scripts/local-cluster.sh down >/dev/null 2>&1 || true; fi
  if [[ $rc != 0 ]]; then log "failed; controller log kept at $work/controller.log"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# FTPOP_OPERATOR_BIN: a release controller already built (COMMIT_LABEL then says what it was
# built from, for the row); else it is built here.
controller_bin=${FTPOP_OPERATOR_BIN:-target/release/ftp-operator}
if [[ -z ${FTPOP_OPERATOR_BIN:-} ]]; then
  log "building the controller (release)"
  cargo build --release --quiet --bin ftp-operator
fi
scripts/local-cluster.sh build
cluster_up=1
scripts/local-cluster.sh up
eval "$(scripts/local-cluster.sh env)"
# shellcheck disable=SC1091
source "$FTPOP_CLUSTER_DIR/ports.env"
export APISERVER="https://127.0.0.1:$APISERVER_PORT" PKI="$FTPOP_CLUSTER_DIR/pki"

kubectl apply --server-side -f crds/ftpserver.yaml >/dev/null
# Right after the apply the CRD may have no conditions yet, which `kubectl wait` rejects.
for _ in $(seq 120); do
  kubectl wait --for=condition=Established crd/ftpservers.ftpoperator.dev --timeout=30s >/dev/null 2>&1 && break
  sleep 0.5
done
kubectl wait --for=condition=Established crd/ftpservers.ftpoperator.dev --timeout=1s >/dev/null
for ((i = 0; i < NAMESPACES; i++)); do echo "apiVersion: v1
kind: Namespace
metadata: {name: bench-$i}
---"; done | kubectl apply -f - >/dev/null
for ((i = 0; i < NAMESPACES; i++)); do
  until kubectl -n "bench-$i" get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done
done

# The unrelated Secrets exist before the controller starts: its first list is the largest.
secrets_made='{"count": 0, "bytes": 0, "seconds": 0}'
if ((SECRETS > 0)); then
  log "creating $SECRETS Secrets of $SECRET_KIB KiB"
  secrets_made=$(python3 scripts/bench-helper.py secrets "$SECRETS" "$SECRET_KIB" $(for ((i = 0; i < NAMESPACES; i++)); do echo "bench-$i"; done))
  log "created: $secrets_made"
fi

# N distinct servers, PASSIVE_PORTS passive ports each, spread over the namespaces.
for ((i = 0; i < N; i++)); do
  cat <<EOF
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata:
  name: ftp-$i
  namespace: bench-$((i % NAMESPACES))
  labels: {bench: controller}
spec:
  passivePorts: {min: 30000, max: $((30000 + PASSIVE_PORTS - 1))}
---
EOF
done >"$work/servers.yaml"

secret_reads_before=$(secret_reads)
"$controller_bin" controller \
  --metrics-listen 127.0.0.1:0 --leader-election-namespace default \
  --identity bench --default-ftp-image ftp-operator:bench --verify-served-config=false --probe-interval-seconds="$PROBE_INTERVAL" >"$work/controller.log" 2>&1 &
controller_pid=$!
for _ in $(seq 100); do
  grep -q '"holding the lease' "$work/controller.log" && break
  kill -0 "$controller_pid" 2>/dev/null || { cat "$work/controller.log" >&2; exit 1; }
  sleep 0.2
done
grep -q '"holding the lease' "$work/controller.log" || { log "controller never took the lease"; exit 1; }
metrics_address=$(grep -m1 'serving /metrics' "$work/controller.log" | jq -r .fields.address)

controller_writes() { # total of ftp_operator_api_writes_total
  curl -fsS "http://$metrics_address/metrics" |
    awk '/^ftp_operator_api_writes_total/ {s += $NF} END {print s + 0}'
}
controller_writes_by_kind() {
  curl -fsS "http://$metrics_address/metrics" |
    sed -n 's/^ftp_operator_api_writes_total{kind="\([^"]*\)"} \([0-9]*\)/\1=\2/p' | sort | paste -sd' '
}
controller_reconciles() {
  curl -fsS "http://$metrics_address/metrics" | awk '/^ftp_operator_reconciles_total/ {print $NF}'
}
cpu_seconds() { # utime + stime of the controller
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$controller_pid/stat"
}
peak_rss_mib() { awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$controller_pid/status"; }
# resourceVersion of every object the benchmark involves, one line each.
object_versions() {
  {
    kubectl get ftpservers -A -l bench=controller -o json
    kubectl get configmaps,statefulsets,services -A -l app.kubernetes.io/managed-by=ftp-operator -o json
  } | jq -r '.items[] | "\(.kind) \(.metadata.namespace)/\(.metadata.name) \(.metadata.resourceVersion)"' | sort
}
# Latest managedFields time of the controller's field manager over those objects.
last_controller_write() {
  {
    kubectl get ftpservers -A -l bench=controller -o json --show-managed-fields
    kubectl get configmaps,statefulsets,services -A -l app.kubernetes.io/managed-by=ftp-operator \
      -o json --show-managed-fields
  } | jq -rs '[.[].items[].metadata.managedFields[]? | select(.manager == "ftp-operator") | .time] | max'
}
controller_events() { # Events the controller reported, with their resourceVersions
  kubectl get events.events.k8s.io -A -o json |
    jq -r '.items[] | select(.reportingController == "ftp-operator") | "\(.metadata.namespace)/\(.metadata.name) \(.metadata.resourceVersion)"' | sort
}
lease_version() { kubectl -n default get lease ftp-operator -o jsonpath='{.metadata.resourceVersion}'; }
# Mutating requests the apiserver served, by verb/resource/subresource (all clients).
apiserver_writes() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ {
      match($0, /verb="[A-Z]+"/); verb = substr($0, RSTART + 6, RLENGTH - 7)
      if (verb !~ /^(POST|PUT|PATCH|APPLY|DELETE|DELETECOLLECTION)$/) next
      match($0, /resource="[^"]*"/); res = substr($0, RSTART + 10, RLENGTH - 11)
      sub_ = ""; if (match($0, /subresource="[^"]*"/)) sub_ = substr($0, RSTART + 13, RLENGTH - 14)
      key = verb " " res (sub_ != "" ? "/" sub_ : ""); n[key] += $NF }
    END { for (k in n) print k, n[k] }' | sort
}
delta() { # <before file> <after file>: "verb resource=count" for the counts that grew
  awk 'NR == FNR {a[$1 " " $2] = $3; next}
    $3 - a[$1 " " $2] > 0 {printf "%s%s %s=%d", sep, $1, $2, $3 - a[$1 " " $2]; sep = ", "}' "$1" "$2"
}

if [[ -n $MAX_LOAD ]]; then
  deadline=$((SECONDS + LOAD_WAIT))
  while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN {exit !(l > m)}' && ((SECONDS < deadline)); do
    log "1-min load $(load1) > $MAX_LOAD; waiting"
    sleep 15
  done
fi

# ---------------------------------------------------------------- 1. N applied at once
load_before=$(load1)
cpu_start=$(cpu_seconds)
writes_start=$(controller_writes)
python3 scripts/bench-helper.py lb "$work/lb.json" &
lb_pid=$!
sleep 0.5 # the stand-in has listed Services and is watching
t0=$(date +%s.%N)
python3 scripts/bench-helper.py ready bench=controller "$N" "$t0" "$READY_TIMEOUT" >"$work/ready.json" &
ready_pid=$!
kubectl apply --server-side --field-manager=bench -f "$work/servers.yaml" >/dev/null
apply_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
ready_rc=0
wait "$ready_pid" || ready_rc=$?
ready=$(cat "$work/ready.json")
load_ready=$(load1)
ready_pid=''
kill "$lb_pid"
wait "$lb_pid" 2>/dev/null || true
lb_pid=
lb=$(cat "$work/lb.json")
cpu_ready=$(cpu_seconds)
writes_ready=$(controller_writes)
reconciles_ready=$(controller_reconciles)
if [[ $ready_rc != 0 ]]; then
  log "not all Ready within ${READY_TIMEOUT}s: $ready"
  tail -n 20 "$work/controller.log" >&2
  exit 1
fi
ready_s=$(jq -r .seconds <<<"$ready")

# ---------------------------------------------------------------- 2. a quiet minute
sleep "$SETTLE"
writes_settled=$(controller_writes)
object_versions >"$work/versions.before"
controller_events >"$work/events.before"
apiserver_writes >"$work/apiserver.before"
lease_before=$(lease_version)
writes_before=$(controller_writes)
cpu_before=$(cpu_seconds)
quiet_start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep "$QUIET"
writes_after=$(controller_writes)
by_kind_after=$(controller_writes_by_kind)
apiserver_writes >"$work/apiserver.after"
object_versions >"$work/versions.after"
controller_events >"$work/events.after"
lease_after=$(lease_version)
last_write=$(last_controller_write)
cpu_end=$(cpu_seconds)
rss=$(peak_rss_mib)
read -r secret_requests secret_listed secret_watched < <(paste -d' ' <(secret_reads) <(echo "$secret_reads_before") |
  awk '{print $1 - $4, $2 - $5, $3 - $6}')
secret_count=$(secret_objects)
load_end=$(load1)
stages=$(python3 scripts/bench-helper.py stages "$t0")

quiet_writes=$((writes_after - writes_before))
objects_changed=$(diff "$work/versions.before" "$work/versions.after" | grep -c '^>' || true)
objects_total=$(wc -l <"$work/versions.after")
events_changed=$(diff "$work/events.before" "$work/events.after" | grep -c '^>' || true)
apiserver_delta=$(delta "$work/apiserver.before" "$work/apiserver.after")
ours_delta=$(delta <(grep -E ' (ftpservers(/status)?|configmaps|statefulsets|endpointslices|poddisruptionbudgets|services(/status)?|events) ' "$work/apiserver.before" || true) \
  <(grep -E ' (ftpservers(/status)?|configmaps|statefulsets|endpointslices|poddisruptionbudgets|services(/status)?|events) ' "$work/apiserver.after" || true))
lease_renewals=$([[ $lease_before == "$lease_after" ]] && echo "no" || echo "yes")
controller_wrote_after=$([[ $last_write < "$quiet_start" ]] && echo ok || echo "WROTE in the quiet minute")

cpu_burst=$(awk -v a="$cpu_start" -v b="$cpu_ready" 'BEGIN {printf "%.2f", b - a}')
cpu_quiet=$(awk -v a="$cpu_before" -v b="$cpu_end" 'BEGIN {printf "%.2f", b - a}')
verdict_ready=$(awk -v s="$ready_s" -v t="$TARGET_READY_S" 'BEGIN {print (s <= t) ? "met" : "MISSED"}')
verdict_quiet=$([[ $quiet_writes == 0 && $objects_changed == 0 && $events_changed == 0 && $controller_wrote_after == ok ]] && echo met || echo MISSED)
verdict_rss=$(awk -v s="$rss" -v t="$TARGET_RSS_MIB" 'BEGIN {print (s <= t) ? "met" : "MISSED"}')
lb_span=$(jq -r .span_seconds <<<"$lb")
lb_patch=$(jq -r .patch_seconds_total <<<"$lb")
lb_p50=$(jq -r .latency_p50 <<<"$lb")
lb_max=$(jq -r .latency_max <<<"$lb")

cat <<EOF

Controller benchmark: N=$N FtpServers in $NAMESPACES namespaces, $PASSIVE_PORTS passive ports each; probe every ${PROBE_INTERVAL} s (0: off); kube-controller-manager QPS ${FTPOP_KCM_API_QPS:-20 (default)}
machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem/ {print $2}') GiB; 1-min load: $load_before before, $load_ready at all Ready, $load_end at end
| measure                                   | value                           | target   | verdict |
| ----------------------------------------- | ------------------------------- | -------- | ------- |
| apply of N (kubectl apply --server-side)  | ${apply_s} s                    |          |         |
| all Ready (from the start of the apply)   | ${ready_s} s (p50 $(jq -r .p50 <<<"$ready") s, first $(jq -r .first <<<"$ready") s) | <= ${TARGET_READY_S} s | $verdict_ready |
| stand-in LB: first Service -> last address | ${lb_span} s (PATCH time ${lb_patch} s; per Service p50 ${lb_p50} s, max ${lb_max} s) | | |
| controller writes until all Ready         | $((writes_ready - writes_start)) ($reconciles_ready reconciles) | | |
| controller writes in the ${SETTLE} s settle      | $((writes_settled - writes_ready)) | | |
| controller writes in the quiet ${QUIET} s (/metrics) | $quiet_writes | 0 | $verdict_quiet |
|   apiserver: objects changed (of $objects_total)  | $objects_changed | 0 | |
|   apiserver: controller Events new/updated | $events_changed | 0 | |
|   apiserver: last ftp-operator managedFields time | $last_write (quiet from $quiet_start) | before | $controller_wrote_after |
|   apiserver: mutating requests on those kinds, all clients | ${ours_delta:-none} | | |
|   controller Lease renewed (leader election heartbeat) | $lease_renewals | | |
| controller peak RSS (VmHWM)               | ${rss} MiB                      | <= ${TARGET_RSS_MIB} MiB | $verdict_rss |
|   with unrelated Secrets in the cluster    | $SECRETS x $SECRET_KIB KiB (created in $(jq -r .seconds <<<"$secrets_made") s); apiserver holds ${secret_count:-?} Secrets | | |
|   apiserver: Secret reads since the controller started, all clients | $secret_requests LIST/WATCH requests, LIST responses $(awk -v b="$secret_listed" 'BEGIN {printf "%.1f", b / 1048576}') MiB, WATCH events $(awk -v b="$secret_watched" 'BEGIN {printf "%.1f", b / 1048576}') MiB | | |
| controller CPU: burst / quiet minute      | ${cpu_burst} s / ${cpu_quiet} s | | |
controller writes by kind, whole run: $by_kind_after
apiserver mutating requests in the quiet minute (all clients): ${apiserver_delta:-none}

Where the time goes: seconds from the start of the apply until each stage finished, over the N
servers (apiserver timestamps, 1 s resolution)
$(jq -r '["| stage", "p50", "last |"], (.[] | ["| " + .stage, (.p50 | tostring), (.last | tostring) + " |"]) | join(" | ")' <<<"$stages")
EOF

if [[ $RECORD = 1 ]]; then
  python3 - docs/benchmarks.md <<EOF
import sys
path = sys.argv[1]
marker = "<!-- controller runs: scripts/bench-controller.sh inserts a row above this line -->"
row = ("| $(date -u +%Y-%m-%d\ %H:%M) | ${COMMIT_LABEL:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo +dirty)} | "
       "$(nproc) cores, $(free -g | awk '/^Mem/ {print $2}') GiB | $load_before / $load_ready / $load_end | $N | ${FTPOP_KCM_API_QPS:-20 (default)} | $apply_s | "
       "**$ready_s** ($verdict_ready) | $lb_span ($lb_patch) | **$quiet_writes** / $objects_changed / $events_changed ($verdict_quiet) | "
       "$lease_renewals | **$rss** ($verdict_rss) | $cpu_burst / $cpu_quiet | $SECRETS x $SECRET_KIB KiB | "
       "$( ((PROBE_INTERVAL > 0)) && echo "every $PROBE_INTERVAL s" || echo off) | $PASSIVE_PORTS |")
section = f"""## Controller

\`scripts/bench-controller.sh\` builds the controller in release mode, brings up
the local control plane (\`docs/local-cluster.md\`: real etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok nodes), installs the CRD, runs
\`target/release/ftp-operator controller\` and applies N FtpServers (5 passive ports each, in
4 namespaces) in one \`kubectl apply --server-side\`. The cluster has no cloud load-balancer
controller, so \`scripts/bench-helper.py lb\` plays it, writing an ingress IP into each
Service's \`status.loadBalancer\` as soon as it appears (a few keep-alive connections, no
kubectl per Service).

The cluster also holds SECRETS=2000 unrelated Secrets of SECRET_KIB=512 KiB
each (Helm-release-shaped, random data, about 1 GiB) before the controller starts, so its memory
is measured on a busy cluster; the summary also prints what the apiserver sent for Secrets
(LIST response and WATCH event bytes, all clients) while the controller ran.

Targets: all N=200 Ready (Ready=True, observedGeneration == generation) within 30 s of the
start of the apply; 0 writes by the controller in the quiet minute that follows (after a 10 s
settle); peak RSS (VmHWM) <= 64 MiB.

Columns: load is the 1-min load average before the apply / when all were Ready / at the end
(the machine is shared). LB is the stand-in balancer's span from the first Service to the last
address written (its summed PATCH time). Quiet writes: the controller's own
\`ftp_operator_api_writes_total\` delta / objects (FtpServers, ConfigMaps, Deployments,
Services) whose resourceVersion changed / controller Events created or updated. Lease: whether
the controller's leader-election Lease was renewed in the quiet minute (expected: it is the
leader's heartbeat, not a write to any FtpServer or child). CPU: controller CPU seconds
during the burst / during the quiet minute. kcm QPS: kube-controller-manager's client-side
rate limit (\`FTPOP_KCM_API_QPS\`, default 20 QPS, burst 30, per controller).

| date (UTC) | commit | machine | load | N | kcm QPS | apply s | all Ready s | LB s | quiet writes | lease | peak RSS MiB | CPU s | unrelated Secrets | probe | passive ports |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{marker}
"""
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
if marker not in text:
    text = text.rstrip("\n") + "\n\n" + section
text = text.replace(marker, row + "\n" + marker, 1)
open(path, "w").write(text)
EOF
  log "recorded in docs/benchmarks.md"
fi
