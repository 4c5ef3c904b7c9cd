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

Steps: checks git, Python 3.11+, free disk space and that ZK0_REF exists in
ZK0_REPO; checks the system packages FFmpeg (its shared libraries), tmux, openssl,
openssh-client and nginx (as root, scripts/setup-env.sh installs missing ones with
apt-get; anyone else gets the exact command to run and nothing is written);
clones the zk0 source with git, or updates an existing install; creates the
Python environment with the project's pinned dependencies (scripts/setup-env.sh,
about 6-9 GB with PyTorch); links ~/.local/bin/zk0bot to the installed zk0bot.sh.
An upgrade never destroys work: it stops, changing nothing, when ZK0_INSTALL_DIR
is another project's checkout, or has uncommitted changes or commits ZK0_REF lacks.

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
certificates, logs) in ZK0_HOME (default: ~/.zk0), which is a different directory.
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

# How this user installs Debian packages (the same words as scripts/setup-env.sh and zk0bot,
# which share scripts/lib.sh; this script runs before the source is here): root runs
# apt-get, a user with sudo runs it through sudo, anyone else asks an administrator.
apt_hint() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install $* (Debian names) with your system's package manager"
  elif [[ $(id -u) -eq 0 ]]; then
    echo "run: apt-get install -y $*"
  elif command -v sudo >/dev/null 2>&1; then
    echo "run: sudo apt-get install -y $* (or ask an administrator to)"
  else
    echo "ask an administrator to run: apt-get install -y $* (as root)"
  fi
}

check_git() {
  command -v git >/dev/null 2>&1 || die "git is not installed; $(apt_hint git), then rerun"
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
      || die "no Python 3.11 or newer found; $(apt_hint python3 python3-venv), or set ZK0_PYTHON to one"
  fi
  "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 \
    || die "$PYTHON cannot create virtual environments; $(apt_hint python3-venv)"
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

# git's reason for a failure on one line: the lines up to its first "fatal:" (an ssh
# error comes before it) and the line after that one if it ends in ':' (git:// errors do).
git_reason() {
  awk '
    !NF || stop { next }
    { if (fatal) stop = 1; if (sub(/^(fatal|error): /, "")) fatal = 1 }
    { reason = reason sep $0; sep = /:$/ ? " " : "; " }
    fatal && !/:$/ { stop = 1 }
    END { print reason }'
}

# The install location (for a new install, the nearest directory above it that exists) must
# be writable by this user; mktemp and git would otherwise fail in their own words.
check_writable() {
  local where="$INSTALL_DIR"
  while [[ ! -e $where ]]; do
    where="$(dirname "$where")"
  done
  [[ -d $where ]] || die "$where is not a directory; set ZK0_INSTALL_DIR to a directory path"
  [[ -w $where && -x $where ]] \
    || die "cannot write to $where (install location $INSTALL_DIR); set ZK0_INSTALL_DIR to a directory you can write, or ask its owner for access"
}

# A failed step as one line: a full disk says so (git, mktemp and mv say it over several
# lines of their own), anything else gives git's reason.
fail_step() {
  local what=$1 output=$2
  if grep -qi 'no space left on device' <<<"$output"; then
    die "$what: the disk is full; free some space or set ZK0_INSTALL_DIR to a bigger disk, then rerun"
  fi
  die "$what: $(git_reason <<<"$output")"
}

# Runs a command that writes the install, its output kept for fail_step.
quietly() {
  local what=$1 output
  shift
  output="$("$@" 2>&1 </dev/null)" || fail_step "$what" "$output"
}

# Says what ZK0_REF names in ZK0_REPO before anything is written: a branch, a tag, or, for
# a hexadecimal name, a commit (that one is verified when fetched, outside the install dir).
resolve_ref() {
  local listing
  listing="$(GIT_TERMINAL_PROMPT=0 git ls-remote --heads --tags "$REPO" 2>&1 </dev/null)" \
    || die "cannot reach ZK0_REPO=$REPO (check it and your network): $(git_reason <<<"$listing")"
  if awk -v ref="refs/heads/$REF" '$2 == ref { found = 1 } END { exit !found }' <<<"$listing"; then
    REF_KIND=branch
  elif awk -v ref="refs/tags/$REF" '$2 == ref { found = 1 } END { exit !found }' <<<"$listing"; then
    REF_KIND=tag
  elif [[ $REF =~ ^[0-9a-fA-F]{4,40}$ ]]; then
    REF_KIND=commit
  else
    die "ZK0_REF '$REF' is not a branch, tag or commit of '$REPO'"
  fi
}

# FFmpeg's shared libraries, which torchcodec loads to decode LeRobot's videos, looked up by
# Python's ctypes: it reads the loader's cache through /sbin/ldconfig by absolute path, so
# this works for users whose PATH lacks /sbin (where a bare `ldconfig` is not found).
has_ffmpeg_libs() {
  "$1" -c 'import ctypes.util as u, sys; sys.exit(not all(map(u.find_library, ("avutil", "avcodec", "avformat", "avdevice", "avfilter", "swscale", "swresample"))))' >/dev/null 2>&1
}

# OSMesa, MuJoCo's headless renderer (a server scoring rollouts in the simulated SO-101).
has_osmesa() {
  "$1" -c 'import ctypes.util as u, sys; sys.exit(not u.find_library("OSMesa"))' >/dev/null 2>&1
}

# nginx lives in /usr/sbin, which is not on a normal user's PATH.
has_command() {
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]
}

