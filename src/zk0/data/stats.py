"""Federated normalization statistics: one set of units for the whole federation.

Each node reports its dataset's statistics for the features the policy normalizes
(SmolVLA: `observation.state` and `action`, mean/std; images are not normalized):
per feature its frame count, mean, std, min and max over its training episodes (never
the held-out ones, zk0.data.dataset.training_stats) -- a few numbers per joint, never a frame.
The server pools them exactly with LeRobot's `aggregate_stats` (count-weighted mean,
parallel variance), then every node trains with the pooled statistics, the server
evaluates with them and the checkpoints ship them, and only them, in their processors.
"""

from __future__ import annotations

import math

import numpy as np

# What leaves a node, per normalized feature (zk0.wire.protocol carries them). Quantiles are not
# sent: SmolVLA normalizes with mean/std and LeRobot can only approximate pooled quantiles.
from zk0.wire.protocol import STAT_KEYS

# A node's statistics are checked before pooling (`check`), and pooling is robust to one node:
# - no node counts for more than COUNT_CAP x the lower median node's frames (a node claiming
#   10^9 frames would otherwise own the pooled mean and std);
# - with 3 or more nodes, a node whose mean lies more than MEAN_OUTLIER x the federation's
#   spread from the median node's mean, in any joint, is left out. The spread combines the
#   median node's std with the nodes' spread of means (MAD): honest nodes holding a few episodes
#   each differ in mean by more than their own std, and a minority can move neither median.
MAX_FRAMES = 10**9
COUNT_CAP = 4.0
MEAN_OUTLIER = 8.0
MAD_TO_STD = 1.4826  # a normal distribution's std per median absolute deviation
MIN_NODES_FOR_OUTLIERS = 3


def normalized_features(policy_config) -> list[str]:
    """Features the policy's normalizer does not pass through unchanged."""
    from lerobot.configs.types import NormalizationMode

    features = {**policy_config.input_features, **policy_config.output_features}
    mapping = policy_config.normalization_mapping
    return sorted(key for key, feature in features.items() if mapping.get(feature.type.value) != NormalizationMode.IDENTITY)


def node_stats(dataset_stats: dict, policy_config) -> dict[str, dict[str, np.ndarray]]:
    """This node's contribution: the normalized features' statistics, nothing else."""
    stats = {}
    for feature in normalized_features(policy_config):
        if feature not in dataset_stats:
            raise ValueError(f"the dataset has no statistics for '{feature}'; recompute them with LeRobot")
        stats[feature] = {key: np.asarray(dataset_stats[feature][key], dtype=np.float64) for key in STAT_KEYS}
    return stats


def feature_shapes(policy_config) -> dict[str, tuple[int, ...]]:
    """The shape of each normalized feature: what every node's statistics must match."""
    features = {**policy_config.input_features, **policy_config.output_features}
    return {name: tuple(features[name].shape) for name in normalized_features(policy_config)}


def check(stats: dict[str, dict[str, np.ndarray]], shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Why one node's statistics cannot be pooled (None if they can): the federation's
    features and shapes, finite values, 1 <= count <= MAX_FRAMES, std >= 0,
    min <= mean <= max and std <= max - min (true of any data in [min, max])."""
    if set(stats) != set(shapes):
        return f"statistics for features {sorted(stats)}, expected {sorted(shapes)}"
    for feature, shape in shapes.items():
        values = stats[feature]
        count = values["count"]
        if count.size != 1:
            return f"'{feature}' count has {count.size} values, expected 1"
        for key in STAT_KEYS[1:]:
            if values[key].shape != shape:
                return f"'{feature}' {key} has shape {values[key].shape}, expected {shape}"
        if not all(np.isfinite(values[key]).all() for key in STAT_KEYS):
            return f"'{feature}' statistics hold NaN or inf"
        frames = float(count.reshape(-1)[0])
        if not (1 <= frames <= MAX_FRAMES) or frames != math.floor(frames):
            return f"'{feature}' count is {frames:g}, expected a whole number in [1, {MAX_FRAMES}]"
        low, high, mean, std = values["min"], values["max"], values["mean"], values["std"]
        slack = 1e-6 * (np.abs(low) + np.abs(high) + 1.0)  # float rounding of honest statistics
        if (std < 0).any():
            return f"'{feature}' std is negative"
        if (low > high).any() or (mean < low - slack).any() or (mean > high + slack).any():
            return f"'{feature}' mean lies outside [min, max] (or min > max)"
        if (std > high - low + slack).any():
            return f"'{feature}' std exceeds max - min, impossible for real data"
    return None


def outliers(reports: dict, nodes_min: int = MIN_NODES_FOR_OUTLIERS) -> dict:
    """Reports (by key) whose mean is far from the others' (see MEAN_OUTLIER), with the reason."""
    if len(reports) < nodes_min:
        return {}
    found = {}
    features = next(iter(reports.values())).keys()
    for feature in sorted(features):
        means = np.stack([report[feature]["mean"].reshape(-1) for report in reports.values()])
        stds = np.stack([report[feature]["std"].reshape(-1) for report in reports.values()])
        center = np.median(means, axis=0)
        between = MAD_TO_STD * np.median(np.abs(means - center), axis=0)
        spread = np.sqrt(np.median(stds, axis=0) ** 2 + between ** 2)
        for key, mean in zip(reports, means):
            distance = np.abs(mean - center) / np.maximum(spread, 1e-6)
            if key not in found and (distance > MEAN_OUTLIER).any():
                joint = int(np.argmax(distance))
                found[key] = (f"'{feature}' mean of joint {joint} lies {distance[joint]:.3g} x the federation's "
                              f"spread from the median node's (more than {MEAN_OUTLIER:g})")
    return found


def pool(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Pooled statistics over the nodes' frames (LeRobot's own aggregation), each node's weight
    capped at COUNT_CAP x the lower median node's frame count."""
    from lerobot.datasets.compute_stats import aggregate_stats

    if not stats_list:
        raise ValueError("no node reported statistics")
    features = set(stats_list[0])
    for stats in stats_list[1:]:
        if set(stats) != features:
            raise ValueError(f"nodes report different normalized features: {sorted(features)} vs {sorted(stats)}")
    capped = [dict(stats) for stats in stats_list]
    for feature in features:
        counts = [float(stats[feature]["count"].reshape(-1)[0]) for stats in stats_list]
        cap = COUNT_CAP * sorted(counts)[(len(counts) - 1) // 2]
        for stats, count in zip(capped, counts):
            stats[feature] = {**stats[feature], "count": np.array([min(count, cap)])}
    pooled = aggregate_stats(capped)  # features in set order, which varies between processes
    return {feature: {key: np.asarray(pooled[feature][key], dtype=np.float64) for key in STAT_KEYS}
            for feature in sorted(pooled)}


def with_stats(dataset_stats: dict, federation: dict[str, dict[str, np.ndarray]]) -> dict:
    """The dataset's statistics with the normalized features' replaced whole by the federation's:
    no quantile of one dataset rides along with the pool's mean and std into a checkpoint."""
    return {**dataset_stats, **{feature: dict(stats) for feature, stats in federation.items()}}


def fingerprint(stats: dict[str, dict[str, np.ndarray]]) -> str:
    """A short digest, so a node rebuilds its processors only when the statistics change."""
    import hashlib

    digest = hashlib.sha256()
    for feature in sorted(stats):
        for key in STAT_KEYS:
            digest.update(f"{feature}/{key}".encode())
            digest.update(np.ascontiguousarray(stats[feature][key], dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]
