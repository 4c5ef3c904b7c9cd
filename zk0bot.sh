#!/usr/bin/env bash
# zk0bot: run a zk0 federation on Flower's Deployment Engine.
#
# The server admin runs a SuperLink (`server start`) and submits runs (`run`); each
# node operator runs one SuperNode per dataset (`client start <dataset-uri>`). Every
# component lives in its own tmux session with its own FLWR_HOME, port and log file
# under $ZK0_HOME. TLS and SuperNode authentication are on unless --insecure is given.
#
# Server topology: the SuperLink (Fleet, Control and Runtime APIs on one port) listens on
# 127.0.0.1 and admits only nginx, by client certificate. One nginx serves the public port,
# forwarding nothing but the Fleet API; another, with its own workers, serves an admin port
# on 127.0.0.1: the Control API for requests bearing the admin's token, the Runtime API for
# the SuperExec (shared secret) and each run's ServerApp (its task token). Admin commands go
# through the admin port, which no traffic on the public port can starve.
#
# A command's options are its function's locals, declared by `eval "$(parse ...)"`, which the
# linter cannot follow (SC2154), and commands are called by name, "server_$1" (SC2120).
# shellcheck disable=SC2154,SC2120
set -euo pipefail
# Keys, logs, run outputs and checkpoints are private to the operator.
umask 077

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
ZK0_HOME="${ZK0_HOME:-$HOME/.zk0}"
SERVER_DIR="$ZK0_HOME/server"
CLIENTS_DIR="$ZK0_HOME/clients"
SERVER_SESSION="zk0-superlink"
SUPEREXEC_SESSION="zk0-superexec"
PROXY_SESSION="zk0-proxy"
ADMIN_PROXY_SESSION="zk0-admin-proxy"
DEFAULT_SERVER_PORT=9092
START_TIMEOUT="${ZK0_START_TIMEOUT:-90}"
# Every log a component writes (its session log; nginx's proxy.log and fleet-traffic.log, ~80
# bytes per Fleet request) is capped by zk0.ops.log_cap: past this size it moves to LOG.1.
LOG_MAX_BYTES=$((64 * 1024 * 1024))
# A component that exits is started again after RESTART_FIRST_WAIT seconds, doubling up to
# RESTART_MAX_WAIT while it keeps failing; one that ran RESTART_STABLE seconds starts afresh.
RESTART_FIRST_WAIT=2
RESTART_MAX_WAIT=60
RESTART_STABLE=300
# For this long after a session starts its command is retried at the first wait: a node
# stopped moments ago is refused until the server lets its old connection lapse (about a
# minute), and `client start` waits for it only START_TIMEOUT.
RESTART_GRACE=120
# A name no directory in the admin's working directory can shadow (flwr reads a bare
# `zk0` as an app path when ./zk0/pyproject.toml exists, e.g. in $HOME after install).
CONNECTION="zk0-superlink"
PROG="zk0bot"

export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1

# shellcheck disable=SC1091 # scripts/lib.sh is checked on its own
source "$ROOT/scripts/lib.sh"

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

die() {
  printf 'zk0bot: error: %s\n' "$*" >&2
  exit 1
}
info() { printf 'zk0bot: %s\n' "$*"; }
warn() { printf 'zk0bot: WARNING: %s\n' "$*" >&2; }

# `write_file PATH COMMAND...`: COMMAND's output becomes PATH (0600), whole or not at all. It
# goes to a temporary file beside PATH, renamed onto it once complete: on a full disk the old
# file or none is left, never a truncated key the next start would take for a good one, and
# the error is one line. Every file zk0bot makes is written this way.
write_file() {
  local path=$1 tmp err
  shift
  if tmp=$(mktemp "${path%/*}/.${path##*/}.XXXXXX" 2>&1); then
    # Through cat, which fails on a short write: openssl exits 0 after a truncated one.
    err=$({ "$@" | cat >"$tmp" && mv -f "$tmp" "$path"; } 2>&1) && return 0
    rm -f "$tmp"
  else
    err=$tmp
  fi
  cannot_write "$path" "$err"
}

