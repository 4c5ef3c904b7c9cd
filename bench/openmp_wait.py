"""Does torch's OpenMP wait policy matter when other processes share the cores? Side by side.

Each case runs in a fresh interpreter, since libgomp reads its settings once, when torch loads
it: `spin` imports torch before zk0 (libgomp's default: a thread that waits for its partners
spins 300,000 times before it sleeps), `passive` imports zk0 first (zk0 sets
OMP_WAIT_POLICY=PASSIVE: it sleeps at once). The work is the `--tiny` preset's: training steps of
batch 8 and one evaluation of 4 batches of the tiny SmolVLA on zk0's demo data, with torch's
default thread count. `--busy K` runs K other processes beside it that train the same way in a
loop (another node, a test, a server on the same cores), started with libgomp's default.

    .venv/bin/python bench/openmp_wait.py --busy 0,1 --repeats 3

Prints one JSON line per case with the median seconds of its repeats (spin and passive
alternate, so both see the same machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICIES = ("spin", "passive")


def work(policy: str, data_dir: Path, steps: int, loop: bool) -> None:
    """Time `steps` training steps and one evaluation (or, with `loop`, train until killed)."""
    if policy == "spin":
        import torch  # noqa: F401  (before zk0: libgomp keeps its spinning default)
    import zk0  # noqa: F401
    from zk0.data.dataset import fixed_batches, infinite_batches, open_node_data, open_split
    from zk0.data.uri import parse_dataset_uri
    from zk0.policy.evaluate import evaluate_policy
    from zk0.policy.model import load_policy, make_processors
    from zk0.policy.train import train_local
    from zk0.tools.quiet import quiet_dataset_writer

    with quiet_dataset_writer():
        data = open_node_data(parse_dataset_uri(f"local:{data_dir / 'client_0'}"), 6, 2)
        policy = load_policy("tiny", data.meta, "cpu")
    preprocessor, postprocessor = make_processors(policy, data.stats)
    split = open_split(data, data.train_episodes, policy.config)
    batches = infinite_batches(split, 8, 0, 0)
    train_local(policy, preprocessor, batches, steps=1, lr=1e-3, proximal_mu=0.0, desc="warm-up")
    while loop:
        train_local(policy, preprocessor, batches, steps=10, lr=1e-3, proximal_mu=0.0, desc="busy")
    started = time.perf_counter()
    train_local(policy, preprocessor, batches, steps=steps, lr=1e-3, proximal_mu=0.0, desc="timed")
    trained = time.perf_counter()
    evaluate_policy(policy, preprocessor, postprocessor, fixed_batches(split, 8, 0, 4))
    print(json.dumps({"train_step_s": (trained - started) / steps, "eval_s": time.perf_counter() - trained}))


def measure(policy: str, data_dir: Path, steps: int) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", policy, "--data", str(data_dir), "--steps", str(steps)],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"openmp_wait: the {policy} case failed: {run.stderr.strip().splitlines()[-1:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", default="0,1", help="comma-separated counts of competing processes (default 0,1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per case (default 5)")
    parser.add_argument("--data", type=Path, help="zk0 demo-data directory (default: written to a temporary one)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, of spin,passive (default both)")
    parser.add_argument("--child", choices=POLICIES, help=argparse.SUPPRESS)
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if set(args.policies.split(",")) - set(POLICIES):
        parser.error(f"--policies takes spin and/or passive, got '{args.policies}'")
    if args.child:
        work(args.child, args.data, args.steps, args.loop)
        return 0
    with tempfile.TemporaryDirectory(prefix="zk0-openmp-") as scratch:
        data_dir = (args.data or Path(scratch) / "demo").resolve()
        if args.data is None:
            subprocess.run([Path(sys.executable).parent / "zk0", "demo-data", str(data_dir), "--clients", "1"],
                           check=True, capture_output=True)
        for busy in (int(count) for count in args.busy.split(",")):
            competitors = [subprocess.Popen([sys.executable, __file__, "--child", "spin", "--loop", "--data",
                                             str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                           for _ in range(busy)]
            try:
                time.sleep(15 if busy else 0)  # the competitors past their imports, training
                runs: dict[str, list[dict]] = {policy: [] for policy in args.policies.split(",")}
                for _ in range(args.repeats):
                    for policy in runs:
                        runs[policy].append(measure(policy, data_dir, args.steps))
            finally:
                for competitor in competitors:
                    competitor.kill()
                    competitor.wait()
            for policy, points in runs.items():
                print(json.dumps({"busy": busy, "policy": policy, "repeats": args.repeats,
                                  "train_step_s": round(statistics.median(p["train_step_s"] for p in points), 3),
                                  "eval_s": round(statistics.median(p["eval_s"] for p in points), 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
