#!/usr/bin/env bash
# Benchmark: ftp-server on the local disk, on S3 (moto's server, scripts/moto.sh) and on Azure Blob
# (Azurite, scripts/azurite.sh), side by side on loopback, logging in with a password whose hash
# comes from `ftp-server hash-password` (argon2id, default cost):
#   one session   STOR and RETR of one MIB file with curl, each with the server's peak RSS while
#                 it runs, and the server's RSS at rest. Memory is the point: an upload to object
#                 storage must stay within its part buffers whatever the file's size.
#   sessions      SESSIONS curl sessions at once, each storing a 1 MiB file of its own, then
#                 SESSIONS at once each retrieving one: wall time, failures, peak server RSS.
# Usage: scripts/bench-storage.sh [MIB] [SESSIONS]   (defaults 1024 and 500). Needs curl
# (scripts/deps/ftp.apt), python3-venv and npm (scripts/deps/object-storage.apt). Not a test: it
# prints figures for docs/benchmarks.md. moto keeps objects in its own memory and Azurite on its
# disk, both in one process, so the object-storage throughput is theirs, not the clouds'.
set -euo pipefail
mib=${1:-1024}
sessions=${2:-500}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v curl >/dev/null || { echo "bench: curl is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }

(cd "$here" && cargo build --release --bin ftp-server >/dev/null)
bin="${CARGO_TARGET_DIR:-$here/target}/release/ftp-server"
moto=$(bash "$here/scripts/moto.sh" ensure)
azurite=$(bash "$here/scripts/azurite.sh" ensure)
work=$(mktemp -d /tmp/storage-bench.XXXXXX)
# shellcheck source=lib/bench-servers.sh
source "$here/scripts/lib/bench-servers.sh"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

until_answers() { # <url>
  for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done
  return 1
}
s3_port=45731
"$moto" -H 127.0.0.1 -p $s3_port >"$work/moto.log" 2>&1 &
pids+=($!)
until_answers "http://127.0.0.1:$s3_port/" || { echo "bench: moto did not start: $(tail -3 "$work/moto.log")" >&2; exit 1; }
curl -sf -X PUT -o /dev/null "http://127.0.0.1:$s3_port/bench" || { echo "bench: moto did not create the bucket" >&2; exit 1; }
# Azurite's well-known development account.
azure_account=devstoreaccount1
azure_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
azure_port=45741
azure_endpoint="http://127.0.0.1:$azure_port/$azure_account"
mkdir -p "$work/azurite"
"$azurite" --blobHost 127.0.0.1 --blobPort $azure_port --location "$work/azurite" --silent --skipApiVersionCheck \
  >"$work/azurite.log" 2>&1 &
pids+=($!)
until_answers "http://127.0.0.1:$azure_port/" || { echo "bench: Azurite did not start: $(tail -3 "$work/azurite.log")" >&2; exit 1; }
python3 "$here/tests/clients/azure_blob.py" "$azure_endpoint" "$azure_account" "$azure_key" create bench

mkdir -p "$work/root"
chmod 777 "$work/root"
head -c $((mib * 1048576)) /dev/urandom >"$work/file.bin"
head -c 1048576 /dev/urandom >"$work/small.bin"
password=bench-storage-pw
printf 'bench:%s:rw\n' "$(printf '%s' "$password" | "$bin" hash-password)" >"$work/users"
export BENCH_USERS="$work/users"

# Credentials for moto and Azurite; a real deployment takes them from its environment too.
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AZURE_STORAGE_ACCOUNT_KEY="$azure_key"
local_port=2151; s3_ftp_port=2153; azure_ftp_port=2155
start_ours local $local_port 2152 "$work/root" 44000 44599 true
local_pid=$STARTED_PID
start_ours s3 $s3_ftp_port 2154 "$work/root" 45000 45599 true \
  "$(printf '[storage.s3]\nbucket = "bench"\nendpoint = "http://127.0.0.1:%s"\nregion = "us-east-1"\npath_style = true' $s3_port)"
s3_pid=$STARTED_PID
start_ours azure $azure_ftp_port 2156 "$work/root" 46000 46599 true \
  "$(printf '[storage.azure_blob]\naccount = "%s"\ncontainer = "bench"\nendpoint = "%s"' $azure_account "$azure_endpoint")"
azure_pid=$STARTED_PID
sleep 2
for pid in $local_pid $s3_pid $azure_pid; do
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
login=(--user "bench:$password")
stor() { curl -sS "${login[@]}" -T "$work/file.bin" -w '%{speed_upload}\n' "ftp://127.0.0.1:$1/file.bin"; }
retr() { curl -sS "${login[@]}" -o "$work/back.bin" -w '%{speed_download}\n' "ftp://127.0.0.1:$1/file.bin"; }
# <port> <stor|retr>: SESSIONS sessions at once; prints the wall time and the failures.
many() {
  local port=$1 what=$2 start i failed=0 clients=()
  start=$(date +%s.%N)
  for i in $(seq "$sessions"); do
    if [ "$what" = stor ]; then
      curl -sS "${login[@]}" -T "$work/small.bin" "ftp://127.0.0.1:$port/s-$i.bin" 2>>"$work/many.err" &
    else
      curl -sS "${login[@]}" -o "$work/small-$i.back" "ftp://127.0.0.1:$port/s-$i.bin" 2>>"$work/many.err" &
    fi
    clients+=($!)
  done
  for i in "${!clients[@]}"; do wait "${clients[$i]}" || failed=$((failed + 1)); done
  if [ "$what" = retr ]; then
    for i in $(seq "$sessions"); do
      cmp -s "$work/small.bin" "$work/small-$i.back" 2>/dev/null || failed=$((failed + 1))
      rm -f "$work/small-$i.back"
    done
  fi
  awk -v s="$start" -v e="$(date +%s.%N)" -v f="$failed" 'BEGIN {printf "%.2f s, %d failed\n", e - s, f}'
}

declare -A rest stor_speed stor_rss retr_speed retr_rss many_stor many_stor_rss many_retr many_retr_rss
for kind in local s3 azure; do
  case $kind in
    local) port=$local_port pid=$local_pid ;;
    s3) port=$s3_ftp_port pid=$s3_pid ;;
    azure) port=$azure_ftp_port pid=$azure_pid ;;
  esac
  rest[$kind]=$(( $(rss_of "$pid") / 1024 ))
  stor_rss[$kind]=$(( $(peak_rss "$pid" stor "$port") / 1024 ))
  stor_speed[$kind]=$(mbs)
  retr_rss[$kind]=$(( $(peak_rss "$pid" retr "$port") / 1024 ))
  retr_speed[$kind]=$(mbs)
  cmp -s "$work/file.bin" "$work/back.bin" || { echo "bench: the $kind download differs from the upload" >&2; exit 1; }
  rm -f "$work/back.bin"
  many_stor_rss[$kind]=$(( $(peak_rss "$pid" many "$port" stor) / 1024 ))
  many_stor[$kind]=$(cat "$work/out")
  many_retr_rss[$kind]=$(( $(peak_rss "$pid" many "$port" retr) / 1024 ))
  many_retr[$kind]=$(cat "$work/out")
done
if [ -s "$work/many.err" ]; then
  echo "client errors (first 5 of $(wc -l <"$work/many.err")):"
  sort "$work/many.err" | uniq -c | sort -rn | head -5
fi

row() { # <label> <array name> [unit]
  local -n values=$2
  echo "| $1 | ${values[local]}${3:-} | ${values[s3]}${3:-} | ${values[azure]}${3:-} |"
}
echo "| | local disk | S3 (moto, 8 MiB parts) | Azure Blob (Azurite, 8 MiB blocks) |"
echo "|---|---|---|---|"
row "server RSS at rest" rest " MiB"
row "$mib MiB STOR, one session (curl)" stor_speed
row "peak server RSS during it" stor_rss " MiB"
row "$mib MiB RETR, one session (curl)" retr_speed
row "peak server RSS during it" retr_rss " MiB"
row "$sessions sessions at once, STOR 1 MiB each" many_stor
row "peak server RSS during them" many_stor_rss " MiB"
row "$sessions sessions at once, RETR 1 MiB each" many_retr
row "peak server RSS during them" many_retr_rss " MiB"
