"""A node's LeRobot dataset: open it from its URI, check it fits the policy, split it.

The last `heldout_episodes` episodes are never trained on: they are the node's own
evaluation data. Action chunks come from LeRobot's own `resolve_delta_timestamps` over the
policy config, as LeRobot's training script does.

A `local:` dataset never touches the network: LeRobot downloads whatever file of a
dataset it cannot read, so every file it will read is checked first, and a split is
opened so that a file found missing later is an error, not a download. Its videos are
decoded at their first and last frame, so a truncated file is named before training.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from zk0.data.uri import DatasetURI

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata


class DatasetError(ValueError):
    """A dataset that cannot be opened or does not fit the federation's policy."""


@dataclass
class NodeData:
    uri: DatasetURI
    meta: "LeRobotDatasetMetadata"
    train_episodes: list[int]
    heldout_episodes: list[int]

    @functools.cached_property
    def stats(self) -> dict:
        """Normalization statistics of the training episodes alone (`training_stats`)."""
        return training_stats(self.meta, self.train_episodes)

    @functools.cached_property
    def identity(self) -> str:
        """What this dataset is, wherever it lies (zk0.data.dataset.stream_seed)."""
        return dataset_identity(self.uri)


def load_metadata(uri: DatasetURI) -> "LeRobotDatasetMetadata":
    """Read a dataset's LeRobot metadata, or raise a one-line DatasetError."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    if uri.scheme == "local":
        if not uri.root.is_dir():
            raise DatasetError(f"dataset {uri}: directory does not exist; pass the root of a LeRobot dataset")
        if not (uri.root / "meta" / "info.json").is_file():
            raise DatasetError(f"dataset {uri}: no meta/info.json, not a LeRobot dataset root (format v3.0)")
        _require_files(uri, [Path("meta/tasks.parquet")])
        if not any((uri.root / "meta" / "episodes").glob("*/*.parquet")):
            raise DatasetError(f"dataset {uri}: no meta/episodes/chunk-*/file-*.parquet; the dataset is incomplete")
    try:
        return LeRobotDatasetMetadata(uri.repo_id, root=uri.root)
    except Exception as err:  # LeRobot/hub raise many types; the operator needs one line
        hint = "check the repo id and network, or HF_HUB_OFFLINE with a filled HF cache"
        if uri.scheme == "local":
            hint = "check that it is a LeRobot v3.0 dataset"
        raise DatasetError(f"dataset {uri}: cannot read LeRobot metadata ({type(err).__name__}: {err}); {hint}") from None


def check_features(uri: DatasetURI, meta: "LeRobotDatasetMetadata", action_dim: int, state_dim: int = 0) -> None:
    """The federation trains one policy: every dataset must speak the same robot's language."""
    features = meta.features
    for key in ("observation.state", "action"):
        if key not in features:
            raise DatasetError(f"dataset {uri}: no '{key}' feature; SO-100/SO-101 datasets record it")
    # A joint-space arm's state has the action's shape (state-dim 0); a simulated one may carry
    # more (zk0.sim: the cube's position too).
    for key, dim, setting in (("observation.state", state_dim or action_dim, "state-dim"), ("action", action_dim, "action-dim")):
        shape = tuple(features[key]["shape"])
        if shape != (dim,):
            raise DatasetError(
                f"dataset {uri}: '{key}' has shape {shape}, the federation expects ({dim},); "
                f"set run-config {setting} or use a dataset of the same arm"
            )
    if not meta.camera_keys:
        raise DatasetError(f"dataset {uri}: no camera feature (observation.images.*); SmolVLA needs at least one")


def _require_files(uri: DatasetURI, paths: list[Path]) -> None:
    """A local dataset's files that LeRobot would otherwise try to download when missing."""
    missing = sorted({path for path in paths if not (uri.root / path).is_file()})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"dataset {uri}: file {missing[0]} is missing{more}; the dataset is incomplete")


def episode_files(meta: "LeRobotDatasetMetadata", episodes: list[int]) -> list[Path]:
    """The data parquet and video files (relative to the root) that hold these episodes."""
    paths = {meta.get_data_file_path(ep) for ep in episodes}
    paths |= {meta.get_video_file_path(ep, key) for key in meta.video_keys for ep in episodes}
    return sorted(paths)


def check_videos(uri: DatasetURI, meta: "LeRobotDatasetMetadata") -> None:
    """Every video file of a local dataset decodes at its first and last frame, with the decoder
    LeRobot reads it with (torchcodec): a truncated or corrupt file is named here, not mid-training."""
    from torchcodec.decoders import VideoDecoder

    paths = {meta.get_video_file_path(ep, key) for key in meta.video_keys for ep in range(meta.total_episodes)}
    for path in sorted(paths):
        try:
            decoder = VideoDecoder(str(uri.root / path))
            decoder[0]
            decoder[-1]
        except Exception as err:  # torchcodec raises RuntimeError/ValueError with FFmpeg's words
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise DatasetError(
                f"dataset {uri}: video {path} cannot be decoded ({detail}); the file is truncated or corrupt, "
                f"copy it again from the recording"
            ) from None


