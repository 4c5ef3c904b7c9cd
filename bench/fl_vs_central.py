"""Does the federation learn like centralized training? Tiny federations vs their `zk0 baseline`.

Writes demo data for two splits of the same tasks, sharing one held-out eval dataset:
- non-IID: client i holds only task i (what `zk0 demo-data` writes);
- IID: every client holds every task (same number of episodes per client).
Then for each setting runs `./train-fl-simulation.sh --tiny` on that data (the non-IID one
once per FedProx mu of the sweep, the IID one with mu = 0), runs `zk0 baseline` on each run
directory, and prints FL vs centralized held-out action MSE at the last round.

    .venv/bin/python bench/fl_vs_central.py [--clients 2] [--rounds 3] [--mus 0,0.01,0.1]
        [--settings noniid,iid] [--run-config "local-steps=20"] [--out DIR]

Everything lands under --out (default bench/results/fl-vs-central-<UTC timestamp>/):
data/, one directory per setting (its run directory, with baseline/ inside), summary.json
and summary.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("ZK0_VENV", ROOT / ".venv"))


def write_data(out: Path, clients: int) -> dict[str, tuple[str, str]]:
    """{setting: (datasets run-config value, eval-dataset URI)}; both settings share the eval dataset."""
    from zk0.demo_data import DemoSpec, write_dataset, write_demo_federation

    spec = DemoSpec()
    roots = write_demo_federation(out / "noniid", clients, spec)
    eval_uri = f"local:{roots[-1]}"
    iid = []
    for i in range(clients):
        root = out / "iid" / f"client_{i}"
        if not (root / "meta" / "info.json").exists():
            write_dataset(root, f"zk0-demo/iid_client_{i}", list(range(clients)), spec, seed=10 + i)
        iid.append(root)
    return {
        "noniid": (",".join(f"local:{root}" for root in roots[:-1]), eval_uri),
        "iid": (",".join(f"local:{root}" for root in iid), eval_uri),
    }


def run_federation(out: Path, clients: int, rounds: int, datasets: str, eval_uri: str, mu: float, extra: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    config = f"datasets='{datasets}' eval-dataset='{eval_uri}' proximal-mu={mu} {extra}".strip()
    command = [str(ROOT / "train-fl-simulation.sh"), "--tiny", "--clients", str(clients), "--rounds", str(rounds),
               "--output-dir", str(out), "--run-config", config]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    [run_dir] = [p for p in out.iterdir() if (p / "metrics.jsonl").is_file()]
    return run_dir


def run_baseline(run_dir: Path) -> dict:
    subprocess.run([str(VENV / "bin" / "python"), "-m", "zk0", "baseline", str(run_dir)], check=True,
                   stdout=subprocess.DEVNULL, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return json.loads((run_dir / "baseline" / "comparison.json").read_text())


def summary_table(results: list[dict]) -> str:
    lines = ["| setting | proximal-mu | round | FL action MSE | centralized action MSE | gap |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['setting']} | {r['mu']:g} | {r['round']} | {r['fl_action_mse']:.4f} | "
                     f"{r['central_action_mse']:.4f} | {r['gap_pct']:+.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mus", default="0,0.01,0.1", help="FedProx mu values for the non-IID runs")
    parser.add_argument("--settings", default="noniid,iid", help="which of noniid, iid to run")
    parser.add_argument("--run-config", default="", help="extra run-config overrides for every run")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/fl-vs-central-<timestamp>)")
    args = parser.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = (args.out or ROOT / "bench" / "results" / f"fl-vs-central-{stamp}").resolve()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = set(settings) - {"noniid", "iid"}
    if unknown:
        parser.error(f"unknown setting(s) {sorted(unknown)}; use noniid and/or iid")

    data = write_data(out / "data", args.clients)
    plan = [(s, float(mu)) for s in settings for mu in (args.mus.split(",") if s == "noniid" else ["0"])]
    results = []
    for setting, mu in plan:
        name = f"{setting}-mu{mu:g}"
        print(f"fl_vs_central: {name}: federation", file=sys.stderr)
        run_dir = run_federation(out / name, args.clients, args.rounds, *data[setting], mu, args.run_config)
        print(f"fl_vs_central: {name}: zk0 baseline {run_dir}", file=sys.stderr)
        comparison = run_baseline(run_dir)
        last = comparison["rows"][-1]
        results.append({"setting": setting, "mu": mu, "run_dir": str(run_dir), **last})

    (out / "summary.json").write_text(json.dumps(results, indent=2))
    table = summary_table(results)
    (out / "summary.md").write_text(table)
    print(table, end="")
    print(f"fl_vs_central: results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
