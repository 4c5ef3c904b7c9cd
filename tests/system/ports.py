"""Local ports and addresses for one pytest-xdist worker, so that parallel workers never race.

A port chosen by bind(0) comes from the kernel's ephemeral range, where Ray's workers and every
outgoing connection draw theirs: in the seconds before a test's server binds it, another
worker's process may take it. Each worker therefore owns a thousand ports below that range:
the first half for zk0's own services (ZK0_LOCAL_PORTS, set by conftest.py, read by zk0bot and
train-fl-simulation.sh through zk0.ops.ports), the second for the ports tests choose themselves.
"""

from __future__ import annotations

import os

from zk0.ops.ports import free_ports

SLOT = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % 12
FIRST = 20000 + 1000 * SLOT
SERVICE_PORTS = f"{FIRST}-{FIRST + 499}"


def free_port() -> int:
    """A port of this worker's own half, free now on every local address: tests bind theirs on
    other loopback addresses too (127.0.0.100 stands in for a server's public address), where
    a port free on 127.0.0.1 may be held."""
    return free_ports(host="0.0.0.0", ports=range(FIRST + 500, FIRST + 1000))[0]


def worker_address() -> str:
    """This worker's loopback address for its nodes' local ports (127.0.0.1 for the first worker
    or none). zk0bot gives a node the first free port from 9100: two workers starting nodes at the
    same moment on one address would both take the same one."""
    return f"127.0.{SLOT}.1"
