#!/usr/bin/env bash
# Create or reuse zk0's Python environment and check system libraries.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
PYTHON="${ZK0_PYTHON:-python3}"

usage() {
  cat <<USAGE
Usage: scripts/setup-env.sh [--help]

Creates (or reuses) the virtual environment at \$ZK0_VENV (default: .venv),
installs zk0 with its pinned dependencies and test tools, and makes sure the
FFmpeg shared libraries that torchcodec needs for video decoding are present
(installed with apt-get when running as root; otherwise the command is printed).
USAGE
}

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

check_python() {
  command -v "$PYTHON" >/dev/null || die "no '$PYTHON' found; install Python 3.11+ (apt-get install python3 python3-venv)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" -V 2>&1) is too old; zk0 needs Python 3.11 or newer (set ZK0_PYTHON)"
}

ensure_ffmpeg() {
  if ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
    return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing FFmpeg libraries (torchcodec decodes LeRobot videos with them)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    die "FFmpeg shared libraries are missing; run: sudo apt-get install -y ffmpeg"
  fi
}

ensure_venv() {
  local stamp="$VENV/.zk0-pyproject.sha256" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "cannot create a venv; install python3-venv"
  fi
  log "installing zk0 and its pinned dependencies (first time: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "${ROOT}[test]"
  "$VENV/bin/python" -m pip check >/dev/null || die "pip check failed in $VENV; see '$VENV/bin/pip check'"
  printf '%s\n' "$want" >"$stamp"
}

main() {
  if [[ ${1:-} == "-h" || ${1:-} == "--help" ]]; then
    usage
    return 0
  fi
  [[ $# -eq 0 ]] || die "unexpected argument '$1' (see --help)"
  check_python
  ensure_ffmpeg
  ensure_venv
}

main "$@"
