#!/usr/bin/env bash
# Benchmark: ftp-server and vsftpd side by side on loopback, in the same run.
#   RETR and STOR of a 1 GiB file with curl (best of 3), and N concurrent sessions each
#   downloading 1 MiB (total time, peak RSS of all the server's processes).
# Usage: scripts/bench-ftp.sh [SESSIONS]   (default 500). Needs curl and vsftpd (scripts/deps/ftp.apt);
# vsftpd must run as root. Not a test: it prints figures for docs/benchmarks.md.
set -euo pipefail
sessions=${1:-500}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in curl vsftpd openssl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: vsftpd needs root" >&2; exit 1; }

(cd "$here" && cargo build --release --bin ftp-server >/dev/null)
bin="$here/target/release/ftp-server"
work=$(mktemp -d /tmp/ftp-bench.XXXXXX)
# shellcheck source=lib/bench-servers.sh
source "$here/scripts/lib/bench-servers.sh"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/root/up" "$work/small"
chmod 777 "$work/root/up"
head -c 1073741824 /dev/urandom >"$work/big.bin"
cp "$work/big.bin" "$work/root/big.bin"
head -c 1048576 /dev/urandom >"$work/root/small.bin"

ours_port=2141; vs_port=2142; ours_tls_port=2144; vs_tls_port=2146
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
start_ours ours $ours_port 2143 "$work/root" 40000 40999 true
ours_pid=$STARTED_PID
start_vsftpd vsftpd $vs_port "$work/root" 41000 41999 YES
vs_pid=$STARTED_PID
sleep 1

best() { sort -g | tail -1; }
gbs() { awk '{printf "%.2f GB/s", $1/1e9}'; }
retr() { for _ in 1 2 3; do curl -s -o /dev/null -w '%{speed_download}\n' "ftp://127.0.0.1:$1/big.bin"; done | best; }
# Each upload is removed at once so the runs do not fill the disk.
upload() { curl -s "${@:2}" -T "$work/big.bin" -w '%{speed_upload}\n' "ftp://127.0.0.1:$1/up/big.bin"; rm -f "$work/root/up/big.bin"; }
stor() { for _ in 1 2 3; do upload "$1"; done | best; }

# Peak RSS (KiB) of a process and its children, sampled while a command runs.
peak_rss() {
  local root=$1; shift
  local peak=0 file="$work/peak"
  ( while :; do
      # The whole process tree: vsftpd forks one or two processes per session.
      rss=$(ps -eo pid=,ppid=,rss= | awk -v root="$root" '
        { parent[$1] = $2; rss[$1] = $3 }
        END { for (p in parent) { q = p; while (q != "" && q != root && q != 1 && q != 0) q = parent[q]; if (q == root) s += rss[p] } print s + 0 }')
      [ "$rss" -gt "$(cat "$file" 2>/dev/null || echo 0)" ] && echo "$rss" >"$file"
      sleep 0.05
    done ) &
  local sampler=$!
  "$@"
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  peak=$(cat "$file"); rm -f "$file"; echo "$peak"
}
many() {
  seq "$sessions" | xargs -P "$sessions" -I{} curl -s -o /dev/null "ftp://127.0.0.1:$1/small.bin"
}
timed_many() {
  local start end
  start=$(date +%s.%N); many "$1"; end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN {printf "%.2f", e - s}'
}

echo "| measurement | ftp-server | vsftpd |"
echo "|---|---|---|"
echo "| RETR 1 GiB (curl, best of 3) | $(retr $ours_port | gbs) | $(retr $vs_port | gbs) |"
echo "| STOR 1 GiB (curl, best of 3) | $(stor $ours_port | gbs) | $(stor $vs_port | gbs) |"
ours_rss=$(peak_rss $ours_pid many $ours_port)
vs_rss=$(peak_rss $vs_pid many $vs_port)
echo "| $sessions sessions x 1 MiB: total time | $(timed_many $ours_port) s | $(timed_many $vs_port) s |"
echo "| $sessions sessions x 1 MiB: peak server RSS | $((ours_rss / 1024)) MiB | $((vs_rss / 1024)) MiB |"

# FTPS: the same servers with explicit TLS (AUTH TLS, PROT P) on other ports; both require the
# data connections to resume the control session (our default, vsftpd require_ssl_reuse=YES).
start_ours ours-tls $ours_tls_port 2145 "$work/root" 42000 42999 true \
  "$(printf '[tls]\ncert_file = "%s"\nkey_file = "%s"' "$work/cert.pem" "$work/key.pem")"
start_vsftpd vsftpd-tls $vs_tls_port "$work/root" 43000 43999 YES \
  "$(printf 'ssl_enable=YES\nrsa_cert_file=%s\nrsa_private_key_file=%s\nallow_anon_ssl=YES\nforce_anon_data_ssl=YES\nforce_anon_logins_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH' "$work/cert.pem" "$work/key.pem")"
sleep 1
tls_retr() { for _ in 1 2 3; do curl -s --ssl-reqd -k -o /dev/null -w '%{speed_download}\n' "ftp://127.0.0.1:$1/big.bin"; done | best; }
tls_stor() { for _ in 1 2 3; do upload "$1" --ssl-reqd -k; done | best; }
echo "| FTPS RETR 1 GiB (curl --ssl-reqd, best of 3) | $(tls_retr $ours_tls_port | gbs) | $(tls_retr $vs_tls_port | gbs) |"
echo "| FTPS STOR 1 GiB (curl --ssl-reqd, best of 3) | $(tls_stor $ours_tls_port | gbs) | $(tls_stor $vs_tls_port | gbs) |"
