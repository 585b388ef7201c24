#!/usr/bin/env bash
# End-to-end tier on the local cluster's real node: the operator installed by the Helm chart runs
# as a pod, the FTP server runs as a pod from the image built here, and clients reach it through a
# forgetful namespace balancer (scripts/netns-lb.sh BACKEND=node), kube-proxy and the CNI bridge.
# Every check fails on a broken build; none skips. Last line: "N passed, M failed".
#
#   scripts/test-node.sh
#
# Environment: FTPOP_OPERATOR_BIN / FTPOP_SERVER_BIN (default: cargo build --bins), FTPOP_KEEP_CLUSTER=1
# to leave the cluster up. Needs root (scripts/local-cluster.sh installs what the node needs).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
WORK=$ROOT/target/node-test
LAB=ftpop-e2e
NS=ftp-operator
APP=e2e
SERVER=files
VIP=198.18.0.10
VIP2=198.18.0.11
# The balancer forgets a flow idle for LB_TIMEOUT s; the server's keepalive (2 s) outlives that.
LB_TIMEOUT=6
LINK_RATE=8mbit

TIER=test-node CHECK_DETAILS=1 POLL_SECONDS=0.5
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"
# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"

# The node's own keepalive values (this machine's): cleanup puts them back if a check left them.
NODE_KEEPALIVE_ORIG=$(sysctl -n net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes | tr '\n' ' ')
cleanup() {
  kill "${IDLE_PID:-}" 2>/dev/null || true
  read -r ka_time ka_intvl ka_probes <<<"$NODE_KEEPALIVE_ORIG"
  sysctl -q -w net.ipv4.tcp_keepalive_time="$ka_time" net.ipv4.tcp_keepalive_intvl="$ka_intvl" \
    net.ipv4.tcp_keepalive_probes="$ka_probes" 2>/dev/null || true
  node_tier_cleanup
}
trap cleanup EXIT

# ------------------------------------------------------------------------------------ setup

node_tier_setup

# ------------------------------------------------------------------------------------ objects

tls_secret() { # <name>: a certificate for the VIPs, self-signed, CN=<name>
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$1" \
    -addext "subjectAltName=IP:$VIP,IP:$VIP2" -keyout "$WORK/$1.key" -out "$WORK/$1.crt" 2>/dev/null
  k -n "$APP" create secret tls ftp-tls --cert="$WORK/$1.crt" --key="$WORK/$1.key" --dry-run=client -o yaml |
    k apply -f - >/dev/null
}
ftpserver() { # <passive min> <passive max>
  k apply --server-side -f - >/dev/null <<EOF
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: $SERVER, namespace: $APP}
spec:
  controlPort: 21
  passivePorts: {min: $1, max: $2}
  keepalive: {idleSeconds: 2, intervalSeconds: 1, probes: 5}
  loadBalancer: {provider: generic, idleTimeoutSeconds: $LB_TIMEOUT}
  storage: {emptyDir: {}}
  users: {secretRef: {name: ftp-users}}
  tls: {secretRef: {name: ftp-tls}}
  sftp: {enabled: true}
EOF
}
ready_at() { # <address>: Ready and publishing it
  [[ $(k -n "$APP" get ftpserver "$SERVER" -o jsonpath='{.status.publicAddress} {.status.conditions[?(@.type=="Ready")].status}') == "$1 True" ]]
}
pod_json() { k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o json; }
pod_uid() { k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.uid}'; }
curl_ftp() { in_client curl -sS --max-time 60 --ftp-pasv --no-ftp-skip-pasv-ip --user "$1" "${@:2}"; }
# paramiko (Debian's python3-paramiko, hence Debian's interpreter) on the balancer's port 22.
sftp_client() { in_client /usr/bin/python3 tests/clients/paramiko_sftp.py "$1" 22 "${@:2}"; }
host_key() { sftp_client "$1" alice password alice-pw-1 hostkey </dev/null; }
pasv_reply() { # <address> <user:password>: the 227 reply to PASV
  in_client curl -sv --max-time 15 --disable-epsv --ftp-pasv --user "$2" "ftp://$1/" 2>&1 | grep -o '227 .*'
}

