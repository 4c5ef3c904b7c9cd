"""zk0bot.sh resumes an interrupted run: a SuperLink or a ServerApp killed mid-run, then
`zk0bot run --resume` completes the remaining rounds in the same run directory, as an
uninterrupted run would have. A secure federation of its own (a module apart from test_zk0bot, so
that pytest-xdist runs the two side by side), its two clients joined once for the module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from zk0_executor.serve import PULL_MAX_SECONDS

from test_zk0bot import TINY_RUN, ZK0BOT, Zk0bot, error_lines, federation, join  # noqa: F401 - federation is a fixture


@pytest.fixture(scope="module")
def joined(federation):  # noqa: F811
    bot, clients, _, _ = federation
    for uri in clients:
        join(bot, uri)
    return federation


def run_dirs(bot: Zk0bot) -> set[Path]:
    return set((bot.home / "server" / "runs").iterdir())


def wait_for_round(bot: Zk0bot, before: set[Path], round_done: int, timeout: float = 300) -> Path:
    """The new run directory once its saved state has passed `round_done`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in run_dirs(bot) - before:
            state = run_dir / "state" / "state.json"
            if state.is_file() and json.loads(state.read_text())["round"] >= round_done:
                return run_dir
        time.sleep(1)
    raise AssertionError(f"no run reached round {round_done} within {timeout}s")


def session_pane_pid(bot: Zk0bot, session: str) -> int:
    result = subprocess.run(["tmux", "-S", str(bot.home / "tmux.sock"), "list-panes", "-t", f"={session}", "-F",
                             "#{pane_pid}"], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])


def command_line(process: psutil.Process) -> str:
    """A process's command line, or "" once it has ended (a child may end while the tree is read)."""
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return ""


def assert_resumed_like_an_uninterrupted_run(run_dir: Path, rounds: int) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == list(range(rounds + 1))
    assert all(len(row["clients"]) == 2 for row in rows[1:])
    assert json.loads((run_dir / "state" / "state.json").read_text())["round"] == rounds
    assert (run_dir / "checkpoints" / "last").resolve().name == f"{rounds:06d}"
    best = run_dir / "checkpoints" / os.readlink(run_dir / "checkpoints" / "best")
    assert json.loads((best / "zk0_round.json").read_text())["eval/action_mse"] == min(
        row["eval/action_mse"] for row in rows if (run_dir / "checkpoints" / f"{row['round']:06d}").is_dir())


RESUME_ROUNDS = 4


def start_run_past_round_one(bot: Zk0bot, clients: list[str], eval_uri: str) -> tuple[subprocess.Popen, Path, set[Path]]:
    """A RESUME_ROUNDS-round `zk0bot run` in the background, once its state holds round 1: the
    process, its run directory, and the run directories that existed before it."""
    config = f"{TINY_RUN} datasets='{clients[0]}' eval-dataset='{eval_uri}' fraction-evaluate=0.0 node-wait-timeout=120.0"
    before = run_dirs(bot)
    run = subprocess.Popen([str(ZK0BOT), "run", "--rounds", str(RESUME_ROUNDS), "--run-config", config],
                           env=bot.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run, wait_for_round(bot, before, 1), before


def test_superlink_killed_mid_run_then_resumed(joined):
    """SIGKILL of the SuperLink mid-run: `server start` brings it back with the node keys (the
    SuperNodes reconnect by themselves), and `run --resume` completes the remaining rounds in the
    same run directory, with one metrics row per round as an uninterrupted run."""
    bot, clients, eval_uri, seen = joined
    run, run_dir, before = start_run_past_round_one(bot, clients, eval_uri)
    os.kill(session_pane_pid(bot, "zk0-superlink"), signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode != 0
    restarted = bot("server", "start")
    assert restarted.returncode == 0, restarted.stderr + restarted.stdout
    assert "re-registered 2 node key(s)" in restarted.stdout
    seen += bot.process_tree()
    resumed = bot("run", "--resume", str(run_dir), timeout=900)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert run_dirs(bot) - before == {run_dir}
    assert_resumed_like_an_uninterrupted_run(run_dir, RESUME_ROUNDS)
    assert (bot.home / "server" / "superlink.log").read_text().count(": start superlink ===") == 2  # appended


def test_serverapp_killed_mid_run_then_resumed(joined):
    """SIGKILL of the ServerApp process alone: the run fails, naming how to continue; `run --resume`
    (newest unfinished run) completes it."""
    bot, clients, eval_uri, seen = joined
    run, run_dir, _ = start_run_past_round_one(bot, clients, eval_uri)
    superexec = psutil.Process(session_pane_pid(bot, "zk0-superexec"))
    serverapps = [p for p in superexec.children(recursive=True) if "flwr-serverapp" in command_line(p)]
    assert serverapps
    for process in serverapps:
        process.send_signal(signal.SIGKILL)
    _, stderr = run.communicate(timeout=600)
    assert run.returncode != 0
    assert f"continue with: zk0bot run --resume {run_dir}" in error_lines(
        subprocess.CompletedProcess([], 1, "", stderr))[-1]
    seen += bot.process_tree()
    resumed = bot("run", "--resume", timeout=900)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert_resumed_like_an_uninterrupted_run(run_dir, RESUME_ROUNDS)
    # A message the killed run left half-fetched holds no executor until PULL_MAX_SECONDS: the
    # resumed run's task shows it dropped (zk0_executor.serve.Tasks).
    line = re.compile(r"zk0-executor pid=\d+ run=\d+ type=\S+ round=\S+ seconds=([\d.]+)")
    served = [float(seconds) for log in (bot.home / "clients").glob("*/executor.log")
              for seconds in line.findall(log.read_text())]
    assert served and max(served) < PULL_MAX_SECONDS / 2, served
