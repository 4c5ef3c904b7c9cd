"""Camera sets: a node whose cameras cannot feed the federation's policy is refused in one line at
round 0 (and refuses to train); `rename-map` maps its camera names onto the federation's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from test_aggregation import LocalGrid, pyproject_run_config
from zk0.data.cameras import CameraError, parse_rename_map
from zk0.client_app import app as zk0_client_app
from zk0.config import RunConfig
from zk0.data.stats import feature_shapes
from zk0.server.strategy import make_strategy

TOP = ("observation.images.top", "observation.images.wrist")
RENAME = '{"observation.images.top": "observation.images.front"}'


@pytest.fixture(scope="module")
def top_camera_dataset(tmp_path_factory) -> Path:
    """An SO-100 dataset whose cameras are called top and wrist (the federation's: front and wrist)."""
    from zk0.tools.demo_data import DemoSpec, write_dataset

    return write_dataset(tmp_path_factory.mktemp("top") / "client_top", "zk0-demo/client_top", [1],
                         DemoSpec(episodes=4, frames_per_episode=30), seed=5, cameras=TOP)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "is not JSON"),
    ('["a"]', "must be a JSON object"),
    ('{"action": "observation.images.front"}', "only camera features"),
    ('{"observation.images.a": "observation.images.c", "observation.images.b": "observation.images.c"}', "same name"),
])
def test_malformed_rename_maps_are_one_line(text, message):
    with pytest.raises(CameraError, match=message) as caught:
        parse_rename_map(text)
    assert "\n" not in str(caught.value)


# Episodes each 4-episode node trains on: statistics count its training frames only.
TRAINED = 4 - pyproject_run_config()["heldout-episodes"]


def run(demo_roots, top_camera_dataset, rename: str | None, caplog):
    """Round 0 and round 1 with a demo node (front, wrist) and the top-camera node."""
    config = pyproject_run_config(
        model="tiny", datasets=f"local:{demo_roots[0]}", eval_dataset=f"local:{demo_roots[-1]}", num_rounds=1,
        local_steps=2, batch_size=2, eval_batches=1, num_workers=0, device="cpu", min_train_clients=1,
        min_available_clients=2, node_wait_timeout=1.0, fraction_evaluate=0.0,
    )
    from zk0.server.global_model import GlobalModel

    model = GlobalModel(RunConfig.from_run_config(config))
    strategy = make_strategy(RunConfig.from_run_config(config))
    strategy.cameras = sorted(k for k in model.policy.config.input_features if k.startswith("observation.images."))
    top_config = {"dataset-uri": f"local:{top_camera_dataset}"} | ({"rename-map": rename} if rename else {})
    grid = LocalGrid(zk0_client_app, {1: {"dataset-uri": f"local:{demo_roots[0]}"}, 2: top_config}, config)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        pooled = strategy.collect_statistics(grid, feature_shapes(model.policy.config))
    strategy.federation_stats = pooled
    initial = ArrayRecord({name: Array(value) for name, value in model.weights().items()})
    replies = list(grid.send_and_receive(strategy.configure_train(1, initial, ConfigRecord(), grid)))
    # A strategy that never asked for statistics (normalization = local) sends the top-camera
    # node a train message too: the node itself refuses it.
    unchecked = make_strategy(RunConfig.from_run_config(config))
    unchecked.cameras = strategy.cameras
    direct = [reply for reply in grid.send_and_receive(unchecked.configure_train(1, initial, ConfigRecord(), grid))
              if reply.has_error()]
    return pooled, {reply.metadata.src_node_id: reply for reply in replies} | {"error": reply for reply in direct}


def test_unmappable_node_is_refused_in_one_line(demo_roots, top_camera_dataset, caplog):
    """Without a rename-map the top-camera node is named at round 0, left out of the pooled
    statistics and sent no train message; told the federation's cameras, it refuses to train."""
    pooled, replies = run(demo_roots, top_camera_dataset, None, caplog)
    warnings = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(warnings) == 1 and "client_top: refused: cameras" in warnings[0]
    assert "map them with node-config rename-map" in warnings[0]
    assert int(pooled["action"]["count"].sum()) == TRAINED * 30  # the demo node's training frames only
    assert 2 not in replies and 1 in replies
    assert "error" in replies and "CameraError" in replies["error"].error.reason


def test_mapped_node_joins_and_trains(demo_roots, top_camera_dataset, caplog):
    """With rename-map top -> front the node's statistics are pooled and it trains."""
    pooled, replies = run(demo_roots, top_camera_dataset, RENAME, caplog)
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
    assert int(pooled["action"]["count"].sum()) == 2 * TRAINED * 30
    assert "error" not in replies and sorted(replies) == [1, 2]
