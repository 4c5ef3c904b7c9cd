"""Where a tiny zk0 federation spends its time, and what a fresh ClientApp process pays.

Part 1 runs `train-fl-simulation.sh --tiny` into a temporary output directory and
tabulates its metrics.jsonl: round wall time, client train time, server eval time,
the ClientApp's session start-up per message, and the payload per client.

Part 2 times fresh `python -c` processes that build zk0.node.session's session for one demo
dataset, as deployment mode's subprocess isolation does for every message, split
into interpreter, imports, dataset metadata, model load, processors and the first
training batch.

    .venv/bin/python bench/bench_federation.py [--clients 2] [--rounds 3] [--startup-repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("ZK0_VENV", str(ROOT / ".venv")) + "/bin/python"

# Runs in a fresh interpreter: the work one deployment-mode ClientApp process does
# before it can train on its first batch. Each step is timed with perf_counter; the
# session is built by zk0.node.session.node_session itself, its three steps timed by wrapping
# the functions zk0.node.session calls.
CHILD = r"""
import time
entered = time.time()
import json, sys
phases = {}
mark = time.perf_counter()
def lap(name):
    global mark
    now = time.perf_counter()
    phases[name] = phases.get(name, 0.0) + now - mark
    mark = now

import zk0.client_app                       # flwr, torch, zk0 (what flwr-clientapp imports)
lap("import zk0.client_app")
import lerobot.datasets.lerobot_dataset     # imported lazily by zk0.data.dataset / zk0.policy.model
import lerobot.policies.smolvla.modeling_smolvla
import lerobot.policies.smolvla.processor_smolvla
lap("import lerobot (lazy)")

from flwr.app import Context, RecordDict
import zk0.node.session

def timed(name, fn):
    def wrapper(*args, **kwargs):
        global mark
        mark = time.perf_counter()
        result = fn(*args, **kwargs)
        lap(name)
        return result
    return wrapper

zk0.node.session.open_node_data = timed("dataset metadata", zk0.node.session.open_node_data)
zk0.node.session.load_policy = timed("model load", zk0.node.session.load_policy)
zk0.node.session.make_processors = timed("processors", zk0.node.session.make_processors)
run_config, uri = json.loads(sys.argv[1]), sys.argv[2]
context = Context(run_id=1, node_id=1, node_config={"dataset-uri": uri}, state=RecordDict(), run_config=run_config)
session = zk0.node.session.node_session(context)
mark = time.perf_counter()
next(session.train_batches(seed=0))
lap("train split + first batch")
print(json.dumps({"phases": phases, "startup-seconds": session.startup_seconds, "entered": entered,
                  "left": time.time()}))
