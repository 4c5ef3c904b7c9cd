# shellcheck shell=bash
# Helpers shared by zk0bot.sh, train-fl-simulation.sh and scripts/setup-env.sh (sourced, not
# run). The installer, website/get-zk0bot.sh, stays self-contained: it runs before a checkout exists.

# FFmpeg's shared libraries, which torchcodec loads to decode LeRobot's videos, looked up by
# Python's ctypes ($1: a python): it reads the loader's cache through /sbin/ldconfig by
# absolute path, so this works for users whose PATH lacks /sbin (no bare `ldconfig` there).
has_ffmpeg_libs() {
  "$1" -c 'import ctypes.util as u, sys; sys.exit(not all(map(u.find_library, ("avutil", "avcodec", "avformat", "avdevice", "avfilter", "swscale", "swresample"))))' >/dev/null 2>&1
}

# OSMesa, MuJoCo's headless renderer on a machine without a GPU (zk0.sim: libosmesa6).
has_osmesa() {
  "$1" -c 'import ctypes.util as u, sys; sys.exit(not u.find_library("OSMesa"))' >/dev/null 2>&1
}

# A command, also from /usr/sbin and /sbin (nginx lives there, off a normal user's PATH).
has_command() {
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]
}

# nginx's stream module, with which zk0bot's public port counts every connection per address
# as it is accepted (before TLS or a request). $1: nginx. Prints nothing when it is built in,
# the module's file when the build loads it (Debian ships it apart: libnginx-mod-stream);
# fails when this nginx has none.
nginx_stream_module() {
  local build modules=/usr/lib/nginx/modules
  build=$("$1" -V 2>&1) || return 1
  if [[ $build =~ --with-stream=dynamic ]]; then
    [[ $build =~ --modules-path=([^ ]+) ]] && modules=${BASH_REMATCH[1]}
    [[ -f $modules/ngx_stream_module.so ]] || return 1
    echo "$modules/ngx_stream_module.so"
  else
    [[ $build =~ --with-stream( |$) ]]
  fi
}

# nginx's path, also from /usr/sbin and /sbin; fails when it is not installed.
nginx_path() {
  local candidate
  for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /sbin/nginx; do
    [[ -n $candidate && -x $candidate ]] && { echo "$candidate"; return 0; }
  done
  return 1
}

# How whoever runs this installs Debian packages: root runs apt-get, a user with sudo runs
# it through sudo, anyone else hands the command to an administrator.
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

# A Flower connection's table for $FLWR_HOME/config.toml ($1: name, $2: address, then extra
# `key = value` lines). Connections live there, never in pyproject.toml, which flwr rewrites.
flwr_connection() {
  local name=$1 address=$2 line
  shift 2
  printf '[superlink.%s]\naddress = "%s"\n' "$name" "$address"
  for line in "$@"; do
    printf '%s\n' "$line"
  done
}

# A config.toml holding one connection, the default ($1: the file; the rest as flwr_connection).
write_flwr_config() {
  local file=$1
  shift
  mkdir -p "$(dirname "$file")"
  {
    printf '[superlink]\ndefault = "%s"\n\n' "$1"
    flwr_connection "$@"
  } >"$file"
}
