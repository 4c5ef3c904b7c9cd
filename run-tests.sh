#!/usr/bin/env bash
# zk0's one test command: set up the environment, then run the whole pytest suite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"

usage() {
  cat <<USAGE
Usage: ./run-tests.sh [--help] [PYTEST_ARGS...]

Creates or reuses the environment (scripts/setup-env.sh --test: virtual
environment, pinned dependencies, FFmpeg, tmux, openssl, shellcheck, Chromium),
then runs the whole test suite under tests/ with the environment's pytest in two
tiers: the unit tier (tests/unit: fast, in-process; 2 pytest-xdist workers), then
the system tier (tests/system: real Flower processes, zk0bot, nginx, lerobot-train,
the installer, a browser; 3 workers, a test module stays on one).
ZK0_TEST_WORKERS=N sets both counts (0: no workers, in this process). Extra
arguments go to one pytest run over both tiers in this process, unchanged, e.g.
  ./run-tests.sh tests/unit                 the unit tier alone
  ./run-tests.sh -k config                  only tests whose name matches 'config'
  ./run-tests.sh tests/unit/test_uri.py -x  one file, stop at the first failure
CPU only, no network needed once installed. Exits non-zero if any test fails or
none were collected.
USAGE
}

# pytest-xdist workers. The unit tier is CPU-bound: one per core of the 2-core target. The
# system tier mostly waits on the processes it starts (servers, nodes, polling), so a third
# worker overlaps that waiting; a module stays on one worker (its servers are module fixtures).
UNIT_WORKERS=${ZK0_TEST_WORKERS:-2}
SYSTEM_WORKERS=${ZK0_TEST_WORKERS:-3}

log() { printf 'run-tests: %s\n' "$*" >&2; }

main() {
  if [[ ${1:-} == "-h" || ${1:-} == "--help" ]]; then
    usage
    return 0
  fi
  "$ROOT/scripts/setup-env.sh" --test
  cd "$ROOT"
  local status=0
  if [[ $# -gt 0 ]]; then
    run_pytest "tests" "$@" || status=$?
  else
    run_pytest "unit tier" -n "$UNIT_WORKERS" tests/unit || status=$?
    if [[ $status -eq 0 ]]; then
      run_pytest "system tier" -n "$SYSTEM_WORKERS" --dist loadfile tests/system || status=$?
    fi
  fi
  [[ $status -ne 0 ]] || log "all tests passed"
  return "$status"
}

# $1: what runs (for the log); the rest: pytest's arguments.
run_pytest() {
  local what=$1 status=0
  shift
  log "running the $what"
  "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
  case $status in
    0) ;;
    5) log "error: pytest collected no tests in the $what; check the arguments or the tests/ directory" ;;
    *) log "error: the $what failed (pytest exited with status $status)" ;;
  esac
  return "$status"
}

main "$@"
