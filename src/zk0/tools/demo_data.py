"""Synthetic SO-100-like LeRobot datasets, written with LeRobot's own writer.

Each dataset is one "robot owner" with one task: a 6-joint arm (state and action in
degrees-like units, 30 fps) that moves from a random start towards a goal pose
specific to the task, along a task-specific path. Two cameras see a rendering of the
arm state on a background coloured by the task. The action depends on the state and
the task, so a policy can learn it, and each dataset's goal differs, so a federation
over them is non-IID. The evaluation set holds fresh episodes of every task.

Up to one client per task, each client gets a dataset of its own. Beyond that (hundreds
of simulated clients), writing a dataset per client costs too much (LeRobot's writer
spends ~0.3 s per episode on 2 cores), so one dataset per task is written, holding every
episode of that task's clients, and each client is a shard of it (`#I/N`, zk0.data.uri): its
own disjoint block of episodes, under its own URI.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zk0.util.scheduling import ordinary_scheduling

FPS = 30
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
IMAGE_SHAPE = (48, 64, 3)
CAMERAS = ("observation.images.front", "observation.images.wrist")
TASKS = (
    "Put the red LEGO in the bin",
    "Turn to the right side",
    "Rub the plush toy with the bottle",
    "Put the stuffed animal in the mug",
    "Pick and place the pink knob",
    "Grab the pen and put it into the cylinder",
    "Place the X in the top right box",
    "Pick and place the green box",
)


@dataclass(frozen=True)
class DemoSpec:
    """How much data one synthetic dataset holds."""

    episodes: int = 8
    frames_per_episode: int = 45


def features(cameras: tuple[str, ...] = CAMERAS) -> dict:
    joint_feature = {"dtype": "float32", "shape": (len(JOINTS),), "names": list(JOINTS)}
    camera = {"dtype": "video", "shape": IMAGE_SHAPE, "names": ["height", "width", "channels"]}
    return {
        "observation.state": joint_feature,
        "action": dict(joint_feature),
        **{key: dict(camera) for key in cameras},
    }


def task_goal(task_index: int) -> np.ndarray:
    """The goal pose of a task: fixed per task, different across tasks."""
    rng = np.random.default_rng(1000 + task_index)
    return rng.uniform(-60.0, 60.0, size=len(JOINTS)).astype(np.float32)


def render(state: np.ndarray, task_index: int, camera: int) -> np.ndarray:
    """A small image of the arm: one bright bar per joint on a task-coloured background."""
    height, width, _ = IMAGE_SHAPE
    image = np.zeros(IMAGE_SHAPE, dtype=np.uint8)
    hue = np.array([(37 * task_index) % 256, (91 * task_index + 60) % 256, (53 * task_index + 120) % 256])
    image[:] = (hue // 3).astype(np.uint8)
    bar = width // len(JOINTS)
    for j, value in enumerate(state):
        level = int(np.clip((value + 100.0) / 200.0, 0.0, 1.0) * (height - 1))
        rows = slice(height - 1 - level, height) if camera == 0 else slice(0, level + 1)
        image[rows, j * bar : (j + 1) * bar - 1, camera] = 230
    return image


def rollout(task_index: int, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """States and actions of one episode: a proportional controller with a task-specific sway."""
    goal = task_goal(task_index)
    sway = np.sin(np.arange(len(JOINTS)) + task_index).astype(np.float32) * 4.0
    state = rng.uniform(-80.0, 80.0, size=len(JOINTS)).astype(np.float32)
    states, actions = [], []
    for t in range(frames):
        action = state + 0.12 * (goal - state) + sway * np.cos(t / 6.0)
        action = action.astype(np.float32)
        states.append(state)
        actions.append(action)
        state = (action + rng.normal(0.0, 0.3, size=len(JOINTS))).astype(np.float32)
    return np.stack(states), np.stack(actions)


def write_dataset(root: Path, repo_id: str, task_indices: list[int], spec: DemoSpec, seed: int,
                  cameras: tuple[str, ...] = CAMERAS, streaming: bool = False) -> Path:
    """Write one dataset; episode i uses task `task_indices[i % len(task_indices)]`.

    `streaming`: encode videos frame by frame instead of from per-frame image files (~30%
    faster per episode; used where hundreds of episodes are written)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if root.exists():
        shutil.rmtree(root)
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=FPS, features=features(cameras), root=root, robot_type="so100_follower", use_videos=True,
        streaming_encoding=streaming,
    )
    rng = np.random.default_rng(seed)
    for episode in range(spec.episodes):
        task_index = task_indices[episode % len(task_indices)]
        states, actions = rollout(task_index, spec.frames_per_episode, rng)
        for state, action in zip(states, actions):
            frame = {"observation.state": state, "action": action, "task": TASKS[task_index]}
            for c, key in enumerate(cameras):
                frame[key] = render(state, task_index, c)
            dataset.add_frame(frame)
        with ordinary_scheduling():
            dataset.save_episode()
    with ordinary_scheduling():
        dataset.finalize()
    return root


