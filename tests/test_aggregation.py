"""Server-side aggregation: zk0's FedProx averages real Flower replies weighted by `num-examples`.

The replies are genuine `flwr.app.Message`s carrying what zk0's ClientApp sends back
(one ArrayRecord, one MetricRecord, the node's identity as a ConfigRecord); only
their metadata is written by hand, as the SuperLink would fill it in.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict

from zk0.config import RunConfig
from zk0.strategy import FederationError, ZK0FedProx

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture
def strategy() -> ZK0FedProx:
    with PYPROJECT.open("rb") as handle:
        defaults = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    return ZK0FedProx(RunConfig.from_run_config(defaults))


def metadata(node_id: int) -> Metadata:
    """A train reply's metadata: from `node_id` back to the server (node 0)."""
    return Metadata(
        run_id=1, message_id=f"reply-{node_id}", src_node_id=node_id, dst_node_id=0,
        reply_to_message_id=f"ins-{node_id}", group_id="1", created_at=time.time(), ttl=600.0,
        message_type=MessageType.TRAIN,
    )


def train_reply(node_id: int, weights: dict[str, np.ndarray], num_examples: int, loss: float) -> Message:
    """What zk0's ClientApp returns after local training on `num_examples` samples."""
    content = RecordDict({
        "arrays": ArrayRecord({name: Array(value) for name, value in weights.items()}),
        "metrics": MetricRecord({"num-examples": num_examples, "train/loss": loss, "train/lr": 1e-4}),
        "node": ConfigRecord({"dataset-uri": f"local:/data/client_{node_id}"}),
    })
    return Message(content, metadata=metadata(node_id))


def failed_reply(node_id: int) -> Message:
    """A reply that carries an error instead of results (e.g. the client crashed)."""
    return Message(error=Error(code=0, reason="client crashed"), metadata=metadata(node_id))


def weights(value: float) -> dict[str, np.ndarray]:
    return {"expert.weight": np.full((2, 3), value, np.float32), "expert.bias": np.full(3, -value, np.float32)}


def test_average_is_weighted_by_num_examples(strategy):
    """A client with three times the samples counts three times as much: (1·10 + 5·30) / 40 = 4."""
    replies = [train_reply(1, weights(1.0), 10, loss=2.0), train_reply(2, weights(5.0), 30, loss=1.0)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert np.allclose(arrays["expert.weight"].numpy(), 4.0)
    assert np.allclose(arrays["expert.bias"].numpy(), -4.0)
    assert arrays["expert.weight"].numpy().dtype == np.float32
    assert metrics["train/loss"] == pytest.approx((2.0 * 10 + 1.0 * 30) / 40)


def test_equal_sample_counts_give_the_plain_mean(strategy):
    """With equal weights the result is the arithmetic mean of the clients' parameters."""
    replies = [train_reply(n, weights(float(n)), 16, loss=0.5) for n in (1, 2, 3)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert np.allclose(arrays["expert.weight"].numpy(), 2.0)


def test_round_record_keeps_each_clients_report_and_upload_size(strategy):
    """The strategy records, per node, its metrics and the bytes of the ArrayRecord it uploaded,
    and names each node by its id and dataset for people reading metrics.jsonl."""
    replies = [train_reply(1, weights(1.0), 10, loss=2.0), train_reply(2, weights(5.0), 30, loss=1.0)]
    uploaded = replies[0].content["arrays"].count_bytes()
    strategy.aggregate_train(3, replies)
    record = strategy.rounds[3]
    assert record.clients[2]["num-examples"] == 30
    assert record.bytes_up == {1: uploaded, 2: uploaded}
    assert record.named(record.bytes_up) == {"1:local:/data/client_1": uploaded, "2:local:/data/client_2": uploaded}
    assert uploaded >= 4 * (6 + 3)


def test_failed_client_is_left_out_and_recorded(strategy):
    """An error reply does not enter the average; the round goes on with the others and notes the failure."""
    replies = [failed_reply(7), train_reply(1, weights(3.0), 10, loss=1.0)]
    arrays, _ = strategy.aggregate_train(2, replies)
    assert np.allclose(arrays["expert.weight"].numpy(), 3.0)
    assert strategy.rounds[2].failures == ["7: client crashed"]


def test_round_without_any_result_stops_the_federation(strategy):
    """If every client failed there is nothing to aggregate: a FederationError says so."""
    with pytest.raises(FederationError, match="no client returned a training result"):
        strategy.aggregate_train(1, [failed_reply(1), failed_reply(2)])
