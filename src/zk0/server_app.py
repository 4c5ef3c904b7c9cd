"""zk0 ServerApp: FedProx (or a robust aggregator) over SmolVLA's trainable parameters,
federated normalization statistics, held-out evaluation, LeRobot checkpoints and
per-round metrics in one run directory, and a saved run state after every round so
an interrupted run can resume (run-config `resume-from`)."""

from __future__ import annotations

import random
import time
from logging import ERROR, INFO, WARNING

from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from zk0.data import stats
from zk0.run import state as run_state
from zk0.server import inbox, resume, sim_actors
from zk0.data.cameras import cameras
from zk0.config import ConfigError, RunConfig
from zk0.data.dataset import DatasetError
from zk0.server.global_model import GlobalModel
from zk0.util.logs import keep_zk0_lines, one_line_errors, run_log
from zk0.policy.model import ModelError
from zk0.server.round_summary import round_row, summary_line
from zk0.run.outputs import RunOutputs
from zk0.server.strategy import FederationError, RoundFellShort, ZK0Strategy, make_strategy

# Errors with a one-line, operator-facing message: logged as such before the run fails.
OPERATOR_ERRORS = (ConfigError, DatasetError, ModelError, FederationError)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    keep_zk0_lines()
    one_line_errors()
    sim_actors.replace_dead_actors()
    try:
        federate(grid, context)
    except OPERATOR_ERRORS as err:
        if not getattr(err, "zk0_logged", False):
            log(ERROR, "zk0: error: %s", err)
            err.zk0_logged = True  # Flower then logs it without its traceback (zk0.util.logs)
        raise


def _resume_state(config: RunConfig) -> run_state.RunState | None:
    if not config.resume_from:
        return None
    try:
        state = run_state.load(RunOutputs.resume_dir(config))
    except FileNotFoundError as err:
        raise ConfigError(f"run-config key 'resume-from': {err}") from None
    if state.round >= config.num_rounds:
        raise ConfigError(
            f"run-config key 'resume-from': that run already completed round {state.round} of num-rounds "
            f"{config.num_rounds}; raise num-rounds to train further"
        )
    return state


def federate(grid: Grid, context: Context) -> None:
    config = RunConfig.from_run_config(context.run_config)
    resumed = _resume_state(config)
    model = GlobalModel(config)
    outputs = RunOutputs(config, dict(context.run_config), run_id=context.run_id,
                         resume_round=resumed.round if resumed else None)
    with run_log(outputs.paths.server_log, outputs.paths.debug_log):
        try:
            _federate(grid, context, config, resumed, model, outputs)
        except OPERATOR_ERRORS as err:
            log(ERROR, "zk0: error: %s", err)  # into server.log too
            err.zk0_logged = True
            raise


def _federate(grid: Grid, context: Context, config: RunConfig, resumed, model: GlobalModel, outputs: RunOutputs) -> None:
    total, trainable = model.num_parameters
    log(INFO, "zk0 run directory: %s", outputs.run_dir)
    lora = config.lora
    what = f"LoRA rank {lora.rank}, alpha {lora.alpha:g}, {lora.aggregation}" if lora else "action expert"
    log(INFO, "Model %s: %d parameters, %d trainable (%s; codec %s)", config.model, total, trainable, what,
        config.update_codec)
    strategy = make_strategy(config)
    strategy.cameras = cameras(model.policy.config.input_features)
    strategy.trainable_bytes = 4 * trainable
    strategy.spool = outputs.paths.spool
    strategy.run_dir = str(outputs.run_dir)
    done = 0
    initial = model.weights()
    if resumed:
        done = resumed.round
        initial = {name: resumed.global_weights[name] for name in initial}  # in the model's order, as before
        model.load(initial)
        run_state.restore_rng(resumed)
        resume.restore(strategy, resumed.strategy, resumed.strategy_arrays, done, list(initial))
        federation_stats = run_state.stats_from_json(resumed.federation_stats)
        log(INFO, "Resuming after round %d of %d", done, config.num_rounds)
    else:
        federation_stats = strategy.collect_statistics(grid, stats.feature_shapes(model.policy.config)) if config.normalization == "federated" else None
    if federation_stats:
        model.use_federation_stats(federation_stats)
        strategy.federation_stats = federation_stats
    strategy.round_offset = done

    def end_of_round(step: int, arrays: ArrayRecord) -> None:
        """Called before the first round (step 0) and after each one."""
        server_round = step + done
        if step == 0 and resumed:
            return  # round `done` was evaluated and recorded before the interruption
        started = strategy.rounds[server_round].started if server_round in strategy.rounds else time.perf_counter()
        model.load({name: array.numpy() for name, array in arrays.items()})
        eval_started = time.perf_counter()
        result = model.evaluate() if config.evaluates_after(server_round) else None
        eval_seconds = time.perf_counter() - eval_started
        rollout = model.roll_out() if config.rolls_out_after(server_round) else None
        row = round_row(server_round, strategy.rounds.get(server_round), result, eval_seconds, started=started,
                        rollout=rollout)
        eval_metrics = {k: v for k, v in row.items() if k.startswith("eval/") and v is not None}
        outputs.record(row)
        if config.checkpoints_after(server_round):
            outputs.checkpoint(server_round, model.policy, model.preprocessor, model.postprocessor, eval_metrics)
        outputs.plot()
        values, arrays = resume.saved(strategy)
        run_state.save(outputs.run_dir, run_state.RunState(
            round=server_round, global_weights=model.weights(), best_mse=outputs.best_mse_or_none,
            federation_stats=run_state.stats_to_json(federation_stats), python_rng=random.getstate(),
            strategy=values, strategy_arrays=arrays,
        ))
        log(INFO, summary_line(row, config.num_rounds))

    try:
        _rounds(grid, strategy, ArrayRecord({name: Array(value) for name, value in initial.items()}),
                config.num_rounds - done, end_of_round)
    finally:
        outputs.finish()
        outputs.write_participation(strategy.roster.participation_table())
    log(INFO, "zk0 run finished; outputs in %s", outputs.run_dir)


def _rounds(grid: Grid, strategy: ZK0Strategy, arrays: ArrayRecord, num_rounds: int, end_of_round) -> None:
    """Flower's `Strategy.start`, with each round's replies taken as they arrive (zk0.server.inbox):
    the strategy folds each update in and drops it; a round closes at its deadline
    (round-timeout) or once its quorum of usable replies is in (train-quorum), whichever is first."""
    strategy.summary()
    end_of_round(0, arrays)
    for current in range(1, num_rounds + 1):
        aggregated, _ = _train(grid, strategy, current, arrays)
        if aggregated is not None:
            arrays = aggregated
        ids = inbox.push(grid, strategy.configure_evaluate(current, arrays, ConfigRecord(), grid))
        if ids:
            deadline = time.monotonic() + strategy.config.round_timeout
            strategy.aggregate_evaluate(current, inbox.replies(grid, ids, deadline))
        end_of_round(current, arrays)


def _train(grid: Grid, strategy: ZK0Strategy, current: int, arrays: ArrayRecord):
    """A round's training; an attempt left with too few usable replies runs again with a fresh
    sample while run-config round-retries allow (the strategy decides, and says why)."""
    while True:
        ids = inbox.push(grid, strategy.configure_train(current, arrays, ConfigRecord(), grid))
        deadline = time.monotonic() + strategy.config.round_timeout
        try:
            return strategy.aggregate_train(current, inbox.replies(grid, ids, deadline,
                                                                   lambda: strategy.has_quorum(current)))
        except RoundFellShort as short:
            log(WARNING, "%s", short)