# The Debian packages zk0 needs (the same list as scripts/setup-env.sh): ffmpeg's libraries
# decode LeRobot videos; libosmesa6 renders the simulated SO-101's camera; tmux keeps zk0bot's processes running after the terminal closes;
# openssl and ssh-keygen make its certificates and node keys; nginx and its stream module front its server.
missing_packages() {
  has_ffmpeg_libs "$PYTHON" || echo ffmpeg
  has_osmesa "$PYTHON" || echo libosmesa6
  local package command
  for package in tmux openssl openssh-client:ssh-keygen nginx; do
    command="${package#*:}"
    has_command "$command" || echo "${package%%:*}"
  done
  has_nginx_stream || echo libnginx-mod-stream
}

# nginx's stream module (the server's public port counts connections per address with it):
# built in, or Debian's libnginx-mod-stream (the same test as scripts/lib.sh's nginx_stream_module).
has_nginx_stream() {
  local nginx build modules=/usr/lib/nginx/modules
  nginx=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
  build=$("$nginx" -V 2>&1) || return 1
  if [[ $build =~ --with-stream=dynamic ]]; then
    [[ $build =~ --modules-path=([^ ]+) ]] && modules=${BASH_REMATCH[1]}
    [[ -f $modules/ngx_stream_module.so ]]
  else
    [[ $build =~ --with-stream( |$) ]]
  fi
}

# Root gets the missing packages from scripts/setup-env.sh (apt-get) once the source is
# here; anyone else is told the exact command now, before anything is written.
check_system_packages() {
  local missing
  [[ $(id -u) -ne 0 ]] || return 0
  missing="$(missing_packages | paste -sd ' ' -)"
  [[ -n $missing ]] || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages (Debian names): $missing; install them with your system's package manager, then rerun"
  fi
  # shellcheck disable=SC2086 # one word per package
  die "missing system packages: $missing; $(apt_hint $missing), then rerun"
}

# True when COMMIT of the repository in DIR is a zk0 version: it has zk0bot.sh,
# scripts/setup-env.sh and a pyproject.toml for the project "zk0".
is_zk0_commit() {
  local git=(git -C "$1") commit=$2
  "${git[@]}" cat-file -e "$commit:zk0bot.sh" 2>/dev/null \
    && "${git[@]}" cat-file -e "$commit:scripts/setup-env.sh" 2>/dev/null \
    && "${git[@]}" show "$commit:pyproject.toml" 2>/dev/null | grep -x 'name = "zk0"' >/dev/null
}

