"""Rounds that survive churn: a round left with too few usable replies runs again with a fresh
sample (run-config round-retries), and only when its retries are spent does the run fail, in
one line; a retried round ends with the model a round that succeeded at once would have made, and
a resumed run with the uninterrupted run's.
Through the strategy's real hooks and server_app's round loop, with tests/unit/test_aggregation.py's
in-process grid: scripted Flower ClientApps for the loop, zk0's own ServerApp and ClientApp for
the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, MessageType, RecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from safetensors.numpy import load_file

from test_aggregation import LocalGrid, array_record, pyproject_run_config, scripted_app, weights
from zk0 import server_app
from zk0.client_app import app as zk0_client_app
from zk0.config import RunConfig
from zk0.node import memory as node_memory
from zk0.run.directory import STATE_WEIGHTS, RunDir
from zk0.server import sampling
from zk0.server.round_summary import round_row, summary_line
from zk0.server.strategy import FederationError, make_strategy
from zk0.wire.protocol import Attempts, pack


class Stop(Exception):
    """The server process dies (a crash, a SIGKILL, the machine going down)."""


class ChurnGrid(LocalGrid):
    """LocalGrid where each (node, round) in `lose` loses that node's first training message of
    that round (an actor killed mid-round and restarted, a machine that slept): the SuperLink's
    error reply, and the node never ran it. At a (node, round) in `stop` the server stops."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lose: set[tuple[int, int]] = set()
        self.stop: set[tuple[int, int]] = set()

    def _deliver(self, message):
        train = message.metadata.message_type == MessageType.TRAIN
        at = (message.metadata.dst_node_id, int(message.content["config"]["server-round"]) if train else 0)
        if train and at in self.stop:
            raise Stop(at)
        if train and at in self.lose:
            self.lose.discard(at)
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
    first, second = (sampling.sample(nodes, 0.3, 3, strategy.config.seed, 1, attempt) for attempt in (0, 1))
    assert first != second  # the seeds' draws (fixed: never flaky)
    grid.lose = {(first[0], 1)}
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
    one_reply = pack(weights(0.0)).count_bytes()  # what each scripted node sends
    assert record.bytes_up == {node: one_reply * ((node in first[1:]) + (node in second))
                               for node in set(first[1:]) | set(second)}  # what every attempt moved


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



# --- the node's side: a training counts once its update was used --------------------------------

def trained(server_round: int, attempts: Attempts, attempt: int, value: float) -> dict:
    """One training as zk0's ClientApp does it, in a fresh process (the memory read from disk):
    settle, move the residual, save. The residual it started from."""
    node_memory._memory.clear()
    memory = node_memory.NodeMemory.load("run", "node")
    memory.settle(server_round, attempts)
    start = memory.feedback.residual
    memory.feedback.compress({"w": np.full(5, value, np.float32)}, "q2")
    memory.trained = (server_round, attempts.start, attempt)
    memory.save()
    return start


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_node_takes_back_a_training_whose_update_the_server_did_not_use(tmp_path, monkeypatch):
    """Its residual (and kept moments) move on only when a later message says the attempt it
    trained in made its round's model; otherwise it trains from where that attempt started."""
    monkeypatch.setenv("ZK0_CACHE_DIR", str(tmp_path))
    assert trained(1, Attempts(), 0, 0.3) == {}
    after_1 = node_memory.NodeMemory.load("run", "node").feedback.residual
    assert same(trained(2, Attempts(), 0, 0.7), after_1)  # round 1 was made by attempt 0: it stands
    assert same(trained(2, Attempts(), 1, 0.7), after_1)  # round 2 runs again: attempt 0 taken back
    after_2 = node_memory.NodeMemory.load("run", "node").feedback.residual
    assert same(trained(3, Attempts(retried={2: 1}), 0, 0.9), after_2)  # attempt 1 made round 2
    # Round 3 made by attempt 1 without this node: its attempt-0 training is taken back.
    assert same(trained(4, Attempts(retried={2: 1, 3: 1}), 0, 0.1), after_2)
    after_4 = node_memory.NodeMemory.load("run", "node").feedback.residual
    # The run stopped mid-round 5 and resumed after round 4: round 5 runs anew (start 1, attempt 0).
    assert same(trained(5, Attempts(resumed_after=(4,)), 0, 0.2), after_4)
    # Round 5 trained in start 1; round 6 says start 1's attempt 0 made it: it stands.
    after_5 = node_memory.NodeMemory.load("run", "node").feedback.residual
    assert same(trained(6, Attempts(resumed_after=(4,)), 0, 0.4), after_5)
    after_6 = node_memory.NodeMemory.load("run", "node").feedback.residual
    assert same(trained(7, Attempts(resumed_after=(4,)), 0, 0.5), after_6)
    # The run stopped after this node trained round 7 and resumed after round 6; round 7 was then
    # made without this node: its start-1 training is taken back.
    assert same(trained(8, Attempts(resumed_after=(4, 6)), 0, 0.6), after_6)


