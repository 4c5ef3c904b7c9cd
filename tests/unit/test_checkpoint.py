"""Checkpoints: LeRobot's own loaders read them back, and a crash never leaves a valid-looking partial one.

Layout under test (as `lerobot-train` writes it):
    checkpoints/000001/pretrained_model/   config, weights and both processor pipelines
    checkpoints/last -> 000001             relative links, swapped atomically
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from lerobot.processor import PolicyProcessorPipeline

from zk0.util.atomic import point_link
from zk0.run.checkpoint import save_checkpoint
from zk0.data.dataset import fixed_batches
from zk0.run.directory import PRETRAINED, RunDir

METRICS = {"eval/action_mse": 12.5, "eval/loss": 0.75}


class CrashingProcessor:
    """Stands in for a postprocessor whose save dies midway (disk full, process killed)."""

    def save_pretrained(self, path: Path) -> None:
        raise OSError("No space left on device")


def complete_checkpoints(checkpoints: Path) -> list[str]:
    """What a reader scanning for checkpoints would consider: six-digit round directories."""
    return sorted(p.name for p in checkpoints.iterdir() if re.fullmatch(r"\d{6}", p.name) and p.is_dir())


def raw_batch(eval_split) -> dict:
    return next(iter(fixed_batches(eval_split, batch_size=2, num_workers=0, max_batches=1)))


@pytest.fixture
def saved(tmp_path, tiny_policy, processors) -> Path:
    """A checkpoint of the tiny policy for round 1 in a fresh checkpoints directory."""
    preprocessor, postprocessor = processors
    return save_checkpoint(RunDir(tmp_path), 1, tiny_policy, preprocessor, postprocessor, METRICS)


def test_layout_matches_lerobot_train(saved):
    """Round 1 lands in 000001/pretrained_model with LeRobot's file names, plus zk0's round record."""
    model_dir = saved / PRETRAINED
    assert saved.name == "000001"
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (model_dir / name).is_file(), name
    assert json.loads((saved / "zk0_round.json").read_text()) == {"round": 1, **METRICS}


def test_policy_round_trips_through_lerobots_loader(saved, tiny_policy):
    """`SmolVLAPolicy.from_pretrained` restores every weight and the dataset-derived features."""
    loaded = SmolVLAPolicy.from_pretrained(saved / PRETRAINED)
    expected = tiny_policy.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    assert loaded.config.input_features == tiny_policy.config.input_features
    assert loaded.config.output_features == tiny_policy.config.output_features


def test_processors_round_trip_through_lerobots_loader(saved, tiny_policy, processors, eval_split):
    """LeRobot's processor loading restores the normalization: same inputs, same outputs."""
    preprocessor, postprocessor = processors
    model_dir = saved / PRETRAINED
    loaded_pre, loaded_post = make_pre_post_processors(tiny_policy.config, pretrained_path=str(model_dir))
    direct_pre = PolicyProcessorPipeline.from_pretrained(model_dir, config_filename="policy_preprocessor.json")
    assert [type(step) for step in direct_pre.steps] == [type(step) for step in preprocessor.steps]

    expected, actual = preprocessor(raw_batch(eval_split)), loaded_pre(raw_batch(eval_split))
    for key in ("observation.state", "action", "observation.language.tokens"):
        assert torch.equal(actual[key], expected[key]), key

    chunk = torch.randn(2, tiny_policy.config.chunk_size, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded_post(chunk.clone()), postprocessor(chunk.clone()))


def test_last_link_is_relative_and_follows_the_newest_round(saved, tiny_policy, processors):
    """`last` is a relative symlink (the run directory can move) that each save re-points."""
    checkpoints = saved.parent
    assert os.readlink(checkpoints / "last") == "000001"
    save_checkpoint(RunDir(checkpoints.parent), 2, tiny_policy, *processors, METRICS)
    assert os.readlink(checkpoints / "last") == "000002"
    assert (checkpoints / "last" / PRETRAINED / "model.safetensors").is_file()
    assert complete_checkpoints(checkpoints) == ["000001", "000002"]


def test_crash_during_save_leaves_only_a_hidden_partial(saved, tiny_policy, processors):
    """A save that dies midway leaves `.000002.partial`, which no reader takes for a checkpoint;
    `last` still points at the complete round 1, which still loads."""
    checkpoints = saved.parent
    preprocessor, _ = processors
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(RunDir(checkpoints.parent), 2, tiny_policy, preprocessor, CrashingProcessor(), METRICS)

    assert (checkpoints / ".000002.partial").is_dir()
    assert not (checkpoints / "000002").exists()
    assert complete_checkpoints(checkpoints) == ["000001"]
    assert os.readlink(checkpoints / "last") == "000001"
    SmolVLAPolicy.from_pretrained(checkpoints / "last" / PRETRAINED)


def test_next_save_replaces_a_leftover_partial(saved, tiny_policy, processors):
    """Retrying the round after a crash clears its staging directory and completes normally."""
    checkpoints = saved.parent
    (checkpoints / ".000002.partial" / PRETRAINED).mkdir(parents=True)
    (checkpoints / ".000002.partial" / PRETRAINED / "config.json").write_text("{}")
    save_checkpoint(RunDir(checkpoints.parent), 2, tiny_policy, *processors, METRICS)
    assert not (checkpoints / ".000002.partial").exists()
    assert complete_checkpoints(checkpoints) == ["000001", "000002"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["000001", "000002", "last"]


def test_best_link_swaps_atomically(saved, tiny_policy, processors):
    """`point_link` replaces a link in one rename, even over a stale temporary link left by a crash."""
    checkpoints = saved.parent
    save_checkpoint(RunDir(checkpoints.parent), 2, tiny_policy, *processors, METRICS)
    point_link(checkpoints / "best", "000001")
    (checkpoints / ".best.partial").symlink_to("000002")
    point_link(checkpoints / "best", "000002")
    assert os.readlink(checkpoints / "best") == "000002"
    assert not (checkpoints / ".best.partial").is_symlink()
    assert (checkpoints / "best" / PRETRAINED / "config.json").is_file()
