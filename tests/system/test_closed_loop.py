"""End to end, closed loop: `./train-fl-simulation.sh --sim so101` records two simulated SO-101
owners' demonstrations, trains the tiny SmolVLA across them in Flower's simulation, and the
server scores the global policy by rollouts in MuJoCo; `zk0 rollout` then scores the run's
checkpoint and writes a video. The pipeline is asserted, not a learning threshold (that is
bench/closed_loop.py's)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_simulation_e2e import run_simulation

pytestmark = pytest.mark.timeout(900)

ZK0 = Path(sys.executable).with_name("zk0")
ROUNDS = 2


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("closed-loop")
    env = {**os.environ, "ZK0_SIM_DIR": str(base / "sim")}
    # Recorded first, as the script would, to read what the expert achieved (the script keeps them).
    recorded = subprocess.run([str(ZK0), "sim-data", str(base / "sim" / "sim-so101-2"), "--clients", "2"],
                              capture_output=True, text=True, env=env, timeout=600)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    # In its own process group, ended whole on a timeout (a killed script's children would
    # hold its output pipes open and hang the test).
    run = run_simulation(["--sim", "so101", "--rounds", str(ROUNDS), "--output-dir", str(base / "outputs"),
                          "--run-config", "local-steps=3 eval-episodes=10 eval-env-every=1"],
                         base / "sim", base / "run.log", timeout=840)
    assert run.returncode == 0 and not run.timed_out, run.output[-3000:]
    (run_dir,) = (base / "outputs").iterdir()
    return recorded.stderr, run.output, run_dir, base


def test_the_scripted_expert_succeeds_in_at_least_95_percent_of_recorded_episodes(sim_run):
    log = sim_run[0]
    counts = re.findall(r"^(owner_\d|eval): (\d+) episodes, \d+ frames \((\d+) failed by the expert", log, re.MULTILINE)
    assert [name for name, _, _ in counts] == ["owner_0", "owner_1", "eval"], log
    for _, recorded, failed in counts:
        assert int(recorded) / (int(recorded) + int(failed)) >= 0.95


def test_every_round_is_scored_by_rollouts_and_the_console_says_so(sim_run):
    _, output, run_dir, _ = sim_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == list(range(ROUNDS + 1))
    for row in rows:
        assert 0.0 <= row["eval/success_rate"] <= 1.0 and row["eval/episodes"] == 10
        assert 1.0 <= row["eval/episode_length"] <= 30.0 and row["eval/rollout_seconds"] > 0
    lines = [line for line in output.splitlines() if "[round " in line]
    assert len(lines) == ROUNDS + 1 and all(re.search(r"success \d+ % of 10 \|", line) for line in lines), output[-3000:]
    assert (run_dir / "plots" / "metrics.png").stat().st_size > 0


def test_zk0_rollout_scores_the_runs_checkpoint_and_writes_a_video(sim_run):
    _, _, run_dir, base = sim_run
    result = subprocess.run([str(ZK0), "rollout", str(run_dir), "--env", "so101_reach", "--episodes", "4",
                             "--region", "1/2", "--video", str(base / "video"), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(result.stdout)
    assert scores["episodes"] == 4 and scores["region"] == "1/2" and 0.0 <= scores["success_rate"] <= 1.0
    assert Path(scores["video"]).stat().st_size > 1000
    bad = subprocess.run([str(ZK0), "rollout", str(run_dir), "--env", "so101_reach", "--region", "2/2"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "zk0: error: region 2/2: the index must be in 0..1"]
