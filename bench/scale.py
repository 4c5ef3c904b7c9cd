"""zk0 at scale (issue 14). Subcommands, one per part:

    .venv/bin/python bench/scale.py tiny [--clients 10,50,200,1000] [--rounds 3] [--local-steps 5]
    .venv/bin/python bench/scale.py server [--nodes 2,8,32,128]
    .venv/bin/python bench/scale.py memory [--clients 2,200] [--rounds 2] [--baseline DIR]


`tiny`: for each N, `train-fl-simulation.sh --tiny --clients N` (a round samples 10 of N
beyond 10 clients; the demo data is written once per N under --sim-dir and reused) and, from
its metrics.jsonl: the mean round wall time (rounds 1..R), the server's peak RSS (the
`flwr-simulation` process: the ServerApp and the simulation engine's driver; its VmHWM, read
while it runs), and the seconds per round spent outside training: the round's wall time minus
its clients' training time spread over Ray's concurrent workers (sum of `train/seconds` / W,
W = the CPUs Ray gets: all of this machine's). Also round 0's statistics query (every node
opens its dataset and reports; from server.log) and the script's whole wall time.

`memory` (issue 28): for each N, `train-fl-simulation.sh --tiny --clients N`, every process of
the run sampled each second (smaps_rollup, see bench/node_memory.py): a simulation actor's
(`ray::ClientAppActor`) peak RSS and anonymous memory (what one more actor costs), and the whole
process tree's peak: anonymous memory plus the shared libraries once, and the PSS sum. Then a warm tiny node as a deployment runs it
(bench/node_memory.py): a SuperNode and its `zk0_executor`, after a 2-round tiny run. With
`--baseline DIR` (a checkout, e.g. `git archive main | tar -x -C DIR`) the same runs of that
checkout's scripts and sources come first and the table shows both side by side.

`server`: the server's side of one real-size round alone, N synthetic q3 replies
(bench/scale_server.py): peak RSS, aggregation seconds, decoded MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import node_memory
import scale_server

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train-fl-simulation.sh"
MARKER = "ZK0_BENCH_SCALE_MARKER"
VENV = Path(os.environ.get("ZK0_VENV", ROOT / ".venv"))


@dataclass
class TinyResult:
    clients: int
    rounds: int
    sampled: float  # clients trained per round (mean)
    round_seconds: float
    outside_training: float
    server_peak_rss_mb: float
    statistics_seconds: float | None
    wall_seconds: float


def _marked(marker: str, needle: str) -> list[int]:
    """Live pids whose environment carries the marker and whose command line holds `needle`."""
    tag = f"{MARKER}={marker}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle.encode() in (proc / "cmdline").read_bytes() and tag in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRSS(threading.Thread):
    """The highest VmHWM seen of the marked `flwr-simulation` process, polled until stopped."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak_kb, self.done = marker, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for pid in _marked(self.marker, "flwr-simulation"):
                self.peak_kb = max(self.peak_kb, _peak_rss_kb(pid))


def _statistics_seconds(server_log: Path) -> float | None:
    """Round 0's statistics query: from the model line to the pooled-statistics line of server.log."""
    stamps = {}
    for line in server_log.read_text().splitlines():
        for key, needle in (("start", " INFO Model "), ("end", " INFO Normalization: pooled")):
            if needle in line and key not in stamps:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return (stamps["end"] - stamps["start"]).total_seconds() if len(stamps) == 2 else None


