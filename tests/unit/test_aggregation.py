"""Server-side aggregation: zk0's FedProx averages real Flower replies weighted by `num-examples`,
and files failed clients under their real node id and dataset.

Rounds run through the strategy's own `configure_train` and `aggregate_train`. `LocalGrid`
delivers each message to a real Flower ClientApp in this process (as Flower's simulation
engine does); here that ClientApp answers with scripted weights, shaped exactly as zk0's
ClientApp answers (one ArrayRecord, one MetricRecord, the node's identity as a ConfigRecord).
tests/unit/test_robust.py drives zk0's own ClientApp through the same grid.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from zk0.config import RunConfig
from zk0.server.strategy import FederationError, ZK0Strategy, make_strategy
from zk0.wire.protocol import pack

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pyproject_run_config(**overrides) -> dict:
    """`[tool.flwr.app.config]` as Flower hands it to the apps, with `overrides` (underscores -> dashes)."""
    with PYPROJECT.open("rb") as handle:
        defaults = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    # Scripted replies carry plain fp32 weights: the fp32 codec (tests/unit/test_transfer.py covers the others).
    return defaults | {"update-codec": "fp32"} | {key.replace("_", "-"): value for key, value in overrides.items()}


class LocalGrid(Grid):
    """A Grid whose nodes are ClientApps in this process.

    Each message goes to `app` with its node's Context, as Flower's simulation engine
    delivers it; an exception in the ClientApp becomes an error reply, as there. Message
    ids are assigned on push, as Flower's grids do. Nodes in `offline` get the error reply
    the SuperLink itself makes for an unavailable node (its sender is the SuperLink); nodes
    in `silent` never answer (their reply misses the round's timeout). Messages are delivered,
    and replies returned, in node-id order (Flower returns them as they arrive), so that a
    round is repeatable.
    """

    def __init__(self, app: ClientApp, node_configs: dict[int, dict], run_config: dict) -> None:
        # This process plays the ServerApp: identify it as Flower's ServerApp runtime does,
        # so that messages it creates carry a run and a sender.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self.app = app
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config=node_config, state=RecordDict(), run_config=run_config)
            for node, node_config in node_configs.items()
        }
        self.offline: set[int] = set()
        self.silent: set[int] = set()
        self._run = None
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def _deliver(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        if node in self.offline:
            return create_message_error_unavailable_res_message(message.metadata, "node_unavail")
        try:
            return self.app(message, self.contexts[node])
        except Exception as err:  # what Flower's simulation engine turns into an error reply
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(err).__name__}: {err}"),
                           reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in sorted(messages, key=lambda message: message.metadata.dst_node_id):
            message.metadata.__dict__["_message_id"] = uuid4().hex  # as flwr's InMemoryGrid does
            if message.metadata.dst_node_id not in self.silent:
                self._replies[message.metadata.message_id] = self._deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(message_id) for message_id in message_ids if message_id in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def weights(value: float) -> dict[str, np.ndarray]:
    return {"expert.weight": np.full((2, 3), value, np.float32), "expert.bias": np.full(3, -value, np.float32)}


def array_record(value: float) -> ArrayRecord:
    return ArrayRecord({name: Array(array) for name, array in weights(value).items()})


def scripted_app(answers: dict[int, tuple[float, int, float] | str]) -> ClientApp:
    """A ClientApp answering as zk0's does: node -> (weight value, num-examples, loss), or a crash message."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        answer = answers[context.node_id]
        if isinstance(answer, str):
            raise RuntimeError(answer)
        value, num_examples, loss = answer
        content = RecordDict({
            "arrays": pack(weights(value)),
            "metrics": MetricRecord({"num-examples": num_examples, "train/loss": loss, "train/lr": 1e-4}),
            "node": ConfigRecord({"dataset-uri": f"local:/data/client_{context.node_id}"}),
        })
        return Message(content, reply_to=msg)

    return app


def run_round(strategy: ZK0Strategy, answers: dict, server_round: int = 1, offline: Iterable[int] = (),
              silent: Iterable[int] = ()):
    """One training round: the strategy configures it, the grid delivers, the strategy aggregates."""
    grid = LocalGrid(scripted_app(answers), {node: {} for node in answers}, pyproject_run_config())
    grid.offline, grid.silent = set(offline), set(silent)
    messages = strategy.configure_train(server_round, array_record(0.0), ConfigRecord(), grid)
    return strategy.aggregate_train(server_round, grid.send_and_receive(messages))


@pytest.fixture
def strategy() -> ZK0Strategy:
    return make_strategy(RunConfig.from_run_config(pyproject_run_config(node_wait_timeout=1.0)))


def test_average_is_weighted_by_num_examples(strategy):
    """A client with three times the samples counts three times as much: (1·10 + 5·30) / 40 = 4."""
    arrays, metrics = run_round(strategy, {11: (1.0, 10, 2.0), 12: (5.0, 30, 1.0)})
    assert np.allclose(arrays["expert.weight"].numpy(), 4.0)
    assert np.allclose(arrays["expert.bias"].numpy(), -4.0)
    assert arrays["expert.weight"].numpy().dtype == np.float32
    assert metrics["train/loss"] == pytest.approx((2.0 * 10 + 1.0 * 30) / 40)


def test_equal_sample_counts_give_the_plain_mean(strategy):
    """With equal weights the result is the arithmetic mean of the clients' parameters."""
    arrays, _ = run_round(strategy, {n: (float(n), 16, 0.5) for n in (1, 2, 3)})
    assert np.allclose(arrays["expert.weight"].numpy(), 2.0)


def test_train_config_carries_round_lr_and_proximal_mu(strategy):
    """Every training message tells the client the round, its learning rate and FedProx's mu."""
    grid = LocalGrid(scripted_app({5: (1.0, 1, 1.0), 6: (1.0, 1, 1.0)}), {5: {}, 6: {}}, pyproject_run_config())
    messages = list(strategy.configure_train(3, array_record(0.0), ConfigRecord(), grid))
    assert sorted(m.metadata.dst_node_id for m in messages) == [5, 6]
    config = messages[0].content["config"]
    assert config["server-round"] == 3
    assert config["lr"] == strategy.rounds[3].lr > 0
    assert config["proximal-mu"] == strategy.config.proximal_mu


def test_round_record_keeps_each_clients_report_and_upload_size(strategy):
    """The strategy records, per node, its metrics and the bytes of the ArrayRecord it uploaded,
    and names each node by its id and the dataset it claims, for people reading metrics.jsonl."""
    run_round(strategy, {1: (1.0, 10, 2.0), 2: (5.0, 30, 1.0)}, server_round=3)
    record = strategy.rounds[3]
    uploaded = pack(weights(1.0)).count_bytes()
    assert record.clients[2]["num-examples"] == 30
    assert record.bytes_up == {1: uploaded, 2: uploaded}
    assert record.named(record.bytes_up) == {"node 1 claiming local:/data/client_1": uploaded,
                                               "node 2 claiming local:/data/client_2": uploaded}
    assert record.bytes_down == {1: uploaded, 2: uploaded}
    assert uploaded >= 4 * (6 + 3)


def test_failed_client_is_left_out_and_filed_under_its_node_and_dataset(strategy):
    """An error reply does not enter the average; the round goes on with the others and files the
    failure under the node's id and the dataset it trained on in earlier rounds."""
    run_round(strategy, {7: (1.0, 10, 1.0), 8: (2.0, 10, 1.0), 9: (3.0, 10, 1.0)}, server_round=1)
    arrays, _ = run_round(strategy, {7: "out of memory", 8: (3.0, 10, 1.0), 9: (3.0, 10, 1.0)}, server_round=2)
    assert np.allclose(arrays["expert.weight"].numpy(), 3.0)
    assert strategy.rounds[2].failures == ["node 7 claiming local:/data/client_7: RuntimeError: out of memory"]
    assert sorted(strategy.rounds[2].clients) == [8, 9]


def test_error_made_by_the_superlink_is_filed_under_the_node_it_was_sent_to(strategy):
    """When a node vanishes the SuperLink answers for it, with its own id as sender: the failure
    still names the node the message was sent to, not the SuperLink."""
    run_round(strategy, {41: (1.0, 10, 1.0), 42: (1.0, 10, 1.0), 43: (1.0, 10, 1.0)}, server_round=1)
    run_round(strategy, {41: (1.0, 10, 1.0), 42: (1.0, 10, 1.0), 43: (1.0, 10, 1.0)}, server_round=2, offline=[42])
    [failure] = strategy.rounds[2].failures
    assert failure.startswith("node 42 claiming local:/data/client_42: ")
    assert str(SUPERLINK_NODE_ID) not in failure


def test_node_that_never_answers_is_recorded_as_late(strategy):
    """The round gets only the replies that came before it closed; a node that sent nothing is
    recorded as late (not failed), and stays busy, so it is not sampled while its message is out."""
    run_round(strategy, {31: (1.0, 10, 1.0), 32: (1.0, 10, 1.0), 33: (1.0, 10, 1.0)}, silent=[33])
    assert strategy.rounds[1].late == ["node 33"] and strategy.rounds[1].failures == []
    assert sorted(strategy.rounds[1].clients) == [31, 32]
    assert strategy.roster.busy == {33}
    assert strategy.roster.participation[33] == {"sampled": 1, "accepted": 0, "rejected": 0, "failed": 0,
                                                  "late": 1, "late-replies": 0}


def test_round_below_min_train_clients_stops_the_federation(strategy):
    """A round needs min-train-clients usable results (2 by default): one is not enough, and the
    error names the failed node and why, instead of finishing the run as if all went well."""
    with pytest.raises(FederationError, match=r"only 1 usable training result.*min-train-clients is 2.*node 21: RuntimeError: disk full"):
        run_round(strategy, {21: "disk full", 22: (1.0, 10, 1.0)})


def test_round_without_any_result_stops_the_federation(strategy):
    """If every client failed there is nothing to aggregate: a FederationError says so."""
    with pytest.raises(FederationError, match="only 0 usable training result"):
        run_round(strategy, {1: "crashed", 2: "crashed"})


def delta_app(step: float, codec: str) -> ClientApp:
    """A ClientApp speaking zk0's protocol with a delta codec: it rebuilds the broadcast from what
    it holds (as zk0's ClientApp does) and sends it back moved by `step`, through error feedback."""
    from zk0.wire import transfer
    from zk0.wire.codec import ErrorFeedback
    from zk0.wire.protocol import NodeIdentity, TrainInstructions, TrainReport

    app = ClientApp()
    held: dict[int, dict] = {}
    feedback: dict[int, ErrorFeedback] = {}

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        node = context.node_id
        ins = TrainInstructions.from_content(msg.content)
        received = transfer.receive(ins.model, held.get(node) if ins.reference_round is not None else None)
        held[node] = received
        local = {name: value + np.float32(step) for name, value in received.items()}
        update = transfer.upload(local, received, codec, feedback.setdefault(node, ErrorFeedback()))
        report = TrainReport(update, 16, {"train/loss": 1.0}, NodeIdentity(f"local:/data/client_{node}"))
        return Message(report.to_content(), reply_to=msg)

    return app


@pytest.mark.parametrize("codec", ["q8", "q3"])
def test_small_updates_add_up_in_the_fp32_global(codec):
    """Weights at 1.0 moved by 1e-3 a round, less than half a bf16 step there (2^-8): with a delta
    codec the global adds the updates in fp32 and reaches 1.0 + rounds x 1e-3, although every
    broadcast the nodes train from is bf16. Built on the broadcast instead, it stays within one
    update of 1.0 (the bf16 codec's whole-weight uploads lose such updates on the way up)."""
    config = pyproject_run_config(update_codec=codec, node_wait_timeout=1.0)
    strategy = make_strategy(RunConfig.from_run_config(config))
    grid = LocalGrid(delta_app(1e-3, codec), {1: {}, 2: {}}, config)
    arrays = array_record(1.0)
    for server_round in range(1, 11):
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
        arrays, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
    # One message's error feedback may still hold back part of one update (q3 of a constant: none).
    assert np.allclose(arrays["expert.weight"].numpy(), 1.010, atol=5e-4)
    assert np.allclose(arrays["expert.bias"].numpy(), -0.990, atol=5e-4)
