"""What a node must remember between rounds of a run: the last global model it received
(the base of the next delta download), its error-feedback residual and, with run-config
`keep-optimizer-state`, its AdamW state.

On disk, so that a fresh ClientApp process (deployment), another simulation worker or a
restarted node picks it up: `<zk0 cache>/node-state/run-<run id>-node-<node id>/`, written
atomically; memories of runs untouched for two days are removed. The last one is also kept
in this process, keyed by run and node, and used only while the disk holds the same
version: in simulation several processes serve the same node in turn, and a copy another
process has since replaced must never be trusted.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zk0.util import atomic
from zk0.wire.codec import ErrorFeedback, decode, encode
from zk0.util.paths import cache_dir

if TYPE_CHECKING:
    import torch

STALE_SECONDS = 2 * 24 * 3600


@dataclass
class NodeMemory:
    run_id: int
    node_id: int
    reference_round: int | None = None
    reference: dict[str, np.ndarray] | None = None
    feedback: ErrorFeedback = field(default_factory=ErrorFeedback)
    optimizer: dict[int, dict[str, "torch.Tensor"]] | None = None  # torch's optimizer state_dict()["state"]
    version: str = ""  # changes with every save

    @classmethod
    def load(cls, run_id: int, node_id: int) -> "NodeMemory":
        key = (run_id, node_id)
        path = _saved(run_id, node_id)
        cached = _memory.get(key)
        if cached is not None and cached.version == _version(path):
            return cached
        _memory.clear()  # one node's memory per process at a time: bounded
        _memory[key] = _read(path, run_id, node_id)
        return _memory[key]

    def save(self) -> None:
        self.version = uuid.uuid4().hex
        _save(self)
        _memory.clear()
        _memory[(self.run_id, self.node_id)] = self


_memory: dict[tuple[int, int], NodeMemory] = {}


def _dir(run_id: int, node_id: int) -> Path:
    return cache_dir() / "node-state" / f"run-{run_id}-node-{node_id}"


def _saved(run_id: int, node_id: int) -> Path:
    """The saved memory's directory (the previous one if a crash interrupted a save)."""
    return atomic.surviving_dir(_dir(run_id, node_id))


def _version(path: Path) -> str:
    try:
        return json.loads((path / "state.json").read_text()).get("version", "")
    except (OSError, ValueError):
        return ""


def _save(state: NodeMemory) -> None:
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    target = _dir(state.run_id, state.node_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    _purge_stale(target.parent)
    with atomic.replace_dir(target) as staging:
        if state.reference is not None:
            # Delta codecs keep references bf16-representable: bf16 on disk is exact.
            save_file(encode(state.reference, "bf16"), str(staging / "reference.safetensors"))
        residual = state.feedback.state_dict()
        if residual:
            save_file(residual, str(staging / "residual.safetensors"))
        if state.optimizer:
            save_torch({f"{index}/{key}": value.detach().cpu().contiguous()
                        for index, entry in state.optimizer.items() for key, value in entry.items()},
                       str(staging / "optimizer.safetensors"))
        (staging / "state.json").write_text(json.dumps({"reference_round": state.reference_round, "version": state.version}))


def _read(path: Path, run_id: int, node_id: int) -> NodeMemory:
    from safetensors.numpy import load_file
    from safetensors.torch import load_file as load_torch

    state = NodeMemory(run_id, node_id)
    if not (path / "state.json").is_file():
        return state
    saved = json.loads((path / "state.json").read_text())
    state.reference_round, state.version = saved["reference_round"], saved.get("version", "")
    if (path / "reference.safetensors").is_file():
        state.reference = decode(load_file(str(path / "reference.safetensors")))
    if (path / "residual.safetensors").is_file():
        state.feedback.load_state_dict(load_file(str(path / "residual.safetensors")))
    if (path / "optimizer.safetensors").is_file():
        state.optimizer = {}
        for name, value in load_torch(str(path / "optimizer.safetensors")).items():
            index, key = name.split("/", 1)
            state.optimizer.setdefault(int(index), {})[key] = value
    return state


def _purge_stale(root: Path) -> None:
    cutoff = time.time() - STALE_SECONDS
    for entry in root.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue
