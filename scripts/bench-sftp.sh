#!/usr/bin/env bash
# Benchmark: ftp-server's SFTP beside OpenSSH's sshd with internal-sftp, on loopback, in one run.
#   get and put of a 1 GiB file with OpenSSH's sftp client (best of 3), and the peak RSS of the
#   server (every process of it: sshd forks per session) while N sessions are open at once.
# Usage: scripts/bench-sftp.sh [SESSIONS]   (default 100). Needs openssh-client and
# python3-paramiko (scripts/deps/ftp.apt) and openssh-server, which is left out of the test
# packages because installing it starts a system sshd; sshd must run as root. Not a test: it
# prints figures for docs/benchmarks.md.
set -euo pipefail
sessions=${1:-100}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in sftp ssh-keygen /usr/bin/python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }
done
[ -x /usr/sbin/sshd ] || { echo "bench: sshd is missing: sudo apt-get install openssh-server" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench: sshd needs root" >&2; exit 1; }

(cd "$here" && cargo build --release --bin ftp-server >/dev/null)
bin="$here/target/release/ftp-server"
work=$(mktemp -d /tmp/sftp-bench.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/root" "$work/etc"
head -c 1073741824 /dev/urandom >"$work/big.bin"
cp "$work/big.bin" "$work/root/big.bin"
ssh-keygen -q -t ed25519 -N '' -f "$work/client"

ours_port=2241; sshd_port=2242
printf 'bench:%s:rw\n' "$(printf 'unused' | "$bin" hash-password)" >"$work/etc/users"
cp "$work/client.pub" "$work/etc/bench.authorized_keys"
"$bin" generate-host-key --type ed25519 --out "$work/etc/host_ed25519" >/dev/null
# One client address opens every session: lift the per-address limit (50) above them.
cat >"$work/etc/ftp-server.toml" <<CONF
root = "$work/root"
passive_ports = { min = 42000, max = 42009 }
listen = "127.0.0.1:2240"
metrics_listen = "127.0.0.1:2243"
users_file = "$work/etc/users"
[limits]
max_sessions_per_address = $((sessions + 10))
[sftp]
enabled = true
listen = "127.0.0.1:$ours_port"
host_key_files = ["$work/etc/host_ed25519"]
CONF
"$bin" --config "$work/etc/ftp-server.toml" >"$work/ours.log" 2>&1 &
ours_pid=$!; pids+=("$ours_pid")

ssh-keygen -q -t ed25519 -N '' -f "$work/sshd_host"
cp "$work/client.pub" "$work/authorized_keys"
mkdir -p /run/sshd
cat >"$work/sshd_config" <<CONF
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/sshd_host
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups $((sessions * 2)):30:$((sessions * 3))
Subsystem sftp internal-sftp
CONF
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!; pids+=("$sshd_pid")
sleep 1

client() { # PORT USER BATCH
  sftp -q -b - -P "$1" -i "$work/client" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$2@127.0.0.1" <<<"$3" >/dev/null
}
seconds() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); awk -v s="$start" -v e="$end" 'BEGIN {print e - s}'; }
best() { sort -g | head -1 | awk '{printf "%.2f GB/s (%.1f s)", 1073741824 / $1 / 1e9, $1}'; }
# Our server's home is its root; sshd's sessions see the whole file system.
get_ours() { for _ in 1 2 3; do seconds client $ours_port bench "get big.bin /dev/null"; done | best; }
get_sshd() { for _ in 1 2 3; do seconds client $sshd_port root "get $work/root/big.bin /dev/null"; done | best; }
put_ours() { for _ in 1 2 3; do seconds client $ours_port bench "put $work/big.bin up.bin"; rm -f "$work/root/up.bin"; done | best; }
put_sshd() { for _ in 1 2 3; do seconds client $sshd_port root "put $work/big.bin $work/root/up.bin"; rm -f "$work/root/up.bin"; done | best; }

# Resident memory (KiB) of a process and its descendants.
tree_rss() {
  ps -eo pid=,ppid=,rss= | awk -v root="$1" '
    { parent[$1] = $2; rss[$1] = $3 }
    END { for (p in parent) { q = p; while (q != "" && q != root && q != 1 && q != 0) q = parent[q]; if (q == root) s += rss[p] } print s + 0 }'
}
# RSS with N sessions open (sampled once all are open), and the RSS before.
held_rss() { # ROOT_PID PORT USER
  local fifo="$work/ready" before after
  before=$(tree_rss "$1")
  rm -f "$fifo"; mkfifo "$fifo"
  /usr/bin/python3 "$here/scripts/bench-sftp-sessions.py" 127.0.0.1 "$2" "$3" "$work/client" "$sessions" 5 >"$fifo" &
  local helper=$!
  read -r line <"$fifo"
  sleep 1
  after=$(tree_rss "$1")
  wait "$helper"
  echo "$((before / 1024)) MiB idle, $((after / 1024)) MiB with $line"
}

sftp -v -b - -P $ours_port -i "$work/client" -o BatchMode=yes -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null bench@127.0.0.1 <<<"pwd" >"$work/negotiated" 2>&1
cipher=$(grep -m1 'cipher:' "$work/negotiated" | sed 's/.*cipher: //')
echo "client cipher with ftp-server: $cipher"
echo "| measurement | ftp-server (SFTP) | sshd + internal-sftp |"
echo "|---|---|---|"
echo "| get 1 GiB (OpenSSH sftp, best of 3) | $(get_ours) | $(get_sshd) |"
echo "| put 1 GiB (OpenSSH sftp, best of 3) | $(put_ours) | $(put_sshd) |"
echo "| RSS, $sessions sessions open | $(held_rss $ours_pid $ours_port bench) | $(held_rss $sshd_pid $sshd_port root) |"
