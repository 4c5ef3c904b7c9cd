"""Reproducible runs: the same run config and seed give the same metrics and bitwise the same
weights, on the same machine.

In-process: local training is a function of (weights, data, seed) alone, whatever the
process did before. End to end, through `train-fl-simulation.sh`: the tiny federation run for
two rounds, and the same seed run for one round at another path then resumed for the second
(another simulation: another Flower run id, other node ids), leave identical metrics.jsonl rows
(timings and Flower's random node ids aside) and bitwise identical checkpoints of every round.
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_simulation_e2e import run_simulation
from zk0.data.dataset import infinite_batches
from zk0.policy.train import train_local

ROUNDS = 2
# Per-run measurements: they differ between identical runs by nature.
TIMING_KEYS = {"seconds", "startup-seconds", "train/samples-per-second"}


def trained_weights(policy, preprocessor, dataset, seed: int, num_workers: int) -> list[torch.Tensor]:
    policy = copy.deepcopy(policy)
    batches = infinite_batches(dataset, batch_size=2, num_workers=num_workers, seed=seed)
    train_local(policy, preprocessor, batches, steps=3, lr=1e-3, proximal_mu=0.01, desc="test")
    return [p.detach().clone() for p in policy.parameters() if p.requires_grad]


def disturb_global_generators() -> None:
    """What serving other nodes leaves behind in a process: generators somewhere else."""
    random.random()
    np.random.rand(7)
    torch.rand(13)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_local_training_depends_only_on_its_seed(num_workers, tiny_policy, processors, eval_split):
    """Two local rounds with the same seed give bitwise the same weights even when the
    process's global generators were used in between (SmolVLA draws its flow-matching noise
    and time from torch's), with or without DataLoader workers; another seed gives other weights."""
    preprocessor, _ = processors
    first = trained_weights(tiny_policy, preprocessor, eval_split, seed=5, num_workers=num_workers)
    disturb_global_generators()
    again = trained_weights(tiny_policy, preprocessor, eval_split, seed=5, num_workers=num_workers)
    other = trained_weights(tiny_policy, preprocessor, eval_split, seed=6, num_workers=num_workers)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def comparable(row: dict) -> dict:
    """A metrics.jsonl row without timings, per-client maps keyed by dataset instead of node id."""
    def by_dataset(per_node: dict) -> dict:
        return {re.sub(r"^node \d+ claiming ", "", name): strip(value) for name, value in per_node.items()}

    def strip(value):
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in TIMING_KEYS and not k.endswith("/seconds")}
        return value

    out = strip(row)
    for key in ("clients", "received_eval", "client_eval", "bytes_down", "bytes_up"):
        out[key] = by_dataset(row[key])
    return out


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    """The script's working directory: its demo data, at one path for every run here."""
    return tmp_path_factory.mktemp("zk0-sim")


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, sim_dir) -> Path:
    """The tiny federation (2 clients, 2 rounds, default seed)."""
    work = tmp_path_factory.mktemp("uninterrupted")
    output_dir = work / "outputs"
    run = run_simulation(["--tiny", "--rounds", str(ROUNDS), "--output-dir", str(output_dir)],
                         sim_dir, work / "sim.log", timeout=600)
    assert run.returncode == 0, run.output[-4000:]
    [run_dir] = output_dir.iterdir()
    return run_dir


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bytes: bitwise equality, -0.0 and NaN payloads included."""
    return tensor.contiguous().view(-1).view(torch.uint8)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, sim_dir) -> Path:
    """The tiny federation run for 1 round, then resumed to ROUNDS with `resume-from` (the tiny
    preset's constant learning rate does not depend on num-rounds)."""
    work = tmp_path_factory.mktemp("resumed")
    output_dir = work / "outputs"
    first = run_simulation(["--tiny", "--rounds", "1", "--output-dir", str(output_dir)], sim_dir,
                           work / "first.log", timeout=600)
    assert first.returncode == 0, first.output[-4000:]
    [run_dir] = output_dir.iterdir()
    resumed = run_simulation(["--tiny", "--rounds", str(ROUNDS), "--output-dir", str(output_dir),
                              "--run-config", f"resume-from='{run_dir}'"], sim_dir, work / "resumed.log", timeout=600)
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert list(output_dir.iterdir()) == [run_dir]
    return run_dir


def test_the_same_seed_gives_the_same_run_even_when_resumed(uninterrupted_run, resumed_run):
    """Round by round the same metrics (floats included; timings, node ids, the 1-round run's final
    client evaluation and the bytes of whole downloads aside), bitwise the same checkpoint of every
    round (the first written by the 1-round run, at another path), and participation counts both
    rounds."""
    def computed(row: dict) -> dict:
        return {key: value for key, value in comparable(row).items()
                if key not in ("client_eval", "client_eval/action_mse", "bytes_down", "bytes_up")}

    rows = [[json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            for run_dir in (uninterrupted_run, resumed_run)]
    assert [row["round"] for row in rows[0]] == list(range(ROUNDS + 1))
    assert rows[0][1]["train/loss"] != rows[0][2]["train/loss"]  # the rounds really trained
    assert [computed(row) for row in rows[0]] == [computed(row) for row in rows[1]]
    assert comparable(rows[0][-1])["client_eval"] == comparable(rows[1][-1])["client_eval"]
    for server_round in range(1, ROUNDS + 1):
        first, second = (
            load_file(run_dir / "checkpoints" / f"{server_round:06d}" / "pretrained_model" / "model.safetensors")
            for run_dir in (uninterrupted_run, resumed_run)
        )
        assert first.keys() == second.keys()
        for name, tensor in first.items():
            other = second[name]
            assert tensor.dtype == other.dtype and tensor.shape == other.shape, name
            assert torch.equal(as_bytes(tensor), as_bytes(other)), name
    participation = json.loads((resumed_run / "participation.json").read_text())
    assert sum(counts["accepted"] for counts in participation.values()) == 2 * ROUNDS
