"""Everything a run leaves on the server, under one absolute run directory (layout: zk0.run.directory):
run_config.json, metrics.jsonl, participation.json, checkpoints with `last` and `best` links, plots/metrics.png,
and wandb/ when run-config wandb = true (WANDB_MODE=offline works).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from logging import INFO
from pathlib import Path

from flwr.common import log

from zk0.util import atomic
from zk0.run.checkpoint import save_checkpoint
from zk0.config import RunConfig
from zk0.run.directory import RunDir


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
            self.paths = RunDir.create(config.output_dir)
        else:
            self.paths = RunDir(self.resume_dir(config))
            self._resume(resume_round)
        self.run_dir = self.paths.path
        self.paths.write_record(run_id, run_config)
        self._wandb = self._start_wandb(run_config, run_id) if config.wandb else None

    @staticmethod
    def resume_dir(config: RunConfig) -> Path:
        return RunDir.at(config.resume_from).path

    @property
    def best_mse_or_none(self) -> float | None:
        return None if math.isinf(self.best_mse) else self.best_mse

    def _resume(self, last_round: int) -> None:
        run = self.paths
        self.rows = [row for row in run.read_metrics() if row["round"] <= last_round]
        run.write_metrics(self.rows)
        for stale in [r for r in run.checkpoint_rounds() if r > last_round]:
            shutil.rmtree(run.checkpoint(stale))
        kept = [row for row in self.rows if run.checkpoint(row["round"]).is_dir()
                and row.get("eval/action_mse") is not None]
        if kept:
            best = min(kept, key=lambda row: row["eval/action_mse"])
            self.best_mse = best["eval/action_mse"]
            atomic.point_link(run.link("best"), run.checkpoint(best["round"]).name)
            atomic.point_link(run.link("last"), run.checkpoint(max(row["round"] for row in kept)).name)

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
        self.paths.append_metrics(row)
        if self._wandb is not None:
            flat = {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None}
            self._wandb.log(flat, step=row["round"])

    def checkpoint(self, server_round: int, policy, preprocessor, postprocessor, metrics: dict) -> Path:
        path = save_checkpoint(self.paths, server_round, policy, preprocessor, postprocessor, metrics)
        mse = metrics.get("eval/action_mse")
        if mse is not None and mse < self.best_mse:
            self.best_mse = mse
            atomic.point_link(self.paths.link("best"), path.name)
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
        if any(r.get("eval/success_rate") is not None for r in self.rows):
            panels.insert(0, ("closed-loop success rate (eval-env)", [("eval/success_rate", "server", 0)]))
        fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(5 * ((len(panels) + 1) // 2), 7))
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
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
        image = io.BytesIO()
        fig.savefig(image, dpi=100, format="png")
        plt.close(fig)
        atomic.write_bytes(self.paths.plot, image.getvalue())
        return self.paths.plot

    def write_participation(self, table: dict[str, dict[str, int]]) -> None:
        """Per node, how often it took part (zk0.server.rounds.PARTICIPATION), and one line for the operator."""
        atomic.write_text(self.paths.participation, json.dumps(table, indent=1) + "\n")
        if table:
            total = {what: sum(counts[what] for counts in table.values()) for what in next(iter(table.values()))}
            log(INFO, "Participation: %d nodes; %s (per node: %s)", len(table),
                ", ".join(f"{count} {what}" for what, count in total.items()), self.paths.participation)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
