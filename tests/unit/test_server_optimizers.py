"""Server optimizers (FedAdam, FedYogi, FedAdagrad): Flower's own classes, composed with zk0's
strategy by `make_strategy`, step the global model as Reddi et al.'s FedOpt does.

zk0 hands the Flower class one reply: the round's running average of the accepted updates,
weighted by the total `num-examples`. So each test drives the composed strategy's Flower base
(its `configure_train`, which keeps the global model the step starts from, then its
`aggregate_train` on one averaged reply) for three rounds, and checks the weights against the
optimizer's update rule computed here from the pseudo-gradient, moments carried across rounds.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from test_aggregation import LocalGrid, pyproject_run_config
from zk0.server.aggregation import AGGREGATIONS
from zk0.config import ConfigError, RunConfig
from zk0.server.strategy import ZK0Strategy, make_strategy

SERVER = {"server_lr": 0.05, "server_beta_1": 0.8, "server_beta_2": 0.95, "server_tau": 0.01}
NODES = {1: {"partition-id": 0}, 2: {"partition-id": 1}}


def averaged_reply(arrays: dict[str, np.ndarray], num_examples: int) -> Message:
    """The one reply zk0 gives Flower's class: the accepted updates' average, their total weight."""
    request = Message(RecordDict(), dst_node_id=1, message_type=MessageType.TRAIN)
    request.metadata.__dict__["_message_id"] = "averaged"  # as a grid assigns it on push
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": num_examples})})
    return Message(content, reply_to=request)


def adam(d, m, v, t, lr, b1, b2, tau):
    m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d**2
    return lr * np.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1)) * m / (np.sqrt(v) + tau), m, v


def yogi(d, m, v, t, lr, b1, b2, tau):
    m, v = b1 * m + (1 - b1) * d, v - (1 - b2) * d**2 * np.sign(v - d**2)
    return lr * m / (np.sqrt(v) + tau), m, v


def adagrad(d, m, v, t, lr, b1, b2, tau):
    m, v = d, v + d**2  # Adagrad keeps no first moment (beta_1 = 0)
    return lr * m / (np.sqrt(v) + tau), m, v


RULES = {"fedadam": adam, "fedyogi": yogi, "fedadagrad": adagrad}


@pytest.mark.parametrize("aggregation", sorted(RULES))
def test_server_optimizer_steps_the_global_model_by_its_rule(aggregation):
    config = RunConfig.from_run_config(pyproject_run_config(aggregation=aggregation, **SERVER))
    strategy = make_strategy(config)
    flower = AGGREGATIONS[aggregation].flower_class
    assert isinstance(strategy, ZK0Strategy) and isinstance(strategy, flower)
    assert AGGREGATIONS[aggregation].streams
    grid = LocalGrid(ClientApp(), NODES, pyproject_run_config(aggregation=aggregation))
    rng = np.random.default_rng(0)
    model = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    expected = {k: v.astype(np.float64) for k, v in model.items()}
    m = {k: np.zeros_like(v) for k, v in expected.items()}
    v2 = {k: np.zeros_like(v) for k, v in expected.items()}
    for server_round in (1, 2, 3):
        flower.configure_train(strategy, server_round, ArrayRecord({k: Array(v) for k, v in model.items()}),
                               ConfigRecord(), grid)
        average = {k: (v + rng.normal(scale=0.1, size=v.shape)).astype(np.float32) for k, v in model.items()}
        arrays, _ = flower.aggregate_train(strategy, server_round, [averaged_reply(average, 96)])
        for k in model:
            d = average[k].astype(np.float64) - model[k]
            step, m[k], v2[k] = RULES[aggregation](d, m[k], v2[k], server_round, SERVER["server_lr"],
                                                   SERVER["server_beta_1"], SERVER["server_beta_2"], SERVER["server_tau"])
            expected[k] = model[k] + step
        model = {k: array.numpy() for k, array in arrays.items()}
        for k in model:
            np.testing.assert_allclose(model[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=f"round {server_round} {k}")
            assert not np.allclose(model[k], average[k], atol=1e-3)  # a server step, not the plain average


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("server-beta-1", 1.0, "'server-beta-1' must be in [0, 1)"),
    ("server-beta-2", -0.1, "'server-beta-2' must be in [0, 1)"),
    ("server-tau", 0.0, "'server-tau' must be > 0"),
])
def test_server_optimizer_keys_out_of_range_are_refused(key, value, expected):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_run_config(pyproject_run_config(aggregation="fedadam", server_lr=1e-3) | {key: value})
    assert expected in str(caught.value)
