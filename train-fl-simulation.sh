#!/usr/bin/env bash
# Run a zk0 federation in Flower's local simulation (`flwr run . local-simulation`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ZK0_VENV:-$ROOT/.venv}"
SIM_DIR="${ZK0_SIM_DIR:-$ROOT/.zk0-sim}"
# shellcheck disable=SC1091 # scripts/lib.sh is checked on its own
source "$ROOT/scripts/lib.sh"

usage() {
  cat <<USAGE
Usage: ./train-fl-simulation.sh [--tiny | --sim so101] [--rounds N] [--clients K] [--output-dir DIR]
                                [--run-config "key=value ..."]... [--ray-address ADDRESS]
                                [--actors N] [--verbose] [--help]

Sets up the environment if needed, then runs a federated SmolVLA training in
Flower's simulation engine with K simulated clients, and stops every process it
started when done. Exits non-zero if the run failed (2: bad options or run config).

  --tiny              the embedded tiny default: a tiny SmolVLA built locally and
                      synthetic SO-100 datasets (one per client + a held-out set);
                      no network, a few minutes on a laptop CPU
  --sim so101         a simulated SO-101 federation scored by task success: the
                      tiny SmolVLA, each owner's scripted demonstrations recorded in
                      MuJoCo with the cube in its own strip of the table, and the
                      server's closed-loop rollouts (run-config eval-env) over the
                      whole table every 40 of 240 rounds; the round lines show the
                      success rate (about 25 minutes on 2 CPU cores)
  --rounds N          federated rounds (same as --run-config "num-rounds=N")
  --clients K         simulated clients (--tiny, --sim: default 2; --sim: at most 8;
                      --tiny: beyond 8, each client
                      is a shard of one shared dataset per task; beyond 10, a round
                      samples 10 of them); without --tiny, the first K of the
                      run-config 'datasets' list train (default: all)
  --output-dir DIR    where run directories go (default: ./outputs; same as
                      --run-config "output-dir='/abs/DIR'")
  --run-config "..."  run-config overrides, e.g. "local-steps=50 lr=3e-4"; applied
                      after --tiny's preset, --rounds and --output-dir, so any key
                      can be overridden; may be repeated (later ones win)
  --ray-address ADDRESS
                      run the clients on an existing Ray cluster (as 'ray start --head'
                      printed it, e.g. 127.0.0.1:6379) instead of a private local Ray
  --actors N          clients training at once (Ray actors; default: as many as
                      the CPUs and the memory available now allow for the model);
                      Ray's memory monitor threshold comes from the machine and the
                      model too, unless RAY_memory_usage_threshold is set (docs/RUNNING.md,
                      'Memory')
  --verbose           show everything Flower, Ray and the clients print (default:
                      one line per round, warnings and errors)
  -h, --help          this help

Real runs (without --tiny) use pyproject.toml's defaults: lerobot/smolvla_base
and the SO-100/SO-101 datasets from the Hugging Face Hub.
USAGE
}

log() { printf 'zk0-sim: %s\n' "$*" >&2; }
die() { printf 'zk0-sim: error: %s\n' "$*" >&2; exit 1; }
# Demo tasks (zk0.tools.demo_data.TASKS): one dataset per client up to this many clients.
DEMO_TASKS=8
# Clients a --tiny round samples once there are more.
SAMPLED=10
# --sim so101's schedule and its most owners. Short rounds without FedProx's proximal term:
# 20 local steps let the owners' strips drift apart and mu 0.01 held even one owner back
# (bench/README.md, "Where the gap comes from"); 240 x 5 reached 78 % through Flower.
SIM_ROUNDS=240
SIM_LOCAL_STEPS=5
SIM_EVAL_EVERY=40
SIM_MAX_CLIENTS=8

# What one simulated client (a Ray actor serving nodes in turn) and the simulation's own process
# (ServerApp, Ray driver) hold at their peak, MB (bench/README.md): the tiny SmolVLA ('Lighter
# nodes': ~1.1 GB per actor, ~1.1 GB server); a real SmolVLA (`real_round.py`: ~7 GB per
# client, ~8 GB server).
ACTOR_MB_TINY=1000
SERVER_MB_TINY=1300
ACTOR_MB_REAL=7000
SERVER_MB_REAL=8000

# Bad input (options, run config): exit 2, as zk0's own commands do.
bad_input() { printf 'zk0-sim: error: %s\n' "$*" >&2; exit 2; }

