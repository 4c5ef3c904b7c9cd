"""One run directory: every name and layout fact of what a run leaves on the server.

    <output-dir>/<YYYYMMDD-HHMMSS>/     (UTC; `-2`, `-3`, ... if taken)
    ├── run_config.json       {"run_id": Flower's run id, "run_config": the raw run config}
    ├── metrics.jsonl         one JSON object per round
    ├── participation.json    per node: how often it was sampled, accepted, rejected, failed, late
    ├── spool/                a round's compact updates, only while the round aggregates
    ├── server.log            the ServerApp's zk0 lines
    ├── plots/metrics.png     metrics over rounds
    ├── state/                state.json + global.safetensors after the last completed round
    ├── checkpoints/000005/   pretrained_model/ (LeRobot) + zk0_round.json; `last`, `best` links
    ├── resume.toml           the run config a `zk0 admin resume` submits
    ├── baseline/             `zk0 baseline` outputs
    ├── nodes/client_<i>/     simulation only: the simulated nodes' own folders (their disks, not the
    │                         server's records): personal/ with run-config personalize (zk0.node.personal)
    └── wandb/                with run-config wandb = true

Readers and writers (run_outputs, run_state, checkpoint, push, baseline, admin) take their
paths from here; what goes into the files is theirs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zk0.util import atomic

PRETRAINED = "pretrained_model"  # LeRobot's name, inside each checkpoint
ROUND_RECORD = "zk0_round.json"  # inside each checkpoint, beside PRETRAINED
STATE_FILE = "state.json"  # inside state/
STATE_WEIGHTS = "global.safetensors"  # inside state/
STATE_STRATEGY = "strategy.safetensors"  # inside state/: the strategy's arrays (zk0.server.resume)
LINKS = ("best", "last")
LEROBOT_CHECKPOINTS = "checkpoints"  # inside a lerobot-train output_dir (zk0 baseline's runs)
_ROUND_DIR = re.compile(r"[0-9]{6}")


class RunDirError(ValueError):
    """A run directory's record that cannot be read; one line naming the file and the problem."""


def round_name(server_round: int) -> str:
    """A checkpoint directory's name: the round, zero-padded to six digits as lerobot-train's steps."""
    return f"{server_round:06d}"


def round_of_name(name: str) -> int | None:
    """The round a checkpoint directory's name stands for, or None for any other name."""
    return int(name) if _ROUND_DIR.fullmatch(name) else None


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, output_dir: str | Path) -> RunDir:
        """A new, empty run directory under `output_dir`, named by the UTC time."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        root = Path(output_dir).expanduser().resolve()
        path, suffix = root / stamp, 1
        while path.exists():
            suffix += 1
            path = root / f"{stamp}-{suffix}"
        run = cls(path)
        run.checkpoints.mkdir(parents=True)
        run.plot.parent.mkdir()
        return run

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path).expanduser().resolve())

    @property
    def record(self) -> Path:
        return self.path / "run_config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def participation(self) -> Path:
        return self.path / "participation.json"

    @property
    def spool(self) -> Path:
        return self.path / "spool"

    @property
    def server_log(self) -> Path:
        return self.path / "server.log"

    @property
    def debug_log(self) -> Path:
        """What server.log leaves out: the simulation engine's own records of failed nodes (Ray's full text)."""
        return self.path / "debug.log"

    @property
    def plot(self) -> Path:
        return self.path / "plots" / "metrics.png"

    @property
    def state(self) -> Path:
        return self.path / "state"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def resume_config(self) -> Path:
        return self.path / "resume.toml"

    @property
    def baseline(self) -> Path:
        return self.path / "baseline"

    def checkpoint(self, server_round: int) -> Path:
        return self.checkpoints / round_name(server_round)

    def link(self, name: str) -> Path:
        """The `best` or `last` link in checkpoints/."""
        if name not in LINKS:
            raise ValueError(f"checkpoint link '{name}' is not one of {', '.join(LINKS)}")
        return self.checkpoints / name

    def checkpoint_rounds(self) -> list[int]:
        """Rounds with a checkpoint directory, ascending (staging and links excluded)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(round_of_name(p.name) for p in self.checkpoints.iterdir()
                      if round_of_name(p.name) is not None and p.is_dir() and not p.is_symlink())

    def is_run(self) -> bool:
        """Whether this looks like a zk0 run directory (rather than a checkpoint or anything else)."""
        return self.checkpoints.is_dir() or self.record.is_file()

    def write_record(self, run_id: int | None, run_config: dict) -> None:
        atomic.write_text(self.record, json.dumps({"run_id": run_id, "run_config": run_config}, indent=2))

    def read_record(self) -> dict[str, Any] | None:
        """run_config.json ({"run_id", "run_config"}), or None when the run has none."""
        if not self.record.is_file():
            return None
        saved = read_json(self.record)
        if not (isinstance(saved, dict) and isinstance(saved.get("run_config"), dict)):
            raise RunDirError(f"{self.record} has no 'run_config' mapping; it is not a zk0 run record")
        return saved

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows ([] when there is none yet)."""
        if not self.metrics.is_file():
            return []
        rows = []
        for number, line in enumerate(self.metrics.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RunDirError(f"{self.metrics} line {number} is not valid JSON ({err.msg}); "
                                  "fix or remove that line") from None
        return rows

    def write_metrics(self, rows: list[dict]) -> None:
        atomic.write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in rows))

    def append_metrics(self, row: dict) -> None:
        with self.metrics.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}); fix or remove it") from None