def test_a_node_is_its_node_config_whatever_its_threads():
    assert node_memory.node_key({"dataset-uri": "local:/a", "threads": 2}) == node_memory.node_key(
        {"dataset-uri": "local:/a"})
    assert node_memory.node_key({"partition-id": 0, "num-partitions": 2}) != node_memory.node_key(
        {"partition-id": 1, "num-partitions": 2})


# --- retried and resumed runs, with zk0's ServerApp and ClientApp in this process ----------------

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Server and clients share this process: on a busy 2-core machine torch's threads spin
    against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def federate(out: Path, demo_roots, nodes: list[int], lose=(), stop=(), run_id: int = 1, **overrides) -> RunDir:
    """zk0's whole server (`zk0.server_app.main`) over two tiny clients on `nodes` (the node ids
    Flower gave them), each (node, round) in `lose` losing that node's first message of that
    round, the server stopping at the one in `stop`; the run directory. The run's defaults
    otherwise: q3z updates with error feedback, here with kept AdamW moments, so a node carries
    state from round to round."""
    config = pyproject_run_config(
        model="tiny", datasets=",".join(f"local:{root}" for root in demo_roots[:-1]),
        eval_dataset=f"local:{demo_roots[-1]}", num_rounds=2, local_steps=2, batch_size=2,
        keep_optimizer_state=True, eval_batches=1, num_workers=0, device="cpu", fraction_evaluate=0.0,
        node_wait_timeout=5.0, output_dir=str(out), update_codec="q3z",
    ) | {key.replace("_", "-"): value for key, value in overrides.items()}
    grid = ChurnGrid(zk0_client_app, {node: {"dataset-uri": f"local:{root}"}
                                      for node, root in zip(nodes, demo_roots[:-1])}, config)
    grid.lose, grid.stop = set(lose), set(stop)
    server_app.main(grid, Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    return RunDir(next(path for path in out.iterdir() if RunDir(path).is_run()))


def final_weights(run: RunDir) -> dict[str, bytes]:
    return {name: value.tobytes() for name, value in load_file(run.state / STATE_WEIGHTS).items()}


def comparable(row: dict) -> dict:
    """What a round computed: its metrics, per client by dataset; not timings, bytes or node ids."""
    def by_dataset(per_node: dict) -> dict:
        return {name.partition(" claiming ")[2]: {k: v for k, v in value.items() if "second" not in k}
                for name, value in per_node.items()}

    return {"eval": (row["eval/loss"], row["eval/action_mse"]), "train/loss": row["train/loss"],
            "clients": by_dataset(row["clients"]), "received_eval": by_dataset(row["received_eval"])}


def server_step(aggregation: str) -> dict:
    return {"aggregation": aggregation, **({"server_lr": 1e-3} if aggregation == "fedadam" else {})}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_roots):
    """The run without churn or stops, per aggregation (made once)."""
    runs: dict[str, RunDir] = {}

    def run(aggregation: str = "fedprox") -> RunDir:
        if aggregation not in runs:
            runs[aggregation] = federate(tmp_path_factory.mktemp(aggregation), demo_roots, [8201, 8202],
                                         **server_step(aggregation))
        return runs[aggregation]

    return run


def test_a_retried_round_gives_the_model_of_a_round_that_succeeded_at_once(tmp_path, demo_roots, uninterrupted):
    """Round 2's first attempt loses node 8301 after node 8302 trained (its residual and
    moments moved on); the retry's replies are what a first attempt's would have been, so the
    run ends with the uninterrupted run's model, bit for bit."""
    churned = federate(tmp_path, demo_roots, [8301, 8302], lose={(8301, 2)})
    rows = churned.read_metrics()
    assert [len(row["retries"]) for row in rows] == [0, 0, 1]
    assert [comparable(row) for row in rows] == [comparable(row) for row in uninterrupted().read_metrics()]
    assert final_weights(churned) == final_weights(uninterrupted())


@pytest.mark.parametrize("aggregation", ["fedprox", "fedavgm", "fedadam"])
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, demo_roots, uninterrupted, aggregation):
    """The server stops in round 2 after node 8401 trained it (its residual and moments moved on).
    Resumed as a simulation resumes, with another Flower run id and other node ids, the run ends
    with the uninterrupted run's metrics and model, bit for bit (the server optimizer's state
    included), and participation.json counts every round."""
    with pytest.raises(Stop):
        federate(tmp_path, demo_roots, [8401, 8402], stop={(8402, 2)}, **server_step(aggregation))
    [stopped] = [RunDir(path) for path in tmp_path.iterdir() if RunDir(path).is_run()]
    assert [row["round"] for row in stopped.read_metrics()] == [0, 1]
    resumed = federate(tmp_path, demo_roots, [8501, 8502], run_id=2, resume_from=str(stopped.path),
                       **server_step(aggregation))
    assert resumed == stopped
    expected = uninterrupted(aggregation)
    assert [comparable(row) for row in resumed.read_metrics()] == [comparable(row) for row in expected.read_metrics()]
    assert final_weights(resumed) == final_weights(expected)
    participation = json.loads(resumed.participation.read_text())
    assert {what: sum(row[what] for row in participation.values()) for what in ("sampled", "accepted")} == {
        "sampled": 4, "accepted": 4}
