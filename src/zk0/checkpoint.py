"""LeRobot-compatible checkpoints, written atomically.

Layout (as `lerobot-train` writes it):
    checkpoints/000005/pretrained_model/{config.json, model.safetensors, policy_*processor*.json, ...}
    checkpoints/last -> 000005      checkpoints/best -> 000003
A checkpoint is assembled in a hidden staging directory and renamed into place, and
the links are swapped with a rename too, so a crash never leaves a partial checkpoint
behind a valid-looking name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

PRETRAINED = "pretrained_model"


def save_checkpoint(checkpoints: Path, server_round: int, policy, preprocessor, postprocessor, metrics: dict) -> Path:
    name = f"{server_round:06d}"
    final = checkpoints / name
    staging = checkpoints / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model_dir = staging / PRETRAINED
    policy.save_pretrained(model_dir)
    preprocessor.save_pretrained(model_dir)
    postprocessor.save_pretrained(model_dir)
    (staging / "zk0_round.json").write_text(json.dumps({"round": server_round, **metrics}, indent=2))
    _fsync_tree(staging)
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    point_link(checkpoints / "last", name)
    return final


def point_link(link: Path, target: str) -> None:
    """Make `link` a relative symlink to `target`, atomically."""
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
