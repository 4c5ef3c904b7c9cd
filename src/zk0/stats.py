"""Federated normalization statistics: one set of units for the whole federation.

Each node reports its dataset's statistics for the features the policy normalizes
(SmolVLA: `observation.state` and `action`, mean/std; images are not normalized):
per feature its frame count, mean, std, min and max -- a few numbers per joint, never
a frame. The server pools them exactly with LeRobot's `aggregate_stats` (count-weighted
mean, parallel variance), then every node trains with the pooled statistics, the
server evaluates with them and the checkpoints ship them in their processors.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

# What leaves a node, per normalized feature. Quantiles are not sent: SmolVLA normalizes
# with mean/std and LeRobot can only approximate pooled quantiles.
STAT_KEYS = ("count", "mean", "std", "min", "max")


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


def pool(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Exact pooled statistics over every node's frames (LeRobot's own aggregation)."""
    from lerobot.datasets.compute_stats import aggregate_stats

    if not stats_list:
        raise ValueError("no node reported statistics")
    features = set(stats_list[0])
    for stats in stats_list[1:]:
        if set(stats) != features:
            raise ValueError(f"nodes report different normalized features: {sorted(features)} vs {sorted(stats)}")
    pooled = aggregate_stats(stats_list)
    return {feature: {key: np.asarray(pooled[feature][key], dtype=np.float64) for key in STAT_KEYS} for feature in pooled}


def with_stats(dataset_stats: dict, federation: dict[str, dict[str, np.ndarray]]) -> dict:
    """The dataset's statistics with the normalized features replaced by the federation's."""
    merged = dict(dataset_stats)
    for feature, stats in federation.items():
        merged[feature] = {**dataset_stats.get(feature, {}), **stats}
    return merged


def to_record(stats: dict[str, dict[str, np.ndarray]]) -> ArrayRecord:
    return ArrayRecord({f"{feature}/{key}": Array(np.asarray(value)) for feature, values in stats.items()
                        for key, value in values.items()})


def from_record(record: ArrayRecord) -> dict[str, dict[str, np.ndarray]]:
    stats: dict[str, dict[str, np.ndarray]] = {}
    for name, array in record.items():
        feature, _, key = name.rpartition("/")
        if key not in STAT_KEYS or not feature:
            raise ValueError(f"unexpected statistics entry '{name}'")
        stats.setdefault(feature, {})[key] = array.numpy()
    for feature, values in stats.items():
        missing = set(STAT_KEYS) - set(values)
        if missing:
            raise ValueError(f"statistics for '{feature}' lack {sorted(missing)}")
    return stats


def fingerprint(stats: dict[str, dict[str, np.ndarray]]) -> str:
    """A short digest, so a node rebuilds its processors only when the statistics change."""
    import hashlib

    digest = hashlib.sha256()
    for feature in sorted(stats):
        for key in STAT_KEYS:
            digest.update(f"{feature}/{key}".encode())
            digest.update(np.ascontiguousarray(stats[feature][key], dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]
