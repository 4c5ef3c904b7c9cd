"""What one federated round moves and costs at SmolVLA's real size, built offline.

Builds the `smolvla-shape` model preset in zk0's cache unless it is there already
(SmolVLA's real architecture over SmolVLM2-500M's shapes, seeded random weights, no
download: ~7 GB of memory, 1.8 GB on disk; `ZK0_CACHE_DIR` moves the cache), loads it
back and checks its parameter counts, then measures what zk0 sends per client per round
(the trainable parameters in fp32), the time to put them into a Flower ArrayRecord and
back, and one server aggregation over two client replies.

    .venv/bin/python bench/real_payload.py [--clients 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

# lerobot/smolvla_base's figures, measured when the recipe in the platform notes was checked.
EXPECTED_PARAMS = 450_046_176
EXPECTED_TRAINABLE = 99_880_992


def build_preset(cache: Path) -> tuple[Path, float, bool]:
    """(directory, seconds, whether it was built now) of the `smolvla-shape` preset in `cache`."""
    from zk0.policy.presets import SMOLVLA_SHAPE, ensure_preset_policy

    started_at = time.time()
    started = time.perf_counter()
    path = ensure_preset_policy(SMOLVLA_SHAPE, cache)
    seconds = time.perf_counter() - started
    return path, seconds, (path / "model.safetensors").stat().st_mtime >= started_at


def load_checked(path: Path):
    """The saved preset loaded back strictly (file and model hold the same tensors), with smolvla_base's counts."""
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    policy = SmolVLAPolicy.from_pretrained(path, strict=True)
    params = list(policy.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if (total, trainable) != (EXPECTED_PARAMS, EXPECTED_TRAINABLE):
        raise SystemExit(
            f"smolvla-shape at {path} has {total:,} parameters ({trainable:,} trainable) but lerobot/smolvla_base "
            f"has {EXPECTED_PARAMS:,} ({EXPECTED_TRAINABLE:,}): fix the preset's shapes (zk0.policy.presets.PRESETS)"
        )
    return policy


def timed(fn, repeats: int):
    """(median seconds, last result) of `repeats` calls."""
    seconds, result = [], None
    for _ in range(repeats):
        result = None  # free the previous result before the next call allocates its own
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def wire_prep(make_record, repeats: int):
    """(median seconds, objects) of Flower's send-side split of a fresh ArrayRecord (Arrays cache their chunks)."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    seconds, objects = [], None
    for _ in range(repeats):
        objects = None
        record = make_record()
        started = time.perf_counter()
        objects = get_all_nested_objects(record)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), objects


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


def measure(args: argparse.Namespace) -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from zk0.policy.model import get_trainable, set_trainable
    from zk0.util.paths import cache_dir

    path, build_seconds, built = build_preset(cache_dir())
    size = (path / "model.safetensors").stat().st_size
    started = time.perf_counter()
    policy = load_checked(path)
    first_load = time.perf_counter() - started

    params = list(policy.parameters())
    total = sum(p.numel() for p in params)
    trainable = [p for p in params if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    state = policy.state_dict()
    state_bytes = sum(t.numel() * t.element_size() for t in state.values())
    how = "built and saved" if built else "found in the cache"
    print(f"Real-size SmolVLA, random weights, built offline (model preset 'smolvla-shape'): {how} in "
          f"{build_seconds:.1f} s, {size / 1e9:.2f} GB on disk; from_pretrained {first_load:.1f} s")
    print(f"  {path}")
    print(f"  parameters            {total:>13,}   (= lerobot/smolvla_base's, checked)")
    print(f"  trainable             {n_trainable:>13,}   (= lerobot/smolvla_base's, checked; {n_trainable / total:.1%} of all)")
    print(f"  trainable tensors     {len(trainable):>13,}   (state-dict tensors: {len(state)})")
    print(f"  state dict            {state_bytes:>13,} B (dtypes: {sorted({str(t.dtype) for t in state.values()})})")

    sent, arrays = timed(lambda: get_trainable(policy), args.repeats)
    build_record, record = timed(lambda: ArrayRecord({name: Array(value) for name, value in arrays.items()}), args.repeats)
    wire, objects = wire_prep(lambda: ArrayRecord({n: Array(v) for n, v in arrays.items()}), args.repeats)
    decode, decoded = timed(lambda: {name: array.numpy() for name, array in record.items()}, args.repeats)
    load, _ = timed(lambda: set_trainable(policy, decoded), args.repeats)
    payload = record.count_bytes()
    trainable_fp32 = 4 * n_trainable
    whole_fp32 = 4 * total
    per_round = 2 * args.clients * payload
    print("\nPayload per client per round (one way; down and up are the same size)")
    print(f"  zk0: trainable fp32   {payload:>13,} B  = {payload / 1e6:7.1f} MB  (ArrayRecord.count_bytes; "
          f"4 B x trainable = {trainable_fp32:,} + {payload - trainable_fp32:,} B of .npy headers and names)")
    print(f"  trainable bf16        {2 * n_trainable:>13,} B  = {2 * n_trainable / 1e6:7.1f} MB  (would need a non-bf16 carrier: "
          f"ArrayRecord rejects bf16)")
    print(f"  whole model fp32      {whole_fp32:>13,} B  = {whole_fp32 / 1e6:7.1f} MB  ({whole_fp32 / trainable_fp32:.1f}x zk0's)")
    print(f"  per round, K={args.clients} clients  {per_round:>13,} B  = {per_round / 1e9:7.2f} GB  (down + up; "
          f"whole model would be {2 * args.clients * whole_fp32 / 1e9:.1f} GB)")
    print(f"\nSerialization (medians of {args.repeats})")
    print(f"  get_trainable (params -> fp32 numpy)        {sent:7.3f} s")
    print(f"  ArrayRecord from numpy ({len(record)} Arrays, np.save)  {build_record:7.3f} s  "
          f"({payload / build_record / 1e9:.2f} GB/s)")
    print(f"  Flower wire prep (5 MiB chunks + SHA-256)   {wire:7.3f} s  ({len(objects):,} objects)")
    print(f"  receive: Array.numpy() for all arrays       {decode:7.3f} s")
    print(f"  receive: set_trainable into the policy      {load:7.3f} s")
    del objects, decoded

    halved = ArrayRecord({name: Array(value * np.float32(0.5)) for name, value in arrays.items()})
    replies = [
        RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 400})}),
        RecordDict({"arrays": halved, "metrics": MetricRecord({"num-examples": 600})}),
    ]
    aggregate, merged = timed(lambda: aggregate_arrayrecords(replies, "num-examples"), args.repeats)
    name = next(iter(arrays))
    expected = arrays[name] * np.float32(0.4) + arrays[name] * np.float32(0.5 * 0.6)
    assert np.allclose(merged[name].numpy(), expected, atol=1e-6), "aggregation result is off"
    print(f"\nAggregation (flwr aggregate_arrayrecords, 2 replies of {payload / 1e6:.0f} MB; median of {args.repeats})")
    print(f"  2 replies                                   {aggregate:7.3f} s  "
          f"(~{aggregate / 2:.2f} s per reply; K={args.clients} would take ~{aggregate / 2 * args.clients:.1f} s)")
    del replies, halved, merged, record, arrays

    del policy
    load, _ = timed(lambda: SmolVLAPolicy.from_pretrained(path), args.repeats)
    print(f"\nModel load at real size (SmolVLAPolicy.from_pretrained, {size / 1e9:.2f} GB fp32 safetensors "
          f"in the page cache; median of {args.repeats})")
    print(f"  from_pretrained                             {load:7.3f} s  (lerobot/smolvla_base is ~0.91 GB, "
          f"mixed fp32/bf16)")
    print(f"\nPeak resident memory of this process: {peak_rss_gb():.1f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=12, help="clients per round for the per-round total (default 12)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure; medians are reported (default 3)")
    args = parser.parse_args()
    measure(args)


if __name__ == "__main__":
    main()
