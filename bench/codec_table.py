"""Update codecs side by side: bytes per client per round and encode + decode time at real
size, and the demo federation's final held-out action MSE per codec over several seeds.

Part 1 (real size): the trainable tensors of SmolVLA at its real shapes (the
`smolvla-shape` preset's config, built on the meta device for the shapes; random values),
a global model that moved by a small random step; for each codec, what zk0.transfer sends
in a steady-state round (the download: a delta against the node's copy, or the whole
weights; the upload: the node's update) counted by Flower's own ArrayRecord.count_bytes(),
and the seconds to encode and decode both (medians).

Part 2 (quality): `./train-fl-simulation.sh --tiny` per codec and seed; the final round's
server-side held-out action MSE from metrics.jsonl.

    .venv/bin/python bench/codec_table.py [--codecs fp32,bf16,q8,q4,q3,q2] [--seeds 0,1,2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def real_shapes() -> dict[str, tuple[int, ...]]:
    import torch

    from zk0.presets import SMOLVLA_SHAPE, preset_config, seeded_policy
    from zk0.paths import cache_dir

    config = preset_config(SMOLVLA_SHAPE, cache_dir())
    with torch.device("meta"):
        policy = seeded_policy(config)
    return {name: tuple(p.shape) for name, p in policy.named_parameters() if p.requires_grad}


def record_bytes(arrays: dict[str, np.ndarray]) -> int:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(value) for name, value in arrays.items()}).count_bytes()


def measure_real_size(codecs: list[str], repeats: int) -> list[dict]:
    from zk0 import transfer
    from zk0.codec import ErrorFeedback, decode

    rng = np.random.default_rng(0)
    shapes = real_shapes()
    params = sum(int(np.prod(shape)) for shape in shapes.values())
    previous = {name: rng.normal(0, 0.02, shape).astype(np.float32) for name, shape in shapes.items()}
    step = {name: rng.normal(0, 1e-3, shape).astype(np.float32) for name, shape in shapes.items()}
    new_global = {name: previous[name] + step[name] for name in shapes}
    local = {name: new_global[name] + step[name] for name in shapes}
    rows = []
    for codec in codecs:
        first = transfer.make_broadcast(previous, None, codec, 1)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            broadcast = transfer.make_broadcast(new_global, first, codec, 2)
            down, _ = transfer.download(broadcast, node_holds=1)
            received = transfer.receive(down, first.weights)
            up = transfer.upload(local, received, codec, ErrorFeedback())
            transfer.decode_update(up, broadcast.weights)
            times.append(time.perf_counter() - started)
        decode(up)  # warm
        rows.append({
            "codec": codec, "params": params, "down": record_bytes(down), "up": record_bytes(up),
            "first_down": record_bytes(first.full), "seconds": statistics.median(times),
        })
    return rows


def final_mse(codec: str, seed: int, work: Path) -> float:
    out = work / f"{codec}-{seed}"
    subprocess.run(
        [str(ROOT / "train-fl-simulation.sh"), "--tiny", "--output-dir", str(out),
         "--run-config", f"update-codec='{codec}' seed={seed}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    run_dir = next(out.iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["eval/action_mse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", default="fp32,bf16,q8,q4,q3,q2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-quality", action="store_true", help="only the real-size part")
    args = parser.parse_args()
    codecs = args.codecs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    print("Real size (smolvla-shape trainable tensors), steady-state round, per client:")
    print(f"{'codec':>6} {'down B':>13} {'up B':>13} {'total MB':>9} {'round-1 down B':>15} {'enc+dec s':>10}")
    for row in measure_real_size(codecs, args.repeats):
        total = (row["down"] + row["up"]) / 1e6
        print(f"{row['codec']:>6} {row['down']:>13,} {row['up']:>13,} {total:>9.1f} {row['first_down']:>15,} "
              f"{row['seconds']:>10.2f}")
    print(f"({row['params']:,} trainable parameters)")
    if args.skip_quality:
        return

    print("\nDemo federation (train-fl-simulation.sh --tiny: 2 clients, 3 rounds), final held-out action MSE:")
    with tempfile.TemporaryDirectory(prefix="zk0-codecs-") as tmp:
        results = {codec: [final_mse(codec, seed, Path(tmp)) for seed in seeds] for codec in codecs}
    base = statistics.mean(results["fp32"]) if "fp32" in results else None
    print(f"{'codec':>6} {'mean':>9} {'min':>9} {'max':>9} {'vs fp32':>8}   per seed {seeds}")
    for codec, values in results.items():
        mean = statistics.mean(values)
        versus = f"{100 * (mean / base - 1):+.1f}%" if base else "-"
        print(f"{codec:>6} {mean:>9.1f} {min(values):>9.1f} {max(values):>9.1f} {versus:>8}   "
              + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