# Lines of the run's output that nobody can act on, hidden unless --verbose:
# Flower's note on its changed default federation size (the script sets the size), Ray
# actors ending at shutdown, LeRobot loading a policy, the app copied into Flower's home.
NOISE='Since flwr 1\.32, default simulated SuperNodes|Manually terminating ClientAppActor'
NOISE+='|Reducing the number of VLM layers|Loading weights from local directory|Successfully installed zk0 to '
# The first lines of Flower's and Ray's error records about a node's failure (zk0's own
# one-line warning names it) and of the ServerApp's exit (the script ends with the reason).
NOISE+='|An exception was raised when processing a message by RayBackend|ray::ClientAppActor\.run\(\)'
NOISE+='|The actor died unexpectedly before finishing this task\.|Task was killed due to the node running low on memory'
NOISE+='|A simulation actor died; a fresh one replaces it'
NOISE+='|Traceback \(most recent call last\)|Simulation raised an exception|Exit Code: [0-9]+'
# Ray's raylet reporting a worker it killed for memory (its table of the machine's biggest
# processes follows): zk0's one line per lost node names the cause and the knob.
NOISE+='|^\(raylet\) '

# The merged run config (pyproject defaults, then each string in order) as JSON, or the
# one line naming what is wrong in the strings.
checked_run_config() {
  local errors status=0 merged
  errors=$(mktemp)
  merged=$("$VENV/bin/zk0" check-run-config --app-dir "$ROOT" --json "$@" 2>"$errors") || status=$?
  if [[ $status -ne 0 ]]; then
    local reason
    reason=$(sed -n 's/^zk0: error: //p' "$errors" | tail -n1)
    [[ -n $reason ]] || reason="checking the run config failed: $(tail -n1 "$errors")"
    rm -f "$errors"
    bad_input "$reason"
  fi
  rm -f "$errors"
  printf '%s\n' "$merged"
}

# From the merged run config: the number of datasets, then output-dir (a relative one is
# relative to the ServerApp's working directory, the repository root), then the model preset.
run_config_facts() {
  "$VENV/bin/python" -c '
import json, os, sys
config = json.load(sys.stdin)
print(len([d for d in config["datasets"].split(",") if d.strip()]))
print(os.path.join(sys.argv[1], config["output-dir"]))
print(config["model"])' "$ROOT"
}

# Demo data for K clients and the eval set; prints their URIs (see zk0 demo-data). Beyond
# one client per task, clients are shards of shared datasets: 2 short episodes each (one
# to train on, one held out) keep writing hundreds of them to a few minutes, once.
demo_data() {
  local clients=$1 errors status=0 uris
  local -a size=()
  [[ $clients -le $DEMO_TASKS ]] || size=(--episodes 2 --frames 20)
  errors=$(mktemp)
  uris=$("$VENV/bin/zk0" demo-data "$SIM_DIR/demo-data-$clients" --clients "$clients" ${size[@]+"${size[@]}"} 2>"$errors") || status=$?
  if [[ $status -ne 0 ]]; then
    local reason
    reason=$(sed -n 's/^zk0: error: //p' "$errors" | tail -n1)
    rm -f "$errors"
    [[ $status -eq 2 && -n $reason ]] && bad_input "--clients $clients: $reason"
    die "writing the demo datasets failed${reason:+: $reason}; run '$VENV/bin/zk0 demo-data $SIM_DIR/demo-data-$clients --clients $clients' to see why"
  fi
  rm -f "$errors"
  printf '%s\n' "$uris"
}

# The simulated owners' datasets (zk0 sim-data), kept once written; prints the owners' URIs
# (comma-separated) and the eval dataset's URI, one line each.
sim_data() {
  local clients=$1 uris errors status=0
  errors=$(mktemp)
  uris=$("$VENV/bin/zk0" sim-data "$SIM_DIR/sim-so101-$clients" --clients "$clients" 2>"$errors") || status=$?
  if [[ $status -ne 0 ]]; then
    local reason
    reason=$(sed -n 's/^zk0: error: //p' "$errors" | tail -n1)
    rm -f "$errors"
    die "recording the simulated demonstrations failed${reason:+: $reason}; run '$VENV/bin/zk0 sim-data $SIM_DIR/sim-so101-$clients --clients $clients' to see why"
  fi
  rm -f "$errors"
  printf '%s\n' "$uris"
}

