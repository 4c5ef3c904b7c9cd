"""Demo data beyond one client per task: one shared dataset per task, each client a shard
(`#I/N`) with its own disjoint episodes, its own URI, and its own identity on the server."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from zk0.config import RunConfig
from zk0.data.dataset import open_node_data
from zk0.tools.demo_data import TASKS, DemoSpec, demo_federation
from zk0.node.session import node_dataset
from zk0.data.uri import parse_dataset_uri

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
CLIENTS = 10  # two more than tasks: tasks 0 and 1 are dealt to two clients each
SPEC = DemoSpec(episodes=2, frames_per_episode=12)


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> tuple[list[str], str]:
    return demo_federation(tmp_path_factory.mktemp("shards"), CLIENTS, SPEC)


def test_clients_are_shards_of_one_dataset_per_task(federation):
    clients, eval_uri = federation
    uris = [parse_dataset_uri(text) for text in clients]
    assert len(set(clients)) == CLIENTS
    assert len({uri.root for uri in uris}) == len(TASKS)
    assert [str(uri) for uri in uris] == clients
    assert {uri.shard for uri in uris if uri.root.name == "task_0"} == {(0, 2), (1, 2)}
    assert {uri.shard for uri in uris if uri.root.name == "task_7"} == {(0, 1)}
    assert parse_dataset_uri(eval_uri).shard is None


def test_each_client_opens_its_own_disjoint_episodes(federation):
    """Every client holds `SPEC.episodes` episodes, one held out; the shards of a task's dataset
    split its episodes between them, none shared, none left over."""
    clients, _ = federation
    by_root: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    for text in clients:
        data = open_node_data(parse_dataset_uri(text), action_dim=6, heldout_episodes=1)
        mine = data.train_episodes + data.heldout_episodes
        assert len(mine) == SPEC.episodes and len(data.heldout_episodes) == 1
        by_root.setdefault(data.uri.root.name, []).extend(mine)
        totals[data.uri.root.name] = data.meta.total_episodes
    for name, episodes in by_root.items():
        assert sorted(episodes) == list(range(totals[name])), name
    assert totals["task_0"] == 2 * SPEC.episodes and totals["task_7"] == SPEC.episodes


def test_simulated_nodes_map_to_their_shards(federation):
    """Simulation's partition-id picks the shard URI from run-config `datasets`; a deployed
    node's `dataset-uri` is read as before, shard or not."""
    clients, eval_uri = federation
    with PYPROJECT.open("rb") as handle:
        defaults = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    config = RunConfig.from_run_config(defaults | {"datasets": ",".join(clients), "eval-dataset": eval_uri})
    assert [str(node_dataset(config, {"partition-id": p, "num-partitions": CLIENTS})) for p in range(CLIENTS)] == clients
    assert node_dataset(config, {"dataset-uri": clients[3]}) == parse_dataset_uri(clients[3])
    assert node_dataset(config, {"dataset-uri": "hf:a/b"}).shard is None
