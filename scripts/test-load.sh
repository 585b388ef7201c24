#!/usr/bin/env bash
# Load tier on the local cluster's real node: the FtpServer of examples/ftpserver.yaml (its
# `resources`: a 128Mi memory limit) with a users Secret hashed by `ftp-server hash-password` at
# its default cost, reached through the namespace balancer (scripts/netns-lb.sh BACKEND=node) and
# kube-proxy from a client namespace with several addresses, as real clients log in: 200 sessions
# one after another (1000 downloads in a row), 60 at once from three addresses and 50 at once from
# one, plain FTP and FTPS mixed, each LIST, RETR and STOR with every byte checked. No failure, no
# container restart, no OOMKill; the pod's memory peak is printed. Then which client address the
# server sees (its audit log) behind a balancer that forwards client addresses unchanged (what
# externalTrafficPolicy: Local keeps), one that masquerades them, and one that proxies and sends
# PROXY protocol headers. Every check fails on a broken build; none skips. Last line: "N passed,
# M failed".
#
#   scripts/test-load.sh
#
# Environment: as scripts/test-node.sh (FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN, FTPOP_KEEP_CLUSTER=1).
# Needs root.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
WORK=$ROOT/target/load-test
LAB=ftpop-load
NS=ftp-operator
APP=load
SERVER=contoso
VIP=198.18.0.30
# The address the proxying balancer answers on (one of netns-lb.sh's NODE_FRONTS), and the address
# it connects to the node from: the one the server trusts for PROXY headers.
FRONT=198.18.1.30
BALANCER_ADDRESS=198.19.255.1
# The client namespace's own address, two more for three offices, and one for a single NAT.
THREE_SOURCES=198.51.100.2,198.51.100.3,198.51.100.4
ONE_SOURCE=198.51.100.5
# The example's idle timeout: this tier is about load, not about forgotten flows.
LB_TIMEOUT=1800
LINK_RATE=
SEQUENTIAL=200
RETRS_EACH=5
SEED=seed.bin

TIER=test-load CHECK_DETAILS=1 POLL_SECONDS=0.5
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"
# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"

cleanup() { node_tier_cleanup; }
trap cleanup EXIT

node_tier_setup
add_client_addresses "$THREE_SOURCES,$ONE_SOURCE"
# Client addresses reach the node unchanged, as through a cloud's pass-through balancer.
BACKEND=node scripts/netns-lb.sh masquerade "$LAB" off || die "cannot turn the balancer's masquerade off"

# ------------------------------------------------------------------------------------ objects

