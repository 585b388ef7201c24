#!/usr/bin/env bash
# Replicas tier on the local cluster's real node: an FtpServer with 3 replicas sharing a 30-port
# range (7 ports each) behind one address, reached through the namespace balancer
# (scripts/netns-lb.sh BACKEND=node) and kube-proxy, which routes each passive port by the
# EndpointSlices the controller writes (provider generic); SFTP on port 22 of the same address.
# A second FtpServer with 3 replicas keeps its files in one S3 bucket (moto's server on the node's
# bridge address, which only this machine's pods and processes reach), behind its own address.
# Every check fails on a broken build; none skips. Last line: "N passed, M failed".
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
# The FtpServer on S3: its own address and passive range, its bucket on moto's server.
S3_SERVER=bucket
S3_VIP=198.18.0.21
S3_PASV_MIN=21000
S3_BUCKET=ftp-replicas
S3_PREFIX=files
S3_SESSIONS=30
MOTO_PORT=19090
# The real node's pod bridge (scripts/cluster/node.sh): its address is the pods' gateway.
NODE_BRIDGE=ftpop0

TIER=test-replicas CHECK_DETAILS=1 POLL_SECONDS=0.5
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"
# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"

cleanup() {
  [[ -n ${BLOCKED_PID:-} ]] && nsenter -t "$BLOCKED_PID" -n nft delete table inet "$PROBE_BLOCK" 2>/dev/null
  [[ -n ${HOLD_PID:-} ]] && kill "$HOLD_PID" 2>/dev/null
  [[ -n ${DOWNLOAD_PID:-} ]] && kill "$DOWNLOAD_PID" 2>/dev/null
  [[ -n ${SFTP_PID:-} ]] && kill "$SFTP_PID" 2>/dev/null
  [[ -n ${LOGS_PID:-} ]] && kill "$LOGS_PID" 2>/dev/null
  [[ -n ${MOTO_PID:-} ]] && kill "$MOTO_PID" 2>/dev/null
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
  sftp: {enabled: true}
  storage: {emptyDir: {}}
  users: {secretRef: {name: ftp-users}}
EOF
}
# The same user's files in one bucket for every replica, no volume.
s3_ftpserver() { # <name> <replicas> <passive min> <passive max> <bucket>
  k apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: $1, namespace: $APP}
spec:
  replicas: $2
  controlPort: 21
  passivePorts: {min: $3, max: $4, perReplica: $PER_REPLICA}
  drainSeconds: 60
  loadBalancer: {provider: generic, idleTimeoutSeconds: $LB_TIMEOUT}
  storage:
    s3:
      bucket: $5
      prefix: $S3_PREFIX
      endpoint: http://$MOTO_ADDRESS:$MOTO_PORT
      forcePathStyle: true
      credentialsSecretRef: {name: s3-credentials}
  users: {secretRef: {name: ftp-users}}
EOF
}
pod_count() { [[ $(k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o name | wc -l) == "$1" ]]; }
sessions() { # <mode> <count> [args...]: the client, from the client namespace
  in_client python3 tests/clients/replica_sessions.py "$1" "$VIP" 21 alice alice-pw-1 "$2" "$SOURCES" "${@:3}"
}
sftp_client() { in_client /usr/bin/python3 tests/clients/paramiko_sftp.py "$1" 22 "${@:2}"; }
host_key() { sftp_client "$VIP" alice password alice-pw-1 hostkey </dev/null; }
# Established connections to a pod's <port> from clients: peers outside the pod network, so not
# the operator's probe.
client_connections() { # <pod> <port>
  local uid pid
  uid=$(k -n "$APP" get pod "$1" -o jsonpath='{.metadata.uid}')
  pid=$(server_pid "$uid") || return 1
  nsenter -t "$pid" -n ss -Htn state established "( sport = :$2 )" | awk '$4 !~ /^10\.244\./' | wc -l
}
terminating() { [[ -n $(k -n "$APP" get pod "$1" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null) ]]; }
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

