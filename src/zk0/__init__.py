"""zk0: federated fine-tuning of SmolVLA robot policies with Flower and LeRobot."""

import logging
import os
from importlib.metadata import PackageNotFoundError, version

# A third-party `logging.info` call before any configuration makes Python install a
# default root handler, which then prints every Flower log line a second time.
logging.getLogger().addHandler(logging.NullHandler())

# torch's OpenMP threads spin while they wait for each other. When other processes share the
# cores (a simulation's server and nodes, zk0bot's nodes on one host, a test suite), a spinning
# thread holds a core its partner needs: on 2 busy cores a training step of the tiny SmolVLA
# took 20x longer (bench/README.md). Sleeping waiters cost little when the cores are free.
# libgomp reads this when torch loads it, so it must be set before `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("zk0")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
