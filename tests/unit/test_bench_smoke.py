"""Every bench script still starts: its imports and arguments (`--help`), and the cheap ones run
at their smallest size, so none rots unnoticed between the runs that fill bench/README.md.

Their figures are bench/README.md's business, not this test's. The scripts that need a
simulation, a deployment or the real-size model (scale.py, real_round.py, lora_memory.py, ...)
are covered here by `--help` only; node_memory.py, which takes no options and starts a
deployment when run, not at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# Scripts without options: they do their work when started.
NO_OPTIONS = {"import_memory.py", "node_memory.py"}


def bench(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=BENCH.parent)


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if p.name not in NO_OPTIONS))
def test_bench_script_answers_help(script):
    run = bench(script, "--help")
    assert run.returncode == 0 and run.stdout.startswith("usage:"), run.stderr[-2000:]


def test_fuzz_replies_smallest():
    run = bench("fuzz_replies.py", "--cases", "50")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("cases 50 |") and "uncaught exceptions 0 |" in run.stdout


def test_import_memory_runs():
    run = bench("import_memory.py")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "zk0.client_app" in run.stdout


def test_openmp_wait_smallest(demo_roots):
    """One step of the passive policy on the demo data (its figures mean nothing here; the
    spinning one, slow on a busy machine, differs only in its import order)."""
    run = bench("openmp_wait.py", "--busy", "0", "--repeats", "1", "--steps", "1", "--policies", "passive",
                "--data", str(demo_roots[0].parent))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["policy"] for row in rows] == ["passive"]
    assert all(row["train_step_s"] > 0 and row["eval_s"] > 0 for row in rows)


def test_wire_objects_tiny():
    run = bench("wire_objects.py", "--models", "tiny")
    assert run.returncode == 0, run.stderr[-2000:]
    [row] = [line.split() for line in run.stdout.splitlines() if line.split()[0] == "tiny"]
    tensors, arrays, objects, packed = map(int, row[1:5])
    assert arrays == 3 * tensors and packed < 10 < tensors < objects, row


def test_fl_recipes_smallest(sim_roots, tmp_path):
    """One round of one step on two simulated owners, scored on the table and each strip by one
    episode, then each owner's fine-tuned model; and again from the saved global model."""
    data = sim_roots[0].parent
    small = ("--batch-size", "2", "--episodes", "1", "--heldout", "1", "--own-regions", "--personal-steps", "1")
    first = bench("fl_recipes.py", str(data), "--rounds", "1", "--local-steps", "1", "--eval-rounds", "1", *small,
                  "--save-global", str(tmp_path / "global.npz"))
    again = bench("fl_recipes.py", str(data), "--from-global", str(tmp_path / "global.npz"), *small)
    for run in (first, again):
        assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in (first.stdout + again.stdout).splitlines() if line.startswith("{")]
    assert [row.get("round", row.get("personal")) for row in rows] == [1, 0, 1, 0, 1]
    assert all({"success", "success_0", "success_1"} <= row.keys() for row in rows)
