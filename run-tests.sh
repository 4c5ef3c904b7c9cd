#!/usr/bin/env bash
# zk0's one test command: set up the environment, then run the whole pytest suite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"

usage() {
  cat <<USAGE
Usage: ./run-tests.sh [--help] [PYTEST_ARGS...]

Creates or reuses the environment (scripts/setup-env.sh --test: virtual
environment, pinned dependencies, FFmpeg, tmux, openssl, shellcheck), then runs
the whole test suite under tests/ with the environment's pytest. Extra arguments go to pytest unchanged, e.g.
  ./run-tests.sh -k config            only tests whose name matches 'config'
  ./run-tests.sh tests/test_uri.py -x  one file, stop at the first failure
CPU only, no network needed once installed; the end-to-end simulation tests
take a few minutes. Exits non-zero if any test fails or none were collected.
USAGE
}

log() { printf 'run-tests: %s\n' "$*" >&2; }

main() {
  if [[ ${1:-} == "-h" || ${1:-} == "--help" ]]; then
    usage
    return 0
  fi
  "$ROOT/scripts/setup-env.sh" --test
  cd "$ROOT"
  local status=0
  "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
  case $status in
    0) log "all tests passed" ;;
    5) log "error: pytest collected no tests; check the arguments or the tests/ directory" ;;
    *) log "error: pytest exited with status $status" ;;
  esac
  return "$status"
}

main "$@"
