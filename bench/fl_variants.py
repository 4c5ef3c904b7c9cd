"""Which run-config wins? The tiny federation under a few variants, several seeds, side by side.

Runs `./train-fl-simulation.sh --tiny` on the demo federation (non-IID: client i holds task i,
the shared eval dataset held out) once per variant and seed, and prints the server's held-out
action MSE after the last round per run and per variant (median, min..max over the seeds) with
its ratio to the first variant. A variant is a name and run-config overrides; runs of one seed
differ only in the variant, so the ratios compare like with like. Used to measure a change
before it becomes a default (issue 15: client optimizer state, round schedules).

    .venv/bin/python bench/fl_variants.py --clients 2 --seeds 42,43,44 \\
        --variant "reset=" --variant "keep=keep-optimizer-state=true"

`--variant NAME=OVERRIDES`: OVERRIDES as `--run-config` takes them (after the --tiny preset,
e.g. `num-rounds=12 local-steps=10`), or empty for the preset itself. Runs land under --out
(default bench/results/fl-variants-<UTC timestamp>/), with summary.json and summary.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, clients: int, seed: int, overrides: str) -> tuple[float, float]:
    """The last round's server action MSE and the run's wall seconds."""
    out.mkdir(parents=True, exist_ok=True)
    command = [str(ROOT / "train-fl-simulation.sh"), "--tiny", "--clients", str(clients), "--output-dir", str(out),
               "--run-config", f"seed={seed} {overrides}".strip()]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    [metrics] = [p / "metrics.jsonl" for p in out.iterdir() if (p / "metrics.jsonl").is_file()]
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    last = max((row for row in rows if row.get("eval/action_mse") is not None), key=lambda row: row["round"])
    return float(last["eval/action_mse"]), seconds


def variant(text: str) -> tuple[str, str]:
    name, sep, overrides = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"'{text}': write a variant as NAME=OVERRIDES, e.g. keep=keep-optimizer-state=true")
    return name.strip(), overrides.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2, help="demo clients (1 to 8)")
    parser.add_argument("--seeds", default="42,43,44", help="run-config seeds, comma-separated")
    parser.add_argument("--variant", type=variant, action="append", required=True, help="NAME=OVERRIDES (repeat)")
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got '{args.seeds}'")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = (args.out or ROOT / "bench" / "results" / f"fl-variants-{stamp}").resolve()

    results = []
    for seed in seeds:
        for name, overrides in args.variant:
            print(f"fl_variants: seed {seed}, {name} ({overrides or 'defaults'})", file=sys.stderr)
            mse, seconds = run(out / f"{name}-seed{seed}", args.clients, seed, overrides)
            results.append({"variant": name, "overrides": overrides, "seed": seed, "action_mse": mse, "seconds": seconds})
    (out / "summary.json").write_text(json.dumps(results, indent=2))

    lines = ["| variant | run-config | " + " | ".join(f"seed {s}" for s in seeds) + " | median (min..max) | ratio to "
             f"{args.variant[0][0]}, median over seeds |", "|---|---|" + "---:|" * (len(seeds) + 2)]
    first = {r["seed"]: r["action_mse"] for r in results if r["variant"] == args.variant[0][0]}
    for name, overrides in args.variant:
        mine = {r["seed"]: r["action_mse"] for r in results if r["variant"] == name}
        values = [mine[s] for s in seeds]
        ratio = statistics.median(mine[s] / first[s] for s in seeds)
        lines.append(f"| {name} | `{overrides}` | " + " | ".join(f"{v:.1f}" for v in values)
                     + f" | {statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f}) | {ratio:.3f} |")
    table = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(table)
    print(table, end="")
    print(f"fl_variants: {args.clients} clients, non-IID demo, server action MSE after the last round; runs in {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
