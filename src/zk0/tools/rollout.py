"""`zk0 rollout`: score any checkpoint by closed-loop episodes in a simulated environment.

The checkpoint is anything `zk0 push` takes (a run directory: its best, last or a round's
checkpoint; a checkpoint directory; a pretrained_model directory) or a directory pushed to the
Hub and downloaded: LeRobot's own `SmolVLAPolicy.from_pretrained` and the processors saved
beside it (the units the policy was trained in).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from zk0.sim.rollout import RolloutResult, score


def load(model_dir: Path, device: str = "cpu"):
    """The policy and its saved pre/post-processors, as a LeRobot user loads them."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    config = PreTrainedConfig.from_pretrained(model_dir)
    config.device = device
    with contextlib.redirect_stdout(sys.stderr):  # LeRobot prints as it loads; stdout is the result's
        policy = SmolVLAPolicy.from_pretrained(model_dir, config=config).to(device)
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config, pretrained_path=str(model_dir), preprocessor_overrides={"device_processor": {"device": device}})
    return policy, preprocessor, postprocessor


def rollout(source: Path, env: str, episodes: int, seed: int = 0, region: str = "all", checkpoint: str | None = None,
            video_dir: Path | None = None) -> RolloutResult:
    from zk0.sim.rollout import check_fits
    from zk0.sim.so101 import Region
    from zk0.tools.push import select_checkpoint

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    Region.parse(region)  # before the policy loads
    model_dir = select_checkpoint(source, checkpoint).model_dir
    policy, preprocessor, postprocessor = load(model_dir)
    check_fits(policy.config, env)
    video = video_dir / f"{env}-seed{seed}-episode0.mp4" if video_dir is not None else None
    return score(policy, preprocessor, postprocessor, env, episodes, seed=seed, region=region, video=video)


def summary(result: RolloutResult) -> str:
    line = (f"{result.env} region {result.region}: success {100 * result.success_rate:.1f} % of {result.episodes} "
            f"episodes, mean length {result.mean_length:.1f} steps, {result.seconds:.1f}s")
    return line + (f"; video {result.video}" if result.video else "")


def as_json(result: RolloutResult) -> str:
    return json.dumps(result.as_dict())
