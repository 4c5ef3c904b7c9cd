#!/usr/bin/env bash
# zk0 one-line installer:
#   curl -fsSL https://<zk0 site>/get-zk0bot.sh | bash
# Installs (or upgrades in place) zk0 into ~/zk0 and puts the `zk0bot` command on the PATH.
# Piped-safe: everything lives in functions and the last line calls main, so nothing runs
# before bash has read the whole script.
set -euo pipefail

DEFAULT_REPO="https://github.com/ivelin/zk0.git"
DEFAULT_REF="main"

usage() {
  cat <<USAGE
Usage: curl -fsSL <zk0 site>/get-zk0bot.sh | bash
       curl -fsSL <zk0 site>/get-zk0bot.sh | bash -s -- --help
       bash get-zk0bot.sh [--help]

Installs zk0 (federated SmolVLA fine-tuning for SO-100/SO-101 robot owners) and the
zk0bot operator command. Running it again upgrades the install in place.

Steps: checks git, Python 3.11+ and free disk space; installs FFmpeg, tmux and
openssl with apt-get when run as root (otherwise prints the command to run);
clones or updates the zk0 source with git; creates the Python environment with
the project's pinned dependencies (scripts/setup-env.sh, about 6-9 GB with
PyTorch); links ~/.local/bin/zk0bot to the installed zk0bot.sh.

Environment:
  ZK0_INSTALL_DIR  where the source and its .venv go  (default: ~/zk0)
  ZK0_REPO         git URL or local path of the source (default: $DEFAULT_REPO,
                   or the origin of an existing install)
  ZK0_REF          branch, tag or commit to install    (default: $DEFAULT_REF)
  ZK0_PYTHON       Python 3.11+ interpreter to use      (default: first of python3,
                   python3.14 ... python3.11 that is new enough)
  ZK0_MIN_FREE_GB  free space required at the install location (default: 10 for a
                   new install, 2 for an upgrade)

ZK0_INSTALL_DIR is where the code lives; zk0bot keeps its own state (keys,
certificates, logs) in ZK0_HOME, which is a different directory.
USAGE
}

log() { printf 'zk0-install: %s\n' "$*" >&2; }
warn() { printf 'zk0-install: warning: %s\n' "$*" >&2; }
die() {
  printf 'zk0-install: error: %s\n' "$*" >&2
  exit 1
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h | --help)
        usage
        exit 0
        ;;
      *) die "unexpected argument '$1' (see --help)" ;;
    esac
  done
}

