"""Federated normalization statistics: one set of units for the whole federation.

Each node reports its dataset's statistics for the features the policy normalizes
(SmolVLA: `observation.state` and `action`, mean/std; images are not normalized):
per feature its frame count, mean, std, min and max over its training episodes (never
the held-out ones, zk0.data.dataset.training_stats) -- a few numbers per joint, never a frame.
The server checks each report (`check`), then pools them with LeRobot's `aggregate_stats`
(count-weighted mean, parallel variance) over values `limits` bounds first; every node
trains with the pooled statistics, the server evaluates with them and the checkpoints ship
them, and only them, in their processors.

What one report may count for, per joint (`limits`; n reports, t = (n - 1) // 2):
- the core: the middle order statistics of the reported means, m_(t+1) .. m_(n-t) (the
  median for odd n, the two middle means for even n);
- the scale S: the median over nodes of sqrt(std^2 + d^2), d the node's mean's distance
  from the core (how far the median node's frames lie from the core: within-node spread
  and, for nodes whose means differ, between-node spread);
- a node's weight is its frame count, at most the lower median count (the weights sum to
  W; a node's share is its weight / W);
- its mean counts as at most REACH_SHARE / share x S beyond the core, and never more
  than MAX_REACH x S: no node pulls the pooled mean more than REACH_SHARE x S beyond the
  core (at equal weights: 1.6 S beyond it with 4 nodes, 2 S with 5, 4 S with 10, 8 S from
  20 on);
- its std counts as at most STD_REACH x S, its min and max as at most RANGE_REACH x S
  beyond the core (and never inside its own counted mean).
Where nothing is limited (alike nodes of equal size, and any single node) the pool is
LeRobot's exact one. Nothing here refuses a node: a far report is held to the limits.

The bound (f colluding reports with f <= t, i.e. a minority; the others honest, H):
- the core's ends are order statistics with at least t + 1 reports on either side, so
  both lie within the honest nodes' means [min_H m, max_H m]; S is a median, so it lies
  within the honest nodes' values of sqrt(std^2 + d^2), each at most
  sqrt(max_H std^2 + (max_H m - min_H m)^2);
- the pooled mean is the honest nodes' counted means (each within [min_H m, max_H m] or
  held towards the core) plus what the f reports pull beyond the core, at most
  REACH_SHARE x S each: it lies in [min_H m - f x REACH_SHARE x S, max_H m + f x REACH_SHARE x S];
- f reports hold a share of the weight of at most f x cap / (f x cap + sum_H min(count, cap)),
  cap the lower median count (at most the largest honest count): f / n with nodes of equal size;
- the pooled std is at most sqrt((STD_REACH x S)^2 + (core width / 2 + max reach)^2), and
  at least what the honest nodes' own counted stds give it over their share of the weight.
No rule can promise, in honest stds, a shift smaller than the distance from the honest mean
to a point that mirror images of honest reports make the centre: the reports are then
symmetric about it, and a rule that treats +x and -x alike must return it (on the demo's
three-node federations: half an honest std for one report of four, one for two of five).
bench/README.md measures the shifts on the demo statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# What leaves a node, per normalized feature (zk0.wire.protocol carries them). Quantiles are not
# sent: SmolVLA normalizes with mean/std and LeRobot can only approximate pooled quantiles.
from zk0.wire.protocol import STAT_KEYS

MAX_FRAMES = 10**9
# A node's pull on the pooled mean beyond the core, in S, whatever its weight.
REACH_SHARE = 0.4
# How far beyond the core any node's mean may count, in S: at 20 nodes and more, where each
# one's share is small, reaches stop growing with the federation.
MAX_REACH = 8.0
# A node's std counts as at most this many S: an honest node's frames spread about as far as
# the median node's (S includes the spread of means, so a node far out has a large S too).
STD_REACH = 2.0
# A node's min and max count as at most this far beyond the core, in S (honest demo and
# demo-shard nodes measured within 13.2 S): no consumer in zk0 (SmolVLA normalizes with mean and std), but the
# checkpoints ship them.
RANGE_REACH = 64.0


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


@dataclass(frozen=True)
class Limits:
    """What `limits` allows one feature's reports, per joint (arrays over joints)."""

    core: tuple[np.ndarray, np.ndarray]  # the middle order statistics of the means
    scale: np.ndarray  # S
    count_cap: float  # the lower median count
    reach: list[np.ndarray]  # per report: how far beyond the core its mean may count


