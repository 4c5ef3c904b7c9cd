"""Why a personal adapter trained every round scores as it does: schedules over one finished run.

Takes a finished tiny simulation run with `personalize = "adapter"` (the nodes' memories still in
this machine's zk0 cache) and, per owner, with the nodes' own code (zk0.node.personal), scores on
every frame of the owner's held-out episodes:
- the final global model, and with the adapter the node kept (what the run saved);
- that kept adapter after `--extra` more steps over the final global model (AdamW moments kept);
- a fresh adapter trained over the final global model only, `--fresh` steps@lr, in one go;
- with `--repeat ROUNDSxSTEPS@LR`, a fresh adapter trained ROUNDS times STEPS steps over the
  final global model, AdamW restarted each time or kept: the per-round schedule without the
  global model moving under it.

    PYTHONPATH=src .venv/bin/python bench/adapter_schedule.py RUN_DIR [--extra 0,10,20,40]
        [--fresh 120@3e-3,120@1e-2] [--repeat 12x10@1e-2] [--owners 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--extra", default="0,10,20,40", help="more steps for the kept adapter over the final model")
    parser.add_argument("--fresh", default="120@3e-3,120@1e-2", help="STEPS@LR of a fresh adapter over the final model")
    parser.add_argument("--repeat", default="", help="ROUNDSxSTEPS@LR: fresh adapter, AdamW restarted vs kept")
    parser.add_argument("--owners", help="comma-separated owner indexes (default: every owner)")
    args = parser.parse_args()

    import torch
    from flwr.app import Context, RecordDict

    from zk0.data.dataset import fixed_batches
    from zk0.node import personal
    from zk0.node.memory import NodeMemory, node_key
    from zk0.node.session import node_session
    from zk0.policy.evaluate import evaluate_policy
    from zk0.run import state as run_state
    from zk0.run.directory import RunDir
    from zk0.tools.baseline import all_batches

    torch.set_num_threads(1)  # as a simulated node runs
    run = RunDir.at(args.run_dir)
    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as handle:
        defaults = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    run_config = defaults | run.read_record()["run_config"]
    saved = run_state.load(run.path)
    stats = run_state.stats_from_json(saved.federation_stats)
    run_key = json.loads((run.path / "state" / "state.json").read_text())["strategy"]["run-key"]
    owners = len([d for d in str(run_config["datasets"]).split(",") if d.strip()])
    chosen = [int(o) for o in args.owners.split(",")] if args.owners else list(range(owners))
    for partition in chosen:
        node_config = {"partition-id": partition, "num-partitions": owners}  # as Flower's simulation gives it
        memory = NodeMemory.load(run_key, node_key(node_config))
        session = node_session(Context(run_id=1, node_id=partition, node_config=node_config, state=RecordDict(),
                                       run_config=run_config))
        session.use_federation_stats(stats)
        heldout = session._split("heldout")
        base = session.config

        def score(adapter_state) -> float:
            """The final global model with `adapter_state` merged in, on every held-out frame."""
            session.load_weights(saved.global_weights)
            if adapter_state is not None:
                with personal.adapter_on(session, adapter_state) as adapter:
                    adapter.merge()
            batches = fixed_batches(heldout, base.batch_size, 0, all_batches(heldout, base.batch_size))
            result = evaluate_policy(session.policy, session.preprocessor, session.postprocessor, batches)
            session.load_weights(saved.global_weights)
            return round(result.action_mse, 1)

        def train(rounds: int, steps: int, lr: float, state, optimizer, keep: bool):
            session.config = dataclasses.replace(base, num_rounds=1, personal_steps=steps, personal_lr=lr)
            for index in range(rounds):
                state, kept = personal.train_adapter(session, state, optimizer, 1000 + index)
                optimizer = kept if keep else None
            session.config = base
            return state, optimizer

        row: dict = {"owner": partition, "global": score(None)}
        if memory.adapter is None:
            print(f"owner {partition}: no adapter in this machine's node memory for run key {run_key}", file=sys.stderr)
        else:
            state, optimizer, done = memory.adapter, memory.adapter_optimizer, 0
            step = base.personal_lr or base.lr
            for extra in sorted(int(e) for e in args.extra.split(",")):
                if extra > done:
                    state, optimizer = train(1, extra - done, step, state, optimizer, keep=True)
                    done = extra
                row[f"kept + {extra} steps over the final model"] = score(state)
        for recipe in filter(None, args.fresh.split(",")):
            steps, lr = recipe.split("@")
            row[f"fresh {recipe}"] = score(train(1, int(steps), float(lr), None, None, keep=False)[0])
        if args.repeat:
            shape, lr = args.repeat.split("@")
            rounds, steps = (int(v) for v in shape.split("x"))
            for keep in (False, True):
                state, _ = train(rounds, steps, float(lr), None, None, keep=keep)
                row[f"{args.repeat}, AdamW {'kept' if keep else 'restarted'}"] = score(state)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
