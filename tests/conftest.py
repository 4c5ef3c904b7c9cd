"""Shared fixtures: real LeRobot datasets and the real tiny SmolVLA, built once per session.

Everything runs on the CPU without network: the Hugging Face Hub is switched to
offline mode before LeRobot is imported, and zk0's model cache lives in a session
temporary directory, so no test depends on (or fills) `~/.cache`.

Two tiers, one folder each: tests/system starts real processes (Flower's SuperLink,
SuperNodes and simulation, zk0bot's tmux sessions and nginx, lerobot-train, the installer, a
browser); tests/unit is the fast tier, within this process. ./run-tests.sh runs the unit tier
first, then the system tier; the markers `unit` and `system` follow the folders.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import zk0  # noqa: E402,F401  (before any test module loads torch: it sets the OpenMP wait policy)

# Seconds each system-tier module took alone on a 2-core machine (tests/system/durations.json).
MODULE_SECONDS = json.loads((Path(__file__).parent / "system" / "durations.json").read_text())


def pytest_collection_modifyitems(config, items) -> None:
    """The tier is the folder: tests/system starts real processes, tests/unit does not.

    Longest module first: run-tests.sh gives the system tier's modules to pytest-xdist workers
    whole, in this order, so a long module taken last would leave the others idle while it runs.
    The sort is stable: a module's tests keep their order (test_zk0bot's build on each other)."""
    for item in items:
        item.add_marker(pytest.mark.system if item.path.parent.name == "system" else pytest.mark.unit)
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0) if item.path.parent.name == "system" else 0)


@pytest.fixture(autouse=True)
def ordinary_scheduling() -> Iterator[None]:
    """Put this process back on the ordinary scheduler after each test. As root, writing a LeRobot
    dataset's videos left pytest at SCHED_FIFO 99 (zk0's writers now restore it:
    zk0.util.scheduling); every process a later test started inherited it, and one busy thread
    then starved both cores (test_closed_loop hung past its timeout). This guards the suite
    against any other path that does the same."""
    yield
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


# Small datasets keep the session fast; 4 episodes leave 2 to train on and 2 held out.
DEMO_EPISODES = 4
DEMO_FRAMES = 30


@pytest.fixture(scope="session", autouse=True)
def zk0_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point zk0's cache (tiny backbone and tiny policy) at a session directory."""
    path = tmp_path_factory.mktemp("zk0-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZK0_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def demo_roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two synthetic SO-100 client datasets and a held-out eval dataset, written with LeRobot's writer."""
    from zk0.tools.demo_data import DemoSpec, write_demo_federation

    spec = DemoSpec(episodes=DEMO_EPISODES, frames_per_episode=DEMO_FRAMES)
    return write_demo_federation(tmp_path_factory.mktemp("demo-data"), num_clients=2, spec=spec)


@pytest.fixture(scope="session")
def sim_roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two simulated SO-101 owners (a few scripted demonstrations each) and an eval set (zk0 sim-data)."""
    from zk0.tools.sim_data import SimSpec, write_sim_federation

    owners, eval_uri = write_sim_federation(tmp_path_factory.mktemp("sim-data"), 2, SimSpec(episodes=3, eval_episodes=2),
                                            log=lambda _: None)
    return [Path(uri.removeprefix("local:")) for uri in [*owners, eval_uri]]


@pytest.fixture(scope="session")
def sim_policy(zk0_cache_dir: Path, sim_roots: list[Path]):
    """The tiny SmolVLA fitted to the simulated SO-101's features, with its processors."""
    from zk0.data.dataset import open_node_data
    from zk0.data.uri import parse_dataset_uri
    from zk0.policy.model import load_policy, make_processors

    data = open_node_data(parse_dataset_uri(f"local:{sim_roots[-1]}"), action_dim=4, heldout_episodes=0, state_dim=17)
    policy = load_policy("tiny", data.meta, "cpu")
    return (policy, *make_processors(policy, data.stats))


@pytest.fixture(scope="session")
def eval_data(demo_roots: list[Path]):
    """The eval dataset opened as the server opens it: every episode, features checked."""
    from zk0.data.dataset import open_node_data
    from zk0.data.uri import parse_dataset_uri

    return open_node_data(parse_dataset_uri(f"local:{demo_roots[-1]}"), action_dim=6, heldout_episodes=0)


@pytest.fixture(scope="session")
def session_policy(zk0_cache_dir: Path, eval_data):
    """The tiny SmolVLA fitted to the demo features (built once; tests get copies)."""
    from zk0.policy.model import load_policy

    return load_policy("tiny", eval_data.meta, "cpu")


@pytest.fixture
def tiny_policy(session_policy):
    """A private copy of the tiny SmolVLA that a test may train or modify."""
    return copy.deepcopy(session_policy)


@pytest.fixture(scope="session")
def processors(session_policy, eval_data):
    """SmolVLA's pre/post processors with the eval dataset's normalization statistics."""
    from zk0.policy.model import make_processors

    return make_processors(session_policy, eval_data.stats)


@pytest.fixture(scope="session")
def eval_split(session_policy, eval_data):
    """The eval episodes as a LeRobotDataset yielding SmolVLA's action chunks."""
    from zk0.data.dataset import open_split

    return open_split(eval_data, eval_data.train_episodes, session_policy.config)

