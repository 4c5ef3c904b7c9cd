"""Checks a training reply must pass before it may enter the aggregate.

Pure functions on numpy arrays and plain numbers: each `check_*` returns None when the
reply passes, else a short reason for the round's record. The server applies them in
`zk0.strategy`; what they guard against is one node (faulty or hostile) poisoning the
global model: a wrong structure, NaN/inf values, an update far larger than the other
nodes', or an inflated sample count that would buy it more weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

import numpy as np

# With fewer replies the median of the update norms says nothing about which one is odd
# (with two, a huge update drags the median up to half its own norm).
MIN_REPLIES_FOR_NORM_RULE = 3

Key = TypeVar("Key")


def check_arrays(update: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> str | None:
    """Exactly the expected tensor names, each with the expected shape and dtype."""
    missing = [name for name in expected if name not in update]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"missing tensor '{missing[0]}'{more}"
    unexpected = [name for name in update if name not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        return f"unexpected tensor '{unexpected[0]}'{more}"
    for name, reference in expected.items():
        value = update[name]
        if value.shape != reference.shape:
            return f"tensor '{name}' has shape {tuple(value.shape)}, expected {tuple(reference.shape)}"
        if value.dtype != reference.dtype:
            return f"tensor '{name}' has dtype {value.dtype}, expected {reference.dtype}"
    return None


def check_finite(update: Mapping[str, np.ndarray]) -> str | None:
    """Every value finite (no NaN, no inf)."""
    for name, value in update.items():
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            return f"tensor '{name}' has {bad} non-finite value(s) (NaN or inf)"
    return None


def update_norm(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """‖update − reference‖₂ over all tensors, in float64 (float32 sums overflow on large updates)."""
    total = 0.0
    for name, base in reference.items():
        diff = (update[name].astype(np.float64) - base).ravel()
        total += float(np.dot(diff, diff))
    return math.sqrt(total)


def norm_outliers(norms: Mapping[Key, float], max_ratio: float) -> dict[Key, str]:
    """Replies whose update norm exceeds `max_ratio` × the round's median norm, with the reason.

    Off when `max_ratio` is 0 or fewer than MIN_REPLIES_FOR_NORM_RULE norms are given.
    """
    if max_ratio == 0 or len(norms) < MIN_REPLIES_FOR_NORM_RULE:
        return {}
    median = float(np.median(list(norms.values())))
    return {
        key: f"update norm {norm:.4g} exceeds {max_ratio:g} x the round's median update norm {median:.4g}"
        for key, norm in norms.items()
        if norm > max_ratio * median
    }


def check_metrics(metrics: Mapping[str, object], max_examples: int, weight_key: str = "num-examples") -> str | None:
    """Every metric a finite number (or list of them); `weight_key` a single number in [1, max_examples].

    `max_examples` is what the node could have used (local-steps × batch-size for training):
    a node claiming more is lying about its weight in the average.
    """
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            return f"metric '{key}' is not a finite number"
    if weight_key not in metrics:
        return f"metrics lack '{weight_key}'"
    claimed = metrics[weight_key]
    if isinstance(claimed, list):
        return f"'{weight_key}' is a list, expected one number"
    if claimed < 1:
        return f"'{weight_key}' is {claimed:g}, expected >= 1"
    if claimed > max_examples:
        return f"'{weight_key}' is {claimed:g}, more than the {max_examples} the node could have used"
    return None
