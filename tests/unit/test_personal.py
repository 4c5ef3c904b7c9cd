"""Personalization (run-config `personalize`) and drift correction (`drift-correction`).

A personal model is made on its node and stays there: the test runs zk0's whole ServerApp over
zk0's ClientApp in this process (simulated nodes: their folders sit in the run directory), then
checks that the personal models load with LeRobot, that every evaluate reply carried numbers
only, and that none of the server's records holds a personal weight. With `personalize =
"adapter"` every train reply is the one the same run without personalization gets, to the bit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, MessageType, RecordDict
from safetensors.numpy import load_file

from test_aggregation import LocalGrid, pyproject_run_config
from zk0 import server_app
from zk0.client_app import app as zk0_client_app
from zk0.config import ConfigError, RunConfig
from zk0.node import drift
from zk0.node.personal import NODES, PERSONAL, PersonalError, personal_dir
from zk0.node.personal import adapter_steps as personal_adapter_steps
from zk0.run.directory import PRETRAINED, RunDir
from zk0.wire import transfer
from zk0.node.memory import ADAPTER, NodeMemory, node_key
from zk0.wire.protocol import EvaluateReport, NodeIdentity, ProtocolError, Scores, TrainInstructions, TrainReport


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingGrid(LocalGrid):
    """LocalGrid that keeps every train and evaluate reply's content, as it left the node, and
    the run key the train messages carry."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.evaluate_replies: list[RecordDict] = []
        self.train_replies: list[tuple[int, RecordDict]] = []  # (node, content), in delivery order
        self.run_key = ""

    def _deliver(self, message):
        reply = super()._deliver(message)
        # copies of the records: the server empties a reply's ArrayRecords once it has handled it
        content = RecordDict({key: type(record)(dict(record)) for key, record in reply.content.items()}
                             ) if reply.has_content() else None
        if message.metadata.message_type == MessageType.EVALUATE and content is not None:
            self.evaluate_replies.append(content)
        if message.metadata.message_type == MessageType.TRAIN and content is not None:
            self.run_key = TrainInstructions.from_content(message.content).run_key
            self.train_replies.append((message.metadata.dst_node_id, content))
        return reply


def federate(out: Path, demo_roots, **overrides) -> tuple[RunDir, RecordingGrid]:
    """zk0's server over two simulated tiny nodes (node config: partition-id, as Flower's simulation gives)."""
    config = pyproject_run_config(
        model="tiny", datasets=",".join(f"local:{root}" for root in demo_roots[:2]),
        eval_dataset=f"local:{demo_roots[-1]}", num_rounds=2, local_steps=2, batch_size=2,
        eval_batches=1, num_workers=0, device="cpu", node_wait_timeout=5.0, output_dir=str(out),
        update_codec="q3z", min_train_clients=2, min_evaluate_clients=2, min_available_clients=2,
    ) | {key.replace("_", "-"): value for key, value in overrides.items()}
    grid = RecordingGrid(zk0_client_app, {9100 + i: {"partition-id": i, "num-partitions": 2} for i in range(2)}, config)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    return RunDir(next(path for path in out.iterdir() if RunDir(path).is_run())), grid


@pytest.fixture(scope="module")
def personalized(tmp_path_factory, demo_roots, zk0_cache_dir):
    return federate(tmp_path_factory.mktemp("personal"), demo_roots, personalize="finetune", personal_steps=3)


def test_each_node_keeps_a_personal_lerobot_checkpoint_and_reports_its_score(personalized):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    run, _ = personalized
    final = run.read_metrics()[-1]
    assert len(final["client_eval"]) == 2
    for metrics in final["client_eval"].values():
        assert metrics["personal/num-examples"] == metrics["num-examples"] == 2
        assert metrics["personal/eval/action_mse"] != metrics["eval/action_mse"]  # another model, same episodes
    assert final["personal_eval/action_mse"] > 0
    for i in range(2):
        folder = run.path / NODES / f"client_{i}" / PERSONAL
        record = json.loads((folder / "zk0_personal.json").read_text())
        assert record["steps"] == 3 and record["heldout"]["eval/action_mse"] > 0
        policy = SmolVLAPolicy.from_pretrained(folder / PRETRAINED)
        assert sum(p.numel() for p in policy.parameters()) > 0
        assert (folder / PRETRAINED / "policy_preprocessor.json").is_file()


