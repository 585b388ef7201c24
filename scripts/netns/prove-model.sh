#!/usr/bin/env bash
# Proves the namespace balancer model bites, with a stand-in FTP server that is not ours
# (Debian's python3-pyftpdlib, which never enables keepalive by itself):
#   1. keepalive off: a slow download through the VIP lasting several times the balancer's timeout
#      never gets its 226 (curl fails);
#   2. keepalive on the control socket, idle below the timeout: the same download completes.
# The client's link is slowed with LINK_RATE (see netns-lb.sh), not with curl --limit-rate.
# Usage: scripts/netns/prove-model.sh   (root; LB_TIMEOUT, LINK_RATE, SIZE_MIB, MAX_TIME, KEEPIDLE may be set)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lb="$here/../netns-lb.sh"
export LB_TIMEOUT=${LB_TIMEOUT:-5}
export LINK_RATE=${LINK_RATE:-4mbit}
SIZE_MIB=${SIZE_MIB:-10}
MAX_TIME=${MAX_TIME:-60}
KEEPIDLE=${KEEPIDLE:-2}
/usr/bin/python3 -c 'import pyftpdlib' 2>/dev/null \
  || { echo "prove-model: needs python3-pyftpdlib (apt-get install python3-pyftpdlib)" >&2; exit 1; }

work=$(mktemp -d); name="ftpop-proof-$$"
cleanup() { "$lb" down "$name" || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir "$work/root"
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$work/root/big.bin"
want=$(sha256sum < "$work/root/big.bin" | cut -d' ' -f1)
"$lb" up "$name" >/dev/null
echo "balancer conntrack timeout ${LB_TIMEOUT}s; file ${SIZE_MIB} MiB; client link $LINK_RATE; curl -m $MAX_TIME"

dropped() {
  "$lb" exec "$name" balancer nft list chain inet ftpop_lb lb_forward | sed -n 's/.*invalid counter packets \([0-9]*\).*/\1/p'
}

run() { # $1 = keepalive idle seconds (0 = off)
  "$lb" exec "$name" server /usr/bin/python3 "$here/standin-ftpd.py" --root "$work/root" \
    --public 10.203.0.100 --keepalive-idle "$1" >"$work/ftpd.log" 2>&1 &
  local srv=$!; sleep 1
  local before; before=$(dropped)
  local t0 t1 rc=0 out
  t0=$(date +%s.%N)
  out=$("$lb" exec "$name" client curl -sS -m "$MAX_TIME" -o "$work/got.bin" \
      -w '%{response_code} %{size_download}' ftp://10.203.0.100/big.bin 2>&1) || rc=$?
  t1=$(date +%s.%N)
  local got; got=$(sha256sum < "$work/got.bin" | cut -d' ' -f1)
  printf 'keepalive idle=%ss: curl exit %s, last reply/bytes "%s", %.1fs, sha256 %s\n' \
    "$1" "$rc" "$out" "$(echo "$t1 - $t0" | bc)" "$([ "$got" = "$want" ] && echo intact || echo DIFFERENT)"
  echo "  packets of forgotten flows the balancer dropped: $(( $(dropped) - before ))"
  kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null || true
  rm -f "$work/got.bin"
  return "$rc"
}

off_rc=0; run 0 || off_rc=$?
on_rc=0; run "$KEEPIDLE" || on_rc=$?
if [ "$off_rc" -ne 0 ] && [ "$on_rc" -eq 0 ]; then
  echo "model bites: keepalive off fails (curl $off_rc), keepalive ${KEEPIDLE}s passes"
else
  echo "model does NOT behave: keepalive off curl $off_rc, keepalive on curl $on_rc" >&2; exit 1
fi
