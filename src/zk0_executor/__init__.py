"""zk0's warm ClientApp executor: one long-lived process serves every message of a SuperNode.

Flower 1.42 starts a fresh `flwr-clientapp` process per message, so each message pays the
imports and the model load again. `python -m zk0_executor` claims the tasks of a SuperNode
started with `--isolation process` and runs them in one process (zk0_executor.serve); what
stays warm between messages: torch, LeRobot and zk0's module-level caches (zk0.node.session keeps
one policy per process, and processors and open splits per run config and dataset). A new
FAB drops the app's modules, so its code is imported afresh and its caches start empty.

It lives beside the app package, not in it: the FAB (`fab-include = ["src/zk0/*.py"]`)
never carries it, and dropping the app's modules never drops the executor's. It runs only
the zk0 its owner installed, plus FABs the owner allowed by hash (zk0_executor.trust).
Runtime dependency installation is not supported: the app runs in this environment.

Its whole Flower surface (internals, pinned by `flwr==1.42.0`) is zk0_executor.flower;
tests/system/test_executor.py fails when an upgrade changes what it relies on. An upstream warm
ClientApp mode (flwrlabs/flower#3670) would let zk0 delete zk0_executor.flower and the
task loop of zk0_executor.serve (claiming, heartbeats, pulls and pushes, the error
replies), keeping only the trust check of zk0_executor.trust.
"""