users_secret "alice:alice-pw-1"
tls_secret cert-one
APPLIED=$(now)
ftpserver 20000 20009
until_true 60 k -n "$APP" get service "$SERVER" || die "the operator made no Service"
set_address "$SERVER" "$VIP"

# ------------------------------------------------------------------------------------ checks

t_operator_leads() {
  local pod sa node
  pod=$(k -n "$NS" get pods -l app.kubernetes.io/name=ftp-operator -o jsonpath='{.items[0].metadata.name}')
  sa=$(k -n "$NS" get pod "$pod" -o jsonpath='{.spec.serviceAccountName}')
  node=$(k -n "$NS" get pod "$pod" -o jsonpath='{.spec.nodeName}')
  [[ $sa == ftp-operator && $node == ftpop-node ]] || { echo "pod $pod: serviceAccount $sa, node $node"; return 1; }
  until_true 60 bash -c "kubectl -n $NS logs $pod | grep -q 'holding the lease; reconciling'" ||
    { echo "no 'holding the lease' in the operator's log"; return 1; }
  if k -n "$NS" logs "$pod" | grep -i forbidden; then echo "the operator was refused by RBAC"; return 1; fi
}
vip_accepts() { in_client timeout 2 bash -c "exec 3<>/dev/tcp/$VIP/21"; }
t_ready() {
  until_true 180 ready_at "$VIP" || { k -n "$APP" get ftpserver "$SERVER" -o yaml | tail -30; return 1; }
  echo "Ready $(since "$APPLIED") s after the apply"
  # Ready is the controller's view (the pod serves the declared config); kube-proxy programs the
  # node's rules for the new endpoint on its own sync, which can trail it by a moment.
  local ready; ready=$(now)
  until_true 30 vip_accepts || { echo "the VIP refuses port 21 30 s after Ready"; return 1; }
  echo "the VIP accepts port 21 $(since "$ready") s after Ready"
}
t_curl_plain() {
  echo "plain $RANDOM" >"$WORK/plain.txt"
  curl_ftp alice:alice-pw-1 -T "$WORK/plain.txt" "ftp://$VIP/plain.txt" &&
    curl_ftp alice:alice-pw-1 "ftp://$VIP/plain.txt" | cmp - "$WORK/plain.txt"
}
t_curl_ftps() {
  echo "ftps $RANDOM" >"$WORK/ftps.txt"
  curl_ftp alice:alice-pw-1 --ssl-reqd --cacert "$WORK/cert-one.crt" -T "$WORK/ftps.txt" "ftp://$VIP/ftps.txt" &&
    curl_ftp alice:alice-pw-1 --ssl-reqd --cacert "$WORK/cert-one.crt" "ftp://$VIP/ftps.txt" | cmp - "$WORK/ftps.txt"
}
lftp_run() { # <settings> <commands>
  in_client lftp -u alice,alice-pw-1 -e "set net:timeout 10; set net:max-retries 1; set ftp:passive-mode on; $1; $2; bye" "ftp://$VIP"
}
# The same user over SFTP, on port 22 of the same balancer address, reads what FTP uploaded, and
# FTP reads what SFTP uploaded: one declaration, one set of files.
t_sftp_same_files() {
  local out
  out=$(sftp_client "$VIP" alice password alice-pw-1 ops <<<'[["read", "plain.txt"], ["write", "from-sftp.txt", "over sftp"]]') ||
    { echo "$out"; return 1; }
  echo "$out"
  python3 -c 'import json, sys
results = json.loads(sys.argv[1])
sys.exit(0 if all(r["ok"] for r in results) and results[0]["value"] == open(sys.argv[2]).read() else 1)' "$out" "$WORK/plain.txt" ||
    { echo "SFTP did not read FTP's upload back"; return 1; }
  [[ $(curl_ftp alice:alice-pw-1 "ftp://$VIP/from-sftp.txt") == "over sftp" ]] || { echo "FTP does not see SFTP's upload"; return 1; }
}
t_lftp_plain() {
  echo "lftp $RANDOM" >"$WORK/lftp.txt"
  lftp_run "set ftp:ssl-allow no" "put $WORK/lftp.txt -o lftp.txt; get lftp.txt -o $WORK/lftp.back" &&
    cmp "$WORK/lftp.txt" "$WORK/lftp.back"
}
t_lftp_ftps() {
  echo "lftps $RANDOM" >"$WORK/lftps.txt"
  lftp_run "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file $WORK/cert-one.crt" \
    "put $WORK/lftps.txt -o lftps.txt; get lftps.txt -o $WORK/lftps.back" && cmp "$WORK/lftps.txt" "$WORK/lftps.back"
}
# The uploads are files in the pod's emptyDir, on the node's disk.
data_dir() { pod_data_dir "$(pod_uid)"; }
t_storage() {
  local dir; dir=$(data_dir)
  [[ -d $dir ]] || { echo "no emptyDir volume 'data' for the pod at $dir"; return 1; }
  cmp "$dir/plain.txt" "$WORK/plain.txt" && cmp "$dir/lftps.txt" "$WORK/lftps.txt" && ls -l "$dir"
}
t_pod_sysctls() {
  local pid got
  pid=$(server_pid "$(pod_uid)") || { echo "no ftp-server process for the pod"; return 1; }
  got=$(nsenter -t "$pid" -n sysctl -n net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes | tr '\n' ' ')
  [[ $got == "2 1 5 " ]] || { echo "pod keepalive sysctls: $got, want 2 1 5"; return 1; }
  got=$(sysctl -n net.ipv4.tcp_keepalive_time)
  [[ $got == 7200 ]] || { echo "the node's own tcp_keepalive_time is $got, not the kernel default 7200"; return 1; }
}
t_keepalive_timer() {
  local pid out
  pid=$(server_pid "$(pod_uid)") || return 1
  # An idle control connection: the banner, then silence.
  in_client python3 -c "import socket,time; s=socket.create_connection(('$VIP',21)); s.recv(100); time.sleep(30)" >/dev/null 2>&1 &
  IDLE_PID=$!
  sleep 3
  out=$(nsenter -t "$pid" -n ss -tnoH state established '( sport = :2121 )')
  kill "$IDLE_PID" 2>/dev/null
  echo "$out"
  grep -q 'timer:(keepalive' <<<"$out"
}
# A download lasting 5x the balancer's idle limit, the control connection silent throughout, with
# the node's own sysctls at the kernel defaults: only the pod's keepalive keeps the flow.
t_long_download() {
  local dir start
  dir=$(data_dir)
  # 8 mbit/s for 30 s: 30 MB.
  head -c 30000000 /dev/urandom >"$dir/long.bin" && chown 65532:65532 "$dir/long.bin"
  start=$(now)
  curl_ftp alice:alice-pw-1 --max-time 120 "ftp://$VIP/long.bin" -o "$WORK/long.bin" || return 1
  cmp "$WORK/long.bin" "$dir/long.bin" || return 1
  echo "$(since "$start") s download through a balancer that forgets after $LB_TIMEOUT s"
  awk -v t="$(since "$start")" -v l=$LB_TIMEOUT 'BEGIN { exit !(t >= 5 * l) }' || { echo "too short to prove it"; return 1; }
}
# Ready means reachable: Ready at the new address only once PASV advertises it, without a restart.
t_ready_means_reachable() {
  local uid restarts start reply
  uid=$(pod_uid)
  start=$(now)
  set_address "$SERVER" "$VIP2"
  until_true 120 ready_at "$VIP2" || { echo "not Ready at $VIP2"; return 1; }
  echo "Ready at $VIP2 $(since "$start") s after the Service's address changed"
  reply=$(pasv_reply "$VIP2" alice:alice-pw-1)
  echo "PASV: $reply"
  grep -q '(198,18,0,11,' <<<"$reply" || return 1
  restarts=$(k -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o jsonpath='{.items[0].status.containerStatuses[0].restartCount}')
  [[ $(pod_uid) == "$uid" && $restarts == 0 ]] || { echo "the pod was replaced or restarted ($restarts)"; return 1; }
}
t_passive_change() {
  local reply port start
  start=$(now)
  ftpserver 20020 20029
  until_true 60 bash -c "kubectl -n $APP get service $SERVER -o jsonpath='{.spec.ports[*].port}' | grep -qw 20020" ||
    { echo "the Service has no port 20020"; return 1; }
  until_true 120 bash -c "kubectl -n $APP get ftpserver $SERVER -o jsonpath='{.status.passivePorts}' | grep -qx 20020-20029" ||
    { echo "status.passivePorts did not follow"; return 1; }
  until_true 120 ready_at "$VIP2" || return 1
  echo "Ready with 20020-20029 $(since "$start") s after the change"
  # The range rolls the pod: until kube-proxy has the new pod's endpoint (a second or two after it
  # turns ready), a session can still reach the old, draining one. Ask again within that window.
  local deadline=$((SECONDS + 30))
  while :; do
    reply=$(pasv_reply "$VIP2" alice:alice-pw-1)
    port=$(sed -n 's/.*(\([0-9,]*\)).*/\1/p' <<<"$reply" | awk -F, '{print $5 * 256 + $6}')
    ((${port:-0} >= 20020 && ${port:-0} <= 20029)) && break
    ((SECONDS < deadline)) || { echo "PASV: $reply"; echo "PASV port ${port:-none} is outside 20020-20029"; return 1; }
    sleep 1
  done
  echo "PASV: $reply ($(since "$start") s after the change)"
  # The next checks count log lines of the server's pods: wait until the drained one has gone.
  until_true 120 bash -c "[[ \$(kubectl -n $APP get pods -l app.kubernetes.io/instance=$SERVER -o name | wc -l) == 1 ]]" ||
    { echo "the replaced pod is still there"; return 1; }
}
# Users and certificate change in their Secrets; new sessions see them, the pod keeps running.
# One login attempt each, once the server says it reloaded: failed logins lock the client out (and
# every client comes through the balancer's one address).
reloads() { k -n "$APP" logs -l "app.kubernetes.io/instance=$SERVER" --tail=-1 | grep -c 'configuration reloaded'; }
t_secrets_rotate() {
  local uid start before
  uid=$(pod_uid)
  before=$(reloads)
  start=$(now)
  users_secret "alice:alice-pw-1" "bob:bob-pw-1"
  tls_secret cert-two
  # Two reloads (users, then certificate), or one if the kubelet wrote both at once.
  until_true 120 bash -c "(( \$(kubectl -n $APP logs -l app.kubernetes.io/instance=$SERVER --tail=-1 | grep -c 'configuration reloaded') > $before ))" ||
    { echo "the server did not reload its files"; return 1; }
  sleep 3 # the second file, if the kubelet wrote them apart: the server polls every 2 s
  echo "reloaded $(since "$start") s after the Secrets changed"
  curl_ftp bob:bob-pw-1 "ftp://$VIP2/" -o /dev/null || { echo "bob cannot log in"; return 1; }
  curl_ftp alice:alice-pw-1 --ssl-reqd --cacert "$WORK/cert-two.crt" "ftp://$VIP2/" -o /dev/null ||
    { echo "the new certificate is not served"; return 1; }
  if curl_ftp alice:alice-pw-1 --ssl-reqd --cacert "$WORK/cert-one.crt" "ftp://$VIP2/" -o /dev/null 2>/dev/null; then
    echo "the old certificate is still served"; return 1
  fi
  [[ $(pod_uid) == "$uid" ]] || { echo "the pod was replaced"; return 1; }
}
# A user declared as an FtpUser, with its password in a basic-auth Secret of its own, logs in
# within seconds of `kubectl apply` with no pod restart; deleting the FtpUser refuses its next
# login. One attempt each, once the server reloaded (failed logins lock the balancer's address).
t_ftpuser() {
  local uid start before
  uid=$(pod_uid)
  before=$(reloads)
  start=$(now)
  k -n "$APP" create secret generic carol-password --type=kubernetes.io/basic-auth \
    --from-literal=username=carol --from-literal=password=carol-pw-1 >/dev/null || return 1
  k apply -f - >/dev/null <<EOF || return 1
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpUser
metadata: {name: carol, namespace: $APP}
spec:
  serverRef: {name: $SERVER}
  passwordSecretRef: {name: carol-password}
  access: ro
EOF
  until_true 120 bash -c "(( \$(kubectl -n $APP logs -l app.kubernetes.io/instance=$SERVER --tail=-1 | grep -c 'configuration reloaded') > $before ))" ||
    { k -n "$APP" get ftpuser carol -o yaml | tail -12; echo "the server did not reload its users"; return 1; }
  curl_ftp carol:carol-pw-1 "ftp://$VIP2/" -o /dev/null || { echo "carol cannot log in"; return 1; }
  echo "carol, applied as an FtpUser, logged in $(since "$start") s after kubectl apply"
  [[ $(k -n "$APP" get ftpuser carol -o jsonpath='{.status.conditions[?(@.type=="Accepted")].status}') == True ]] ||
    { echo "FtpUser carol is not Accepted"; return 1; }
  before=$(reloads)
  start=$(now)
  k -n "$APP" delete ftpuser carol >/dev/null || return 1
  until_true 120 bash -c "(( \$(kubectl -n $APP logs -l app.kubernetes.io/instance=$SERVER --tail=-1 | grep -c 'configuration reloaded') > $before ))" ||
    { echo "the server did not reload after the delete"; return 1; }
  if curl_ftp carol:carol-pw-1 "ftp://$VIP2/" -o /dev/null 2>/dev/null; then
    echo "carol still logs in after kubectl delete ftpuser"; return 1
  fi
  echo "carol refused $(since "$start") s after kubectl delete ftpuser"
  [[ $(pod_uid) == "$uid" ]] || { echo "the pod was replaced"; return 1; }
}
# The old pod drains for up to its grace period; its replacement serves as soon as it is ready.
new_pod_ready() {
  kubectl -n "$APP" get pods -l "app.kubernetes.io/instance=$SERVER" -o json |
    python3 -c "import json,sys; old=sys.argv[1]; pods=json.load(sys.stdin)['items']
ok=[p for p in pods if p['metadata']['uid']!=old and not p['metadata'].get('deletionTimestamp')
    and any(c['type']=='Ready' and c['status']=='True' for c in p['status'].get('conditions',[]))]
sys.exit(0 if ok else 1)" "$1"
}
t_pod_replaced() {
  local start uid key
  uid=$(pod_uid)
  key=$(host_key "$VIP2") || { echo "no SFTP host key: $key"; return 1; }
  start=$(now)
  k -n "$APP" delete pod -l "app.kubernetes.io/instance=$SERVER" --wait=false >/dev/null
  until_true 120 new_pod_ready "$uid" || { echo "no new pod became ready"; return 1; }
  until_true 60 curl_ftp alice:alice-pw-1 "ftp://$VIP2/" -o /dev/null || { echo "the new pod does not serve"; return 1; }
  echo "serving again $(since "$start") s after the pod was deleted"
  # The replacement presents the same SFTP host key: clients never see "host key changed".
  [[ $(host_key "$VIP2") == "$key" && $key == *hostkey* ]] || { echo "the SFTP host key changed with the pod: $key"; return 1; }
}

