#!/usr/bin/env bash
# The chart installs the CRDs from its own byte-for-byte copies of crds/ftpserver.yaml and
# crds/ftpuser.yaml (Helm's .Files cannot reach outside the chart). After
# `ftp-operator crd > crds/ftpserver.yaml` and `ftp-operator crd ftpuser > crds/ftpuser.yaml`:
#   scripts/sync-chart-crd.sh          # copy them into the chart
#   scripts/sync-chart-crd.sh --check  # exit 1 if a copy differs (tests/chart_crd.rs checks too)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
status=0
for crd in ftpserver ftpuser; do
  src="$root/crds/$crd.yaml"
  dst="$root/charts/ftp-operator/files/crds/$crd.yaml"
  if [[ ${1:-} == --check ]]; then
    cmp -s "$src" "$dst" && continue
    echo "sync-chart-crd: $dst differs from $src; run scripts/sync-chart-crd.sh" >&2
    status=1
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
  fi
done
exit $status
