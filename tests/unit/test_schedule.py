"""The server's per-round learning rate: constant, or linear warm-up then cosine decay to `lr_min`."""

from __future__ import annotations

import math

import pytest

from zk0.server.schedule import round_lr

LR, LR_MIN = 1e-4, 2.5e-6


def cosine(num_rounds: int, warmup_rounds: int) -> list[float]:
    """The cosine schedule's lr for rounds 1..num_rounds."""
    return [
        round_lr(r, num_rounds, lr=LR, schedule="cosine", warmup_rounds=warmup_rounds, lr_min=LR_MIN)
        for r in range(1, num_rounds + 1)
    ]


def test_constant_schedule_ignores_warmup_and_min():
    """`constant` trains every round at `lr`."""
    rates = [round_lr(r, 10, lr=LR, schedule="constant", warmup_rounds=3, lr_min=LR_MIN) for r in range(1, 11)]
    assert rates == [LR] * 10


def test_warmup_rises_linearly_below_the_peak():
    """Round r <= warmup trains at lr * r / (warmup + 1): a straight ramp that stays below `lr`."""
    rates = cosine(num_rounds=30, warmup_rounds=2)
    assert rates[:2] == pytest.approx([LR / 3, 2 * LR / 3])


def test_cosine_starts_at_peak_and_ends_at_minimum():
    """The first round after warm-up trains at `lr`, the last at `lr_min`."""
    rates = cosine(num_rounds=30, warmup_rounds=2)
    assert rates[2] == pytest.approx(LR)
    assert rates[-1] == pytest.approx(LR_MIN)
    assert max(rates) == pytest.approx(LR)


def test_cosine_decays_monotonically_through_the_midpoint():
    """After warm-up the rate never rises, and halfway through the decay it is halfway between the ends."""
    rates = cosine(num_rounds=11, warmup_rounds=0)
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))
    assert rates[5] == pytest.approx((LR + LR_MIN) / 2)


def test_cosine_follows_the_formula():
    """Every decay round matches lr_min + (lr - lr_min)/2 * (1 + cos(pi * progress))."""
    rates = cosine(num_rounds=7, warmup_rounds=2)
    for index, rate in enumerate(rates[2:]):
        progress = index / 4
        assert rate == pytest.approx(LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize(("num_rounds", "warmup_rounds"), [(1, 0), (1, 3), (2, 2), (3, 5)])
def test_short_runs_stay_within_bounds(num_rounds, warmup_rounds):
    """Runs no longer than the warm-up never divide by zero and never exceed `lr`."""
    for rate in cosine(num_rounds, warmup_rounds):
        assert 0 < rate <= LR
