"""zk0: federated fine-tuning of SmolVLA robot policies with Flower and LeRobot."""

import logging
from importlib.metadata import PackageNotFoundError, version

# A third-party `logging.info` call before any configuration makes Python install a
# default root handler, which then prints every Flower log line a second time.
logging.getLogger().addHandler(logging.NullHandler())

try:
    __version__ = version("zk0")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
