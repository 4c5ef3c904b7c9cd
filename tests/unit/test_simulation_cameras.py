"""Simulation maps a node's cameras with run-config `rename-maps` (its nodes have no node config
of their own), and a refusal there names that key, not node-config rename-map."""

from __future__ import annotations

import json
import logging

from flwr.app import Array, ArrayRecord, ConfigRecord

from test_aggregation import LocalGrid, pyproject_run_config
from test_cameras import top_camera_dataset  # noqa: F401 - a fixture
from zk0.client_app import app as zk0_client_app
from zk0.config import RunConfig
from zk0.data.stats import feature_shapes
from zk0.server.strategy import make_strategy

TOP_TO_FRONT = {"observation.images.top": "observation.images.front"}


def simulate(demo_roots, top_root, rename_maps: str, caplog):
    """Round 0 and round 1 with two simulated nodes (partitions 0 and 1 of run-config datasets):
    a demo node (front, wrist) and the top-camera node."""
    config = pyproject_run_config(
        model="tiny", datasets=f"local:{demo_roots[0]},local:{top_root}", eval_dataset=f"local:{demo_roots[-1]}",
        rename_maps=rename_maps, num_rounds=1, local_steps=2, batch_size=2, eval_batches=1, num_workers=0,
        device="cpu", min_train_clients=1, min_available_clients=2, node_wait_timeout=1.0, fraction_evaluate=0.0,
    )
    from zk0.server.global_model import GlobalModel

    model = GlobalModel(RunConfig.from_run_config(config))
    strategy = make_strategy(RunConfig.from_run_config(config))
    strategy.cameras = sorted(k for k in model.policy.config.input_features if k.startswith("observation.images."))
    nodes = {node: {"partition-id": node - 1, "num-partitions": 2} for node in (1, 2)}
    grid = LocalGrid(zk0_client_app, nodes, config)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy.federation_stats = strategy.collect_statistics(grid, feature_shapes(model.policy.config))
    initial = ArrayRecord({name: Array(value) for name, value in model.weights().items()})
    # A strategy that never asked for statistics sends every node a train message: a node
    # whose cameras do not fit refuses it itself.
    unchecked = make_strategy(RunConfig.from_run_config(config))
    unchecked.cameras = strategy.cameras
    return list(grid.send_and_receive(unchecked.configure_train(1, initial, ConfigRecord(), grid)))


def test_unmapped_simulated_node_is_told_to_use_rename_maps(demo_roots, top_camera_dataset, caplog):
    replies = simulate(demo_roots, top_camera_dataset, "", caplog)
    warnings = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(warnings) == 1 and "map them with run-config rename-maps" in warnings[0], warnings
    assert "node-config" not in warnings[0]
    errors = [reply.error.reason for reply in replies if reply.has_error()]
    assert len(errors) == 1 and "map them with run-config rename-maps" in errors[0]


def test_rename_maps_let_a_simulated_node_train(demo_roots, top_camera_dataset, caplog):
    rename_maps = json.dumps({f"local:{top_camera_dataset}": TOP_TO_FRONT})
    replies = simulate(demo_roots, top_camera_dataset, rename_maps, caplog)
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(replies) == 2 and not any(reply.has_error() for reply in replies)
