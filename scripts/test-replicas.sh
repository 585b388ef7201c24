#!/usr/bin/env bash
# Replicas tier on the local cluster's real node: an FtpServer with 3 replicas sharing a 30-port
# range (7 ports each) behind one address, reached through the namespace balancer
# (scripts/netns-lb.sh BACKEND=node) and kube-proxy, which routes each passive port by the
# EndpointSlices the controller writes (provider generic). Every check fails on a broken build;
# none skips. Last line: "N passed, M failed".
#
#   scripts/test-replicas.sh
#
# Environment: as scripts/test-node.sh (FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN, FTPOP_KEEP_CLUSTER=1).
# Needs root.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
WORK=$ROOT/target/replicas-test
LAB=ftpop-rep
NS=ftp-operator
APP=replicas
SERVER=files
VIP=198.18.0.20
# The client namespace's own address and two more on the same link: three client addresses.
SOURCES=198.51.100.2,198.51.100.3,198.51.100.4
PASV_MIN=20000
PER_REPLICA=7
LB_TIMEOUT=6
LINK_RATE=8mbit
SESSIONS=60
# The reachability probe, often enough for a test to watch it turn (chart values).
HELM_VALUES=(--set probe.intervalSeconds=3 --set probe.stepTimeoutSeconds=2)
# nftables table closing a replica's slice inside its pod's network namespace.
PROBE_BLOCK=ftpop-probe-block

TIER=test-replicas CHECK_DETAILS=1 POLL_SECONDS=0.5
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"
# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"

cleanup() {
  [[ -n ${BLOCKED_PID:-} ]] && nsenter -t "$BLOCKED_PID" -n nft delete table inet "$PROBE_BLOCK" 2>/dev/null
  [[ -n ${HOLD_PID:-} ]] && kill "$HOLD_PID" 2>/dev/null
  [[ -n ${DOWNLOAD_PID:-} ]] && kill "$DOWNLOAD_PID" 2>/dev/null
  node_tier_cleanup
}
trap cleanup EXIT

node_tier_setup
add_client_addresses "$SOURCES"

# ------------------------------------------------------------------------------------ objects

# --force-conflicts: this tier owns every field it writes, .spec.replicas too after `kubectl scale`.
ftpserver() { # <replicas> <passive min> <passive max>
  k apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: $SERVER, namespace: $APP}
spec:
  replicas: $1
  controlPort: 21
  passivePorts: {min: $2, max: $3, perReplica: $PER_REPLICA}
  drainSeconds: 300
  keepalive: {idleSeconds: 2, intervalSeconds: 1, probes: 5}
  loadBalancer: {provider: generic, idleTimeoutSeconds: $LB_TIMEOUT}
  storage: {emptyDir: {}}
  users: {secretRef: {name: ftp-users}}
