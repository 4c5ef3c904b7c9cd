"""Identities an operator can read: `zk0bot server register node.pub --name robot-7` labels the
node; the {node id: name} map the ServerApp reads (ZK0_NODE_NAMES) follows the node ids across
SuperLink restarts; `server nodes` shows the names."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_zk0bot import Zk0bot

from zk0.server.identities import registered_names


def node_key(tmp_path: Path, name: str, comment: str) -> Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", comment, "-f", str(key)], check=True)
    return Path(f"{key}.pub")


@pytest.fixture
def server(tmp_path: Path):
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    started = bot("server", "start")
    assert started.returncode == 0, started.stderr + started.stdout
    yield bot
    bot("stop")


def test_names_are_registered_shown_and_follow_restarts(server: Zk0bot, tmp_path: Path):
    names_file = server.home / "server" / "node-names.json"
    robot = node_key(tmp_path, "robot", "zk0-node-mug")
    other = node_key(tmp_path, "other", "")  # no comment: the file name
    assert server("server", "register", str(robot), "--name", "robot-7").returncode == 0
    assert server("server", "register", str(other)).returncode == 0
    names = registered_names(str(names_file))
    assert sorted(names.values()) == ["other", "robot-7"]
    listed = server("server", "nodes").stdout
    assert "robot-7" in listed and "zk0-node-mug" in listed and "other" in listed, listed

    superexec = next(p for p in server.process_tree() if "zk0.ops.private_superexec" in p.cmdline())
    assert superexec.environ()["ZK0_NODE_NAMES"] == str(names_file)

    assert server("server", "stop").returncode == 0
    assert server("server", "start").returncode == 0
    after = registered_names(str(names_file))
    assert sorted(after.values()) == ["other", "robot-7"]
    assert set(after) != set(names)  # Flower gave new node ids; the names went with them
    assert server("server", "register", str(robot), "--name", "arm-1").returncode == 0  # a rename
    assert sorted(registered_names(str(names_file)).values()) == ["arm-1", "other"]
    assert json.loads(names_file.read_text())  # a plain JSON object on disk


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "option --name needs a value"), ("x" * 65, "must be 1-64 printable characters"),
     ("tab\there", "must be 1-64 printable characters"), ("   ", "must be 1-64 printable characters")],
)
def test_a_bad_name_is_one_line(tmp_path: Path, name: str, message: str):
    """Checked before anything else: no server needed."""
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    result = bot("server", "register", str(node_key(tmp_path, "k", "c")), "--name", name)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_a_name_taken_by_another_key_is_refused(server: Zk0bot, tmp_path: Path):
    assert server("server", "register", str(node_key(tmp_path, "a", "c")), "--name", "robot-7").returncode == 0
    taken = server("server", "register", str(node_key(tmp_path, "b", "c")), "--name", "robot-7")
    assert taken.returncode != 0 and "the name 'robot-7' is taken" in taken.stderr, taken.stderr
    assert list(registered_names(str(server.home / "server" / "node-names.json")).values()) == ["robot-7"]