"""
PHASES = ("import zk0.client_app", "import lerobot (lazy)", "dataset metadata", "model load", "processors",
          "train split + first batch")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def run_federation(clients: int, rounds: int | None, output_dir: Path) -> tuple[list[dict], float]:
    command = [str(ROOT / "train-fl-simulation.sh"), "--tiny", "--clients", str(clients), "--output-dir", str(output_dir)]
    if rounds is not None:
        command += ["--rounds", str(rounds)]
    print(f"$ {' '.join(command)}", flush=True)
    log = output_dir / "simulation.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the simulation failed (exit {result.returncode}); its log ends:\n{log.read_text()[-3000:]}")
    metrics = sorted(output_dir.glob("*/metrics.jsonl"))
    if not metrics:
        sys.exit(f"the simulation wrote no metrics.jsonl under {output_dir}")
    rows = [json.loads(line) for line in metrics[-1].read_text().splitlines() if line.strip()]
    return rows, wall


def report_federation(rows: list[dict], wall: float) -> None:
    print("\nPer round (client figures: median over clients; startup = the ClientApp's node_session time)")
    header = f"{'round':>5} {'wall s':>8} {'train s':>8} {'srv eval s':>10} {'startup s':>10} {'MB down':>8} {'MB up':>8}"
    print(header)
    print("-" * len(header))
    trained = [row for row in rows if row["round"] > 0]
    for row in rows:
        clients = row["clients"].values()
        train = median([c.get("train/seconds") for c in clients])
        startup = median([c.get("startup-seconds") for c in clients])
        down, up = median(row["bytes_down"].values()), median(row["bytes_up"].values())
        print(
            f"{row['round']:>5} {row['seconds']:>8.2f} {fmt(train):>8} {fmt(row['eval/seconds']):>10} "
            f"{fmt(startup, '.3f'):>10} {fmt(down and down / 1e6, '.3f'):>8} {fmt(up and up / 1e6, '.3f'):>8}"
        )
    if not trained:
        return
    first = [c.get("startup-seconds") for c in trained[0]["clients"].values()]
    later = [c.get("startup-seconds") for row in trained[1:] for c in row["clients"].values()]
    round_wall = median([row["seconds"] for row in trained])
    train = median([c.get("train/seconds") for row in trained for c in row["clients"].values()])
    server_eval = median([row["eval/seconds"] for row in trained])
    down = median([b for row in trained for b in row["bytes_down"].values()])
    up = median([b for row in trained for b in row["bytes_up"].values()])
    accounted = sum(row["seconds"] for row in rows)
    print(f"\nSummary over rounds 1..{trained[-1]['round']} (medians)")
    print(f"  round wall time              {round_wall:8.2f} s")
    print(f"  client train time            {train:8.2f} s   ({train / round_wall:.0%} of the round)")
    print(f"  server eval time             {server_eval:8.2f} s   ({server_eval / round_wall:.0%} of the round)")
    print(f"  client start-up, 1st message {fmt(median(first), '8.3f')} s   (max {fmt(max(first, default=None), '.3f')})")
    print(f"  client start-up, later       {fmt(median(later), '8.3f')} s   (max {fmt(max(later, default=None), '.3f')}, "
          f"{sum(1 for s in later if s and s > 0.01)} of {len(later)} messages rebuilt the session)")
    print(f"  bytes down / up per client   {int(down):,} / {int(up):,} B per round")
    print(f"  whole script wall time       {wall:8.2f} s   (rounds incl. round-0 eval: {accounted:.2f} s; "
          f"the rest is setup, Ray and SuperLink start/stop)")


def demo_dataset(work: Path) -> str:
    result = subprocess.run([str(ROOT / ".venv/bin/zk0"), "demo-data", str(work / "data"), "--clients", "1"],
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[0]


def tiny_run_config(uri: str) -> dict:
    """pyproject's run config with the --tiny overrides the simulation script uses."""
    from flwr.common.config import get_fused_config_from_dir

    overrides = {"model": "tiny", "datasets": uri, "eval-dataset": uri, "batch-size": 8, "num-workers": 0}
    return get_fused_config_from_dir(ROOT, overrides)


def time_process(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, epoch time at launch, stdout) of one process."""
    launched = time.time()
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")
    return wall, launched, result.stdout


def report_startup(repeats: int, work: Path) -> None:
    uri = demo_dataset(work)
    config = json.dumps(tiny_run_config(uri))
    bare = [time_process([PYTHON, "-c", "pass"])[0] for _ in range(repeats)]
    runs = []
    for i in range(repeats):
        wall, launched, out = time_process([PYTHON, "-c", CHILD, config, uri])
        child = json.loads(out.strip().splitlines()[-1])
        child["phases"] = {"interpreter start": child["entered"] - launched, **child["phases"],
                           "interpreter exit": launched + wall - child["left"]}
        runs.append((wall, child))
        print(f"  fresh process {i + 1}/{repeats}: {wall:.2f} s", flush=True)
    walls = [wall for wall, _ in runs]
    print(f"\nFresh ClientApp process serving one message, {repeats} runs (medians; tiny model, demo dataset)")
    print(f"  {'whole process (wall)':30} {median(walls):7.2f} s   (min {min(walls):.2f}, max {max(walls):.2f};"
          f" bare `python -c pass`: {median(bare):.3f} s)")
    for phase in ("interpreter start", *PHASES, "interpreter exit"):
        value = median([child["phases"][phase] for _, child in runs])
        print(f"  {phase:30} {value:7.2f} s   ({value / median(walls):.0%})")
    print(f"  {'node_session() as zk0 reports':30} {median([c['startup-seconds'] for _, c in runs]):7.2f} s"
          f"   (= dataset metadata + model load + processors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2, help="simulated clients (default 2)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="federated rounds (default: the script's --tiny default, 3)")
    parser.add_argument("--startup-repeats", type=int, default=5,
                        help="fresh processes to time for the start-up figure; 0 skips part 2 (default 5)")
    parser.add_argument("--skip-federation", action="store_true", help="only time fresh-process start-up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zk0-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_federation:
            rows, wall = run_federation(args.clients, args.rounds, work)
            report_federation(rows, wall)
        if args.startup_repeats > 0:
            print("\nTiming fresh processes ...", flush=True)
            report_startup(args.startup_repeats, work)


if __name__ == "__main__":
    main()
