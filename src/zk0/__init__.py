"""zk0: federated fine-tuning of SmolVLA robot policies with Flower and LeRobot."""

import logging

# A third-party `logging.info` call before any configuration makes Python install a
# default root handler, which then prints every Flower log line a second time.
logging.getLogger().addHandler(logging.NullHandler())
