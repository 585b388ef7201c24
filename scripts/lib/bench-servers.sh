# The two servers the FTP benchmarks run side by side (scripts/bench-ftp.sh,
# scripts/bench-passive.sh): sourced, never run. Each function writes one server's configuration
# for anonymous access to a directory on loopback, starts it in the background with its log in
# $work, appends its PID to the caller's `pids` array and sets STARTED_PID. The caller sets `work`
# and `bin` (the ftp-server binary). With BENCH_USERS set (a users file, `ftp-server hash-password`
# hashes), start_ours serves those logins instead of anonymous ones.

# start_ours <name> <port> <metrics port> <root> <passive min> <passive max> <writable: true|false> [TOML appended]
start_ours() {
  local name=$1 port=$2 metrics=$3 root=$4 min=$5 max=$6 writable=$7 extra=${8:-}
  local users='' anonymous=true
  if [ -n "${BENCH_USERS:-}" ]; then users="users_file = \"$BENCH_USERS\"" anonymous=false; fi
  cat >"$work/$name.toml" <<EOF
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$metrics"
root = "$root"
passive_ports = { min = $min, max = $max }
$users
[anonymous]
enabled = $anonymous
writable = $writable
[limits]
max_sessions_per_address = 2000
$extra
EOF
  RUST_LOG=warn "$bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  STARTED_PID=$!
  pids+=("$STARTED_PID")
}

# start_vsftpd <name> <port> <root> <passive min> <passive max> <writable: YES|NO> [lines appended]
start_vsftpd() {
  local name=$1 port=$2 root=$3 min=$4 max=$5 writable=$6 extra=${7:-}
  mkdir -p /var/run/vsftpd/empty
  cat >"$work/$name.conf" <<EOF
listen=YES
listen_address=127.0.0.1
listen_port=$port
anonymous_enable=YES
anon_root=$root
no_anon_password=YES
local_enable=NO
write_enable=$writable
anon_upload_enable=$writable
anon_umask=022
pasv_min_port=$min
pasv_max_port=$max
max_clients=2000
max_per_ip=2000
seccomp_sandbox=NO
background=NO
xferlog_enable=NO
secure_chroot_dir=/var/run/vsftpd/empty
$extra
EOF
  vsftpd "$work/$name.conf" >"$work/$name.log" 2>&1 &
  STARTED_PID=$!
  pids+=("$STARTED_PID")
}
