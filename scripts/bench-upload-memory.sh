#!/usr/bin/env bash
# Benchmark: what an upload to S3 holds. N curl uploads of MIB MiB at once to ftp-server on a
# bucket of moto's S3 server (scripts/moto.sh) with PART-byte parts, and the server's peak RSS
# (VmHWM) against its RSS before: the figure `object_upload_bytes` in src/ftp/memory.rs counts.
# With LIMIT (bytes) the server runs under limits.memory_limit_bytes, so its part-buffer budget
# holds the uploads back, and the table says how many it refused.
# Usage: scripts/bench-upload-memory.sh [N] [MIB] [PART] [LIMIT]   (default 8 48 8388608 0)
# Needs curl and python3-venv (scripts/deps/). Not a test: figures for docs/memory.md.
set -euo pipefail
n=${1:-8} mib=${2:-48} part=${3:-8388608} limit=${4:-0}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v curl >/dev/null || { echo "bench: curl is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }

(cd "$here" && cargo build --release --bin ftp-server >/dev/null)
bin="$here/target/release/ftp-server"
moto=$(bash "$here/scripts/moto.sh" ensure)
work=$(mktemp -d /tmp/upload-memory-bench.XXXXXX)
# shellcheck source=lib/bench-servers.sh
source "$here/scripts/lib/bench-servers.sh"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

s3_port=45733
"$moto" -H 127.0.0.1 -p $s3_port >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.2; done
curl -sf -X PUT -o /dev/null "http://127.0.0.1:$s3_port/bench" || { echo "bench: moto did not start: $work/moto.log" >&2; exit 1; }
mkdir -p "$work/root"
head -c $((mib * 1048576)) /dev/urandom >"$work/file.bin"

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
limit_line=""
[ "$limit" != 0 ] && limit_line="memory_limit_bytes = $limit"
# start_ours puts the extra TOML right after its [limits] table, so the limit lands in it.
start_ours s3 2155 2156 "$work/root" 44200 44399 true \
  "$(printf '%s\n[storage.s3]\nbucket = "bench"\nendpoint = "http://127.0.0.1:%s"\nregion = "us-east-1"\npath_style = true\npart_size_bytes = %s' "$limit_line" $s3_port "$part")"
pid=$STARTED_PID
sleep 2
kill -0 "$pid" 2>/dev/null || { echo "bench: the server did not start" >&2; tail -5 "$work/s3.log" >&2; exit 1; }

kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$pid/status"; }
before=$(kib VmRSS)
clients=()
for i in $(seq "$n"); do
  curl -sS -T "$work/file.bin" "ftp://127.0.0.1:2155/f$i.bin" 2>"$work/c$i.err" &
  clients+=($!)
done
refused=0
for client in "${clients[@]}"; do wait "$client" || refused=$((refused + 1)); done
peak=$(kib VmHWM)
budget=$(curl -s http://127.0.0.1:2156/metrics | awk '$1 == "ftp_upload_memory_budget_bytes" {print $2}')

echo "| $n uploads of $mib MiB at once, $((part / 1048576)) MiB parts, limit $((limit / 1048576)) MiB | |"
echo "|---|---|"
echo "| server RSS before | $((before / 1024)) MiB |"
echo "| peak server RSS (VmHWM) | $((peak / 1024)) MiB |"
awk -v p="$peak" -v b="$before" -v n="$n" 'BEGIN {printf "| per upload, as if all ran at once | %.1f MiB |\n", (p - b) / n / 1024}'
echo "| part-buffer budget | $((${budget%.*} / 1048576)) MiB |"
echo "| uploads refused (452) | $refused |"
