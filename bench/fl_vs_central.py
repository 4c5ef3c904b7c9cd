"""Does the federation learn like centralized training? Tiny federations vs their `zk0 baseline`.

Writes demo data for two splits of the same tasks, sharing one held-out eval dataset:
- non-IID: client i holds only task i (what `zk0 demo-data` writes);
- IID: every client holds every task (same number of episodes per client).
Then for each client count, setting and seed runs `./train-fl-simulation.sh --tiny` on that
data (the non-IID one once per FedProx mu of the sweep, the IID one with mu = 0), runs `zk0
baseline` on each run directory, and prints FL vs centralized held-out action MSE at the last
round on both axes: equal samples and equal sequential steps (see `zk0 baseline`), and for how
many clients joining pays (the federated model beats the client's model alone on the union of
all clients' held-out episodes), per run and as mean and spread (min..max) over the seeds.

    .venv/bin/python bench/fl_vs_central.py [--clients 2,4] [--rounds N] [--mus 0,0.01,0.1]
        [--seeds 42,43,44] [--settings noniid,iid] [--run-config "local-steps=20"] [--no-alone] [--out DIR]

Everything lands under --out (default bench/results/fl-vs-central-<UTC timestamp>/):
data/, one directory per run (its run directory, with baseline/ inside), summary.json
and summary.md.
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


def write_data(out: Path, clients: int) -> dict[str, tuple[str, str]]:
    """{setting: (datasets run-config value, eval-dataset URI)}; both settings share the eval dataset."""
    from zk0.tools.demo_data import DemoSpec, write_dataset, write_demo_federation

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


def run_federation(out: Path, clients: int, rounds: int | None, datasets: str, eval_uri: str, mu: float, seed: int,
                   extra: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    config = f"datasets='{datasets}' eval-dataset='{eval_uri}' proximal-mu={mu} seed={seed} {extra}".strip()
    command = [str(ROOT / "train-fl-simulation.sh"), "--tiny", "--clients", str(clients),
               *(["--rounds", str(rounds)] if rounds else []),
               "--output-dir", str(out), "--run-config", config]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    [run_dir] = [p for p in out.iterdir() if (p / "metrics.jsonl").is_file()]
    return run_dir


def run_baseline(run_dir: Path, alone: bool, final_only: bool = False) -> dict:
    command = [str(VENV / "bin" / "python"), "-m", "zk0", "baseline", str(run_dir), *([] if alone else ["--no-alone"]),
               *(["--final-only"] if final_only else [])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return json.loads((run_dir / "baseline" / "comparison.json").read_text())


AXES = (("equal_samples", "equal samples"), ("equal_sequential_steps", "equal sequential steps"))


def result_row(setting: str, mu: float, clients: int, seed: int, run_dir: Path, comparison: dict) -> dict:
    """The last round of one run: FL and the centralized twin on both axes."""
    last = comparison["rows"][-1]
    row = {"setting": setting, "mu": mu, "clients": clients, "seed": seed, "run_dir": str(run_dir),
           "round": last["round"], "fl_action_mse": last["fl_action_mse"]}
    for axis, _ in AXES:
        row[axis] = last[axis]
    row["joining_pays"] = joining_pays(comparison.get("alone"))
    row["owners"] = owners(comparison.get("alone"))
    return row


def owners(alone: dict | None) -> list[dict]:
    """Per owner: its model alone, the global model and its personalized one (None: not made), on its
    own held-out episodes and on all owners' (zk0 baseline's per-owner table)."""
    union = "all clients' held-out"
    rows = []
    for client in (alone or {}).get("clients", []):
        own = f"client {client['client']} held-out"
        mine = client.get("personalized") or {}
        rows.append({
            "owner": client["client"],
            "own": {"alone": client["alone"].get(own), "global": alone["federated"].get(own),
                    "personalized": mine.get(own, client.get("personalized_reported"))},
            "union": {"alone": client["alone"].get(union), "global": alone["federated"].get(union),
                      "personalized": mine.get(union)},
        })
    return rows


def owners_table(results: list[dict]) -> str:
    """Per run and owner: alone, global, personalized on its own held-out episodes and on the union."""
    from zk0.tools.comparison import fmt

    lines = ["| setting | clients | seed | owner | own: alone | own: global | own: personalized | "
             "union: alone | union: global | union: personalized |", "|---|---:|---:|---:|" + "---:|" * 6]
    for r in results:
        for o in r.get("owners", []):
            cells = [r["setting"], str(r["clients"]), str(r["seed"]), str(o["owner"])]
            cells += [fmt(o[where][model], ".1f") for where in ("own", "union") for model in ("alone", "global", "personalized")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def owners_summary(results: list[dict]) -> str:
    """Per setting and client count, over seeds and owners: how often the personalized model beats
    alone and global on the owner's own held-out episodes, and the median gaps."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        for o in r.get("owners", []):
            if o["own"]["personalized"] is not None:
                groups.setdefault((r["setting"], r["clients"]), []).append(o)
    lines = ["| setting | clients | owner-runs | personalized < alone (own) | personalized < global (own) | "
             "median (personalized - alone) / alone, own | median (global - alone) / alone, own |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for (setting, clients), rows in groups.items():
        own = [o["own"] for o in rows]
        beats_alone = sum(o["personalized"] < o["alone"] for o in own)
        beats_global = sum(o["personalized"] < o["global"] for o in own)
        gap = statistics.median(100 * (o["personalized"] - o["alone"]) / o["alone"] for o in own)
        global_gap = statistics.median(100 * (o["global"] - o["alone"]) / o["alone"] for o in own)
        lines.append(f"| {setting} | {clients} | {len(own)} | {beats_alone}/{len(own)} | {beats_global}/{len(own)} | "
                     f"{gap:+.1f}% | {global_gap:+.1f}% |")
    return "\n".join(lines) + "\n"


def joining_pays(alone: dict | None) -> int | None:
    """How many clients the federated model beats alone on all clients' held-out episodes; None
    without that score (no twins, or heldout-episodes = 0)."""
    union = "all clients' held-out"
    federated = (alone or {}).get("federated", {}).get(union)
    if federated is None:
        return None
    return sum(federated < client["alone"][union] for client in alone["clients"])


def runs_table(results: list[dict]) -> str:
    from zk0.tools.comparison import fmt

    header = " | ".join(f"centralized, {heading} | gap" for _, heading in AXES)
    lines = [f"| setting | clients | proximal-mu | seed | FL action MSE | {header} | joining pays |",
             "|---|---:|---:|---:|---:|" + "---:|---:|" * len(AXES) + "---:|"]
    for r in results:
        cells = [r["setting"], str(r["clients"]), f"{r['mu']:g}", str(r["seed"]), fmt(r["fl_action_mse"], ".1f")]
        for axis, _ in AXES:
            cells += [fmt(r[axis]["central_action_mse"], ".1f"), fmt(r[axis]["gap_pct"], "+.1f", "%")]
        cells.append("-" if r["joining_pays"] is None else f"{r['joining_pays']}/{r['clients']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def spread(values: list[float | None], spec: str, unit: str = "") -> str:
    """Mean and min..max over the seeds that have the value."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec) + unit
    return f"{format(statistics.mean(values), spec)}{unit} ({format(min(values), spec)}..{format(max(values), spec)})"


def seeds_table(results: list[dict]) -> str:
    """One row per setting, client count and mu: mean (min..max) over its seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["setting"], r["clients"], r["mu"]), []).append(r)
    header = " | ".join(f"gap, {heading}" for _, heading in AXES)
    lines = [f"| setting | clients | proximal-mu | seeds | FL action MSE | {header} | joining pays |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(AXES) + "---:|"]
    for (setting, clients, mu), runs in groups.items():
        cells = [setting, str(clients), f"{mu:g}", str(len(runs)), spread([r["fl_action_mse"] for r in runs], ".1f")]
        cells += [spread([r[axis]["gap_pct"] for r in runs], "+.1f", "%") for axis, _ in AXES]
        pays = [r["joining_pays"] for r in runs if r["joining_pays"] is not None]
        cells.append(f"{sum(pays)}/{clients * len(pays)}" if pays else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def numbers(text: str, kind: type) -> list:
    """A comma-separated list of numbers; ValueError if it holds none or something else."""
    values = [kind(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"empty list '{text}'")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="2", help="client counts, e.g. 2,4,8 (1 to 8 in the demo)")
    parser.add_argument("--rounds", type=int, help="federated rounds (default: the --tiny preset's)")
    parser.add_argument("--mus", default="0,0.01,0.1", help="FedProx mu values for the non-IID runs")
    parser.add_argument("--seeds", default="42", help="run-config seeds, e.g. 42,43,44 (the spread is over these)")
    parser.add_argument("--settings", default="noniid,iid", help="which of noniid, iid to run")
    parser.add_argument("--run-config", default="", help="extra run-config overrides for every run")
    parser.add_argument("--no-alone", action="store_true", help="skip the clients' local-only twins (zk0 baseline --no-alone)")
    parser.add_argument("--final-only", action="store_true", help="score the final round only (zk0 baseline --final-only)")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/fl-vs-central-<timestamp>)")
    args = parser.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = (args.out or ROOT / "bench" / "results" / f"fl-vs-central-{stamp}").resolve()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = set(settings) - {"noniid", "iid"}
    if unknown:
        parser.error(f"unknown setting(s) {sorted(unknown)}; use noniid and/or iid")

    try:
        client_counts, seeds, mus = numbers(args.clients, int), numbers(args.seeds, int), numbers(args.mus, float)
    except ValueError as err:
        parser.error(f"--clients, --seeds and --mus take comma-separated numbers ({err})")

    results = []
    for clients in client_counts:
        data = write_data(out / "data" / f"{clients}-clients", clients)
        plan = [(s, mu) for s in settings for mu in (mus if s == "noniid" else [0.0])]
        for (setting, mu), seed in ((p, seed) for p in plan for seed in seeds):
            name = f"{setting}-{clients}c-mu{mu:g}-seed{seed}"
            print(f"fl_vs_central: {name}: federation", file=sys.stderr)
            run_dir = run_federation(out / name, clients, args.rounds, *data[setting], mu, seed, args.run_config)
            print(f"fl_vs_central: {name}: zk0 baseline {run_dir}", file=sys.stderr)
            results.append(result_row(setting, mu, clients, seed, run_dir,
                                      run_baseline(run_dir, not args.no_alone, args.final_only)))
            (out / "summary.json").write_text(json.dumps(results, indent=2))  # after every run: nothing lost

    (out / "summary.json").write_text(json.dumps(results, indent=2))
    table = runs_table(results) + "\n" + seeds_table(results)
    if any(r["owners"] for r in results):
        table += "\n" + owners_table(results) + "\n" + owners_summary(results)
    (out / "summary.md").write_text(table)
    print(table, end="")
    print(f"fl_vs_central: results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
