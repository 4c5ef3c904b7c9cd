"""The server's run state after each completed round, so a run can resume where it stopped,
and go on exactly as it would have.

    <run dir>/state/global.safetensors   fp32 global trainable weights after `round`
    <run dir>/state/strategy.safetensors the strategy's arrays (last broadcast, server optimizer)
    <run dir>/state/state.json           round, best metric, federation statistics, RNG, and the
                                         strategy's other values (zk0.server.resume)

Written with zk0.util.atomic.replace_dir, so a crash leaves either the previous round's state
or this one's, never a mix. metrics.jsonl and the checkpoints are the run's other record;
a resumed run truncates metrics.jsonl to the saved round.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zk0.util.atomic import replace_dir, surviving_dir
from zk0.run.directory import STATE_FILE, STATE_STRATEGY, STATE_WEIGHTS, RunDir


@dataclass
class RunState:
    round: int
    global_weights: dict[str, np.ndarray]
    best_mse: float | None
    federation_stats: dict[str, dict[str, list]] | None
    python_rng: object
    strategy: dict = field(default_factory=dict)  # zk0.server.resume.saved: JSON values
    strategy_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # and named arrays


def save(run_dir: Path, state: RunState) -> None:
    from safetensors.numpy import save_file

    with replace_dir(RunDir(run_dir).state) as staging:
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.global_weights.items()},
                  str(staging / STATE_WEIGHTS))
        if state.strategy_arrays:
            save_file({k: np.ascontiguousarray(v) for k, v in state.strategy_arrays.items()},
                      str(staging / STATE_STRATEGY))
        (staging / STATE_FILE).write_text(json.dumps({
            "round": state.round,
            "best_mse": state.best_mse,
            "federation_stats": state.federation_stats,
            "python_rng": _encode_rng(state.python_rng),
            "strategy": state.strategy,
        }))


def _saved(run_dir: Path) -> Path | None:
    """The saved state directory (the previous one if a crash cut its replacement short), or None."""
    path = surviving_dir(RunDir(run_dir).state)
    return path if (path / STATE_FILE).is_file() else None


def last_saved(run_dir: Path) -> tuple[int, float] | None:
    """(the last completed round saved in `run_dir`, when it was saved), or None when no round completed."""
    path = _saved(run_dir)
    if path is None:
        return None
    return json.loads((path / STATE_FILE).read_text())["round"], (path / STATE_FILE).stat().st_mtime


def load(run_dir: Path) -> RunState:
    from safetensors.numpy import load_file

    path = _saved(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} has no saved run state (no completed round to resume from)")
    saved = json.loads((path / STATE_FILE).read_text())
    return RunState(
        round=saved["round"],
        global_weights=load_file(str(path / STATE_WEIGHTS)),
        best_mse=saved["best_mse"],
        federation_stats=saved["federation_stats"],
        python_rng=_decode_rng(saved["python_rng"]),
        strategy=saved.get("strategy", {}),  # absent from states saved before zk0 kept it
        strategy_arrays=load_file(str(path / STATE_STRATEGY)) if (path / STATE_STRATEGY).is_file() else {},
    )


def _encode_rng(rng_state) -> list:
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def _decode_rng(saved: list):
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def restore_rng(state: RunState) -> None:
    """Flower samples nodes with `random`; resuming continues its sequence."""
    random.setstate(state.python_rng)


def stats_to_json(stats: dict | None) -> dict | None:
    if stats is None:
        return None
    return {feature: {key: np.asarray(value).tolist() for key, value in values.items()} for feature, values in stats.items()}


def stats_from_json(saved: dict | None) -> dict | None:
    if saved is None:
        return None
    return {feature: {key: np.asarray(value, dtype=np.float64) for key, value in values.items()}
            for feature, values in saved.items()}
