#!/usr/bin/env bash
# Soak: the release ftp-server under the example's limit (limits.memory_limit_bytes = 128Mi) and
# mixed use for SECONDS (default 600): logins with a default-cost argon2id hash, LIST, RETR of an
# 8 MiB file and STOR of 4 MiB (sizes checked), a third of them over FTPS, and wrong passwords from
# a few other loopback addresses (127.0.0.10-17). RSS is sampled every 10 s and printed as a curve.
# Fails when RSS after the warm-up (WARMUP seconds, default 60) grows by more than BOUND_MIB
# (default 8) over the warm-up's last sample, when any session fails other than by a limit's 421,
# or when the server dies.
# Usage: scripts/soak-memory.sh [SECONDS]. Needs openssl and python3. Not in CI.
set -euo pipefail
seconds=${1:-600}
warmup=${WARMUP:-60}
bound=${BOUND_MIB:-8}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in openssl python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is missing: sudo bash scripts/install-deps.sh" >&2; exit 1; }
done
(cd "$here" && nice -n 5 cargo build --release --bin ftp-server >/dev/null)
bin="${CARGO_TARGET_DIR:-$here/target}/release/ftp-server"
work=$(mktemp -d /tmp/ftp-soak-memory.XXXXXX)
pid=
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

user=soak
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
mkdir -p "$work/root/up"
head -c 8388608 /dev/urandom >"$work/root/mid.bin"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
printf '%s:%s\n' "$user" "$(printf '%s' "$password" | "$bin" hash-password)" >"$work/users"
port=2301
cat >"$work/ftp-server.toml" <<EOF
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$((port + 1))"
root = "$work/root"
users_file = "$work/users"
passive_ports = { min = 46000, max = 46499 }
[limits]
memory_limit_bytes = 134217728
[tls]
cert_file = "$work/cert.pem"
key_file = "$work/key.pem"
EOF
RUST_LOG=warn "$bin" --config "$work/ftp-server.toml" >"$work/ftp-server.log" 2>&1 &
pid=$!
sleep 1
kill -0 "$pid" 2>/dev/null || { echo "soak: ftp-server did not start:" >&2; cat "$work/ftp-server.log" >&2; exit 1; }

nice -n 5 python3 "$here/scripts/bench-memory.py" soak --port $port --pid "$pid" --user "$user" \
  --password "$password" --cafile "$work/cert.pem" --seconds "$seconds" >"$work/soak.json"
alive=yes
kill -0 "$pid" 2>/dev/null || alive=no
metrics=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://127.0.0.1:$((port + 1))/metrics" 2>/dev/null | grep -E '^ftp_(logins_total|sessions_refused_total)' || true)

status=0
python3 - "$work/soak.json" "$warmup" "$bound" "$alive" <<'EOF' || status=$?
import json, sys
soak, warmup, bound, alive = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
samples = soak["samples"]
print("| t (s) | RSS (MiB) | VmHWM (MiB) | sessions | wrong passwords | refused (421) | errors |")
print("|---|---|---|---|---|---|---|")
for s in samples:
    print(f"| {s['t']} | {s['rss']:.1f} | {s['hwm']:.1f} | {s['sessions']} | {s['wrong_passwords']} | {s['refused']} | {s['errors']} |")
warm = [s for s in samples if s["t"] <= warmup]
after = [s for s in samples if s["t"] > warmup]
failures = []
if not warm or not after:
    failures.append(f"too short: {len(samples)} samples, warm-up {warmup} s")
else:
    base, top = warm[-1]["rss"], max(s["rss"] for s in after)
    print(f"RSS at the end of the warm-up {base:.1f} MiB, highest after it {top:.1f} MiB "
          f"(+{top - base:.1f}, bound +{bound:.0f}); final {samples[-1]['rss']:.1f} MiB")
    if top - base > bound:
        failures.append(f"RSS grew by {top - base:.1f} MiB after the warm-up (bound {bound:.0f} MiB)")
if soak["counts"]["errors"]:
    failures.append(f"{soak['counts']['errors']} sessions failed: {soak['errors']}")
if soak["counts"]["sessions"] == 0:
    failures.append("no session completed")
if alive != "yes":
    failures.append("the server died")
for f in failures:
    print(f"soak: FAIL: {f}", file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
echo "$metrics"
exit $status
