"""`zk0 admin`: resume bookkeeping on real run directories, and runs followed through a real
SuperLink with the real flwr CLI (no SuperExec: a submitted run stays pending until stopped)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ports import free_port

from zk0.ops import admin
from zk0.run import state as run_state
from zk0.tools.cli import main
from zk0.run.directory import RunDir

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONNECTION = "zk0-test-link"


def make_run(runs: Path, name: str, run_id: int, num_rounds: int, done: int | None) -> RunDir:
    """A run directory as the server leaves it: its record and, after `done` rounds, its saved state."""
    run = RunDir(runs / name)
    run.checkpoints.mkdir(parents=True)
    run.write_record(run_id, {"num-rounds": num_rounds, "model": "tiny", "lr": 1e-3, "output-dir": str(runs)})
    if done is not None:
        run_state.save(run.path, run_state.RunState(round=done, global_weights={"w": np.zeros(2, np.float32)},
                                                    best_mse=None, federation_stats=None, python_rng=random.getstate()))
    return run


def touch_state(run: RunDir, when: float) -> None:
    os.utime(run.state / "state.json", (when, when))


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zk0: error: "), lines
    return lines[0]


def test_resume_takes_the_newest_unfinished_run_and_writes_its_own_config(tmp_path, capsys):
    runs = tmp_path / "runs"
    older = make_run(runs, "20260101-000000", 1, num_rounds=4, done=1)
    newer = make_run(runs, "20260102-000000", 2, num_rounds=4, done=2)
    finished = make_run(runs, "20260103-000000", 3, num_rounds=2, done=2)
    make_run(runs, "20260104-000000", 4, num_rounds=4, done=None)  # failed before any round
    now = time.time()
    touch_state(older, now)  # resumed and interrupted again: the most recent progress
    touch_state(newer, now - 60)
    touch_state(finished, now + 60)
    assert main(["admin", "resume", str(runs)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(older.path), str(older.resume_config)]
    config = tomllib.loads(older.resume_config.read_text())
    assert config == {"num-rounds": 4, "model": "tiny", "lr": 1e-3, "output-dir": str(runs),
                      "resume-from": str(older.path)}


def test_resume_of_a_named_run_with_more_rounds(tmp_path, capsys):
    run = make_run(tmp_path / "runs", "20260101-000000", 1, num_rounds=2, done=2)
    assert main(["admin", "resume", str(tmp_path / "runs"), str(run.path), "--rounds", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(run.path)
    assert tomllib.loads(run.resume_config.read_text())["num-rounds"] == 5


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "run directory '/nope' does not exist"),
        ("a file", "is not a directory"),
        ("nothing unfinished", "no unfinished run to resume under"),
        ("not a run", "is not a zk0 run directory (no run_config.json)"),
        ("no state", "has no saved state (no completed round); start a new run instead"),
        ("finished", "already completed round 2 of num-rounds 2; train further with --rounds above 2"),
    ],
)
def test_resume_refusals_are_one_line_and_write_nothing(tmp_path, capsys, case, expected):
    runs = tmp_path / "runs"
    done = make_run(runs, "20260101-000000", 1, num_rounds=2, done=2)
    args = {
        "missing": ["/nope"],
        "a file": [str(done.record)],
        "nothing unfinished": [],
        "not a run": [str(tmp_path)],
        "no state": [str(make_run(runs, "20260102-000000", 2, num_rounds=2, done=None).path)],
        "finished": [str(done.path)],
    }[case]
    assert main(["admin", "resume", str(runs), *args]) == 2
    assert expected in one_error_line(capsys)
    assert not list(tmp_path.rglob("resume.toml"))


def test_find_run_reads_the_recorded_run_id(tmp_path):
    runs = tmp_path / "runs"
    first = make_run(runs, "20260101-000000", 11, num_rounds=2, done=None)
    make_run(runs, "20260102-000000", 111, num_rounds=2, done=None)  # `"run_id": 11` is a prefix of it
    damaged = RunDir(runs / "20260103-000000")
    damaged.path.mkdir()
    damaged.record.write_text('{"run_id": 11,')
    (runs / "notes.txt").write_text("not a run")
    assert admin.find_run(runs, 11) == first
    assert admin.find_run(runs, 12) is None
    assert admin.find_run(tmp_path / "no-runs-yet", 11) is None


def test_newest_log_is_the_latest_written_server_log(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["admin", "newest-log", str(runs)]) == 2
    assert "no run has written a log yet" in one_error_line(capsys)
    logs = []
    for index, name in enumerate(("20260102-000000", "20260101-000000")):
        run = make_run(runs, name, index, num_rounds=2, done=None)
        run.server_log.write_text("INFO : round 1\n")
        os.utime(run.server_log, (1000.0 * (index + 1),) * 2)
        logs.append(run.server_log)
    assert main(["admin", "newest-log", str(runs)]) == 0
    assert capsys.readouterr().out.strip() == str(logs[1])


def test_json_reply_skips_notes_before_the_object():
    assert admin.json_reply('Note: migrated\n{"run-id": "5", "success": true}\n') == {"run-id": "5", "success": True}
    assert admin.json_reply("no json here") == {}
    assert admin.json_reply('{"truncated": ') == {}


# ---------------------------------------------------------------------------
# through a real SuperLink
# ---------------------------------------------------------------------------

def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def write_connection(flwr_home: Path, port: int) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )


@pytest.fixture(scope="module")
def superlink(tmp_path_factory):
    """A SuperLink with no SuperExec (`--isolation process`): runs it accepts stay pending."""
    home = tmp_path_factory.mktemp("flwr-home")
    port = free_port()
    write_connection(home, port)
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    log = (home / "superlink.log").open("w")
    process = subprocess.Popen([str(BIN / "flower-superlink"), "--insecure", "--isolation", "process",
                                "--host", "127.0.0.1", "--port", str(port)],
                               cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert process.poll() is None, (home / "superlink.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the SuperLink did not open its port"
            time.sleep(0.5)
        yield home
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def flwr_env(superlink, monkeypatch) -> Path:
    monkeypatch.setenv("FLWR_HOME", str(superlink))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    return superlink


def test_a_run_stopped_before_it_started_ends_with_its_status_and_reason(flwr_env, tmp_path):
    """Submitted, pending, stopped: `wait` reports each status once and fails with Flower's status,
    the ServerApp's reason from the run's server.log and how to continue."""
    run_id = admin.submit(ROOT, CONNECTION, ["num-rounds=2"])
    assert admin.run_status(run_id, CONNECTION) == "pending"
    assert admin.flwr("stop", str(run_id), CONNECTION).returncode == 0
    runs = tmp_path / "runs"
    run = make_run(runs, "20260101-000000", run_id, num_rounds=2, done=None)
    run.server_log.write_text("INFO : zk0 run directory\nERROR : zk0: error: eval-dataset is gone\n")
    said: list[str] = []
    with pytest.raises(admin.AdminError) as caught:
        admin.wait(run_id, runs, CONNECTION, say=said.append)
    assert said == [f"run {run_id}: finished:stopped"]
    message = str(caught.value)
    assert f"run {run_id} ended as 'finished:stopped': eval-dataset is gone" in message
    assert f"continue with: zk0bot run --resume {run.path}" in message


def test_an_unknown_run_loses_contact_after_the_allowed_misses(flwr_env, tmp_path, monkeypatch):
    monkeypatch.setattr(admin, "MAX_MISSED_POLLS", 2)
    with pytest.raises(admin.AdminError, match="lost contact with the SuperLink while waiting for run 12345"):
        admin.wait(12345, tmp_path, CONNECTION, sleep=lambda _: None)


def test_submit_to_an_unreachable_superlink_is_one_line(tmp_path, monkeypatch):
    write_connection(tmp_path / "flwr-home", free_port())
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    with pytest.raises(admin.AdminError, match="the SuperLink did not start a run: Connection to the SuperLink is "
                                               "unavailable") as caught:
        admin.submit(ROOT, CONNECTION, [])
    assert "\n" not in str(caught.value)
