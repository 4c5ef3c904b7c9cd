"""Model presets: `smolvla-shape` is SmolVLA at its real size, `tiny` its small sibling, both resolvable by name.

The real-size model is counted on the meta device (no memory, seconds) through the same
config and constructor the preset's cached build uses; bench/real_payload.py builds,
saves and reloads it for real.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from zk0.config import ConfigError, RunConfig
from zk0.policy.presets import (
    PRESETS,
    SMOLVLA_SHAPE,
    TINY,
    ModelError,
    ensure_preset_policy,
    preset_config,
    pretrained_path,
    seeded_policy,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# lerobot/smolvla_base's architecture, as measured on the real model.
SMOLVLA_PARAMS = 450_046_176
SMOLVLA_TRAINABLE = 99_880_992
SMOLVLA_TENSORS = 500


def counts(policy) -> tuple[int, int]:
    params = list(policy.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def test_smolvla_shape_has_smolvla_base_architecture(zk0_cache_dir: Path):
    """Built on the meta device from the preset's own config: smolvla_base's parameter counts, nothing allocated."""
    config = preset_config(SMOLVLA_SHAPE, zk0_cache_dir)
    assert (config.num_vlm_layers, config.expert_width_multiplier, config.chunk_size) == (16, 0.75, 50)
    backbone = json.loads((Path(config.vlm_model_name) / "config.json").read_text())
    assert backbone["text_config"]["num_hidden_layers"] == 32 and backbone["scale_factor"] == 4

    with torch.device("meta"):
        policy = seeded_policy(config)

    assert {p.device.type for p in policy.parameters()} == {"meta"}
    assert counts(policy) == (SMOLVLA_PARAMS, SMOLVLA_TRAINABLE)
    assert len(policy.state_dict()) == SMOLVLA_TENSORS


def test_meta_count_matches_the_saved_preset(zk0_cache_dir: Path):
    """The meta construction is the one the cache build runs: for `tiny`, the saved and reloaded model agrees."""
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    path = ensure_preset_policy(TINY, zk0_cache_dir)
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (path / name).is_file(), name
    loaded = SmolVLAPolicy.from_pretrained(path)
    with torch.device("meta"):
        counted = seeded_policy(preset_config(TINY, zk0_cache_dir))
    assert counts(loaded) == counts(counted)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in counted.state_dict().items()}


def test_preset_names_resolve(zk0_cache_dir: Path):
    """Every preset name is a valid `model`; `tiny` resolves to its cached pretrained directory."""
    with PYPROJECT.open("rb") as handle:
        defaults = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    assert {TINY, SMOLVLA_SHAPE} <= set(PRESETS)
    for name in PRESETS:
        assert RunConfig.from_run_config(defaults | {"model": name}).model == name
    with pytest.raises(ConfigError, match="use a preset .*smolvla-shape"):
        RunConfig.from_run_config(defaults | {"model": "smolvla_shape"})

    assert Path(pretrained_path(TINY)) == ensure_preset_policy(TINY, zk0_cache_dir)
    with pytest.raises(ModelError, match="does not exist"):
        preset_config("smolvla-tiny", zk0_cache_dir)