# The --sim so101 preset: the tiny model on the simulated owners' demonstrations, with the
# server's closed-loop rollouts (50 episodes over the whole table) every few rounds.
sim_preset() {
  local clients=$1 uris=$2
  printf '%s' "model='tiny' datasets='$(sed -n 1p <<<"$uris")' eval-dataset='$(sed -n 2p <<<"$uris")'"
  printf '%s' " action-dim=4 state-dim=17 eval-env='so101_reach' eval-episodes=50 eval-env-every=$SIM_EVAL_EVERY"
  printf '%s' " num-rounds=$SIM_ROUNDS local-steps=$SIM_LOCAL_STEPS proximal-mu=0.0 keep-optimizer-state=true"
  printf '%s' " batch-size=16 lr=1e-3"
  printf '%s' " lr-schedule='constant' warmup-rounds=0 heldout-episodes=4"
  printf '%s' " eval-batches=8 checkpoint-every=$SIM_EVAL_EVERY num-workers=0 node-wait-timeout=120.0"
  printf '%s\n' " min-train-clients=$clients min-evaluate-clients=$clients min-available-clients=$clients"
}

# In-memory state: the local SuperLink's SQLite mode chokes on large model payloads.
write_flower_config() {
  write_flwr_config "$FLWR_HOME/config.toml" local-simulation ":local-in-memory:"
}

# The --tiny preset: the demo data, the tiny model, a short schedule. Up to
# $SAMPLED clients all train every round; beyond, a round samples $SAMPLED of them (and
# evaluates as many at the end). Shards hold out one episode of their two.
tiny_preset() {
  local clients=$1 uris=$2 preset
  preset="model='tiny' datasets='$(sed -n 1p <<<"$uris")' eval-dataset='$(sed -n 2p <<<"$uris")'"
  # 12 x 10 with kept AdamW moments learns best of the schedules measured at equal samples
  # (bench/README.md, bench/fl_variants.py).
  preset+=" num-rounds=12 local-steps=10 keep-optimizer-state=true batch-size=8 lr=1e-3"
  preset+=" lr-schedule='constant' warmup-rounds=0"
  preset+=" eval-batches=4 checkpoint-every=1 num-workers=0 node-wait-timeout=120.0"
  if [[ $clients -le $SAMPLED ]]; then
    preset+=" min-train-clients=$clients min-evaluate-clients=$clients min-available-clients=$clients"
  else
    local fraction
    fraction=$(awk -v k="$clients" -v s="$SAMPLED" 'BEGIN { printf "%.6f", s / k }')
    preset+=" fraction-train=$fraction fraction-evaluate=$fraction min-train-clients=$SAMPLED"
    preset+=" min-evaluate-clients=$SAMPLED min-available-clients=$clients"
  fi
  [[ $clients -le $DEMO_TASKS ]] || preset+=" heldout-episodes=1"
  printf '%s\n' "$preset"
}

# --ray-address: HOST:PORT of a Ray cluster's head that answers now (else Ray would fail
# deep inside the simulation, after the demo data and the model are prepared).
check_ray_address() {
  [[ $1 =~ ^([^:/[:space:]]+):([0-9]+)$ ]] \
    || bad_input "--ray-address must be HOST:PORT (as 'ray start --head' prints it), got '$1'"
  "$VENV/bin/python" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()' \
    "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" 2>/dev/null \
    || bad_input "--ray-address $1: no Ray cluster answers there; start one with 'ray start --head --port ${BASH_REMATCH[2]}' or check the address"
}

# Simulated clients share the machine: one CPU each, and an equal share of a GPU if present.
# Ray runs as many clients at once as the CPUs allow (its own cluster's, with --ray-address); a
# private local Ray gets as many CPUs as clients may train at once ($2; empty: Ray's own count).
federation_config() {
  local clients=$1 actors=$2 gpus=0
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    gpus=$(awk -v k="$clients" 'BEGIN { printf "%.3f", 1 / k }')
  fi
  echo "num-supernodes=$clients client-resources-num-cpus=1 client-resources-num-gpus=$gpus${actors:+ init-args-num-cpus=$actors}"
}

