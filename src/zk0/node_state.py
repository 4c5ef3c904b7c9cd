"""What a node must remember between rounds of a run: the last global model it received
(the base of the next delta download) and its error-feedback residual.

Kept in memory for the next message of this process, and on disk so that a fresh
ClientApp process (deployment), another simulation worker or a restarted node picks it
up: `<zk0 cache>/node-state/run-<run id>-node-<node id>/`, written atomically.
States of runs untouched for two days are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zk0.codec import ErrorFeedback, decode, encode
from zk0.paths import cache_dir

STALE_SECONDS = 2 * 24 * 3600


@dataclass
class NodeState:
    reference_round: int | None = None
    reference: dict[str, np.ndarray] | None = None
    feedback: ErrorFeedback = field(default_factory=ErrorFeedback)


_memory: dict[tuple[int, int], NodeState] = {}


def _dir(run_id: int, node_id: int) -> Path:
    return cache_dir() / "node-state" / f"run-{run_id}-node-{node_id}"


def load(run_id: int, node_id: int) -> NodeState:
    key = (run_id, node_id)
    if key not in _memory:
        _memory.clear()  # one node's state per process at a time: bounded memory
        _memory[key] = _read(_dir(run_id, node_id))
    return _memory[key]


def save(run_id: int, node_id: int, state: NodeState) -> None:
    from safetensors.numpy import save_file

    _memory.clear()
    _memory[(run_id, node_id)] = state
    target = _dir(run_id, node_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    _purge_stale(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if state.reference is not None:
            # Delta codecs keep references bf16-representable: bf16 on disk is exact.
            save_file(encode(state.reference, "bf16"), str(staging / "reference.safetensors"))
        residual = state.feedback.state_dict()
        if residual:
            save_file(residual, str(staging / "residual.safetensors"))
        (staging / "state.json").write_text(json.dumps({"reference_round": state.reference_round}))
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read(path: Path) -> NodeState:
    from safetensors.numpy import load_file

    state = NodeState()
    if not (path / "state.json").is_file():
        return state
    state.reference_round = json.loads((path / "state.json").read_text())["reference_round"]
    if (path / "reference.safetensors").is_file():
        state.reference = decode(load_file(str(path / "reference.safetensors")))
    if (path / "residual.safetensors").is_file():
        state.feedback.load_state_dict(load_file(str(path / "residual.safetensors")))
    return state


def _purge_stale(root: Path) -> None:
    cutoff = time.time() - STALE_SECONDS
    for entry in root.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue
