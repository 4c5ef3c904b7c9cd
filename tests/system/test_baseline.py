"""`zk0 baseline`: a finished federated run's centralized twin, trained by LeRobot's own `lerobot-train`.

The federated run here is written by hand (no Flower): run_config.json, metrics.jsonl and a
real zk0 checkpoint of the tiny policy, over the conftest demo datasets. `zk0 baseline`
then really merges the data, really runs `lerobot-train` (a few steps) and really scores.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from zk0.tools.baseline import TRAIN_REPO_ID, lr_options
from zk0.node.personal import personal_dir
from zk0.run.checkpoint import save_checkpoint, write_model
from zk0.tools.cli import main
from zk0.config import RunConfig
from zk0.data.dataset import fixed_batches
from zk0.policy.evaluate import evaluate_policy
from zk0.run.directory import RunDir
from zk0.server.schedule import round_lr

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = 2  # of the demo's 4 episodes per client
LOCAL_STEPS, BATCH, ROUNDS, CLIENTS = 2, 2, 2, 2
STEPS_PER_ROUND = CLIENTS * LOCAL_STEPS
REPORTED_PERSONAL = 1.25  # client 1's personal model on its own held-out episodes, as its node reported it


def run_config(demo_roots: list[Path], **overrides) -> dict:
    """pyproject's run config with a small federation over the demo datasets."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config.update({
        "model": "tiny",
        "datasets": ",".join(f"local:{root}" for root in demo_roots[:-1]),
        "eval-dataset": f"local:{demo_roots[-1]}",
        "num-rounds": ROUNDS, "local-steps": LOCAL_STEPS, "batch-size": BATCH, "lr": 1e-3,
        "lr-schedule": "constant", "warmup-rounds": 0, "heldout-episodes": HELDOUT, "eval-batches": 2,
        "eval-every": 1, "checkpoint-every": 2, "num-workers": 0, "device": "cpu",
    })
    config.update(overrides)
    return config


def write_fl_run(run_dir: Path, config: dict, policy, processors, eval_split) -> float:
    """A finished 2-round run: round 2 checkpointed (zk0's own writer), every round evaluated.

    Returns the logged round-2 action MSE: the server's in-process evaluation of the checkpointed weights.
    """
    preprocessor, postprocessor = processors
    batches = fixed_batches(eval_split, config["batch-size"], 0, config["eval-batches"])
    mse = evaluate_policy(policy, preprocessor, postprocessor, batches).action_mse
    save_checkpoint(RunDir(run_dir), ROUNDS, policy, preprocessor, postprocessor, {"eval/action_mse": mse})
    # personalize: client 0's node left its personal model in the run directory (a simulation);
    # client 1's kept its own and reported only its score (a deployment).
    write_model(personal_dir({"partition-id": 0}, str(run_dir), "k"), policy, preprocessor, postprocessor)
    (run_dir / "run_config.json").write_text(json.dumps({"run_id": 7, "run_config": config}))
    uris = config["datasets"].split(",")
    rows = []
    for server_round in range(ROUNDS + 1):
        clients = {} if server_round == 0 else {
            f"node {node} claiming {uri}": {"num-examples": LOCAL_STEPS * BATCH, "train/steps": LOCAL_STEPS} for node, uri in enumerate(uris)
        }
        rows.append({"round": server_round, "eval/action_mse": mse * (1 + 0.1 * (ROUNDS - server_round)), "clients": clients})
    rows[-1]["client_eval"] = {f"node 1 claiming {uris[1]}": {"num-examples": 4, "eval/action_mse": 2.0,
                                                                 "personal/eval/action_mse": REPORTED_PERSONAL}}
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return mse


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, demo_roots, session_policy, processors, eval_split):
    """`zk0 baseline` run once on a fake finished run; yields (run dir, exit code, logged round-2 MSE, stdout)."""
    run_dir = tmp_path_factory.mktemp("outputs") / "20260101-000000"
    run_dir.mkdir()
    mse = write_fl_run(run_dir, run_config(demo_roots), session_policy, processors, eval_split)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["baseline", str(run_dir), "--eval-batches", "2"])  # every frame: minutes on CI
    return run_dir, code, mse, stdout.getvalue()


