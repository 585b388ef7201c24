#!/usr/bin/env bash
# Lints the GitHub workflows (.github/workflows/*.yml) with actionlint, built from its Go module by
# scripts/tools.sh; actionlint runs shellcheck on every `run:` script, so shellcheck must be there
# too. One check per workflow file; last line: "N passed, M failed".
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
TIER=lint-workflows
# shellcheck source=lib/checks.sh
source "$ROOT/scripts/lib/checks.sh"

command -v shellcheck >/dev/null || die "shellcheck is missing (apt-get install shellcheck; scripts/install-deps.sh does it)"
ACTIONLINT=$(scripts/tools.sh path actionlint) || die "building actionlint failed"
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
[[ ${#workflows[@]} -gt 0 ]] || die "no workflows in .github/workflows"

for workflow in "${workflows[@]}"; do
  check "actionlint: $workflow" "$ACTIONLINT" -shellcheck "$(command -v shellcheck)" "$workflow"
done
summary
