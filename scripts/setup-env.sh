#!/usr/bin/env bash
# Create or reuse zk0's Python environment and check system libraries.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
PYTHON="${ZK0_PYTHON:-python3}"

usage() {
  cat <<USAGE
Usage: scripts/setup-env.sh [--test] [--help]

Creates (or reuses) the virtual environment at \$ZK0_VENV (default: .venv),
installs zk0 with its pinned dependencies and test tools, and makes sure the
system tools are present: the FFmpeg shared libraries that torchcodec needs for
video decoding, tmux, openssl and ssh-keygen for zk0bot.sh, and with --test also
shellcheck and curl.
Missing ones are installed with apt-get when running as root; otherwise the
exact command is printed. Finally it registers the 'local-simulation' connection
in \$FLWR_HOME/config.toml (default ~/.flwr) for 'flwr run . local-simulation'.
USAGE
}

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

check_python() {
  command -v "$PYTHON" >/dev/null || die "no '$PYTHON' found; install Python 3.11+ (apt-get install python3 python3-venv)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" -V 2>&1) is too old; zk0 needs Python 3.11 or newer (set ZK0_PYTHON)"
}

# Debian packages still missing: ffmpeg (torchcodec decodes LeRobot videos with its
# libraries), tmux, openssl and ssh-keygen (zk0bot.sh); shellcheck and curl (tests only).
missing_packages() {
  ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so' || echo ffmpeg
  command -v tmux >/dev/null || echo tmux
  command -v openssl >/dev/null || echo openssl
  command -v ssh-keygen >/dev/null || echo openssh-client
  if [[ $1 -eq 1 ]]; then
    command -v shellcheck >/dev/null || echo shellcheck
    command -v curl >/dev/null || echo curl
  fi
  return 0
}

ensure_system_packages() {
  local packages
  packages=$(missing_packages "$1" | tr '\n' ' ')
  [[ -n ${packages// /} ]] || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing system packages: $packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  else
    die "missing system packages; run: sudo apt-get install -y $packages"
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

# Researchers run `flwr run . local-simulation`: register that connection in the user's
# Flower config (never in pyproject.toml, which flwr would rewrite). In-memory state:
# the local SuperLink's SQLite mode chokes on large model payloads.
ensure_flwr_connection() {
  FLWR_TELEMETRY_ENABLED=0 "$VENV/bin/python" - <<'PY'
import tomllib
from flwr.cli.flower_config import init_flwr_config
from flwr.supercore.utils import get_flwr_home

init_flwr_config()
path = get_flwr_home() / "config.toml"
if "local-simulation" not in tomllib.loads(path.read_text()).get("superlink", {}):
    with path.open("a") as config:
        config.write('\n[superlink.local-simulation]\naddress = ":local-in-memory:"\n')
PY
}

main() {
  local test_tools=0
  case ${1:-} in
    -h | --help) usage; return 0 ;;
    --test) test_tools=1; shift ;;
  esac
  [[ $# -eq 0 ]] || die "unexpected argument '$1' (see --help)"
  check_python
  ensure_system_packages "$test_tools"
  ensure_venv
  ensure_flwr_connection
}

main "$@"
