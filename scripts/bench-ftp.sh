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
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/root/up" "$work/small" /var/run/vsftpd/empty
chmod 777 "$work/root/up"
head -c 1073741824 /dev/urandom >"$work/big.bin"
cp "$work/big.bin" "$work/root/big.bin"
head -c 1048576 /dev/urandom >"$work/root/small.bin"

ours_port=2141; vs_port=2142; ours_tls_port=2144; vs_tls_port=2146
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/ftp-server.toml" <<EOF
listen = "127.0.0.1:$ours_port"
metrics_listen = "127.0.0.1:2143"
root = "$work/root"
passive_ports = { min = 40000, max = 40999 }
[anonymous]
enabled = true
writable = true
[limits]
max_sessions_per_address = 2000
EOF
RUST_LOG=warn "$bin" --config "$work/ftp-server.toml" >"$work/ours.log" 2>&1 &
pids+=($!); ours_pid=$!
cat >"$work/vsftpd.conf" <<EOF
listen=YES
listen_address=127.0.0.1
listen_port=$vs_port
anonymous_enable=YES
anon_root=$work/root
no_anon_password=YES
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_umask=022
pasv_min_port=41000
pasv_max_port=41999
max_clients=2000
max_per_ip=2000
seccomp_sandbox=NO
background=NO
xferlog_enable=NO
secure_chroot_dir=/var/run/vsftpd/empty
EOF
vsftpd "$work/vsftpd.conf" >"$work/vsftpd.log" 2>&1 &
pids+=($!); vs_pid=$!
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
sed -e "s/^listen = .*/listen = \"127.0.0.1:$ours_tls_port\"/" -e "s/^metrics_listen = .*/metrics_listen = \"127.0.0.1:2145\"/" \
  -e "s/min = 40000, max = 40999/min = 42000, max = 42999/" "$work/ftp-server.toml" >"$work/ftps.toml"
printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$work/cert.pem" "$work/key.pem" >>"$work/ftps.toml"
RUST_LOG=warn "$bin" --config "$work/ftps.toml" >"$work/ours-tls.log" 2>&1 &
pids+=($!)
sed -e "s/^listen_port=.*/listen_port=$vs_tls_port/" -e "s/^pasv_min_port=.*/pasv_min_port=43000/" -e "s/^pasv_max_port=.*/pasv_max_port=43999/" \
  "$work/vsftpd.conf" >"$work/vsftpd-tls.conf"
printf 'ssl_enable=YES\nrsa_cert_file=%s\nrsa_private_key_file=%s\nallow_anon_ssl=YES\nforce_anon_data_ssl=YES\nforce_anon_logins_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\n' \
  "$work/cert.pem" "$work/key.pem" >>"$work/vsftpd-tls.conf"
vsftpd "$work/vsftpd-tls.conf" >"$work/vsftpd-tls.log" 2>&1 &
pids+=($!)
sleep 1
tls_retr() { for _ in 1 2 3; do curl -s --ssl-reqd -k -o /dev/null -w '%{speed_download}\n' "ftp://127.0.0.1:$1/big.bin"; done | best; }
tls_stor() { for _ in 1 2 3; do upload "$1" --ssl-reqd -k; done | best; }
echo "| FTPS RETR 1 GiB (curl --ssl-reqd, best of 3) | $(tls_retr $ours_tls_port | gbs) | $(tls_retr $vs_tls_port | gbs) |"
echo "| FTPS STOR 1 GiB (curl --ssl-reqd, best of 3) | $(tls_stor $ours_tls_port | gbs) | $(tls_stor $vs_tls_port | gbs) |"