# Fetches ZK0_REPO's branches and tags into DIR under a private namespace, sets TARGET to
# the commit ZK0_REF names, and removes the namespace again: DIR's branches, remotes and
# config are untouched, so a refusal afterwards changes nothing.
fetch_target() {
  local git=(git -C "$1") reason ns=refs/zk0-incoming
  reason="$(GIT_TERMINAL_PROMPT=0 "${git[@]}" fetch --quiet --no-tags --force "$REPO" \
    "+refs/heads/*:$ns/heads/*" "+refs/tags/*:$ns/tags/*" 2>&1 </dev/null)" \
    || fail_step "cannot fetch ZK0_REPO=$REPO" "$reason"
  case $REF_KIND in
    branch) TARGET="$("${git[@]}" rev-parse --quiet --verify "$ns/heads/$REF^{commit}" || true)" ;;
    tag) TARGET="$("${git[@]}" rev-parse --quiet --verify "$ns/tags/$REF^{commit}" || true)" ;;
    commit)
      # A commit on no branch or tag (a pull request's) can still be fetched by its full id.
      TARGET="$("${git[@]}" rev-parse --quiet --verify "$REF^{commit}" \
        || { GIT_TERMINAL_PROMPT=0 "${git[@]}" fetch --quiet --no-tags "$REPO" "$REF" </dev/null >/dev/null 2>&1 \
          && "${git[@]}" rev-parse --verify "FETCH_HEAD^{commit}"; } || true)"
      ;;
  esac
  "${git[@]}" for-each-ref --format='delete %(refname)' "$ns/" | "${git[@]}" update-ref --stdin
  [[ -n $TARGET ]] || die "ZK0_REF '$REF' is not a branch, tag or commit of '$REPO'"
  is_zk0_commit "$1" "$TARGET" \
    || die "ZK0_REF '$REF' of '$REPO' is not a zk0 version (no zk0bot.sh, scripts/setup-env.sh and pyproject.toml named zk0); choose another ZK0_REF or ZK0_REPO"
}

# Points DIR's origin at ZK0_REPO and checks out TARGET: a branch as a local branch
# tracking origin (so `git status` reads normally), a tag or commit as a detached HEAD.
# refs/zk0/installed remembers what the installer put there, so the next upgrade can
# tell commits made since then from what it installed.
checkout_target() {
  local git=(git -C "$1") current reason
  reason="$(GIT_TERMINAL_PROMPT=0 "${git[@]}" fetch --quiet --tags --force --prune "$REPO" \
    "+refs/heads/*:refs/remotes/origin/*" 2>&1 </dev/null)" \
    || fail_step "cannot fetch ZK0_REPO=$REPO" "$reason"
  current="$("${git[@]}" remote get-url origin 2>/dev/null || true)"
  if [[ -z $current ]]; then
    quietly "cannot set the install's origin" "${git[@]}" remote add origin "$REPO"
  elif [[ $current != "$REPO" ]]; then
    log "switching the install's origin from $current to $REPO"
    quietly "cannot set the install's origin" "${git[@]}" remote set-url origin "$REPO"
  fi
  if [[ $REF_KIND == branch ]]; then
    quietly "cannot check out $REF in $1" "${git[@]}" checkout --quiet -B "$REF" "$TARGET"
    quietly "cannot check out $REF in $1" "${git[@]}" branch --quiet --set-upstream-to="origin/$REF" "$REF"
  else
    quietly "cannot check out $REF in $1" "${git[@]}" -c advice.detachedHead=false checkout --quiet --detach "$TARGET"
  fi
  quietly "cannot record the installed version in $1" "${git[@]}" update-ref refs/zk0/installed "$TARGET"
}

remove_staging() {
  [[ -z ${STAGING:-} ]] || rm -rf "$STAGING"
}

# A new install is fetched into a hidden directory beside its place and moved there only
# once ZK0_REF is checked out and is a zk0 version, so a failure leaves nothing behind.
new_install() {
  local parent="$INSTALL_DIR"
  if [[ -e $INSTALL_DIR ]]; then
    [[ -d $INSTALL_DIR && -z "$(ls -A "$INSTALL_DIR")" ]] \
      || die "$INSTALL_DIR exists and is not a zk0 checkout; remove it or set ZK0_INSTALL_DIR"
  fi
  while [[ ! -d $parent ]]; do
    parent="$(dirname "$parent")"
  done
  log "cloning $REPO into $INSTALL_DIR"
  trap remove_staging EXIT
  local made
  made="$(mktemp -d "$parent/.zk0-install.XXXXXX" 2>&1)" || fail_step "cannot create a directory in $parent" "$made"
  STAGING=$made
  chmod "$(umask -S)" "$STAGING"
  quietly "cannot create a git repository in $parent" git init --quiet "$STAGING"
  fetch_target "$STAGING"
  checkout_target "$STAGING"
  quietly "cannot create $(dirname "$INSTALL_DIR")" mkdir -p "$(dirname "$INSTALL_DIR")"
  [[ ! -d $INSTALL_DIR ]] || rmdir "$INSTALL_DIR"
  quietly "cannot move the new install into $INSTALL_DIR" mv "$STAGING" "$INSTALL_DIR"
  STAGING=""
}

# Commits an upgrade would drop: those reachable from HEAD or from the local branch named
# ZK0_REF (the two things it moves) and from nothing that stays: TARGET, other branches,
# remote-tracking branches, tags, or what the installer installed last time.
dropped_commits() {
  local git=(git -C "$INSTALL_DIR") tips=(HEAD) keep=("$TARGET")
  if "${git[@]}" rev-parse --quiet --verify "refs/heads/$REF" >/dev/null; then
    tips+=("refs/heads/$REF")
  fi
  if "${git[@]}" rev-parse --quiet --verify refs/zk0/installed >/dev/null; then
    keep+=(refs/zk0/installed)
  fi
  "${git[@]}" rev-list --count "${tips[@]}" --not --exclude="$REF" --branches --remotes --tags "${keep[@]}"
}

# An upgrade never destroys work: it leaves alone a checkout of another project, one with
# uncommitted changes to tracked files, and one with commits the new version lacks.
upgrade_install() {
  local git=(git -C "$INSTALL_DIR") dropped
  is_zk0_commit "$INSTALL_DIR" HEAD \
    || die "$INSTALL_DIR is a git checkout of another project, not zk0; the installer leaves it alone: set ZK0_INSTALL_DIR to another directory"
  [[ -z "$("${git[@]}" status --porcelain --untracked-files=no)" ]] \
    || die "$INSTALL_DIR has uncommitted changes to tracked files; commit them on a branch of your own or stash them (git -C $INSTALL_DIR stash), then rerun"
  log "updating the existing install in $INSTALL_DIR"
  fetch_target "$INSTALL_DIR"
  dropped="$(dropped_commits)"
  [[ $dropped -eq 0 ]] \
    || die "$INSTALL_DIR has $dropped local commit(s) that ZK0_REF '$REF' lacks and an upgrade would drop; keep them on a branch of your own (git -C $INSTALL_DIR branch my-work) or push them, or set ZK0_INSTALL_DIR to install elsewhere"
  checkout_target "$INSTALL_DIR"
}

fetch_source() {
  if [[ -e $INSTALL_DIR/.git ]]; then
    upgrade_install
  else
    new_install
  fi
  COMMIT="$(git -C "$INSTALL_DIR" log -1 --format='%h %s')"
  log "source at $REF ($COMMIT)"
}

setup_environment() {
  local setup="$INSTALL_DIR/scripts/setup-env.sh"
  log "setting up the Python environment in $INSTALL_DIR/.venv (first time: several minutes, ~6-9 GB)"
  ZK0_VENV="$INSTALL_DIR/.venv" ZK0_PYTHON="$PYTHON" bash "$setup" </dev/null \
    || die "environment setup failed; fix the error above and rerun (re-running is safe)"
}

link_command() {
  local target="$INSTALL_DIR/zk0bot.sh" link="$BIN_DIR/zk0bot"
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

Upgrade: run the same curl line again.
Uninstall: $zk0bot stop; rm -rf $INSTALL_DIR $BIN_DIR/zk0bot
  then, if you no longer need them: ${ZK0_HOME:-$HOME/.zk0} (zk0bot's state: node keys and
  certificates), ${FLWR_HOME:-$HOME/.flwr} and the caches $HOME/.cache/zk0, $HOME/.cache/huggingface
  (see docs/INSTALLATION.md).
SUMMARY
}

main() {
  parse_args "$@"
  configure
  check_git
  find_python
  check_disk
  check_writable
  resolve_ref
  check_system_packages
  fetch_source
  setup_environment
  link_command
  summary
}

main "$@"
