#!/usr/bin/env bash
# Runs docs/argocd-health.lua the way Argo CD does (the object as the global `obj`, the script's
# returned table read as hs.status / hs.message) on one object, JSON on stdin or in FILE.
# Prints "<status>\t<message>".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/../../docs/argocd-health.lua"
lua=${LUA:-lua5.4}
command -v "$lua" >/dev/null || { echo "health.sh: $lua not found (apt-get install lua5.4)" >&2; exit 2; }
objlua=$(mktemp); trap 'rm -f "$objlua"' EXIT
python3 "$here/json2lua.py" < "${1:-/dev/stdin}" > "$objlua"
"$lua" - "$objlua" "$script" <<'LUA'
dofile(arg[1])
local hs = dofile(arg[2])
assert(type(hs) == "table", "the health script must return a table")
assert(hs.status ~= nil, "the health script must set hs.status")
io.write(hs.status, "\t", hs.message or "", "\n")
LUA
