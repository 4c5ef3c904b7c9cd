"""A node's dataset: opening, checking and splitting it, and `zk0 check-dataset`'s one-line errors.

The bad datasets are real LeRobot v3.0 datasets written with LeRobot's own writer,
just for the wrong robot (7 joints) or without a camera.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zk0.data.dataset import DatasetError, dataset_identity, infinite_batches, open_node_data, open_split, stream_seed
from zk0.data.uri import parse_dataset_uri

ZK0 = [sys.executable, "-m", "zk0"]


def write_dataset(root: Path, *, dim: int, camera: bool) -> Path:
    """A minimal LeRobot dataset: 3 episodes of 4 frames, `dim`-dimensional state and action."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    vector = {"dtype": "float32", "shape": (dim,), "names": None}
    features = {"observation.state": vector, "action": dict(vector)}
    if camera:
        features["observation.images.front"] = {"dtype": "image", "shape": (16, 16, 3), "names": ["height", "width", "channels"]}
    dataset = LeRobotDataset.create(repo_id=f"test/{root.name}", fps=30, features=features, root=root, use_videos=False)
    for _ in range(3):
        for _ in range(4):
            frame = {"observation.state": np.zeros(dim, np.float32), "action": np.zeros(dim, np.float32), "task": "wave"}
            if camera:
                frame["observation.images.front"] = np.zeros((16, 16, 3), np.uint8)
            dataset.add_frame(frame)
        dataset.save_episode()
    dataset.finalize()
    return root


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-datasets")
    return {
        "seven_joints": write_dataset(root / "seven_joints", dim=7, camera=True),
        "no_camera": write_dataset(root / "no_camera", dim=6, camera=False),
    }


