#!/usr/bin/env bash
# A local Azure Blob server for the object-storage tests: Azurite, installed from npm into a
# directory cached by version. Prints the path of `azurite-blob`.
#
#   scripts/azurite.sh ensure      install if missing, print the server's path
#
# Environment: FTPOP_CACHE (default $HOME/.cache/ftp-operator).
# Fails loudly when it cannot install: the tests that need it must never skip.
set -euo pipefail

AZURITE_VERSION=3.37.0
CACHE_ROOT=${FTPOP_CACHE:-$HOME/.cache/ftp-operator}
DIR="$CACHE_ROOT/azurite-$AZURITE_VERSION"

ensure() {
  # The marker is written last, so an install cut short is redone, never half used.
  if [[ ! -e "$DIR/.installed" ]]; then
    command -v npm >/dev/null || { echo "azurite.sh: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
    rm -rf "$DIR"
    mkdir -p "$DIR"
    npm install --prefix "$DIR" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2 \
      || { echo "azurite.sh: npm could not install azurite@$AZURITE_VERSION" >&2; exit 1; }
    touch "$DIR/.installed"
  fi
  echo "$DIR/node_modules/.bin/azurite-blob"
}

case "${1:-}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
