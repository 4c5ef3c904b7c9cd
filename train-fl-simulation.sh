#!/usr/bin/env bash
# Run a zk0 federation in Flower's local simulation (`flwr run . local-simulation`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
SIM_DIR="${ZK0_SIM_DIR:-$ROOT/.zk0-sim}"

usage() {
  cat <<USAGE
Usage: ./train-fl-simulation.sh [--tiny] [--rounds N] [--clients K] [--output-dir DIR]
                                [--run-config "key=value ..."] [--help]

Sets up the environment if needed, then runs a federated SmolVLA training in
Flower's simulation engine with K simulated clients, and stops every process it
started when done. Exits non-zero if the run failed.

  --tiny              the embedded tiny default: a tiny SmolVLA built locally and
                      synthetic SO-100 datasets (one per client + a held-out set);
                      no network, a few minutes on a laptop CPU
  --rounds N          federated rounds (run-config num-rounds)
  --clients K         simulated clients; without --tiny, the first K of the
                      run-config 'datasets' list train (default: all of them)
  --output-dir DIR    where run directories go (default: ./outputs)
  --run-config "..."  extra run-config overrides, e.g. "local-steps=50 lr=3e-4"
  -h, --help          this help

Real runs (without --tiny) use pyproject.toml's defaults: lerobot/smolvla_base
and the SO-100/SO-101 datasets from the Hugging Face Hub.
USAGE
}

log() { printf 'zk0-sim: %s\n' "$*" >&2; }
die() { printf 'zk0-sim: error: %s\n' "$*" >&2; exit 1; }

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

count_datasets() {
  "$VENV/bin/python" - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
config = tomllib.load(open(sys.argv[1], "rb"))["tool"]["flwr"]["app"]["config"]
print(len([d for d in config["datasets"].split(",") if d.strip()]))
PY
}

# The connection lives in $FLWR_HOME/config.toml (never in pyproject.toml, which flwr
# would rewrite). In-memory state: SQLite mode chokes on large model payloads.
write_flower_config() {
  mkdir -p "$FLWR_HOME"
  cat >"$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-simulation"

[superlink.local-simulation]
address = ":local-in-memory:"
TOML
}

# Simulated clients share the machine: one CPU each, and an equal share of a GPU if present.
federation_config() {
  local clients=$1 gpus=0
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    gpus=$(awk -v k="$clients" 'BEGIN { printf "%.3f", 1 / k }')
  fi
  echo "num-supernodes=$clients client-resources-num-cpus=1 client-resources-num-gpus=$gpus"
}

stop_superlink() {
  local pids
  pids=$(pgrep -f "flower-superlink .*--port $FLWR_LOCAL_SUPERLINK_HTTP_API_PORT" || true)
  for pid in $pids; do
    # The SuperLink leads its own session: end it with everything it spawned (Ray included).
    pkill -TERM -s "$pid" 2>/dev/null || true
  done
  sleep 2
  for pid in $pids; do
    pkill -KILL -s "$pid" 2>/dev/null || true
  done
}

# The text of the error box flwr prints, on one line.
boxed_error() {
  sed -n 's/^│ *\(.*[^ ]\) *│$/\1/p' "$1" | tr '\n' ' ' | sed 's/ *$//'
}

run_status() {
  "$VENV/bin/flwr" ls local-simulation --run-id "$1" --format json 2>/dev/null \
    | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["status"])' 2>/dev/null \
    || echo "unknown"
}

main() {
  local tiny=0 rounds="" clients="" output_dir="$ROOT/outputs" extra=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --tiny) tiny=1 ;;
      --rounds) rounds=${2:?--rounds needs a number}; shift ;;
      --clients) clients=${2:?--clients needs a number}; shift ;;
      --output-dir) output_dir=${2:?--output-dir needs a directory}; shift ;;
      --run-config) extra=${2:?--run-config needs \"key=value ...\"}; shift ;;
      -h | --help) usage; return 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  [[ -z $rounds || $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, got '$rounds'"
  [[ -z $clients || $clients =~ ^[1-9][0-9]*$ ]] || die "--clients must be a positive integer, got '$clients'"

  "$ROOT/scripts/setup-env.sh"
  mkdir -p "$output_dir"
  output_dir="$(cd "$output_dir" && pwd)"

  local config=""
  if [[ $tiny -eq 1 ]]; then
    clients=${clients:-2}
    local uris
    log "preparing $clients synthetic SO-100 datasets and the tiny SmolVLA (cached after the first run)"
    uris=$("$VENV/bin/zk0" demo-data "$SIM_DIR/demo-data-$clients" --clients "$clients" 2>/dev/null) \
      || die "writing the demo datasets failed; run '$VENV/bin/zk0 demo-data $SIM_DIR/demo-data-$clients' to see why"
    "$VENV/bin/zk0" prepare-tiny >/dev/null 2>&1 || die "building the tiny model failed; run '$VENV/bin/zk0 prepare-tiny'"
    config="model='tiny' datasets='$(sed -n 1p <<<"$uris")' eval-dataset='$(sed -n 2p <<<"$uris")'"
    config+=" num-rounds=3 local-steps=40 batch-size=8 lr=1e-3 lr-schedule='constant' warmup-rounds=0"
    config+=" eval-batches=4 checkpoint-every=1 num-workers=0 min-train-clients=$clients"
    config+=" min-evaluate-clients=$clients min-available-clients=$clients node-wait-timeout=120.0"
  else
    clients=${clients:-$(count_datasets)}
  fi
  # User overrides travel in a second --run-config: flwr applies them after the preset's.
  local overrides="output-dir='$output_dir'"
  [[ -n $rounds ]] && overrides+=" num-rounds=$rounds"
  [[ -n $extra ]] && overrides+=" $extra"

  export FLWR_HOME="$SIM_DIR/flwr-home-$$"
  FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=$(free_port)
  FLWR_LOCAL_CONTROL_API_PORT=$(free_port)
  export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT FLWR_LOCAL_CONTROL_API_PORT
  # The app runs in this environment: never let the SuperLink install packages per run.
  export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
  export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 RAY_DEDUP_LOGS=0
  # GPU shares are set explicitly above; keep Ray from rewriting CUDA_VISIBLE_DEVICES otherwise.
  export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0
  export PATH="$VENV/bin:$PATH"
  write_flower_config
  RUN_LOG="$SIM_DIR/flwr-run-$$.log"
  trap 'stop_superlink; rm -rf "$FLWR_HOME" "$RUN_LOG"' EXIT

  log "starting the simulation: $clients clients, outputs under $output_dir"
  local run_id status reason
  (cd "$ROOT" && flwr run . local-simulation --stream \
    --federation-config "$(federation_config "$clients")" \
    ${config:+--run-config "$config"} --run-config "$overrides") 2>&1 | tee "$RUN_LOG" || true
  run_id=$(grep -oE 'run [0-9]+' "$RUN_LOG" | head -n1 | cut -d' ' -f2 || true)
  reason=$(grep -oE 'zk0: error: .*' "$RUN_LOG" | tail -n1 | sed 's/^zk0: error: //' || true)
  [[ -n $run_id ]] || die "flwr run did not start a run: $(boxed_error "$RUN_LOG")"
  status=$(run_status "$run_id")
  if [[ $status != "finished:completed" ]]; then
    die "run $run_id ended with status '$status': ${reason:-see the log above}"
  fi
  log "run $run_id finished: $status"
}

main "$@"
