"""zk0.ops.local_superlink: the simulation's local SuperLink, started with Flower's own function
and a deadline a busy machine meets (flwr run's 15 s was not), and the Flower code it relies on."""

from __future__ import annotations

import ast
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from flwr.cli import local_superlink
from ports import free_port

MARK = "ZK0_TEST_LOCAL_SUPERLINK"


def processes_marked(mark: str) -> list[int]:
    """The pids whose environment holds MARK=mark (the SuperLink is detached from its starter)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{MARK}={mark}".encode() in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def flwr_env(tmp_path: Path):
    mark = uuid.uuid4().hex
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), MARK: mark,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # as the script's
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()), "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    yield env
    for pid in processes_marked(mark):
        os.kill(pid, signal.SIGKILL)


def start(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zk0.ops.local_superlink", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_it_starts_once_and_answers(flwr_env: dict):
    started = start(flwr_env)
    assert started.returncode == 0, started.stderr
    health = httpx.get(f"http://127.0.0.1:{flwr_env['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']}/health", timeout=10)
    assert health.is_success
    running = processes_marked(flwr_env[MARK])
    assert running
    again = start(flwr_env)  # what flwr run then does: finds it up, starts nothing
    assert again.returncode == 0, again.stderr
    assert "Starting local SuperLink" not in again.stdout
    assert processes_marked(flwr_env[MARK]) == running


def test_a_start_past_its_deadline_is_one_line_and_leaves_nothing(flwr_env: dict):
    failed = start(flwr_env, "--timeout", "0")
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "zk0: error: Failed to start local SuperLink within 0s. "
        f"See logs at {flwr_env['FLWR_HOME']}/local-superlink/superlink.log."]
    deadline = time.monotonic() + 30  # killed by Flower; gone once the kernel has reaped it
    while processes_marked(flwr_env[MARK]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_marked(flwr_env[MARK])


def test_flower_reads_the_startup_deadline_from_its_module_at_each_start():
    """zk0.ops.local_superlink sets flwr.cli.local_superlink.LOCAL_SUPERLINK_STARTUP_TIMEOUT: this
    fails when Flower stops reading that name when it starts the SuperLink."""
    starts = ast.parse(inspect.getsource(local_superlink._start_local_superlink))
    read = {node.id for node in ast.walk(starts) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert "LOCAL_SUPERLINK_STARTUP_TIMEOUT" in read
    assert "_start_local_superlink(" in inspect.getsource(local_superlink.ensure_local_superlink)