def check_dataset(uri: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `zk0 check-dataset URI` as an operator would, with an empty offline HF home."""
    env = env or os.environ | {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*ZK0, "check-dataset", uri], capture_output=True, text=True, env=env, timeout=300)


def test_last_episodes_are_held_out(demo_roots):
    """The last `heldout_episodes` episodes are kept for evaluation and never trained on."""
    data = open_node_data(parse_dataset_uri(f"local:{demo_roots[0]}"), action_dim=6, heldout_episodes=2)
    assert data.train_episodes == [0, 1]
    assert data.heldout_episodes == [2, 3]
    assert data.meta.camera_keys == ["observation.images.front", "observation.images.wrist"]
    assert "action" in data.stats


def test_holding_out_every_episode_is_refused(demo_roots):
    """A node must keep at least one episode to train on."""
    uri = parse_dataset_uri(f"local:{demo_roots[0]}")
    with pytest.raises(DatasetError, match="cannot hold out 4") as caught:
        open_node_data(uri, action_dim=6, heldout_episodes=4)
    assert "\n" not in str(caught.value)


def test_batches_carry_action_chunks_and_never_run_out(demo_roots, session_policy):
    """Training batches hold SmolVLA's action chunk (with padding flags) and cycle past the epoch end,
    in the same order for the same seed."""
    data = open_node_data(parse_dataset_uri(f"local:{demo_roots[0]}"), action_dim=6, heldout_episodes=3)
    split = open_split(data, data.train_episodes, session_policy.config)
    batch_size = 16
    assert len(split) < 2 * batch_size

    def first_batches(seed: int) -> list[dict]:
        return list(itertools.islice(infinite_batches(split, batch_size, num_workers=0, seed=seed), 3))

    batches = first_batches(seed=7)
    chunk = session_policy.config.chunk_size
    assert batches[0]["action"].shape == (batch_size, chunk, 6)
    assert batches[0]["action_is_pad"].shape == (batch_size, chunk)
    assert [b["index"].tolist() for b in batches] == [b["index"].tolist() for b in first_batches(seed=7)]


def test_a_dataset_draws_the_same_batches_wherever_it_lies(demo_roots, session_policy, tmp_path):
    """Seeds follow what a dataset is, not its path: the same demo dataset copied to two
    directories of other names gets the same identity, seed and training batches; another
    dataset, or other training episodes of the same one, get another seed."""
    copies = [shutil.copytree(demo_roots[0], tmp_path / name) for name in ("here", "elsewhere/deeper")]
    nodes = [open_node_data(parse_dataset_uri(f"local:{root}"), action_dim=6, heldout_episodes=2) for root in copies]
    assert nodes[0].identity == nodes[1].identity != nodes[0].uri.location
    assert stream_seed(3, nodes[0]) == stream_seed(3, nodes[1]) != stream_seed(4, nodes[0])

    def indices(data) -> list[list[int]]:
        split = open_split(data, data.train_episodes, session_policy.config)
        stream = infinite_batches(split, 4, num_workers=0, seed=stream_seed(3, data))
        return [batch["index"].tolist() for batch in itertools.islice(stream, 4)]

    assert indices(nodes[0]) == indices(nodes[1])
    other = open_node_data(parse_dataset_uri(f"local:{demo_roots[1]}"), action_dim=6, heldout_episodes=2)
    assert other.identity != nodes[0].identity
    fewer = open_node_data(parse_dataset_uri(f"local:{copies[0]}"), action_dim=6, heldout_episodes=3)
    assert stream_seed(3, fewer) != stream_seed(3, nodes[0])


def test_a_hub_dataset_is_its_repo_id():
    """A hub dataset is named by its repo id, whatever HF cache holds it."""
    assert dataset_identity(parse_dataset_uri("hf:owner/name")) == dataset_identity(parse_dataset_uri("owner/name"))
    assert dataset_identity(parse_dataset_uri("hf:owner/name")) != dataset_identity(parse_dataset_uri("hf:owner/other"))


def test_check_dataset_accepts_a_good_dataset(demo_roots, tmp_path):
    """A fitting dataset gets one `ok:` line describing it and exit 0."""
    result = check_dataset(f"local:{demo_roots[0]}", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: local:") and "4 episodes" in result.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "directory does not exist"),
        ("bad_uri", "is not a valid dataset URI"),
        ("not_lerobot", "not a LeRobot dataset root"),
        ("seven_joints", "has shape (7,), the federation expects (6,)"),
        ("no_camera", "no camera feature"),
        ("hub_offline", "cannot read LeRobot metadata"),
    ],
)
def test_check_dataset_errors_are_one_line(case, expected, bad_datasets, tmp_path):
    """Every unusable dataset gives exactly one `zk0: error:` line on stderr, nothing on stdout, exit != 0."""
    uris = {
        "missing": f"local:{tmp_path / 'nowhere'}",
        "bad_uri": "just a name",
        "not_lerobot": f"local:{tmp_path}",
        "hub_offline": "hf:zk0-tests/does-not-exist",
        **{name: f"local:{path}" for name, path in bad_datasets.items()},
    }
    result = check_dataset(uris[case], tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0: error: ") and expected in lines[0]


@pytest.mark.parametrize(
    "missing",
    ["data/chunk-000/file-000.parquet", "videos/observation.images.wrist/chunk-000/file-000.mp4", "meta/tasks.parquet"],
)
def test_local_dataset_with_a_missing_file_never_downloads(missing, demo_roots, tmp_path):
    """A `local:` dataset missing a file LeRobot would fetch from the Hub gives one line naming
    the file, with the Hub reachable in principle (HF_HUB_OFFLINE unset, HF_ENDPOINT pointing
    at a listening socket here): the socket proves no request was even attempted."""
    root = shutil.copytree(demo_roots[0], tmp_path / "copy")
    (root / missing).unlink()
    with socket.create_server(("127.0.0.1", 0)) as hub:
        hub.setblocking(False)
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env |= {"HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": f"http://127.0.0.1:{hub.getsockname()[1]}"}
        result = check_dataset(f"local:{root}", tmp_path, env=env)
        with pytest.raises(BlockingIOError):
            hub.accept()
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.splitlines() == [f"zk0: error: dataset local:{root}: file {missing} is missing; "
                                          f"the dataset is incomplete"]


def test_local_split_whose_files_lack_an_episode_is_an_error(demo_roots, session_policy, tmp_path):
    """Files present but not holding an episode their metadata lists: opening that split is a
    DatasetError, where LeRobot would otherwise download the episode from the Hub."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = shutil.copytree(demo_roots[0], tmp_path / "copy")
    data_file = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data_file)
    pq.write_table(table.filter(pc.field("episode_index") != 3), data_file)
    data = open_node_data(parse_dataset_uri(f"local:{root}"), action_dim=6, heldout_episodes=2)
    assert len(open_split(data, [0, 1], session_policy.config)) > 0
    with pytest.raises(DatasetError, match="do not hold every episode"):
        open_split(data, [2, 3], session_policy.config)
    with pytest.raises(DatasetError, match=r"cannot read episodes \[3\]"):
        open_split(data, [3], session_policy.config)


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_check_dataset_names_a_video_that_does_not_decode(keep, demo_roots, tmp_path):
    """A truncated (or emptied) mp4 fails `zk0 check-dataset` in one line naming the file,
    instead of passing and failing mid-training with FFmpeg's words and no file name."""
    root = shutil.copytree(demo_roots[0], tmp_path / "copy")
    video = "videos/observation.images.wrist/chunk-000/file-000.mp4"
    path = root / video
    os.truncate(path, int(path.stat().st_size * keep))
    result = check_dataset(f"local:{root}", tmp_path)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"zk0: error: dataset local:{root}: video {video} cannot be decoded"), lines[0]


def test_split_offsets_are_lerobots_own(eval_data, session_policy):
    """The training split asks LeRobot for exactly the offsets its training script would."""
    from lerobot.datasets.factory import resolve_delta_timestamps

    split = open_split(eval_data, eval_data.train_episodes, session_policy.config)
    assert split.delta_timestamps == resolve_delta_timestamps(session_policy.config, eval_data.meta)
    assert split.delta_timestamps["action"][:2] == [0.0, 1 / eval_data.meta.fps]
