"""README's script at 200 virtual nodes: `./train-fl-simulation.sh --tiny --clients 200` on this
machine's cores, each node a shard of one of 8 shared demo datasets, 10 nodes sampled per
round. Few rounds and local steps keep it short; the run is as an operator starts it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_simulation_e2e import run_simulation

from zk0.data.uri import parse_dataset_uri

pytestmark = pytest.mark.timeout(900)

CLIENTS, ROUNDS, SAMPLED = 200, 2, 10
CLAIM = re.compile(r" claiming (\S+)$")


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("scale")
    run = run_simulation(
        ["--tiny", "--clients", str(CLIENTS), "--rounds", str(ROUNDS), "--output-dir", str(work / "outputs"),
         "--run-config", "local-steps=3 eval-batches=1"],
        work / "sim", work / "sim.log", timeout=840,
    )
    assert not run.timed_out, run.output[-4000:]
    assert run.returncode == 0, run.output[-4000:]
    run_dir = next((work / "outputs").iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "run_config.json").read_text())["run_config"]
    return run, rows, config


def test_run_completes_and_leaves_nothing(scale_run):
    run, _, _ = scale_run
    assert "finished:completed" in run.output
    assert run.leftovers == []


def test_every_node_is_a_shard_of_its_own(scale_run):
    """The 200 datasets are 200 distinct shards of the 8 shared demo datasets, and the N
    shards of each dataset are exactly #0/N .. #N-1/N: together, every episode once."""
    _, _, config = scale_run
    uris = [parse_dataset_uri(text) for text in config["datasets"].split(",")]
    assert len(uris) == CLIENTS and len(set(uris)) == CLIENTS
    by_root: dict[Path, set] = {}
    for uri in uris:
        assert uri.shard is not None, uri
        by_root.setdefault(uri.root, set()).add(uri.shard)
    assert len(by_root) == 8
    for root, shards in by_root.items():
        count = len(shards)
        assert shards == {(index, count) for index in range(count)}, root


def test_each_round_trains_ten_distinct_nodes(scale_run):
    """Rounds 1..R each train 10 nodes (the --tiny preset's sample beyond 10 clients), each
    under its own shard, and none fails; the final evaluation asks 10 as well."""
    _, rows, config = scale_run
    datasets = set(config["datasets"].split(","))
    trained = [row for row in rows if row["round"] >= 1]
    assert [row["round"] for row in trained] == list(range(1, ROUNDS + 1))
    for row in trained:
        assert row["failures"] == [] and row["rejected"] == []
        claims = [CLAIM.search(label).group(1) for label in row["clients"]]
        assert len(claims) == SAMPLED and len(set(claims)) == SAMPLED, row["clients"].keys()
        assert set(claims) <= datasets
    assert len(trained[-1]["client_eval"]) == SAMPLED