def limits(values: list[dict[str, np.ndarray]]) -> Limits:
    """The limits of one feature's reports (see the module docstring), in their order."""
    n = len(values)
    t = (n - 1) // 2
    means = np.stack([v["mean"] for v in values])
    stds = np.stack([v["std"] for v in values])
    ordered = np.sort(means, axis=0)
    low, high = ordered[t], ordered[n - 1 - t]
    distance = np.maximum(low - means, 0.0) + np.maximum(means - high, 0.0)
    scale = np.median(np.sqrt(stds ** 2 + distance ** 2), axis=0)
    counts = [_count(v) for v in values]
    cap = sorted(counts)[t]
    weights = [min(count, cap) for count in counts]
    total = sum(weights)
    reach = [np.minimum(REACH_SHARE * total / weight, MAX_REACH) * scale for weight in weights]
    return Limits((low, high), scale, cap, reach)


def held(values: dict[str, np.ndarray], limit: Limits, index: int) -> dict[str, np.ndarray]:
    """Report `index` of a feature as it counts in the pool: its weight capped, its mean held
    within reach of the core, its std, min and max bounded."""
    low, high = limit.core
    reach = limit.reach[index]
    mean = np.clip(values["mean"], low - reach, high + reach)
    span = RANGE_REACH * limit.scale
    return {
        "count": np.array([min(_count(values), limit.count_cap)]),
        "mean": mean,
        "std": np.minimum(values["std"], STD_REACH * limit.scale),
        "min": np.minimum(np.maximum(values["min"], low - span), mean),
        "max": np.maximum(np.minimum(values["max"], high + span), mean),
    }


def held_back(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[int, str]:
    """Reports (by index) whose mean or std `pool` held to the limits, with the first such joint:
    for the operator, who may want to look at that node's data."""
    found: dict[int, str] = {}
    for feature in sorted(stats_list[0]):
        values = [stats[feature] for stats in stats_list]
        limit = limits(values)
        for index, value in enumerate(values):
            kept = held(value, limit, index)
            moved = np.flatnonzero((kept["mean"] != value["mean"]) | (kept["std"] != value["std"]))
            if index not in found and moved.size:
                joint = int(moved[0])
                found[index] = (f"'{feature}' joint {joint} (mean {value['mean'][joint]:.4g}, std "
                                f"{value['std'][joint]:.4g}) counts as mean {kept['mean'][joint]:.4g}, std "
                                f"{kept['std'][joint]:.4g}: far from the other nodes'")
    return found


def pool(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Pooled statistics over the nodes' frames (LeRobot's own aggregation) of each report as
    `held` counts it (see the module docstring for the bound)."""
    from lerobot.datasets.compute_stats import aggregate_stats

    if not stats_list:
        raise ValueError("no node reported statistics")
    features = set(stats_list[0])
    for stats in stats_list[1:]:
        if set(stats) != features:
            raise ValueError(f"nodes report different normalized features: {sorted(features)} vs {sorted(stats)}")
    counted = [dict(stats) for stats in stats_list]
    for feature in features:
        values = [stats[feature] for stats in stats_list]
        limit = limits(values)
        for index, stats in enumerate(counted):
            stats[feature] = held(values[index], limit, index)
    pooled = aggregate_stats(counted)  # features in set order, which varies between processes
    return {feature: {key: np.asarray(pooled[feature][key], dtype=np.float64) for key in STAT_KEYS}
            for feature in sorted(pooled)}


def _count(values: dict[str, np.ndarray]) -> float:
    return float(values["count"].reshape(-1)[0])


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
