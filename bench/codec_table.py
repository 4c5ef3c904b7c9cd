"""Update codecs side by side, per training mode: bytes per client per round and encode +
decode time at real size, and the demo federation's final held-out action MSE per mode and
codec over several seeds.

Modes (run-config `trainable` and its LoRA keys): `expert` (the action expert and projections),
`lora` (LoRA adapters on LeRobot's default targets, `lora-aggregation = ffa`: only B travels),
`lora-fedit` (A and B travel), and `lora-x`, `lora-x-fedit` (the same with
`lora-targets = expert`: adapters on every linear layer of the action expert); each row is
named `<mode>-<codec>`. `--lora-lr` sets the LoRA modes' `lr` (the expert rows keep the run's).

Part 1 (real size): the trainable tensors of SmolVLA at its real shapes (the
`smolvla-shape` preset's config, built on the meta device for the shapes, wrapped with
LeRobot's PEFT as zk0.policy.lora does in the LoRA modes; random values),
a global model that moved by a small random step; for each codec, what zk0.wire.transfer sends
in a steady-state round (the download: a delta against the node's copy, or the whole
weights; the upload: the node's update) counted by Flower's own ArrayRecord.count_bytes(),
round 1's download whole and for a node holding the start model (a delta of zeros against
it, zk0.wire.transfer.start_broadcast), and the seconds to encode and decode both (medians).

Part 2 (quality): `./train-fl-simulation.sh --tiny` per codec and seed; the final round's
server-side held-out action MSE from metrics.jsonl.

    .venv/bin/python bench/codec_table.py [--modes expert,lora,lora-fedit,lora-x,lora-x-fedit] [--codecs fp32,bf16,q8,q4,q3,q2]
        [--lora-rank 64] [--lora-lr 1e-3] [--seeds 0,1,2] [--repeats 3] [--skip-quality | --skip-real]
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
# Each mode's run-config overrides (LoRA rank and alpha: --lora-rank, alpha = rank).
MODES = {
    "expert": {"trainable": "expert"},
    "lora": {"trainable": "lora", "lora-aggregation": "ffa"},
    "lora-fedit": {"trainable": "lora", "lora-aggregation": "fedit"},
    "lora-x": {"trainable": "lora", "lora-aggregation": "ffa", "lora-targets": "expert"},
    "lora-x-fedit": {"trainable": "lora", "lora-aggregation": "fedit", "lora-targets": "expert"},
}


def mode_overrides(mode: str, lora_rank: int, lora_lr: float | None = None) -> dict:
    overrides = dict(MODES[mode])
    if overrides["trainable"] == "lora":
        overrides |= {"lora-rank": lora_rank, "lora-alpha": float(lora_rank)}
        if lora_lr is not None:
            overrides["lr"] = lora_lr
    return overrides


def real_shapes(mode: str, lora_rank: int) -> dict[str, tuple[int, ...]]:
    import torch

    from zk0.policy.lora import LoraSpec, wrap
    from zk0.policy.presets import SMOLVLA_SHAPE, preset_config, seeded_policy
    from zk0.util.paths import cache_dir

    config = preset_config(SMOLVLA_SHAPE, cache_dir())
    overrides = mode_overrides(mode, lora_rank)
    with torch.device("meta"):
        policy = seeded_policy(config)
        if overrides["trainable"] == "lora":
            spec = LoraSpec(lora_rank, float(lora_rank), overrides["lora-aggregation"], seed=0,
                            targets=overrides.get("lora-targets", "lerobot"))
            policy = wrap(policy, spec, base=SMOLVLA_SHAPE)
    return {name: tuple(p.shape) for name, p in policy.named_parameters() if p.requires_grad}


def record_bytes(arrays: dict[str, np.ndarray]) -> int:
    from zk0.wire.protocol import pack

    return pack(arrays).count_bytes()


def measure_real_size(mode: str, codecs: list[str], repeats: int, lora_rank: int) -> list[dict]:
    from zk0.wire import transfer
    from zk0.wire.codec import ErrorFeedback, decode

    rng = np.random.default_rng(0)
    shapes = real_shapes(mode, lora_rank)
    params = sum(int(np.prod(shape)) for shape in shapes.values())
    previous = {name: rng.normal(0, 0.02, shape).astype(np.float32) for name, shape in shapes.items()}
    step = {name: rng.normal(0, 1e-3, shape).astype(np.float32) for name, shape in shapes.items()}
    new_global = {name: previous[name] + step[name] for name in shapes}
    local = {name: new_global[name] + step[name] for name in shapes}
    rows = []
    for codec in codecs:
        first = transfer.make_broadcast(previous, None, codec, 1)
        start = transfer.start_broadcast(previous)
        first_held, _ = transfer.download(transfer.make_broadcast(start.weights, start, codec, 1), transfer.START_ROUND)
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
            "row": f"{mode}-{codec}", "params": params, "tensors": len(shapes),
            "down": record_bytes(down), "up": record_bytes(up),
            "first_down": record_bytes(first.full), "first_held": record_bytes(first_held),
            "seconds": statistics.median(times),
        })
    return rows


def final_mse(mode: str, codec: str, seed: int, lora_rank: int, lora_lr: float | None, work: Path) -> float:
    out = work / f"{mode}-{codec}-{seed}"
    overrides = " ".join(f"{key}={json.dumps(value)}" for key, value in mode_overrides(mode, lora_rank, lora_lr).items())
    subprocess.run(
        [str(ROOT / "train-fl-simulation.sh"), "--tiny", "--output-dir", str(out),
         "--run-config", f"update-codec='{codec}' seed={seed} {overrides}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    run_dir = next(out.iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["eval/action_mse"]


def print_real_size(modes: list[str], codecs: list[str], repeats: int, lora_rank: int) -> None:
    print("Real size (smolvla-shape trainable tensors), steady-state round, per client:")
    print(f"{'mode-codec':>16} {'down B':>13} {'up B':>13} {'total MB':>9} {'round-1 down B':>15} "
          f"{'holding start':>14} {'enc+dec s':>10} {'trainable':>11} {'tensors':>7}")
    for mode in modes:
        for row in measure_real_size(mode, codecs, repeats, lora_rank):
            total = (row["down"] + row["up"]) / 1e6
            print(f"{row['row']:>16} {row['down']:>13,} {row['up']:>13,} {total:>9.1f} {row['first_down']:>15,} "
                  f"{row['first_held']:>14,} {row['seconds']:>10.2f} {row['params']:>11,} {row['tensors']:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="expert", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--codecs", default="fp32,bf16,q8,q4,q3,q2")
    parser.add_argument("--lora-rank", type=int, default=64, help="LoRA rank (alpha = rank) of the lora modes")
    parser.add_argument("--lora-lr", type=float, help="lr of the lora modes (default: the run's)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-quality", action="store_true", help="only the real-size part")
    parser.add_argument("--skip-real", action="store_true", help="only the demo federation's quality")
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode '{unknown[0]}'; modes are {', '.join(MODES)}")
    codecs = args.codecs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    if not args.skip_real:
        print_real_size(modes, codecs, args.repeats, args.lora_rank)
    if args.skip_quality:
        return

    print("\nDemo federation (train-fl-simulation.sh --tiny), final held-out action MSE:")
    with tempfile.TemporaryDirectory(prefix="zk0-codecs-") as tmp:
        results = {f"{mode}-{codec}": [final_mse(mode, codec, seed, args.lora_rank, args.lora_lr, Path(tmp)) for seed in seeds]
                   for mode in modes for codec in codecs}
    # The reference: full expert training, fp32 if it ran, else the first expert row.
    basis = "expert-fp32" if "expert-fp32" in results else next((k for k in results if k.startswith("expert-")), None)
    base = statistics.mean(results[basis]) if basis else None
    print(f"{'mode-codec':>16} {'mean':>9} {'min':>9} {'max':>9} {'vs ' + str(basis):>15}   per seed {seeds}")
    for name, values in results.items():
        mean = statistics.mean(values)
        versus = f"{100 * (mean / base - 1):+.1f}%" if base else "-"
        print(f"{name:>16} {mean:>9.1f} {min(values):>9.1f} {max(values):>9.1f} {versus:>15}   "
              + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
