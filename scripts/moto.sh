#!/usr/bin/env bash
# A local S3 server for the object-storage tests and benchmarks: moto's server, installed from
# PyPI into a virtualenv cached by version. Prints the path of `moto_server`.
#
#   scripts/moto.sh ensure      install if missing, print the server's path
#
# Environment: FTPOP_CACHE (default $HOME/.cache/ftp-operator).
# Fails loudly when it cannot install: the tests that need it must never skip.
set -euo pipefail

MOTO_VERSION=5.2.5
CACHE_ROOT=${FTPOP_CACHE:-$HOME/.cache/ftp-operator}
VENV="$CACHE_ROOT/moto-$MOTO_VERSION"

ensure() {
  # The marker is written last, so an install cut short is redone, never half used.
  if [[ ! -e "$VENV/.installed" ]]; then
    mkdir -p "$CACHE_ROOT"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 \
      || { echo "moto.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2 \
      || { echo "moto.sh: pip could not install moto[server]==$MOTO_VERSION from PyPI" >&2; exit 1; }
    touch "$VENV/.installed"
  fi
  echo "$VENV/bin/moto_server"
}

case "${1:-}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