def training_stats(meta: "LeRobotDatasetMetadata", episodes: list[int]) -> dict:
    """The dataset's statistics with every non-visual feature's replaced by LeRobot's
    `aggregate_stats` over these episodes' own statistics (meta/episodes keeps them per
    episode), so held-out frames never shape the normalization. Camera statistics stay the
    dataset's: SmolVLA does not normalize images."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from lerobot.datasets.compute_stats import aggregate_stats

    table = pa.concat_tables([pq.read_table(path) for path in sorted((meta.root / "meta" / "episodes").glob("*/*.parquet"))])
    table = table.filter(pc.is_in(table["episode_index"], pa.array(episodes, type=table["episode_index"].type)))
    if table.num_rows != len(set(episodes)):
        raise DatasetError(f"dataset {meta.repo_id}: meta/episodes holds {table.num_rows} of the {len(set(episodes))} "
                           f"episodes it should; the dataset is incomplete")
    columns: dict[str, dict[str, list]] = {}  # feature -> stat -> one value per episode
    for feature, spec in meta.features.items():
        if spec["dtype"] in ("image", "video"):
            continue
        prefix = f"stats/{feature}/"
        columns[feature] = {name[len(prefix):]: table[name].to_pylist() for name in table.column_names if name.startswith(prefix)}
        if not columns[feature]:
            raise DatasetError(f"dataset {meta.repo_id}: meta/episodes has no statistics for '{feature}'; "
                               f"recompute them with LeRobot")
    per_episode = [{feature: {key: np.asarray(values[row], dtype=np.float64) for key, values in stats.items()}
                    for feature, stats in columns.items()} for row in range(table.num_rows)]
    return {**(meta.stats or {}), **aggregate_stats(per_episode)}


def open_node_data(uri: DatasetURI, action_dim: int, heldout_episodes: int, state_dim: int = 0) -> NodeData:
    meta = load_metadata(uri)
    check_features(uri, meta, action_dim, state_dim)
    episodes = uri.episodes(meta.total_episodes)  # all, or the URI's shard
    if uri.scheme == "local":
        _require_files(uri, episode_files(meta, episodes))
        check_videos(uri, meta)
    if heldout_episodes >= len(episodes):
        raise DatasetError(
            f"dataset {uri}: has {len(episodes)} episodes, cannot hold out {heldout_episodes} and still train; "
            f"lower run-config heldout-episodes"
        )
    split = len(episodes) - heldout_episodes
    return NodeData(uri=uri, meta=meta, train_episodes=episodes[:split], heldout_episodes=episodes[split:])


def open_split(data: NodeData, episodes: list[int], policy_config) -> "LeRobotDataset":
    """The episodes as a LeRobotDataset, under the dataset's own feature names (zk0.data.cameras
    renames samples afterwards)."""
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    deltas = resolve_delta_timestamps(policy_config, data.meta)
    dataset_class = _local_dataset_class() if data.uri.scheme == "local" else LeRobotDataset
    return dataset_class(data.uri.repo_id, root=data.uri.root, episodes=episodes, delta_timestamps=deltas)


@functools.cache
def _local_dataset_class():
    """LeRobotDataset for a dataset on this machine: what LeRobot 0.4.4 would download
    (data it cannot load, episodes or videos it cannot find) is a DatasetError instead."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    class LocalLeRobotDataset(LeRobotDataset):
        def load_hf_dataset(self):
            try:
                return super().load_hf_dataset()
            except (FileNotFoundError, NotADirectoryError, ValueError) as err:  # ValueError: no rows at all
                raise DatasetError(
                    f"dataset local:{self.root}: cannot read episodes {self.episodes} from its data files "
                    f"({type(err).__name__}: {err}); the dataset is incomplete"
                ) from None

        def _check_cached_episodes_sufficient(self) -> bool:
            if not super()._check_cached_episodes_sufficient():
                raise DatasetError(
                    f"dataset local:{self.root}: its files do not hold every episode and video its metadata "
                    f"lists; the dataset is incomplete"
                )
            return True

    return LocalLeRobotDataset


# The files that say what a local dataset holds: its schema and counts, its tasks, and each
# episode's length, location and statistics (which follow from its frames).
IDENTITY_FILES = ("meta/info.json", "meta/tasks.parquet", "meta/episodes/*/*.parquet")


def dataset_identity(uri: DatasetURI) -> str:
    """What a dataset is, never where it lies: the repo id of a hub dataset; for a local one,
    a SHA-256 of its metadata files' bytes (named relative to its root), so copies anywhere
    agree and other data differs."""
    if uri.scheme == "hf":
        return f"hf:{uri.repo_id}"
    digest = hashlib.sha256()
    for pattern in IDENTITY_FILES:
        for path in sorted(uri.root.glob(pattern)):
            digest.update(f"{path.relative_to(uri.root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"sha256:{digest.hexdigest()}"


def stream_seed(seed: int, data: NodeData) -> int:
    """The seed of one node's round: `seed` mixed with what its dataset is and which episodes it
    trains on, so nodes draw different shuffles and noise, and a dataset copied elsewhere draws
    the same; 32 bits, as NumPy's seeding requires."""
    key = f"{seed}:{data.identity}:{data.train_episodes}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


def infinite_batches(dataset, batch_size: int, num_workers: int, seed: int) -> Iterator[dict]:
    """Shuffled batches forever: local training counts optimizer steps, not epochs.

    Everything random in the training these batches feed follows from `seed` (a node's
    comes from `stream_seed`) and the dataset. Starting the stream (the first `next`) seeds
    Python's, NumPy's and torch's generators with LeRobot's `set_seed`, as its training
    script does: SmolVLA draws its flow-matching noise and time from torch's global
    generator, and a process may have served other nodes or rounds before. The DataLoader shuffles with its own generator,
    which also seeds its workers (torch seeds `random`, NumPy and torch in each worker
    from it), so `num-workers` > 0 stays reproducible.
    """
    from lerobot.utils.random_utils import set_seed

    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    while True:
        yield from loader


def fixed_batches(dataset, batch_size: int, num_workers: int, max_batches: int) -> torch.utils.data.DataLoader:
    """The same evenly spaced samples every evaluation, so metrics are comparable across rounds."""
    count = min(len(dataset), batch_size * max_batches)
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
    subset = torch.utils.data.Subset(dataset, indices)
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
