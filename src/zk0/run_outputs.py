"""Everything a run leaves on the server, under one absolute run directory:

    metrics.jsonl          one JSON object per round
    checkpoints/           LeRobot pretrained_model checkpoints, `last` and `best` links
    plots/metrics.png      eval and train metrics over rounds
    wandb/                 when run-config wandb = true (WANDB_MODE=offline works)
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path

from zk0.checkpoint import point_link, save_checkpoint
from zk0.config import RunConfig


def make_run_dir(output_dir: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(output_dir).expanduser().resolve()
    run_dir = root / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / f"{stamp}-{suffix}"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "plots").mkdir()
    return run_dir


class RunOutputs:
    def __init__(self, config: RunConfig, run_config: dict, run_id: int | None = None,
                 resume_round: int | None = None) -> None:
        """`run_config` is Flower's raw mapping: saved as is, it can be passed back with --run-config.

        With `resume_round`, the run directory is `resume-from`'s: metrics.jsonl keeps the rows up
        to that round (a crash may have left a later, unfinished one) and `best` is recomputed.
        """
        self.config = config
        self.rows: list[dict] = []
        self.best_mse = math.inf
        if resume_round is None:
            self.run_dir = make_run_dir(config.output_dir)
        else:
            self.run_dir = self.resume_dir(config)
            self._resume(resume_round)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        (self.run_dir / "run_config.json").write_text(
            json.dumps({"run_id": run_id, "run_config": run_config}, indent=2)
        )
        self._wandb = self._start_wandb(run_config, run_id) if config.wandb else None

    @staticmethod
    def resume_dir(config: RunConfig) -> Path:
        return Path(config.resume_from).expanduser().resolve()

    @property
    def best_mse_or_none(self) -> float | None:
        return None if math.isinf(self.best_mse) else self.best_mse

    def _resume(self, last_round: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        self.rows = [row for row in rows if row["round"] <= last_round]
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in self.rows))
        tmp.replace(path)
        checkpoints = self.run_dir / "checkpoints"
        for stale in [p for p in checkpoints.iterdir() if p.name.isdigit() and int(p.name) > last_round]:
            shutil.rmtree(stale)
        kept = [row for row in self.rows if (checkpoints / f"{row['round']:06d}").is_dir()
                and row.get("eval/action_mse") is not None]
        if kept:
            best = min(kept, key=lambda row: row["eval/action_mse"])
            self.best_mse = best["eval/action_mse"]
            point_link(checkpoints / "best", f"{best['round']:06d}")
            point_link(checkpoints / "last", f"{max(row['round'] for row in kept):06d}")

    def _start_wandb(self, run_config: dict, run_id: int | None):
        import wandb

        return wandb.init(
            project=self.config.wandb_project,
            name=f"zk0-{self.run_dir.name}",
            dir=str(self.run_dir),
            config={**run_config, "flwr-run-id": run_id},
        )

    def record(self, row: dict) -> None:
        self.rows.append(row)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            flat = {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None}
            self._wandb.log(flat, step=row["round"])

    def checkpoint(self, server_round: int, policy, preprocessor, postprocessor, metrics: dict) -> Path:
        path = save_checkpoint(self.run_dir / "checkpoints", server_round, policy, preprocessor, postprocessor, metrics)
        mse = metrics.get("eval/action_mse")
        if mse is not None and mse < self.best_mse:
            self.best_mse = mse
            point_link(self.run_dir / "checkpoints" / "best", path.name)
        return path

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        # (key, label, shift): row r's `received_eval` scores the global model of round r - 1.
        panels = [
            ("held-out action MSE (dataset units)", [("eval/action_mse", "server", 0),
                                                     ("received_eval/action_mse", "clients", -1),
                                                     ("client_eval/action_mse", "clients, final model", 0)]),
            ("held-out flow-matching loss", [("eval/loss", "server", 0)]),
            ("train loss (weighted)", [("train/loss", "clients", 0)]),
            ("learning rate", [("train/lr", "server schedule", 0)]),
        ]
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        for ax, (title, series) in zip(axes.flat, panels):
            for key, label, shift in series:
                points = [(r["round"] + shift, r[key]) for r in self.rows if r.get(key) is not None]
                if points:
                    ax.plot(*zip(*points), marker="o", label=label)
            ax.set_title(title)
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend()
        fig.suptitle(f"zk0 run {self.run_dir.name}")
        fig.tight_layout()
        path = self.run_dir / "plots" / "metrics.png"
        tmp = path.with_name(".metrics.png.tmp")
        fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        tmp.replace(path)
        return path

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