def test_lerobot_train_ran_with_the_federations_steps_and_lr(baseline):
    """2 rounds x 2 clients x 2 local steps = 8 steps, lr held constant; checkpoints kept at each
    round's equal-samples step (4, 8) and equal-sequential-steps step (2, 4), no others (6)."""
    run_dir, code, _, _ = baseline
    assert code == 0
    checkpoints = run_dir / "baseline" / "train" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit()) == ["000002", "000004", "000008"]
    for step in ("000002", "000004", "000008"):
        state = checkpoints / step / "training_state"
        assert json.loads((state / "training_step.json").read_text())["step"] == int(step)
        groups = json.loads((state / "optimizer_param_groups.json").read_text())
        assert groups[0]["lr"] == pytest.approx(1e-3)
        assert tuple(groups[0]["betas"]) == (0.9, 0.95)


def test_merged_data_is_the_clients_training_episodes_only(baseline, demo_roots):
    """Each client's last HELDOUT episodes are left out; the rest are there, frame for frame."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    run_dir = baseline[0]
    merged = LeRobotDataset(TRAIN_REPO_ID, root=run_dir / "baseline" / "data" / "train")
    expected = []
    for root in demo_roots[:-1]:
        meta = LeRobotDatasetMetadata(f"local/{root.name}", root=root)
        client = LeRobotDataset(f"local/{root.name}", root=root, episodes=list(range(meta.total_episodes - HELDOUT)))
        expected.append(torch.stack(list(client.hf_dataset["action"])))
    assert merged.meta.total_episodes == CLIENTS * (4 - HELDOUT)
    assert torch.equal(torch.stack(list(merged.hf_dataset["action"])), torch.cat(expected))
    assert int(merged.meta.stats["action"]["count"][0]) == merged.meta.total_frames
    assert not (run_dir / "baseline" / "data" / ".parts").exists()


def test_merging_leaves_the_process_on_the_ordinary_scheduler(baseline, tmp_path):
    """As root, LeRobot's video encoder switched the merging process to SCHED_FIFO 99, and the
    lerobot-train it then started inherited it. Where that cannot happen (not root) it holds trivially."""
    from zk0.tools.baseline import merge_training_data, read_run

    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    merge_training_data(read_run(baseline[0]), tmp_path / "train")
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


def test_centralized_model_normalizes_with_the_merged_data_and_loads(baseline):
    """The final checkpoint is a LeRobot policy whose processors carry the training union's statistics."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    run_dir = baseline[0]
    final = run_dir / "baseline" / "train" / "checkpoints" / "000008" / "pretrained_model"
    policy = SmolVLAPolicy.from_pretrained(final)
    assert set(policy.config.input_features) == {"observation.state", "observation.images.front", "observation.images.wrist"}
    meta = LeRobotDatasetMetadata(TRAIN_REPO_ID, root=run_dir / "baseline" / "data" / "train")
    [stats_file] = final.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")
    saved = load_file(stats_file)
    np.testing.assert_allclose(saved["action.mean"].numpy(), meta.stats["action"]["mean"], rtol=1e-6)


