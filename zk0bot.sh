#!/usr/bin/env bash
# zk0bot: run a zk0 federation on Flower's Deployment Engine.
#
# The server admin runs a SuperLink (`server start`) and submits runs (`run`); each
# node operator runs one SuperNode per dataset (`client start <dataset-uri>`). Every
# component lives in its own tmux session with its own FLWR_HOME, port and log file
# under $ZK0_HOME. TLS and SuperNode authentication are on unless --insecure is given.
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
ZK0_HOME="${ZK0_HOME:-$HOME/.zk0}"
SERVER_DIR="$ZK0_HOME/server"
CLIENTS_DIR="$ZK0_HOME/clients"
SERVER_SESSION="zk0-superlink"
DEFAULT_SERVER_PORT=9092
START_TIMEOUT="${ZK0_START_TIMEOUT:-90}"
CONNECTION="zk0"

export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

die() {
  printf 'zk0bot: error: %s\n' "$*" >&2
  exit 1
}
info() { printf 'zk0bot: %s\n' "$*"; }
warn() { printf 'zk0bot: WARNING: %s\n' "$*" >&2; }

python_bin() {
  [[ -x "$VENV/bin/python" ]] || die "zk0's environment is missing at $VENV; run $ROOT/scripts/setup-env.sh (or the installer)"
  echo "$VENV/bin/python"
}

# Flower's executables (flower-superexec, flwr-serverapp, ...) must be on PATH for the SuperLink/SuperNode.
use_venv() {
  python_bin >/dev/null
  export PATH="$VENV/bin:$PATH"
}

need_tmux() {
  command -v tmux >/dev/null || die "tmux is not installed; install it with: sudo apt-get install -y tmux"
}

# zk0's sessions live on their own tmux server (one per ZK0_HOME), apart from the
# operator's own sessions: `tmux -S ~/.zk0/tmux.sock attach -t zk0-superlink`.
tmx() { tmux -S "$ZK0_HOME/tmux.sock" "$@"; }

session_running() { tmx has-session -t "=$1" 2>/dev/null; }

session_pid() { tmx list-panes -t "=$1" -F '#{pane_pid}' 2>/dev/null | head -n1; }

