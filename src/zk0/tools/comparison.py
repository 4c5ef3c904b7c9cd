"""`zk0 baseline`: a finished run beside its centralized twin and each client's model alone,
as comparison.json, comparison.md and comparison.png under `<run>/baseline/`.

The twins are trained by zk0.tools.baseline (centralized) and zk0.tools.alone (each client
alone), which builds on it; this module runs both and writes the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from zk0.policy.model import resolve_device
from zk0.run.directory import LEROBOT_CHECKPOINTS
from zk0.server.schedule import round_lr
from zk0.tools.alone import alone_table, final_checkpoint, run_alone
from zk0.tools.baseline import (
    AXES,
    BaselineError,
    compare,
    lerobot_train_command,
    lr_options,
    merge_training_data,
    read_run,
    run_lerobot_train,
    wall_clock,
    write_start_model,
)


def write_report(comparison: dict, out: Path) -> None:
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2, default=str))
    (out / "comparison.md").write_text(markdown_table(comparison))
    _plot(comparison, out / "comparison.png")


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """A number formatted by `spec`, or '-' where there is none (e.g. a missing checkpoint)."""
    return "-" if value is None else format(value, spec) + unit


def markdown_table(comparison: dict) -> str:
    lines = [
        f"# FL vs centralized: run {comparison['run_name']}",
        "",
        f"Held-out action MSE on `{comparison['eval_dataset']}` (lower is better). Round r of the federation "
        f"vs `lerobot-train` at batch {comparison['batch_size']} after r x {comparison['steps_per_round']} steps "
        f"(equal samples: as many as all clients saw) and after r x {comparison['sequential_steps_per_round']} "
        f"steps (equal sequential steps: as many as one client took, the clients training in parallel). "
        f"Gap: (FL - centralized) / centralized.",
        "",
        "| round | FL action MSE | FL scored from | " + " | ".join(
            f"{heading}: centralized steps | {heading}: centralized MSE | {heading}: gap" for _, heading in AXES) + " |",
        "|---:|---:|---|" + "---:|---:|---:|" * len(AXES),
    ]
    for row in comparison["rows"]:
        cells = [str(row["round"]), fmt(row["fl_action_mse"], ".4f"), row["fl_source"]]
        for axis, _ in AXES:
            point = row[axis]
            cells += [str(point["central_steps"]), fmt(point["central_action_mse"], ".4f"), fmt(point["gap_pct"], "+.1f", "%")]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    clock = comparison.get("equal_wall_clock")
    if clock:
        table += (f"\nEqual wall-clock (the clients of a round train in parallel): centralized at batch "
                  f"{clock['batch_size']} for {clock['central_steps']} steps reaches {fmt(clock['central_action_mse'], '.4f')}; "
                  f"the federation's final round {fmt(clock['fl_action_mse'], '.4f')} (gap {fmt(clock['gap_pct'], '+.1f', '%')}).\n")
    if comparison.get("alone"):
        table += "\n" + alone_table(comparison["alone"])
    return table


def _plot(comparison: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = comparison["rows"]
    curves = [("federated", [(row["round"], row["fl_action_mse"]) for row in rows])]
    for (axis, heading), per_round in zip(AXES, (comparison["steps_per_round"], comparison["sequential_steps_per_round"])):
        curves.append((f"centralized, {heading} (r x {per_round} steps)",
                       [(row["round"], row[axis]["central_action_mse"]) for row in rows]))
    for label, points in curves:
        points = [(r, mse) for r, mse in points if mse is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("round r (centralized: lerobot-train checkpoints)")
    ax.set_ylabel("held-out action MSE (dataset units)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(f"zk0 run {comparison['run_name']}: federated vs centralized")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def run_baseline(run_dir: Path, log=print, alone: bool = True, final_only: bool = False,
                 wall_clock_axis: bool = True, eval_batches: int | None = None) -> dict:
    """Train the centralized baseline of `run_dir` and compare; with `alone`, also each client's
    local-only twin (zk0.tools.alone); with `final_only`, the final round alone. Returns
    comparison.json's content."""
    run_dir = run_dir.resolve()
    run = dataclasses.replace(read_run(run_dir), final_only=final_only, eval_batches=eval_batches)
    out = run.paths.baseline
    if out.exists():
        raise BaselineError(f"{out} already exists; delete it to run the baseline again")
    if alone:
        final_checkpoint(run)  # before hours of training, not after
    for key in run.skipped:
        log(f"warning: skipping the client '{key}': its dataset is not among the run config's datasets")
    config = run.config
    device = resolve_device(config.device)
    (out / "data").mkdir(parents=True)

    log(f"merging the training episodes of {len(run.datasets)} dataset(s) into {out / 'data' / 'train'}")
    meta = merge_training_data(run, out / "data" / "train")
    start_model = write_start_model(run, meta, out / "start_model")
    # save_freq: a multiple of every step either axis compares at (run_lerobot_train prunes the rest).
    command = lerobot_train_command(config, start_model, meta, out / "train", device, steps_per_round=run.steps_per_round,
                                    total_steps=run.total_steps,
                                    save_freq=math.gcd(run.steps_per_round, run.sequential_steps_per_round))
    log(f"lerobot-train: {run.total_steps} steps at batch {config.batch_size} on {device}; log: {out / 'lerobot-train.log'}")
    run_lerobot_train(command, out / "lerobot-train.log", device, out / "train" / LEROBOT_CHECKPOINTS, run.compared_steps)

    log("scoring federated and centralized checkpoints on the held-out eval dataset")
    rows = compare(run, start_model, out / "train", device)
    fl_lrs = [round_lr(r, config.num_rounds, lr=config.lr, schedule=config.lr_schedule,
                       warmup_rounds=config.warmup_rounds, lr_min=config.lr_min) for r in range(1, config.num_rounds + 1)]
    comparison = {
        "run_dir": str(run_dir),
        "run_name": run_dir.name,
        "run_id": run.run_id,
        "model": config.model,
        "datasets": [str(uri) for uri in run.datasets],
        "skipped_clients": list(run.skipped),
        "eval_dataset": str(config.eval_dataset),
        "heldout_episodes": config.heldout_episodes,
        "train_data": {"root": str(out / "data" / "train"), "episodes": meta.total_episodes, "frames": meta.total_frames},
        "num_rounds": config.num_rounds,
        "steps_per_round": run.steps_per_round,
        "sequential_steps_per_round": run.sequential_steps_per_round,
        "total_steps": run.total_steps,
        "batch_size": config.batch_size,
        "lr": {"fl_schedule": config.lr_schedule, "fl_per_round": fl_lrs,
               "lerobot_train": lr_options(config, run.steps_per_round, run.total_steps)},
        "device": device,
        "lerobot_train_command": command,
        "rows": rows,
        "alone": None,
        "equal_wall_clock": None,
    }
    if wall_clock_axis:
        final = rows[-1]["fl_action_mse"] if rows and rows[-1]["round"] == config.num_rounds else None
        comparison["equal_wall_clock"] = wall_clock(run, start_model, meta, out / "wall_clock", device, final, log)
    # Written now, so that a failing twin loses none of the centralized run's hours.
    write_report(comparison, out)
    if alone:
        try:
            comparison["alone"] = run_alone(run, out / "alone", device, log)
        except ValueError as err:  # BaselineError, DatasetError, ...: one line, as any other step's
            raise BaselineError(f"{err} (the centralized comparison is in {out / 'comparison.md'}; "
                                f"the clients alone are not)") from None
        write_report(comparison, out)
    return comparison
