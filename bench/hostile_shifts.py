"""How far colluding nodes move what a federation computes: pooled statistics and the global update.

    .venv/bin/python bench/hostile_shifts.py [--clip 2.0]

The five-node demo federation of tests/unit/test_hostile_nodes.py (the tiny SmolVLA; per node one
task, 4 episodes of 30 frames, 2 held out), with that suite's attacks:
- statistics: every honest federation of three of the five nodes, with one other node
  (one of four) or two (two of five) reporting as the suite's statistics attacks build them,
  through zk0's round-0 query; per attack the worst joint's shift of the pooled mean from the
  honest nodes' exact pool (LeRobot's aggregate_stats) in their pooled std, the worst ratio
  of pooled std to theirs, and the floor no rule that treats +x and -x alike can beat (the
  honest mean's distance from the centre mirror-image reports make);
- updates: round 1's q3 replies of zk0's ClientApp on every node; honest nodes 0-2, one or
  two colluders sending the suite's update attacks; the global update's shift from what the
  honest nodes alone give, in median honest update norms, with clipping at --clip and off.
Prints two markdown tables; takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import zk0  # noqa: F401 - before torch: OpenMP's passive wait policy (bench/openmp_wait.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

import test_hostile_nodes as suite  # noqa: E402
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict  # noqa: E402
from test_aggregation import LocalGrid  # noqa: E402


def exact_pool(reports: list[dict]) -> dict:
    from lerobot.datasets.compute_stats import aggregate_stats

    return aggregate_stats([dict(report) for report in reports])


def statistics_table(federation, global_model, replies: dict[int, RecordDict]) -> list[str]:
    reports = {node: suite.read_stats(content["stats"]) for node, content in replies.items()}
    rows = ["| colluding | attack | worst shift of the mean, honest stds (median over the 10 honest triples) | "
            "worst std ratio | floor for any symmetric rule |", "|---|---|---:|---:|---:|"]
    for colluding in (1, 2):
        floors = []
        for trio in itertools.combinations(suite.NODES, 3):
            honest = [reports[node] for node in trio]
            truth = exact_pool(honest)
            floor = 0.0
            for feature in suite.POISONED_FEATURES:
                means = np.sort(np.stack([report[feature]["mean"] for report in honest]), axis=0)
                # colluders mirroring honest reports about a point make it the centre
                centres = ((means[0] + means[1]) / 2, (means[1] + means[2]) / 2) if colluding == 1 else tuple(means)
                floor = max(floor, max(float((np.abs(c - truth[feature]["mean"]) / truth[feature]["std"]).max())
                                       for c in centres))
            floors.append(floor)
        for how in ("push up", "push down", "copy the highest, no spread", "mirror the highest"):
            shifts, ratios = [], []
            for trio in itertools.combinations(suite.NODES, 3):
                honest = [reports[node] for node in trio]
                truth = exact_pool(honest)
                others = [node for node in suite.NODES if node not in trio][:colluding]
                contents = {node: suite.copy_content(replies[node]) for node in (*trio, *others)}
                for node in others:
                    suite.poisoning(honest, how)(contents[node])
                strategy, pooled, _ = suite.collect(federation, global_model, contents)
                assert not strategy.roster.refused
                shift = max(float((np.abs(pooled[f]["mean"] - truth[f]["mean"]) / truth[f]["std"]).max())
                            for f in suite.POISONED_FEATURES)
                ratio = max(float(np.maximum(pooled[f]["std"] / truth[f]["std"], truth[f]["std"] / pooled[f]["std"]).max())
                            for f in suite.POISONED_FEATURES)
                shifts.append(shift)
                ratios.append(ratio)
            rows.append(f"| {colluding} of {3 + colluding} | {how} | {max(shifts):.2f} ({np.median(shifts):.2f}) | "
                        f"{max(ratios):.2f} | {max(floors):.2f} ({np.median(floors):.2f}) |")
    return rows


def updates_table(federation, global_model, replies: dict[int, RecordDict], clip: float) -> list[str]:
    rows = ["| colluding | attack | shift, clip-update-norm-ratio " + f"{clip:g} | shift, clipping off | "
            "bound at " + f"{clip:g} |", "|---|---|---:|---:|---:|"]
    honest_only = {node: replies[node] for node in suite.TRUSTED}
    shifts = {}
    for ratio in (clip, 0.0):
        strategy, alone = suite.aggregate(federation, global_model, honest_only, clip_update_norm_ratio=ratio)
        reference = strategy.broadcast.weights
        honest = np.stack([suite.flat_deltas(replies[node], reference) for node in suite.TRUSTED])
        median = float(np.median(np.linalg.norm(honest, axis=1)))
        for colluding, (name, attack) in itertools.product((1, 2), suite.UPDATE_ATTACKS.items()):
            poisoned = attack(honest, colluding)
            contents = dict(honest_only) | {node: suite.with_delta(replies[node], poisoned, reference,
                                                                   suite.NEAR_THE_RULE * median)
                                            for node in suite.UPDATE_POISONERS[colluding]}
            strategy, arrays = suite.aggregate(federation, global_model, contents, clip_update_norm_ratio=ratio)
            assert strategy.rounds[1].rejected == []
            moved = np.concatenate([arrays[n].numpy().astype(np.float64).ravel() - alone[n].numpy().ravel()
                                    for n in reference])
            shifts[(ratio, colluding, name)] = float(np.linalg.norm(moved)) / median
            if ratio == clip:
                examples = [strategy.rounds[1].clients[node]["num-examples"] for node in suite.TRUSTED]
                shifts[("bound", colluding, name)] = suite.clip_bound(
                    honest, examples, colluding, strategy.max_train_examples, clip) / median
    for colluding, name in itertools.product((1, 2), suite.UPDATE_ATTACKS):
        rows.append(f"| {colluding} of {3 + colluding} | {name} | {shifts[(clip, colluding, name)]:.2f} | "
                    f"{shifts[(0.0, colluding, name)]:.2f} | {shifts[('bound', colluding, name)]:.2f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=float, default=2.0, help="clip-update-norm-ratio to measure (default 2)")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    import torch

    from zk0.client_app import app as client_app
    from zk0.config import RunConfig
    from zk0.server.global_model import GlobalModel
    from zk0.server.strategy import make_strategy
    from zk0.tools.demo_data import DemoSpec, write_demo_federation

    torch.set_num_threads(1)  # the server and five clients share this process
    with tempfile.TemporaryDirectory(prefix="zk0-hostile-") as tmp:
        federation = write_demo_federation(Path(tmp), len(suite.NODES), DemoSpec(episodes=4, frames_per_episode=30))
        model = GlobalModel(RunConfig.from_run_config(suite.run_config(federation)))
        global_model = (model, ArrayRecord({name: Array(value) for name, value in model.weights().items()}))
        config = suite.run_config(federation, normalization="federated")
        grid = LocalGrid(client_app, suite.node_configs(federation, suite.NODES), config)
        queries = [Message(RecordDict(), dst_node_id=node, message_type="query") for node in suite.NODES]
        statistics = {reply.metadata.src_node_id: reply.content for reply in grid.send_and_receive(queries)}
        print("\n".join(statistics_table(federation, global_model, statistics)) + "\n")

        config = suite.q3_config(federation)
        grid = LocalGrid(client_app, suite.node_configs(federation, suite.NODES), config)
        strategy = make_strategy(RunConfig.from_run_config(config))
        updates = {reply.metadata.src_node_id: reply.content
                   for reply in grid.send_and_receive(strategy.configure_train(1, global_model[1], ConfigRecord(), grid))}
        print("\n".join(updates_table(federation, global_model, updates, args.clip)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
