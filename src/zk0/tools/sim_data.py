"""Simulated SO-101 owners' datasets: the scripted expert's demonstrations in MuJoCo, written
with LeRobot's own writer (`zk0 sim-data`).

Owner k of K records episodes with its cubes in its own strip of the table (zk0.sim.so101:
Region.strip(k, K)): a federation over them is non-IID, as arms in different homes are. The
`eval` dataset holds episodes over the whole table (the server's open-loop metric).

The expert is recorded DART-style (Laskey et al. 2017): the env executes the expert's action
plus Gaussian noise on its position deltas, the dataset stores the expert's clean action, so
the demonstrations show how to recover from the small errors a learnt policy makes. An
episode keeps HOLD frames after its first success (the "close" label is then ~1/3 of the
frames) and ends there; an episode the expert fails is not recorded.

Seeds (`demo_seed`): owner k's episode i runs from seed `seed * 1_000_000 + k * 10_000 + i`
(the eval set's from `seed * 1_000_000 + 990_000 + i`), always below
zk0.sim.rollout.ROLLOUT_SEED_BASE: no rollout ever meets a recorded cube.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zk0.tools.quiet import quiet_dataset_writer
from zk0.util.scheduling import ordinary_scheduling

NOISE = 0.3  # std of the executed position deltas' noise (action units: 7.5 mm)
HOLD = 5
EVAL_OWNER = 99
MAX_OWNERS = EVAL_OWNER
MAX_TRIES = 10_000  # episodes tried per dataset (recorded and failed)
MAX_SEED = 2000  # with the two above, keeps every demonstration seed below the rollouts' (2**31)


def demo_seed(seed: int, owner: int, episode: int) -> int:
    """The seed of `owner`'s `episode`-th try (EVAL_OWNER: the eval set)."""
    if not (0 <= seed < MAX_SEED and 0 <= owner <= EVAL_OWNER and 0 <= episode < MAX_TRIES):
        raise ValueError(f"demonstration seed out of range: --seed {seed} (0..{MAX_SEED - 1}), owner {owner} "
                         f"(at most {MAX_OWNERS} owners), try {episode} (fewer than {MAX_TRIES})")
    return seed * 1_000_000 + owner * MAX_TRIES + episode


@dataclass(frozen=True)
class SimSpec:
    episodes: int = 40  # recorded per owner (failed ones are retried with the next seed)
    eval_episodes: int = 20
    seed: int = 0


def features() -> dict:
    from zk0.sim.so101 import ACTION_DIM, CAMERA, IMAGE_SIZE, STATE_DIM

    return {
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": ["dx", "dy", "dz", "grasp"]},
        f"observation.images.{CAMERA}": {"dtype": "video", "shape": (IMAGE_SIZE, IMAGE_SIZE, 3),
                                         "names": ["height", "width", "channels"]},
    }


def demonstration(env, seed: int, rng: np.random.Generator) -> list[dict] | None:
    """One episode's frames (observation, clean action), or None if the expert failed."""
    from zk0.sim.so101 import CAMERA, TASK, expert_action

    observation, _ = env.reset(seed=seed)
    frames, hold = [], None
    for _ in range(env._max_episode_steps):
        action = expert_action(observation["agent_pos"])
        frames.append({"observation.state": observation["agent_pos"], "action": action,
                       f"observation.images.{CAMERA}": observation["pixels"][CAMERA], "task": TASK})
        executed = action.copy()
        moving = executed[:3] != 0.0  # exactly zero holds the pose: leave the close phase alone
        executed[:3][moving] += rng.normal(0.0, NOISE, int(moving.sum()))
        observation, _, terminated, truncated, info = env.step(executed)
        if info["is_success"] and hold is None:
            hold = HOLD
        if hold is not None:
            if hold == 0:
                return frames
            hold -= 1
        elif terminated or truncated:  # the cube pushed off its box, or out of time
            return None
    return frames if hold is not None else None


def write_owner(root: Path, name: str, owner: int, owners: int, spec: SimSpec) -> dict:
    """Write dataset `name` at `root` (replaced); returns {"episodes", "frames", "failed"}."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from zk0.sim.so101 import FPS, ReachClose, Region

    evaluation = owner == EVAL_OWNER
    region = Region.union() if evaluation else Region.strip(owner, owners)
    episodes = spec.eval_episodes if evaluation else spec.episodes
    if root.exists():
        shutil.rmtree(root)
    dataset = LeRobotDataset.create(repo_id=f"zk0-sim/{name}", fps=FPS, features=features(), root=root,
                                    robot_type="so101_follower", use_videos=True)
    env = ReachClose(region)
    rng = np.random.default_rng(demo_seed(spec.seed, owner, 0))
    recorded = failed = frames = 0
    try:
        while recorded < episodes:
            episode = demonstration(env, demo_seed(spec.seed, owner, recorded + failed), rng)
            if episode is None:
                failed += 1
                if failed > episodes:
                    raise RuntimeError(f"the scripted expert failed {failed} episodes of {name}; the simulator misbehaves")
                continue
            for frame in episode:
                dataset.add_frame(frame)
            with ordinary_scheduling():
                dataset.save_episode()
            recorded += 1
            frames += len(episode)
    finally:
        env.close()
    with ordinary_scheduling():
        dataset.finalize()
    return {"episodes": recorded, "frames": frames, "failed": failed}


def write_sim_federation(out_dir: Path, owners: int, spec: SimSpec = SimSpec(), log=print) -> tuple[list[str], str]:
    """`owners` datasets `owner_<k>` and an `eval` dataset under `out_dir` (kept when complete
    and of this spec). Returns the owners' dataset URIs and the eval dataset's URI."""
    import json

    if not 1 <= owners <= MAX_OWNERS:
        raise ValueError(f"--clients must be in 1..{MAX_OWNERS}, got {owners}")
    if spec.episodes < 1 or spec.eval_episodes < 1:
        raise ValueError("--episodes and --eval-episodes must be >= 1")
    demo_seed(spec.seed, 0, 0)  # --seed in range, before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = []
    for owner in [*range(owners), EVAL_OWNER]:
        name = "eval" if owner == EVAL_OWNER else f"owner_{owner}"
        root, stamp = out_dir / name, out_dir / f"{name}.spec.json"
        want = {"owner": owner, "owners": owners, "episodes": spec.episodes, "eval_episodes": spec.eval_episodes,
                "seed": spec.seed}
        if not ((root / "meta" / "info.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want):
            staging = out_dir / f".{name}.partial"
            with quiet_dataset_writer():
                written = write_owner(staging, name, owner, owners, spec)
            if root.exists():
                shutil.rmtree(root)
            staging.rename(root)
            stamp.write_text(json.dumps(want) + "\n")
            log(f"{name}: {written['episodes']} episodes, {written['frames']} frames "
                f"({written['failed']} failed by the expert, not recorded)")
        roots.append(root)
    return [f"local:{root}" for root in roots[:-1]], f"local:{roots[-1]}"