# The one line for a write to PATH that failed with the message ERR, whose last line's last
# part is the reason ("cat: write error: No space left on device").
cannot_write() {
  local err=${2//$'\r'/}  # ssh-keygen ends its lines with CR LF
  err=${err##*$'\n'}
  err=${err##*: }
  die "cannot write $1: ${err,,}${err:+; }free space on its disk (df -h ${1%/*}), then run '$RETRY_COMMAND' again"
}

python_bin() {
  [[ -x "$VENV/bin/python" ]] || die "zk0's environment is missing at $VENV; run $ROOT/scripts/setup-env.sh (or the installer)"
  echo "$VENV/bin/python"
}

# zk0bot's small Python jobs (zk0.ops.bot: URIs, addresses, JSON, HTTPS probes, the node table).
bot() {
  local python
  python=$(python_bin) || return 1
  "$python" -m zk0.ops.bot "$@"
}

# `bot_check COMMAND ARGS...`: its output; a refusal ends zk0bot with the refusal's one line.
bot_check() {
  local err
  { err=$(bot "$@" 2>&1 >&3 3>&-); } 3>&1 || die "$(tail -n1 <<<"$err")"
}

# `eval "$(parse GROUP [COMMAND] "$@")"` first in a command's function: the operator's words,
# read, checked and given their defaults by zk0.ops.commands, become the function's locals
# (`local port=9092 ...`); or its help is printed and zk0bot exits 0; or a mistake ends zk0bot
# with its one line.
parse() { bot parse "$ZK0_HOME" "$@" || echo "exit 1"; }

# Flower's executables (flower-superexec, flwr-serverapp, ...) must be on PATH for the SuperLink/SuperNode.
use_venv() {
  python_bin >/dev/null
  export PATH="$VENV/bin:$PATH"
}

# ZK0_HOME holds keys and logs: a private directory, created on first use.
ensure_home() {
  [[ ! -e $ZK0_HOME || -d $ZK0_HOME ]] || die "ZK0_HOME=$ZK0_HOME exists and is not a directory; set ZK0_HOME to a directory"
  home_fits_socket || die "ZK0_HOME=$ZK0_HOME is too long for tmux's socket (at most $((MAX_SOCKET - 10)) characters); set ZK0_HOME to a shorter path"
  local err
  err=$(mkdir -p "$ZK0_HOME" 2>&1) || die "cannot create ZK0_HOME=$ZK0_HOME (${err##*: }); set ZK0_HOME to a writable directory"
  [[ -w $ZK0_HOME && -x $ZK0_HOME ]] \
    || die "ZK0_HOME=$ZK0_HOME is not writable by $(id -un 2>/dev/null || id -u); set ZK0_HOME to a directory of this user's"
  chmod 700 "$ZK0_HOME" 2>/dev/null || true
}

# tmux's socket ($ZK0_HOME/tmux.sock) is a Unix socket: its path holds at most 107 bytes.
MAX_SOCKET=107
home_fits_socket() { ((${#ZK0_HOME} + 10 <= MAX_SOCKET)); }

need_tmux() {
  command -v tmux >/dev/null || die "tmux is not installed; $(apt_hint tmux)"
}

# zk0's sessions live on their own tmux server (one per ZK0_HOME), apart from the
# operator's own sessions: `tmux -S ~/.zk0/tmux.sock attach -t zk0-superlink`.
tmx() { tmux -S "$ZK0_HOME/tmux.sock" "$@"; }

session_running() { tmx has-session -t "=$1" 2>/dev/null; }

session_pid() { tmx list-panes -t "=$1" -F '#{pane_pid}' 2>/dev/null | head -n1; }

# Start a detached session running one command, its output appended to `log`. The tmux
# server may predate this call, so the variables that steer zk0, Hugging Face, wandb and
# CUDA are passed explicitly. Beside the command runs zk0.ops.log_cap, capping `log` and the
# logs listed in CAPPED (a space-separated list the caller may set). With `restart`, the
# command is started again whenever it exits, after a wait that doubles while it keeps
# failing (after RESTART_GRACE), with one line in its log: SuperNodes exit when they lose
# the SuperLink for good and come back once it returns.
start_session() {
  local session=$1 dir=$2 flwr_home=$3 log=$4 mode=$5
  shift 5
  local prelude command qlog body script capper logs=("$log")
  prelude=$(export -p | grep -E '^declare -x (ZK0_|HF_|HUGGINGFACE_|WANDB_|CUDA_|NVIDIA_|OMP_|MKL_|PYTORCH_|TORCH|PYTHONPATH=|XDG_CACHE_HOME=|HOME=|PATH=)' || true)
  command=$(printf '%q ' "$@")
  qlog=$(printf '%q' "$log")
  # shellcheck disable=SC2206 # CAPPED is a list of paths without spaces (under ZK0_HOME)
  [[ -z ${CAPPED:-} ]] || logs+=($CAPPED)
  # A child of the shell that then becomes the command (exec): it exits with it.
  capper="$(printf '%q ' "$(python_bin)" -m zk0.ops.log_cap "$LOG_MAX_BYTES" "${logs[@]}") >>$qlog 2>&1 &"
  if [[ $mode == restart ]]; then
    body="wait=$RESTART_FIRST_WAIT
while :; do
  started=\$SECONDS
  ( $capper exec $command >>$qlog 2>&1 )
  status=\$?
  ((SECONDS - started < $RESTART_STABLE)) || wait=$RESTART_FIRST_WAIT
  echo \"zk0bot: \$(date -u +%FT%TZ) $session exited (status \$status); restarting in \$wait s\" >>$qlog
  sleep \$wait
  ((SECONDS < $RESTART_GRACE)) || wait=\$((wait * 2 > $RESTART_MAX_WAIT ? $RESTART_MAX_WAIT : wait * 2))
done"
  else
    body="$capper exec $command >>$qlog 2>&1"
  fi
  # The script goes into a private file, not onto the command line: the forwarded
  # environment may hold API keys (HF_TOKEN, WANDB_API_KEY) that `ps` shows to every account.
  script="$dir/.session-$session.sh"
  write_file "$script" printf '%s\n' "umask 077" "$prelude" "export FLWR_HOME=$(printf '%q' "$flwr_home")" "$body"
  tmux_run "$ZK0_HOME/tmux.sock" "$session" "$dir" ". $(printf '%q' "$script")"
}

# A detached tmux session running a bash script. tmux would run a lone command string
# through the user's login shell, which for service accounts is nologin (every session
# would die at once): given as several words, the command is executed as is.
tmux_run() {
  local socket=$1 session=$2 dir=$3 script=$4
  tmux -S "$socket" new-session -d -s "$session" -c "$dir" /bin/bash -c "$script"
}

# All descendants of a PID (Flower detaches SuperExec and app processes into new sessions,
# but they stay children of the SuperLink/SuperNode, so the parent chain finds them).
descendants() {
  local pid child
  for pid in "$@"; do
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
      echo "$child"
      descendants "$child"
    done
  done
}

stop_session() {
  local session=$1 pid pids
  session_running "$session" || return 0
  pid=$(session_pid "$session")
  pids="$pid $(descendants "$pid" | tr '\n' ' ')"
  tmx kill-session -t "=$session" 2>/dev/null || true
  # shellcheck disable=SC2086 # word splitting of the PID list is intended
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 20); do
    # shellcheck disable=SC2086
    kill -0 $pids 2>/dev/null || return 0
    sleep 0.5
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

port_free() { bot port-free "$@" 2>/dev/null; }

# Print the last lines of a log after a failed start, so the operator sees why.
show_log_tail() {
  [[ -f $1 ]] || return 0
  printf -- '--- last lines of %s ---\n' "$1" >&2
  tail -n 15 "$1" >&2
}

# The connection the flwr CLI uses to reach this machine's Control API: nginx's admin port
# on 127.0.0.1, which forwards a Control request only with the admin's bearer token. Flower's
# CLI sends a stored OIDC access token as `Authorization: Bearer` on every Control request
# (flwr/cli/cli_account_auth_interceptor.py), so the token goes into this FLWR_HOME's
# credential store (0600) and never onto a command line.
write_flwr_connection() {
  local address
  address="127.0.0.1:$(server_setting admin_port)"
  mkdir -p "$SERVER_DIR/flwr-home"
  write_file "$SERVER_DIR/flwr-home/config.toml" printf '[superlink]\ndefault = "%s"\n\n[superlink.%s]\naddress = "%s"\nroot-certificates = "%s"\n' \
    "$CONNECTION" "$CONNECTION" "$address" "$SERVER_DIR/certs/ca.crt"
  write_file "$SERVER_DIR/flwr-home/credentials.yaml" bot flwr-credentials "$address" "$SERVER_DIR/admin.token"
}

server_setting() {
  [[ -f $SERVER_DIR/server.env ]] || die "no server has been started from $ZK0_HOME; run: $PROG server start"
  sed -n "s/^$1=//p" "$SERVER_DIR/server.env"
}

# The flwr CLI against this machine's SuperLink, from a neutral directory: flwr reads a
# connection name as an app path when the working directory holds a matching folder.
flwr_admin() {
  use_venv
  (cd "$SERVER_DIR" && FLWR_HOME="$SERVER_DIR/flwr-home" flwr "$@")
}

# ---------------------------------------------------------------------------
# certificates and keys
# ---------------------------------------------------------------------------

# The SANs the server certificate must carry, carries, and lacks (zk0.ops.certs: "DNS:a,IP:b,...").
server_sans() { bot_check sans "$1" "$2"; }
cert_sans() { bot_check cert-sans "$1"; }
missing_sans() { bot_check missing-sans "$1" "$2"; }

# A new P-256 private key, PEM on standard output (for write_file).
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1; }

# A self-signed certificate for the key KEY with subject SUBJECT, on standard output.
self_signed_cert() { openssl req -x509 -new -key "$1" -days 3650 -subj "$2"; }

# The SuperLink's certificate for its key (DIR/server.key) and SANS, signed by zk0's CA in
# DIR, on standard output. The request and extensions go through pipes, and the serial is
# random: openssl would otherwise write them (and ca.srl) to files of its own.
signed_server_cert() {
  local dir=$1 sans=$2
  openssl req -new -key "$dir/server.key" -subj "/CN=zk0-superlink" \
    | openssl x509 -req -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" -days 825 \
      -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$sans")
}

# Sign the SuperLink's certificate for SANS with zk0's CA (its key stays).
issue_server_cert() { write_file "$1/server.pem" signed_server_cert "$@"; }

# A private CA and a server certificate for the SuperLink, created once. A certificate that
# lacks an address nodes dial (a new --public-address or --host) is signed again by zk0's CA:
# nodes keep their ca.crt. The admin's own certificates (no CA key here) are never replaced:
# they must name the --public-address names (not --host: see zk0.ops.certs.wanted).
ensure_server_certs() {
  local host=$1 names=$2 dir="$SERVER_DIR/certs" sans missing
  command -v openssl >/dev/null || die "openssl is needed to create certificates; $(apt_hint openssl)"
  sans=$(server_sans "$host" "$names")
  if [[ -f $dir/server.pem && -f $dir/server.key && -f $dir/ca.crt ]]; then
    check_server_certs  # a damaged file is named as such, not as one lacking names
    if [[ ! -f $dir/ca.key ]]; then
      missing=$(missing_sans "$dir/server.pem" "$(server_sans "" "$names")")
      [[ -z $missing ]] || die "the server certificate $dir/server.pem does not name $missing, which nodes and zk0bot dial; install one that does with --ca-cert/--cert/--key"
      return 0
    fi
    missing=$(missing_sans "$dir/server.pem" "$sans")
    [[ -n $missing ]] || return 0
    info "signing a new SuperLink certificate that also names $missing (the CA stays: nodes keep their ca.crt)"
    issue_server_cert "$dir" "$(cert_sans "$dir/server.pem"),$missing"
    return 0
  fi
  mkdir -p "$dir"
  chmod 700 "$dir"
  info "creating a certificate authority and the SuperLink certificate in $dir (SANs: $sans)"
  # server.pem is written last: its presence (with the others') marks a complete set.
  rm -f "$dir/server.pem"
  write_file "$dir/ca.key" new_key
  write_file "$dir/ca.crt" self_signed_cert "$dir/ca.key" "/CN=zk0 federation CA"
  write_file "$dir/server.key" new_key
  issue_server_cert "$dir" "$sans"
}

# The admin's own CA, certificate and key: checked before anything is touched, then moved
# in by rename; the files they replace are kept in certs/backup-<time>/ (a typo loses nothing).
install_given_certs() {
  local ca=$1 cert=$2 key=$3 dir="$SERVER_DIR/certs" stage backup name err
  local given="--ca-cert $ca, --cert $cert and --key $key"
  [[ -f $ca && -f $cert && -f $key ]] || die "--ca-cert, --cert and --key must all name existing files"
  command -v openssl >/dev/null || die "openssl is needed to check certificates; $(apt_hint openssl)"
  check_cert_files "$ca" "$cert" "$key" "nothing was changed; give the right files ($given)"
  mkdir -p "$dir"
  chmod 700 "$dir"
  stage=$(mktemp -d "$dir/.incoming.XXXXXX")
  if ! err=$({ cp "$ca" "$stage/ca.crt" && cp "$cert" "$stage/server.pem" && cp "$key" "$stage/server.key"; } 2>&1); then
    rm -rf "$stage"
    die "cannot copy the given files into $dir (${err##*: }); nothing was changed"
  fi
  chmod 600 "$stage/server.key"
  backup="$dir/backup-$(date -u +%Y%m%dT%H%M%SZ)"
  for name in ca.crt ca.key ca.srl server.pem server.key; do
    [[ -e $dir/$name ]] || continue
    mkdir -p "$backup"
    cp -p "$dir/$name" "$backup/$name"
  done
  # The old CA key signs for the old CA only: it stays in the backup, not beside the new CA.
  rm -f "$dir/ca.key" "$dir/ca.srl"
  for name in ca.crt server.pem server.key; do
    mv -f "$stage/$name" "$dir/$name"
  done
  rmdir "$stage"
  [[ ! -d $backup ]] || info "installed the given certificates; the previous ones are kept in $backup"
}

# A CA certificate, a server certificate and its key that the SuperLink and the proxy can use
# (else they die with a traceback or a cryptic log line); `fix` says what to do otherwise.
check_cert_files() {
  local ca=$1 cert=$2 key=$3 fix=$4 file
  for file in "$ca" "$cert"; do
    openssl x509 -noout -in "$file" 2>/dev/null || die "$file is not a readable PEM certificate; $fix"
  done
  openssl pkey -noout -in "$key" 2>/dev/null || die "$key is not a readable private key; $fix"
  [[ $(openssl x509 -noout -pubkey -in "$cert" 2>/dev/null) == "$(openssl pkey -pubout -in "$key" 2>/dev/null)" ]] \
    || die "$key does not belong to $cert; $fix"
  openssl verify -CAfile "$ca" "$cert" >/dev/null 2>&1 || die "$cert is not signed by $ca; $fix"
}

# Refuse unusable certificates before anything starts.
check_server_certs() {
  local dir="$SERVER_DIR/certs"
  check_cert_files "$dir/ca.crt" "$dir/server.pem" "$dir/server.key" \
    "replace it with --ca-cert/--cert/--key (or move $dir away to create new ones)"
}

# A random secret in a 0600 file, created once: the SuperExec's for the Runtime API (only
# holders take a run's ServerApp task), the admin's bearer token for the Control API.
ensure_secret() {
  local file=$1
  [[ -s $file ]] || write_file "$file" bot secret
  chmod 600 "$file"
}

ensure_superexec_secret() { ensure_secret "$SERVER_DIR/superexec.secret"; }

ensure_admin_token() { ensure_secret "$SERVER_DIR/admin.token"; }

# The certificate the SuperLink's port asks every client for (zk0.ops.private_link): only zk0's
# nginx holds it, so nothing else on this machine talks to the SuperLink directly.
ensure_link_client_cert() {
  local dir="$SERVER_DIR/certs"
  [[ -f $dir/link-client.crt && -f $dir/link-client.key ]] && return 0
  write_file "$dir/link-client.key" new_key
  write_file "$dir/link-client.crt" self_signed_cert "$dir/link-client.key" "/CN=zk0 proxy to SuperLink"
}

# ---------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------

# nginx is in /usr/sbin, which is not on a non-root user's PATH.
nginx_bin() {
  nginx_path || die "nginx is not installed (the server's public port is served by it); $(apt_hint nginx libnginx-mod-stream)"
}

# The two nginx configurations, rewritten on every start (zk0.ops.nginx: what each port
# serves and why, sized from this host): nginx.conf for the public port, admin.conf for the
# admin's, each with its own workers so that no public traffic can starve the admin path.
write_proxy_config() {
  local dir="$SERVER_DIR/proxy"
  local -a args=("$SERVER_DIR" --host "$1" --port "$2" --link-port "$3" --admin-port "$4" --door-port "$5"
    --mode "$6" --stream-module "$7")
  mkdir -p "$dir/tmp" "$dir/admin-tmp"
  write_file "$dir/nginx.conf" "$(python_bin)" -m zk0.ops.nginx public "${args[@]}"
  write_file "$dir/admin.conf" "$(python_bin)" -m zk0.ops.nginx admin "${args[@]}"
}

# GET https://HOST:PORT/PATH with the server's CA (plain http for the public port of an
# --insecure server; with the link's client certificate for the SuperLink itself): succeeds
# on EXPECT ("ok": any 2xx). HOST defaults to 127.0.0.1; whatever HOST, the certificate is
# checked for localhost, which it always carries.
probe() {
  local port=$1 path=$2 expect=$3 scheme=${4:-https} client=${5:-} host=${6:-127.0.0.1}
  bot probe "$port" "$path" "$expect" --scheme "$scheme" --certs "$SERVER_DIR/certs" ${client:+--client} \
    --host "$host" 2>/dev/null
}

link_health() { probe "$(server_setting link_port)" /health ok https client; }

# The admin port forwards /health to the SuperLink: nginx and the link both answer.
admin_health() { probe "$(server_setting admin_port)" /health ok; }

# The public port answers on the address it is bound to (the proxy refuses "/" with 403 by
# design); behind NAT its certificate need not name that address (see probe).
proxy_health() {
  local scheme=https host
  [[ $(server_setting mode) == insecure ]] && scheme=http
  host=$(server_setting host)
  [[ $host != 0.0.0.0 && $host != "::" ]] || host=127.0.0.1
  probe "$(server_setting port)" / 403 "$scheme" "" "$host"
}

wait_until() {
  local what=$1 session=$2 log=$3 check=$4 waited=0
  until "$check"; do
    if ! session_running "$session"; then
      show_log_tail "$log"
      die "$what exited during start-up (log: $log)"
    fi
    if ((waited >= START_TIMEOUT)); then
      show_log_tail "$log"
      die "$what did not become ready within ${START_TIMEOUT}s (log: $log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

server_start() {
  [[ " $* " == *" -h "* || " $* " == *" --help "* ]] || need_tmux  # the tools first: apt, then zk0's Python
  # port, host, names (a restart keeps the last start's unless told otherwise), insecure, ca, cert, key, last_*
  eval "$(parse server start "$@")"
  use_venv
  ensure_home
  local nginx stream_module
  nginx=$(nginx_bin)
  stream_module=$(nginx_stream_module "$nginx") \
    || die "this nginx has no stream module (the public port counts connections per address with it); $(apt_hint libnginx-mod-stream)"
  # The proxy holds the public address: a restart of the rest would not move it.
  if session_running "$PROXY_SESSION" && [[ $host:$port:$names != "$last_host:$last_port:$last_names" ]]; then
    die "the server already runs on $last_host:$last_port${last_names:+ (public address $last_names)}; to change its address, stop it first: $PROG server stop"
  fi
  if session_running "$SERVER_SESSION" && session_running "$SUPEREXEC_SESSION" && session_running "$PROXY_SESSION" \
    && session_running "$ADMIN_PROXY_SESSION"; then
    info "server already running (public port $(server_setting host):$(server_setting port), SuperLink 127.0.0.1:$(server_setting link_port))"
    return 0
  fi
  mkdir -p "$SERVER_DIR/runs" "$SERVER_DIR/nodes"
  chmod 700 "$SERVER_DIR"
  local mode=secure link_port admin_port=""
  [[ $insecure -eq 1 ]] && mode=insecure
  if session_running "$SERVER_SESSION"; then
    link_port=$(server_setting link_port)
  else
    # A SuperLink that died takes its runs with it: its SuperExec and proxy start afresh too.
    stop_session "$SUPEREXEC_SESSION"
    stop_session "$PROXY_SESSION"
    stop_session "$ADMIN_PROXY_SESSION"
    port_free "$host" "$port" || die "port $port on $host is in use; stop what uses it or choose another with --port"
    link_port=""
    [[ -f $SERVER_DIR/server.env ]] && link_port=$(server_setting link_port)
    [[ -n $link_port ]] && port_free 127.0.0.1 "$link_port" || link_port=$(free_local_port)
  fi
  [[ -f $SERVER_DIR/server.env ]] && admin_port=$(server_setting admin_port)
  if ! session_running "$ADMIN_PROXY_SESSION"; then
    until [[ -n $admin_port && $admin_port != "$link_port" ]] && port_free 127.0.0.1 "$admin_port"; do
      admin_port=$(free_local_port)
    done
  fi
  if [[ $mode == insecure ]]; then
    warn "--insecure: no TLS and no node authentication. Anyone who reaches port $port can join the federation. Use only for local experiments."
  fi
  # The certificates serve the admin port and the link in both modes; only the public port
  # of an --insecure server goes without.
  if [[ -n $ca ]]; then
    local missing given
    for given in "$ca" "$cert" "$key"; do
      [[ -f $given ]] || die "$given (given with --ca-cert/--cert/--key) is not a file; nothing was changed"
    done
    missing=$(missing_sans "$cert" "$(server_sans "" "$names")")
    [[ -z $missing ]] || die "$cert does not name $missing, which nodes and zk0bot dial; nothing was changed; give a certificate whose subjectAltName lists them"
    install_given_certs "$ca" "$cert" "$key"
  fi
  ensure_server_certs "$host" "$names"
  check_server_certs
  ensure_link_client_cert
  ensure_superexec_secret
  ensure_admin_token
  write_file "$SERVER_DIR/server.env" printf 'port=%s\nhost=%s\nnames=%s\nmode=%s\nlink_port=%s\nadmin_port=%s\n' \
    "$port" "$host" "$names" "$mode" "$link_port" "$admin_port"
  write_flwr_connection

  local secret="$SERVER_DIR/superexec.secret" certs="$SERVER_DIR/certs" relinked=0 tls_link
  tls_link=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" --ssl-keyfile "$certs/server.key")
  [[ $mode == secure ]] && tls_link+=(--enable-supernode-auth)
  if ! session_running "$SERVER_SESSION"; then
    log_start "$SERVER_DIR/superlink.log"
    start_session "$SERVER_SESSION" "$SERVER_DIR" "$SERVER_DIR/flwr-home" "$SERVER_DIR/superlink.log" once \
      "$(python_bin)" -m zk0.ops.private_link "$certs/link-client.crt" --host 127.0.0.1 --port "$link_port" \
      "${tls_link[@]}" --isolation process --superexec-auth-secret-file "$secret" --disable-runtime-dependency-installation
    wait_until "the SuperLink" "$SERVER_SESSION" "$SERVER_DIR/superlink.log" link_health
    relinked=1
  fi
  if ! session_running "$PROXY_SESSION" || ! session_running "$ADMIN_PROXY_SESSION"; then
    local door_port
    door_port=$(free_local_port)
    until [[ $door_port != "$link_port" && $door_port != "$admin_port" ]]; do door_port=$(free_local_port); done
    write_proxy_config "$host" "$port" "$link_port" "$admin_port" "$door_port" "$mode" "$stream_module"
    local conf
    for conf in nginx admin; do
      "$nginx" -t -q -e "$SERVER_DIR/proxy.log" -c "$SERVER_DIR/proxy/$conf.conf" 2>/dev/null \
        || die "the proxy configuration was refused: $("$nginx" -t -q -e /dev/stderr -c "$SERVER_DIR/proxy/$conf.conf" 2>&1 | head -n1)"
    done
  fi
  if ! session_running "$ADMIN_PROXY_SESSION"; then
    log_start "$SERVER_DIR/admin-proxy.log"
    start_session "$ADMIN_PROXY_SESSION" "$SERVER_DIR" "$SERVER_DIR/flwr-home" "$SERVER_DIR/admin-proxy.log" once \
      "$nginx" -e "$SERVER_DIR/admin-proxy.log" -c "$SERVER_DIR/proxy/admin.conf"
    wait_until "the admin proxy (nginx)" "$ADMIN_PROXY_SESSION" "$SERVER_DIR/admin-proxy.log" admin_health
  fi
  if ! session_running "$PROXY_SESSION"; then
    log_start "$SERVER_DIR/proxy.log"
    CAPPED="$SERVER_DIR/fleet-traffic.log" start_session "$PROXY_SESSION" "$SERVER_DIR" "$SERVER_DIR/flwr-home" \
      "$SERVER_DIR/proxy.log" once \
      "$nginx" -e "$SERVER_DIR/proxy.log" -c "$SERVER_DIR/proxy/nginx.conf"
    wait_until "the proxy (nginx)" "$PROXY_SESSION" "$SERVER_DIR/proxy.log" proxy_health
  fi
  # Registrations need the Control API, which only the proxy serves.
  [[ $relinked -eq 0 ]] || reregister_nodes
  write_node_names
  if ! session_running "$SUPEREXEC_SESSION"; then
    log_start "$SERVER_DIR/superexec.log"
    # ZK0_NODE_NAMES reaches each ServerApp through the session's environment.
    ZK0_NODE_NAMES="$SERVER_DIR/node-names.json" start_session "$SUPEREXEC_SESSION" "$SERVER_DIR" \
      "$SERVER_DIR/flwr-home" "$SERVER_DIR/superexec.log" restart \
      "$(python_bin)" -m zk0.ops.private_superexec --runtime-api-address "127.0.0.1:$admin_port" \
      --root-certificates "$certs/ca.crt" --superexec-auth-secret-file "$secret"
  fi
  info "server running ($mode): public port $host:$port (Fleet API only, session $PROXY_SESSION), admin port 127.0.0.1:$admin_port, SuperLink 127.0.0.1:$link_port (session $SERVER_SESSION, the proxy's only)"
  info "attach with: tmux -S $ZK0_HOME/tmux.sock attach -t $SERVER_SESSION"
  if [[ $mode == secure ]]; then
    info "node operators need the CA certificate: $SERVER_DIR/certs/ca.crt"
    info "register each node's public key with: $PROG server register <node.pub> [--name NAME]"
  fi
}

# Logs are appended across restarts, with a line marking each start.
log_start() {
  local err
  err=$(printf '=== zk0bot %s: start %s ===\n' "$(date -u +%FT%TZ)" "$(basename "$1" .log)" 2>&1 >>"$1") \
    || cannot_write "$1" "$err"
}

free_local_port() { bot_check free-port; }

# Registrations live in the SuperLink's memory; the keys kept in nodes/ restore them.
reregister_nodes() {
  [[ $(server_setting mode) == secure ]] || return 0
  local keys=("$SERVER_DIR"/nodes/*.pub) out line count status=0
  [[ -f ${keys[0]} ]] || return 0
  out=$(register_keys "" "${keys[@]}") || status=$?
  [[ $status -eq 0 || $status -eq $KEYS_REFUSED ]] || exit 1
  while IFS= read -r line; do
    [[ $line != refused* ]] || warn "could not re-register ${line#refused }"
  done <<<"$out"
  count=$(grep -c '^ok ' <<<"$out" || true)
  [[ $count -eq 0 ]] || info "re-registered $count node key(s) from $SERVER_DIR/nodes"
}

# {node id: name} for the ServerApp (ZK0_NODE_NAMES): node ids change at every SuperLink
# restart, so this is rewritten after every (re)registration.
write_node_names() {
  write_file "$SERVER_DIR/node-names.json" "$(python_bin)" -m zk0.server.identities "$SERVER_DIR/nodes"
}

# Register public keys with the SuperLink and keep them in nodes/ (zk0.ops.register_keys: a line
# per key, "ok <node id> <name>" or "refused <key>: <reason>"; KEYS_REFUSED when any was refused, the
# others kept). Any other non-zero status is an error it reported in one line (a full disk).
KEYS_REFUSED=3
register_keys() {
  FLWR_HOME="$SERVER_DIR/flwr-home" ZK0_RETRY_COMMAND=$RETRY_COMMAND \
    "$(python_bin)" -m zk0.ops.register_keys "$SERVER_DIR" "$@"
}

server_stop() {
  [[ $# -eq 0 ]] || eval "$(parse server stop "$@")"  # without words, no Python: stop works on a broken install
  need_tmux
  local session any=0
  for session in "$PROXY_SESSION" "$ADMIN_PROXY_SESSION" "$SUPEREXEC_SESSION" "$SERVER_SESSION"; do
    if session_running "$session"; then
      stop_session "$session"
      any=1
    fi
  done
  if [[ $any -eq 1 ]]; then info "server stopped"; else info "server is not running"; fi
}

server_status() {
  eval "$(parse server status "$@")"
  need_tmux
  use_venv
  local session state health
  for session in "$SERVER_SESSION" "$SUPEREXEC_SESSION" "$PROXY_SESSION" "$ADMIN_PROXY_SESSION"; do
    state="not running"
    session_running "$session" && state="running, pid $(session_pid "$session")"
    info "$session: $state"
  done
  session_running "$SERVER_SESSION" || { info "SuperLink: not running"; return 0; }
  # Healthy: the SuperLink answers, and so does the admin port the Control API goes through.
  health=unhealthy
  link_health && admin_health && health=healthy
  info "SuperLink: running, 127.0.0.1:$(server_setting link_port), public port $(server_setting host):$(server_setting port), admin port 127.0.0.1:$(server_setting admin_port), $(server_setting mode), $health"
  info "runs directory: $SERVER_DIR/runs"
  [[ $health == healthy ]] || return 0
  server_nodes --limit 10
  # Plain lines, never a table: a pipe or a log must show the run's state whole.
  (zk0_admin runs "$SERVER_DIR/runs" --connection "$CONNECTION") || true
}

server_logs() {
  eval "$(parse server logs "$@")"  # follow, component
  local log
  if [[ $component == run ]]; then
    log=$(zk0_admin newest-log "$SERVER_DIR/runs")
  else
    log="$SERVER_DIR/$component.log"
    [[ -f $log ]] || die "no $component log yet ($log); run: $PROG server start"
  fi
  tail -n 100 "${follow[@]}" "$log"
}

server_register() {
  eval "$(parse server register "$@")"  # keys (files of node keys), name (free, or already this key's)
  local out line registered refused
  [[ $(server_setting mode) == secure ]] || die "the server runs with --insecure: node authentication is off, nothing to register"
  session_running "$SERVER_SESSION" || die "the SuperLink is not running; start it first: $PROG server start"
  # Keys that registered are kept even when others are refused: nothing is lost.
  local status=0
  out=$(register_keys "$name" "${keys[@]}") || status=$?
  [[ $status -eq 0 || $status -eq $KEYS_REFUSED ]] || exit 1
  write_node_names
  registered=$(grep -c '^ok ' <<<"$out" || true)
  refused=$(grep -c '^refused ' <<<"$out" || true)
  if [[ $refused -gt 0 ]]; then
    while IFS= read -r line; do
      [[ $line != refused* ]] || warn "could not register ${line#refused }"
    done <<<"$out"
    die "$refused of ${#keys[@]} node key(s) could not be registered (see above)$([[ $registered -eq 0 ]] || echo "; the other $registered were registered and are kept in $SERVER_DIR/nodes")"
  fi
  if [[ ${#keys[@]} -eq 1 ]]; then
    out=${out#ok }  # "<node id> <name>"
    info "registered node ${out%% *} as '${out#* }'; the key is kept in $SERVER_DIR/nodes for restarts"
  else
    info "registered ${#keys[@]} node keys; they are kept in $SERVER_DIR/nodes for restarts"
  fi
}

# Flower's node table, counts first, with the name each node id was registered under and,
# when it differs, its key's comment (zk0-node-<dataset>). Online nodes come first, then by
# name; LIMIT rows at most (0: all), the rest summed up in one line.
server_nodes() {
  eval "$(parse server nodes "$@")"  # limit (0: all)
  session_running "$SERVER_SESSION" || die "the SuperLink is not running; start it first: $PROG server start"
  local json
  json=$(flwr_admin supernode list "$CONNECTION" --format json 2>&1) \
    || die "listing nodes failed: $(grep -v '^\s*$' <<<"$json" | tail -n1)"
  bot_check nodes "$SERVER_DIR/nodes" "$limit" <<<"$json"
}

cmd_server() {
  case ${1:-} in
    start | stop | status | logs | register | nodes) "server_$1" "${@:2}" ;;
    *) eval "$(parse server "$@")" ;;  # the group's help, or why no such command exists
  esac
}

# ---------------------------------------------------------------------------
# client (one SuperNode per dataset)
# ---------------------------------------------------------------------------

client_setting() { sed -n "s/^$2=//p" "$CLIENTS_DIR/$1/client.env"; }

# The address a client's SuperNode serves its Runtime API on, for its executor (clients
# started before the setting existed used 127.0.0.1).
client_address() {
  local address
  address=$(client_setting "$1" address)
  echo "${address:-127.0.0.1}"
}

known_clients() {
  local dir
  for dir in "$CLIENTS_DIR"/*/; do
    [[ -f $dir/client.env ]] && basename "$dir"
  done
  return 0
}

# A local dataset opens and fits the policy (seconds: LeRobot is imported).
validate_dataset() {
  local uri=$1 out
  [[ $uri == local:* ]] || return 0
  out=$("$VENV/bin/zk0" check-dataset "$uri" 2>&1 >/dev/null) || die "${out#zk0: error: }"
}

next_free_port() {
  local address=$1 port=9100 used other
  used=" $(for other in $(known_clients); do client_setting "$other" port; done | tr '\n' ' ') "
  while [[ $used == *" $port "* ]] || ! port_free "$address" "$port"; do
    port=$((port + 1))
  done
  echo "$port"
}

client_start() {
  # uri, id (its directory's), server, server_given, ca (a file unless insecure), port, address, threads, rename,
  # allow (FAB hashes), insecure, changes (why a start of the running client is refused, or "")
  eval "$(parse client start "$@")"
  local given=("$@")
  if [[ $insecure -eq 0 ]]; then
    # Before the dataset check (seconds to minutes): a damaged file is named at once.
    ! command -v openssl >/dev/null || openssl x509 -noout -in "$ca" 2>/dev/null \
      || die "CA certificate '$ca' is not a readable PEM certificate; get ca.crt from the server admin again"
  fi
  local uncached
  if hub_offline && uncached=$(uncached_hub_dataset "$uri"); then
    die "dataset $uri is a Hugging Face Hub dataset, HF_HUB_OFFLINE is set and $uncached holds no copy; check the name, or download it while online (or pass local:/path)"
  fi
  ensure_home
  need_tmux
  use_venv

  local dir="$CLIENTS_DIR/$id" session="zk0-supernode-$id"
  local log="$dir/supernode.log"
  if session_running "$session"; then
    [[ -z $changes ]] || die "$changes"
    start_executor "$id" "${allow[@]}"
    info "client for $uri already running (session $session, port $(client_setting "$id" port))"
    return 0
  fi
  validate_dataset "$uri"
  check_server "$server" "$insecure" "$ca"
  mkdir -p "$dir/flwr-home"
  # Its last start's address, else this machine's loopback: the Runtime API is for the local executor only.
  [[ -n $address || ! -f $dir/client.env ]] || address=$(client_setting "$id" address)
  address=${address:-127.0.0.1}
  if [[ -z $port ]]; then port=$(next_free_port "$address"); fi
  port_free "$address" "$port" || die "port $port on $address is in use (or $address is not an address of this machine); choose another with --port or --local-address"
  # Clients on one machine share its cores: each torch process would otherwise take all of them.
  [[ -n $threads ]] || threads=$(default_threads)

  # The SuperNode leaves its messages to one warm executor process (zk0_executor) instead of
  # starting a fresh ClientApp process per message; the secret keeps other local processes
  # from taking them.
  local secret="$dir/superexec.secret"
  ensure_secret "$secret"
  local node_config="dataset-uri='$uri' threads=$threads"
  [[ -z $rename ]] || node_config+=" rename-map='$rename'"
  local args=(--superlink "$server" --host "$address" --port "$port" --isolation process --superexec-auth-secret-file "$secret"
    --node-config "$node_config")
  if [[ $insecure -eq 1 ]]; then
    warn "--insecure: the connection to $server is not encrypted and this node is not authenticated. Use only for local experiments."
    args+=(--insecure)
  else
    ensure_node_key "$dir" "$id"
    args+=(--root-certificates "$ca" --auth-supernode-private-key "$dir/node.key")
  fi
  local activated=""
  [[ -f $dir/client.env ]] && activated=$(client_setting "$id" activated)
  write_file "$dir/client.env" printf 'dataset-uri=%s\naddress=%s\nport=%s\nserver=%s\nthreads=%s\nactivated=%s\n' \
    "$uri" "$address" "$port" "$server" "$threads" "$activated"
  log_start "$log"
  local from
  from=$(wc -l <"$log")
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    start_session "$session" "$dir" "$dir/flwr-home" "$log" restart "$(python_bin)" -m zk0.ops.supernode "${args[@]}"
  wait_for_supernode "$session" "$log" "$dir" "$server" "$from" "$activated"
  write_file "$dir/client.env" sed 's/^activated=.*/activated=1/' "$dir/client.env"
  start_executor "$id" "${allow[@]}"
  # What `service watch` replays to start this client again: the same options, the same server and CA.
  local replay=("${given[@]}" --server "$server")
  [[ $insecure -eq 1 ]] || replay+=(--ca-cert "$(realpath -- "$ca")")
  write_file "$dir/start-args" printf '%s\0' "${replay[@]}"
  info "client running: session $session, pid $(session_pid "$session"), port $address:$port, dataset $uri, server $server, $threads thread(s)"
}

# This node's key pair (node.key, node.key.pub), made once. A public key missing beside its
# private key is derived from it again.
ensure_node_key() {
  local dir=$1 id=$2
  if [[ ! -s $dir/node.key ]]; then
    write_file "$dir/node.key" new_node_key "$dir" "zk0-node-$id"
    write_file "$dir/node.key.pub" ssh-keygen -y -f "$dir/node.key"
    info "created this node's key pair: $dir/node.key(.pub)"
  fi
  [[ -s $dir/node.key.pub ]] || write_file "$dir/node.key.pub" ssh-keygen -y -f "$dir/node.key"
}

# A new ECDSA key in OpenSSH's format, on standard output (for write_file). ssh-keygen writes
# only to files: it makes the pair in a scratch directory beside DIR's keys, removed after.
new_node_key() {
  local scratch status=0
  scratch=$(mktemp -d "$1/.node-key.XXXXXX") || return 1
  if ssh-keygen -q -t ecdsa -b 384 -N "" -C "$2" -f "$scratch/key"; then cat "$scratch/key" || status=$?; else status=$?; fi
  rm -rf "$scratch"
  return "$status"
}

# The node's warm ClientApp process, in its own session, restarted if it dies. It runs the
# installed zk0 and the FABs whose SHA-256 follow the id; another list restarts it.
start_executor() {
  local id=$1 dir="$CLIENTS_DIR/$1" session="zk0-executor-$1" threads waited=0 from allowed hash
  shift
  allowed=$(printf '%s\n' "$@" | sort -u)
  if session_running "$session"; then
    [[ $allowed == "$(cat "$dir/allowed-apps" 2>/dev/null)" ]] && return 0
    info "restarting the ClientApp executor: its allowed FABs (--allow-app) changed"
    stop_session "$session"
  fi
  write_file "$dir/allowed-apps" printf '%s\n' "$allowed"
  local allow_args=()
  for hash in $allowed; do allow_args+=(--allow-app "$hash"); done
  threads=$(client_setting "$id" threads)
  log_start "$dir/executor.log"
  from=$(wc -l <"$dir/executor.log")
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    start_session "$session" "$dir" "$dir/flwr-home" "$dir/executor.log" restart \
    "$(python_bin)" -m zk0_executor --runtime-api-address "$(client_address "$id"):$(client_setting "$id" port)" --insecure \
    --superexec-auth-secret-file "$dir/superexec.secret" "${allow_args[@]}"
  until tail -n +"$((from + 1))" "$dir/executor.log" | grep -q 'serving ClientApp tasks'; do
    if ((waited >= START_TIMEOUT)); then
      show_log_tail "$dir/executor.log"
      stop_session "$session"
      die "the ClientApp executor did not start within ${START_TIMEOUT}s (log: $dir/executor.log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# The server is reachable and both sides agree on TLS (answers in seconds; Flower's own
# retries take minutes and end with a generic message).
check_server() {
  local server=$1 insecure=$2 ca=$3 out
  local trust=(--ca-cert "$ca")
  [[ $insecure -eq 1 ]] && trust=(--insecure)
  out=$("$VENV/bin/zk0" check-server "$server" "${trust[@]}" 2>&1 >/dev/null) || die "${out#zk0: error: }"
}

default_threads() {
  local cores running=1 id
  cores=$(nproc 2>/dev/null || echo 1)
  for id in $(known_clients); do
    session_running "zk0-supernode-$id" && running=$((running + 1))
  done
  echo $((cores / running > 0 ? cores / running : 1))
}

wait_for_supernode() {
  local session=$1 log=$2 dir=$3 server=$4 from=$5 activated=$6 waited=0 told=0
  new_log() { tail -n +"$((from + 1))" "$log"; }
  until new_log | grep -q 'SuperNode ID:'; do
    if ! session_running "$session"; then
      show_log_tail "$log"
      die "the SuperNode exited during start-up (log: $log)"
    fi
    if new_log | grep -q 'Failed to activate SuperNode'; then
      # A node stopped moments ago stays "online" on the server until its heartbeats
      # lapse (about a minute); the session retries until then. A key the server never
      # accepted is refused for good.
      if [[ $activated != 1 ]]; then
        stop_session "$session"
        printf 'zk0bot: this node is not registered with the server. Send this public key to the admin:\n' >&2
        cat "$dir/node.key.pub" >&2
        die "node not registered: the admin must run '$PROG server register node.pub' (file: $dir/node.key.pub), then start again"
      fi
      if [[ $told -eq 0 ]]; then
        info "the server still sees this node online from its last start; retrying until that lapses (about a minute)"
        told=1
      fi
    fi
    if ((waited >= START_TIMEOUT)); then
      show_log_tail "$log"
      stop_session "$session"
      if [[ $told -eq 1 ]]; then
        die "the server refused to activate this node for ${START_TIMEOUT}s: its key may have been unregistered; ask the admin ('$PROG server nodes'), then start again"
      fi
      die "could not connect to the server at $server within ${START_TIMEOUT}s: check ZK0_SERVER/--server, the network and the CA certificate"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# The client of URI with its ID (from parse), or the only one when no URI is given.
pick_client() {
  local uri=$1 id=$2 ids
  if [[ -n $uri ]]; then
    [[ -f $CLIENTS_DIR/$id/client.env ]] || die "no client for '$uri' on this machine (see: $PROG client status)"
    echo "$id"
    return
  fi
  ids=$(known_clients)
  [[ -n $ids ]] || die "no client has been started on this machine"
  [[ $(wc -l <<<"$ids") -eq 1 ]] || die "several clients on this machine; name one by its dataset URI (see: $PROG client status)"
  echo "$ids"
}

client_stop() {
  local uri="" id="" ids  # no URI: every client
  [[ $# -eq 0 ]] || eval "$(parse client stop "$@")"
  need_tmux
  if [[ -n $uri ]]; then ids=$(pick_client "$uri" "$id"); else ids=$(known_clients); fi
  for id in $ids; do
    if session_running "zk0-supernode-$id" || session_running "zk0-executor-$id"; then
      stop_session "zk0-executor-$id"
      stop_session "zk0-supernode-$id"
      info "client $(client_setting "$id" dataset-uri) stopped"
    fi
  done
}

client_status() {
  eval "$(parse client status "$@")"
  need_tmux
  local id state any=0
  for id in $(known_clients); do
    any=1
    state="stopped"
    if session_running "zk0-supernode-$id"; then
      state="running, pid $(session_pid "zk0-supernode-$id")"
      if session_running "zk0-executor-$id"; then
        state+=", executor pid $(session_pid "zk0-executor-$id")"
      else
        state+=", executor STOPPED (messages wait until round-timeout; fix: $PROG client start $(client_setting "$id" dataset-uri))"
      fi
    fi
    info "client $(client_setting "$id" dataset-uri): $state, session zk0-supernode-$id, port $(client_address "$id"):$(client_setting "$id" port), server $(client_setting "$id" server), threads $(client_setting "$id" threads)"
  done
  [[ $any -eq 1 ]] || info "no clients on this machine"
}

client_logs() {
  eval "$(parse client logs "$@")"  # uri, id, follow
  id=$(pick_client "$uri" "$id")
  tail -n 100 "${follow[@]}" "$CLIENTS_DIR/$id/supernode.log"
}

cmd_client() {
  case ${1:-} in
    start | stop | status | logs) "client_$1" "${@:2}" ;;
    *) eval "$(parse client "$@")" ;;
  esac
}

# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------

# `zk0 admin ...`, the run bookkeeping in Python (zk0.ops.admin), against this machine's SuperLink:
# its output, or die with its one-line reason.
zk0_admin() {
  local err
  python_bin >/dev/null
  { err=$(FLWR_HOME="$SERVER_DIR/flwr-home" "$VENV/bin/zk0" admin "$@" 2>&1 >&3 3>&-); } 3>&1 && return 0
  err=$(tail -n 1 <<<"$err")
  die "${err#zk0: error: }"
}

# A ServerApp started offline (HF_HUB_OFFLINE in the SuperExec's session) reads a hub
# eval-dataset only from LeRobot's cache: one that is not there fails the run minutes in.
check_eval_dataset_reachable() {
  local merged uri cache
  grep -Eqi '^declare -x HF_HUB_OFFLINE="(1|true|yes|on)"' "$SERVER_DIR/.session-$SUPEREXEC_SESSION.sh" 2>/dev/null \
    || return 0
  merged=$("$VENV/bin/zk0" check-run-config --json --app-dir "$ROOT" "$@" 2>/dev/null) || return 0
  uri=$(bot json-get eval-dataset <<<"$merged")
  cache=$(uncached_hub_dataset "$uri") || return 0
  die "eval-dataset '$uri' is a Hugging Face Hub dataset, the server runs offline (HF_HUB_OFFLINE) and $cache holds no copy; pass a local one: --run-config \"eval-dataset='local:/path/to/dataset'\""
}

# For a hub dataset URI (hf:owner/name or owner/name) that LeRobot's cache lacks: prints where
# the copy would be and succeeds. Offline, such a dataset cannot be read.
uncached_hub_dataset() {
  local uri=$1 cache
  [[ -n $uri && $uri != local:* ]] || return 1
  cache="${HF_LEROBOT_HOME:-${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/lerobot}/${uri#hf:}"
  [[ ! -f $cache/meta/info.json ]] || return 1
  echo "$cache"
}

hub_offline() { [[ ${HF_HUB_OFFLINE:-} =~ ^(1|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn])$ ]]; }

cmd_run() {
  eval "$(parse run "$@")"  # rounds, extra (--run-config), stream, quiet (an array), resume, resume_dir
  need_tmux
  use_venv
  local config="output-dir='$SERVER_DIR/runs'" run_config=()
  [[ -n $rounds ]] && config+=" num-rounds=$rounds"
  if [[ $resume -eq 1 ]]; then
    local prepared resume_config
    prepared=$(zk0_admin resume "$SERVER_DIR/runs" ${resume_dir:+"$resume_dir"} ${rounds:+--rounds "$rounds"})
    { read -r resume_dir; read -r resume_config; } <<<"$prepared"
    run_config=(--run-config "$resume_config")
  else
    # The operator's overrides go in a second --run-config, which flwr applies last.
    local out
    out=$("$VENV/bin/zk0" check-run-config --app-dir "$ROOT" "$config" ${extra:+"$extra"} 2>&1 >/dev/null) \
      || die "--run-config: ${out#zk0: error: }"
    run_config=(--run-config "$config" ${extra:+--run-config "$extra"})
  fi
  session_running "$SERVER_SESSION" || die "the SuperLink is not running; start it first: $PROG server start"
  link_health || die "the SuperLink does not answer its health check; see: $PROG server logs"
  [[ $resume -eq 1 ]] || check_eval_dataset_reachable "$config" "$extra"
  local run_id
  run_id=$(zk0_admin submit "$ROOT" --connection "$CONNECTION" "${run_config[@]}")
  if [[ ${#quiet[@]} -eq 1 ]]; then
    :
  elif [[ $resume -eq 1 ]]; then
    info "run $run_id submitted, resuming $resume_dir"
  else
    info "run $run_id submitted; outputs under $SERVER_DIR/runs"
  fi
  if [[ $stream -eq 1 ]]; then
    flwr_admin log "$run_id" "$CONNECTION" --stream || true
  fi

  zk0_admin wait "$run_id" "$SERVER_DIR/runs" --connection "$CONNECTION" "${quiet[@]}" \
    | while IFS= read -r line; do info "$line"; done
}

# ---------------------------------------------------------------------------
# service (systemd units: start at boot, restart on failure)
# ---------------------------------------------------------------------------

SERVICE_CHECK_SECONDS=30

cmd_service() {
  case ${1:-} in
    install | remove) service_units "$@" ;;
    watch) service_watch "${@:2}" ;;
    *) eval "$(parse service "$@")" ;;
  esac
}

# `service install|remove`: the units are zk0.ops.units'; telling systemd is done here.
service_units() {
  eval "$(parse service "$@")"  # sub, dir, wanted, systemctl (an array), user, review (1: only write/delete)
  local listed units=() file
  if [[ $sub == remove ]]; then
    listed=$(bot_check units-of "$ZK0_HOME" "$dir")
    [[ -z $listed ]] || mapfile -t units <<<"$listed"
    for file in "${units[@]}"; do
      [[ $review -eq 1 ]] || "${systemctl[@]}" disable "$(basename "$file")" >/dev/null 2>&1 || true
      rm -f "$file"
      info "removed $file"
    done
    [[ $review -eq 1 ]] || "${systemctl[@]}" daemon-reload 2>/dev/null || true
    return 0
  fi
  listed=$(bot_check write-units "$ROOT" "$ZK0_HOME" "$dir" "$wanted")
  mapfile -t units <<<"$listed"
  info "wrote ${units[*]} in $dir"
  [[ $review -eq 0 ]] || return 0
  if "${systemctl[@]}" daemon-reload 2>/dev/null && "${systemctl[@]}" enable "${units[@]}" >/dev/null 2>&1; then
    info "enabled at boot; start them now with: ${systemctl[*]} start ${units[*]}"
  else
    warn "systemd did not take them here; once it runs: ${systemctl[*]} daemon-reload && ${systemctl[*]} enable --now ${units[*]}"
  fi
  [[ $user -eq 0 ]] || info "user units start at boot only with lingering: loginctl enable-linger $(id -un) (as root)"
}

# What a unit runs: start the component, then every SERVICE_CHECK_SECONDS start again what
# stopped; exit non-zero (systemd then restarts the unit) when a start fails.
service_watch() {
  eval "$(parse service watch "$@")"  # kind (server or client), uri and id (a client's)
  local sessions
  while :; do
    if [[ $kind == server ]]; then
      sessions=("$SERVER_SESSION" "$SUPEREXEC_SESSION" "$PROXY_SESSION" "$ADMIN_PROXY_SESSION")
    else
      sessions=("zk0-supernode-$id" "zk0-executor-$id")
    fi
    local session missing=""
    for session in "${sessions[@]}"; do session_running "$session" || missing+=" $session"; done
    if [[ -n $missing ]]; then
      info "$(date -u +%FT%TZ) starting$missing"
      if [[ $kind == server ]]; then
        cmd_server start
      else
        local replay=("$uri")
        [[ ! -f $CLIENTS_DIR/$id/start-args ]] || mapfile -d '' replay <"$CLIENTS_DIR/$id/start-args"
        cmd_client start "${replay[@]}"
      fi
    fi
    sleep "$SERVICE_CHECK_SECONDS"
  done
}

# ---------------------------------------------------------------------------
# upgrade
# ---------------------------------------------------------------------------

usage_upgrade() {
  cat <<'USAGE'
Usage: zk0bot upgrade [--ref R]

Upgrade this checkout the installer's way (website/get-zk0bot.sh, from the repository it
was installed from, ZK0_REPO to override): it refuses uncommitted changes to tracked files
and local commits R lacks, changing nothing, and sets up the Python environment again.
Then the new version must run (zk0bot version), and what ran here (the server, each
client) is stopped and started again on it; a run in progress fails (continue it with
zk0bot run --resume). If the check or a start fails, the checkout goes back to the
commit it was at, and what ran is started again on that.
--ref: branch, tag or commit (default: the current branch, else main).
USAGE
}

# The installer from a private copy (the checkout changes under a script bash is reading).
run_installer() {
  local installer=$1 ref=$2
  ZK0_INSTALL_DIR="$ROOT" ZK0_REF="$ref" bash "$installer" </dev/null >&2
}

# Start again, with zk0bot.sh as it is now on disk, what ran before: the server if $1 is 1,
# then each client id that follows, with the options of its last start.
restart_components() {
  local server=$1 id replay
  shift
  [[ $server -eq 0 && $# -eq 0 ]] && return 0
  "$ROOT/zk0bot.sh" stop >&2 || return 1
  if [[ $server -eq 1 ]]; then "$ROOT/zk0bot.sh" server start >&2 || return 1; fi
  for id in "$@"; do
    replay=("$(client_setting "$id" dataset-uri)")
    [[ ! -f $CLIENTS_DIR/$id/start-args ]] || mapfile -d '' replay <"$CLIENTS_DIR/$id/start-args"
    "$ROOT/zk0bot.sh" client start "${replay[@]}" >&2 || return 1
  done
}

# upgrade reads its words here: it repairs an install whose Python may not run.
cmd_upgrade() {
  local ref="" old new installer server=0 clients=() id
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h | --help) usage_upgrade; return 0 ;;
      --ref) [[ -n ${2:-} && $2 != --* ]] || die "option --ref needs a value (see --help)"; ref=$2; shift ;;
      *) die "unknown option '$1' for 'upgrade' (see: $PROG upgrade --help)" ;;
    esac
    shift
  done
  git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 \
    || die "$ROOT is not a git checkout; upgrade by running the installer again (docs/INSTALLATION.md)"
  [[ -f $ROOT/website/get-zk0bot.sh ]] || die "$ROOT has no website/get-zk0bot.sh; upgrade by running the installer again"
  [[ -n $ref ]] || ref=$(git -C "$ROOT" symbolic-ref -q --short HEAD || echo main)
  old=$(git -C "$ROOT" rev-parse HEAD)
  if [[ -d $ZK0_HOME ]] && command -v tmux >/dev/null; then
    session_running "$SERVER_SESSION" && server=1
    for id in $(known_clients); do
      session_running "zk0-supernode-$id" && clients+=("$id")
    done
  fi
  installer=$(mktemp "${TMPDIR:-/tmp}/zk0-upgrade.XXXXXX")
  cp "$ROOT/website/get-zk0bot.sh" "$installer"
  info "upgrading $ROOT from $(git -C "$ROOT" log -1 --format='%h %s') to $ref"
  local failed=""
  if ! run_installer "$installer" "$ref"; then
    if [[ $(git -C "$ROOT" rev-parse HEAD) == "$old" ]]; then
      rm -f "$installer"
      die "the upgrade changed nothing (see the installer's line above); $ROOT stays at ${old:0:12}"
    fi
    failed="the installer stopped after changing the checkout"
  elif ! "$ROOT/zk0bot.sh" version >/dev/null 2>&1; then
    failed="the new version does not run ('$PROG version' failed)"
  elif ! restart_components "$server" "${clients[@]}"; then
    failed="the new version did not start what ran here"
  fi
  new=$(git -C "$ROOT" rev-parse HEAD)
  if [[ -z $failed ]]; then
    rm -f "$installer"
    info "upgraded to $(git -C "$ROOT" log -1 --format='%h %s')$([[ $server -eq 0 && ${#clients[@]} -eq 0 ]] || echo "; restarted what ran here")"
    return 0
  fi
  warn "$failed; going back to ${old:0:12}"
  run_installer "$installer" "$old" || true
  rm -f "$installer"
  [[ $(git -C "$ROOT" rev-parse HEAD) == "$old" ]] \
    || die "$failed, and going back to ${old:0:12} failed too; $ROOT is at ${new:0:12}: rerun the installer with ZK0_REF=$old"
  restart_components "$server" "${clients[@]}" || die "$failed; rolled back to ${old:0:12}, but what ran here did not start again: see $PROG status"
  die "$failed; rolled back to ${old:0:12}$([[ $server -eq 0 && ${#clients[@]} -eq 0 ]] || echo ", and what ran here runs again on it")"
}

# ---------------------------------------------------------------------------
# status, stop, doctor
# ---------------------------------------------------------------------------

cmd_status() {
  eval "$(parse status "$@")"  # json
  # A ZK0_HOME that is a file holds no state: "never started" would hide the mistake.
  [[ ! -e $ZK0_HOME || -d $ZK0_HOME ]] || die "ZK0_HOME=$ZK0_HOME exists and is not a directory; set ZK0_HOME to zk0's state directory"
  need_tmux
  if [[ $json -eq 1 ]]; then
    local healthy=no
    if [[ -f $SERVER_DIR/server.env ]] && session_running "$SERVER_SESSION" && link_health && admin_health; then
      healthy=yes
    fi
    { printf 'version\t%s\nhealthy\t%s\n' "$(version_line)" "$healthy"
      tmx list-panes -a -F $'pane\t#{session_name}\t#{pane_pid}' 2>/dev/null || true; } \
      | FLWR_HOME="$SERVER_DIR/flwr-home" "$(python_bin)" -m zk0.ops.health "$ZK0_HOME" \
        --runs-dir "$SERVER_DIR/runs" --connection "$CONNECTION"
    return 0
  fi
  if [[ -f $SERVER_DIR/server.env ]]; then server_status; else info "SuperLink: never started on this machine"; fi
  client_status
}

# zk0's version and the commit of this checkout (the installer's path is a git checkout).
version_line() {
  local version commit
  version=$(bot version 2>/dev/null || echo unknown)
  if commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null); then
    [[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit+=" (modified)"
  else
    commit="no git checkout"
  fi
  echo "zk0 $version, commit $commit, $ROOT"
}

# version, stop and doctor read their words here: they must work where zk0's Python does not.
only_help() {
  [[ $# -eq 0 ]] && return 1
  [[ $1 == -h || $1 == --help ]] || die "unexpected argument '$1' (see --help)"
}

cmd_version() {
  if only_help "$@"; then echo "Usage: $PROG version    (zk0's package version and the commit of this checkout)"; return 0; fi
  version_line
}

cmd_stop() {
  if only_help "$@"; then echo "Usage: $PROG stop    (every zk0 client and server on this machine)"; return 0; fi
  need_tmux
  client_stop
  server_stop
}

# What every start does first: a tmux session running a bash command, here on a
# throwaway tmux server.
sessions_work() {
  local dir ran=1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/zk0-doctor.XXXXXX" 2>/dev/null) || return 1
  if tmux_run "$dir/tmux.sock" probe "$dir" "touch $(printf '%q' "$dir/ran")" 2>/dev/null; then
    for _ in $(seq 50); do
      [[ -e $dir/ran ]] && break
      sleep 0.1
    done
  fi
  [[ -e $dir/ran ]] || ran=0
  tmux -S "$dir/tmux.sock" kill-server 2>/dev/null || true
  rm -rf "$dir"
  ((ran))
}

# ZK0_HOME (keys, logs, the tmux socket) exists as a writable directory, or can be created.
home_creatable() {
  local dir=$ZK0_HOME
  while [[ ! -e $dir && $dir == */* ]]; do dir=${dir%/*}; done
  [[ -n $dir ]] || dir=/
  if ! home_fits_socket; then
    bad "ZK0_HOME $ZK0_HOME is too long for tmux's socket (at most $((MAX_SOCKET - 10)) characters)" \
      "set ZK0_HOME to a shorter path"
  elif [[ -d $dir && -w $dir && -x $dir ]]; then
    ok "ZK0_HOME $ZK0_HOME$([[ $dir == "$ZK0_HOME" ]] || echo " (created on first start)")"
  else
    bad "ZK0_HOME $ZK0_HOME cannot be $([[ $dir == "$ZK0_HOME" ]] && echo used || echo created): $dir is not a writable directory" \
      "set ZK0_HOME to a directory this user can write"
  fi
}

cmd_doctor() {
  local role=""
  case "$*" in
    "") ;;
    "--role server" | "--role node") role=$2 ;;
    --role*) die "--role must be 'server' or 'node', got '${2:-}'" ;;
    *)
      only_help "$@"
      printf '%s\n' "Usage: $PROG doctor [--role server|node]" "" \
        "Check this machine for running zk0; prints a fix for each problem, exits 1 if any." \
        "--role server: what a server needs now (nginx; certificates once started)." \
        "--role node:   what a node needs now (the server's CA certificate, the server reachable" \
        "               at ZK0_SERVER). Without --role: the role this machine already plays (a" \
        "               server or clients started here), else the checks both roles share; a" \
        "               missing CA or an unreachable server is then a note, not a failure."
      return 0
      ;;
  esac
  if [[ -z $role && -d $ZK0_HOME ]]; then
    [[ -f $SERVER_DIR/server.env ]] && role=server
    [[ -z $(known_clients) ]] || role=${role:+both}${role:-node}
  fi
  local failed=0
  ok() { printf '  ok    %s\n' "$*"; }
  bad() { printf '  FAIL  %s\n        fix: %s\n' "$1" "$2"; failed=1; }
  note() { printf '  note  %s\n' "$*"; }
  # Node-only problems fail a node's check; elsewhere they are worth a note only.
  node_bad() { if [[ $role == node || $role == both ]]; then bad "$@"; else note "$1 (a node needs it: $2)"; fi; }

  echo "zk0 doctor ($(version_line))${role:+, role: $role}"
  if [[ -x $VENV/bin/python ]]; then
    ok "python environment $VENV ($("$VENV/bin/python" -V 2>&1))"
    local report
    report=$(bot imports 2>/dev/null) || report="bad zk0 (python -m zk0.ops.bot fails)"
    while read -r kind name rest; do
      case $kind in
        ok) ok "$name $rest" ;;
        bad) bad "$name cannot be imported ($rest)" "rerun the installer, or: $ROOT/scripts/setup-env.sh" ;;
        cuda) if [[ $name == none ]]; then note "no CUDA GPU visible: training runs on the CPU (slow for the real SmolVLA)"; else ok "GPU: $name $rest"; fi ;;
      esac
    done <<<"$report"
  elif [[ -L $VENV/bin/python || -e $VENV/bin/python ]]; then
    bad "the python environment $VENV is not usable by this user (its interpreter cannot be run)" \
      "create one this user can run: ZK0_VENV=\$HOME/zk0-venv $ROOT/scripts/setup-env.sh, and set ZK0_VENV to it"
  else
    bad "no python environment at $VENV" "$ROOT/scripts/setup-env.sh  (or rerun the installer)"
  fi
  if has_ffmpeg_libs "$(command -v python3 || echo "$VENV/bin/python")"; then
    ok "FFmpeg libraries (video decoding)"
  else
    bad "FFmpeg libraries missing (LeRobot videos cannot be decoded)" "$(apt_hint ffmpeg)"
  fi
  if nginx_path >/dev/null && nginx_stream_module "$(nginx_path)" >/dev/null; then
    ok "nginx and its stream module (the server's public port)"
  elif [[ $role == node ]]; then
    note "nginx or its stream module missing (only a server needs them)"
  elif nginx_path >/dev/null; then
    bad "nginx has no stream module (the public port counts connections per address with it)" "$(apt_hint libnginx-mod-stream)"
  else
    bad "nginx missing (needed to run a server)" "$(apt_hint nginx libnginx-mod-stream)"
  fi
  if ! command -v tmux >/dev/null; then
    bad "tmux missing" "$(apt_hint tmux)"
  elif sessions_work; then
    ok "tmux $(tmux -V | cut -d' ' -f2): its sessions run commands as $(id -un 2>/dev/null || id -u)"
  else
    bad "tmux cannot run a command in a session as this user (every start would fail)" \
      "run '$PROG doctor' again; if it persists, check that /bin/bash runs and ${TMPDIR:-/tmp} is writable"
  fi
  home_creatable
  if command -v openssl >/dev/null; then ok "openssl"; else bad "openssl missing (certificates)" "$(apt_hint openssl)"; fi
  if command -v ssh-keygen >/dev/null; then ok "ssh-keygen"; else bad "ssh-keygen missing (node keys)" "$(apt_hint openssh-client)"; fi

  if [[ -f $SERVER_DIR/certs/server.pem ]]; then
    if openssl x509 -checkend 86400 -noout -in "$SERVER_DIR/certs/server.pem" >/dev/null 2>&1; then
      ok "server certificate $SERVER_DIR/certs/server.pem valid"
    else
      bad "server certificate expired or unreadable" "move $SERVER_DIR/certs away and run: $PROG server start"
    fi
  fi
  local ca
  ca=${ZK0_CA_CERT:-$SERVER_DIR/certs/ca.crt}
  [[ -n ${ZK0_CA_CERT:-} || -f $ca ]] || ca=$ZK0_HOME/ca.crt
  if [[ -f $ca ]]; then
    ok "CA certificate $ca"
  elif [[ $role == server ]]; then
    note "no CA certificate yet: '$PROG server start' creates one"
  else
    node_bad "CA certificate $ca not found" "copy ca.crt from the server admin to $ZK0_HOME/ca.crt (or set ZK0_CA_CERT)"
  fi
  if [[ -n ${ZK0_SERVER:-} ]]; then
    local host=${ZK0_SERVER%:*} port=${ZK0_SERVER##*:}
    if [[ -x $VENV/bin/python ]] && bot reachable "$host" "$port" 2>/dev/null; then
      ok "server $ZK0_SERVER reachable"
    elif [[ $role == server ]]; then
      note "server $ZK0_SERVER not reachable yet: start it with '$PROG server start'"
    else
      node_bad "server $ZK0_SERVER not reachable" "check the address, that the server runs ($PROG server status there) and firewalls"
    fi
  else
    note "ZK0_SERVER not set: the server's reachability was not checked (clients default to 127.0.0.1:$DEFAULT_SERVER_PORT)"
  fi
  if [[ $failed -eq 0 ]]; then echo "all checks passed"; else echo "some checks failed; apply the fixes above"; fi
  return "$failed"
}

usage() {
  cat <<'USAGE'
zk0bot: run a zk0 federation (federated SmolVLA training with Flower).

Usage: zk0bot <command> [options]      (every command takes --help)

Server admin:
  server start|stop|status|logs [-f]       the SuperLink, in tmux session zk0-superlink
  server register <node.pub>...            allow nodes to join
  server nodes [--all]                     node counts, then the nodes (20 rows; --all)
  run [--rounds N] [--run-config "k=v ..."] [--stream]
                                           submit a run and wait for its result

Node operators:
  client start <dataset-uri>               join with a dataset: hf:owner/name or local:/path
  client stop [<uri>] | status | logs [<uri>] [-f]

This machine:
  status [--json]                          everything zk0 runs here (--json for monitors)
  version                                  zk0's version and commit
  upgrade [--ref R]                        upgrade this checkout, restart, roll back on failure
  stop                                     stop everything zk0 started here
  doctor [--role server|node]              check the installation, with fixes
  service install|remove [--user]          start at boot, restart on failure (systemd)

Environment: ZK0_HOME (state, default ~/.zk0), ZK0_SERVER (HOST:PORT clients connect
to, default 127.0.0.1:9092), ZK0_SERVER_PORT, ZK0_SERVER_HOST, ZK0_SERVER_HOSTNAMES,
ZK0_CA_CERT, ZK0_LOCAL_ADDRESS, ZK0_VENV, ZK0_START_TIMEOUT (seconds, default 90),
ZK0_LOCAL_PORTS (LOW-HIGH: the server's ports on 127.0.0.1 for its SuperLink, proxy
and admin API; default 20000 up to the kernel's ephemeral range).
Docs: docs/NODE-OPERATORS.md
USAGE
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || { usage; exit 1; }
  shift
  # What an error can tell the operator to run again: the command and its subcommand.
  RETRY_COMMAND="$PROG $cmd"
  [[ ${1:-} == -* || -z ${1:-} ]] || RETRY_COMMAND+=" $1"
  [[ $START_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "ZK0_START_TIMEOUT must be a whole number of seconds, got '$START_TIMEOUT'"
  case $cmd in
    -h | --help | help) usage ;;
    server) cmd_server "$@" ;;
    client) cmd_client "$@" ;;
    run) cmd_run "$@" ;;
    status) cmd_status "$@" ;;
    version | --version) cmd_version "$@" ;;
    stop) cmd_stop "$@" ;;
    doctor) cmd_doctor "$@" ;;
    service) cmd_service "$@" ;;
    upgrade) cmd_upgrade "$@" ;;
    *) die "unknown command '$cmd' (see: $PROG --help)" ;;
  esac
}

main "$@"
