# The harness the shell test tiers share (test-helm.sh, test-flux.sh, test-node.sh,
# test-replicas.sh): sourced, never run. Set TIER, the name each log line starts with, before
# sourcing. The real-node tiers source lib/node.sh after it.
#
#   check NAME CMD...   one test: counted and timed; its output is shown when it fails, and also
#                       when it passes if CHECK_DETAILS=1 (for tiers whose checks print figures)
#   fail MESSAGE        a check's way to fail with a reason: it ends the check there (each check
#                       runs in a subshell), so a later line that succeeds cannot hide it
#   until_true T CMD... polls CMD every POLL_SECONDS (default 1) until it succeeds or T s pass
#   CMD | has [GREP-FLAGS] PATTERN
#                       grep -q that reads its input to the end: with pipefail, `grep -q` would
#                       exit at the first match and fail CMD's next write (SIGPIPE), so the
#                       pipeline would fail although the pattern matched
#   who_deleted RES NAME  prints the control plane's audit records of deleting NAME (a resource
#                       of kind RES, plural): who, when, how; for a check that finds an object gone
#   summary             the last line test.sh counts ("N passed, M failed"); false on any failure

PASSED=0 FAILED=0 FAILURES=()
: "${CHECK_DETAILS:=0}" "${POLL_SECONDS:=1}"

log() { echo "$TIER: $*" >&2; }
die() { echo "$TIER: error: $*" >&2; exit 2; }
fail() { echo "$*" >&2; exit 1; }

check() {
  local name=$1; shift
  local out start=$SECONDS
  if out=$("$@" 2>&1); then
    PASSED=$((PASSED + 1)); printf 'ok    %-72s %3ss\n' "$name" $((SECONDS - start))
    [[ $CHECK_DETAILS == 1 && -n $out ]] && printf '%s\n' "$out" | tail -30 | sed 's/^/      /'
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name"); printf 'FAIL  %-72s %3ss\n' "$name" $((SECONDS - start))
    printf '%s\n' "$out" | tail -30 | sed 's/^/      /'
  fi
  return 0
}

until_true() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep "$POLL_SECONDS"
  done
}

has() {
  local rc=0
  grep -q "$@" || rc=$?
  cat >/dev/null
  return "$rc"
}

who_deleted() {
  local audit=${FTPOP_CLUSTER_DIR:-$ROOT/target/local-cluster}/logs/audit.log
  [[ -f $audit ]] || { echo "no audit log at $audit"; return 0; }
  python3 - "$audit" "$1" "$2" <<'PY'
import json, sys
path, resource, name = sys.argv[1:]
found = False
for line in open(path):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    o = e.get("objectRef") or {}
    if o.get("resource") == resource and o.get("name") in (name, None) and e.get("stage") == "ResponseComplete":
        found = True
        print(f"audit: {e.get('requestReceivedTimestamp')} {e.get('verb')} {resource}/{o.get('name') or '*'}"
              f" in {o.get('namespace')} by {e.get('user', {}).get('username')}"
              f" ({e.get('userAgent')}): {e.get('responseStatus', {}).get('code')}")
if not found:
    print(f"audit: nobody deleted {resource}/{name} through the API server")
PY
}

summary() {
  [[ $FAILED -eq 0 ]] || log "failed: ${FAILURES[*]}"
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}
