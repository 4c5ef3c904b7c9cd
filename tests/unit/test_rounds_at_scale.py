"""Rounds with many nodes: messages pushed one at a time, replies pulled a few at a time as
they arrive, a round that closes at its quorum or deadline, late replies dropped and counted
per node, busy nodes not sampled again, and a robust aggregation refused when its updates
would not fit in memory. Through the strategy's real hooks and server_app's round loop
(zk0.server.inbox), with tests/unit/test_aggregation.py's in-process grid."""

from __future__ import annotations

import time
import tracemalloc
from uuid import uuid4

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from test_aggregation import LocalGrid, array_record, pyproject_run_config, scripted_app
from zk0.server import inbox
from zk0.config import RunConfig
from zk0.server.strategy import FederationError, make_strategy
from zk0.wire.protocol import pack


class CountingGrid(LocalGrid):
    """LocalGrid that records how many messages each push and each pull carried."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pushed: list[int] = []
        self.pulled: list[int] = []

    def push_messages(self, messages):
        messages = list(messages)
        self.pushed.append(len(messages))
        return super().push_messages(messages)

    def pull_messages(self, message_ids):
        replies = super().pull_messages(message_ids)
        self.pulled.append(len(replies))
        return replies


class ArrivingGrid(LocalGrid):
    """LocalGrid whose replies are made when pulled, as a real grid deserializes each reply as it
    arrives: what the server keeps of a reply shows in what it allocates."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[str, Message] = {}

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex
            self.pending[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        return [self._deliver(self.pending.pop(message_id)) for message_id in message_ids
                if message_id in self.pending]


def federation(nodes: int, **overrides):
    config = RunConfig.from_run_config(pyproject_run_config(node_wait_timeout=1.0, **overrides))
    answers = {node: (float(node), 10, 1.0) for node in range(1, nodes + 1)}
    grid = CountingGrid(scripted_app(answers), {node: {} for node in answers}, pyproject_run_config())
    return make_strategy(config), grid


def run_round(strategy, grid, server_round: int = 1, timeout: float = 60.0):
    ids = inbox.push(grid, strategy.configure_train(server_round, array_record(0.0), ConfigRecord(), grid))
    replies = inbox.replies(grid, ids, time.monotonic() + timeout, lambda: strategy.has_quorum(server_round))
    return strategy.aggregate_train(server_round, replies)


def test_messages_go_one_at_a_time_and_replies_come_a_few_at_a_time():
    strategy, grid = federation(30, min_train_clients=2, min_available_clients=2)
    run_round(strategy, grid)
    assert grid.pushed == [1] * 30
    assert max(grid.pulled) <= inbox.PULL_AT_ONCE and sum(grid.pulled) == 30
    assert len(strategy.rounds[1].clients) == 30


def test_a_round_closes_at_its_quorum_and_the_rest_are_late_then_free_again():
    """8 sampled, train-quorum 0.5: the round closes after 4 replies; the other 4 are late,
    busy (not sampled) until their replies are collected, which are dropped and counted."""
    strategy, grid = federation(8, train_quorum=0.5, min_train_clients=2, min_available_clients=2)
    run_round(strategy, grid)
    record = strategy.rounds[1]
    assert len(record.sampled) == 8 and record.answered == 4 and len(record.clients) == 4
    late = {int(label.split()[1]) for label in record.late}
    assert len(late) == 4 and strategy.roster.busy == late
    assert strategy.roster.eligible(list(grid.get_node_ids())) == sorted(set(range(1, 9)) - late)
    strategy.collect_late(grid)  # what configure_train does first
    assert strategy.roster.busy == set()
    for node in late:
        counts = strategy.roster.participation[node]
        assert counts["late"] == 1 and counts["late-replies"] == 1 and counts["accepted"] == 0
        assert strategy.roster.holds[node] == 1  # it took round 1's broadcast: a delta next time


class TrickleGrid(LocalGrid):
    """LocalGrid whose replies arrive one at a time, in node order: each pull hands over at
    most the next reply, and only when it asks for that reply's message."""

    def pull_messages(self, message_ids):
        waiting = sorted(self._replies.items(), key=lambda item: item[1].metadata.src_node_id)
        if not waiting or waiting[0][0] not in message_ids:
            return []
        return [self._replies.pop(waiting[0][0])]


def test_the_quorum_counts_usable_replies_not_failed_ones():
    """train-quorum 0.5 of 4 nodes is 2 usable replies: node 1 fails at once, nodes 2 and 3 then
    reply; the round waits for node 3 instead of closing on node 1's failure and node 2."""
    config = RunConfig.from_run_config(pyproject_run_config(node_wait_timeout=1.0, train_quorum=0.5,
                                                            min_train_clients=2, min_available_clients=2))
    answers = {1: "out of memory", **{node: (float(node), 10, 1.0) for node in (2, 3, 4)}}
    strategy = make_strategy(config)
    grid = TrickleGrid(scripted_app(answers), {node: {} for node in answers}, pyproject_run_config())
    run_round(strategy, grid)
    record = strategy.rounds[1]
    assert sorted(record.clients) == [2, 3] and record.failures == ["node 1: RuntimeError: out of memory"]
    assert record.answered == 3 and record.late == ["node 4"]


def test_every_reply_pulled_with_the_one_that_made_the_quorum_is_taken():
    """A quorum of 3 reached inside one pull of 4 replies: the 4th reply is gone from the
    SuperLink once pulled, so it is screened too rather than dropped (its node would then
    wait forever for a reply that can no longer come, busy for the rest of the run)."""
    strategy, grid = federation(8, train_quorum=0.375, min_train_clients=2, min_available_clients=2)
    run_round(strategy, grid)
    record = strategy.rounds[1]
    assert len(record.clients) == record.answered == inbox.PULL_AT_ONCE
    strategy.collect_late(grid)
    assert strategy.roster.busy == set()
    assert strategy.roster.eligible(list(grid.get_node_ids())) == list(range(1, 9))


def test_a_round_closes_at_its_deadline_without_the_silent_nodes():
    strategy, grid = federation(4, min_train_clients=2, min_available_clients=2)
    grid.silent = {3, 4}
    run_round(strategy, grid, timeout=0.5)
    record = strategy.rounds[1]
    assert sorted(record.clients) == [1, 2] and record.late == ["node 3", "node 4"]


def test_sampling_draws_fraction_train_of_the_nodes_each_round():
    strategy, grid = federation(50, fraction_train=0.2, min_train_clients=2, min_available_clients=2)
    run_round(strategy, grid, server_round=1)
    run_round(strategy, grid, server_round=2)
    first, second = strategy.rounds[1].sampled, strategy.rounds[2].sampled
    assert len(first) == len(second) == 10 and first != second


def test_a_robust_aggregation_that_would_not_fit_in_memory_is_refused():
    strategy, grid = federation(4, aggregation="fedmedian", min_train_clients=2, min_available_clients=2)
    strategy.trainable_bytes = 10**15
    with pytest.raises(FederationError, match=r"round 1: aggregation 'fedmedian' holds every update at once: "
                                              r"4 nodes need 8000000\.0 GB, .* GB of memory is available"):
        run_round(strategy, grid)


def test_an_averaging_aggregation_is_not_bounded_by_the_number_of_nodes():
    strategy, grid = federation(4, min_train_clients=2, min_available_clients=2)
    strategy.trainable_bytes = 10**15
    arrays, _ = run_round(strategy, grid)
    assert arrays is not None


def test_nodes_join_and_leave_between_rounds():
    """Each round samples the nodes connected then: one that left is not sent anything, one
    that joined trains in the next round."""
    strategy, grid = federation(4, min_train_clients=2, min_available_clients=2)
    run_round(strategy, grid, server_round=1)
    del grid.contexts[2]
    newcomer = LocalGrid(scripted_app({5: (5.0, 10, 1.0)}), {5: {}}, pyproject_run_config())
    grid.contexts[5] = newcomer.contexts[5]
    grid.app = scripted_app({node: (float(node), 10, 1.0) for node in (1, 3, 4, 5)})
    run_round(strategy, grid, server_round=2)
    assert strategy.rounds[1].sampled == [1, 2, 3, 4]
    assert strategy.rounds[2].sampled == [1, 3, 4, 5] and sorted(strategy.rounds[2].clients) == [1, 3, 4, 5]


@pytest.mark.parametrize("aggregation", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_a_server_optimizer_steps_from_the_broadcast_and_keeps_the_model_fp32(aggregation):
    """The running average reaches Flower's server optimizer as one reply; its step starts from
    the weights the nodes trained from, and the global model stays fp32."""
    strategy, grid = federation(4, aggregation=aggregation, server_lr=1e-3, min_train_clients=2,
                                min_available_clients=2)
    arrays, _ = run_round(strategy, grid)
    assert {array.numpy().dtype for array in arrays.values()} == {np.dtype(np.float32)}
    moved = arrays["expert.weight"].numpy()
    assert (moved > 0).all() and (moved < 2.5).all()  # towards the nodes' 1..4, from 0, by a server step


def test_the_server_holds_no_reply_after_folding_it():
    """What aggregate_train allocates at its peak is the same for 4 replies and for 24: each
    reply (160 KB here) is folded and dropped, none is kept in the round's records."""
    shape = (200, 200)

    def peak(nodes: int) -> int:
        app = ClientApp()

        @app.train()
        def train(msg: Message, context: Context) -> Message:
            value = np.full(shape, float(context.node_id), np.float32)
            return Message(RecordDict({
                "arrays": pack({"expert.weight": value}),
                "metrics": MetricRecord({"num-examples": 10, "train/loss": 1.0}),
                "node": ConfigRecord({"dataset-uri": f"local:/data/client_{context.node_id}"}),
            }), reply_to=msg)

        config = RunConfig.from_run_config(pyproject_run_config(node_wait_timeout=1.0, min_train_clients=2,
                                                                min_available_clients=2))
        strategy = make_strategy(config)
        grid = ArrivingGrid(app, {node: {} for node in range(1, nodes + 1)}, pyproject_run_config())
        initial = ArrayRecord({"expert.weight": Array(np.zeros(shape, np.float32))})
        ids = inbox.push(grid, strategy.configure_train(1, initial, ConfigRecord(), grid))
        tracemalloc.start()
        start, _ = tracemalloc.get_traced_memory()
        strategy.aggregate_train(1, inbox.replies(grid, ids, time.monotonic() + 60))
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high - start

    peak(3)  # what a first round imports lazily (numpy's npz support, np.median) is not the round's
    assert peak(24) <= peak(4) + 100_000
