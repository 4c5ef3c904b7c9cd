"""Where a node's memory goes before it holds any model or data (issue 28): the anonymous memory
(smaps_rollup `Anonymous`: what the process allocated itself, whatever else runs on the machine)
each import adds, in the order a zk0 node reaches them.

    .venv/bin/python bench/import_memory.py

Each module is imported in this one process after the ones above it, so a row is what it adds
beyond them (torchvision's row includes torch._dynamo, which torchvision.ops imports).
"""

from __future__ import annotations

import importlib
import os

STEPS = [
    "torch", "torchvision", "pandas", "datasets", "transformers", "lerobot.policies",
    "lerobot.policies.smolvla.modeling_smolvla", "lerobot.datasets.lerobot_dataset", "torchcodec.decoders",
    "flwr.clientapp", "zk0.client_app",
]


def anonymous_mb() -> float:
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no Anonymous line in /proc/self/smaps_rollup")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    before = start = anonymous_mb()
    print(f"{'import':<45} {'adds MB':>8} {'total MB':>9}")
    print(f"{'(python itself)':<45} {start:>8.0f} {start:>9.0f}")
    for name in STEPS:
        importlib.import_module(name)
        now = anonymous_mb()
        print(f"{name:<45} {now - before:>8.0f} {now:>9.0f}", flush=True)
        before = now


if __name__ == "__main__":
    main()
