#!/usr/bin/env bash
# netns-lb.sh — a load balancer that forgets idle TCP flows, modelled with three network namespaces.
#
# Usage:
#   scripts/netns-lb.sh up [NAME]                    create the namespaces (NAME defaults to ftpop-<pid>); prints NAME
#   BACKEND=node scripts/netns-lb.sh up NAME         the same balancer in front of this machine (the local
#                                                    cluster's real node) instead of a server namespace
#   scripts/netns-lb.sh down NAME                    kill what runs inside them and delete exactly those namespaces
#   scripts/netns-lb.sh exec NAME ROLE CMD [ARG...]  run CMD in ROLE's namespace (ROLE: client | balancer | server)
#   scripts/netns-lb.sh status NAME                  addresses, rules, conntrack entries and sysctls
#   BACKEND=node scripts/netns-lb.sh masquerade NAME on|off
#                                                    whether the balancer rewrites client addresses
#   scripts/netns-lb.sh env                          print the addresses and ports in shell syntax
#
# Topology (the addresses exist only inside these namespaces; nothing in the root namespace is touched,
# the veth pairs are created directly inside the namespaces):
#
#   NAME-client                   NAME-balancer                                NAME-server
#   +---------------+             +------------------------------------+       +------------------+
#   | lb0           |  veth pair  | cli0 10.203.0.1/24                 |       |                  |
#   | 10.203.0.2/24 |-------------|      + VIP 10.203.0.100/32         |       |                  |
#   | default via   |             | ip_forward=1                       | veth  | lb0              |
#   |  10.203.0.1   |             | srv0 10.203.1.1/24                 |-------| 10.203.1.2/24    |
#   +---------------+             |                                    |       | default via      |
#                                 | nft: VIP:21          -> server:2121|       |  10.203.1.1      |
#                                 |      VIP:30000-30009 -> server:same|       | tcp_keepalive_*  |
#                                 | conntrack established timeout = 5s |       | kernel defaults  |
#                                 | tcp_loose=0, ct state invalid drop |       | (7200/75/9)      |
#                                 +------------------------------------+       +------------------+
#
# The balancer DNATs the control port and the whole passive range to the server and does not SNAT, so
# the server sees the client's own address (like externalTrafficPolicy: Local) and replies through the
# balancer (its default route). A flow idle for longer than LB_TIMEOUT seconds is dropped from conntrack;
# because nf_conntrack_tcp_loose=0 a later non-SYN packet of that flow, in either direction, cannot
# create a new entry, is "invalid" and is dropped silently — as a cloud load balancer does. The client
# never hears from the server again on that connection.
#
# Settings (environment, read by `up` and `env`):
#   LB_TIMEOUT=5            nf_conntrack_tcp_timeout_established in the balancer, seconds
#   LB_CONTROL_PORT=21      control port on the VIP
#   SERVER_CONTROL_PORT=2121  control port the server listens on
#   PASV_MIN=30000 PASV_MAX=30009  passive range, forwarded port for port
#   LINK_RATE=              e.g. 4mbit: the client's link is this slow in both directions (tc tbf on
#                           the client's lb0 and the balancer's cli0), so a transfer of N bytes lasts
#                           N / rate, predictably. Empty: unshaped. (curl --limit-rate is not used for
#                           this: curl 7.88 overshoots it erratically, 1 s or 13 s for the same 1 MiB at 64K.)
#
# BACKEND=node: the balancer of a cloud in front of a Kubernetes node. No server namespace; the VIPs
# are NODE_VIPS (198.18.0.0/24, reserved for benchmarking, never routed on the Internet), routed
# unchanged to the node over a veth pair whose root-namespace end (ftplb<hash>, 198.19.255.2/30) is
# the only thing this script adds to the root namespace. kube-proxy on the node picks up traffic for
# a Service's load-balancer IP and forwards it to the pod, as behind a cloud's pass-through balancer.
# By default the balancer masquerades what it forwards (source 198.19.255.1), as a balancer that
# proxies or SNATs does: every client then reaches the node from that one address. With
# LB_MASQUERADE=0 (or `masquerade NAME off`) it forwards client addresses unchanged, as a cloud's
# pass-through balancer does, and the node answers them through the route to the client range
# (198.51.100.0/24) that `up` puts on the link's root-namespace end (it goes with the link).
# A balancer that proxies (HAProxy sending PROXY protocol, scripts/test-load.sh) listens on addresses
# of its own, NODE_FRONTS (198.18.1.0/24), which the node reaches over the same link, as a pod
# reaches a cloud balancer's public address.
# Forgetting idle flows works as above. The client is 198.51.100.2, and the demo writes a VIP into
# the Service's status, as a cloud controller would.
#   NODE_VIP=198.18.0.10    the VIP `env` prints (any address of NODE_VIPS is forwarded)
#   LB_MASQUERADE=1         0: client addresses reach the node unchanged
#
# Needs root, iproute2 and nftables (scripts/deps/netns.apt). Namespaces of parallel runs do not collide
# as long as their NAMEs differ; the subnets are reused, each run has its own private copy.
set -euo pipefail