def run_tiny(clients: int, rounds: int, local_steps: int, sim_dir: Path, work: Path) -> TinyResult:
    out = work / f"outputs-{clients}"
    marker = uuid.uuid4().hex
    env = os.environ | {"ZK0_SIM_DIR": str(sim_dir), MARKER: marker}
    # Prepare the demo data first (untimed): writing it is a one-off, not a round cost. The
    # sizes are the ones train-fl-simulation.sh's demo_data asks for (else it writes them again).
    subprocess.run([str(VENV / "bin/zk0"), "demo-data", str(sim_dir / f"demo-data-{clients}"), "--clients", str(clients),
                    *(["--episodes", "2", "--frames", "20"] if clients > 8 else [])],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    args = [str(SCRIPT), "--tiny", "--clients", str(clients), "--rounds", str(rounds), "--output-dir", str(out),
            "--run-config", f"local-steps={local_steps} eval-batches=2 checkpoint-every={rounds}"]
    monitor = PeakRSS(marker)
    monitor.start()
    started = time.perf_counter()
    log = work / f"sim-{clients}.log"
    with log.open("w") as handle:
        code = subprocess.run(args, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - started
    monitor.done.set()
    monitor.join()
    if code != 0:
        sys.exit(f"scale.py: the {clients}-client run failed (exit {code}); see {log}")
    run_dir = next(out.iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [row for row in rows if row["round"] >= 1]
    workers = os.cpu_count() or 1
    outside = [row["seconds"] - sum(m.get("train/seconds", 0.0) for m in row["clients"].values()) / workers
               for row in trained]
    return TinyResult(
        clients=clients, rounds=len(trained), sampled=statistics.mean(len(row["clients"]) for row in trained),
        round_seconds=statistics.mean(row["seconds"] for row in trained), outside_training=statistics.mean(outside),
        server_peak_rss_mb=monitor.peak_kb / 1024, statistics_seconds=_statistics_seconds(run_dir / "server.log"),
        wall_seconds=wall,
    )


def tiny(args: argparse.Namespace) -> None:
    sim_dir = Path(args.sim_dir).resolve()
    sim_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'N':>6} {'sampled/round':>14} {'round s':>9} {'outside training s/round':>25} "
          f"{'server peak RSS MB':>19} {'round 0 statistics s':>21} {'script wall s':>14}", flush=True)
    with tempfile.TemporaryDirectory(prefix="zk0-scale-") as work:
        for clients in args.clients:
            result = run_tiny(clients, args.rounds, args.local_steps, sim_dir, Path(work))
            print(f"{result.clients:>6} {result.sampled:>14.1f} {result.round_seconds:>9.1f} "
                  f"{result.outside_training:>25.1f} {result.server_peak_rss_mb:>19.0f} "
                  f"{result.statistics_seconds or float('nan'):>21.1f} {result.wall_seconds:>14.0f}",
                  flush=True)


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def memory(args: argparse.Namespace) -> None:
    """Each checkout (the baseline first) measured the same way; one table, a column per checkout."""
    trees = [Path(args.baseline).resolve(), ROOT] if args.baseline else [ROOT]
    sim_dir = Path(args.sim_dir).resolve()
    sim_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="zk0-memory-") as scratch:
        work = Path(scratch)
        data = node_memory.demo_data(VENV, ROOT, sim_dir / "memory-node-data")
        for tree in trees:
            node = node_memory.warm_node(tree, VENV, data, work)
            rows.setdefault("warm tiny node: SuperNode RSS / anonymous MB", []).append(
                f"{_mb(node.supernode.rss)} / {_mb(node.supernode.anon)}")
            rows.setdefault("warm tiny node: executor RSS / anonymous MB", []).append(
                f"{_mb(node.executor.rss)} / {_mb(node.executor.anon)}")
            rows.setdefault("warm tiny node: both, anonymous + largest file-backed MB", []).append(
                _mb(node.supernode.anon + node.executor.anon + max(node.supernode.rss - node.supernode.anon,
                                                                   node.executor.rss - node.executor.anon)))
            rows.setdefault("executor peak RSS MB", []).append(_mb(node.peak_executor.rss))
            for clients in args.clients:
                # The demo data is the script's own (written on the first run, kept in --sim-dir).
                sim = node_memory.simulation(tree, VENV, clients, args.rounds, sim_dir, work)
                rows.setdefault(f"{clients} clients: actor peak RSS / anonymous MB", []).append(
                    f"{_mb(sim.actor.rss)} / {_mb(sim.actor.anon)}")
                rows.setdefault(f"{clients} clients: process tree peak, anonymous + largest file-backed MB",
                                []).append(_mb(sim.tree_bound_kb))
                rows.setdefault(f"{clients} clients: process tree peak PSS MB", []).append(_mb(sim.tree_pss_kb))
                rows.setdefault(f"{clients} clients: script wall s", []).append(f"{sim.seconds:.0f}")
            print(f"measured {tree}", file=sys.stderr, flush=True)
    print("| | " + " | ".join(str(tree) for tree in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated client counts, got '{text}'") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"client counts must be >= 1, got '{text}'")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    part = sub.add_parser("tiny", help="tiny simulations with N virtual nodes: round time, server RSS, overhead")
    part.add_argument("--clients", type=_counts, default=[10, 50, 200, 1000], help="comma-separated N (default 10,50,200,1000)")
    part.add_argument("--rounds", type=int, default=3, help="rounds per run (default 3)")
    part.add_argument("--local-steps", type=int, default=5, help="local steps per sampled client (default 5)")
    part.add_argument("--sim-dir", default=str(ROOT / ".zk0-sim"),
                      help="the script's scratch dir: demo data per N is kept there (default .zk0-sim)")
    part.set_defaults(func=tiny)
    part = sub.add_parser("memory", help="what a simulation actor, the process tree and a warm tiny node hold")
    part.add_argument("--clients", type=_counts, default=[2, 200], help="comma-separated N (default 2,200)")
    part.add_argument("--rounds", type=int, default=2, help="rounds per simulation (default 2)")
    part.add_argument("--baseline", default="", help="another checkout measured first, side by side (e.g. main's)")
    part.add_argument("--sim-dir", default=str(ROOT / ".zk0-sim"),
                      help="the script's scratch dir: demo data per N is kept there (default .zk0-sim)")
    part.set_defaults(func=memory)
    part = sub.add_parser("server", help="the server's side of a real-size round with N synthetic q3 replies")
    part.add_argument("--nodes", type=_counts, default=[2, 8, 32, 128], help="comma-separated N (default 2,8,32,128)")
    part.set_defaults(func=lambda args: scale_server.run(args.nodes))
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
