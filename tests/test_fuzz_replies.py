"""Randomized replies through the server's decode and screening: never an exception, always
an accepted fp32 update or a one-line reason (fixed seed: the same cases on every run)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from reply_fuzz import broadcast, honest_reply, mutate, screen

EXPECTED = broadcast()
HONEST = honest_reply()


def test_the_honest_reply_is_accepted():
    assert screen(HONEST, EXPECTED) == "accepted"


@seed(20261201)
@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_mutated_replies_never_raise(case):
    screen(mutate(HONEST, random.Random(case)), EXPECTED)
