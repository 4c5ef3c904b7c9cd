"""Randomized replies through the server's decode and screening: never an exception, always
an accepted fp32 update or a one-line reason (fixed seed: the same cases on every run)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from reply_fuzz import broadcast, honest_reply, mutate, screen

EXPECTED = broadcast()
CODECS = ("q3", "q3z", "top16")  # q3, the default (zstd frames: parsed from hostile bytes), sparse positions
HONEST = {codec: honest_reply(codec=codec) for codec in CODECS}


@pytest.mark.parametrize("codec", CODECS)
def test_the_honest_reply_is_accepted(codec):
    assert screen(HONEST[codec], EXPECTED, codec) == "accepted"


@seed(20261201)
@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_mutated_replies_never_raise(case):
    for codec in CODECS:
        screen(mutate(HONEST[codec], random.Random(case)), EXPECTED, codec)
