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
from flwr.app import Context

from zk0.wire import transfer
from zk0.wire.codec import decode, encode
from zk0.config import RunConfig
from zk0.data.dataset import NodeData, fixed_batches, infinite_batches, open_node_data, open_split, stream_seed
from zk0.policy.model import get_trainable, load_policy, make_processors, resolve_device, set_trainable
from zk0.data.cameras import CameraError, RenamedDataset, cameras, parse_rename_map, renamed
from zk0.data.cameras import check as check_cameras
from zk0.wire.protocol import NodeIdentity
from zk0.data.stats import fingerprint, node_stats, with_stats
from zk0.data.uri import DatasetURI, parse_dataset_uri

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


@dataclass(frozen=True)
class StartModel:
    """The trainable weights as loaded, before any round changed them (bf16 bits: half their
    fp32 size) and their digest: round 1 can then come as a delta against them (zk0.wire.transfer)."""

    bits: dict
    digest: str


@dataclass
class NodeSession:
    config: RunConfig
    data: NodeData
    policy: object
    start: StartModel
    cached: "_CachedNode"
    startup_seconds: float
    rename_via: str = "node-config"  # how this node maps its cameras, for refusals
    preprocessor: object = None
    postprocessor: object = None

    def __post_init__(self) -> None:
        self.use_federation_stats(None)

    @property
    def dataset_stats(self) -> dict:
        return renamed(self.data.stats, self.cached.rename_map)

    @property
    def cameras(self) -> list[str]:
        return cameras(self.policy.config.input_features)

    def use_federation_stats(self, federation: dict | None) -> None:
        """Normalize with the federation's pooled statistics (None: this dataset's own)."""
        key = fingerprint(federation) if federation else "local"
        if key not in self.cached.processors:
            stats = with_stats(self.dataset_stats, federation) if federation else self.dataset_stats
            self.cached.processors[key] = make_processors(self.policy, stats)
        self.preprocessor, self.postprocessor = self.cached.processors[key]

    def load_weights(self, weights: dict) -> None:
        set_trainable(self.policy, weights)

    def start_weights(self) -> dict:
        return decode(self.start.bits)

    def trainable_weights(self) -> dict:
        return dict(get_trainable(self.policy))

    def statistics(self) -> dict:
        """What this node contributes to the federation's normalization (zk0.data.stats)."""
        return node_stats(self.dataset_stats, self.policy.config)

    def identity(self) -> NodeIdentity:
        return NodeIdentity(str(self.data.uri), tuple(self.cameras), self.rename_via, self.start.digest)

    def check_cameras(self, federation_cameras: list[str]) -> None:
        reason = check_cameras(self.cameras, federation_cameras, self.rename_via)
        if reason:
            raise CameraError(f"dataset {self.data.uri}: {reason}")

    @property
    def has_heldout(self) -> bool:
        return bool(self.data.heldout_episodes)

    def _split(self, name: str):
        splits = self.cached.splits
        if name not in splits:
            episodes = self.data.train_episodes if name == "train" else self.data.heldout_episodes
            split = open_split(self.data, episodes, self.policy.config)
            splits[name] = RenamedDataset(split, self.cached.rename_map) if self.cached.rename_map else split
        return splits[name]

    def train_batches(self, seed: int):
        stream = stream_seed(self.config.seed + seed, self.data)
        return infinite_batches(self._split("train"), self.config.batch_size, self.config.num_workers, stream)

    def heldout_batches(self):
        return fixed_batches(self._split("heldout"), self.config.batch_size, self.config.num_workers, self.config.eval_batches)


@dataclass
class _CachedNode:
    data: NodeData
    rename_map: dict = field(default_factory=dict)  # node-config rename-map or run-config rename-maps (zk0.data.cameras)
    processors: dict = field(default_factory=dict)  # stats fingerprint -> (preprocessor, postprocessor)
    splits: dict = field(default_factory=dict)


def node_session(context: Context) -> NodeSession:
    """This node's session for this message; `startup_seconds` is what getting it cost."""
    started = time.perf_counter()
    _apply_threads(context.node_config)
    config = run_config(context.run_config)
    node_config = dict(context.node_config)
    uri = node_dataset(config, node_config)
    rename_json, rename_via = _rename_map(config, node_config, uri)
    node = _cached_node(config, uri, rename_json)
    policy, start = _shared_policy(config, node.data.meta, node.rename_map)
    session = NodeSession(config, node.data, policy, start, node, startup_seconds=0.0, rename_via=rename_via)
    session.startup_seconds = time.perf_counter() - started
    return session


def run_config(values) -> RunConfig:
    """The run's config, parsed and checked once per run: every message of a run carries the
    same values, so later messages get the parsed object back."""
    return _parsed_run_config(tuple(sorted(dict(values).items())))


@lru_cache(maxsize=MAX_CACHED_NODES)
def _parsed_run_config(items: tuple) -> RunConfig:
    return RunConfig.from_run_config(dict(items))


def _rename_map(config: RunConfig, node_config: dict, uri: DatasetURI) -> tuple[str, str]:
    """The node's camera mapping (JSON) and the way it is given: node-config `rename-map` in
    deployment; in simulation, where a node's config holds only its partition, run-config `rename-maps`."""
    if "dataset-uri" in node_config:
        return str(node_config.get("rename-map", "")), "node-config"
    return config.rename_map_json(uri), "run-config"


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
def _cached_node(config: RunConfig, uri: DatasetURI, rename_json: str) -> _CachedNode:
    return _CachedNode(open_node_data(uri, config.action_dim, config.heldout_episodes, config.state_dim), parse_rename_map(rename_json))


_policy: dict[tuple, tuple[object, StartModel]] = {}


def _shared_policy(config: RunConfig, meta, rename_map: dict[str, str]) -> tuple[object, StartModel]:
    """One policy per process (with its weights as loaded), rebuilt only when the model, device,
    (renamed) dataset features or LoRA settings change."""
    device = resolve_device(config.device)
    features = tuple(sorted((key, tuple(spec["shape"])) for key, spec in renamed(meta.features, rename_map).items()))
    key = (config.model, device, features, config.lora)
    if key not in _policy:
        _policy.clear()
        policy = load_policy(config.model, meta, device, rename_map, config.lora)
        weights = get_trainable(policy)
        _policy[key] = policy, StartModel(encode(weights, "bf16"), transfer.digest(weights))
    return _policy[key]
