"""Simulation only: a Ray actor that died (Ray's memory monitor or a signal killed its process)
is replaced by a fresh one in Flower's actor pool.

Flower 1.42's RayBackend puts the actor of a failed message back into its pool whatever the
failure. A dead actor then fails every message it is handed at once, and being free again
first, it is handed nearly all of them: one killed actor ended the run. `flwr run` passes the
backend no Ray actor options (its SimulationConfig carries CPUs and GPUs only, so no
`max_restarts`), hence the swap here. The message the actor died with is not run again at this
level: its node's failure is one line in server.log and the round runs again with a fresh
attempt (run-config round-retries), which node memory tells apart from the first one
(zk0.node.memory); a rerun here would hand the node the same attempt twice.

This reaches into Flower's BasicActorPool (flwr==1.42.0 is pinned); tests/unit/test_sim_actors.py
fails when what it wraps changes.
"""

from __future__ import annotations

import importlib
import sys
from logging import WARNING

from flwr.common import log

# Loaded in the process of Flower's simulation engine, which runs the ServerApp in a thread; its
# Ray backend imports the pool module only once it starts, maybe after the ServerApp did.
ENGINE_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
POOL_MODULE = "flwr.simulation.ray_transport.ray_actor"
_INSTALLED = "zk0_replaces_dead_actors"


def replace_dead_actors() -> bool:
    """Install the swap where Flower's simulation engine runs in this process (its Ray actor pool
    serves the ClientApps); idempotent. False elsewhere (deployment)."""
    if ENGINE_MODULE not in sys.modules:
        return False
    pool_class = importlib.import_module(POOL_MODULE).BasicActorPool
    fetch = pool_class.fetch_result_and_return_actor_to_pool
    if getattr(fetch, _INSTALLED, False):
        return True
    from ray.exceptions import OutOfMemoryError, RayActorError

    def fetch_or_replace(self, future):
        try:
            return fetch(self, future)
        except (RayActorError, OutOfMemoryError):
            # Flower's RayBackend hands this future's actor back to the pool next: make it a live one.
            dead = self._future_to_actor.get(future)
            if dead is not None:
                self._future_to_actor[future] = self.create_actor_fn()
                log(WARNING, "A simulation actor died; a fresh one replaces it in the pool", extra={"zk0_debug": True})
            raise

    setattr(fetch_or_replace, _INSTALLED, True)
    pool_class.fetch_result_and_return_actor_to_pool = fetch_or_replace
    return True