LB_TIMEOUT=${LB_TIMEOUT:-5}
LB_CONTROL_PORT=${LB_CONTROL_PORT:-21}
SERVER_CONTROL_PORT=${SERVER_CONTROL_PORT:-2121}
PASV_MIN=${PASV_MIN:-30000}
PASV_MAX=${PASV_MAX:-30009}
LINK_RATE=${LINK_RATE:-}
BACKEND=${BACKEND:-netns}
LB_MASQUERADE=${LB_MASQUERADE:-1}

CLIENT_IP=10.203.0.2
LB_CLIENT_SIDE_IP=10.203.0.1
VIP=10.203.0.100
LB_SERVER_SIDE_IP=10.203.1.1
SERVER_IP=10.203.1.2

# BACKEND=node
NODE_VIPS=198.18.0.0/24
NODE_FRONTS=198.18.1.0/24
NODE_VIP=${NODE_VIP:-198.18.0.10}
NODE_CLIENT_IP=198.51.100.2
NODE_CLIENT_NET=198.51.100.0/24
NODE_LB_CLIENT_SIDE_IP=198.51.100.1
NODE_LB_NODE_SIDE_IP=198.19.255.1
NODE_HOST_SIDE_IP=198.19.255.2

die() { echo "netns-lb: $*" >&2; exit 1; }

# The root-namespace end of the balancer's link to the node: short (15 bytes at most) and unique per NAME.
host_link() { echo "ftplb$(printf '%s' "$1" | sha256sum | cut -c1-8)"; }

