"""The nodes a round asks: a bounded wait for enough usable ones, then a seeded sample of them."""

from __future__ import annotations

import random
import time
from logging import INFO

from flwr.common import log
from flwr.serverapp import Grid

from zk0.server import late
from zk0.server.errors import FederationError
from zk0.server.rounds import Roster


def wait_for_nodes(grid: Grid, roster: Roster, needed: int, min_available: int, timeout: float) -> list[int]:
    """The eligible (connected, never refused, not busy) nodes, once `min_available` are connected
    and `needed` of them are eligible; FederationError after `timeout` seconds (run-config
    node-wait-timeout: Flower's own wait has no deadline). Late replies are collected while
    waiting: each frees its node."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        late.collect(grid, roster)
        connected = list(grid.get_node_ids())
        nodes = roster.eligible(connected)
        if len(connected) >= min_available and len(nodes) >= needed:
            return nodes
        if time.monotonic() > deadline:
            refused = (f" ({len(connected) - len(nodes)} refused for this run or still busy)"
                       if len(nodes) < len(connected) else "")
            raise FederationError(
                f"{len(connected)} client(s) connected{refused} within {timeout:.0f}s "
                f"(run-config node-wait-timeout); {max(needed, min_available)} usable ones are "
                f"required: start more clients or lower min-available-clients / min-train-clients"
            )
        if not announced:
            log(INFO, "Waiting for clients: %d connected (%d usable), %d required", len(connected), len(nodes),
                max(needed, min_available))
            announced = True
        time.sleep(1.0)


def sample(nodes: list[int], fraction: float, minimum: int, seed: int, server_round: int,
           attempt: int = 0) -> list[int]:
    """`fraction` of the nodes (at least `minimum`), drawn reproducibly from the seed, the round
    and the attempt: a retried round draws afresh, the same draw whenever the run is repeated
    (a string seed is hashed with SHA-512, so no attempt's stream is another round's)."""
    size = min(len(nodes), max(int(len(nodes) * fraction), minimum))
    round_seed = seed * 100_003 + server_round
    return sorted(random.Random(round_seed if attempt == 0 else f"{round_seed} retry {attempt}").sample(nodes, size))


def spares(connected: list[int], sampled: list[int], seed: int) -> list[int]:
    """The connected nodes not sampled, in a seeded order (round 0's stand-ins for refused ones)."""
    rest = sorted(set(connected) - set(sampled))
    return random.Random(seed * 100_003 - 1).sample(rest, len(rest))
