"""A node's peak memory for one local training step at real size, per training mode.

Each mode runs in its own process (so that peaks don't mix): SmolVLA at its real shapes
(the `smolvla-shape` preset's config with its seeded random weights, built in memory, not
saved), wrapped with LoRA as zk0.policy.lora does for `lora` modes, then one `zk0.policy.train.train_local`
step (AdamW, as a node trains) at batch 1 on a synthetic SO-100 sample of the preset's
features (two 512x512 cameras, 6 joints, a 50-step action chunk) through SmolVLA's
processors. Reported: the trainable parameters, the process's RSS once the model is built,
and its peak RSS (getrusage) after the step.

    .venv/bin/python bench/lora_memory.py [--modes expert,lora,lora-fedit,lora-x,lora-x-fedit] [--lora-rank 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# mode -> (lora-aggregation, lora-targets); None: expert mode. As bench/codec_table.py names them.
MODES = {"expert": None, "lora": ("ffa", "lerobot"), "lora-fedit": ("fedit", "lerobot"),
         "lora-x": ("ffa", "expert"), "lora-x-fedit": ("fedit", "expert")}


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def synthetic_sample(config) -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    sample = {key: torch.rand(1, *feature.shape, generator=generator)
              for key, feature in config.input_features.items()}
    sample["action"] = torch.randn(1, config.chunk_size, config.output_features["action"].shape[0], generator=generator)
    sample["action_is_pad"] = torch.zeros(1, config.chunk_size, dtype=torch.bool)
    sample["task"] = ["pick up the cube and put it in the bin"]
    return sample


def one_mode(mode: str, lora_rank: int) -> dict:
    import torch
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    from zk0.policy.lora import LoraSpec, wrap
    from zk0.util.paths import cache_dir
    from zk0.policy.presets import SMOLVLA_SHAPE, preset_config, seeded_policy
    from zk0.policy.train import train_local

    config = preset_config(SMOLVLA_SHAPE, cache_dir())
    policy = seeded_policy(config)
    if MODES[mode]:
        aggregation, targets = MODES[mode]
        policy = wrap(policy, LoraSpec(lora_rank, float(lora_rank), aggregation, seed=0, targets=targets),
                      base=SMOLVLA_SHAPE)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    preprocessor, _ = make_smolvla_pre_post_processors(config, dataset_stats=None)
    built = rss_mb()
    sample = synthetic_sample(config)

    def batches():
        while True:
            yield {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in sample.items()}

    started = time.perf_counter()
    result = train_local(policy, preprocessor, batches(), steps=1, lr=1e-4, proximal_mu=0.01, desc=mode)
    return {"mode": mode, "trainable": trainable, "built_mb": built,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "step_s": time.perf_counter() - started, "loss": result.loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_mode(args.child, args.lora_rank)))
        return
    modes = args.modes.split(",")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode '{unknown[0]}'; modes are {', '.join(MODES)}")
    print(f"{'mode':>11} {'trainable':>12} {'RSS built MB':>13} {'peak RSS MB':>12} {'step s':>7}")
    for mode in modes:
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--lora-rank", str(args.lora_rank)],
                             check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:>11} {row['trainable']:>12,} {row['built_mb']:>13,.0f} {row['peak_mb']:>12,.0f} {row['step_s']:>7.1f}")


if __name__ == "__main__":
    main()