check_name() {
  [[ "${1:-}" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] || die "bad or missing NAME '${1:-}' (letters, digits, _ . -)"
}

check_tools() {
  local missing=()
  [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, nftables, sysctls)"
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  [ ${#missing[@]} -eq 0 ] || die "missing Debian packages: ${missing[*]} (scripts/install-deps.sh installs them)"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -cx -- "$1" >/dev/null; } # -c reads to the end: no SIGPIPE for awk

print_env() {
  if [ "$BACKEND" = node ]; then
    cat <<ENV
BACKEND=node
LB_TIMEOUT=$LB_TIMEOUT
VIP=$NODE_VIP
VIP_RANGE=$NODE_VIPS
FRONT_RANGE=$NODE_FRONTS
CLIENT_IP=$NODE_CLIENT_IP
NODE_SIDE_IP=$NODE_HOST_SIDE_IP
ENV
    return
  fi
  cat <<ENV
LB_TIMEOUT=$LB_TIMEOUT
LINK_RATE=$LINK_RATE
VIP=$VIP
LB_CONTROL_PORT=$LB_CONTROL_PORT
SERVER_CONTROL_PORT=$SERVER_CONTROL_PORT
PASV_MIN=$PASV_MIN
PASV_MAX=$PASV_MAX
CLIENT_IP=$CLIENT_IP
SERVER_IP=$SERVER_IP
ENV
}

up_node() {
  local name=$1
  local c="$name-client" b="$name-balancer" h
  h=$(host_link "$name")
  for ns in "$c" "$b"; do ns_exists "$ns" && die "namespace $ns already exists (run: $0 down $name)"; done
  ip link show "$h" >/dev/null 2>&1 && die "link $h already exists (run: $0 down $name)"
  [[ "$LB_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "LB_TIMEOUT must be a positive number of seconds"
  trap 'down "$name" >/dev/null 2>&1 || true' ERR

  ip netns add "$c"; ip netns add "$b"
  for ns in "$c" "$b"; do ip -n "$ns" link set lo up; done
  ip -n "$c" link add lb0 type veth peer name cli0 netns "$b"
  # The one link in the root namespace: made inside the balancer, then its end moved out.
  ip -n "$b" link add node0 type veth peer name "$h"
  ip -n "$b" link set "$h" netns "$$"

  ip -n "$c" addr add "$NODE_CLIENT_IP/24" dev lb0
  ip -n "$c" link set lb0 up
  ip -n "$c" route add default via "$NODE_LB_CLIENT_SIDE_IP"

  ip -n "$b" addr add "$NODE_LB_CLIENT_SIDE_IP/24" dev cli0
  ip -n "$b" addr add "$NODE_LB_NODE_SIDE_IP/30" dev node0
  ip -n "$b" link set cli0 up
  ip -n "$b" link set node0 up
  ip -n "$b" route add "$NODE_VIPS" via "$NODE_HOST_SIDE_IP"
  ip addr add "$NODE_HOST_SIDE_IP/30" dev "$h"
  ip link set "$h" up
  # Replies to unmasqueraded clients go back over the link, never out of the machine.
  ip route add "$NODE_CLIENT_NET" via "$NODE_LB_NODE_SIDE_IP" dev "$h"
  ip route add "$NODE_FRONTS" via "$NODE_LB_NODE_SIDE_IP" dev "$h"

  ip netns exec "$b" sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$LINK_RATE" ]; then
    ip netns exec "$c" tc qdisc add dev lb0 root tbf rate "$LINK_RATE" burst 32kb latency 100ms
    ip netns exec "$b" tc qdisc add dev cli0 root tbf rate "$LINK_RATE" burst 32kb latency 100ms
  fi
  ip netns exec "$b" nft -f - <<NFT
table inet ftpop_lb {
  chain lb_forward {
    type filter hook forward priority filter; policy drop;
    ct state invalid counter drop comment "packets of forgotten flows"
    ct state established,related accept
    ct state new iif cli0 ip daddr $NODE_VIPS tcp flags & (syn|ack) == syn accept
    counter
  }
  chain lb_snat {
    type nat hook postrouting priority srcnat; policy accept;
  }
}
NFT
  [ "$LB_MASQUERADE" = 0 ] || masquerade "$name" on
  ip netns exec "$b" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established="$LB_TIMEOUT"
  ip netns exec "$b" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
  ip netns exec "$b" sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0
  local got
  got=$(ip netns exec "$b" sysctl -n net.netfilter.nf_conntrack_tcp_timeout_established)
  [ "$got" = "$LB_TIMEOUT" ] || die "balancer conntrack timeout is $got, wanted $LB_TIMEOUT"
  trap - ERR
  echo "$name"
}

up() {
  local name=${1:-ftpop-$$}
  check_name "$name"; check_tools
  if [ "$BACKEND" = node ]; then up_node "$name"; return; fi
  [ "$BACKEND" = netns ] || die "BACKEND must be netns or node, not '$BACKEND'"
  local c="$name-client" b="$name-balancer" s="$name-server"
  for ns in "$c" "$b" "$s"; do ns_exists "$ns" && die "namespace $ns already exists (run: $0 down $name)"; done
  [[ "$LB_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "LB_TIMEOUT must be a positive number of seconds"
  (( PASV_MIN >= 1 && PASV_MIN <= PASV_MAX && PASV_MAX <= 65535 )) || die "bad passive range $PASV_MIN-$PASV_MAX"

  # On any failure below, remove what was made so far.
  trap 'down "$name" >/dev/null 2>&1 || true' ERR

  ip netns add "$c"; ip netns add "$b"; ip netns add "$s"
  for ns in "$c" "$b" "$s"; do ip -n "$ns" link set lo up; done

  # veth pairs created inside the namespaces: no interface ever appears in the root namespace.
  ip -n "$c" link add lb0 type veth peer name cli0 netns "$b"
  ip -n "$s" link add lb0 type veth peer name srv0 netns "$b"

  ip -n "$c" addr add "$CLIENT_IP/24" dev lb0
  ip -n "$c" link set lb0 up
  ip -n "$c" route add default via "$LB_CLIENT_SIDE_IP"

  ip -n "$b" addr add "$LB_CLIENT_SIDE_IP/24" dev cli0
  ip -n "$b" addr add "$VIP/32" dev cli0
  ip -n "$b" addr add "$LB_SERVER_SIDE_IP/24" dev srv0
  ip -n "$b" link set cli0 up
  ip -n "$b" link set srv0 up

  ip -n "$s" addr add "$SERVER_IP/24" dev lb0
  ip -n "$s" link set lb0 up
  ip -n "$s" route add default via "$LB_SERVER_SIDE_IP"

  ip netns exec "$b" sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$LINK_RATE" ]; then
    ip netns exec "$c" tc qdisc add dev lb0 root tbf rate "$LINK_RATE" burst 32kb latency 100ms
    ip netns exec "$b" tc qdisc add dev cli0 root tbf rate "$LINK_RATE" burst 32kb latency 100ms
  fi
  ip netns exec "$b" nft -f - <<NFT
table inet ftpop_lb {
  chain lb_dnat {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $VIP tcp dport $LB_CONTROL_PORT dnat ip to $SERVER_IP:$SERVER_CONTROL_PORT
    ip daddr $VIP tcp dport $PASV_MIN-$PASV_MAX dnat ip to $SERVER_IP
  }
  chain lb_forward {
    type filter hook forward priority filter; policy drop;
    ct state invalid counter drop comment "packets of forgotten flows"
    ct state established,related accept
    ct state new ct status dnat tcp flags & (syn|ack) == syn accept
    counter
  }
  chain lb_input {
    type filter hook input priority filter; policy accept;
    ct state invalid counter drop comment "forgotten flows to the VIP: no RST from the balancer"
    ip daddr $VIP counter drop comment "the VIP answers only on forwarded ports"
  }
}
NFT
  # Conntrack sysctls of this namespace exist once the nat rules use conntrack.
  ip netns exec "$b" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established="$LB_TIMEOUT"
  ip netns exec "$b" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
  ip netns exec "$b" sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0

  # Assert the model: the balancer forgets, the server keeps the kernel's keepalive defaults.
  local got
  got=$(ip netns exec "$b" sysctl -n net.netfilter.nf_conntrack_tcp_timeout_established)
  [ "$got" = "$LB_TIMEOUT" ] || die "balancer conntrack timeout is $got, wanted $LB_TIMEOUT"
  got=$(ip netns exec "$b" sysctl -n net.netfilter.nf_conntrack_tcp_loose)
  [ "$got" = 0 ] || die "balancer nf_conntrack_tcp_loose is $got, wanted 0"
  got=$(ip netns exec "$s" sysctl -n net.ipv4.tcp_keepalive_time)
  [ "$got" = 7200 ] || die "server namespace tcp_keepalive_time is $got, wanted the kernel default 7200"

  trap - ERR
  echo "$name"
}

down() {
  local name=${1:-}
  check_name "$name"; check_tools
  local ns pids
  for ns in "$name-client" "$name-balancer" "$name-server"; do
    ns_exists "$ns" || continue
    # Whatever runs inside (a server a test started, say) would keep the namespace alive.
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
    if [ ${#pids[@]} -gt 0 ]; then
      kill "${pids[@]}" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        [ ${#pids[@]} -eq 0 ] && break
        sleep 0.2
      done
      [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    ip netns del "$ns"
  done
  # BACKEND=node: the root-namespace end goes with the balancer namespace, but the kernel
  # removes it a moment after `ip netns del` returns: wait for that, and delete it only if it
  # stays (a link that vanishes between the check and the delete is what we wanted).
  local h i
  h=$(host_link "$name")
  for ((i = 0; i < 20; i++)); do
    ip link show "$h" >/dev/null 2>&1 || return 0
    sleep 0.1
  done
  ip link del "$h" 2>/dev/null || ! ip link show "$h" >/dev/null 2>&1 ||
    die "cannot delete the host link $h"
}

# Masquerading applies to flows that start after the change; running ones keep their addresses.
masquerade() {
  local name=$1 b="$1-balancer"
  ns_exists "$b" || die "namespace $b does not exist (run: BACKEND=node $0 up $name)"
  case "${2:-}" in
    on) ip netns exec "$b" nft flush chain inet ftpop_lb lb_snat
      ip netns exec "$b" nft add rule inet ftpop_lb lb_snat oif node0 masquerade ;;
    off) ip netns exec "$b" nft flush chain inet ftpop_lb lb_snat ;;
    *) die "usage: BACKEND=node $0 masquerade NAME on|off" ;;
  esac
}

role_ns() {
  case "$2" in
    client|balancer|server) echo "$1-$2" ;;
    *) die "ROLE must be client, balancer or server, not '$2'" ;;
  esac
}

status() {
  local name=$1 ns
  check_name "$name"
  for role in client balancer server; do
    ns=$(role_ns "$name" "$role")
    echo "== $ns"; ns_exists "$ns" || { echo "(absent)"; continue; }
    ip -n "$ns" -br addr
  done
  ns="$name-balancer"
  if ns_exists "$ns"; then
    ip netns exec "$ns" sysctl net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_loose
    ip netns exec "$ns" nft list table inet ftpop_lb
    ip netns exec "$ns" conntrack -L 2>/dev/null || true
  fi
  ns="$name-client"
  ns_exists "$ns" && ip netns exec "$ns" tc qdisc show dev lb0
  ns="$name-server"
  if ns_exists "$ns"; then
    ip netns exec "$ns" sysctl net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes
  fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  up) up "$@" ;;
  down) [ $# -ge 1 ] || die "usage: $0 down NAME"; down "$1" ;;
  exec)
    [ $# -ge 3 ] || die "usage: $0 exec NAME ROLE CMD [ARG...]"
    check_name "$1"; ns=$(role_ns "$1" "$2"); shift 2
    ns_exists "$ns" || die "namespace $ns does not exist (run: $0 up NAME)"
    exec ip netns exec "$ns" "$@" ;;
  status) [ $# -ge 1 ] || die "usage: $0 status NAME"; status "$1" ;;
  masquerade) [ $# -ge 2 ] || die "usage: BACKEND=node $0 masquerade NAME on|off"
    check_name "$1"; check_tools; masquerade "$1" "$2" ;;
  env) print_env ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
