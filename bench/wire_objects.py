"""Flower objects and bytes per training reply: one Array per encoded tensor (Flower's plain
form) against zk0's packed form (zk0.wire.protocol.pack: one safetensors blob in one Array).

Flower pushes and pulls every object of a message as its own request (two at a time on 2
cores), so the object count, not only the bytes, sets a message's time through nginx and over
a WAN. The update is a q3z delta of random weights of the preset's trainable tensors (as
codec_table.py measures bytes), with the reply's metrics and identity records.

    .venv/bin/python bench/wire_objects.py [--models tiny,smolvla-shape]
"""

from __future__ import annotations

import argparse

import zk0  # noqa: F401 - before torch: OpenMP's passive wait policy (bench/openmp_wait.py)


def reply_objects(model: str, codec: str) -> dict:
    import numpy as np
    import torch
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    from zk0.policy.presets import preset_config, seeded_policy
    from zk0.util.paths import cache_dir
    from zk0.wire import transfer
    from zk0.wire.codec import ErrorFeedback
    from zk0.wire.protocol import ARRAYS, METRICS, NODE, pack

    with torch.device("meta"):
        policy = seeded_policy(preset_config(model, cache_dir()))
    shapes = {name: tuple(p.shape) for name, p in policy.named_parameters() if p.requires_grad}
    rng = np.random.default_rng(0)
    base = transfer.bf16_round({name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()})
    local = {name: value + rng.normal(0, 1e-3, value.shape).astype(np.float32) for name, value in base.items()}
    update = transfer.upload(local, base, codec, ErrorFeedback())
    records = {METRICS: MetricRecord({"num-examples": 64, "train/loss": 0.5}),
               NODE: ConfigRecord({"dataset-uri": "hf:owner/dataset", "cameras": "observation.images.front"})}
    plain = RecordDict({ARRAYS: ArrayRecord({name: Array(value) for name, value in update.items()}), **records})
    packed = RecordDict({ARRAYS: pack(update), **records})
    return {"model": model, "tensors": len(shapes), "arrays": len(update),
            "plain_objects": len(get_all_nested_objects(plain)), "packed_objects": len(get_all_nested_objects(packed)),
            "plain_bytes": plain[ARRAYS].count_bytes(), "packed_bytes": packed[ARRAYS].count_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny", help="comma-separated presets (tiny, smolvla-shape)")
    parser.add_argument("--codec", default="q3z")
    args = parser.parse_args()
    print(f"{'model':>14} {'tensors':>8} {'arrays':>7} {'objects':>8} {'packed':>7} {'bytes':>13} {'packed B':>13}")
    for model in args.models.split(","):
        row = reply_objects(model, args.codec)
        print(f"{row['model']:>14} {row['tensors']:>8} {row['arrays']:>7} {row['plain_objects']:>8} "
              f"{row['packed_objects']:>7} {row['plain_bytes']:>13,} {row['packed_bytes']:>13,}")


if __name__ == "__main__":
    main()