# moto's S3 server on the bridge's address: the pods reach it as their gateway, and nothing
# routes that address to this machine from outside. Unsigned requests create the bucket and list
# it (moto accepts those).
MOTO_ADDRESS=$(ip -4 -o addr show dev "$NODE_BRIDGE" | awk '{print $4}' | cut -d/ -f1 | head -1)
[[ -n $MOTO_ADDRESS ]] || die "the real node's bridge $NODE_BRIDGE has no address"
moto=$(scripts/moto.sh ensure) || die "installing moto failed"
"$moto" -H "$MOTO_ADDRESS" -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
until_true 60 curl -sf -o /dev/null "http://$MOTO_ADDRESS:$MOTO_PORT/" || die "moto did not answer on $MOTO_ADDRESS:$MOTO_PORT: $(tail -5 "$WORK/moto.log")"
curl -sf -o /dev/null -X PUT "http://$MOTO_ADDRESS:$MOTO_PORT/$S3_BUCKET" || die "moto did not create the bucket $S3_BUCKET"
log "creating the FtpServer with 3 replicas on the bucket $S3_BUCKET at $MOTO_ADDRESS:$MOTO_PORT"
k -n "$APP" create secret generic s3-credentials --from-literal=AWS_ACCESS_KEY_ID=testing \
  --from-literal=AWS_SECRET_ACCESS_KEY=testing >/dev/null || die "cannot create the S3 credentials Secret"
