"""What a node must remember between rounds of a run: the last global model it received
(the base of the next delta download), its error-feedback residual and, with run-config
`keep-optimizer-state`, its AdamW state; with `drift-correction = "scaffold"`, its control
variate (zk0.node.drift); with `personalize = "adapter"`, its personal LoRA adapter and that
adapter's AdamW state (zk0.node.personal), which only this node ever reads.

On disk, so that a fresh ClientApp process (deployment), another simulation worker or a
restarted node picks it up: `<zk0 cache>/node-state/run-<run key>-node-<node key>/`, written
atomically; memories of runs untouched for two days are removed. The run key is the server's
(it survives a resume, when Flower's run id changes), the node key the node's own config
(`node_key`: Flower's node ids change with a resumed simulation or a restarted SuperLink). The
last memory is also kept in this process, keyed by run and node, and used only while the disk
holds the same version: in simulation several processes serve the same node in turn, and a
copy another process has since replaced must never be trusted.

A training's residual, moments, variate and adapter stand once the attempt it answered made its round's model,
which the node learns from a later message (zk0.wire.protocol.Attempts). Until then the state
the training started from stays beside them (`before/`: hard links to files already written,
no bytes copied), and `settle` takes the training back when its round runs again (a retry, or
the same round after a resume) or another attempt made that round's model: a node then trains
from the state it would have held had that attempt never happened. (A node whose own reply
was late or rejected in the attempt that made the model keeps its training, as before.)
"""

from __future__ import annotations

import hashlib
import json
import os
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

    from zk0.wire.protocol import Attempts

STALE_SECONDS = 2 * 24 * 3600
RESIDUAL, OPTIMIZER, CONTROL, ADAPTER, ADAPTER_OPTIMIZER = (  # what a training changes
    "residual.safetensors", "optimizer.safetensors", "control.safetensors", "adapter.safetensors",
    "adapter-optimizer.safetensors")
BEFORE = "before"  # the state the last training started from


def node_key(node_config) -> str:
    """Who this node is across a run's resumes: its node config (the dataset in deployment, the
    partition in simulation; `threads` aside, which says how fast, not who), as a short digest."""
    items = sorted((str(key), str(value)) for key, value in dict(node_config).items() if key != "threads")
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


@dataclass
class NodeMemory:
    run_key: str
    node_key: str
    reference_round: int | None = None
    reference: dict[str, np.ndarray] | None = None
    feedback: ErrorFeedback = field(default_factory=ErrorFeedback)
    optimizer: dict[int, dict[str, "torch.Tensor"]] | None = None  # torch's optimizer state_dict()["state"]
    control: dict[str, np.ndarray] | None = None  # drift-correction = "scaffold": this node's c_i (zk0.node.drift)
    adapter: dict[str, np.ndarray] | None = None  # personalize = "adapter": peft's state dict (zk0.node.personal)
    adapter_optimizer: dict[int, dict[str, "torch.Tensor"]] | None = None  # its AdamW state, as `optimizer`
    trained: tuple[int, int, int] | None = None  # (round, start, attempt) of the training that left them
    version: str = ""  # changes with every save
    _start: Path | None = field(default=None, repr=False)  # the saved state this training starts from

    @classmethod
    def load(cls, run_key: str, node_key: str) -> "NodeMemory":
        key = (run_key, node_key)
        path = _saved(run_key, node_key)
        cached = _memory.get(key)
        if cached is not None and cached.version == _version(path):
            return cached
        _memory.clear()  # one node's memory per process at a time: bounded
        _memory[key] = _read(path, run_key, node_key)
        return _memory[key]

    def settle(self, server_round: int, attempts: "Attempts") -> None:
        """Before training `server_round`: the residual and moments the last training left stand
        if the attempt it answered made its round's model; else the state it started from comes back."""
        path = _saved(self.run_key, self.node_key)
        self._start = path
        if self.trained is None:
            return
        trained_round, start, attempt = self.trained
        if trained_round < server_round and attempts.made(trained_round) == (start, attempt):
            return
        self._start = path / BEFORE
        self.feedback, self.optimizer, self.control = ErrorFeedback(), None, None
        self.adapter, self.adapter_optimizer = None, None
        _read_training(self, self._start)

    def save(self) -> None:
        self.version = uuid.uuid4().hex
        _save(self)
        _memory.clear()
        _memory[(self.run_key, self.node_key)] = self


