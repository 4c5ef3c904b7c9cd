#!/usr/bin/env bash
# Create or reuse zk0's Python environment and check system libraries.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
PYTHON="${ZK0_PYTHON:-python3}"
# shellcheck disable=SC1091 # scripts/lib.sh is checked on its own
source "$ROOT/scripts/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/setup-env.sh [--test] [--simulation] [--check] [--help]

Creates (or reuses) the virtual environment at \$ZK0_VENV (default: .venv),
installs zk0 with its pinned dependencies and test tools, and makes sure the
system tools are present: the FFmpeg shared libraries that torchcodec needs for
video decoding, and for zk0bot tmux, openssl, ssh-keygen and nginx; with --test
also shellcheck, curl and Chromium. Missing ones are installed with apt-get when running
as root (without starting services; an nginx installed here stays disabled at
boot); otherwise it stops and prints the exact apt-get command. Finally it
registers the 'local-simulation' connection in \$FLWR_HOME/config.toml
(default ~/.flwr) for 'flwr run . local-simulation'.

  --test        also the test tools (shellcheck, curl, chromium, chromium-driver)
  --simulation  only what the simulation needs (FFmpeg): not zk0bot's tools
  --check       only check Python and the system packages; install and change nothing
USAGE
}

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

check_python() {
  command -v "$PYTHON" >/dev/null || die "no '$PYTHON' found; install Python 3.11+ (apt-get install python3 python3-venv)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" -V 2>&1) is too old; zk0 needs Python 3.11 or newer (set ZK0_PYTHON)"
}

# Debian packages still missing: ffmpeg (its libraries decode LeRobot videos), libosmesa6
# (the simulated SO-101's camera renders through it), and for
# zk0bot tmux (keeps its processes running), openssl and ssh-keygen (certificates, node
# keys) and nginx with its stream module (fronts its server); shellcheck, curl and headless Chromium (the landing
# page's tests) for the tests only. $1: 1 for the test tools; $2: 1 for the simulation's needs only.
missing_packages() {
  local package
  has_ffmpeg_libs "$PYTHON" || echo ffmpeg
  has_osmesa "$PYTHON" || echo libosmesa6
  if [[ $2 -eq 0 ]]; then
    for package in tmux openssl openssh-client:ssh-keygen; do
      has_command "${package#*:}" || echo "${package%%:*}"
    done
    nginx_path >/dev/null || echo nginx
    nginx_path >/dev/null && nginx_stream_module "$(nginx_path)" >/dev/null || echo libnginx-mod-stream
  fi
  if [[ $1 -eq 1 ]]; then
    for package in shellcheck curl chromium chromium-driver:chromedriver; do
      has_command "${package#*:}" || echo "${package%%:*}"
    done
  fi
  return 0
}

remove_policy() {
  rm -f /usr/sbin/policy-rc.d
}

# apt-get must not start services: nginx's would take port 80 (zk0bot runs its own nginx),
# and its install fails where that service cannot start. A policy-rc.d that denies every
# start is in place while apt-get runs (unless the system has its own), and an nginx
# installed here is left disabled at boot.
apt_install() {
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    own_policy=1
    trap remove_policy EXIT
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null >/dev/null \
    || die "apt-get update failed; run it to see why, then rerun"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" </dev/null >/dev/null \
    || die "apt-get install -y $* failed; run it to see why, then rerun"
  if [[ " $* " == *" nginx "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet nginx.service 2>/dev/null || log "note: could not disable the nginx system service; zk0bot does not need it"
  fi
  if ((own_policy)); then
    remove_policy
    trap - EXIT
  fi
}

# Root installs what is missing with apt-get (unless only checking); anyone else gets the
# exact command, to run with sudo or, without it, to hand to an administrator.
# $1: 1 to include the test tools; $2: 1 to only check; $3: 1 for the simulation's needs only.
ensure_system_packages() {
  local missing
  missing="$(missing_packages "$1" "$3" | paste -sd ' ' -)"
  [[ -n $missing ]] || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages (Debian names): $missing; install them with your system's package manager, then rerun"
  elif [[ $(id -u) -eq 0 && $2 -eq 0 ]]; then
    log "installing system packages: $missing"
    # shellcheck disable=SC2086 # one word per package
    apt_install $missing
  else
    # shellcheck disable=SC2086 # one word per package
    die "missing system packages: $missing; $(apt_hint $missing), then rerun"
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
  # Replaced by rename, never rewritten in place: a venv copied with hard links (cp -al)
  # shares the file with its original, whose stamp must keep naming its own pyproject.toml.
  printf '%s\n' "$want" >"$stamp.new"
  mv -f "$stamp.new" "$stamp"
}

# Researchers run `flwr run . local-simulation`: register that connection in the user's
# Flower config (never in pyproject.toml, which flwr would rewrite). In-memory state:
# the local SuperLink's SQLite mode chokes on large model payloads.
ensure_flwr_connection() {
  local config
  config=$(FLWR_TELEMETRY_ENABLED=0 "$VENV/bin/python" - <<'PY'
import contextlib, sys, tomllib
from flwr.cli.flower_config import init_flwr_config
from flwr.supercore.utils import get_flwr_home

with contextlib.redirect_stdout(sys.stderr):  # stdout is the path this prints
    init_flwr_config()
path = get_flwr_home() / "config.toml"
if "local-simulation" not in tomllib.loads(path.read_text()).get("superlink", {}):
    print(path)
PY
  )
  [[ -z $config ]] || { echo; flwr_connection local-simulation ":local-in-memory:"; } >>"$config"
}

main() {
  local test_tools=0 check_only=0 simulation=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h | --help) usage; return 0 ;;
      --test) test_tools=1 ;;
      --simulation) simulation=1 ;;
      --check) check_only=1 ;;
      *) die "unexpected argument '$1' (see --help)" ;;
    esac
    shift
  done
  check_python
  ensure_system_packages "$test_tools" "$check_only" "$simulation"
  ((check_only == 0)) || return 0
  ensure_venv
  ensure_flwr_connection
}

main "$@"