def write_demo_federation(out_dir: Path, num_clients: int, spec: DemoSpec = DemoSpec()) -> list[Path]:
    """Write `num_clients` client datasets (one task each) and a held-out `eval` dataset.

    Returns the client roots followed by the eval root. Existing complete datasets are kept.
    """
    if not 1 <= num_clients <= len(TASKS):
        raise ValueError(f"demo data supports 1 to {len(TASKS)} clients, got {num_clients}")
    jobs = [(f"client_{i}", [i], 10 + i, spec) for i in range(num_clients)]
    jobs.append(("eval", list(range(num_clients)), 999, spec))
    return [_write_kept(out_dir, *job) for job in jobs]


def write_shared_federation(out_dir: Path, num_clients: int, spec: DemoSpec) -> tuple[list[str], Path]:
    """`num_clients` clients dealt round-robin over one dataset per task (`task_<t>`): client c
    is shard c // T of task c % T's dataset, holding `spec.episodes` episodes of its own.

    Returns the clients' dataset URIs and the root of the `eval` dataset (one fresh episode
    or more of every task). Existing complete datasets are kept."""
    tasks = min(num_clients, len(TASKS))
    per_task = [len(range(t, num_clients, tasks)) for t in range(tasks)]
    jobs = [(out_dir, f"task_{t}", [t], 10 + t, replace(spec, episodes=spec.episodes * per_task[t])) for t in range(tasks)]
    jobs.append((out_dir, "eval", list(range(tasks)), 999, replace(spec, episodes=max(spec.episodes, tasks))))
    # LeRobot's writer is CPU-bound and single-threaded: one process per core, where there is
    # enough to write to pay a spawned process's imports (~8 s, some 30 episodes' worth).
    # Spawned, not forked: the caller may hold torch's threads.
    episodes = sum(job[-1].episodes for job in jobs)
    workers = min(len(jobs), os.cpu_count() or 1, episodes // 100)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            *roots, eval_root = pool.map(_write_streaming, jobs)
    else:
        *roots, eval_root = map(_write_streaming, jobs)
    uris = [f"local:{roots[c % tasks]}#{c // tasks}/{per_task[c % tasks]}" for c in range(num_clients)]
    return uris, eval_root


def _write_streaming(job: tuple) -> Path:
    return _write_kept(*job, streaming=True)


def demo_federation(out_dir: Path, num_clients: int, spec: DemoSpec = DemoSpec()) -> tuple[list[str], str]:
    """The clients' dataset URIs and the eval dataset's URI of a demo federation of any size:
    a dataset per client up to one per task, shards of shared datasets beyond."""
    if num_clients < 1:
        raise ValueError(f"demo data needs at least 1 client, got {num_clients}")
    if num_clients <= len(TASKS):
        roots = write_demo_federation(out_dir, num_clients, spec)
        return [f"local:{root}" for root in roots[:-1]], f"local:{roots[-1]}"
    uris, eval_root = write_shared_federation(out_dir, num_clients, spec)
    return uris, f"local:{eval_root}"


def _write_kept(out_dir: Path, name: str, tasks: list[int], seed: int, spec: DemoSpec, streaming: bool = False) -> Path:
    """`out_dir/name`, written (through a staging directory) unless a complete one of this size is there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / name
    if not (root / "meta" / "info.json").exists() or _stale(root, spec):
        staging = out_dir / f".{name}.partial"
        write_dataset(staging, f"zk0-demo/{name}", tasks, spec, seed, streaming=streaming)
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    return root


def _stale(root: Path, spec: DemoSpec) -> bool:
    info = json.loads((root / "meta" / "info.json").read_text())
    return info.get("total_episodes") != spec.episodes or info.get("total_frames") != spec.episodes * spec.frames_per_episode
