"""zk0 ServerApp: FedProx over SmolVLA's trainable parameters, held-out evaluation,
LeRobot checkpoints and per-round metrics in one run directory."""

from __future__ import annotations

import time
from logging import ERROR, INFO

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from zk0.config import ConfigError, RunConfig
from zk0.data import DatasetError
from zk0.global_model import GlobalModel
from zk0.model import ModelError
from zk0.round_summary import round_row, summary_line
from zk0.run_outputs import RunOutputs
from zk0.strategy import FederationError, ZK0FedProx

# Errors with a one-line, operator-facing message: logged as such before the run fails.
OPERATOR_ERRORS = (ConfigError, DatasetError, ModelError, FederationError)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        federate(grid, context)
    except OPERATOR_ERRORS as err:
        log(ERROR, "zk0: error: %s", err)
        raise


def federate(grid: Grid, context: Context) -> None:
    config = RunConfig.from_run_config(context.run_config)
    model = GlobalModel(config)
    outputs = RunOutputs(config, dict(context.run_config), run_id=context.run_id)
    total, trainable = model.num_parameters
    log(INFO, "zk0 run directory: %s", outputs.run_dir)
    log(INFO, "Model %s: %d parameters, %d trainable (sent each round)", config.model, total, trainable)
    strategy = ZK0FedProx(config)

    def end_of_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Called by Flower at round 0 and after each round with the new global weights."""
        model.load(arrays)
        started = time.perf_counter()
        result = model.evaluate() if config.evaluates_after(server_round) else None
        row = round_row(server_round, strategy.rounds.get(server_round), result, time.perf_counter() - started)
        eval_metrics = {k: v for k, v in row.items() if k.startswith("eval/") and v is not None}
        outputs.record(row)
        if config.checkpoints_after(server_round):
            outputs.checkpoint(server_round, model.policy, model.preprocessor, model.postprocessor, eval_metrics)
        outputs.plot()
        log(INFO, summary_line(row, config.num_rounds))
        return MetricRecord(eval_metrics) if result else None

    try:
        strategy.start(
            grid=grid,
            initial_arrays=model.arrays(),
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            num_rounds=config.num_rounds,
            timeout=config.round_timeout,
            evaluate_fn=end_of_round,
        )
    finally:
        outputs.finish()
    log(INFO, "zk0 run finished; outputs in %s", outputs.run_dir)
