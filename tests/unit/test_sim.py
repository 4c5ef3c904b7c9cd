"""The simulated SO-101 (zk0.sim): the task, its scripted expert, the recorded datasets and the
closed-loop scores, on the real MuJoCo simulator rendering through OSMesa.

zk0 reaches into lerobot-env-so101's env class (its model, data, camera and renderer): the
first test fails when a new version of the package moves them."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from zk0.sim.so101 import HORIZON, IMAGE_SIZE, STATE_DIM, ReachClose, Region, expert_action

EPISODES = 20


def run_episode(env: ReachClose, seed: int, act) -> tuple[bool, int]:
    observation, _ = env.reset(seed=seed)
    for step in range(1, HORIZON + 1):
        observation, _, terminated, truncated, info = env.step(act(observation["agent_pos"]))
        if terminated or truncated:
            return info["is_success"], step
    raise AssertionError("the episode outlived its horizon")


def test_the_pinned_simulator_is_the_one_zk0_reaches_into():
    assert version("lerobot-env-so101") == "0.4.0"
    env = ReachClose()
    try:
        observation, _ = env.reset(seed=0)
        assert observation["pixels"]["front"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert observation["pixels"]["front"].dtype == np.uint8 and observation["pixels"]["front"].std() > 0
        assert observation["agent_pos"].shape == (STATE_DIM,)
        cube = env._sim._data.sensor("block_pos").data
        assert np.allclose(observation["agent_pos"][-3:], cube)
        assert env.render().shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    finally:
        env.close()


def test_regions_split_the_table_into_strips():
    strips = [Region.strip(i, 4) for i in range(4)]
    assert strips[0].low == Region.union().low and strips[-1].high == Region.union().high
    assert all(a.high[1] == pytest.approx(b.low[1]) for a, b in zip(strips, strips[1:]))
    assert Region.parse("1/4") == strips[1] and Region.parse("all") == Region.union()
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError, match="region"):
            Region.parse(bad)


@pytest.mark.parametrize("region", ["0/2", "1/2", "0/4", "3/4", "all"])
def test_the_scripted_expert_solves_its_task_and_doing_nothing_does_not(region):
    env = ReachClose(Region.parse(region), camera=False)
    try:
        solved = [run_episode(env, seed, expert_action)[0] for seed in range(EPISODES)]
        idle = [run_episode(env, seed, lambda _: np.zeros(4, np.float32))[0] for seed in range(EPISODES)]
    finally:
        env.close()
    assert sum(solved) >= 0.95 * EPISODES
    assert not any(idle)


def test_an_owner_records_its_own_strip_below_the_rollout_seeds(sim_roots):
    from zk0.data.dataset import open_node_data
    from zk0.data.uri import parse_dataset_uri
    from zk0.sim.rollout import ROLLOUT_SEED_BASE
    from zk0.tools.sim_data import EVAL_OWNER, MAX_SEED, MAX_TRIES, demo_seed

    cube_y = []  # the lowest and highest y of each owner's cubes (the state's second-to-last value)
    for root in sim_roots[:2]:
        data = open_node_data(parse_dataset_uri(f"local:{root}"), action_dim=4, heldout_episodes=1, state_dim=17)
        state = data.meta.stats["observation.state"]
        cube_y.append((float(state["min"][-2]), float(state["max"][-2])))
    # The expert moves a cube by less than a millimetre: each owner's stay in its half.
    (_, high0), (low1, _) = cube_y
    assert high0 < 0.002 and low1 > -0.002, cube_y
    assert demo_seed(MAX_SEED - 1, EVAL_OWNER, MAX_TRIES - 1) < ROLLOUT_SEED_BASE
    with pytest.raises(ValueError, match="--seed 2000"):
        demo_seed(MAX_SEED, 0, 0)


def test_rollouts_score_the_same_episodes_every_time_and_write_a_video(sim_policy, tmp_path: Path):
    from zk0.sim.rollout import ROLLOUT_SEED_BASE, score

    policy, preprocessor, postprocessor = sim_policy
    first = score(policy, preprocessor, postprocessor, "so101_reach", 3, seed=7, video=tmp_path / "episode.mp4")
    again = score(policy, preprocessor, postprocessor, "so101_reach", 3, seed=7, region="0/2")
    assert first.first_seed == again.first_seed == ROLLOUT_SEED_BASE + 7 * (1 << 20)
    assert 0.0 <= first.success_rate <= 1.0 and 1 <= first.mean_length <= HORIZON
    assert (tmp_path / "episode.mp4").stat().st_size > 1000
    repeat = score(policy, preprocessor, postprocessor, "so101_reach", 3, seed=7)
    assert (repeat.success_rate, repeat.mean_length, repeat.mean_reward) == (
        first.success_rate, first.mean_length, first.mean_reward)


def test_the_camera_is_drawn_only_on_the_steps_a_replanning_policy_reads():
    every, sparse = ReachClose(camera_every=1), ReachClose(camera_every=3)
    try:
        frames = {}
        for env in (every, sparse):
            observation, _ = env.reset(seed=5)
            frames[env] = [observation["pixels"]["front"]]
            for _ in range(7):
                observation, *_ = env.step(np.array([1.0, 0.0, -1.0, 1.0], np.float32))
                frames[env].append(observation["pixels"]["front"])
        for step, (drawn, kept) in enumerate(zip(frames[every], frames[sparse], strict=True)):
            assert np.array_equal(kept, frames[every][step - step % 3])
        assert not np.array_equal(frames[every][0], frames[every][3])  # the arm moved: a stale frame would show
        assert np.array_equal(sparse.render(), every.render())  # a video is always drawn fresh
    finally:
        every.close()
        sparse.close()


def test_a_rollout_that_skips_unread_frames_acts_as_one_that_draws_every_frame(sim_policy, monkeypatch):
    import torch
    from lerobot.scripts import lerobot_eval

    from zk0.sim import rollout

    policy, preprocessor, postprocessor = sim_policy
    actions = []
    lerobots = lerobot_eval.rollout  # LeRobot's loop runs unchanged; the test keeps what it returns

    def kept(*args, **kwargs):
        data = lerobots(*args, **kwargs)
        actions.append(data["action"])
        return data

    monkeypatch.setattr(lerobot_eval, "rollout", kept)
    sparse = rollout.score(policy, preprocessor, postprocessor, "so101_reach", 2, seed=3)
    drawn = rollout.make_env
    monkeypatch.setattr(rollout, "make_env", lambda name, region, camera_every: drawn(name, region))
    dense = rollout.score(policy, preprocessor, postprocessor, "so101_reach", 2, seed=3)
    assert torch.equal(actions[0], actions[1])
    assert (sparse.success_rate, sparse.mean_length) == (dense.success_rate, dense.mean_length)


def test_a_policy_of_another_arm_is_refused_in_one_line(tiny_policy):
    from zk0.sim.rollout import check_fits

    with pytest.raises(ValueError, match=r"'observation.state' has shape \(17,\) there, \(6,\) in the policy"):
        check_fits(tiny_policy.config, "so101_reach")


def test_recording_leaves_the_writer_on_the_ordinary_scheduler(tmp_path: Path):
    """As root, the video encoder switched the recording process to SCHED_FIFO 99 (every process
    it started inherited it); zk0.util.scheduling puts it back. Where that cannot happen (not
    root) the check holds trivially."""
    import os

    from zk0.tools.sim_data import SimSpec, write_owner

    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    write_owner(tmp_path / "owner_0", "owner_0", 0, 2, SimSpec(episodes=2, eval_episodes=1))
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
