"""Keep zk0's processes on the ordinary scheduler.

As root, writing a LeRobot dataset's videos (its encoder, SVT-AV1, switches the calling thread to
real time, as SVT-HEVC's SwitchToRealTime did) left the process at SCHED_FIFO priority 99: every
process it started inherited that, and one busy thread then starved the machine. Writers run
inside `ordinary_scheduling`, which puts the thread back as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ordinary_scheduling() -> Iterator[None]:
    """Restore the calling thread's scheduling policy and priority when the block ends."""
    policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, priority):
            os.sched_setscheduler(0, policy, os.sched_param(priority))