# From this machine and the model ($1: actor MB, $2: server MB): how many clients may train at
# once (the CPUs, or fewer when the memory available now holds fewer beside the server) and the
# machine memory share at which Ray's memory monitor kills an actor. Ray's own 0.95 would kill
# one on a laptop whose other programs fill it; so zk0 waits until only one actor's worth of
# memory is left (the most an actor may claim before the next check), between 0.80 and 0.98.
# Prints "ACTORS THRESHOLD AVAILABLE_MB".
memory_plan() {
  awk -v cpus="$(nproc)" -v actor="$1" -v server="$2" '
    /^MemTotal:/ { total = $2 / 1024 }
    /^MemAvailable:/ { available = $2 / 1024 }
    END {
      actors = int((available - server) / actor)
      if (actors > cpus) actors = cpus
      if (actors < 1) actors = 1
      threshold = 1 - actor / total
      if (threshold > 0.98) threshold = 0.98
      if (threshold < 0.80) threshold = 0.80
      printf "%d %.2f %d\n", actors, threshold, available
    }' /proc/meminfo
}

# Every process of this run (the SuperLink, the simulation, Ray's daemons and workers,
# whatever session Ray moves them to) inherits ZK0_SIM_RUN: list them by it.
run_processes() {
  local environ pid entry
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
    while IFS= read -r -d '' entry; do
      if [[ $entry == "ZK0_SIM_RUN=$ZK0_SIM_RUN" ]]; then
        echo "$pid"
        break
      fi
    done 2>/dev/null <"$environ" || true
  done
}

