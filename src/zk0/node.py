"""What a node keeps between messages: its dataset, the policy fitted to it, its processors
(one pair per normalization: the federation's pooled statistics, or the dataset's own).

In simulation one process serves many messages (and, under Ray, several nodes in
turn), so the pieces are cached in memory: one policy shared by every node whose
dataset has the same features (the frozen weights are identical and `load_weights`
overwrites the trainable ones on every message), and a small per-dataset cache of
metadata, processors and open splits. In deployment a fresh process may serve each
message; then what makes start-up cheap is on disk (the HF cache, the tiny model
cache, the dataset's own metadata and stats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from flwr.app import ConfigRecord, Context

from zk0.config import RunConfig
from zk0.data import NodeData, fixed_batches, infinite_batches, open_node_data, open_split
from zk0.model import get_trainable, load_policy, make_processors, resolve_device, set_trainable
from zk0.stats import fingerprint, node_stats, with_stats
from zk0.uri import DatasetURI, parse_dataset_uri

MAX_CACHED_NODES = 16


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
    cached: "_CachedNode"
    startup_seconds: float
    preprocessor: object = None
    postprocessor: object = None

    def __post_init__(self) -> None:
        self.use_federation_stats(None)

    def use_federation_stats(self, federation: dict | None) -> None:
        """Normalize with the federation's pooled statistics (None: this dataset's own)."""
        key = fingerprint(federation) if federation else "local"
        if key not in self.cached.processors:
            stats = with_stats(self.data.stats, federation) if federation else self.data.stats
            self.cached.processors[key] = make_processors(self.policy, stats)
        self.preprocessor, self.postprocessor = self.cached.processors[key]

    def load_weights(self, weights: dict) -> None:
        set_trainable(self.policy, weights)

    def trainable_weights(self) -> dict:
        return dict(get_trainable(self.policy))

    def statistics(self) -> dict:
        """What this node contributes to the federation's normalization (zk0.stats)."""
        return node_stats(self.data.stats, self.policy.config)

    def identity(self) -> ConfigRecord:
        return ConfigRecord({"dataset-uri": str(self.data.uri)})

    @property
    def has_heldout(self) -> bool:
        return bool(self.data.heldout_episodes)

    def _split(self, name: str):
        splits = self.cached.splits
        if name not in splits:
            episodes = self.data.train_episodes if name == "train" else self.data.heldout_episodes
            splits[name] = open_split(self.data, episodes, self.policy.config)
        return splits[name]

    def train_batches(self, seed: int):
        return infinite_batches(self._split("train"), self.config.batch_size, self.config.num_workers, self.config.seed + seed)

    def heldout_batches(self):
        return fixed_batches(self._split("heldout"), self.config.batch_size, self.config.num_workers, self.config.eval_batches)


@dataclass
class _CachedNode:
    data: NodeData
    processors: dict = field(default_factory=dict)  # stats fingerprint -> (preprocessor, postprocessor)
    splits: dict = field(default_factory=dict)


def node_session(context: Context) -> NodeSession:
    """This node's session for this message; `startup_seconds` is what getting it cost."""
    started = time.perf_counter()
    _apply_threads(context.node_config)
    config = RunConfig.from_run_config(context.run_config)
    node = _cached_node(config, node_dataset(config, dict(context.node_config)))
    policy = _shared_policy(config, node.data.meta)
    session = NodeSession(config, node.data, policy, node, startup_seconds=0.0)
    session.startup_seconds = time.perf_counter() - started
    return session


def _apply_threads(node_config) -> None:
    """Node-config `threads`: the torch threads this node may use (zk0bot shares the cores out)."""
    if "threads" not in node_config:
        return
    threads = node_config["threads"]
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise NodeConfigError(f"node-config 'threads' must be a positive integer, got {threads!r}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@lru_cache(maxsize=MAX_CACHED_NODES)
def _cached_node(config: RunConfig, uri: DatasetURI) -> _CachedNode:
    return _CachedNode(open_node_data(uri, config.action_dim, config.heldout_episodes))


_policy: dict[tuple, object] = {}


def _shared_policy(config: RunConfig, meta):
    """One policy per process, rebuilt only when the model, device or dataset features change."""
    device = resolve_device(config.device)
    features = tuple(sorted((key, tuple(spec["shape"])) for key, spec in meta.features.items()))
    key = (config.model, device, features)
    if key not in _policy:
        _policy.clear()
        _policy[key] = load_policy(config.model, meta, device)
    return _policy[key]