def test_nothing_personal_reaches_the_server(personalized):
    """Every evaluate reply holds a metrics record and the node's labels, no array; no tensor of
    the server's records (checkpoints, state) equals a personal model's trained tensors, and no
    record names the personal files."""
    run, grid = personalized
    assert len(grid.evaluate_replies) == 2
    for content in grid.evaluate_replies:
        assert not content.array_records
        assert set(content.metric_records) == {"metrics"} and set(content.config_records) == {"node"}
        report = EvaluateReport.from_content(content)
        assert report.personal is not None and report.personal.action_mse > 0

    server_files = [path for path in run.path.rglob("*") if path.is_file() and NODES not in path.relative_to(run.path).parts]
    server_tensors = [tensor for path in server_files if path.suffix == ".safetensors"
                      for tensor in load_file(str(path)).values()]
    assert server_tensors  # the checkpoints and the run state are there to be searched
    global_weights = load_file(str(run.checkpoint(2) / PRETRAINED / "model.safetensors"))
    for i in range(2):
        personal = load_file(str(run.path / NODES / f"client_{i}" / PERSONAL / PRETRAINED / "model.safetensors"))
        changed = {name: value for name, value in personal.items() if not np.array_equal(value, global_weights[name])}
        assert changed  # fine-tuning moved the trainable weights
        for value in changed.values():
            assert not any(t.shape == value.shape and np.array_equal(t, value) for t in server_tensors)
    for path in server_files:
        if path.suffix in (".json", ".jsonl", ".log", ".toml"):
            assert f"{NODES}/client_" not in path.read_text(errors="replace"), path


def test_personalize_needs_the_final_evaluation():
    with pytest.raises(ConfigError, match="personalize"):
        RunConfig.from_run_config(pyproject_run_config(personalize="finetune", fraction_evaluate=0.0))
    with pytest.raises(ConfigError, match="personalize"):
        RunConfig.from_run_config(pyproject_run_config(personalize="ditto"))
    with pytest.raises(ConfigError, match="drift-correction"):
        RunConfig.from_run_config(pyproject_run_config(drift_correction="feddyn"))
    # SCAFFOLD reads the mean update off the global model's change: a server step would feed back
    for step in ({"aggregation": "fedavgm", "server_lr": 2.0, "server_momentum": 0.0},
                 {"aggregation": "fedmedian"}, {"aggregation": "fedadam", "server_lr": 1e-3}):
        with pytest.raises(ConfigError, match="plain average"):
            RunConfig.from_run_config(pyproject_run_config(drift_correction="scaffold", **step))
    RunConfig.from_run_config(pyproject_run_config(drift_correction="scaffold", aggregation="fedavgm",
                                                   server_lr=1.0, server_momentum=0.0))


def test_personal_dir_simulation_deployment_and_hostile_names(tmp_path, monkeypatch):
    run = str(tmp_path / "20261206-050503")
    assert personal_dir({"partition-id": 1}, run, "k") == tmp_path / "20261206-050503" / NODES / "client_1" / PERSONAL
    monkeypatch.setenv("ZK0_HOME", str(tmp_path / "home"))
    assert personal_dir({"dataset-uri": "hf:a/b"}, "/srv/outputs/20261206-050503", "k") == (
        tmp_path / "home" / PERSONAL / "20261206-050503" / "k" / PERSONAL)
    mine = {"dataset-uri": "hf:a/b", "personal-dir": str(tmp_path / "mine")}
    assert personal_dir(mine, "/x/run-1", "k") == tmp_path / "mine" / "run-1" / "k" / PERSONAL
    for name in ("", "/srv/..", "/srv/.hidden", "/srv/a b"):
        with pytest.raises(PersonalError):
            personal_dir({"dataset-uri": "hf:a/b"}, name, "k")
    with pytest.raises(PersonalError, match="absolute"):
        personal_dir({"partition-id": 0}, "relative/run-1", "k")