configure() {
  [[ -n ${HOME:-} ]] || die "HOME is not set"
  INSTALL_DIR="${ZK0_INSTALL_DIR:-$HOME/zk0}"
  INSTALL_DIR="${INSTALL_DIR%/}"
  [[ $INSTALL_DIR == /* ]] || INSTALL_DIR="$PWD/$INSTALL_DIR"
  REF="${ZK0_REF:-$DEFAULT_REF}"
  BIN_DIR="$HOME/.local/bin"
  REPO="${ZK0_REPO:-}"
  if [[ -z $REPO ]]; then
    # An upgrade keeps following the repository it was installed from.
    REPO="$(git -C "$INSTALL_DIR" remote get-url origin 2>/dev/null || true)"
    REPO="${REPO:-$DEFAULT_REPO}"
  fi
}

check_git() {
  command -v git >/dev/null 2>&1 \
    || die "git is not installed; install it first (Debian/Ubuntu: sudo apt-get install -y git), then rerun"
}

python_ok() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

find_python() {
  local candidate
  if [[ -n ${ZK0_PYTHON:-} ]]; then
    python_ok "$ZK0_PYTHON" \
      || die "ZK0_PYTHON=$ZK0_PYTHON is not a working Python 3.11 or newer; unset it or point it at one"
    PYTHON="$ZK0_PYTHON"
  else
    PYTHON=""
    for candidate in python3 python3.14 python3.13 python3.12 python3.11; do
      if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
        PYTHON="$(command -v "$candidate")"
        break
      fi
    done
    [[ -n $PYTHON ]] \
      || die "no Python 3.11 or newer found; install one (Debian/Ubuntu: sudo apt-get install -y python3 python3-venv) or set ZK0_PYTHON"
  fi
  "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 \
    || die "$PYTHON cannot create virtual environments; install venv support (Debian/Ubuntu: sudo apt-get install -y python3-venv)"
}

check_disk() {
  local where="$INSTALL_DIR" need_gb free_kb
  if [[ -x $INSTALL_DIR/.venv/bin/python ]]; then
    need_gb="${ZK0_MIN_FREE_GB:-2}"
  else
    need_gb="${ZK0_MIN_FREE_GB:-10}"
  fi
  [[ $need_gb =~ ^[0-9]+$ ]] || die "ZK0_MIN_FREE_GB must be a whole number of GB, got '$need_gb'"
  while [[ ! -d $where ]]; do
    where="$(dirname "$where")"
  done
  free_kb="$(df -Pk "$where" | awk 'NR == 2 { print $4 }')"
  [[ $free_kb =~ ^[0-9]+$ ]] || die "cannot read the free disk space at $where"
  if ((free_kb < need_gb * 1024 * 1024)); then
    die "not enough disk space at $where: $((free_kb / 1024 / 1024)) GB free, $need_gb GB needed (PyTorch and the models are large); free some space or set ZK0_INSTALL_DIR to a bigger disk"
  fi
}

check_repo() {
  local reason
  if ! reason="$(GIT_TERMINAL_PROMPT=0 git ls-remote --heads "$REPO" 2>&1 >/dev/null)"; then
    reason="$(printf '%s\n' "$reason" | grep -v '^[[:space:]]*$' | head -n 1)"
    die "cannot reach the zk0 repository '$REPO' (${reason:-git ls-remote failed}); check ZK0_REPO and your network"
  fi
}

has_ffmpeg_libs() {
  local ldconfig
  ldconfig="$(command -v ldconfig || echo /sbin/ldconfig)"
  "$ldconfig" -p 2>/dev/null | grep -q 'libavcodec\.so'
}

# FFmpeg's shared libraries decode LeRobot videos (torchcodec); tmux keeps zk0bot's
# server and client processes running after the terminal closes; openssl makes its certificates.
ensure_system_packages() {
  local missing=()
  has_ffmpeg_libs || missing+=(ffmpeg)
  command -v tmux >/dev/null 2>&1 || missing+=(tmux)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [[ ${#missing[@]} -eq 0 ]] && return
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null \
      || die "apt-get update failed; run it by hand, then rerun"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null \
      || die "apt-get install ${missing[*]} failed; run: apt-get install -y ${missing[*]}"
  else
    die "missing system packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]} (or your OS's equivalent), then rerun"
  fi
}

clone_source() {
  [[ ! -e $INSTALL_DIR ]] || [[ -z "$(ls -A "$INSTALL_DIR")" ]] \
    || die "$INSTALL_DIR exists and is not a zk0 checkout; remove it or set ZK0_INSTALL_DIR"
  log "cloning $REPO into $INSTALL_DIR"
  mkdir -p "$(dirname "$INSTALL_DIR")"
  GIT_TERMINAL_PROMPT=0 git clone --quiet "$REPO" "$INSTALL_DIR" </dev/null \
    || die "git clone of '$REPO' into $INSTALL_DIR failed"
}

update_remote() {
  local current
  current="$(git -C "$INSTALL_DIR" remote get-url origin 2>/dev/null || true)"
  if [[ -z $current ]]; then
    git -C "$INSTALL_DIR" remote add origin "$REPO"
  elif [[ $current != "$REPO" ]]; then
    log "switching the install's origin from $current to $REPO"
    git -C "$INSTALL_DIR" remote set-url origin "$REPO"
  fi
}

# Checks out ZK0_REF: a branch becomes a local branch tracking origin (so `git status`
# reads normally), a tag or commit a detached HEAD.
checkout_ref() {
  local git=(git -C "$INSTALL_DIR") commit
  GIT_TERMINAL_PROMPT=0 "${git[@]}" fetch --quiet --tags --force --prune origin </dev/null \
    || die "git fetch from '$REPO' failed"
  [[ -z "$("${git[@]}" status --porcelain --untracked-files=no)" ]] \
    || die "$INSTALL_DIR has local changes to tracked files; commit or stash them (git -C $INSTALL_DIR stash), then rerun"
  if "${git[@]}" rev-parse --quiet --verify "refs/remotes/origin/$REF" >/dev/null; then
    "${git[@]}" checkout --quiet -B "$REF" "refs/remotes/origin/$REF"
    "${git[@]}" branch --quiet --set-upstream-to="origin/$REF" "$REF"
  elif "${git[@]}" rev-parse --quiet --verify "refs/tags/$REF^{commit}" >/dev/null; then
    "${git[@]}" -c advice.detachedHead=false checkout --quiet --detach "refs/tags/$REF"
  elif commit="$("${git[@]}" rev-parse --quiet --verify "$REF^{commit}")" \
    || { GIT_TERMINAL_PROMPT=0 "${git[@]}" fetch --quiet origin "$REF" </dev/null 2>/dev/null \
      && commit="$("${git[@]}" rev-parse FETCH_HEAD)"; }; then
    "${git[@]}" -c advice.detachedHead=false checkout --quiet --detach "$commit"
  else
    die "ZK0_REF '$REF' is not a branch, tag or commit of '$REPO'"
  fi
}

fetch_source() {
  if [[ -d $INSTALL_DIR/.git ]]; then
    log "updating the existing install in $INSTALL_DIR"
    update_remote
  else
    clone_source
  fi
  checkout_ref
  COMMIT="$(git -C "$INSTALL_DIR" log -1 --format='%h %s')"
  log "source at $REF ($COMMIT)"
}

setup_environment() {
  local setup="$INSTALL_DIR/scripts/setup-env.sh"
  [[ -f $setup ]] || die "$setup is missing; ZK0_REF '$REF' is not an installable zk0 version"
  log "setting up the Python environment in $INSTALL_DIR/.venv (first time: several minutes, ~6-9 GB)"
  ZK0_VENV="$INSTALL_DIR/.venv" ZK0_PYTHON="$PYTHON" bash "$setup" </dev/null \
    || die "environment setup failed; fix the error above and rerun (re-running is safe)"
}

link_command() {
  local target="$INSTALL_DIR/zk0bot.sh" link="$BIN_DIR/zk0bot"
  [[ -f $target ]] || die "$target is missing; ZK0_REF '$REF' has no zk0bot command"
  [[ -x $target ]] || die "$target is not executable in ZK0_REF '$REF' (a packaging bug: it must be committed with mode 755)"
  if [[ -e $link && ! -L $link ]]; then
    die "$link exists and is not a symlink; move it away, then rerun"
  fi
  mkdir -p "$BIN_DIR"
  ln -sfn "$target" "$link"
  "$link" --help >/dev/null 2>&1 </dev/null || die "'$link --help' failed; run it to see why"
}

path_hint() {
  case ":$PATH:" in
    *":$BIN_DIR:"*) return 1 ;;
  esac
  # shellcheck disable=SC2016 # the line is printed for the user to paste, unexpanded
  printf '%s' 'export PATH="$HOME/.local/bin:$PATH"'
}

summary() {
  local hint zk0bot="zk0bot"
  if hint="$(path_hint)"; then
    warn "$BIN_DIR is not on your PATH; add this line to ~/.bashrc (or ~/.profile), then open a new terminal:"
    warn "  $hint"
    zk0bot="$BIN_DIR/zk0bot"
  fi
  cat <<SUMMARY

zk0 is installed.
  source       $INSTALL_DIR  ($REF: $COMMIT)
  environment  $INSTALL_DIR/.venv
  command      $BIN_DIR/zk0bot -> $INSTALL_DIR/zk0bot.sh

Next:
  check this machine          $zk0bot doctor
  join a federation (node)    $zk0bot client start hf:owner/dataset   (or local:/path/to/dataset)
  run the server (admin)      $zk0bot server start
  every command               $zk0bot --help

Upgrade: run the same curl line again. Uninstall: rm -rf $INSTALL_DIR $BIN_DIR/zk0bot
SUMMARY
}

main() {
  parse_args "$@"
  configure
  check_git
  find_python
  check_disk
  check_repo
  ensure_system_packages
  fetch_source
  setup_environment
  link_command
  summary
}

main "$@"