_memory: dict[tuple[str, str], NodeMemory] = {}


def _dir(run_key: str, node_key: str) -> Path:
    return cache_dir() / "node-state" / f"run-{run_key}-node-{node_key}"


def _saved(run_key: str, node_key: str) -> Path:
    """The saved memory's directory (the previous one if a crash interrupted a save)."""
    return atomic.surviving_dir(_dir(run_key, node_key))


def _version(path: Path) -> str:
    try:
        return json.loads((path / "state.json").read_text()).get("version", "")
    except (OSError, ValueError):
        return ""


def _save(state: NodeMemory) -> None:
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    target = _dir(state.run_key, state.node_key)
    target.parent.mkdir(parents=True, exist_ok=True)
    _purge_stale(target.parent)
    with atomic.replace_dir(target) as staging:
        if state.reference is not None:
            # Delta codecs keep references bf16-representable: bf16 on disk is exact. A full-codec
            # reference is kept only for drift correction, whose global update it must give exactly.
            codec = "fp32" if state.control is not None else "bf16"
            save_file(encode(state.reference, codec), str(staging / "reference.safetensors"))
        residual = state.feedback.state_dict()
        if residual:
            save_file(residual, str(staging / RESIDUAL))
        if state.control is not None:
            save_file(state.control, str(staging / CONTROL))
        if state.adapter is not None:
            save_file(state.adapter, str(staging / ADAPTER))
        for optimizer, name in ((state.optimizer, OPTIMIZER), (state.adapter_optimizer, ADAPTER_OPTIMIZER)):
            if optimizer:
                save_torch({f"{index}/{key}": value.detach().cpu().contiguous()
                            for index, entry in optimizer.items() for key, value in entry.items()}, str(staging / name))
        if state._start is not None:
            (staging / BEFORE).mkdir()
            for name in (RESIDUAL, OPTIMIZER, CONTROL, ADAPTER, ADAPTER_OPTIMIZER):
                if (state._start / name).is_file():
                    os.link(state._start / name, staging / BEFORE / name)  # the old directory goes, its files stay
        (staging / "state.json").write_text(json.dumps({"reference_round": state.reference_round,
                                                        "trained": state.trained, "version": state.version}))
    state._start = None


def _read(path: Path, run_key: str, node_key: str) -> NodeMemory:
    from safetensors.numpy import load_file

    state = NodeMemory(run_key, node_key)
    if not (path / "state.json").is_file():
        return state
    saved = json.loads((path / "state.json").read_text())
    state.reference_round, state.version = saved["reference_round"], saved.get("version", "")
    state.trained = tuple(saved["trained"]) if saved.get("trained") else None
    if (path / "reference.safetensors").is_file():
        state.reference = decode(load_file(str(path / "reference.safetensors")))
    _read_training(state, path)
    return state


def _read_training(state: NodeMemory, path: Path) -> None:
    """The residual, optimizer state, variate and adapter saved in `path` (none saved: none kept)."""
    from safetensors.numpy import load_file
    from safetensors.torch import load_file as load_torch

    if (path / RESIDUAL).is_file():
        state.feedback.load_state_dict(load_file(str(path / RESIDUAL)))
    if (path / CONTROL).is_file():
        state.control = load_file(str(path / CONTROL))
    if (path / ADAPTER).is_file():
        state.adapter = load_file(str(path / ADAPTER))
    if (path / OPTIMIZER).is_file():
        state.optimizer = _optimizer(load_torch(str(path / OPTIMIZER)))
    if (path / ADAPTER_OPTIMIZER).is_file():
        state.adapter_optimizer = _optimizer(load_torch(str(path / ADAPTER_OPTIMIZER)))


def _optimizer(saved: dict) -> dict[int, dict]:
    """torch's optimizer state ({parameter index: {key: tensor}}) from its flat `index/key` names."""
    state: dict[int, dict] = {}
    for name, value in saved.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    return state


def _purge_stale(root: Path) -> None:
    cutoff = time.time() - STALE_SECONDS
    for entry in root.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue
