"""What a node keeps between messages: its dataset, the policy fitted to it, its processors.

In simulation one process serves many messages, so the session is cached in memory.
In deployment a fresh process may serve each message; then what makes start-up cheap
is on disk (the HF cache, the tiny model cache, the dataset's own metadata and stats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

from flwr.app import ArrayRecord, ConfigRecord, Context

from zk0.config import RunConfig
from zk0.data import NodeData, fixed_batches, infinite_batches, open_node_data, open_split
from zk0.model import get_trainable, load_policy, make_processors, resolve_device, set_trainable
from zk0.uri import DatasetURI, parse_dataset_uri

class NodeConfigError(ValueError):
    """The node was started without a usable dataset."""


def node_dataset(config: RunConfig, node_config: dict) -> DatasetURI:
    """Deployment: the node's `dataset-uri`; simulation: `partition-id` into run-config `datasets`."""
    if "dataset-uri" in node_config:
        return parse_dataset_uri(str(node_config["dataset-uri"]))
    if "partition-id" in node_config:
        partition = int(node_config["partition-id"])
        if partition >= len(config.datasets):
            raise NodeConfigError(
                f"simulation node {partition} has no dataset: run-config 'datasets' lists {len(config.datasets)}; "
                f"add datasets or run fewer SuperNodes"
            )
        return config.datasets[partition]
    raise NodeConfigError("node has no dataset: start the SuperNode with --node-config \"dataset-uri='hf:owner/name'\"")


@dataclass
class NodeSession:
    config: RunConfig
    data: NodeData
    policy: object
    preprocessor: object
    postprocessor: object
    startup_seconds: float
    _splits: dict = field(default_factory=dict)

    def load_global(self, arrays: ArrayRecord) -> None:
        set_trainable(self.policy, {name: array.numpy() for name, array in arrays.items()})

    def trainable_arrays(self) -> dict:
        from flwr.app import Array

        return {name: Array(value) for name, value in get_trainable(self.policy).items()}

    def identity(self) -> ConfigRecord:
        return ConfigRecord({"dataset-uri": str(self.data.uri)})

    def _split(self, name: str):
        if name not in self._splits:
            episodes = self.data.train_episodes if name == "train" else self.data.heldout_episodes
            self._splits[name] = open_split(self.data, episodes, self.policy.config)
        return self._splits[name]

    def train_batches(self, seed: int):
        return infinite_batches(self._split("train"), self.config.batch_size, self.config.num_workers, self.config.seed + seed)

    def heldout_batches(self):
        return fixed_batches(self._split("heldout"), self.config.batch_size, self.config.num_workers, self.config.eval_batches)


def node_session(context: Context) -> NodeSession:
    config = RunConfig.from_run_config(context.run_config)
    uri = node_dataset(config, dict(context.node_config))
    started = time.perf_counter()
    session = _session(config, uri)
    session.startup_seconds = time.perf_counter() - started
    return session


@lru_cache(maxsize=1)
def _session(config: RunConfig, uri: DatasetURI) -> NodeSession:
    data = open_node_data(uri, config.action_dim, config.heldout_episodes)
    policy = load_policy(config.model, data.meta, resolve_device(config.device))
    preprocessor, postprocessor = make_processors(policy, data.stats)
    return NodeSession(config, data, policy, preprocessor, postprocessor, startup_seconds=0.0)