# Start a detached session running one command. The tmux server may predate this call,
# so the variables that steer zk0, Hugging Face, wandb and CUDA are passed explicitly.
start_session() {
  local session=$1 dir=$2 flwr_home=$3 log=$4
  shift 4
  local prelude command
  prelude=$(export -p | grep -E '^declare -x (ZK0_|HF_|HUGGINGFACE_|WANDB_|CUDA_|NVIDIA_|OMP_|MKL_|PYTORCH_|TORCH|XDG_CACHE_HOME=|HOME=|PATH=)' || true)
  command=$(printf '%q ' "$@")
  mkdir -p "$ZK0_HOME"
  tmx new-session -d -s "$session" -c "$dir" \
    "$prelude"$'\n'"export FLWR_HOME=$(printf '%q' "$flwr_home"); exec $command >>$(printf '%q' "$log") 2>&1"
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

port_free() {
  "$(python_bin)" - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
}

check_port() {
  local port=$1
  [[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] || die "port '$port' is not a number in 1-65535"
}

# Print the last lines of a log after a failed start, so the operator sees why.
show_log_tail() {
  [[ -f $1 ]] || return 0
  printf -- '--- last lines of %s ---\n' "$1" >&2
  tail -n 15 "$1" >&2
}

require_no_args() {
  [[ $# -eq 0 ]] || die "unexpected argument '$1' (see --help)"
}

wants_help() {
  local arg
  for arg in "$@"; do
    [[ $arg == "-h" || $arg == "--help" ]] && return 0
  done
  return 1
}

# Write the connection the flwr CLI uses to reach this machine's SuperLink.
write_flwr_connection() {
  local port mode
  port=$(server_setting port)
  mode=$(server_setting mode)
  mkdir -p "$SERVER_DIR/flwr-home"
  {
    echo '[superlink]'
    echo "default = \"$CONNECTION\""
    echo
    echo "[superlink.$CONNECTION]"
    echo "address = \"127.0.0.1:$port\""
    if [[ $mode == insecure ]]; then
      echo 'insecure = true'
    else
      echo "root-certificates = \"$SERVER_DIR/certs/ca.crt\""
    fi
  } >"$SERVER_DIR/flwr-home/config.toml"
}

server_setting() {
  [[ -f $SERVER_DIR/server.env ]] || die "no server has been started from $ZK0_HOME; run: zk0bot.sh server start"
  sed -n "s/^$1=//p" "$SERVER_DIR/server.env"
}

flwr_admin() {
  use_venv
  FLWR_HOME="$SERVER_DIR/flwr-home" flwr "$@"
}

# ---------------------------------------------------------------------------
# certificates and keys
# ---------------------------------------------------------------------------

# A private CA and a server certificate for the SuperLink, created once.
ensure_server_certs() {
  local dir="$SERVER_DIR/certs" sans="DNS:localhost,IP:127.0.0.1" name names="${ZK0_SERVER_HOSTNAMES:-}"
  [[ -f $dir/server.pem && -f $dir/server.key && -f $dir/ca.crt ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed to create certificates; install it: sudo apt-get install -y openssl"
  mkdir -p "$dir"
  chmod 700 "$dir"
  sans+=",DNS:$(hostname)"
  for name in ${names//,/ }; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then sans+=",IP:$name"; else sans+=",DNS:$name"; fi
  done
  info "creating a certificate authority and the SuperLink certificate in $dir (SANs: $sans)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/CN=zk0 federation CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=zk0-superlink" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$sans" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -out "$dir/server.pem" -extfile "$dir/server.ext" 2>/dev/null
  rm -f "$dir/server.csr" "$dir/server.ext"
  chmod 600 "$dir"/*.key
}

install_given_certs() {
  local ca=$1 cert=$2 key=$3 dir="$SERVER_DIR/certs"
  [[ -f $ca && -f $cert && -f $key ]] || die "--ca-cert, --cert and --key must all name existing files"
  mkdir -p "$dir"
  chmod 700 "$dir"
  cp "$ca" "$dir/ca.crt"
  cp "$cert" "$dir/server.pem"
  cp "$key" "$dir/server.key"
  chmod 600 "$dir/server.key"
}

# ---------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------

server_health() {
  local port mode
  port=$(server_setting port)
  mode=$(server_setting mode)
  "$(python_bin)" - "$port" "$mode" "$SERVER_DIR/certs/ca.crt" <<'PY' 2>/dev/null
import sys, httpx
port, mode, ca = sys.argv[1:]
scheme, verify = ("http", False) if mode == "insecure" else ("https", ca)
sys.exit(0 if httpx.get(f"{scheme}://127.0.0.1:{port}/health", verify=verify, timeout=2).is_success else 1)
PY
}

usage_server() {
  cat <<'USAGE'
Usage: zk0bot.sh server <command> [options]

Commands:
  start [--port P] [--host H] [--insecure] [--ca-cert F --cert F --key F]
          Start the SuperLink in tmux session zk0-superlink. Creates a CA and a
          server certificate once (or installs the given ones) and enables TLS and
          SuperNode authentication. --host is the address to listen on (default
          0.0.0.0; ZK0_SERVER_HOST), --port the port (default 9092; ZK0_SERVER_PORT).
          Extra certificate names/IPs: ZK0_SERVER_HOSTNAMES="fl.example.org,203.0.113.7".
  stop    Stop the SuperLink and everything it started.
  status  Session, PID, port, health, nodes and recent runs.
  logs [-f]
          Show (or follow) the SuperLink log.
  register <node-public-key-file>
          Allow a node (its operator sends you the .pub file `client start` printed).
  nodes   Registered and connected nodes.
USAGE
}

server_start() {
  local port="${ZK0_SERVER_PORT:-$DEFAULT_SERVER_PORT}" host="${ZK0_SERVER_HOST:-0.0.0.0}" insecure=0
  local ca="" cert="" key=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --port) port=${2:?--port needs a value}; shift ;;
      --host) host=${2:?--host needs a value}; shift ;;
      --insecure) insecure=1 ;;
      --ca-cert) ca=${2:?--ca-cert needs a file}; shift ;;
      --cert) cert=${2:?--cert needs a file}; shift ;;
      --key) key=${2:?--key needs a file}; shift ;;
      *) die "unknown option '$1' for 'server start' (see: zk0bot.sh server --help)" ;;
    esac
    shift
  done
  check_port "$port"
  need_tmux
  use_venv
  if session_running "$SERVER_SESSION"; then
    info "SuperLink already running (session $SERVER_SESSION, port $(server_setting port))"
    return 0
  fi
  port_free "$host" "$port" || die "port $port on $host is in use; stop what uses it or choose another with --port"
  mkdir -p "$SERVER_DIR/runs"
  local args=(--port "$port" --host "$host" --disable-runtime-dependency-installation)
  if [[ $insecure -eq 1 ]]; then
    warn "--insecure: no TLS and no node authentication. Anyone who reaches port $port can join or submit code. Use only for local experiments."
    args+=(--insecure)
    printf 'port=%s\nhost=%s\nmode=insecure\n' "$port" "$host" >"$SERVER_DIR/server.env"
  else
    if [[ -n $ca$cert$key ]]; then install_given_certs "$ca" "$cert" "$key"; else ensure_server_certs; fi
    args+=(--ssl-ca-certfile "$SERVER_DIR/certs/ca.crt" --ssl-certfile "$SERVER_DIR/certs/server.pem"
      --ssl-keyfile "$SERVER_DIR/certs/server.key" --enable-supernode-auth)
    printf 'port=%s\nhost=%s\nmode=secure\n' "$port" "$host" >"$SERVER_DIR/server.env"
  fi
  write_flwr_connection
  local log="$SERVER_DIR/superlink.log"
  : >"$log"
  start_session "$SERVER_SESSION" "$SERVER_DIR" "$SERVER_DIR/flwr-home" "$log" flower-superlink "${args[@]}"
  local waited=0
  until server_health; do
    if ! session_running "$SERVER_SESSION"; then
      show_log_tail "$log"
      die "the SuperLink exited during start-up (log: $log)"
    fi
    if ((waited >= START_TIMEOUT)); then
      show_log_tail "$log"
      stop_session "$SERVER_SESSION"
      die "the SuperLink did not become healthy within ${START_TIMEOUT}s (log: $log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  info "SuperLink running: session $SERVER_SESSION, pid $(session_pid "$SERVER_SESSION"), $host:$port ($(server_setting mode))"
  info "attach with: tmux -S $ZK0_HOME/tmux.sock attach -t $SERVER_SESSION"
  if [[ $insecure -eq 0 ]]; then
    info "node operators need the CA certificate: $SERVER_DIR/certs/ca.crt"
    info "register each node's public key with: zk0bot.sh server register <node.pub>"
  fi
}

server_stop() {
  require_no_args "$@"
  need_tmux
  if session_running "$SERVER_SESSION"; then
    stop_session "$SERVER_SESSION"
    info "SuperLink stopped"
  else
    info "SuperLink is not running"
  fi
}

server_status() {
  require_no_args "$@"
  need_tmux
  if ! session_running "$SERVER_SESSION"; then
    info "SuperLink: not running"
    return 0
  fi
  local health=unhealthy
  server_health && health=healthy
  info "SuperLink: running, session $SERVER_SESSION, pid $(session_pid "$SERVER_SESSION"), port $(server_setting port), $(server_setting mode), $health"
  info "runs directory: $SERVER_DIR/runs"
  [[ $health == healthy ]] || return 0
  flwr_admin supernode list "$CONNECTION" 2>/dev/null | sed -n '/┏/,$p' || true
  flwr_admin ls "$CONNECTION" 2>/dev/null | sed -n '/┏/,$p' | head -n 12 || true
}

server_logs() {
  local follow=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      -f | --follow) follow=(-f) ;;
      *) die "unknown option '$1' for 'server logs'" ;;
    esac
    shift
  done
  [[ -f $SERVER_DIR/superlink.log ]] || die "no SuperLink log yet ($SERVER_DIR/superlink.log); run: zk0bot.sh server start"
  tail -n 100 "${follow[@]}" "$SERVER_DIR/superlink.log"
}

server_register() {
  [[ $# -eq 1 ]] || die "usage: zk0bot.sh server register <node-public-key-file>"
  local key=$1
  [[ -f $key ]] || die "public key file '$key' does not exist"
  grep -q '^ecdsa-sha2-nistp384 ' "$key" || die "'$key' is not a node public key (expected an 'ecdsa-sha2-nistp384 ...' line from zk0bot client start)"
  [[ $(server_setting mode) == secure ]] || die "the server runs with --insecure: node authentication is off, nothing to register"
  session_running "$SERVER_SESSION" || die "the SuperLink is not running; start it first: zk0bot.sh server start"
  flwr_admin supernode register "$key" "$CONNECTION"
}

server_nodes() {
  require_no_args "$@"
  session_running "$SERVER_SESSION" || die "the SuperLink is not running; start it first: zk0bot.sh server start"
  flwr_admin supernode list "$CONNECTION"
}

cmd_server() {
  local sub=${1:-}
  [[ -n $sub ]] || { usage_server; exit 1; }
  shift
  if [[ $sub == -h || $sub == --help ]] || wants_help "$@"; then
    usage_server
    return 0
  fi
  case $sub in
    start) server_start "$@" ;;
    stop) server_stop "$@" ;;
    status) server_status "$@" ;;
    logs) server_logs "$@" ;;
    register) server_register "$@" ;;
    nodes) server_nodes "$@" ;;
    *) die "unknown server command '$sub' (see: zk0bot.sh server --help)" ;;
  esac
}

# ---------------------------------------------------------------------------
# client (one SuperNode per dataset)
# ---------------------------------------------------------------------------

usage_client() {
  cat <<'USAGE'
Usage: zk0bot.sh client <command> [options]

Commands:
  start <dataset-uri> [--server HOST:PORT] [--ca-cert FILE] [--port P] [--insecure]
          Start a SuperNode that trains on this node's dataset, in tmux session
          zk0-supernode-<id>. <dataset-uri> is hf:owner/name, owner/name or
          local:/absolute/path. The first start creates the node's key pair and prints
          the public key to send to the server admin. --server defaults to
          $ZK0_SERVER (127.0.0.1:9092); --ca-cert to $ZK0_CA_CERT, else the local
          server's CA, else $ZK0_HOME/ca.crt.
  stop [<dataset-uri>]     Stop one client (or all of them).
  status                   Every client on this machine: session, PID, port, dataset.
  logs [<dataset-uri>] [-f]
                           Show (or follow) a client's log (the only one, or the named one).
USAGE
}

# A stable, readable id per dataset: several clients can run on one machine.
client_id() {
  local slug hash
  slug=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9' '-' | sed 's/--*/-/g; s/^-//; s/-$//' | tail -c 40)
  hash=$(printf '%s' "$1" | sha1sum | cut -c1-6)
  echo "${slug#-}-$hash"
}

client_setting() { sed -n "s/^$2=//p" "$CLIENTS_DIR/$1/client.env"; }

known_clients() {
  local dir
  for dir in "$CLIENTS_DIR"/*/; do
    [[ -f $dir/client.env ]] && basename "$dir"
  done
  return 0
}

validate_dataset() {
  local uri=$1
  local out
  if [[ $uri == local:* ]]; then
    out=$("$VENV/bin/zk0" check-dataset "$uri" 2>&1 >/dev/null) || die "${out#zk0: error: }"
  else
    out=$("$(python_bin)" -c 'import sys; from zk0.uri import parse_dataset_uri; parse_dataset_uri(sys.argv[1])' "$uri" 2>&1) \
      || die "$(tail -n1 <<<"$out" | sed 's/^zk0.uri.URIError: //')"
  fi
}

next_free_port() {
  local port=9100 used
  used=" $(for id in $(known_clients); do client_setting "$id" port; done | tr '\n' ' ') "
  while [[ $used == *" $port "* ]] || ! port_free 127.0.0.1 "$port"; do
    port=$((port + 1))
  done
  echo "$port"
}

default_ca_cert() {
  if [[ -n ${ZK0_CA_CERT:-} ]]; then
    echo "$ZK0_CA_CERT"
  elif [[ -f $SERVER_DIR/certs/ca.crt ]]; then
    echo "$SERVER_DIR/certs/ca.crt"
  else
    echo "$ZK0_HOME/ca.crt"
  fi
}

client_start() {
  local uri="" server="${ZK0_SERVER:-127.0.0.1:$DEFAULT_SERVER_PORT}" ca port="" insecure=0
  ca=$(default_ca_cert)
  while [[ $# -gt 0 ]]; do
    case $1 in
      --server) server=${2:?--server needs HOST:PORT}; shift ;;
      --ca-cert) ca=${2:?--ca-cert needs a file}; shift ;;
      --port) port=${2:?--port needs a value}; shift ;;
      --insecure) insecure=1 ;;
      -*) die "unknown option '$1' for 'client start' (see: zk0bot.sh client --help)" ;;
      *) [[ -z $uri ]] || die "client start takes one dataset URI, got '$uri' and '$1'"; uri=$1 ;;
    esac
    shift
  done
  [[ -n $uri ]] || die "usage: zk0bot.sh client start <dataset-uri>  (hf:owner/name or local:/absolute/path)"
  [[ $server == *:* ]] || die "--server must be HOST:PORT, got '$server'"
  need_tmux
  use_venv
  validate_dataset "$uri"

  local id dir session log
  id=$(client_id "$uri")
  dir="$CLIENTS_DIR/$id"
  session="zk0-supernode-$id"
  log="$dir/supernode.log"
  if session_running "$session"; then
    info "client for $uri already running (session $session, port $(client_setting "$id" port))"
    return 0
  fi
  mkdir -p "$dir/flwr-home"
  if [[ -z $port ]]; then port=$(next_free_port); fi
  check_port "$port"
  port_free 127.0.0.1 "$port" || die "port $port is in use; choose another with --port"

  local args=(--superlink "$server" --port "$port" --node-config "dataset-uri='$uri'")
  if [[ $insecure -eq 1 ]]; then
    warn "--insecure: the connection to $server is not encrypted and this node is not authenticated. Use only for local experiments."
    args+=(--insecure)
  else
    [[ -f $ca ]] || die "CA certificate '$ca' not found; get ca.crt from the server admin and pass --ca-cert FILE (or set ZK0_CA_CERT)"
    if [[ ! -f $dir/node.key ]]; then
      ssh-keygen -q -t ecdsa -b 384 -N "" -C "zk0-node-$id" -f "$dir/node.key"
      info "created this node's key pair: $dir/node.key(.pub)"
    fi
    args+=(--root-certificates "$ca" --auth-supernode-private-key "$dir/node.key")
  fi
  printf 'dataset-uri=%s\nport=%s\nserver=%s\n' "$uri" "$port" "$server" >"$dir/client.env"
  : >"$log"
  start_session "$session" "$dir" "$dir/flwr-home" "$log" flower-supernode "${args[@]}"
  wait_for_supernode "$session" "$log" "$dir" "$server"
  info "client running: session $session, pid $(session_pid "$session"), port $port, dataset $uri, server $server"
}

wait_for_supernode() {
  local session=$1 log=$2 dir=$3 server=$4 waited=0
  until grep -q 'SuperNode ID:' "$log"; do
    if grep -q 'Failed to activate SuperNode' "$log" || ! session_running "$session"; then
      stop_session "$session"
      if grep -q 'Failed to activate SuperNode' "$log"; then
        printf 'zk0bot: this node is not registered with the server. Send this public key to the admin:\n' >&2
        cat "$dir/node.key.pub" >&2
        die "node not registered: the admin must run 'zk0bot.sh server register node.pub' (file: $dir/node.key.pub), then start again"
      fi
      show_log_tail "$log"
      die "the SuperNode exited during start-up (log: $log)"
    fi
    if ((waited >= START_TIMEOUT)); then
      show_log_tail "$log"
      stop_session "$session"
      die "could not connect to the server at $server within ${START_TIMEOUT}s: check ZK0_SERVER/--server, the network and the CA certificate"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# The client named by a URI, or the only one when no URI is given.
pick_client() {
  local uri=${1:-} ids
  if [[ -n $uri ]]; then
    ids=$(client_id "$uri")
    [[ -f $CLIENTS_DIR/$ids/client.env ]] || die "no client for '$uri' on this machine (see: zk0bot.sh client status)"
    echo "$ids"
    return
  fi
  ids=$(known_clients)
  [[ -n $ids ]] || die "no client has been started on this machine"
  [[ $(wc -l <<<"$ids") -eq 1 ]] || die "several clients on this machine; name one by its dataset URI (see: zk0bot.sh client status)"
  echo "$ids"
}

client_stop() {
  [[ $# -le 1 ]] || die "usage: zk0bot.sh client stop [<dataset-uri>]"
  need_tmux
  local ids id
  if [[ $# -eq 1 ]]; then ids=$(pick_client "$1"); else ids=$(known_clients); fi
  for id in $ids; do
    if session_running "zk0-supernode-$id"; then
      stop_session "zk0-supernode-$id"
      info "client $(client_setting "$id" dataset-uri) stopped"
    fi
  done
}

client_status() {
  require_no_args "$@"
  need_tmux
  local id state any=0
  for id in $(known_clients); do
    any=1
    state="stopped"
    if session_running "zk0-supernode-$id"; then
      state="running, pid $(session_pid "zk0-supernode-$id")"
    fi
    info "client $(client_setting "$id" dataset-uri): $state, session zk0-supernode-$id, port $(client_setting "$id" port), server $(client_setting "$id" server)"
  done
  [[ $any -eq 1 ]] || info "no clients on this machine"
}

client_logs() {
  local uri="" follow=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      -f | --follow) follow=(-f) ;;
      -*) die "unknown option '$1' for 'client logs'" ;;
      *) uri=$1 ;;
    esac
    shift
  done
  local id
  id=$(pick_client "$uri")
  tail -n 100 "${follow[@]}" "$CLIENTS_DIR/$id/supernode.log"
}

cmd_client() {
  local sub=${1:-}
  [[ -n $sub ]] || { usage_client; exit 1; }
  shift
  if [[ $sub == -h || $sub == --help ]] || wants_help "$@"; then
    usage_client
    return 0
  fi
  case $sub in
    start) client_start "$@" ;;
    stop) client_stop "$@" ;;
    status) client_status "$@" ;;
    logs) client_logs "$@" ;;
    *) die "unknown client command '$sub' (see: zk0bot.sh client --help)" ;;
  esac
}

# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------

usage_run() {
  cat <<'USAGE'
Usage: zk0bot.sh run [--rounds N] [--run-config "key=value ..."] [--stream]

Submit the zk0 app to this machine's SuperLink and wait until the run ends.
Outputs land in $ZK0_HOME/server/runs/<timestamp>/ (metrics.jsonl, checkpoints/,
plots/). Any [tool.flwr.app.config] key can be overridden with --run-config.
--stream prints the run's logs while it runs. Exits 0 only when the run completed.
USAGE
}

run_status() {
  flwr_admin ls "$CONNECTION" --run-id "$1" --format json 2>/dev/null |
    "$(python_bin)" -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["status"])' 2>/dev/null
}

# The run id from `flwr run --format json`, or Flower's reason for refusing the run.
submitted_run_id() {
  "$(python_bin)" -c '
import json, sys
text = sys.stdin.read()
reply = json.loads(text[text.index("{"):]) if "{" in text else {}
if reply.get("run-id"):
    print(reply["run-id"])
else:
    reason = [line for line in str(reply.get("error-message", text)).splitlines() if line and "Using SuperLink" not in line]
    print(reason[0] if reason else "no reply")
'
}

run_dir_of() {
  grep -l "\"run_id\": $1," "$SERVER_DIR"/runs/*/run_config.json 2>/dev/null | head -n1 | xargs -r dirname
}

cmd_run() {
  local rounds="" extra="" stream=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      --rounds) rounds=${2:?--rounds needs a number}; shift ;;
      --run-config) extra=${2:?--run-config needs \"key=value ...\"}; shift ;;
      --stream) stream=1 ;;
      -h | --help) usage_run; return 0 ;;
      *) die "unknown option '$1' for 'run' (see: zk0bot.sh run --help)" ;;
    esac
    shift
  done
  [[ -z $rounds || $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, got '$rounds'"
  need_tmux
  session_running "$SERVER_SESSION" || die "the SuperLink is not running; start it first: zk0bot.sh server start"
  server_health || die "the SuperLink does not answer its health check; see: zk0bot.sh server logs"
  local config="output-dir='$SERVER_DIR/runs'"
  [[ -n $rounds ]] && config+=" num-rounds=$rounds"
  # The operator's overrides go in a second --run-config, which flwr applies last.
  local out run_id
  out=$(cd "$ROOT" && flwr_admin run . "$CONNECTION" --format json --run-config "$config" \
    ${extra:+--run-config "$extra"} 2>&1) || true
  run_id=$(submitted_run_id <<<"$out")
  [[ $run_id =~ ^[0-9]+$ ]] || die "the SuperLink did not start a run: ${run_id:-$(tail -n 1 <<<"$out")}"
  info "run $run_id submitted; outputs under $SERVER_DIR/runs"
  if [[ $stream -eq 1 ]]; then
    flwr_admin log "$run_id" "$CONNECTION" --stream || true
  fi

  local status="" last="" failures=0
  while true; do
    if ! status=$(run_status "$run_id") || [[ -z $status ]]; then
      failures=$((failures + 1))
      ((failures < 10)) || die "lost contact with the SuperLink while waiting for run $run_id"
      sleep 3
      continue
    fi
    failures=0
    [[ $status != "$last" ]] && info "run $run_id: $status"
    last=$status
    [[ $status == finished:* ]] && break
    sleep 3
  done
  local run_dir
  run_dir=$(run_dir_of "$run_id")
  if [[ $status != finished:completed ]]; then
    local reason
    reason=$(flwr_admin log "$run_id" "$CONNECTION" --show 2>/dev/null | grep -oE 'zk0: error: .*' | tail -n1 || true)
    die "run $run_id ended as '$status': ${reason#zk0: error: }${reason:+; }see: zk0bot.sh server logs${run_dir:+ (partial outputs in $run_dir)}"
  fi
  info "run $run_id completed; outputs in ${run_dir:-$SERVER_DIR/runs}"
}

# ---------------------------------------------------------------------------
# status, stop, doctor
# ---------------------------------------------------------------------------

cmd_status() {
  [[ ${1:-} == -h || ${1:-} == --help ]] && { echo "Usage: zk0bot.sh status    (server and clients on this machine)"; return 0; }
  require_no_args "$@"
  need_tmux
  if [[ -f $SERVER_DIR/server.env ]]; then server_status; else info "SuperLink: never started on this machine"; fi
  client_status
}

cmd_stop() {
  [[ ${1:-} == -h || ${1:-} == --help ]] && { echo "Usage: zk0bot.sh stop    (every zk0 client and server on this machine)"; return 0; }
  require_no_args "$@"
  need_tmux
  client_stop
  server_stop
}

cmd_doctor() {
  [[ ${1:-} == -h || ${1:-} == --help ]] && {
    echo "Usage: zk0bot.sh doctor    (check this machine for running zk0; prints a fix for each problem)"
    return 0
  }
  require_no_args "$@"
  local failed=0
  ok() { printf '  ok    %s\n' "$*"; }
  bad() { printf '  FAIL  %s\n        fix: %s\n' "$1" "$2"; failed=1; }
  note() { printf '  note  %s\n' "$*"; }

  echo "zk0 doctor ($ROOT)"
  if [[ -x $VENV/bin/python ]]; then
    ok "python environment $VENV ($("$VENV/bin/python" -V 2>&1))"
    local report
    report=$("$VENV/bin/python" - <<'PY' 2>&1
import importlib
for name in ("torch", "torchcodec", "flwr", "lerobot", "zk0"):
    try:
        module = importlib.import_module(name if name != "torchcodec" else "torchcodec.decoders")
        version = getattr(importlib.import_module(name), "__version__", "")
        print(f"ok {name} {version}")
    except Exception as err:
        print(f"bad {name} {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}")
import torch
print("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
    ) || true
    while read -r kind name rest; do
      case $kind in
        ok) ok "$name $rest" ;;
        bad) bad "$name cannot be imported ($rest)" "rerun the installer, or: $ROOT/scripts/setup-env.sh" ;;
        cuda) if [[ $name == none ]]; then note "no CUDA GPU visible: training runs on the CPU (slow for the real SmolVLA)"; else ok "GPU: $name $rest"; fi ;;
      esac
    done <<<"$report"
  else
    bad "no python environment at $VENV" "$ROOT/scripts/setup-env.sh  (or rerun the installer)"
  fi
  if ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
    ok "FFmpeg libraries (video decoding)"
  else
    bad "FFmpeg libraries missing (LeRobot videos cannot be decoded)" "sudo apt-get install -y ffmpeg"
  fi
  if command -v tmux >/dev/null; then ok "tmux $(tmux -V | cut -d' ' -f2)"; else bad "tmux missing" "sudo apt-get install -y tmux"; fi
  if command -v openssl >/dev/null; then ok "openssl"; else bad "openssl missing (certificates)" "sudo apt-get install -y openssl"; fi
  if command -v ssh-keygen >/dev/null; then ok "ssh-keygen"; else bad "ssh-keygen missing (node keys)" "sudo apt-get install -y openssh-client"; fi

  if [[ -f $SERVER_DIR/certs/server.pem ]]; then
    if openssl x509 -checkend 86400 -noout -in "$SERVER_DIR/certs/server.pem" >/dev/null 2>&1; then
      ok "server certificate $SERVER_DIR/certs/server.pem valid"
    else
      bad "server certificate expired or unreadable" "move $SERVER_DIR/certs away and run: zk0bot.sh server start"
    fi
  fi
  local ca
  ca=$(default_ca_cert)
  if [[ -f $ca ]]; then
    ok "CA certificate $ca"
  elif [[ -n $(known_clients) || -n ${ZK0_SERVER:-} ]]; then
    bad "CA certificate $ca not found" "copy ca.crt from the server admin to $ZK0_HOME/ca.crt (or set ZK0_CA_CERT)"
  fi
  if [[ -n ${ZK0_SERVER:-} ]]; then
    local host=${ZK0_SERVER%:*} port=${ZK0_SERVER##*:}
    if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()' "$host" "$port" 2>/dev/null; then
      ok "server $ZK0_SERVER reachable"
    else
      bad "server $ZK0_SERVER not reachable" "check the address, that the server runs (zk0bot.sh server status there) and firewalls"
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

Usage: zk0bot.sh <command> [options]      (every command takes --help)

Server admin:
  server start|stop|status|logs [-f]       the SuperLink, in tmux session zk0-superlink
  server register <node-public-key-file>   allow a node to join
  server nodes                             registered and connected nodes
  run [--rounds N] [--run-config "k=v ..."] [--stream]
                                           submit a run and wait for its result

Node operators:
  client start <dataset-uri>               join with a dataset: hf:owner/name or local:/path
  client stop [<uri>] | status | logs [<uri>] [-f]

This machine:
  status                                   everything zk0 runs here
  stop                                     stop everything zk0 started here
  doctor                                   check the installation, with fixes

Environment: ZK0_HOME (state, default ~/.zk0), ZK0_SERVER (HOST:PORT clients connect
to, default 127.0.0.1:9092), ZK0_SERVER_PORT, ZK0_SERVER_HOST, ZK0_SERVER_HOSTNAMES,
ZK0_CA_CERT, ZK0_VENV, ZK0_START_TIMEOUT (seconds, default 90).
Docs: docs/NODE-OPERATORS.md
USAGE
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || { usage; exit 1; }
  shift
  case $cmd in
    -h | --help | help) usage ;;
    server) cmd_server "$@" ;;
    client) cmd_client "$@" ;;
    run) cmd_run "$@" ;;
    status) cmd_status "$@" ;;
    stop) cmd_stop "$@" ;;
    doctor) cmd_doctor "$@" ;;
    *) die "unknown command '$cmd' (see: zk0bot.sh --help)" ;;
  esac
}

main "$@"