# At exit nothing of the run outlives the script: a few seconds to end, then killed.
stop_run_processes() {
  local signal
  local -a pids
  for signal in TERM TERM TERM TERM KILL KILL; do
    mapfile -t pids < <(run_processes)
    ((${#pids[@]})) || return 0
    kill -s "$signal" "${pids[@]}" 2>/dev/null || true
    sleep 1
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

# The console: everything with --verbose. Otherwise the noise lines above are dropped, and
# so are the lines that continue an ERROR record or a dropped one (tracebacks): a node's
# failure is one WARNING line from zk0, and the script ends with the reason. The full
# output stays in the run log.
console() {
  if [[ $1 -eq 1 ]]; then
    cat
  else
    NOISE=$NOISE awk '
      { plain = $0; gsub(/\033\[[0-9;]*m/, "", plain) }
      plain ~ /^(DEBUG|INFO|WARNING|ERROR|CRITICAL) *:/ {
        noise = plain ~ ENVIRON["NOISE"]
        hide_rest = noise || plain ~ /^(ERROR|CRITICAL)/
        if (!noise) { print; fflush() }
        next
      }
      hide_rest || plain ~ ENVIRON["NOISE"] { next }
      { print; fflush() }'
  fi
}

# One line per node whose dataset failed, in the words of `zk0 check-dataset`, from zk0's
# per-node warnings in the run log (each names one node and its reason).
dataset_problems() {
  sed -e 's/\x1b\[[0-9;]*m//g' "$1" \
    | sed -n -E 's/.*Round [0-9]+: node [^ ]+( failed)?: DatasetError: (dataset .*)$/\2/p; s/.*Round 0: node [0-9]+:([^ ]+): refused: (.*)$/dataset \1: \2/p' \
    | awk '!seen[$0]++'
}

main() {
  local tiny=0 sim="" verbose=0 rounds="" clients="" output_dir="$ROOT/outputs" ray_address="" actors=""
  local -a user_configs=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --tiny) tiny=1 ;;
      --sim) [[ $# -ge 2 ]] || bad_input "--sim needs a simulator: so101"; sim=$2; shift ;;
      --verbose) verbose=1 ;;
      --rounds) [[ $# -ge 2 ]] || bad_input "--rounds needs a number"; rounds=$2; shift ;;
      --clients) [[ $# -ge 2 ]] || bad_input "--clients needs a number"; clients=$2; shift ;;
      --output-dir) [[ $# -ge 2 && -n $2 ]] || bad_input "--output-dir needs a directory"; output_dir=$2; shift ;;
      --run-config) [[ $# -ge 2 ]] || bad_input "--run-config needs \"key=value ...\""; user_configs+=("$2"); shift ;;
      --ray-address) [[ $# -ge 2 && -n $2 ]] || bad_input "--ray-address needs HOST:PORT"; ray_address=$2; shift ;;
      --actors) [[ $# -ge 2 ]] || bad_input "--actors needs a number"; actors=$2; shift ;;
      -h | --help) usage; return 0 ;;
      *) bad_input "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  [[ -z $rounds || $rounds =~ ^[1-9][0-9]*$ ]] || bad_input "--rounds must be a positive integer, got '$rounds'"
  [[ -z $clients || $clients =~ ^[1-9][0-9]*$ ]] || bad_input "--clients must be a positive integer, got '$clients'"
  [[ -z $actors || $actors =~ ^[1-9][0-9]*$ ]] || bad_input "--actors must be a positive integer, got '$actors'"
  [[ -z $actors || -z $ray_address ]] || bad_input "--actors is for the private local Ray; a cluster's CPUs set how many run at once"
  [[ -z $sim || $sim == so101 ]] || bad_input "--sim must be so101 (a simulated SO-101 federation), got '$sim'"
  [[ -z $sim || $tiny -eq 0 ]] || bad_input "--tiny and --sim are two presets; choose one"
  [[ -z $sim || -z $clients || $clients -le $SIM_MAX_CLIENTS ]] \
    || bad_input "--sim so101 takes at most $SIM_MAX_CLIENTS clients, got $clients"
  [[ $output_dir == /* ]] || output_dir="$PWD/$output_dir"
  [[ $output_dir != *\'* ]] || bad_input "--output-dir must not contain a single quote, got '$output_dir'"

  # Only what the simulation needs: tmux, nginx, openssl and ssh-keygen are zk0bot's.
  "$ROOT/scripts/setup-env.sh" --simulation
  [[ -z $ray_address ]] || check_ray_address "$ray_address"

  # Each layer travels in its own --run-config (a key twice in ONE string is an error):
  # the --tiny preset, then --output-dir/--rounds, then the user's strings. flwr applies
  # them in order, so a later layer wins: every key is the user's to set.
  local -a run_configs=()
  local shorthands="output-dir='$output_dir'"
  [[ -n $rounds ]] && shorthands+=" num-rounds=$rounds"
  # The user's keys are checked before the demo data and the model are prepared (tens of
  # seconds); the datasets the preset adds are checked with them below.
  checked_run_config "$shorthands" ${user_configs[@]+"${user_configs[@]}"} >/dev/null
  if [[ $tiny -eq 1 ]]; then
    clients=${clients:-2}
    local uris
    local data="$clients synthetic SO-100 datasets"
    [[ $clients -le $DEMO_TASKS ]] || data="synthetic SO-100 data for $clients clients ($DEMO_TASKS shared datasets)"
    log "preparing $data and the tiny SmolVLA (cached after the first run)"
    uris=$(demo_data "$clients")
    "$VENV/bin/zk0" prepare-tiny >/dev/null 2>&1 || die "building the tiny model failed; run '$VENV/bin/zk0 prepare-tiny'"
    run_configs+=("$(tiny_preset "$clients" "$uris")")
  elif [[ -n $sim ]]; then
    clients=${clients:-2}
    local uris
    log "recording $clients simulated SO-101 owners' demonstrations and building the tiny SmolVLA (cached after the first run)"
    uris=$(sim_data "$clients")
    "$VENV/bin/zk0" prepare-tiny >/dev/null 2>&1 || die "building the tiny model failed; run '$VENV/bin/zk0 prepare-tiny'"
    run_configs+=("$(sim_preset "$clients" "$uris")")
  fi
  run_configs+=("$shorthands" ${user_configs[@]+"${user_configs[@]}"})

  local merged facts datasets outputs model
  merged=$(checked_run_config "${run_configs[@]}")
  facts=$(run_config_facts <<<"$merged")
  datasets=$(sed -n 1p <<<"$facts")
  outputs=$(sed -n 2p <<<"$facts")
  model=$(sed -n 3p <<<"$facts")
  clients=${clients:-$datasets}
  [[ $clients -le $datasets ]] \
    || bad_input "--clients $clients but run-config 'datasets' lists $datasets; give at most $datasets clients or more datasets"

  export FLWR_HOME="$SIM_DIR/flwr-home-$$"
  local ports
  ports=$("$VENV/bin/python" -m zk0.ops.bot free-port --count 2 2>&1) || die "$ports"
  read -r FLWR_LOCAL_SUPERLINK_HTTP_API_PORT FLWR_LOCAL_CONTROL_API_PORT <<<"$ports"
  export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT FLWR_LOCAL_CONTROL_API_PORT
  # The app runs in this environment: never let the SuperLink install packages per run.
  export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
  export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 RAY_DEDUP_LOGS=0 PYTHONUNBUFFERED=1
  if [[ $verbose -eq 0 ]]; then
    # Quiet: Flower's own records from WARNING up (zk0's round lines stay, see zk0/util/logs.py),
    # and no per-client progress bars: under Ray every refresh of one becomes a line.
    export FLWR_LOG_LEVEL=WARNING TQDM_DISABLE=1
  fi
  # Ray's own default would attach to the last cluster `ray start` left on this machine:
  # the clients run on the cluster named by --ray-address, or on a private local Ray.
  export RAY_ADDRESS=${ray_address:-local}
  if [[ -z $ray_address ]]; then
    # A cluster's raylets started with their own settings; a private Ray starts with these.
    local plan planned threshold available
    if [[ $model == tiny ]]; then
      plan=$(memory_plan "$ACTOR_MB_TINY" "$SERVER_MB_TINY")
    else
      plan=$(memory_plan "$ACTOR_MB_REAL" "$SERVER_MB_REAL")
    fi
    read -r planned threshold available <<<"$plan"
    if [[ -z $actors && $planned -lt $(nproc) && $planned -lt $clients ]]; then
      log "$planned client(s) train at once, not $(nproc) (one per CPU): $available MB of memory available now; --actors N to choose"
    fi
    actors=${actors:-$planned}
    export RAY_memory_usage_threshold=${RAY_memory_usage_threshold:-$threshold}
  fi
  # GPU shares are set explicitly above; keep Ray from rewriting CUDA_VISIBLE_DEVICES otherwise.
  export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0
  export PATH="$VENV/bin:$PATH"
  write_flower_config
  RUN_LOG="$SIM_DIR/flwr-run-$$.log"
  ZK0_SIM_RUN="$$-$(date +%s%N)"
  export ZK0_SIM_RUN
  # The app's files alone: `flwr run` walks every file of the folder it packs (.venv included).
  APP_COPY=$("$VENV/bin/python" -m zk0.ops.fab "$SIM_DIR" 2>&1) || die "${APP_COPY#zk0: error: }"
  trap 'stop_run_processes; rm -rf "$FLWR_HOME" "$RUN_LOG" "$APP_COPY"' EXIT
  # flwr run would give the local SuperLink 15 s to start: too few on a busy machine.
  local superlink
  superlink=$("$VENV/bin/python" -m zk0.ops.local_superlink 2>&1) || die "${superlink##*zk0: error: }"

  log "starting the simulation: $clients clients${ray_address:+ on the Ray cluster at $ray_address}, outputs under $outputs"
  local run_id status reason arg
  local -a run_args=()
  for arg in "${run_configs[@]}"; do
    run_args+=(--run-config "$arg")
  done
  (cd "$ROOT" && flwr run "$APP_COPY" local-simulation --stream \
    --federation-config "$(federation_config "$clients" "$actors")" "${run_args[@]}") 2>&1 \
    | tee "$RUN_LOG" | console "$verbose" || true
  run_id=$(grep -oE 'run [0-9]+' "$RUN_LOG" | head -n1 | cut -d' ' -f2 || true)
  reason=$(grep -oE 'zk0: error: .*' "$RUN_LOG" | tail -n1 | sed 's/^zk0: error: //' || true)
  # Not an error zk0 foresaw: the last exception line of a traceback names it.
  [[ -n $reason ]] || reason=$(sed -e 's/\x1b\[[0-9;]*m//g' "$RUN_LOG" \
    | grep -E '^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Exit|Interrupt)(: .*)?$' | tail -n1 || true)
  [[ -n $run_id ]] || die "flwr run did not start a run: $(boxed_error "$RUN_LOG")"
  status=$(run_status "$run_id")
  if [[ $status != "finished:completed" ]]; then
    local kept="$SIM_DIR/run-$run_id.log" problems problem
    cp "$RUN_LOG" "$kept"
    problems=$(dataset_problems "$RUN_LOG")
    if [[ -n $problems ]]; then
      log "run $run_id ended with status '$status': datasets failed (full output: $kept)"
      while IFS= read -r problem; do
        printf 'zk0-sim: error: %s\n' "$problem" >&2
      done <<<"$problems"
      exit 1
    fi
    die "run $run_id ended with status '$status': ${reason:-see the log above} (full output: $kept)"
  fi
  log "run $run_id finished: $status"
}

main "$@"
