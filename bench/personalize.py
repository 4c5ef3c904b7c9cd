"""How many personal steps, at which lr? Personalization recipes on a finished run, per owner.

Takes a finished tiny run directory (e.g. from `./train-fl-simulation.sh --tiny`), and for each
of its simulated owners does what run-config `personalize = "finetune"` does on the node (the
same code: zk0.node.personal.finetune over the node's own session), from the run's final
global model, once per (personal-steps, personal-lr) of the grid; every model is scored on
every frame of the owner's held-out episodes. Prints global vs personalized per owner and
recipe, so a recipe is picked by measurement before it goes into a run's config.

    PYTHONPATH=src .venv/bin/python bench/personalize.py RUN_DIR [--steps 40,120,240] [--lrs 1e-3,3e-3]

The personal models land under RUN_DIR/personalize-bench/ (deleted with --no-keep).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", default="40,120,240")
    parser.add_argument("--lrs", default="1e-3,3e-3")
    parser.add_argument("--no-keep", action="store_true", help="delete the personal models afterwards")
    args = parser.parse_args()

    import torch
    from flwr.app import Context, RecordDict

    from zk0.data.dataset import fixed_batches
    from zk0.node import personal
    from zk0.node.session import node_session
    from zk0.policy.evaluate import evaluate_policy
    from zk0.run import state as run_state
    from zk0.run.directory import RunDir
    from zk0.tools.baseline import all_batches

    torch.set_num_threads(1)  # as a simulated node runs (one CPU each); more threads only spin on a small machine
    run = RunDir.at(args.run_dir)
    import tomllib

    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as handle:
        defaults = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    run_config = defaults | run.read_record()["run_config"]  # keys newer than the run: their defaults
    saved = run_state.load(run.path)
    stats = run_state.stats_from_json(saved.federation_stats)
    steps_grid = [int(s) for s in args.steps.split(",")]
    lr_grid = [float(v) for v in args.lrs.split(",")]
    out = run.path / "personalize-bench"
    results = []
    owners = len([d for d in str(run_config["datasets"]).split(",") if d.strip()])
    for partition in range(owners):
        context = Context(run_id=1, node_id=partition, node_config={"partition-id": partition},
                          state=RecordDict(), run_config=run_config)
        session = node_session(context)
        session.use_federation_stats(stats)
        heldout = session._split("heldout")

        def score() -> dict:
            batches = fixed_batches(heldout, session.config.batch_size, 0, all_batches(heldout, session.config.batch_size))
            result = evaluate_policy(session.policy, session.preprocessor, session.postprocessor, batches)
            return {"action_mse": result.action_mse, "frames": result.samples}

        session.load_weights(saved.global_weights)
        row = {"owner": partition, "global": score(), "recipes": {}}
        for steps in steps_grid:
            for lr in lr_grid:
                session.load_weights(saved.global_weights)
                personal.finetune(session, out / f"steps{steps}-lr{lr:g}" / f"client_{partition}", steps, lr)
                row["recipes"][f"{steps} steps, lr {lr:g}"] = score()
                print(f"owner {partition}: {steps} steps, lr {lr:g}: {row['recipes'][f'{steps} steps, lr {lr:g}']}",
                      file=sys.stderr)
        results.append(row)
    recipes = list(results[0]["recipes"])
    lines = ["| owner | global | " + " | ".join(recipes) + " |", "|---:|---:|" + "---:|" * len(recipes)]
    for row in results:
        lines.append(f"| {row['owner']} | {row['global']['action_mse']:.1f} | "
                     + " | ".join(f"{row['recipes'][r]['action_mse']:.1f}" for r in recipes) + " |")
    table = "\n".join(lines) + "\n"
    (run.path / "personalize-bench.json").write_text(json.dumps(results, indent=2))
    print(table, end="")
    print(f"held-out action MSE over every frame of each owner's held-out episodes "
          f"({results[0]['global']['frames']} frames per owner)", file=sys.stderr)
    if args.no_keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
