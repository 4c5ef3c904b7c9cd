"""Does joining make an owner's arm better at its task? Closed-loop success in the simulated
SO-101 federation, against the centralized twin and each owner alone.

For each owner count K and seed S: records K owners' scripted demonstrations (`zk0 sim-data
--seed S`, owner k's cubes in its own strip of the table), runs `./train-fl-simulation.sh --sim
so101 --clients K` (run-config seed S), runs `zk0 baseline` on the run (lerobot-train: the
centralized twin on the pooled training episodes, and each owner's twin alone on its own, at
equal samples), then scores by rollouts (zk0.sim.rollout: rollout seeds never used for a
demonstration, the same cubes for every model):
- the federated checkpoints of every evaluated round and the centralized checkpoint of the
  same samples, on the union of regions (the whole table);
- the final federated model, the final centralized one and each owner alone, on each owner's
  own strip and on the union.

    .venv/bin/python bench/closed_loop.py [--clients 2,4] [--seeds 0,1,2] [--episodes 50]
        [--run-config "num-rounds=20 ..."] [--out DIR]

Everything lands under --out (default bench/results/closed-loop-<UTC timestamp>/): data/,
one directory per run (its run directory with baseline/ inside), results.json, summary.md
and success.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("ZK0_VENV", ROOT / ".venv"))
ENV = "so101_reach"


def run(command: list[str], log: Path, env: dict | None = None) -> None:
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        sys.exit(f"closed_loop: {' '.join(command[:3])} ... failed; see {log}")


def federate(out: Path, clients: int, seed: int, run_config: str) -> Path:
    """Record, federate and baseline one (K, seed); returns the run directory (reused when done)."""
    runs = out / f"k{clients}-seed{seed}"
    done = sorted(runs.glob("*/baseline/comparison.json"))
    if done:
        return done[-1].parent.parent
    runs.mkdir(parents=True, exist_ok=True)
    sim_dir = out / "data" / f"seed{seed}"
    run([str(VENV / "bin" / "zk0"), "sim-data", str(sim_dir / f"sim-so101-{clients}"), "--clients", str(clients),
         "--seed", str(seed)], runs / "sim-data.log")
    run([str(ROOT / "train-fl-simulation.sh"), "--sim", "so101", "--clients", str(clients), "--output-dir", str(runs),
         "--run-config", f"seed={seed} {run_config}".strip()], runs / "federation.log", {"ZK0_SIM_DIR": str(sim_dir)})
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    run([str(VENV / "bin" / "zk0"), "baseline", str(run_dir)], runs / "baseline.log")
    return run_dir


def checkpoints(run_dir: Path) -> dict:
    """The models to score: federated and centralized per evaluated round, each owner's twin."""
    from lerobot.utils.train_utils import get_step_checkpoint_dir

    comparison = json.loads((run_dir / "baseline" / "comparison.json").read_text())
    central_dir, total = run_dir / "baseline" / "train", comparison["total_steps"]
    rounds = {}
    for row in comparison["rows"]:
        federated = run_dir / "checkpoints" / f"{row['round']:06d}" / "pretrained_model"
        steps = row["equal_samples"]["central_steps"]
        central = get_step_checkpoint_dir(central_dir, total, steps) / "pretrained_model" if steps else None
        if row["round"] > 0 and federated.is_dir() and central is not None and central.is_dir():
            rounds[row["round"]] = {"federated": federated, "central": central}
    alone = {}
    for client in comparison["alone"]["clients"]:
        twin_dir = run_dir / "baseline" / "alone" / f"client_{client['client']}" / "train"
        alone[client["client"]] = get_step_checkpoint_dir(twin_dir, client["steps"], client["steps"]) / "pretrained_model"
    return {"rounds": rounds, "alone": alone}


def success(model: Path, episodes: int, region: str) -> float:
    from zk0.sim.rollout import score
    from zk0.tools.rollout import load

    return score(*load(model), ENV, episodes, seed=0, region=region).success_rate


def measure(run_dir: Path, clients: int, episodes: int) -> dict:
    models = checkpoints(run_dir)
    per_round = {r: {name: success(path, episodes, "all") for name, path in pair.items()}
                 for r, pair in sorted(models["rounds"].items())}
    last = max(models["rounds"])
    finals = {"federated": models["rounds"][last]["federated"], "central": models["rounds"][last]["central"]}
    owners = []
    for owner in range(clients):
        own = f"{owner}/{clients}"
        row = {"owner": owner}
        for name, path in [*finals.items(), ("alone", models["alone"][owner])]:
            row[f"{name}/own"] = success(path, episodes, own)
            row[f"{name}/union"] = per_round[last][name] if name in finals else success(path, episodes, "all")
        owners.append(row)
    return {"run_dir": str(run_dir), "rounds": per_round, "owners": owners}


def spread(values: list[float]) -> str:
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.0f} % ({min(values):.0f}..{max(values):.0f})"


def summary(results: dict, episodes: int) -> str:
    lines = [f"Closed-loop success ({ENV}, {episodes} rollouts per point; mean (min..max) over seeds "
             f"{', '.join(map(str, results['seeds']))})", ""]
    for clients, by_seed in results["runs"].items():
        seeds = list(by_seed.values())
        rounds = sorted(seeds[0]["rounds"], key=int)
        lines += [f"### {clients} owners: the whole table, per round", "",
                  "| round | federated | centralized (equal samples) |", "|---:|---:|---:|"]
        for r in rounds:
            lines.append(f"| {r} | {spread([s['rounds'][r]['federated'] for s in seeds])} | "
                         f"{spread([s['rounds'][r]['central'] for s in seeds])} |")
        lines += ["", f"### {clients} owners: final models, each owner's own strip and the whole table", "",
                  "| owner | federated own | alone own | central own | federated union | alone union | central union |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for owner in range(int(clients)):
            rows = [s["owners"][owner] for s in seeds]
            lines.append(f"| {owner} | " + " | ".join(spread([row[key] for row in rows]) for key in (
                "federated/own", "alone/own", "central/own", "federated/union", "alone/union", "central/union")) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results["runs"]), figsize=(6 * len(results["runs"]), 4.2), squeeze=False)
    for ax, (clients, by_seed) in zip(axes[0], results["runs"].items()):
        seeds = list(by_seed.values())
        rounds = sorted(seeds[0]["rounds"], key=int)
        for name in ("federated", "central"):
            means = [100 * statistics.mean(s["rounds"][r][name] for s in seeds) for r in rounds]
            ax.plot([int(r) for r in rounds], means, marker="o", label=name if name == "federated" else "centralized")
        ax.set_title(f"{clients} owners: success on the whole table")
        ax.set_xlabel("round (centralized: the same samples)")
        ax.set_ylabel("success rate (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="2,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--run-config", default="", help="overrides of the --sim so101 preset")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = (args.out or ROOT / "bench" / "results" /
           f"closed-loop-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}").resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {"seeds": seeds, "episodes": args.episodes, "run_config": args.run_config, "runs": {}}
    for clients in (int(k) for k in args.clients.split(",")):
        for seed in seeds:
            run_dir = federate(out, clients, seed, args.run_config)
            results["runs"].setdefault(str(clients), {})[str(seed)] = measure(run_dir, clients, args.episodes)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            print(f"closed_loop: {clients} owners, seed {seed} measured", file=sys.stderr)
    (out / "summary.md").write_text(summary(results, args.episodes))
    plot(results, out / "success.png")
    print(summary(results, args.episodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
