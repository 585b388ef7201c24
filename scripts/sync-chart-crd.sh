#!/usr/bin/env bash
# The chart installs the FtpServer CRD from its own byte-for-byte copy of crds/ftpserver.yaml
# (Helm's .Files cannot reach outside the chart). After `ftp-operator crd > crds/ftpserver.yaml`:
#   scripts/sync-chart-crd.sh          # copy it into the chart
#   scripts/sync-chart-crd.sh --check  # exit 1 if the copy differs (tests/chart_crd.rs checks too)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/crds/ftpserver.yaml"
dst="$root/charts/ftp-operator/files/crds/ftpserver.yaml"
if [[ ${1:-} == --check ]]; then
  cmp -s "$src" "$dst" && exit 0
  echo "sync-chart-crd: $dst differs from $src; run scripts/sync-chart-crd.sh" >&2
  exit 1
fi
mkdir -p "$(dirname "$dst")"
cp "$src" "$dst"
