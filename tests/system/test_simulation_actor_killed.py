"""A simulation actor killed mid-round, as Ray's memory monitor (or the kernel's OOM killer)
ends one: SIGKILL to the `ray::ClientAppActor` process while it trains a node's round-1
message. The run completes all its rounds; the loss costs at most that one round a retry;
server.log says it in one line naming the cause, and Ray's own report of the death lands in the
run's debug.log, not in server.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_simulation_e2e import MARKER, SCRIPT, failure_report, marked_processes, SimulationRun

pytestmark = pytest.mark.timeout(400)

ROUNDS = 2  # the killed round 1 retried, and round 2 after it
# Ray names an actor's process after the method it runs: a node's message in progress.
RUNNING = "ray::ClientAppActor.run"


def kill_an_actor_in_round_1(marker: str, outputs: Path, stop: threading.Event, killed: list[int]) -> None:
    """Once round 0 is recorded (the statistics query is over), SIGKILL the first actor seen running a
    message: a node's round-1 training."""
    while not stop.wait(0.1):
        if not any(outputs.glob("*/metrics.jsonl")):
            continue
        for pid, cmdline in marked_processes(marker).items():
            if cmdline.startswith(RUNNING):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(pid)
                return


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> tuple[SimulationRun, Path, list[int]]:
    work = tmp_path_factory.mktemp("actor-killed")
    outputs = work / "outputs"
    marker = uuid.uuid4().hex
    env = os.environ | {"ZK0_SIM_DIR": str(work / "sim"), MARKER: marker}
    args = [str(SCRIPT), "--tiny", "--clients", "2", "--rounds", str(ROUNDS), "--output-dir", str(outputs),
            "--run-config", f"local-steps=3 eval-batches=1 checkpoint-every={ROUNDS}"]
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_an_actor_in_round_1, args=(marker, outputs, stop, killed), daemon=True)
    log = work / "sim.log"
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        killer.start()
        timed_out = False
        try:
            process.wait(timeout=360)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    stop.set()
    killer.join()
    deadline = time.monotonic() + 15
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = marked_processes(marker)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    run = SimulationRun(process.returncode, timed_out, log.read_text(errors="replace"), sorted(leftovers.values()))
    return run, outputs, killed


def test_the_run_completes_after_its_actor_is_killed(killed_run):
    run, outputs, killed = killed_run
    assert killed, "no actor was seen running a message after round 0: nothing was killed\n" + run.output[-3000:]
    assert not run.timed_out and run.returncode == 0, failure_report(run)
    assert "finished:completed" in run.output
    assert run.leftovers == []
    rows = [json.loads(line) for line in next(outputs.glob("*/metrics.jsonl")).read_text().splitlines()]
    assert [row["round"] for row in rows] == list(range(ROUNDS + 1))
    # The lost node cost at most one retried round; every round's model came from both nodes.
    assert sum(len(row["retries"]) for row in rows) <= 1, [row["retries"] for row in rows]
    assert all(len(row["clients"]) == 2 for row in rows[1:]), [row["clients"] for row in rows]


def test_the_lost_node_is_one_line_and_rays_report_goes_to_the_debug_log(killed_run):
    run, outputs, _ = killed_run
    run_dir = next(outputs.glob("*/metrics.jsonl")).parent
    server_log = (run_dir / "server.log").read_text()
    # The node's line (the round's retry line then quotes it as the reason it fell short).
    lost = [line for line in server_log.splitlines() if " failed: ActorKilled: " in line]
    assert len(lost) == 1, server_log[-3000:]
    assert "simulation actor was killed" in lost[0] and "RAY_memory_usage_threshold" in lost[0], lost[0]
    assert "Traceback" not in server_log and "ActorDiedError" not in server_log, server_log[-3000:]
    debug_log = (run_dir / "debug.log").read_text()
    assert "ActorDiedError" in debug_log and "ClientAppActor" in debug_log, debug_log[-3000:]