def test_an_evaluate_reply_with_arrays_or_a_broken_personal_score_is_refused():
    from flwr.app import Array, ArrayRecord

    identity = NodeIdentity("local:/d")
    good = EvaluateReport(Scores(8, 0.5, 10.0), identity, {}, personal=Scores(8, 0.4, 9.0)).to_content()
    assert EvaluateReport.from_content(good).personal == Scores(8, 0.4, 9.0)
    with_arrays = EvaluateReport(Scores(8, 0.5, 10.0), identity).to_content()
    with_arrays["arrays"] = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    with pytest.raises(ProtocolError, match="unexpected ArrayRecord"):
        EvaluateReport.from_content(with_arrays)
    broken = EvaluateReport(Scores(8, 0.5, 10.0), identity, {}, personal=Scores(8, 0.4, 9.0)).to_content()
    del broken["metrics"]["personal/eval/loss"]
    with pytest.raises(ProtocolError):
        EvaluateReport.from_content(broken)
    fractional = EvaluateReport(Scores(8, 0.5, 10.0), identity, {}, personal=Scores(8, 0.4, 9.0)).to_content()
    fractional["metrics"]["personal/num-examples"] = 0.5
    with pytest.raises(ProtocolError, match="num-examples"):
        EvaluateReport.from_content(fractional)


def test_scaffold_corrects_by_the_federation_direction_minus_the_own():
    received = {"w": np.array([1.0, 1.0], np.float32)}
    previous = {"w": np.array([0.0, 1.0], np.float32)}
    own = {"w": np.array([0.5, -0.5], np.float32)}
    # the global model moved by (1, 0); this node last moved by (0.5, -0.5)
    assert np.allclose(drift.correction(own, previous, 4, 5, received)["w"], [0.5, 0.5])
    assert drift.correction(own, previous, 3, 5, received) is None  # it missed round 4
    assert drift.correction(None, previous, 4, 5, received) is None  # no own variate yet
    trained = {"w": np.array([2.0, 2.0], np.float32)}
    assert np.allclose(drift.own_update(trained, received, {"w": np.array([0.5, 0.5])})["w"], [0.5, 0.5])
    assert np.allclose(drift.own_update(trained, received, None)["w"], [1.0, 1.0])


def test_scaffold_runs_through_the_federation(tmp_path, demo_roots, zk0_cache_dir):
    """Both nodes keep their variate in node memory and the run's rounds all aggregate."""
    run, _ = federate(tmp_path, demo_roots, drift_correction="scaffold", num_rounds=3, fraction_evaluate=0.0)
    rows = run.read_metrics()
    assert [len(row["clients"]) for row in rows] == [0, 2, 2, 2]
    assert all(np.isfinite(row["eval/action_mse"]) for row in rows)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, demo_roots, zk0_cache_dir):
    return federate(tmp_path_factory.mktemp("plain"), demo_roots)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, demo_roots, zk0_cache_dir):
    # 2 rounds, 4 personal steps: 2 adapter steps per round; lr 1e-2 so that B moves visibly off zero.
    return federate(tmp_path_factory.mktemp("adapter"), demo_roots, personalize="adapter", personal_steps=4,
                    personal_lr=1e-2, lora_rank=4, lora_alpha=4.0)


def _timeless(metrics) -> dict:
    return {key: value for key, value in metrics.items() if "second" not in key}


def test_adapter_train_replies_are_the_ones_without_personalization(plain, adapted):
    """Same seed, same data: every train reply (update bytes, counts, scores of the received
    model, labels) is what the run with personalize = "none" got; only timings differ."""
    (_, without), (_, with_adapter) = plain, adapted
    assert len(with_adapter.train_replies) == len(without.train_replies) == 4  # 2 rounds x 2 nodes
    for (node, content), (other_node, other) in zip(with_adapter.train_replies, without.train_replies, strict=True):
        assert node == other_node
        assert set(content.array_records) == set(other.array_records) == {"arrays"}
        mine, theirs = TrainReport.from_content(content), TrainReport.from_content(other)
        assert mine.update.keys() == theirs.update.keys()
        for name, value in mine.update.items():
            assert value.dtype == theirs.update[name].dtype and value.tobytes() == theirs.update[name].tobytes(), name
        assert _timeless(content["metrics"]) == _timeless(other["metrics"])
        assert dict(content.config_records) == dict(other.config_records)