s3_ftpserver "$S3_SERVER" 3 "$S3_PASV_MIN" $((S3_PASV_MIN + 20)) "$S3_BUCKET"
until_true 60 k -n "$APP" get service "$S3_SERVER" || die "the operator made no Service for $S3_SERVER"
set_address "$S3_SERVER" "$S3_VIP"

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
# A condition as the operator reports it: "<status>|<reason>|<message>".
condition() { # <type>
  local c="{.status.conditions[?(@.type==\"$1\")]"
  k -n "$APP" get ftpserver "$SERVER" -o jsonpath="$c.status}|$c.reason}|$c.message}"
}
condition_is() { [[ $(condition "$1") == "$2"* ]]; } # <type> <"status|reason|" it starts with>
# PassiveReachable, as the operator's probe reports it.
reachability() { condition PassiveReachable; }
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
  # The probe's SFTP session through the balancer, the host key checked against the Secret.
  until_true 60 condition_is SftpReachable 'True|Reachable|' || { echo "SftpReachable: $(condition SftpReachable)"; return 1; }
  echo "SftpReachable: $(condition SftpReachable)"
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
# A slow FTP download and a slow SFTP download keep going while a passive-settings change replaces
# every replica, one at a time (highest ordinal first). The SFTP download is placed on replica 1,
# the first replaced, so its whole remainder runs on a draining server; every client sees the same
# SFTP host key before, during and after.
t_rollout_keeps_download() {
  local file=long.bin sftp_file=long-sftp.bin start old new key_before key_after attempt placed='' got
  local sftp_out=$WORK/sftp-get.json ftp_time=$WORK/ftp.seconds sftp_time=$WORK/sftp.seconds
  head -c 40000000 /dev/urandom >"$WORK/$file"
  head -c 32000000 /dev/urandom >"$WORK/$sftp_file"
  copy_to_pods "$WORK/$file" && copy_to_pods "$WORK/$sftp_file" || return 1
  old=$(live_pods | awk '{print $2}' | sort)
  key_before=$(host_key) || { echo "no SFTP host key before the change: $key_before"; return 1; }
  [[ $key_before == *hostkey* ]] || { echo "no SFTP host key before the change: $key_before"; return 1; }
  start=$(now)
  # kube-proxy picks the replica: a download that landed on replica 0 is ended and started again
  # (a 1 in 2^10 chance of never landing on replica 1).
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    ip netns exec "$LAB-client" /usr/bin/python3 tests/clients/paramiko_sftp.py "$VIP" 22 alice password alice-pw-1 \
      get "$sftp_file" "$WORK/$sftp_file.back" </dev/null >"$sftp_out" 2>&1 &
    SFTP_PID=$!
    until_true 30 grep -q '^started' "$sftp_out" ||
      { echo "attempt $attempt: the SFTP download did not start in 30 s: $(cat "$sftp_out")"; k -n "$APP" get pods -o wide; return 1; }
    if [[ $(client_connections "$SERVER-1" 2222) -ge 1 ]]; then placed=$attempt; break; fi
    kill "$SFTP_PID"; wait "$SFTP_PID" 2>/dev/null; SFTP_PID=
  done
  [[ -n $placed ]] || { echo "no SFTP download landed on replica 1 in 10 attempts"; return 1; }
  echo "SFTP download of 32 MB on replica 1 (attempt $placed)"
  k -n "$APP" logs -f "$SERVER-1" >"$WORK/replica-1.log" 2>&1 &
  LOGS_PID=$!
  start=$(now)
  # 40 MB over FTP and 32 MB over SFTP sharing 8 mbit/s: both run for about a minute.
  (in_client curl -sS --max-time 300 --ftp-pasv --user alice:alice-pw-1 "ftp://$VIP/$file" -o "$WORK/$file.back" &&
    since "$start" >"$ftp_time") &
  DOWNLOAD_PID=$!
  (wait_sftp() { while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; }; wait_sftp "$SFTP_PID"; since "$start" >"$sftp_time") &
  local sftp_watch=$!
  sleep 5
  kill -0 "$DOWNLOAD_PID" 2>/dev/null || { echo "the FTP download ended before the change"; return 1; }
  kill -0 "$SFTP_PID" 2>/dev/null || { echo "the SFTP download ended before the change"; cat "$sftp_out"; return 1; }
  ftpserver 2 $((PASV_MIN + 100)) $((PASV_MIN + 129)) || { echo "the change was not applied"; return 1; }
  until_true 60 terminating "$SERVER-1" || { echo "replica 1 was not replaced first"; return 1; }
  kill -0 "$SFTP_PID" 2>/dev/null || { echo "the SFTP download ended before replica 1 began draining"; cat "$sftp_out"; return 1; }
  echo "replica 1 draining $(since "$start") s after the downloads began, its SFTP download still running"
  wait "$DOWNLOAD_PID" || { DOWNLOAD_PID=; echo "the FTP download failed"; return 1; }
  DOWNLOAD_PID=
  wait "$SFTP_PID"; got=$?
  SFTP_PID=
  wait "$sftp_watch"
  kill "$LOGS_PID" 2>/dev/null; LOGS_PID=
  if ((got != 0)) || ! cmp "$WORK/$sftp_file" "$WORK/$sftp_file.back"; then
    echo "the SFTP download failed (exit $got):"; tail -20 "$sftp_out"
    echo "replica 1's log:"; tail -20 "$WORK/replica-1.log"
    return 1
  fi
  cmp "$WORK/$file" "$WORK/$file.back" || return 1
  echo "downloaded 40 MB over FTP intact in $(cat "$ftp_time") s and 32 MB over SFTP intact in $(cat "$sftp_time") s while the pods rolled"
  until_true 300 server_ready 2 || { echo "not Ready after the change"; k -n "$APP" get ftpserver,pods; return 1; }
  new=$(live_pods | awk '{print $2}' | sort)
  [[ -z $(comm -12 <(echo "$old") <(echo "$new")) ]] || { echo "a pod was not replaced"; return 1; }
  [[ $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.passivePorts}') == "$((PASV_MIN + 100))-$((PASV_MIN + 129))" ]] || return 1
  echo "every replica replaced, Ready with the new range $(since "$start") s after the change"
  # The same host key from the old pods, the drained session and the new pods.
  key_after=$(host_key) || { echo "no SFTP host key after the change: $key_after"; return 1; }
  got=$(python3 -c 'import json, sys; print(json.dumps({"hostkey": json.loads(open(sys.argv[1]).read().splitlines()[-1])["hostkey"]}))' "$sftp_out") || return 1
  [[ $key_after == "$key_before" && $got == "$key_before" ]] ||
    { echo "the SFTP host key changed: before $key_before, the download's $got, after $key_after"; return 1; }
  echo "the same SFTP host key before, during and after the rollout"
  sessions burst 6 >"$WORK/after.json" && [[ $(grep -c '"ok": true' "$WORK/after.json") == 6 ]]
}

# ------------------------------------------------------------------------------------ S3

# Helpers about one FtpServer read SERVER, VIP and PASV_MIN: the S3 checks set them to the S3
# server's (bash's locals are visible to the functions they call).
s3_server() { SERVER=$S3_SERVER VIP=$S3_VIP PASV_MIN=$S3_PASV_MIN; }
s3_get() { curl -sf "http://$MOTO_ADDRESS:$MOTO_PORT/$S3_BUCKET?$1"; }
# The bucket's multipart uploads neither completed nor aborted (ListMultipartUploads).
s3_pending() { s3_get uploads; }
s3_pending_is() { # <yes|no> <key>: whether a multipart upload of <key> is pending (moto answered)
  local list
  list=$(s3_pending) || return 1
  if [[ $1 == yes ]]; then [[ $list == *"<Key>$2</Key>"* ]]; else [[ $list != *"<Key>$2</Key>"* ]]; fi
}

t_s3_ready() {
  local SERVER VIP PASV_MIN pod volumes
  s3_server
  until_true 240 server_ready 3 || { k -n "$APP" get ftpserver,pods -o wide; k -n "$APP" describe ftpserver "$SERVER" | tail -20; return 1; }
  k -n "$APP" get ftpserver "$SERVER"
  # No data volume: nothing mounted where files live, no claim, no claim templates.
  for pod in $(live_pods | awk '{print $1}'); do
    volumes=$(k -n "$APP" get pod "$pod" -o jsonpath='{.spec.volumes[*].name}')
    echo "$pod volumes: $volumes"
    [[ " $volumes " != *" data "* ]] || { echo "$pod has a data volume"; return 1; }
    [[ -z $(k -n "$APP" get pod "$pod" -o jsonpath='{.spec.volumes[*].persistentVolumeClaim.claimName}') ]] || { echo "$pod mounts a claim"; return 1; }
    if k -n "$APP" get pod "$pod" -o jsonpath='{.spec.containers[*].volumeMounts[*].mountPath}' | tr ' ' '\n' | has -x /srv/ftp; then
      echo "$pod mounts a volume at /srv/ftp"; return 1
    fi
  done
  [[ -z $(k -n "$APP" get statefulset "$SERVER" -o jsonpath='{.spec.volumeClaimTemplates}') ]] || { echo "the StatefulSet has claim templates"; return 1; }
}
# Uploads over many sessions land on every replica; later sessions read every file back, byte for
# byte, from whichever replica serves them; each file is one object of its size in the bucket.
t_s3_shared() {
  local SERVER VIP PASV_MIN out=$WORK/s3-burst.json back=$WORK/s3-readback.json readers=12 cross
  s3_server
  sessions burst "$S3_SESSIONS" >"$out" || { tail -5 "$out"; return 1; }
  [[ $(grep -c '"ok": true' "$out") == "$S3_SESSIONS" ]] || { grep '"ok": false' "$out" | head -5; return 1; }
  owners "$out" | sort -n >"$WORK/s3-uploads"
  echo "uploads per replica: $(awk '{print $2}' "$WORK/s3-uploads" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  [[ $(awk '$2 != "mixed" {print $2}' "$WORK/s3-uploads" | sort -u | wc -l) == 3 ]] || { echo "the uploads did not land on all 3 replicas"; return 1; }
  sessions readback "$readers" "$S3_SESSIONS" >"$back" || { tail -5 "$back"; return 1; }
  grep '"ok": false' "$back" | head -5
  [[ $(grep -c '"ok": true' "$back") == "$readers" ]] || { echo "$(grep -c '"ok": false' "$back") reading sessions failed"; return 1; }
  owners "$back" | sort -n >"$WORK/s3-readers"
  echo "reading sessions per replica: $(awk '{print $2}' "$WORK/s3-readers" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  # Every reader read every file: the reads from another replica than the upload's.
  cross=$(awk 'NR == FNR {up[$1] = $2; next} {for (f in up) if (up[f] != $2) n++} END {print n + 0}' "$WORK/s3-uploads" "$WORK/s3-readers")
  echo "$readers sessions read all $S3_SESSIONS files intact; $cross of the $((readers * S3_SESSIONS)) reads from another replica than the upload's"
  ((cross > 0)) || { echo "no file was read from another replica than its upload's"; return 1; }
  s3_get "list-type=2&prefix=$S3_PREFIX/" >"$WORK/s3-list.xml" || { echo "cannot list the bucket"; return 1; }
  python3 - "$WORK/s3-list.xml" "$S3_PREFIX" "$S3_SESSIONS" "$SOURCES" <<'PY'
import sys, xml.etree.ElementTree as ET
path, prefix, count, sources = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
ns = lambda e: e.tag.rsplit("}", 1)[-1]
objects = {}
for c in ET.parse(path).getroot().iter():
    if ns(c) == "Contents":
        fields = {ns(f): f.text for f in c}
        objects[fields["Key"]] = int(fields["Size"])
want = {f"{prefix}/s-{n}.txt": len(f"session {n} from {sources[n % len(sources)]}\n") * 200 for n in range(count)}
wrong = {k: (objects.get(k), v) for k, v in want.items() if objects.get(k) != v}
print(f"{len(objects)} objects under {prefix}/, {sum(want.values())} bytes in the {count} uploads")
if wrong:
    sys.exit(f"objects missing or of the wrong size (got, want): {wrong}")
PY
}
# An upload cut off mid-transfer through the balancer leaves nothing in the bucket: its multipart
# upload was under way (parts in the bucket, not visible as an object), and is aborted when the
# client goes; no object of that name appears.
t_s3_cut_upload() {
  local SERVER VIP PASV_MIN file=cut.bin out=$WORK/cut-upload.out listing start
  s3_server
  head -c 64000000 /dev/urandom >"$WORK/$file"
  start=$(now)
  in_client curl -sS --max-time 300 --ftp-pasv --user alice:alice-pw-1 -T "$WORK/$file" "ftp://$VIP/$file" >"$out" 2>&1 &
  HOLD_PID=$!
  # At 8 mbit/s the first 8 MiB part is sent after about 9 s; the upload is then a multipart
  # upload in the bucket.
  until_true 60 s3_pending_is yes "$S3_PREFIX/$file" ||
    { echo "no multipart upload started in 60 s; curl: $(cat "$out")"; s3_pending; return 1; }
  kill -0 "$HOLD_PID" 2>/dev/null || { echo "the upload ended before it was cut: $(cat "$out")"; return 1; }
  echo "multipart upload under way $(since "$start") s after the upload began; cutting the client off"
  # The client process itself (in_client runs it under a subshell), as a client that dies would.
  pkill -KILL -f "ftp://$VIP/$file"; wait "$HOLD_PID" 2>/dev/null; HOLD_PID=
  until_true 60 s3_pending_is no "$S3_PREFIX/$file" ||
    { echo "the cut upload's multipart upload was not aborted"; s3_pending; return 1; }
  listing=$(s3_get "list-type=2&prefix=$S3_PREFIX/$file") || { echo "cannot list the bucket"; return 1; }
  [[ $listing != *"<Key>$S3_PREFIX/$file</Key>"* ]] || { echo "the cut upload left an object"; return 1; }
  echo "aborted $(since "$start") s after the upload began; no object $S3_PREFIX/$file"
}
# An FtpServer naming a bucket that does not exist says so in its status, from what the real
# kubelet keeps of the server's last words (its termination message), before any client tries.
t_s3_missing_bucket() {
  local SERVER=nobucket bucket=ftp-replicas-missing got
  s3_ftpserver "$SERVER" 1 $((S3_PASV_MIN + 50)) $((S3_PASV_MIN + 56)) "$bucket" || return 1
  until_true 60 k -n "$APP" get service "$SERVER" || { echo "the operator made no Service for $SERVER"; return 1; }
  set_address "$SERVER" 198.18.0.22
  until_true 120 condition_is Stalled 'True|ObjectStorageUnavailable|' ||
    { echo "Stalled: $(condition Stalled)"; k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o wide; return 1; }
  got=$(condition Stalled)
  echo "Stalled: $got"
  [[ $got == *"$bucket"* ]] || { echo "the message does not name the bucket $bucket"; return 1; }
  condition_is Ready 'False|' || { echo "Ready: $(condition Ready)"; return 1; }
  k -n "$APP" delete ftpserver "$SERVER" --wait=true --timeout=60s >/dev/null
}
check "an FtpServer with 3 replicas becomes Ready" t_ready
check "each replica's slice is routed to that replica alone" t_slices
check "PassiveReachable: True on 3 replicas, False naming replica 1 when its slice is closed, True again; SftpReachable True; quiet rounds write nothing" t_probe
check "$SESSIONS sessions from 3 addresses: LIST, STOR, RETR, each on its control replica" t_sixty_sessions
check "kubectl scale to 4 and back to 2 keeps sessions on the surviving replicas" t_scale
check "S3: an FtpServer with 3 replicas on one bucket becomes Ready; its pods have no data volume" t_s3_ready
check "S3: $S3_SESSIONS sessions' uploads over 3 replicas, read back intact by later sessions on any replica, in the bucket" t_s3_shared
check "S3: an upload cut off mid-transfer through the balancer leaves no object, its multipart upload aborted" t_s3_cut_upload
check "S3: an FtpServer naming a bucket that does not exist is Stalled with ObjectStorageUnavailable, naming the bucket" t_s3_missing_bucket
check "a slow FTP and a slow SFTP download survive a rollout that replaces every replica; one SFTP host key" t_rollout_keeps_download

summary
