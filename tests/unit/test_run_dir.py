"""zk0.run.directory (the run directory's layout) and zk0.util.atomic (crash-safe writes), on real files."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

from zk0.run import state as run_state
from zk0.util import atomic
from zk0.run.directory import RunDir, RunDirError, round_name, round_of_name

SRC = Path(__file__).resolve().parents[2] / "src" / "zk0"


def test_create_names_by_time_and_never_reuses_a_directory(tmp_path):
    first, second = RunDir.create(tmp_path / "outputs"), RunDir.create(tmp_path / "outputs")
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", first.path.name)
    assert first.path != second.path and first.path.parent == second.path.parent == (tmp_path / "outputs")
    for run in (first, second):
        assert run.checkpoints.is_dir() and run.plot.parent.is_dir()
        assert run.path.is_absolute() and run.is_run()


def test_round_names_round_trip_and_reject_anything_else():
    assert round_name(5) == "000005" and round_of_name("000005") == 5
    for name in ("best", "last", ".000005.partial", "5", "0000005", "00000a", "000005\n"):
        assert round_of_name(name) is None, name


def test_checkpoint_rounds_lists_only_complete_round_directories(tmp_path):
    run = RunDir.create(tmp_path)
    for server_round in (10, 2):
        run.checkpoint(server_round).mkdir()
    (run.checkpoints / ".000011.partial").mkdir()
    (run.checkpoints / "000012").write_text("not a directory")
    atomic.point_link(run.link("last"), round_name(10))
    assert run.checkpoint_rounds() == [2, 10]
    with pytest.raises(ValueError, match="not one of best, last"):
        run.link("newest")


def test_record_and_metrics_round_trip(tmp_path):
    run = RunDir.create(tmp_path)
    assert run.read_record() is None and run.read_metrics() == []
    run.write_record(42, {"num-rounds": 3})
    rows = [{"round": 0, "eval/action_mse": 2.5}, {"round": 1, "eval/action_mse": 1.5}]
    run.write_metrics(rows[:1])
    run.append_metrics(rows[1])
    assert run.read_record() == {"run_id": 42, "run_config": {"num-rounds": 3}}
    assert run.read_metrics() == rows
    assert not [p.name for p in run.path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("record", "metrics", "message"),
    [
        ('{"run_id": 1,', None, "run_config.json is not valid JSON"),
        ('{"run_id": 1}', None, "has no 'run_config' mapping"),
        (None, '{"round": 0}\n{"round": \n', "metrics.jsonl line 2 is not valid JSON"),
    ],
)
def test_damaged_records_are_one_line_naming_the_file(tmp_path, record, metrics, message):
    run = RunDir.create(tmp_path)
    if record is not None:
        run.record.write_text(record)
    if metrics is not None:
        run.metrics.write_text(metrics)
    with pytest.raises(RunDirError, match=re.escape(message)) as caught:
        run.read_record() if record is not None else run.read_metrics()
    assert "\n" not in str(caught.value)


def test_no_other_module_spells_the_layout():
    """The layout lives in run_dir.py: readers and writers name files through RunDir.
    (node_memory.py keeps a node's own state directory, not a run directory.)"""
    names = re.compile(r"""["'/](metrics\.jsonl|run_config\.json|server\.log|state\.json|global\.safetensors|"""
                       r"""zk0_round\.json|resume\.toml|checkpoints|plots)["'/]|06d""")
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(SRC.glob("*.py")) if path.name not in ("run_dir.py", "node_memory.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if names.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, "\n".join(offenders)


def test_write_replaces_a_file_whole_and_clears_a_leftover_stage(tmp_path):
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n")
    (tmp_path / ".metrics.jsonl.partial").write_text("left by a crash")
    atomic.write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_replace_dir_swaps_whole_and_a_failed_fill_changes_nothing(tmp_path):
    target = tmp_path / "state"
    with atomic.replace_dir(target) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(OSError, match="disk full"):
        with atomic.replace_dir(target) as staging:
            (staging / "a").write_text("2")
            raise OSError("disk full")
    assert (target / "a").read_text() == "1"
    assert (tmp_path / ".state.partial").is_dir()  # hidden; the next replace clears it
    with atomic.replace_dir(target) as staging:
        (staging / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_a_crash_between_the_renames_leaves_the_previous_state_readable(tmp_path):
    """The swap renames the old directory aside, then the new one in: a crash between the two leaves
    only `.state.old`, which run_state reads."""
    weights = {"w": np.arange(4, dtype=np.float32)}
    run_state.save(tmp_path, run_state.RunState(round=3, global_weights=weights, best_mse=1.0,
                                                federation_stats=None, python_rng=random.getstate()))
    os.rename(tmp_path / "state", tmp_path / ".state.old")
    assert atomic.surviving_dir(tmp_path / "state") == tmp_path / ".state.old"
    assert run_state.load(tmp_path).round == 3
    assert run_state.last_saved(tmp_path)[0] == 3


def test_point_link_is_relative_and_replaces_in_one_rename(tmp_path):
    (tmp_path / "000001").mkdir()
    (tmp_path / "000002").mkdir()
    atomic.point_link(tmp_path / "best", "000001")
    (tmp_path / ".best.partial").symlink_to("000001")  # left by a crash
    atomic.point_link(tmp_path / "best", "000002")
    assert os.readlink(tmp_path / "best") == "000002"
    assert not (tmp_path / ".best.partial").is_symlink()



def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    """A full disk mid-write (here: fsync refusing, as ENOSPC would): the old content stays, and
    no hidden .partial is left for an operator to find."""
    import errno

    target = tmp_path / "kept.id"
    atomic.write_text(target, "old\n")

    def full(_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.id"]
