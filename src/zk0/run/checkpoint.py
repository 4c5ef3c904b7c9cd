"""LeRobot-compatible checkpoints, written atomically.

Layout (as `lerobot-train` writes it; names from zk0.run.directory):
    checkpoints/000005/pretrained_model/{config.json, model.safetensors, policy_*processor*.json, ...}
    checkpoints/000005/adapter/{adapter_config.json, adapter_model.safetensors, config.json, ...}
                                  (LoRA runs: the adapter as `lerobot-train --peft...` saves it;
                                  pretrained_model then holds the merged policy)
    checkpoints/000005/zk0_round.json
    checkpoints/last -> 000005      checkpoints/best -> 000003
A checkpoint is assembled in a hidden staging directory and renamed into place, and
the links are swapped with a rename too, so a crash never leaves a partial checkpoint
behind a valid-looking name.
"""

from __future__ import annotations

import json
from pathlib import Path

from zk0.util.atomic import point_link, replace_dir
from zk0.policy.lora import is_lora, merged, save_adapter
from zk0.run.directory import PRETRAINED, ROUND_RECORD, RunDir

ADAPTER = "adapter"


def save_checkpoint(run: RunDir, server_round: int, policy, preprocessor, postprocessor, metrics: dict) -> Path:
    """Round `server_round`'s checkpoint in `run`, which `last` then points at; returns its directory."""
    final = run.checkpoint(server_round)
    with replace_dir(final) as staging:
        write_model(staging, policy, preprocessor, postprocessor)
        (staging / ROUND_RECORD).write_text(json.dumps({"round": server_round, **metrics}, indent=2))
    point_link(run.link("last"), final.name)
    return final


def write_model(directory: Path, policy, preprocessor, postprocessor) -> Path:
    """`directory`/pretrained_model (and, for LoRA, `directory`/adapter) as lerobot-train writes
    them: what `SmolVLAPolicy.from_pretrained` and `make_pre_post_processors` load. Returns the
    pretrained_model directory."""
    model_dir = directory / PRETRAINED
    if is_lora(policy):
        save_adapter(policy, directory / ADAPTER)
        _save_processors(directory / ADAPTER, preprocessor, postprocessor)
        merged(policy).save_pretrained(model_dir)
    else:
        policy.save_pretrained(model_dir)
    _save_processors(model_dir, preprocessor, postprocessor)
    return model_dir


def _save_processors(directory: Path, preprocessor, postprocessor) -> None:
    preprocessor.save_pretrained(directory)
    postprocessor.save_pretrained(directory)
