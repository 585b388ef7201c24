#!/usr/bin/env bash
# Benchmark: a tiny passive range under load. ftp-server with a 5-port passive range, SESSIONS
# sessions from ADDRESSES loopback client addresses (127.0.1.x) all downloading 1 MiB at once;
# prints the ftp-server's result and then, side by side, vsftpd's with the same 5 ports.
# Usage: scripts/bench-passive.sh [SESSIONS] [ADDRESSES]   (default 500 50). Needs python3 and
# vsftpd (scripts/deps/ftp.apt); vsftpd must run as root. Not a test: figures for
# docs/benchmarks.md.
set -euo pipefail
sessions=${1:-500}
addresses=${2:-50}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in python3 vsftpd; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: vsftpd needs root" >&2; exit 1; }
# 500 sessions need some 2000 descriptors on each side.
ulimit -n "$(ulimit -Hn)"

# FTP_SERVER_BIN runs a binary already built (e.g. target/debug/ftp-server) instead.
if [ -z "${FTP_SERVER_BIN:-}" ]; then
  (cd "$here" && cargo build --release --bin ftp-server >/dev/null)
fi
bin=${FTP_SERVER_BIN:-$here/target/release/ftp-server}
work=$(mktemp -d /tmp/ftp-bench-passive.XXXXXX)
# shellcheck source=lib/bench-servers.sh
source "$here/scripts/lib/bench-servers.sh"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/root"
head -c 1048576 /dev/urandom >"$work/root/one.bin"
ours_port=2151; vs_port=2152
start_ours ours $ours_port 2153 "$work/root" 42000 42004 false
start_vsftpd vsftpd $vs_port "$work/root" 42010 42014 NO
sleep 1

run() { python3 "$here/scripts/bench-passive-sharing.py" 127.0.0.1 "$1" one.bin 1048576 "$sessions" "$addresses" || true; }
echo "ftp-server (5 passive ports): $(run $ours_port)"
in_use=$(curl -s http://127.0.0.1:2153/metrics | grep -E '^ftp_passive_ports_(in_use|exhausted_total) ' | tr '\n' ' ')
echo "ftp-server metrics after the run: $in_use"
echo "vsftpd (5 passive ports):     $(run $vs_port)"
