#!/usr/bin/env bash
# Benchmark: ftp-server on the local disk and on S3 (moto's server on loopback, scripts/moto.sh),
# side by side: STOR and RETR of one file with curl, each with the server's peak RSS while it
# runs, and the server's RSS at rest. Memory is the point: an upload to S3 must stay within its
# part buffers whatever the file's size.
# Usage: scripts/bench-storage.sh [MIB]   (default 1024). Needs curl (scripts/deps/ftp.apt) and
# python3-venv (scripts/deps/object-storage.apt). Not a test: it prints figures for
# docs/benchmarks.md. moto keeps objects in its own memory, so the S3 throughput is moto's.
set -euo pipefail
mib=${1:-1024}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v curl >/dev/null || { echo "bench: curl is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }

(cd "$here" && cargo build --release --bin ftp-server >/dev/null)
bin="$here/target/release/ftp-server"
moto=$(bash "$here/scripts/moto.sh" ensure)
work=$(mktemp -d /tmp/storage-bench.XXXXXX)
# shellcheck source=lib/bench-servers.sh
source "$here/scripts/lib/bench-servers.sh"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

s3_port=45731
"$moto" -H 127.0.0.1 -p $s3_port >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.2; done
curl -sf -X PUT -o /dev/null "http://127.0.0.1:$s3_port/bench" || { echo "bench: moto did not start: $work/moto.log" >&2; exit 1; }

mkdir -p "$work/root"
chmod 777 "$work/root"
head -c $((mib * 1048576)) /dev/urandom >"$work/file.bin"

# Credentials for moto (any will do); a real deployment takes them from its environment too.
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
local_port=2151; s3_ftp_port=2153
start_ours local $local_port 2152 "$work/root" 44000 44099 true
local_pid=$STARTED_PID
start_ours s3 $s3_ftp_port 2154 "$work/root" 44100 44199 true \
  "$(printf '[storage.s3]\nbucket = "bench"\nendpoint = "http://127.0.0.1:%s"\nregion = "us-east-1"\npath_style = true' $s3_port)"
s3_pid=$STARTED_PID
sleep 2
for pid in $local_pid $s3_pid; do
  kill -0 "$pid" 2>/dev/null || { echo "bench: a server did not start; see $work/*.log" >&2; tail -5 "$work"/*.log >&2; exit 1; }
done

rss_of() { ps -o rss= -p "$1" | tr -d ' '; }
# Peak RSS (KiB) of one process while a command runs; the command's stdout goes to $work/out.
peak_rss() {
  local pid=$1; shift
  local file="$work/peak"
  echo 0 >"$file"
  ( while :; do
      rss=$(rss_of "$pid")
      [ "${rss:-0}" -gt "$(cat "$file")" ] && echo "$rss" >"$file"
      sleep 0.05
    done ) &
  local sampler=$!
  "$@" >"$work/out"
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  cat "$file"
}
mbs() { awk '{printf "%.0f MB/s", $1/1e6}' "$work/out"; }
stor() { curl -sS -T "$work/file.bin" -w '%{speed_upload}\n' "ftp://127.0.0.1:$1/file.bin"; }
retr() { curl -sS -o /dev/null -w '%{speed_download}\n' "ftp://127.0.0.1:$1/file.bin"; }

declare -A rest stor_speed stor_rss retr_speed retr_rss
for kind in local s3; do
  if [ $kind = local ]; then port=$local_port pid=$local_pid; else port=$s3_ftp_port pid=$s3_pid; fi
  rest[$kind]=$(( $(rss_of "$pid") / 1024 ))
  stor_rss[$kind]=$(( $(peak_rss "$pid" stor "$port") / 1024 ))
  stor_speed[$kind]=$(mbs)
  retr_rss[$kind]=$(( $(peak_rss "$pid" retr "$port") / 1024 ))
  retr_speed[$kind]=$(mbs)
done
cmp -s "$work/file.bin" "$work/root/file.bin" || { echo "bench: the local upload differs" >&2; exit 1; }

echo "| $mib MiB, one session | local disk | S3 (moto, 8 MiB parts) |"
echo "|---|---|---|"
echo "| server RSS at rest | ${rest[local]} MiB | ${rest[s3]} MiB |"
echo "| STOR (curl) | ${stor_speed[local]} | ${stor_speed[s3]} |"
echo "| peak server RSS during STOR | ${stor_rss[local]} MiB | ${stor_rss[s3]} MiB |"
echo "| RETR (curl) | ${retr_speed[local]} | ${retr_speed[s3]} |"
echo "| peak server RSS during RETR | ${retr_rss[local]} MiB | ${retr_rss[s3]} MiB |"
