"""A round's accepted updates, combined as they arrive.

`RunningAverage` (the averaging aggregations: fedprox, fedavgm, the FedOpt family) decodes
each update one tensor at a time and folds it into a sum of weighted deltas from the
broadcast, held in 64-bit fixed point. The server then holds the broadcast, the sum (2 x
the fp32 trainable size) and one tensor of one update, whatever the number of nodes.
Integer sums are exact, which buys two things float sums cannot give:
- the same updates give the same bits in any order (replies arrive in any order; zk0's
  runs are bitwise reproducible);
- an update can be taken out again exactly. The norm rules need the round's median update
  norm, known only once the round closes: every update is folded when it arrives, its
  compact bytes wait on disk (`spool`), and the few the rules reject or clip are decoded
  again and subtracted (a clipped one is then folded in again, times its factor).
Fixed point costs range, not precision: a weighted delta is rounded to 2^-36 (1.5e-11,
far below an fp32 weight's resolution) and may not exceed 2^12 in magnitude (a node moving
a weight by 4096 in one round is rejected), so 2^15 updates fit in a round's sum.

`AllUpdates` (median, trimmed mean, Krum) needs every update at once: it keeps each one
decoded (the fp32 trainable size per node) for Flower's class (`aggregate` hands either
pool to it); `check_memory` refuses a round whose updates would not fit.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from zk0.wire import transfer
from zk0.wire.codec import CodecError
from zk0.wire.protocol import ARRAYS, METRICS, TrainReport, array_record
from zk0.server.errors import FederationError
from zk0.server.validation import Rejected, check_arrays, check_finite, update_norm

QUANTUM_BITS = 36
MAX_DELTA = 2.0**12
MAX_UPDATES = 2 ** (63 - QUANTUM_BITS - 12)
# fp32 copies of the trainable weights a robust aggregation holds per node: the decoded
# update, and Flower's class's own (it stacks or copies them all to aggregate).
HELD_COPIES = 2


def available_memory() -> int:
    """Bytes of memory available for new allocations without swapping (psutil: Linux's MemAvailable)."""
    import psutil

    return psutil.virtual_memory().available


def check_memory(server_round: int, aggregation: str, trainable_bytes: int, sampled: int) -> None:
    """A robust aggregation holds every update: FederationError for a round whose updates would not fit."""
    needed, free = HELD_COPIES * trainable_bytes * sampled, available_memory()
    if needed > free:
        raise FederationError(
            f"round {server_round}: aggregation '{aggregation}' holds every update at once: "
            f"{sampled} nodes need {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB of memory is available; lower "
            f"fraction-train / min-train-clients, or use fedprox or fedavgm (they fold updates as they arrive)"
        )


def check_delta(name: str, delta: np.ndarray) -> str | None:
    """A delta that may enter the fixed-point sum: finite, and no weight moved by more than MAX_DELTA."""
    if delta.size == 0:
        return None
    low, high = float(delta.min()), float(delta.max())
    if -MAX_DELTA <= low and high <= MAX_DELTA:
        return None
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = delta.size - int(np.count_nonzero(np.isfinite(delta)))
        return f"tensor '{name}' has {bad} non-finite value(s) (NaN or inf)"
    return f"tensor '{name}' moves a weight by {max(-low, high):.4g}, more than the {MAX_DELTA:g} one round may"


class RunningAverage:
    """The weighted average of the updates folded so far (weights: each node's num-examples)."""

    def __init__(self, reference: Mapping[str, np.ndarray], max_examples: int, spool: Path | None = None) -> None:
        """`reference`: the broadcast every update is a delta from. `max_examples`: the largest
        num-examples a node may report. `spool`: where compact updates wait so they can be
        taken out again (None: the system's temporary directory)."""
        self.reference = reference
        self.max_examples = max_examples
        self.sums = {name: np.zeros(value.shape, np.int64) for name, value in reference.items()}
        self.examples: dict[int, int] = {}
        self.norms: dict[int, float] = {}  # as sent, before any clip
        self.factors: dict[int, float] = {}  # what `scale` multiplied an update by
        self._spool_parent = spool
        self._spool: Path | None = None  # made for the first update

    def _fixed(self, delta: np.ndarray, weight: float) -> np.ndarray:
        scaled = delta * (weight / self.max_examples * 2.0**QUANTUM_BITS)
        return np.rint(scaled, out=scaled).astype(np.int64)

    def _fold(self, update: Mapping[str, np.ndarray], examples: int, sign: int,
              only: set[str] | None = None, factor: float = 1.0) -> Iterator[tuple[str, float]]:
        """Adds (sign 1) or subtracts (sign -1) `factor` x the update tensor by tensor (`only`:
        just those tensors); yields each tensor's name and squared norm (before the factor) once
        it is folded. Raises CodecError or Rejected before folding a tensor that may not enter."""
        for name, delta in transfer.update_deltas(update, self.reference):
            if only is not None:
                if not only:
                    return
                if name not in only:
                    continue
                only.discard(name)
            reason = check_delta(name, delta)
            if reason:
                raise Rejected(reason)
            squared = float(np.dot(delta.ravel(), delta.ravel()))
            fixed = self._fixed(delta, examples * factor)
            if sign > 0:
                self.sums[name] += fixed
            else:
                self.sums[name] -= fixed
            yield name, squared

    def add(self, node: int, update: Mapping[str, np.ndarray], examples: int) -> float:
        """Folds a node's update in and returns its norm; Rejected (nothing folded) if it may not enter."""
        if node in self.examples:
            raise ValueError(f"node {node} is already in the average")
        if len(self.examples) >= MAX_UPDATES:
            raise Rejected(f"the round already holds {MAX_UPDATES} updates, the most one sum can")
        folded: set[str] = set()
        squared = 0.0
        try:
            for name, tensor_squared in self._fold(update, examples, 1):
                folded.add(name)
                squared += tensor_squared
        except (Rejected, CodecError) as err:
            if folded:  # what was folded comes out again
                for _ in self._fold(update, examples, -1, only=folded):
                    pass
            raise Rejected(str(err)) from None
        self.examples[node], self.norms[node] = examples, math.sqrt(squared)
        if self._spool is None:
            if self._spool_parent is not None:
                self._spool_parent.mkdir(parents=True, exist_ok=True)
            self._spool = Path(tempfile.mkdtemp(prefix="zk0-round-", dir=self._spool_parent))
        np.savez(self._spool / f"{node}.npz", **update)
        return self.norms[node]

    def remove(self, node: int) -> None:
        """Takes a folded update out again, exactly (its compact bytes come back from the spool)."""
        for _ in self._fold(self._spooled(node), self.examples.pop(node), -1, factor=self.factors.pop(node, 1.0)):
            pass
        del self.norms[node]
        (self._spool / f"{node}.npz").unlink()

    def scale(self, node: int, factor: float) -> None:
        """Replaces a folded update by `factor` x it, exactly: it is taken out as it was folded and
        folded in again with the factor (the same bits whatever order the updates came in)."""
        update, examples = self._spooled(node), self.examples[node]
        for _ in self._fold(update, examples, -1, factor=self.factors.get(node, 1.0)):
            pass
        for _ in self._fold(update, examples, 1, factor=factor):
            pass
        self.factors[node] = factor

    def _spooled(self, node: int) -> dict[str, np.ndarray]:
        with np.load(self._spool / f"{node}.npz", allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}

    @property
    def total_examples(self) -> int:
        return sum(self.examples.values())

    def average(self) -> Iterator[tuple[str, np.ndarray]]:
        """The reference plus the weighted mean delta, in fp32, tensor by tensor. Each tensor's
        sum is released as its average comes: the last step of a round never holds both whole."""
        if not self.examples:
            raise ValueError("no update to average")
        factor = 2.0**-QUANTUM_BITS * self.max_examples / self.total_examples
        for name in self.reference:
            total = self.sums.pop(name)
            yield name, (self.reference[name].astype(np.float64) + total * factor).astype(np.float32)

    def close(self) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            if self._spool_parent is not None:
                with contextlib.suppress(OSError):  # not empty: another pool still uses it
                    self._spool_parent.rmdir()
            self._spool = None


class AllUpdates:
    """Every accepted update decoded to fp32 weights, for an aggregation that needs them all."""

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self.reference = reference
        self.weights: dict[int, dict[str, np.ndarray]] = {}
        self.examples: dict[int, int] = {}
        self.norms: dict[int, float] = {}

    def add(self, node: int, update: Mapping[str, np.ndarray], examples: int) -> float:
        try:
            values = transfer.decode_update(update, self.reference)
        except CodecError as err:
            raise Rejected(str(err)) from None
        reason = check_arrays(values, self.reference) or check_finite(values)
        if reason:
            raise Rejected(reason)
        self.weights[node], self.examples[node] = values, examples
        self.norms[node] = update_norm(values, self.reference)
        return self.norms[node]

    def remove(self, node: int) -> None:
        del self.weights[node], self.examples[node], self.norms[node]

    def scale(self, node: int, factor: float) -> None:
        """The node's update (its weights' difference from the reference) times `factor`."""
        self.weights[node] = {name: (base + np.float32(factor) * (self.weights[node][name] - base)).astype(np.float32)
                              for name, base in self.reference.items()}

    @property
    def total_examples(self) -> int:
        return sum(self.examples.values())

    def close(self) -> None:
        self.weights.clear()


def for_aggregation(streams: bool, reference: Mapping[str, np.ndarray], max_examples: int,
                    spool: Path | None) -> RunningAverage | AllUpdates:
    """The round's pool: a running average for an aggregation that `streams`, else every update."""
    return RunningAverage(reference, max_examples, spool) if streams else AllUpdates(reference)


def aggregate(server_round: int, accepted: Mapping[int, TrainReport], order: list[int], pool: RunningAverage | AllUpdates,
              aggregate_train: Callable, steps: bool) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """What Flower's class (its `aggregate_train`) makes of the accepted updates, taken in `order`
    (dataset order: float sums depend on the order; node ids differ between runs). A running
    average reaches it as one reply, weighted by every node's examples together; a plain
    weighted average of one reply is that reply, so a class that adds no server step (not
    `steps`: FedAvg, FedProx) is skipped, sparing copies of the model. Every update: fp32
    weights in the global model's tensor order (Krum compares flattened concatenations), the
    metrics every reply shares."""
    common = sorted(set.intersection(*(set(accepted[n].metrics) for n in order)))
    if isinstance(pool, RunningAverage):
        total = pool.total_examples
        metrics = MetricRecord({"num-examples": total, **{
            key: sum(accepted[n].metrics[key] * accepted[n].num_examples for n in order) / total for key in common}})
        arrays = ArrayRecord({name: Array(value) for name, value in pool.average()})
        if not steps:
            return arrays, metrics
        reply = Message(RecordDict({ARRAYS: arrays, METRICS: metrics}), dst_node_id=order[0],
                        message_type=MessageType.TRAIN)
        stepped, metrics = aggregate_train(server_round, [reply])
        # FedOpt's step comes back in float64 (numpy 2 promotes its float64 scalars): the
        # global model stays fp32.
        return ArrayRecord({name: Array(array.numpy().astype(np.float32, copy=False))
                            for name, array in stepped.items()}), metrics
    messages = []
    for node in order:
        report, weights = accepted[node], pool.weights[node]
        metrics = {"num-examples": report.num_examples, **{k: report.metrics[k] for k in common}}
        content = RecordDict({ARRAYS: array_record({name: weights[name] for name in pool.reference}),
                              METRICS: MetricRecord(metrics)})
        messages.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN))
    return aggregate_train(server_round, messages)