def test_comparison_table_and_plot(baseline):
    """Every round compared on both axes; round 2 rescored from its checkpoint reproduces the
    server's own number; a checkpoint both axes meet at (step 4) scores the same for both."""
    run_dir, _, logged_mse, stdout = baseline
    out = run_dir / "baseline"
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {row["round"]: row for row in comparison["rows"]}
    assert sorted(rows) == [0, 1, 2]
    assert [rows[r]["equal_samples"]["central_steps"] for r in (0, 1, 2)] == [0, 4, 8]
    assert [rows[r]["equal_sequential_steps"]["central_steps"] for r in (0, 1, 2)] == [0, 2, 4]
    assert rows[1]["fl_source"] == "metrics.jsonl" and rows[2]["fl_source"] == "checkpoint"
    assert rows[2]["fl_action_mse"] == pytest.approx(logged_mse, rel=1e-5)
    for row in rows.values():
        for axis in ("equal_samples", "equal_sequential_steps"):
            point = row[axis]
            assert math.isfinite(row["fl_action_mse"]) and math.isfinite(point["central_action_mse"])
            assert point["gap_pct"] == pytest.approx(100 * (row["fl_action_mse"] / point["central_action_mse"] - 1))
    assert rows[1]["equal_samples"]["central_action_mse"] == rows[2]["equal_sequential_steps"]["central_action_mse"]
    assert rows[0]["equal_samples"] == rows[0]["equal_sequential_steps"]
    assert comparison["total_steps"] == 8 and comparison["sequential_steps_per_round"] == LOCAL_STEPS
    assert comparison["train_data"]["episodes"] == 4
    clock = comparison["equal_wall_clock"]  # batch K x b for the federation's sequential steps
    assert (clock["batch_size"], clock["central_steps"]) == (CLIENTS * BATCH, ROUNDS * LOCAL_STEPS)
    assert math.isfinite(clock["central_action_mse"]) and clock["fl_action_mse"] == rows[2]["fl_action_mse"]
    assert clock["gap_pct"] == pytest.approx(100 * (clock["fl_action_mse"] / clock["central_action_mse"] - 1))
    table = (out / "comparison.md").read_text()
    assert stdout.endswith(table) and sum(line.startswith("| ") for line in table.splitlines()) == (1 + 3) + (1 + CLIENTS)
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("problem", ["missing", "unfinished", "existing"])
def test_bad_run_dir_is_one_line_exit_2(problem, tmp_path, demo_roots, capsys):
    run_dir = tmp_path / "run"
    if problem != "missing":
        run_dir.mkdir()
        (run_dir / "run_config.json").write_text(json.dumps({"run_id": 1, "run_config": run_config(demo_roots)}))
        rows = [{"round": 0, "eval/action_mse": 1.0, "clients": {}}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if problem == "existing":
        (run_dir / "baseline").mkdir()
        rows = [{"round": r, "clients": {f"1:local:{demo_roots[0]}": {"train/steps": 2}}} for r in (1, 2)]
        with (run_dir / "metrics.jsonl").open("a") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["baseline", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zk0: error: ") and err.count("\n") == 1
    assert {"missing": "no run_config.json", "unfinished": "lacks round(s) [1, 2]", "existing": "already exists"}[problem] in err


def test_cosine_lr_maps_to_lerobots_warmup_cosine(demo_roots):
    """LeRobot's per-step schedule starts, peaks and ends where the federation's per-round one does."""
    from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig

    config = RunConfig.from_run_config(run_config(demo_roots, **{
        "lr-schedule": "cosine", "num-rounds": 10, "warmup-rounds": 2, "lr": 1e-4, "lr-min": 2.5e-6,
    }))
    steps_per_round, total = 50, 500
    options = lr_options(config, steps_per_round, total)
    scheduler = CosineDecayWithWarmupSchedulerConfig(
        num_warmup_steps=options["policy.scheduler_warmup_steps"], num_decay_steps=options["policy.scheduler_decay_steps"],
        peak_lr=options["policy.optimizer_lr"], decay_lr=options["policy.scheduler_decay_lr"],
    )
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=options["policy.optimizer_lr"])
    lambda_lr = scheduler.build(optimizer, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        lambda_lr.step()
    fl = lambda r: round_lr(r, 10, lr=1e-4, schedule="cosine", warmup_rounds=2, lr_min=2.5e-6)
    assert lrs[0] < fl(1) and max(lrs) == pytest.approx(1e-4, rel=0.02)
    assert int(np.argmax(lrs)) == pytest.approx(2 * steps_per_round, abs=1)  # peak where FL's warm-up ends
    assert lrs[total] == pytest.approx(fl(10), rel=1e-6)  # both end at lr-min


def test_lerobot_train_starts_from_the_cached_tiny_model(tmp_path, demo_roots, zk0_cache_dir):
    """The tiny preset is a complete pretrained_model: lerobot-train starts from it and normalizes
    with its training dataset's statistics (the tiny model's processors carry none)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from zk0.policy.presets import ensure_tiny_policy

    tiny = ensure_tiny_policy(zk0_cache_dir)
    client = demo_roots[0]
    out = tmp_path / "train"
    command = [
        str(Path(sys.executable).parent / "lerobot-train"), f"--policy.path={tiny}", "--policy.device=cpu",
        "--policy.push_to_hub=false", f"--dataset.repo_id=local/{client.name}", f"--dataset.root={client}",
        f"--output_dir={out}", "--steps=1", "--batch_size=2", "--num_workers=0", "--wandb.enable=false",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    final = out / "checkpoints" / "000001" / "pretrained_model"
    [stats_file] = final.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")
    meta = LeRobotDatasetMetadata(f"local/{client.name}", root=client)
    np.testing.assert_allclose(load_file(stats_file)["observation.state.mean"].numpy(), meta.stats["observation.state"]["mean"], rtol=1e-6)


def test_pruning_keeps_the_compared_steps_and_a_checkpoint_being_written(tmp_path):
    """While lerobot-train runs, the newest checkpoint may be half written: only older unwanted ones
    go; once it has exited, every unwanted one goes."""
    from zk0.tools.baseline import prune_checkpoints

    for step in (2, 4, 6):
        (tmp_path / f"{step:06d}" / "pretrained_model").mkdir(parents=True)
    (tmp_path / "last").symlink_to(tmp_path / "000006")
    prune_checkpoints(tmp_path, keep={2}, finished_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000002", "000006", "last"]
    prune_checkpoints(tmp_path, keep={2}, finished_only=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["000002"]


def test_each_client_alone_is_trained_on_its_own_training_episodes_and_scored_everywhere(baseline, demo_roots):
    """Every client's twin trains on its training episodes alone (normalized by their statistics),
    for the steps it took in the run; it and the federated model are scored on every client's
    held-out episodes, their union and the eval dataset, and the table says it per client."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    run_dir = baseline[0]
    out = run_dir / "baseline"
    comparison = json.loads((out / "comparison.json").read_text())
    alone = comparison["alone"]
    sets = ["client 0 held-out", "client 1 held-out", "eval dataset", "all clients' held-out"]
    assert alone["sets"] == sets and sorted(alone["federated"]) == sorted(sets)
    assert alone["federated"]["eval dataset"] == pytest.approx(comparison["rows"][-1]["fl_action_mse"], rel=1e-6)
    for index, client in enumerate(alone["clients"]):
        assert client["dataset"] == f"local:{demo_roots[index]}" and client["steps"] == ROUNDS * LOCAL_STEPS
        twin = out / "alone" / f"client_{index}"
        data = LeRobotDatasetMetadata(f"zk0-alone/client-{index}", root=twin / "data")
        assert data.total_episodes == 4 - HELDOUT
        final = twin / "train" / "checkpoints" / "000004"
        assert json.loads((final / "training_state" / "training_step.json").read_text())["step"] == 4
        [stats_file] = (final / "pretrained_model").glob("policy_preprocessor_step_*_normalizer_processor.safetensors")
        np.testing.assert_allclose(load_file(stats_file)["action.mean"].numpy(), data.stats["action"]["mean"], rtol=1e-6)
        for scored in (client["alone"], alone["federated"]):
            assert sorted(scored) == sorted(sets) and all(math.isfinite(v) for v in scored.values())
            held_out = [scored["client 0 held-out"], scored["client 1 held-out"]]
            assert min(held_out) <= scored["all clients' held-out"] <= max(held_out)
    table = (out / "comparison.md").read_text().split("## Per owner: alone, global, personalized", 1)[1]
    assert sum(line.startswith(f"| {index} | `local:") for line in table.splitlines() for index in range(CLIENTS)) == CLIENTS


def test_each_owners_personalized_model_is_scored_beside_alone_and_global(baseline):
    """Client 0's personal model (in the run directory: a simulation) is scored on every set like the
    twins; client 1's stayed on its node, and its reported own-held-out score stands in the table."""
    run_dir = baseline[0]
    comparison = json.loads((run_dir / "baseline" / "comparison.json").read_text())
    mine, theirs = comparison["alone"]["clients"]
    # client 0's personal model is the federated one here (written from the same weights): the same scores
    assert mine["personalized"] == pytest.approx(comparison["alone"]["federated"])
    assert mine["personalized_reported"] is None
    assert theirs["personalized"] is None and theirs["personalized_reported"] == REPORTED_PERSONAL
    table = (run_dir / "baseline" / "comparison.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| client |"))
    assert "its own held-out: personalized" in header and "all clients' held-out: personalized vs alone" in header
    row = next(line for line in table.splitlines() if line.startswith("| 1 | `local:"))
    assert f"{REPORTED_PERSONAL:.4f}" in row


def test_client_keys_name_the_dataset_their_node_claimed():
    """metrics.jsonl's client keys, as zk0.server.rounds labels nodes (and as runs before the labels did)."""
    from zk0.tools.baseline import client_dataset

    assert client_dataset("node 7 claiming local:/data/arm a") == "local:/data/arm a"
    assert client_dataset("alice (node 7) claiming hf:owner/name") == "hf:owner/name"
    assert client_dataset("7:local:/data/arm") == "local:/data/arm"
    assert client_dataset("node 7") is None and client_dataset("7:?") is None


def test_reported_steps_are_whole_and_at_most_local_steps():
    """A node's `train/steps` never sets how long the baseline trains: a whole number in [0, local-steps]."""
    from zk0.tools.baseline import reported_steps

    reports = [1e12, 2.7, -3, 4, "x", None, float("nan"), float("inf"), [5]]
    assert [reported_steps({"train/steps": r}, 5) for r in reports] == [5, 2, 0, 4, 0, 0, 0, 0, 0]
    assert reported_steps({}, 5) == 5  # runs before nodes reported it: every client trained fully


def test_a_lora_run_is_refused_in_one_line(tmp_path):
    """A LoRA run has no centralized twin that differs from it only in being centralized."""
    from zk0.tools.baseline import BaselineError, read_run

    write_claims_run(tmp_path / "run", {"local:/d/a": 5}, trainable="lora")
    with pytest.raises(BaselineError, match="trained LoRA adapters") as raised:
        read_run(tmp_path / "run")
    assert "\n" not in str(raised.value)


def write_claims_run(run_dir: Path, claims: dict[str, object], **overrides) -> None:
    """A 2-round run (local-steps 5) whose clients claim `claims` {claimed URI: reported train/steps}
    each round; run_config.json and metrics.jsonl only (no data: read_run does not open it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config.update({"datasets": "local:/d/a,hf:owner/b", "eval-dataset": "local:/d/e", "num-rounds": 2, "local-steps": 5,
                   **overrides})
    run_dir.mkdir()
    (run_dir / "run_config.json").write_text(json.dumps({"run_id": 1, "run_config": config}))
    clients = {f"node {node} claiming {uri}": {"train/steps": steps} for node, (uri, steps) in enumerate(claims.items())}
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"round": r, "clients": clients}) + "\n" for r in (1, 2)))


def test_only_claims_among_the_run_configs_datasets_are_trained_on(tmp_path):
    """A node's claimed dataset is trained on only when it is one of the run config's `datasets`
    (matched as URIs: `owner/b` is `hf:owner/b`); others are skipped, their steps still count as
    the federation's samples; each twin trains at most local-steps a round."""
    from zk0.tools.alone import client_steps
    from zk0.tools.baseline import read_run
    from zk0.data.uri import parse_dataset_uri

    write_claims_run(tmp_path / "run", {"local:/d/a": 1e12, "owner/b": 3, "hf:evil/made-up": 5, "not a uri!": 2})
    run = read_run(tmp_path / "run")
    a, b = parse_dataset_uri("local:/d/a"), parse_dataset_uri("hf:owner/b")
    assert run.datasets == (a, b)
    assert run.skipped == ("node 2 claiming hf:evil/made-up", "node 3 claiming not a uri!")
    assert (run.steps_per_round, run.sequential_steps_per_round) == (5 + 3 + 5 + 2, 5)
    assert client_steps(run) == {a: 2 * 5, b: 2 * 3}


def test_claims_all_outside_the_run_configs_datasets_are_one_line(tmp_path):
    from zk0.tools.baseline import BaselineError, read_run

    write_claims_run(tmp_path / "run", {"hf:evil/made-up": 5})
    with pytest.raises(BaselineError, match="no client claims one of the run config's datasets") as raised:
        read_run(tmp_path / "run")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("twins", ["skipped", "failing"])
def test_the_centralized_comparison_stands_without_the_twins(twins, tmp_path, demo_roots, session_policy, processors,
                                                             eval_split, capsys, monkeypatch):
    """`--no-alone` trains no twin; a twin that fails (its training stands in for any failing step
    of the twins: one line, as lerobot-train's own failure reads) keeps the written comparison."""
    import zk0.tools.alone
    from zk0.tools.baseline import BaselineError

    def failing_twin(run, index, *_):
        raise BaselineError(f"lerobot-train failed (exit 1): client {index}'s twin")

    run_dir = tmp_path / "20260101-000000"
    run_dir.mkdir()
    write_fl_run(run_dir, run_config(demo_roots), session_policy, processors, eval_split)
    if twins == "failing":
        monkeypatch.setattr(zk0.tools.alone, "train_twin", failing_twin)
    code = main(["baseline", str(run_dir), "--eval-batches", "2", "--no-wall-clock",
                 *(["--no-alone"] if twins == "skipped" else [])])
    out, err = capsys.readouterr()
    baseline_dir = run_dir / "baseline"
    comparison = json.loads((baseline_dir / "comparison.json").read_text())
    assert [row["round"] for row in comparison["rows"]] == list(range(ROUNDS + 1)) and comparison["alone"] is None
    assert "## Per owner" not in (baseline_dir / "comparison.md").read_text()
    if twins == "skipped":
        assert code == 0 and out.endswith((baseline_dir / "comparison.md").read_text())
        assert not (baseline_dir / "alone").exists()
    else:
        [line] = [line for line in err.splitlines() if line.startswith("zk0: error: ")]
        assert code == 2 and line.endswith(f"client 0's twin (the centralized comparison is in "
                                           f"{baseline_dir / 'comparison.md'}; the clients alone are not)")


def test_a_comparison_scores_every_frame_unless_told_otherwise():
    from zk0.tools.baseline import all_batches

    assert [all_batches(range(n), 8) for n in (1, 8, 9, 360)] == [1, 1, 2, 45]
