"""The running average (zk0.server.accumulate): exact in any order, updates taken out or clipped
exactly, a rejected update leaves nothing behind, and memory that does not grow with the number
of updates."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from zk0.wire import transfer
from zk0.server.accumulate import MAX_DELTA, QUANTUM_BITS, AllUpdates, RunningAverage
from zk0.wire.codec import ErrorFeedback
from zk0.server.validation import Rejected

SHAPES = {"expert.q.weight": (64, 48), "expert.q.bias": (48,), "state_proj.weight": (48, 6)}
MAX_EXAMPLES = 64


def reference(shapes: dict = SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return transfer.bf16_round({name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()})


def update(seed: int, codec: str = "q3", scale: float = 1e-3, shapes: dict = SHAPES) -> dict[str, np.ndarray]:
    """A node's update as it sends it: `codec`-encoded local weights near the reference."""
    base = reference(shapes)
    rng = np.random.default_rng(seed)
    local = {name: value + rng.normal(0, scale, value.shape).astype(np.float32) for name, value in base.items()}
    return transfer.upload(local, base, codec, ErrorFeedback())


def bits(weights: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {name: value.tobytes() for name, value in weights.items()}


@pytest.mark.parametrize("codec", ["q3", "fp32"])
def test_the_average_is_the_same_bits_in_any_order(codec, tmp_path):
    updates = {node: (update(node, codec), 10 + 9 * node) for node in range(4)}
    results = set()
    for order in itertools.permutations(updates):
        pool = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
        for node in order:
            pool.add(node, *updates[node])
        results.add(tuple(sorted(bits(dict(pool.average())).items())))
        pool.close()
    assert len(results) == 1


def test_the_average_is_the_weighted_mean_within_the_fixed_point_step(tmp_path):
    """Each weighted delta is rounded by at most half a 2^-36 step (scaled by max-examples /
    total examples in the mean); the fp32 result adds at most half an fp32 spacing."""
    updates = {node: (update(node), 5 + 7 * node) for node in range(5)}
    pool = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    for node, (values, examples) in updates.items():
        pool.add(node, values, examples)
    total = sum(examples for _, examples in updates.values())
    decoded = {node: transfer.decode_update(values, reference()) for node, (values, _) in updates.items()}
    average = dict(pool.average())
    for name in SHAPES:
        exact = sum(decoded[node][name].astype(np.float64) * updates[node][1] for node in updates) / total
        fixed_point = len(updates) * 0.5 * 2.0**-QUANTUM_BITS * MAX_EXAMPLES / total
        # decode_update adds each delta to the reference in fp32 (half a spacing of the local weight)
        local = np.max([np.spacing(np.abs(decoded[node][name])) for node in updates], axis=0)
        bound = fixed_point + np.spacing(np.abs(exact).astype(np.float32)) + local
        assert (np.abs(average[name] - exact) <= bound).all()


def test_an_update_taken_out_leaves_exactly_the_others(tmp_path):
    with_b = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    for node in (1, 2, 3):
        with_b.add(node, update(node), 20 + node)
    with_b.remove(2)
    without_b = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    for node in (1, 3):
        without_b.add(node, update(node), 20 + node)
    assert bits(dict(with_b.average())) == bits(dict(without_b.average()))
    assert with_b.examples == without_b.examples and set(with_b.norms) == {1, 3}
    with_b.close()
    without_b.close()
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_clipped_update_counts_as_the_same_bits_in_any_order(tmp_path):
    """Clipping takes an update out as it was folded and folds it in again times its factor: the
    same bits whatever order the updates arrived and were clipped in, and the update counts as
    `factor` x itself within the fixed-point step."""
    updates = {node: (update(node, "q3"), 10 + 9 * node) for node in range(3)}
    results = set()
    for order in itertools.permutations(updates):
        pool = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
        for node in order:
            pool.add(node, *updates[node])
            if node == 0:
                pool.scale(0, 0.3)  # clipped before the others came in, in some orders
        pool.scale(2, 0.25)
        pool.scale(0, 0.5)  # a second clip replaces the first
        results.add(tuple(sorted(bits(dict(pool.average())).items())))
        pool.close()
    assert len(results) == 1
    pool = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    for node in updates:
        pool.add(node, *updates[node])
    pool.scale(1, 0.5)
    total = sum(examples for _, examples in updates.values())
    decoded = {node: transfer.decode_update(values, reference()) for node, (values, _) in updates.items()}
    average = dict(pool.average())
    for name, base in reference().items():
        deltas = {node: decoded[node][name].astype(np.float64) - base for node in updates}
        exact = base + sum(deltas[node] * updates[node][1] * (0.5 if node == 1 else 1.0) for node in updates) / total
        local = np.max([np.spacing(np.abs(decoded[node][name])) for node in updates], axis=0)
        bound = 3 * 2.0**-QUANTUM_BITS * MAX_EXAMPLES / total + np.spacing(np.abs(exact).astype(np.float32)) + local
        assert (np.abs(average[name] - exact) <= bound).all()
    pool.close()


def test_a_clipped_update_taken_out_leaves_exactly_the_others(tmp_path):
    clipped = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    for node in (1, 2, 3):
        clipped.add(node, update(node), 20 + node)
    clipped.scale(2, 0.125)
    clipped.remove(2)
    without = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    for node in (1, 3):
        without.add(node, update(node), 20 + node)
    assert bits(dict(clipped.average())) == bits(dict(without.average()))
    clipped.close()
    without.close()


def test_a_robust_aggregations_update_is_clipped_towards_the_reference():
    pool = AllUpdates(reference())
    values = update(4, "fp32")
    pool.add(4, values, 8)
    pool.scale(4, 0.5)
    for name, base in reference().items():
        # fp32 weights: each clipped weight is rounded to its own spacing
        spacing = np.spacing(np.abs(pool.weights[4][name]))
        assert (np.abs(pool.weights[4][name] - (base + 0.5 * (values[name].astype(np.float64) - base))) <= spacing).all()


@pytest.mark.parametrize("bad, reason", [
    (np.nan, "non-finite value"),
    (np.inf, "non-finite value"),
    (2 * MAX_DELTA, "moves a weight by"),
])
def test_a_rejected_update_leaves_nothing_behind(bad, reason, tmp_path):
    """The last tensor is bad: the ones before it were folded and come out again, exactly."""
    pool = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    pool.add(1, update(1, "fp32"), 30)
    before = {name: total.copy() for name, total in pool.sums.items()}
    values = update(2, "fp32")
    last = list(values)[-1]
    values[last] = values[last].copy()
    values[last][0] = bad
    with pytest.raises(Rejected, match=reason):
        pool.add(2, values, 30)
    assert all((pool.sums[name] == before[name]).all() for name in SHAPES) and set(pool.examples) == {1}


def test_norms_are_the_update_norms(tmp_path):
    pool = RunningAverage(reference(), MAX_EXAMPLES, tmp_path)
    values = update(3, "fp32")
    norm = pool.add(3, values, 1)
    ref = reference()
    expected = np.sqrt(sum(float(((values[n].astype(np.float64) - ref[n]) ** 2).sum()) for n in SHAPES))
    assert norm == pytest.approx(expected, rel=1e-12)
    assert AllUpdates(ref).add(3, values, 1) == pytest.approx(expected, rel=1e-12)


def test_memory_does_not_grow_with_the_number_of_updates(tmp_path):
    """Updates come one at a time (as replies do) and go once folded: from 4 updates to 40, what
    the pool allocates at its peak grows only by its bookkeeping (a norm and an example count
    per node, well under 1 KB each), never by an update (40 KB compact, 400 KB decoded here)."""
    shapes = {"expert.q.weight": (320, 320)}

    def peak(count: int) -> int:
        pool = RunningAverage(reference(shapes), MAX_EXAMPLES, tmp_path)
        tracemalloc.start()
        for node in range(count):
            pool.add(node, update(node, shapes=shapes), 8)
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        pool.close()
        return high

    compact = sum(value.nbytes for value in update(0, shapes=shapes).values())
    assert compact > 36 * 1024
    assert peak(40) - peak(4) <= 36 * 1024


def test_every_update_is_kept_for_a_robust_aggregation():
    pool = AllUpdates(reference())
    for node in (1, 2):
        pool.add(node, update(node), 8)
    assert set(pool.weights) == {1, 2} and pool.total_examples == 16
    pool.remove(1)
    assert set(pool.weights) == {2}
