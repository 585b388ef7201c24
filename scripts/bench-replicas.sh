#!/usr/bin/env bash
# Benchmark on the local cluster's real node: SESSIONS sessions (default 500) each downloading the
# same 1 MiB file through one address, first with 1 replica, then with 3. The path is the replicas
# tier's (scripts/test-replicas.sh): the namespace balancer (scripts/netns-lb.sh BACKEND=node, no
# link shaping), kube-proxy, and the EndpointSlices the controller writes (provider generic), with
# passivePorts 20000-20299 in slices of 100. The clients are anonymous ftplib sessions from three
# addresses, released together by a barrier (scripts/bench-replica-sessions.py).
#
# Prints, per round (ROUNDS per replica count, default 2): wall time of the downloads, sessions
# completed / failed (a failure: not the whole file, by size and SHA-256), 421s at connect that
# were retried, sessions per replica (the servers' audit logs), each pod's peak memory (its memory
# cgroup's memory.max_usage_in_bytes, reset before the round, and the ftp-server's VmHWM, reset
# through clear_refs), and the load average before and after. Not a test: figures for
# docs/benchmarks.md.
#
#   scripts/bench-replicas.sh [SESSIONS]
#
# Environment: ROUNDS; FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN (default: the debug build);
# FTPOP_KEEP_CLUSTER=1 keeps the cluster up afterwards. Needs root; takes the real node.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
SESSIONS=${1:-500}
ROUNDS=${ROUNDS:-2}
[[ $SESSIONS =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "bench-replicas: SESSIONS and ROUNDS must be positive numbers" >&2; exit 2; }
WORK=$ROOT/target/replicas-bench
LAB=ftpop-benchrep
NS=ftp-operator
APP=bench
SERVER=files
VIP=198.18.0.30
SOURCES=198.51.100.2,198.51.100.3,198.51.100.4
PASV_MIN=20000
PER_REPLICA=100
LB_TIMEOUT=60
LINK_RATE=
FILE=one.bin

TIER=bench-replicas
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"
# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"
trap node_tier_cleanup EXIT
# 500 sessions need some 1000 descriptors in the client.
ulimit -n "$(ulimit -Hn)"

node_tier_setup
add_client_addresses "$SOURCES"
head -c 1048576 /dev/urandom >"$WORK/$FILE"
SHA=$(sha256sum "$WORK/$FILE" | cut -d' ' -f1)

ftpserver() { # <replicas>
  k apply --server-side -f - >/dev/null <<EOF
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: $SERVER, namespace: $APP}
spec:
  replicas: $1
  controlPort: 21
  passivePorts: {min: $PASV_MIN, max: $((PASV_MIN + 3 * PER_REPLICA - 1)), perReplica: $PER_REPLICA}
  drainSeconds: 30
  anonymous: {enabled: true}
  loadBalancer: {provider: generic, idleTimeoutSeconds: $LB_TIMEOUT}
  storage: {emptyDir: {}}
EOF
}
# Downloads of FILE each pod's audit log holds so far: "<pod> <count>" per line.
downloads() {
  local name uid
  while read -r name uid; do
    echo "$name $(audit_transfers "$name" download | grep -cx "$FILE")"
  done < <(live_pods)
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

# One round: resets each pod's peaks, runs the sessions, prints one row of the table.
round() { # <replicas> <round>
  local name uid pid cgroup before after result memory="" per_replica="" count
  declare -A pids cgroups
  while read -r name uid; do
    pid=$(server_pid "$uid") || die "no ftp-server process for pod $name"
    cgroup=$(pod_memory_cgroup "$pid") || die "no memory cgroup for pod $name"
    echo 0 >"$cgroup/memory.max_usage_in_bytes" || die "cannot reset $cgroup/memory.max_usage_in_bytes"
    echo 5 >"/proc/$pid/clear_refs" || die "cannot reset the VmHWM of $pid"
    pids[$name]=$pid cgroups[$name]=$cgroup
  done < <(live_pods)
  downloads >"$WORK/downloads.before"
  before=$(loadavg)
  result=$(in_client python3 scripts/bench-replica-sessions.py "$VIP" 21 "$FILE" 1048576 "$SHA" \
    "$SESSIONS" "$SOURCES" "$PASV_MIN" "$PER_REPLICA")
  after=$(loadavg)
  echo "$result" >>"$WORK/results.json"
  downloads >"$WORK/downloads.after"
  for name in $(printf '%s\n' "${!pids[@]}" | sort); do
    count=$(($(awk -v p="$name" '$1 == p {print $2}' "$WORK/downloads.after") - $(awk -v p="$name" '$1 == p {print $2}' "$WORK/downloads.before")))
    per_replica+="${per_replica:+, }${name##*-}: $count"
    memory+="${memory:+, }${name##*-}: $(mib "$(cat "${cgroups[$name]}/memory.max_usage_in_bytes")") / $(mib $(($(awk '/^VmHWM/ {print $2}' "/proc/${pids[$name]}/status") * 1024)))"
  done
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
replicas, number, per_replica, memory, before, after = sys.argv[2:]
seconds, completed, failed, refused = (r[key] for key in ("seconds", "completed", "failed", "refused_at_connect"))
print(f"| {replicas} | {number} | {seconds} s | {completed} / {failed} | {refused} | {per_replica} | {memory} | {before} → {after} |")
for error in r["first_errors"]:
    print("    failure:", error)' "$result" "$1" "$2" "$per_replica" "$memory" "$before" "$after"
}

log "an FtpServer with 1 replica"
ftpserver 1
until_true 60 k -n "$APP" get service "$SERVER" || die "the operator made no Service"
set_address "$SERVER" "$VIP"
until_true 240 server_ready 1 || die "not Ready with 1 replica"
copy_to_pods "$WORK/$FILE" || die "cannot put $FILE into the pods"

echo "$SESSIONS sessions x 1 MiB through $VIP, $(nproc) cores, $(git rev-parse --short HEAD), $(date -u '+%F %H:%M UTC')"
echo "| replicas | round | wall time | completed / failed | 421 at connect, retried | downloads per replica (audit log) | peak MiB per replica: pod cgroup / VmHWM | load average before → after |"
echo "|---|---|---|---|---|---|---|---|"
for ((r = 1; r <= ROUNDS; r++)); do round 1 "$r"; sleep 5; done

log "scaling to 3 replicas"
k -n "$APP" scale "ftpserver/$SERVER" --replicas=3 >/dev/null || die "kubectl scale failed"
until_true 240 server_ready 3 || die "not Ready with 3 replicas"
copy_to_pods "$WORK/$FILE" || die "cannot put $FILE into the pods"
for ((r = 1; r <= ROUNDS; r++)); do round 3 "$r"; sleep 5; done
