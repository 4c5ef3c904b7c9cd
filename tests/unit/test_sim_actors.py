"""zk0.server.sim_actors: where it installs, and the Flower code it relies on.

What it does with a killed actor runs in tests/system/test_simulation_actor_killed.py (system tier).
"""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys

# sha256 of the source of the Flower 1.42.0 methods the swap relies on: the pool hands a future's
# actor back through `_future_to_actor` (add_actor_back_to_pool), RayBackend does so after a
# failed fetch, and the wrapped fetch raises before handing it back.
FLOWER_SOURCES = {
    "BasicActorPool.fetch_result_and_return_actor_to_pool": "4e9babbe276dedd796dea84d4b55d84d638300152602c4624ff7e9796a07a24a",
    "BasicActorPool.submit": "672402921baad47352ebe3133ebd90248314959ce3836f08b6c8723111ec17c9",
    "BasicActorPool.add_actor_back_to_pool": "e88f89e6e878f4ce106cf1ef59b4aec3f50882ce408d6df0ab7e1953cf375d96",
    "RayBackend.process_message": "32a5db14180222d31bb6d622529f0cccab652d4f6c35fd137560240da84010b7",
}


def test_the_flower_pool_it_wraps_is_the_one_it_was_built_on():
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    methods = {
        f"BasicActorPool.{name}": getattr(BasicActorPool, name)
        for name in ("fetch_result_and_return_actor_to_pool", "submit", "add_actor_back_to_pool")
    }
    methods["RayBackend.process_message"] = RayBackend.process_message
    for name, method in methods.items():
        method = getattr(method, "__wrapped__", method)
        digest = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()
        assert digest == FLOWER_SOURCES[name], f"Flower's {name} changed: re-check zk0.server.sim_actors"


def _installed(preload: str) -> str:
    code = (f"{preload}\nfrom zk0.server import sim_actors\nfirst = sim_actors.replace_dead_actors()\n"
            "print(first, sim_actors.replace_dead_actors(), 'flwr.simulation.ray_transport.ray_actor' in __import__('sys').modules)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_it_installs_only_beside_flowers_simulation_engine():
    """A deployment's ServerApp process never loads Ray for it; the simulation's process gets the swap once."""
    assert _installed("") == "False False False"
    assert _installed("import flwr.server.superlink.fleet.vce.vce_api") == "True True True"