# Node tuning on the real node, then `helm uninstall`: the chart's pre-delete hook has the agent
# put the node's own keepalive sysctls back and releases every FtpServer. Last: it uninstalls the
# operator. (The node here is this machine; cleanup puts its values back should the check fail.)
node_keepalive() { sysctl -n net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes | tr '\n' ' '; }
tuned_counts() { k -n "$APP" get ftpserver tuned -o jsonpath='{.status.nodeKeepalive.tuned}/{.status.nodeKeepalive.pending}/{.status.nodeKeepalive.failed}'; }
t_node_tuning_uninstall() {
  local before
  before=$(node_keepalive)
  "$HELM" upgrade ftp-operator charts/ftp-operator --namespace "$NS" --reuse-values --set nodeTuning.enabled=true \
    --wait --timeout 180s >/dev/null || { echo "helm upgrade --set nodeTuning.enabled=true failed"; return 1; }
  k apply --server-side -f - >/dev/null <<EOF || return 1
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: tuned, namespace: $APP}
spec:
  passivePorts: {min: 20100, max: 20101}
  keepalive: {idleSeconds: 45, intervalSeconds: 7, probes: 4, nodeSysctls: true}
  storage: {emptyDir: {}}
EOF
  until_true 120 eval '[[ $(node_keepalive) == "45 7 4 " ]]' ||
    { echo "the node was not tuned: $(node_keepalive)"; k -n "$NS" get ds,pods -o wide; return 1; }
  # The real node is tuned; the kwok nodes (virtual, tainted) are not counted as pending.
  until_true 60 eval '[[ $(tuned_counts) == 1/0/0 ]]' || { echo "nodeKeepalive tuned/pending/failed: $(tuned_counts)"; return 1; }
  # The agent's log through the uninstall, shown if the node is not restored: whether it restored,
  # and whether anything tuned it again before its DaemonSet went.
  k -n "$NS" logs -f -l app.kubernetes.io/component=node-tuner --tail=-1 --timestamps >"$WORK/node-tuner.log" 2>&1 &
  local tuner_logs=$!
  "$HELM" uninstall ftp-operator --namespace "$NS" --wait --timeout 300s >/dev/null ||
    { kill "$tuner_logs" 2>/dev/null; echo "helm uninstall failed"; k -n "$NS" logs job/ftp-operator-node-tuner-uninstall 2>&1 | tail -20; return 1; }
  kill "$tuner_logs" 2>/dev/null
  if [[ $(node_keepalive) != "$before" ]]; then
    echo "the node keeps $(node_keepalive), not its own $before"
    echo "the nodes' keepalive annotations:"
    k get nodes -o json | python3 -c '
