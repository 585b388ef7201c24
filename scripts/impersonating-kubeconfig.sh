#!/usr/bin/env bash
# Writes a kubeconfig that acts as USER through the current kubeconfig's credentials (which must
# be allowed to impersonate), so every call made with it is authorised by USER's RBAC alone. The
# one way the test tiers (the cluster harness, test-helm.sh, test-flux.sh) run the operator, or
# a hook's command, as a ServiceAccount.
#   scripts/impersonating-kubeconfig.sh USER OUT      e.g. system:serviceaccount:NS:NAME
# kubectl is $KUBECTL, else the one in PATH; the cluster is $KUBECONFIG's current context.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 USER OUT" >&2; exit 2; }
user=$1 out=$2
# `as` is kubeconfig's impersonation field (what --as sets); `kubectl config set` cannot write
# it, so it is added to the JSON (which kubeconfig readers take as YAML).
"${KUBECTL:-kubectl}" config view --raw --minify --flatten -o json |
  python3 -c '
import json, sys
config = json.load(sys.stdin)
for user in config["users"]:
    user["user"]["as"] = sys.argv[1]
json.dump(config, sys.stdout, indent=1)
' "$user" >"$out.tmp"
mv "$out.tmp" "$out"
