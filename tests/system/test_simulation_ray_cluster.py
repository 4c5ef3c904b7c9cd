"""The simulation on an existing Ray cluster: `ray start --head` (loopback, free ports, its own
temp dir), then `./train-fl-simulation.sh --tiny --ray-address HOST:PORT` runs its clients
there instead of on a private local Ray (docs/RUNNING.md, "On an existing Ray cluster").

The cluster's own session logs show that the clients ran on it. `ray stop` would stop every
Ray on the machine, other users' simulations included, so the cluster's processes are
found by a marker variable they all inherit and ended by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from ports import free_port
from test_simulation_e2e import MARKER, marked_processes, run_simulation

pytestmark = pytest.mark.timeout(600)

RAY = Path(sys.executable).parent / "ray"


def end_marked(marker: str) -> None:
    """SIGTERM every process carrying the marker, then SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        for pid in marked_processes(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + grace
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster as an operator starts it: its address and its temp dir."""
    # Short: Ray's socket paths live under the temp dir and must fit in 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="zk0-ray-", dir="/tmp"))
    marker = uuid.uuid4().hex
    port = free_port()
    command = [
        str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--include-dashboard", "false", "--num-cpus", "2", "--temp-dir", str(temp_dir), "--disable-usage-stats",
    ]
    env = os.environ | {MARKER: marker, "RAY_ADDRESS": ""}
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        end_marked(marker)
        leftovers = marked_processes(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert leftovers == {}


def test_simulation_runs_its_clients_on_the_existing_cluster(ray_cluster, tmp_path):
    """The run completes, its ClientApp actors ran in the cluster (the cluster's worker logs
    name them), and the script leaves no process of its own behind."""
    address, temp_dir = ray_cluster
    run = run_simulation(
        ["--tiny", "--clients", "2", "--rounds", "1", "--ray-address", address,
         "--output-dir", str(tmp_path / "outputs"), "--run-config", "local-steps=3 eval-batches=1"],
        tmp_path / "sim", tmp_path / "sim.log", timeout=480,
    )
    assert run.returncode == 0, run.output[-4000:]
    assert f"on the Ray cluster at {address}" in run.output
    assert "finished:completed" in run.output
    assert run.leftovers == []
    logs = temp_dir / "session_latest" / "logs"
    actors = [path for path in logs.glob("worker-*.out") if ":actor_name:ClientAppActor" in path.read_text(errors="replace")]
    assert len(actors) >= 1, sorted(path.name for path in logs.iterdir())
    drivers = list(logs.glob("python-core-driver-*.log"))
    assert drivers, sorted(path.name for path in logs.iterdir())


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--ray-address"], "--ray-address needs HOST:PORT"),
        (["--ray-address", "ray://127.0.0.1:10001"], "--ray-address must be HOST:PORT"),
        (["--ray-address", "127.0.0.1:{closed}"], "--ray-address 127.0.0.1:{closed}: no Ray cluster answers there"),
    ],
)
def test_bad_ray_address_is_one_line(args, error, tmp_path):
    """A missing, malformed or unanswered --ray-address stops before anything starts: exit 2,
    one line naming it."""
    closed = free_port()  # bound and released: nothing listens there
    args = [arg.format(closed=closed) for arg in args]
    run = run_simulation(["--tiny", *args], tmp_path / "sim", tmp_path / "sim.log", timeout=60)
    assert run.returncode == 2, run.output[-2000:]
    errors = [line for line in run.output.splitlines() if line.startswith("zk0-sim: error:")]
    assert len(errors) == 1 and error.format(closed=closed) in errors[0], run.output
    assert "Starting local SuperLink" not in run.output
    assert not (tmp_path / "sim").exists() or not list((tmp_path / "sim").glob("demo-data-*"))