tls_secret() { # a certificate for the VIP and the proxy's address, self-signed
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$SERVER" \
    -addext "subjectAltName=IP:$VIP,IP:$FRONT" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
  k -n "$APP" create secret tls ftp-tls --cert="$WORK/tls.crt" --key="$WORK/tls.key" --dry-run=client -o yaml |
    k apply -f - >/dev/null
}
# The example's FtpServer as it is (resources, keepalive, provider), in this tier's namespace, with
# the TLS Secret for FTPS and the given extra spec (a JSON object merged in).
ftpserver() { # [extra spec as JSON]
  local extra=${1:-'{}'}
  python3 -c '
import json, sys, yaml
server = next(d for d in yaml.safe_load_all(open("examples/ftpserver.yaml")) if d and d["kind"] == "FtpServer")
server["metadata"]["namespace"] = sys.argv[1]
server["spec"]["tls"] = {"secretRef": {"name": "ftp-tls"}}
server["spec"].update(json.loads(sys.argv[2]))
print(json.dumps(server))' "$APP" "$extra" | k apply --server-side -f - >/dev/null
}
example_memory_limit() {
  python3 -c 'import sys, yaml; print(next(d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "FtpServer")["spec"]["resources"]["limits"]["memory"])' <examples/ftpserver.yaml
}
ready_at() { # <address>
  [[ $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.publicAddress} {.status.conditions[?(@.type=="Ready")].status}') == "$1 True" ]]
}
pod_uid() { k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.uid}'; }
container_status() { k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o jsonpath='{.items[0].status.containerStatuses[0]}'; }
# <mode> <host> <sessions> <sources> [retrs]: tests/clients/load_sessions.py in the client namespace
load_sessions() {
  in_client python3 tests/clients/load_sessions.py "$1" "$2" alice "$PASSWORD" "$WORK/tls.crt" "$3" "$4" \
    "$SEED" "$SEED_SHA256" "${@:5}"
}

PASSWORD=alice-$RANDOM-$RANDOM
log "creating the example's FtpServer (a default-cost hash, the example's resources)"
users_secret "alice:$PASSWORD"
tls_secret
ftpserver
until_true 60 k -n "$APP" get service "$SERVER" || die "the operator made no Service"
set_address "$SERVER" "$VIP"
head -c 65536 /dev/urandom >"$WORK/$SEED"
SEED_SHA256=$(sha256sum "$WORK/$SEED" | cut -d' ' -f1)

# ------------------------------------------------------------------------------------ checks

vip_accepts() { in_client timeout 2 bash -c "exec 3<>/dev/tcp/$VIP/21"; }
t_ready() {
  local hash_params limit
  until_true 180 ready_at "$VIP" || { k -n "$APP" get ftpserver "$SERVER" -o yaml | tail -30; return 1; }
  until_true 30 vip_accepts || { echo "the VIP refuses port 21 30 s after Ready"; return 1; }
  copy_to_pods "$WORK/$SEED" || return 1
  limit=$(k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o jsonpath='{.items[0].spec.containers[0].resources.limits.memory}')
  hash_params=$(k -n "$APP" get secret ftp-users -o jsonpath='{.data.users}' | base64 -d | cut -d'$' -f2-4)
  echo "memory limit $limit (the example's: $(example_memory_limit)); alice's hash: $hash_params"
  [[ $limit == "$(example_memory_limit)" ]] || return 1
  # The server's default cost, not a cheap test hash.
  [[ $hash_params == 'argon2id$v=19$m=19456,t=2,p=1' ]] || { echo "want hash-password's default argon2id m=19456,t=2"; return 1; }
}
# JSON of load_sessions.py, printed; true when every session passed.
sessions_ok() { # <json file>
  cat "$1"
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(r["ok"] != r["sessions"] or r["failed"] != 0)' "$1"
}
t_sequential() {
  load_sessions sequential "$VIP" "$SEQUENTIAL" "${THREE_SOURCES%%,*}" "$RETRS_EACH" >"$WORK/sequential.json"
  sessions_ok "$WORK/sequential.json" || return 1
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(r["downloads"] < 1000)' "$WORK/sequential.json" ||
    { echo "fewer than 1000 downloads"; return 1; }
}
t_three_addresses() {
  load_sessions concurrent "$VIP" 60 "$THREE_SOURCES" >"$WORK/three.json"
  sessions_ok "$WORK/three.json"
}
t_one_address() {
  load_sessions concurrent "$VIP" 50 "$ONE_SOURCE" >"$WORK/one.json"
  sessions_ok "$WORK/one.json"
}
# Memory of the server's container as its cgroup (v1 here, v2 elsewhere) and the kernel saw it.
t_no_restart() {
  local status pid cgroup peak limit failcnt hwm
  status=$(container_status)
  python3 -c '
import json, sys
s = json.loads(sys.argv[1])
last = (s.get("lastState") or {}).get("terminated") or {}
print("restarts", s.get("restartCount"), "last termination:", last.get("reason", "none"))
sys.exit(s.get("restartCount") != 0 or bool(last))' "$status" || return 1
  pid=$(server_pid "$(pod_uid)") || { echo "no ftp-server process for the pod"; return 1; }
  hwm=$(awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
  if [[ -f /sys/fs/cgroup/memory.peak || $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    cgroup=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' "/proc/$pid/cgroup")
    peak=$(cat "$cgroup/memory.peak") limit=$(cat "$cgroup/memory.max")
    failcnt=$(awk '$1 == "max" {print $2}' "$cgroup/memory.events")
  else
    cgroup=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" {print $3}' "/proc/$pid/cgroup")
    peak=$(cat "$cgroup/memory.max_usage_in_bytes") limit=$(cat "$cgroup/memory.limit_in_bytes")
    failcnt=$(cat "$cgroup/memory.failcnt")
  fi
  echo "container memory peak $((peak / 1048576)) MiB of a $((limit / 1048576)) MiB limit (cgroup, page cache included; hit the limit $failcnt times); ftp-server peak RSS (VmHWM) $hwm MiB"
  ((limit == 128 * 1048576)) || { echo "the container's limit is not the example's 128Mi"; return 1; }
}

# Which client address the server sees: one session from CLIENT uploads a file named after the
# mode, and the audit log's transfer line for it names the client.
CLIENT=198.51.100.3
seen_client() { # <file name>: the audit log's client for that upload
  k -n "$APP" logs -l "app.kubernetes.io/instance=$SERVER" --tail=-1 | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        fields = json.loads(line)
    except ValueError:
        continue
    fields = fields.get("fields", fields)
    if fields.get("event") == "transfer" and fields.get("path", "").rsplit("/", 1)[-1] == sys.argv[1]:
        print(fields.get("client"))' "$1" | tail -1
}
upload_from() { # <host> <file name>
  echo "$2" >"$WORK/$2"
  in_client curl -sS --max-time 30 --ftp-pasv --no-ftp-skip-pasv-ip --interface "$CLIENT" \
    --user "alice:$PASSWORD" -T "$WORK/$2" "ftp://$1/$2"
}
shows_client() { # <host> <mode> <address the server must see>
  local seen
  upload_from "$1" "client-$2.txt" || return 1
  until_true 10 eval '[[ -n $(seen_client "client-$2.txt") ]]'
  seen=$(seen_client "client-$2.txt")
  echo "from $CLIENT through $1 ($2): the server's audit log says client ${seen:-nothing}"
  [[ $seen == "$3" ]]
}
# The lockout as the server applies it to what it sees: wrong passwords from GUESSER (as many as
# lock an address out), then alice's right password from CLIENT. Prints the reply to her login.
GUESSER=198.51.100.4
guesses_then_login() { # <host>
  local i
  for i in 1 2 3 4 5; do
    in_client curl -sS --max-time 30 --interface "$GUESSER" --user "alice:wrong-$i" "ftp://$1/" -o /dev/null 2>/dev/null
  done
  in_client curl -sv --max-time 60 --ftp-pasv --no-ftp-skip-pasv-ip --interface "$CLIENT" \
    --user "alice:$PASSWORD" "ftp://$1/" -o /dev/null 2>&1 | grep -E '^< (230|421|530) ' | head -1
}
t_address_preserved() {
  local last
  shows_client "$VIP" pass-through "$CLIENT" || return 1
  last=$(guesses_then_login "$VIP")
  echo "after 5 wrong passwords from $GUESSER, alice from $CLIENT: ${last:-no reply}"
  [[ $last == "< 230 "* ]] || { echo "another client's guesses locked alice out"; return 1; }
}
# The example's loadBalancer block with more source ranges, as JSON for ftpserver().
load_balancer_with_ranges() { # <cidr...>
  python3 -c '
import json, sys, yaml
server = next(d for d in yaml.safe_load_all(open("examples/ftpserver.yaml")) if d and d["kind"] == "FtpServer")
balancer = server["spec"]["loadBalancer"]
balancer["sourceRanges"] = balancer.get("sourceRanges", []) + sys.argv[1:]
print(json.dumps({"loadBalancer": balancer}))' "$@"
}
# Behind a masquerading balancer the node sees the balancer's address, and kube-proxy checks
# `sourceRanges` against that address: the example's client range alone drops every connection,
# so the balancer's address is added, as a user of such a balancer must.
t_address_masqueraded() {
  local verdict=0 last
  ftpserver "$(load_balancer_with_ranges "$BALANCER_ADDRESS/32")" || return 1
  BACKEND=node scripts/netns-lb.sh masquerade "$LAB" on || return 1
  until_true 60 upload_from "$VIP" client-masquerade-probe.txt ||
    { echo "no session through the masquerading balancer"; verdict=1; }
  if ((verdict == 0)) && shows_client "$VIP" masquerading "$BALANCER_ADDRESS"; then
    last=$(guesses_then_login "$VIP")
    echo "after 5 wrong passwords from $GUESSER, alice from $CLIENT: ${last:-no reply}"
    # Both are the balancer's address to the server: one address, one lockout.
    [[ $last == "< 421 Too many failed logins"* ]] || { echo "want the shared address locked out"; verdict=1; }
  else
    verdict=1
  fi
  BACKEND=node scripts/netns-lb.sh masquerade "$LAB" off || return 1
  return "$verdict"
}
# A proxy run in front (provider generic) at FRONT sends a PROXY header on every connection,
# control and data; the server reads headers from the balancer's address only, and advertises FRONT
# in its PASV replies.
# HAProxy (Debian's, as tests/proxy.rs uses it) plays that balancer; it runs inside the balancer's
# namespace, so netns-lb.sh down ends it.
haproxy_config() {
  cat <<EOF
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend control
  bind $FRONT:21
  default_backend control
backend control
  server node $VIP:21 send-proxy-v2
frontend passive
  bind $FRONT:20000-20019
  default_backend passive
# No port: each connection goes to the port it came in on.
backend passive
  server node $VIP send-proxy-v2
EOF
}
front_accepts() { in_client timeout 2 bash -c "exec 3<>/dev/tcp/$FRONT/21"; }
t_address_proxy_protocol() {
  local start
  haproxy_config >"$WORK/haproxy.cfg"
  scripts/netns-lb.sh exec "$LAB" balancer ip addr add "$FRONT/32" dev cli0 || return 1
  scripts/netns-lb.sh exec "$LAB" balancer haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  until_true 10 front_accepts || { echo "HAProxy does not listen on $FRONT:21"; cat "$WORK/haproxy.log"; return 1; }
  start=$(now)
  ftpserver "{\"publicAddress\": \"$FRONT\", \"loadBalancer\": {\"provider\": \"generic\", \"idleTimeoutSeconds\": 1800, \"sourceRanges\": [\"0.0.0.0/0\"], \"proxyProtocol\": {\"trustedSources\": [\"$BALANCER_ADDRESS/32\"]}}}" ||
    return 1
  until_true 180 ready_at "$FRONT" || { k -n "$APP" get ftpserver "$SERVER" -o yaml | tail -30; return 1; }
  echo "Ready at $FRONT with PROXY protocol $(since "$start") s after the change"
  until_true 60 upload_from "$FRONT" client-proxy-probe.txt || { echo "no session through the proxy"; return 1; }
  shows_client "$FRONT" proxy-protocol "$CLIENT"
}

check "the example's FtpServer, with a default-cost hash, becomes Ready" t_ready
check "$SEQUENTIAL sessions one after another, $((SEQUENTIAL * RETRS_EACH)) downloads in a row, plain and FTPS" t_sequential
check "60 sessions at once from 3 addresses: LIST, RETR, STOR, every byte checked" t_three_addresses
check "50 sessions at once from one address: LIST, RETR, STOR, every byte checked" t_one_address
check "no restart, no OOMKill under the example's 128Mi; the memory peak" t_no_restart
check "a pass-through balancer: the server sees the client's own address; another's guesses lock out only the guesser" t_address_preserved
check "a masquerading balancer: the server sees the balancer's address; one client's guesses lock out all" t_address_masqueraded
check "a balancer sending PROXY protocol: the server sees the client's own address" t_address_proxy_protocol

summary
