"""bench/fl_vs_central.py's tables from comparison.json contents that lack a score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("fl_vs_central", ROOT / "bench" / "fl_vs_central.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def comparison(alone: dict | None) -> dict:
    """A last round whose equal-samples centralized checkpoint is missing (no MSE, no gap)."""
    return {"rows": [{"round": 2, "fl_action_mse": 3.0,
                      "equal_samples": {"central_steps": 8, "central_action_mse": None, "gap_pct": None},
                      "equal_sequential_steps": {"central_steps": 4, "central_action_mse": 2.0, "gap_pct": 50.0}}],
            "alone": alone}


def test_tables_show_a_dash_for_a_missing_checkpoint_no_twins_or_no_held_out_episodes(tmp_path):
    bench = load_bench()
    union = "all clients' held-out"
    no_heldout = {"federated": {"eval dataset": 1.0}, "clients": [{"alone": {"eval dataset": 2.0}}]}
    with_heldout = {"federated": {union: 1.0}, "clients": [{"alone": {union: 2.0}}, {"alone": {union: 0.5}}]}
    results = [bench.result_row("noniid", 0.0, 2, seed, tmp_path, comparison(alone))
               for seed, alone in ((1, None), (2, no_heldout), (3, with_heldout))]
    assert [r["joining_pays"] for r in results] == [None, None, 1]
    runs = bench.runs_table(results).splitlines()[2:]
    assert [line.split(" | ")[5:] for line in runs] == [["-", "-", "2.0", "+50.0%", "-" + " |"]] * 2 + [
        ["-", "-", "2.0", "+50.0%", "1/2 |"]]
    [seeds] = bench.seeds_table(results).splitlines()[2:]
    assert seeds.split(" | ")[5:] == ["-", "+50.0% (+50.0..+50.0)", "1/2 |"]  # 1 of 2: only seed 3 scored it


def test_owner_tables_count_where_personalized_beats_alone_and_global(tmp_path):
    bench = load_bench()
    union = "all clients' held-out"
    alone = {"federated": {"client 0 held-out": 5.0, "client 1 held-out": 6.0, union: 5.5},
             "clients": [
                 {"client": 0, "alone": {"client 0 held-out": 4.0, union: 9.0},
                  "personalized": {"client 0 held-out": 3.0, union: 6.0}},
                 # a deployed node kept its model: only its reported own score
                 {"client": 1, "alone": {"client 1 held-out": 2.0, union: 8.0}, "personalized": None,
                  "personalized_reported": 2.5}]}
    [row] = [bench.result_row("noniid", 0.01, 2, 42, tmp_path, comparison(alone))]
    assert [o["own"] for o in row["owners"]] == [{"alone": 4.0, "global": 5.0, "personalized": 3.0},
                                                 {"alone": 2.0, "global": 6.0, "personalized": 2.5}]
    assert row["owners"][1]["union"]["personalized"] is None
    assert "| noniid | 2 | 42 | 1 | 2.0 | 6.0 | 2.5 | 8.0 | 5.5 | - |" in bench.owners_table([row])
    [summary] = bench.owners_summary([row]).splitlines()[2:]
    assert summary.startswith("| noniid | 2 | 2 | 1/2 | 2/2 |")