EOF
}
pod_count() { [[ $(k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o name | wc -l) == "$1" ]]; }
sessions() { # <mode> <count> [args...]: the client, from the client namespace
  in_client python3 tests/clients/replica_sessions.py "$1" "$VIP" 21 alice alice-pw-1 "$2" "$SOURCES" "${@:3}"
}
# Which replica owns each session's data ports, from the JSON lines of replica_sessions.py: prints
# "<session> <replica>" (replica "mixed" when its ports span slices).
owners() {
  python3 -c '
import json, sys
base, per = int(sys.argv[1]), int(sys.argv[2])
for line in open(sys.argv[3]):
    if not line.startswith("{"):
        continue
    s = json.loads(line)
    owners = {(p - base) // per for p in s["ports"]}
    print(s["session"], owners.pop() if len(owners) == 1 else "mixed")' "$PASV_MIN" "$PER_REPLICA" "$1"
}

log "creating the FtpServer with 3 replicas"
users_secret "alice:alice-pw-1"
ftpserver 3 "$PASV_MIN" $((PASV_MIN + 29))
until_true 60 k -n "$APP" get service "$SERVER" || die "the operator made no Service"
set_address "$SERVER" "$VIP"

# ------------------------------------------------------------------------------------ checks

t_ready() {
  until_true 240 server_ready 3 || { k -n "$APP" get ftpserver,pods,endpointslices -o wide; return 1; }
  k -n "$APP" get ftpserver "$SERVER"
}
# Each replica advertises its own slice, and the EndpointSlices send each slice to its owner.
t_slices() {
  local i pod ip want got
  for i in 0 1 2; do
    pod=$SERVER-$i
    ip=$(k -n "$APP" get pod "$pod" -o jsonpath='{.status.podIP}')
    want="$((PASV_MIN + i * PER_REPLICA))-$((PASV_MIN + i * PER_REPLICA + PER_REPLICA - 1))"
    got=$(k -n "$APP" get endpointslices -l "kubernetes.io/service-name=$SERVER" -o json | python3 -c '
import json, sys
ip = sys.argv[1]
ports = sorted(p["port"] for s in json.load(sys.stdin)["items"]
               if any(ip in e["addresses"] for e in s.get("endpoints") or [])
               for p in s.get("ports") or [] if p["name"].startswith("pasv-"))
print(f"{ports[0]}-{ports[-1]} ({len(ports)} ports)" if ports else "none")' "$ip")
    echo "$pod ($ip): passive ports $got"
    [[ $got == "$want ($PER_REPLICA ports)" ]] || { echo "want $want"; return 1; }
  done
}
# PassiveReachable as the operator's probe reports it: "<status>|<reason>|<message>".
reachability() {
  k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.conditions[?(@.type=="PassiveReachable")].status}|{.status.conditions[?(@.type=="PassiveReachable")].reason}|{.status.conditions[?(@.type=="PassiveReachable")].message}'
}
reachable_is() { # <status> <text the message contains>
  local got; got=$(reachability)
  [[ ${got%%|*} == "$1" && $got == *"$2"* ]]
}
# The probe covers every replica; closing replica 1's slice by hand (a drop rule inside its pod's
# network namespace) turns the condition False naming replica 1 and a port of its slice, and
# opening it again turns it True.
t_probe() {
  local uid pid lo=$((PASV_MIN + PER_REPLICA)) hi=$((PASV_MIN + 2 * PER_REPLICA - 1)) start got port
  until_true 120 reachable_is True "replica(s) 0, 1, 2" || { echo "PassiveReachable: $(reachability)"; return 1; }
  echo "PassiveReachable: $(reachability)"
  uid=$(k -n "$APP" get pod "$SERVER-1" -o jsonpath='{.metadata.uid}')
  pid=$(server_pid "$uid") || { echo "no ftp-server process for $SERVER-1"; return 1; }
  printf 'table inet %s {\n  chain input {\n    type filter hook input priority -10; policy accept;\n    tcp dport %s-%s drop\n  }\n}\n' \
    "$PROBE_BLOCK" "$lo" "$hi" | nsenter -t "$pid" -n nft -f - || return 1
  BLOCKED_PID=$pid
  start=$(now)
  until_true 90 reachable_is False "replica 1 ($SERVER-1)" || { echo "PassiveReachable: $(reachability)"; return 1; }
  got=$(reachability)
  echo "slice $lo-$hi of replica 1 closed; False $(since "$start") s later: $got"
  [[ $got == "False|DataConnectionFailed|"* ]] || { echo "want reason DataConnectionFailed"; return 1; }
  port=$(grep -oE 'data connection to [0-9.]+:[0-9]+' <<<"$got" | head -1 | sed 's/.*://')
  ((port >= lo && port <= hi)) || { echo "the message names port ${port:-none}, outside replica 1's slice $lo-$hi"; return 1; }
  nsenter -t "$pid" -n nft delete table inet "$PROBE_BLOCK" || return 1
  BLOCKED_PID=
  start=$(now)
  until_true 90 reachable_is True "replica(s) 0, 1, 2" || { echo "PassiveReachable: $(reachability)"; return 1; }
  echo "slice opened; True again $(since "$start") s later"
  # Rounds every 3 s with an unchanged result write nothing: no status patch, no Event.
  local before after
  sleep 5
  before=$(api_writes)
  sleep 15
  after=$(api_writes)
  echo "API writes over 15 s of probe rounds with nothing changed: $((after - before))"
  operator_metrics | grep -E '^ftp_operator_probe_(sessions_total|round_duration_seconds_(sum|count))'
  ((after == before))
}
operator_metrics() {
  local pod
  pod=$(k -n "$NS" get pods -l app.kubernetes.io/name=ftp-operator -o jsonpath='{.items[0].metadata.name}')
  k -n "$NS" get --raw "/api/v1/namespaces/$NS/pods/$pod:8080/proxy/metrics"
}
api_writes() { operator_metrics | awk '/^ftp_operator_api_writes_total/ {sum += $2} END {print sum + 0}'; }

# 60 sessions at once from three addresses; every data connection of a session on one slice, and
# that slice's replica is the one whose audit log has the session's upload.
t_sixty_sessions() {
  local out=$WORK/burst.json failures start
  start=$(now)
  sessions burst "$SESSIONS" >"$out" || { tail -5 "$out"; return 1; }
  echo "$SESSIONS sessions in $(since "$start") s"
  failures=$(grep -c '"ok": false' "$out")
  grep '"ok": false' "$out" | head -5
  [[ $(grep -c '"ok": true' "$out") == "$SESSIONS" && $failures == 0 ]] || { echo "$failures sessions failed"; return 1; }
  for i in 0 1 2; do
    audit_transfers "$SERVER-$i" upload | sed -n "s/^s-\([0-9]*\)\.txt\$/\1 $i/p"
  done | sort -n >"$WORK/uploads"
  owners "$out" | sort -n >"$WORK/owners"
  [[ $(wc -l <"$WORK/uploads") == "$SESSIONS" ]] || { echo "$(wc -l <"$WORK/uploads") uploads in the replicas' logs, want $SESSIONS"; return 1; }
  if ! diff "$WORK/uploads" "$WORK/owners" >"$WORK/owner.diff"; then
    echo "sessions whose data ports are not their control replica's slice (< log, > ports):"
    head -10 "$WORK/owner.diff"; return 1
  fi
  echo "sessions per replica (control and data): $(awk '{print $2}' "$WORK/uploads" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  # Control connections are balanced over all three.
  [[ $(awk '{print $2}' "$WORK/uploads" | sort -u | wc -l) == 3 ]] || { echo "not every replica took sessions"; return 1; }
}
# Sessions held open across a scale to 4 and back to 2: those on replicas 0 and 1 never notice.
t_scale() {
  local out=$WORK/hold.json stop=$WORK/hold.stop start lost survivors
  rm -f "$stop"
  sessions hold 12 "$stop" >"$out" 2>&1 &
  HOLD_PID=$!
  until_true 60 grep -q '^ready' "$out" || { cat "$out"; return 1; }
  start=$(now)
  k -n "$APP" scale "ftpserver/$SERVER" --replicas=4 || return 1
  until_true 180 server_ready 4 || { echo "not Ready with 4 replicas"; k -n "$APP" get ftpserver,pods; return 1; }
  echo "4 replicas Ready $(since "$start") s after kubectl scale"
  # New sessions reach the new replica too, once kube-proxy has its endpoint: the pod is Ready
  # before every node's rules list it, so bursts of 10 go until one session lands there (a burst
  # misses a programmed replica 3 with chance (3/4)^10 < 6%; six bursts in a row, 0.00002%).
  start=$(now)
  local burst reached=
  for burst in 1 2 3 4 5 6 7 8 9 10 11 12; do
    sessions burst 10 >"$WORK/burst4.json" || return 1
    [[ $(grep -c '"ok": true' "$WORK/burst4.json") == 10 ]] || { grep '"ok": false' "$WORK/burst4.json" | head -3; return 1; }
    if owners "$WORK/burst4.json" | awk '{print $2}' | has -x 3; then reached=$burst; break; fi
    sleep 2
  done
  [[ -n $reached ]] || { echo "no session reached replica 3 in 12 bursts over $(since "$start") s"; return 1; }
  echo "a new session reached replica 3 in burst $reached, $(since "$start") s after Ready"
  start=$(now)
  k -n "$APP" scale "ftpserver/$SERVER" --replicas=2 || return 1
  until_true 300 pod_count 2 || { echo "replicas 2 and 3 did not go"; k -n "$APP" get pods; return 1; }
  until_true 120 server_ready 2 || { echo "not Ready with 2 replicas"; return 1; }
  echo "down to 2 replicas $(since "$start") s after kubectl scale"
  sleep 3 # a few more LISTs on the survivors
  touch "$stop"
  wait "$HOLD_PID"; HOLD_PID=
  owners "$out" >"$WORK/hold.owners"
  survivors=$(awk '$2 == 0 || $2 == 1' "$WORK/hold.owners" | wc -l)
  echo "held sessions per replica: $(awk '{print $2}' "$WORK/hold.owners" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  ((survivors > 0)) || { echo "no held session was on replica 0 or 1"; return 1; }
  lost=$(python3 -c '
import json, sys
base, per = int(sys.argv[1]), int(sys.argv[2])
for line in open(sys.argv[3]):
    if line.startswith("{"):
        s = json.loads(line)
        if {(p - base) // per for p in s["ports"]} <= {0, 1} and not s["alive"]:
            print(s["session"], s["error"])' "$PASV_MIN" "$PER_REPLICA" "$out")
  [[ -z $lost ]] || { echo "sessions on surviving replicas lost:"; echo "$lost"; return 1; }
  echo "$survivors sessions on replicas 0 and 1 kept listing throughout"
}
# A slow download keeps going while a passive-settings change replaces every replica, one at a time.
t_rollout_keeps_download() {
  local file=long.bin start old new
  head -c 40000000 /dev/urandom >"$WORK/$file"
  copy_to_pods "$WORK/$file" || return 1
  old=$(live_pods | awk '{print $2}' | sort)
  start=$(now)
  # 40 MB at 8 mbit/s: about 40 s.
  in_client curl -sS --max-time 300 --ftp-pasv --user alice:alice-pw-1 "ftp://$VIP/$file" -o "$WORK/$file.back" &
  DOWNLOAD_PID=$!
  sleep 5
  kill -0 "$DOWNLOAD_PID" 2>/dev/null || { echo "the download ended before the change"; return 1; }
  ftpserver 2 $((PASV_MIN + 100)) $((PASV_MIN + 129)) || { echo "the change was not applied"; return 1; }
  wait "$DOWNLOAD_PID" || { DOWNLOAD_PID=; echo "the download failed"; return 1; }
  DOWNLOAD_PID=
  cmp "$WORK/$file" "$WORK/$file.back" || return 1
  echo "downloaded 40 MB intact in $(since "$start") s while the pods rolled"
  until_true 300 server_ready 2 || { echo "not Ready after the change"; k -n "$APP" get ftpserver,pods; return 1; }
  new=$(live_pods | awk '{print $2}' | sort)
  [[ -z $(comm -12 <(echo "$old") <(echo "$new")) ]] || { echo "a pod was not replaced"; return 1; }
  [[ $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.passivePorts}') == "$((PASV_MIN + 100))-$((PASV_MIN + 129))" ]] || return 1
  echo "every replica replaced, Ready with the new range $(since "$start") s after the change"
  sessions burst 6 >"$WORK/after.json" && [[ $(grep -c '"ok": true' "$WORK/after.json") == 6 ]]
}

check "an FtpServer with 3 replicas becomes Ready" t_ready
check "each replica's slice is routed to that replica alone" t_slices
check "PassiveReachable: True on 3 replicas, False naming replica 1 when its slice is closed, True again; quiet rounds write nothing" t_probe
check "$SESSIONS sessions from 3 addresses: LIST, STOR, RETR, each on its control replica" t_sixty_sessions
check "kubectl scale to 4 and back to 2 keeps sessions on the surviving replicas" t_scale
check "a slow download survives a rollout that replaces every replica" t_rollout_keeps_download

summary