def test_the_adapter_persists_in_node_memory_under_the_run_key(adapted, zk0_cache_dir):
    from zk0.node import memory

    _, grid = adapted
    memory._memory.clear()  # what a fresh process finds on disk
    for node, context in grid.contexts.items():
        mine = NodeMemory.load(grid.run_key, node_key(context.node_config))
        kept = mine.adapter
        assert kept and all(".lora_A." in name or ".lora_B." in name for name in kept)
        assert any(".lora_B." in name and np.any(value != 0) for name, value in kept.items())  # trained off B = 0
        # one AdamW over the rounds: 2 rounds x 2 steps, for every adapter tensor (A and B)
        assert len(mine.adapter_optimizer) == len(kept)
        assert all(int(entry["step"]) == 4 for entry in mine.adapter_optimizer.values())
        assert NodeMemory.load("another-run", node_key(context.node_config)).adapter is None


def test_the_adapter_personal_model_loads_and_is_the_global_model_with_the_adapter_merged(adapted):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    run, _ = adapted
    final = run.read_metrics()[-1]
    assert len(final["client_eval"]) == 2
    for metrics in final["client_eval"].values():
        assert metrics["personal/num-examples"] == metrics["num-examples"] == 2
        assert metrics["personal/eval/action_mse"] != metrics["eval/action_mse"]
    global_weights = load_file(str(run.checkpoint(2) / PRETRAINED / "model.safetensors"))
    received = transfer.bf16_round(global_weights)
    # LeRobot's default targets: the expert's q/v projections and the state/action/time projections
    projections = ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out")
    targets = {name for name in global_weights if name.endswith(".weight") and (
        re.fullmatch(r"model\.vlm_with_expert\.lm_expert\.layers\.\d+\.self_attn\.[qv]_proj\.weight", name)
        or name in {f"model.{projection}.weight" for projection in projections})}
    assert len(targets) > len(projections)
    for i in range(2):
        folder = run.path / NODES / f"client_{i}" / PERSONAL
        record = json.loads((folder / "zk0_personal.json").read_text())
        assert record["personalize"] == "adapter" and record["merged"] and record["steps_per_round"] == 2
        assert not (folder / "adapter").exists()  # merged: a plain SmolVLA checkpoint
        policy = SmolVLAPolicy.from_pretrained(folder / PRETRAINED)
        assert not getattr(policy.config, "use_peft", False)
        personal = load_file(str(folder / PRETRAINED / "model.safetensors"))
        assert personal.keys() == global_weights.keys()
        # the node received the final model's trainable weights as bf16 (the evaluate message's codec)
        changed = {name for name, value in personal.items()
                   if not (np.array_equal(value, global_weights[name]) or np.array_equal(value, received[name]))}
        assert changed == targets


def test_no_adapter_reaches_the_server(adapted, zk0_cache_dir):
    run, grid = adapted
    for content in grid.evaluate_replies:
        assert not content.array_records
    for _, content in grid.train_replies:
        update = TrainReport.from_content(content).update
        assert update and not any("lora" in name for name in update)
    server_tensors = [tensor for path in run.path.rglob("*.safetensors") if NODES not in path.relative_to(run.path).parts
                      for tensor in load_file(str(path)).values()]
    kept = [tensor for path in zk0_cache_dir.glob(f"node-state/run-{grid.run_key}-node-*/{ADAPTER}")
            for tensor in load_file(str(path)).values()]
    assert len(kept) > 0 and server_tensors
    for value in kept:
        assert not any(t.shape == value.shape and np.array_equal(t, value) for t in server_tensors)


def test_adapter_refuses_lora_training_and_needs_the_final_evaluation():
    with pytest.raises(ConfigError, match="personalize.*trainable='expert'"):
        RunConfig.from_run_config(pyproject_run_config(personalize="adapter", trainable="lora"))
    with pytest.raises(ConfigError, match="fraction-evaluate"):
        RunConfig.from_run_config(pyproject_run_config(personalize="adapter", fraction_evaluate=0.0))
    config = RunConfig.from_run_config(pyproject_run_config(personalize="adapter", personal_steps=100, num_rounds=12))
    assert personal_adapter_steps(config) == 9  # ceil(100 / 12): at least the personal steps asked for
