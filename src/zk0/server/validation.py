"""Checks a training reply must pass before it may enter the aggregate.

Pure functions on numpy arrays, plain numbers and zk0.wire.protocol's typed replies: each
`check_*` returns None when the reply passes (or raises `Rejected`), else a short reason for
the round's record; `screen_reply` hands a passing report to the round's pool
(zk0.server.accumulate), which decodes and checks it tensor by tensor.
zk0.server.screening applies them; what they guard against is one node (faulty or hostile)
poisoning the global model: a wrong structure, NaN/inf values, an update far larger than
the other nodes', or an inflated sample count that would buy it more weight. Once the
round's replies are in, `norm_clips` bounds what a minority can do with updates that pass:
each counts with at most a few times the round's median norm (see its docstring).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import DEBUG
from typing import Protocol, TypeVar

import numpy as np
from flwr.common import log

from zk0.wire import transfer
from zk0.wire.codec import CodecError
from zk0.wire.protocol import ProtocolError, TrainReport

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
    median = _median(norms)
    return {
        key: f"update norm {norm:.4g} exceeds {max_ratio:g} x the round's median update norm {median:.4g}"
        for key, norm in norms.items()
        if norm > max_ratio * median
    }


def norm_clips(norms: Mapping[Key, float], ratio: float) -> tuple[float, dict[Key, float]]:
    """The round's clip norm (`ratio` × the median of `norms`) and, for each update above it, the
    factor that scales it down to that norm; (inf, {}) when `ratio` is 0 or fewer than
    MIN_REPLIES_FOR_NORM_RULE norms are given.

    The bound: every update then counts with a norm of at most the clip norm; the median of the
    norms lies within the honest nodes' norms while they are a majority, so f colluding nodes
    whose updates hold a share s of the weight move the weighted average from the honest
    nodes' own (clipped) average by at most s × (clip norm + the norm of that average): with
    nodes of equal weight, f/n × (ratio × the largest honest norm + the honest average's norm),
    in any direction they choose.
    """
    if ratio == 0 or len(norms) < MIN_REPLIES_FOR_NORM_RULE:
        return math.inf, {}
    limit = ratio * _median(norms)
    return limit, {key: limit / norm for key, norm in norms.items() if norm > limit}


def _median(norms: Mapping[Key, float]) -> float:
    return float(np.median(list(norms.values())))


class Rejected(ValueError):
    """A reply that may not enter the aggregate; the message is the reason."""


def check_report(report: TrainReport, codec: str, max_examples: int) -> None:
    """What a TrainReport claims, before anything is decoded; `Rejected` if it may not enter."""
    if report.num_examples > max_examples:
        raise Rejected(f"'num-examples' is {report.num_examples:g}, more than the {max_examples} the node could have used")
    if transfer.is_delta(report.update) != (codec not in transfer.FULL_CODECS):
        raise Rejected(f"update not encoded with the run's update-codec '{codec}'")


class Pool(Protocol):
    """Where accepted updates go (zk0.server.accumulate): decoded, checked, kept or folded in."""

    def add(self, node: int, update: Mapping[str, np.ndarray], examples: int) -> float: ...


@dataclass
class Screened:
    """A training reply that passed and entered the pool: what the node reported, its update norm."""

    report: TrainReport
    norm: float


def guarded(check: Callable, *args) -> tuple[object | None, str | None]:
    """`check(*args)` on what a node sent, and None; or None and why it failed. Never raises:
    whatever a reply holds, the worst it can do is cost its node the round."""
    try:
        return check(*args), None
    except (ProtocolError, Rejected, CodecError) as err:
        return None, str(err)
    except Exception as err:  # a reply no check foresaw is still only that node's problem
        log(DEBUG, "unforeseen reply: %s", traceback.format_exc())
        return None, f"malformed reply ({type(err).__name__})"


def screen_reply(content, pool: Pool, node: int, codec: str, max_examples: int) -> Screened | str:
    """A training reply's content, parsed (zk0.wire.protocol), checked (`check_report`) and added to
    `pool` (which decodes and checks every tensor), or the reason it may not enter."""
    report, reason = guarded(TrainReport.from_content, content)
    if report is None:
        return reason
    _, reason = guarded(check_report, report, codec, max_examples)
    if reason is None:
        norm, reason = guarded(pool.add, node, report.update, report.num_examples)
    return reason if reason is not None else Screened(report, norm)
