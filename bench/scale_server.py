"""The server's side of a round at real size, alone, with N synthetic nodes (issue 14).

Each N runs in a fresh process: the strategy (fedprox, q3) configures round 1 for N nodes
(its messages built and pushed one at a time), then aggregates N real-shape q3 replies
(SmolVLA's 99.9M trainable parameters, the `smolvla-shape` preset) that arrive through
zk0.server.inbox as they would from a SuperLink, four distinct updates cycled over the nodes.
Prints per N: peak RSS, RSS before the round, aggregation seconds (decode, checks, fold,
norm rule, average: `aggregate/seconds`) and the decoded-update throughput.

    .venv/bin/python bench/scale.py server [--nodes 2,8,32,128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = 4


def real_shapes() -> dict[str, tuple[int, ...]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from codec_table import real_shapes as shapes

    return shapes("expert", 0)  # the action expert's trainable tensors (the rank is for lora modes)


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def write_templates(work: Path) -> None:
    """The global model and four node updates against its round-1 broadcast, on disk."""
    from zk0.wire import transfer
    from zk0.wire.codec import ErrorFeedback

    rng = np.random.default_rng(0)
    shapes = real_shapes()
    global_weights = {name: rng.normal(0, 0.02, shape).astype(np.float32) for name, shape in shapes.items()}
    np.savez(work / "global.npz", **global_weights)
    broadcast = transfer.make_broadcast(global_weights, None, "q3", 1)
    for index in range(TEMPLATES):
        local = {name: value + rng.normal(0, 1e-3, value.shape).astype(np.float32)
                 for name, value in broadcast.weights.items()}
        np.savez(work / f"update{index}.npz", **transfer.upload(local, broadcast.weights, "q3", ErrorFeedback()))
        del local


def measure(work: Path, nodes: int) -> dict:
    """One round's server side for `nodes` nodes, in this process."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.serverapp import Grid
    from flwr.supercore.task_identity import TaskIdentity

    from zk0.server import inbox
    from zk0.config import RunConfig
    from zk0.wire.protocol import ARRAYS, METRICS, NODE, array_record, pack
    from zk0.server.strategy import make_strategy

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_aggregation import pyproject_run_config

    with np.load(work / "global.npz") as stored:
        initial = array_record({name: stored[name] for name in stored.files})
    updates = []
    for index in range(TEMPLATES):
        with np.load(work / f"update{index}.npz") as stored:
            updates.append({key: stored[key] for key in stored.files})

    class SyntheticGrid(Grid):
        """Nodes that all answer at once; a reply is made only when pulled (as one arrives)."""

        def __init__(self) -> None:
            self.sent: dict[str, int] = {}

        def get_node_ids(self):
            return list(range(1, nodes + 1))

        def push_messages(self, messages):
            ids = []
            for message in messages:
                message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
                self.sent[message.metadata.message_id] = message.metadata.dst_node_id
                ids.append(message.metadata.message_id)
            return ids

        def pull_messages(self, message_ids):
            replies = []
            for message_id in message_ids:
                node = self.sent.pop(message_id, None)
                if node is None:
                    continue
                request = Message(RecordDict(), dst_node_id=node, message_type="train")
                request.metadata.__dict__["_message_id"] = message_id
                content = RecordDict({
                    ARRAYS: pack(updates[node % TEMPLATES]),
                    METRICS: MetricRecord({"num-examples": 64, "train/loss": 0.5}),
                    NODE: ConfigRecord({"dataset-uri": f"hf:bench/node_{node}"}),
                })
                replies.append(Message(content, reply_to=request))
            return replies

        # The rest of Grid's interface: not used by zk0's round loop.
        def create_message(self, *args, **kwargs):
            raise NotImplementedError

        def send_and_receive(self, *args, **kwargs):
            raise NotImplementedError

        def set_run(self, run_id):
            pass

        @property
        def run(self):
            return None

    config = RunConfig.from_run_config(pyproject_run_config(
        update_codec="q3", min_train_clients=2, min_available_clients=2, local_steps=8, batch_size=8,
        node_wait_timeout=5.0))
    strategy = make_strategy(config)
    params = sum(int(np.prod(array.shape)) for array in initial.values())
    strategy.trainable_bytes = 4 * params
    strategy.spool = work / f"spool-{nodes}"
    # This process plays the ServerApp: identify it as Flower's ServerApp runtime does.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    grid = SyntheticGrid()
    before = rss_now()
    started = time.perf_counter()
    ids = inbox.push(grid, strategy.configure_train(1, initial, ConfigRecord(), grid))
    configured = time.perf_counter() - started
    arrays, _ = strategy.aggregate_train(1, inbox.replies(grid, ids, time.monotonic() + 3600))
    record = strategy.rounds[1]
    assert arrays is not None and len(record.clients) == nodes, (len(record.clients), record.rejected)
    return {
        "nodes": nodes, "params": params, "rss_before": before,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "configure_seconds": configured, "aggregate_seconds": record.aggregate_seconds,
        "decoded_mb_per_s": nodes * params * 4 / 1e6 / record.aggregate_seconds,
    }


def run(node_counts: list[int]) -> None:
    """Measures each N in a fresh process; prints the table."""
    with tempfile.TemporaryDirectory(prefix="zk0-scale-server-") as tmp:
        work = Path(tmp)
        write_templates(work)
        rows = []
        for nodes in node_counts:
            out = subprocess.run([sys.executable, __file__, "--child", str(work), str(nodes)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"N = {nodes} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    fp32 = rows[0]["params"] * 4
    print(f"Real size: {rows[0]['params']:,} trainable parameters ({fp32 / 1e9:.2f} GB fp32), q3 replies, fedprox")
    print("| N | peak RSS GB | RSS before the round GB | peak - before, x fp32 trainable | aggregation s | "
          "decoded MB/s | configure s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['nodes']} | {row['peak_rss'] / 1e9:.2f} | {row['rss_before'] / 1e9:.2f} | "
              f"{(row['peak_rss'] - row['rss_before']) / fp32:.2f} | {row['aggregate_seconds']:.1f} | "
              f"{row['decoded_mb_per_s']:.0f} | {row['configure_seconds']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 8, 32, 128])
    parser.add_argument("--child", nargs=2, metavar=("WORK", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]))))
    else:
        run(args.nodes)


if __name__ == "__main__":
    main()
