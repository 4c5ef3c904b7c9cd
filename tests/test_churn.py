"""Rounds that survive churn: a round left with too few usable replies runs again with a fresh
sample (run-config round-retries), and only when its retries are spent does the run fail, in
one line. Through the strategy's real hooks and server_app's round loop, with
tests/test_aggregation.py's in-process grid and Flower ClientApps.
"""

from __future__ import annotations

import logging

import pytest
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from test_aggregation import LocalGrid, array_record, pyproject_run_config, scripted_app
from zk0 import server_app
from zk0.config import RunConfig
from zk0.server.round_summary import round_row, summary_line
from zk0.server.strategy import FederationError, make_strategy


class ChurnGrid(LocalGrid):
    """LocalGrid whose nodes in `down_once` are lost for their next message only (an actor
    killed mid-round and restarted, a machine that slept): the SuperLink's error reply."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.down_once: set[int] = set()

    def _deliver(self, message):
        node = message.metadata.dst_node_id
        if node in self.down_once:
            self.down_once.discard(node)
            return create_message_error_unavailable_res_message(message.metadata, "node_unavail")
        return super()._deliver(message)


def churn(nodes: int, answers: dict | None = None, **overrides):
    config = RunConfig.from_run_config(pyproject_run_config(node_wait_timeout=1.0, min_available_clients=2,
                                                            **overrides))
    answers = answers or {node: (float(node), 10, 1.0) for node in range(1, nodes + 1)}
    grid = ChurnGrid(scripted_app(answers), {node: {} for node in answers}, pyproject_run_config())
    return make_strategy(config), grid


def test_a_round_short_of_usable_replies_runs_again_with_a_fresh_sample(caplog):
    """3 of 10 nodes sampled, all 3 needed; one is lost: the round runs again with another
    sample, says why in one line, and its metrics row describes the attempt that made the model."""
    strategy, grid = churn(10, fraction_train=0.3, min_train_clients=3)
    nodes = list(range(1, 11))
    first, second = (strategy._sample(nodes, 0.3, 3, 1, attempt) for attempt in (0, 1))
    assert first != second  # the seeds' draws (fixed: never flaky)
    grid.down_once = {first[0]}
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = server_app._train(grid, strategy, 1, array_record(0.0))
    assert arrays is not None
    record = strategy.rounds[1]
    assert record.sampled == second and sorted(record.clients) == second and record.failures == []
    reason = (f"only 2 usable training result(s), min-train-clients is 3; failed: node {first[0]}: Error: Node "
              f"Unavailable — The destination node failed to report a heartbeat within 2 × its expected interval.")
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        f"Round 1: {reason}; running it again with a fresh sample (retry 1 of 2, run-config round-retries)"]
    assert strategy.retried == {1: 1}
    row = round_row(1, record, None, 0.0, started=record.started)
    assert row["retries"] == [reason] and row["sampled"] == 3
    assert "nodes 3 sampled: 3 ok, 0 rejected, 0 failed, 0 late (attempt 2) |" in summary_line(row, 1)
    assert strategy.roster.participation[first[0]]["failed"] == 1


def test_a_round_that_stays_short_fails_the_run_in_one_line_once_its_retries_are_spent(caplog):
    answers = {1: (1.0, 10, 1.0), 2: "CUDA out of memory"}
    strategy, grid = churn(2, answers, min_train_clients=2)
    with caplog.at_level(logging.WARNING, logger="flwr"), pytest.raises(FederationError) as failed:
        server_app._train(grid, strategy, 1, array_record(0.0))
    reason = "only 1 usable training result(s), min-train-clients is 2; failed: node 2: RuntimeError: CUDA out of memory"
    assert str(failed.value) == f"round 1: {reason} (after 2 retries, run-config round-retries)"
    assert type(failed.value) is FederationError and "\n" not in str(failed.value)
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        f"Round 1: {reason}; running it again with a fresh sample (retry {n} of 2, run-config round-retries)"
        for n in (1, 2)]
    assert strategy.roster.participation[2]["sampled"] == 3


def test_no_retries_fail_the_run_at_the_first_short_round():
    strategy, grid = churn(2, {1: (1.0, 10, 1.0), 2: "lost"}, min_train_clients=2, round_retries=0)
    with pytest.raises(FederationError, match=r"failed: node 2: RuntimeError: lost$"):
        server_app._train(grid, strategy, 1, array_record(0.0))