import json, sys
for node in json.load(sys.stdin)["items"]:
    notes = {k: v for k, v in node["metadata"].get("annotations", {}).items() if "keepalive" in k}
    print(" ", node["metadata"]["name"], notes)'
    echo "the node tuner's log:"; tail -30 "$WORK/node-tuner.log"
    return 1
  fi
  local held
  held=$(k get ftpservers -A -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.finalizers}{"\n"}{end}' | grep node-keepalive)
  [[ -z $held ]] || { echo "FtpServers still held by the node-keepalive finalizer: $held"; return 1; }
  until_true 60 eval '! k -n "$NS" get daemonset ftp-operator-node-tuner' || { echo "the node tuner DaemonSet survived uninstall"; return 1; }
  k -n "$APP" delete ftpserver tuned --timeout=30s >/dev/null || { echo "the tuned FtpServer cannot be deleted"; return 1; }
  echo "node keepalive $before -> 45 7 4 -> $(node_keepalive)"
}

check "the chart's operator pod runs on the real node, leads and reconciles with the chart's RBAC" t_operator_leads
check "an FtpServer with users and TLS Secrets becomes Ready" t_ready
check "curl uploads and downloads through the VIP" t_curl_plain
check "curl uploads and downloads through the VIP with FTPS" t_curl_ftps
check "SFTP on port 22 of the same address: the same user, the same files as FTP" t_sftp_same_files
check "lftp uploads and downloads through the VIP" t_lftp_plain
check "lftp uploads and downloads through the VIP with FTPS" t_lftp_ftps
check "uploads land in the declared storage" t_storage
check "the pod's keepalive sysctls are the controller's; the node's are the kernel's" t_pod_sysctls
check "the control socket carries a keepalive timer (ss -o in the pod)" t_keepalive_timer
check "a download 5x longer than the balancer's idle limit completes" t_long_download
check "Ready at a new address only once PASV advertises it, without a restart" t_ready_means_reachable
check "a changed passive range reaches the Service and the running server" t_passive_change
check "a new user and a rotated certificate serve new sessions without a restart" t_secrets_rotate
check "an FtpUser applied logs in within seconds, deleted is refused, no restart" t_ftpuser
check "a deleted pod is replaced and serves again, with the same SFTP host key" t_pod_replaced
check "node tuning, then helm uninstall: the node's own sysctls are back, no FtpServer is stuck" t_node_tuning_uninstall

summary
