"""Closed-loop scores: a policy acts in a simulated environment, episode after episode.

The loop is LeRobot's own (`lerobot.scripts.lerobot_eval.rollout`: observations through
`preprocess_observation`, the task string, the policy's pre/post-processors, `select_action`)
over a gymnasium `SyncVectorEnv` that resets an environment in the step it ends
(`AutoresetMode.SAME_STEP`, where LeRobot reads `final_info["is_success"]`). What this module
adds is what `eval_policy` does not report: each episode's length, and the seeds. The policy
replans every REPLAN_STEPS actions of the environment (its n_action_steps, for the rollouts only).

Episode i runs from seed `ROLLOUT_SEED_BASE + seed * SEEDS_PER_RUN + i`: never a seed that
`zk0 sim-data` records demonstrations from (those stay below ROLLOUT_SEED_BASE), and the same
episodes for every policy scored with the same `seed`, so two policies meet the same cubes.
The policy's action sampling (flow-matching noise) is seeded too, outside torch's global RNG.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROLLOUT_SEED_BASE = 1 << 31
SEEDS_PER_RUN = 1 << 20
BATCH = 25  # environments stepped side by side: one policy call serves them all (2x cheaper per episode than 10)


@dataclass(frozen=True)
class RolloutResult:
    env: str
    region: str
    episodes: int
    success_rate: float
    mean_reward: float
    mean_length: float  # steps until success, failure or the horizon
    seconds: float
    first_seed: int
    video: str | None = None

    def metrics(self) -> dict:
        """The round's `eval/...` columns."""
        return {"eval/success_rate": self.success_rate, "eval/mean_reward": self.mean_reward,
                "eval/episode_length": self.mean_length, "eval/episodes": self.episodes,
                "eval/rollout_seconds": self.seconds}

    def as_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _no_progress_bars():
    """LeRobot's rollout draws a progress bar per batch of episodes on sys.stderr (unless under
    SLURM): a round's log wants one line, not a screen of bars. Errors still raise; logging's
    handlers keep the stream they were made with."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


def make_env(name: str, region: str = "all", camera_every: int = 1):
    """One environment of `name` (zk0.sim.ENVS) in `region` (`I/K` or `all`), drawing its camera
    every `camera_every` steps (the policy's replanning period: the frames it reads)."""
    return _module(name).ReachClose(_module(name).Region.parse(region), camera_every=camera_every)


def _module(name: str):
    from zk0.sim import SO101_REACH

    if name != SO101_REACH:
        raise ValueError(f"environment '{name}' does not exist; environments are {SO101_REACH}")
    from zk0.sim import so101

    return so101


def check_fits(policy_config, env: str) -> None:
    """Raise ValueError unless the policy reads what `env` observes and acts as it acts."""
    sample = make_env(env)
    try:
        spaces = sample.observation_space
        wanted = {"observation.state": tuple(spaces["agent_pos"].shape), "action": tuple(sample.action_space.shape)}
        wanted |= {f"observation.images.{camera}": None for camera in spaces["pixels"].spaces}
    finally:
        sample.close()
    features = {**policy_config.input_features, **policy_config.output_features}
    for key, shape in wanted.items():
        if key not in features:
            raise ValueError(f"eval-env '{env}' observes '{key}', which the policy does not read; "
                             f"train on datasets recorded in it (zk0 sim-data)")
        if shape is not None and tuple(features[key].shape) != shape:
            raise ValueError(f"eval-env '{env}': '{key}' has shape {shape} there, {tuple(features[key].shape)} in the "
                             f"policy; train on datasets recorded in it (zk0 sim-data)")


def score(policy, preprocessor, postprocessor, env: str, episodes: int, seed: int = 0, region: str = "all",
          video: Path | None = None) -> RolloutResult:
    """Run `episodes` episodes of `policy` in `env`; with `video`, write the first episode there as MP4."""
    import gymnasium as gym
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.scripts.lerobot_eval import rollout
    from lerobot.utils.io_utils import write_video

    started = time.perf_counter()
    first_seed = ROLLOUT_SEED_BASE + seed * SEEDS_PER_RUN
    batch = min(BATCH, episodes)
    was_training, chunk_steps = policy.training, policy.config.n_action_steps
    replan = min(_module(env).REPLAN_STEPS, policy.config.chunk_size)
    # Every environment of a batch starts together and the policy looks at all of them every
    # `replan` steps: the frames in between are never read, so they are not drawn.
    envs = gym.vector.SyncVectorEnv([lambda: make_env(env, region, camera_every=replan)] * batch,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    identity = PolicyProcessorPipeline(steps=[])
    frames: list[np.ndarray] = []
    successes, rewards, lengths = [], [], []
    policy.eval()
    policy.config.n_action_steps = replan
    try:
        with torch.random.fork_rng(devices=[]), _no_progress_bars():
            torch.manual_seed(first_seed)
            for start in range(0, episodes, batch):
                record = video is not None and start == 0
                data = rollout(envs, policy, identity, identity, preprocessor, postprocessor,
                               seeds=list(range(first_seed + start, first_seed + start + batch)),
                               render_callback=(lambda e: frames.append(e.envs[0].render())) if record else None)
                done = data["done"].int().argmax(dim=1)  # the first done step of each environment
                mask = torch.arange(data["done"].shape[1])[None, :] <= done[:, None]
                keep = min(batch, episodes - start)
                successes += (data["success"] & mask).any(dim=1)[:keep].tolist()
                rewards += (data["reward"] * mask).sum(dim=1)[:keep].tolist()
                lengths += (done + 1)[:keep].tolist()
                if record:
                    # The first frame is the reset; the episode ends with the frame after its last action.
                    video.parent.mkdir(parents=True, exist_ok=True)
                    write_video(str(video), np.stack(frames[: int(done[0]) + 2]), envs.metadata.get("render_fps", 10))
    finally:
        envs.close()
        policy.train(was_training)
        policy.config.n_action_steps = chunk_steps
    return RolloutResult(env=env, region=region, episodes=episodes, success_rate=float(np.mean(successes)),
                         mean_reward=float(np.mean(rewards)), mean_length=float(np.mean(lengths)),
                         seconds=time.perf_counter() - started, first_seed=first_seed,
                         video=str(video) if video is not None else None)
