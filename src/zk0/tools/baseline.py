"""The centralized baseline of a federated run: same start, data, batch size, samples and lr.

`zk0.tools.comparison.run_baseline(run_dir)` reads a finished zk0 run directory and, under `<run>/baseline/`:

    data/train/            the union of the clients' training episodes (each client's last
                           `heldout-episodes` episodes left out), merged with LeRobot's tools
    start_model/           the run's start model fitted to that data's features, as every
                           zk0 node fits it (zk0.policy.model.load_policy), with its processors
    train/                 `lerobot-train` output: checkpoints/<step>/pretrained_model, ...
    lerobot-train.log      its console output
    wall_clock/            the equal-wall-clock twin: batch K x batch-size for num-rounds x L steps
    alone/client_<i>/      each client's local-only twin (zk0.tools.alone; not with alone=False)
    comparison.json/.md    FL vs centralized held-out action MSE per round, on both axes (written
                           before the twins train), and federated vs each client alone (after)
    comparison.png         FL vs centralized as a plot

Round r of the federation is compared on two axes, from one lerobot-train run of R x S
steps that keeps a checkpoint at every point either needs:
- equal samples: the checkpoint after r x S steps, S being the optimizer steps all clients
  ran per round (the sum of their `train/steps` in metrics.jsonl; clients x local-steps when
  every client trained fully): both have seen as many samples;
- equal sequential steps: the checkpoint after r x L steps, L being the most steps one client
  reported in a round (local-steps when one trained fully): both took as many steps one
  after the other (the wall-clock axis, since clients train in parallel).
Nodes report `train/steps`: each report counts as a whole number in [0, local-steps]
(reported_steps), so no node sets how long the baseline trains. Nodes claim which dataset they
trained on: only claims among the run config's `datasets` are trained on (trusted_claim).
All are scored with zk0's held-out metric on the run's eval dataset, each with its OWN saved
processors (normalization statistics), as LeRobot's loader gives them.

Learning rate (zk0.server.schedule.round_lr -> lerobot-train's SmolVLA preset, AdamW with the same
betas, weight decay and grad clip as the clients):
- constant: cosine_decay_with_warmup with no warm-up and decay_lr = peak lr, i.e. exactly
  constant;
- cosine: cosine_decay_with_warmup over steps: warm-up over warmup-rounds x S steps, decay
  to lr-min at the last step. The FL lr is constant within a round and its cosine starts
  after warm-up; LeRobot's is per step and its cosine counts from step 0: close, not equal.
The equal-sequential-steps points lie early in that one run, under its schedule: with a
cosine lr they train near the peak lr, where a run of only R x L steps would have decayed.
The centralized optimizer keeps its AdamW state throughout; FL clients start a fresh AdamW
every round and add the proximal term, both part of what the comparison measures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zk0.config import ConfigError, RunConfig
from zk0.data.dataset import DatasetError, fixed_batches, open_node_data, open_split
from zk0.policy.evaluate import EvalResult, evaluate_policy
from zk0.policy.model import load_policy, make_processors
from zk0.run.directory import LEROBOT_CHECKPOINTS, PRETRAINED, RunDir, RunDirError
from zk0.policy.train import BETAS, GRAD_CLIP_NORM, WEIGHT_DECAY
from zk0.data.uri import DatasetURI, URIError, parse_dataset_uri
from zk0.util.scheduling import ordinary_scheduling

TRAIN_REPO_ID = "zk0-baseline/train"


class BaselineError(ValueError):
    """A run directory or a step of the baseline that cannot go on; one line for the operator."""


@dataclass(frozen=True)
class FederatedRun:
    paths: RunDir
    run_id: int | None
    config: RunConfig
    rows: dict[int, dict]  # metrics.jsonl by round
    datasets: tuple[DatasetURI, ...]  # the run config's datasets clients trained on
    skipped: tuple[str, ...]  # client keys claiming a dataset outside the run config's: not trained on
    steps_per_round: int  # optimizer steps of all clients together in one round
    sequential_steps_per_round: int  # optimizer steps one after the other in a round: one client's
    final_only: bool = False  # compare the final round alone (zk0 baseline --final-only)
    eval_batches: int | None = None  # batches scored per set (zk0 baseline --eval-batches); None: every frame

    @property
    def total_steps(self) -> int:
        return self.config.num_rounds * self.steps_per_round

    @property
    def compared_steps(self) -> set[int]:
        """The centralized steps some scored round (evaluated or checkpointed) is compared at, on either axis."""
        rounds = [r for r in self.compared_rounds if self.rows[r].get("eval/action_mse") is not None or self.checkpoint(r)]
        return {r * self.steps_per_round for r in rounds} | {r * self.sequential_steps_per_round for r in rounds}

    @property
    def compared_rounds(self) -> list[int]:
        last = self.config.num_rounds
        return [last] if self.final_only else [r for r in sorted(self.rows) if 0 <= r <= last]

    def checkpoint(self, server_round: int) -> Path | None:
        path = self.paths.checkpoint(server_round) / PRETRAINED
        return path if (path / "config.json").is_file() else None


def read_run(run_dir: Path) -> FederatedRun:
    """A finished zk0 run directory, or a one-line BaselineError saying what is missing."""
    run = RunDir(run_dir)
    for path in (run.record, run.metrics):
        if not path.is_file():
            raise BaselineError(f"{run_dir}: no {path.name}; give a zk0 run directory (outputs/<timestamp>)")
    try:
        saved = run.read_record()
        rows = {row["round"]: row for row in run.read_metrics()}
    except RunDirError as err:
        raise BaselineError(str(err)) from None
    except (KeyError, TypeError) as err:
        raise BaselineError(f"{run.metrics}: a row without a round ({type(err).__name__}: {err})") from None
    try:
        config = RunConfig.from_run_config(dict(saved["run_config"]))
    except ConfigError as err:
        raise BaselineError(f"{run.record}: {err}") from None
    if config.lora:
        # lerobot-train's PEFT mode has no alpha and cannot freeze A (FFA): its twin would
        # differ in more than being centralized, and a full expert twin compares two recipes.
        raise BaselineError(f"{run_dir}: the run trained LoRA adapters (trainable = 'lora'); zk0 baseline compares "
                            f"runs that train the action expert (trainable = 'expert')")
    missing = [r for r in range(1, config.num_rounds + 1) if r not in rows]
    if missing:
        raise BaselineError(
            f"{run_dir}: {run.metrics.name} lacks round(s) {missing[:5]} of num-rounds {config.num_rounds}; "
            f"the baseline needs a finished run"
        )
    # Every client's steps count, a skipped client's too: the federation trained on those samples.
    client_steps = {r: [reported_steps(c, config.local_steps) for c in rows[r].get("clients", {}).values()]
                    for r in range(1, config.num_rounds + 1)}
    steps = {r: sum(counts) for r, counts in client_steps.items()}
    idle = [r for r, count in steps.items() if count == 0]
    if idle:
        raise BaselineError(f"{run_dir}: {run.metrics.name} has no client training in round(s) {idle[:5]}")
    if len(set(steps.values())) != 1:
        raise BaselineError(
            f"{run_dir}: the clients' optimizer steps per round vary ({sorted(set(steps.values()))}, e.g. failed "
            f"clients); a round has no single centralized equivalent"
        )
    sequential = {max(counts) for counts in client_steps.values()}
    if len(sequential) != 1:
        raise BaselineError(f"{run_dir}: the clients' optimizer steps per round vary ({sorted(sequential)}); a round "
                            f"has no single centralized equivalent")
    datasets, skipped = _trained_datasets(config, rows)
    return FederatedRun(run, saved.get("run_id"), config, rows, datasets, skipped, steps[1], sequential.pop())


def reported_steps(client: dict, local_steps: int) -> int:
    """A client's optimizer steps in one round as its node reported them (`train/steps`), as a whole
    number in [0, local-steps]: a node's report must not set how long the baseline trains. Runs
    whose metrics lack it: local-steps; a report that is no number: 0."""
    try:
        steps = int(client.get("train/steps", local_steps))
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(steps, 0), local_steps)


def client_dataset(key: str) -> str | None:
    """The dataset URI a client key of metrics.jsonl names (zk0.server.rounds labels: `node <id> claiming
    <uri>`; runs before them: `<node id>:<uri>`), or None when the node named none."""
    if " claiming " in key:
        return key.rpartition(" claiming ")[2]
    node, colon, uri = key.partition(":")
    return uri if colon and node.isdigit() and uri != "?" else None


def trusted_claim(key: str, config: RunConfig) -> DatasetURI | None:
    """The dataset of the run config's `datasets` a client key of metrics.jsonl claims, or None when
    it claims none or one outside them (a node's claim alone never picks what the baseline downloads)."""
    claim = client_dataset(key)
    try:
        uri = None if claim is None else parse_dataset_uri(claim)
    except URIError:
        return None
    return uri if uri in config.datasets else None


def _trained_datasets(config: RunConfig, rows: dict[int, dict]) -> tuple[tuple[DatasetURI, ...], tuple[str, ...]]:
    """In deployment the client keys, not all of `datasets`, say which datasets trained; returns
    them (in `datasets`' order) and the client keys whose claim is outside `datasets`."""
    keys = {key for row in rows.values() for key in row.get("clients", {})}
    if not keys or any(client_dataset(key) is None for key in keys):
        return config.datasets, ()
    claims = {key: trusted_claim(key, config) for key in keys}
    trusted = set(claims.values()) - {None}
    if not trusted:
        raise BaselineError(f"metrics.jsonl: no client claims one of the run config's datasets "
                            f"({', '.join(map(str, config.datasets))}); the baseline trains on those only")
    return (tuple(uri for uri in config.datasets if uri in trusted),
            tuple(sorted(key for key, uri in claims.items() if uri is None)))


def lr_options(config: RunConfig, steps_per_round: int, total_steps: int) -> dict[str, float | int]:
    """lerobot-train options (SmolVLA preset: cosine_decay_with_warmup) matching the federation's lr."""
    if config.lr_schedule == "constant":
        warmup, decay_lr = 0, config.lr  # decay to the peak itself: a constant lr
    else:
        warmup, decay_lr = config.warmup_rounds * steps_per_round, config.lr_min
    return {
        "policy.optimizer_lr": config.lr,
        "policy.scheduler_warmup_steps": warmup,
        "policy.scheduler_decay_steps": total_steps,
        "policy.scheduler_decay_lr": decay_lr,
    }


def training_part(run: FederatedRun, uri: DatasetURI, out: Path, repo_id: str):
    """One client's training episodes as a LeRobot dataset (written to `out` when some are held
    out; its statistics then are those episodes' alone). Raises DatasetError or LeRobot's errors."""
    from lerobot.datasets.dataset_tools import delete_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    data = open_node_data(uri, run.config.action_dim, run.config.heldout_episodes, run.config.state_dim)
    dataset = LeRobotDataset(uri.repo_id, root=uri.root)
    if not data.heldout_episodes:
        return dataset
    return delete_episodes(dataset, data.heldout_episodes, output_dir=out, repo_id=repo_id)


def merge_training_data(run: FederatedRun, out: Path):
    """The union of the clients' training episodes as one local LeRobot dataset at `out`."""
    from lerobot.datasets.dataset_tools import merge_datasets

    parts_dir = out.parent / ".parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    try:
        with ordinary_scheduling():  # as root, LeRobot's video encoder leaves the thread at SCHED_FIFO 99
            parts = [training_part(run, uri, parts_dir / str(index), f"zk0-baseline/part-{index}")
                     for index, uri in enumerate(run.datasets)]
            merged = merge_datasets(parts, TRAIN_REPO_ID, output_dir=out)
    except DatasetError as err:
        raise BaselineError(str(err)) from None
    except Exception as err:  # LeRobot raises many types (different fps, features, robot types, ...)
        raise BaselineError(f"cannot merge the federation's datasets for lerobot-train ({type(err).__name__}: {err})") from None
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return merged.meta


def write_start_model(run: FederatedRun, meta, out: Path) -> Path:
    """The run's start model with the merged data's features and processors, saved as lerobot-train reads it.

    `lerobot-train` keeps a pretrained config's input features; zk0 nodes fit them to their
    dataset, so the baseline starts from the same fitting.
    """
    policy = load_policy(run.config.model, meta, "cpu")
    policy.save_pretrained(out)
    for processor in make_processors(policy, meta.stats):
        processor.save_pretrained(out)
    return out


def lerobot_train_command(config: RunConfig, start_model: Path, dataset, out: Path, device: str, *,
                          steps_per_round: int, total_steps: int, save_freq: int,
                          batch_size: int | None = None) -> list[str]:
    """lerobot-train on `dataset` (its repo id and root) for `total_steps`, the lr mapped from the
    run's schedule with `steps_per_round` steps a round, a checkpoint every `save_freq` steps."""
    options = {
        "policy.path": start_model,
        "policy.device": device,
        "policy.push_to_hub": "false",
        "policy.optimizer_betas": f"[{BETAS[0]},{BETAS[1]}]",
        "policy.optimizer_weight_decay": WEIGHT_DECAY,
        "policy.optimizer_grad_clip_norm": GRAD_CLIP_NORM,
        **lr_options(config, steps_per_round, total_steps),
        "dataset.repo_id": dataset.repo_id,
        "dataset.root": dataset.root,
        "output_dir": out,
        "job_name": "zk0-baseline",
        "batch_size": batch_size or config.batch_size,
        "steps": total_steps,
        "save_freq": save_freq,
        "log_freq": steps_per_round,
        "eval_freq": 0,
        "num_workers": config.num_workers,
        "seed": config.seed,
        "wandb.enable": "false",
    }
    return [str(Path(sys.executable).parent / "lerobot-train"), *(f"--{key}={value}" for key, value in options.items())]


def run_lerobot_train(command: list[str], log_path: Path, device: str, checkpoints: Path, keep: set[int]) -> None:
    """Run lerobot-train; meanwhile delete each finished checkpoint whose step is not in `keep`
    (its save_freq is uniform; a real model's checkpoint with optimizer state is several GB)."""
    if not Path(command[0]).is_file():
        raise BaselineError(f"{command[0]} not found; install LeRobot in this Python environment")
    env = dict(os.environ, WANDB_MODE="disabled")
    if device == "cuda":
        env["ACCELERATE_MIXED_PRECISION"] = "bf16"  # zk0 clients train under bf16 autocast on CUDA
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            prune_checkpoints(checkpoints, keep, finished_only=True)
            time.sleep(2)
        code = process.returncode
    prune_checkpoints(checkpoints, keep, finished_only=False)
    if code != 0:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        raise BaselineError(f"lerobot-train failed (exit {code}): {lines[-1] if lines else 'no output'}; log: {log_path}")


def prune_checkpoints(checkpoints: Path, keep: set[int], finished_only: bool) -> None:
    """Delete lerobot-train's step checkpoints not in `keep`; while it runs, only those older than
    its newest (the newest may be half written, and `last` points at it)."""
    found = sorted((int(path.name), path) for path in checkpoints.glob("*") if path.name.isdigit())
    for step, path in found[:-1] if finished_only else found:
        if step not in keep:
            shutil.rmtree(path, ignore_errors=True)


def score(weights: Path, processors: Path, eval_set, config: RunConfig, device: str,
          batches: int | None = None) -> EvalResult:
    """zk0's held-out metric for a pretrained_model directory, normalized by `processors`' saved
    stats, on every frame of `eval_set` (the run's eval-batches x batch-size frames are a sample
    the federation scores each round cheaply; a comparison scores them all), or on `batches`
    evenly spaced batches of them (zk0 baseline --eval-batches)."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    policy_config = PreTrainedConfig.from_pretrained(weights)
    policy_config.device = device
    policy = SmolVLAPolicy.from_pretrained(weights, config=policy_config).to(device)
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config, pretrained_path=str(processors), preprocessor_overrides={"device_processor": {"device": device}}
    )
    loader = fixed_batches(eval_set, config.batch_size, config.num_workers,
                           batches or all_batches(eval_set, config.batch_size))
    return evaluate_policy(policy, preprocessor, postprocessor, loader)


def all_batches(eval_set, batch_size: int) -> int:
    """Batches that hold every frame of `eval_set`."""
    return max(1, -(-len(eval_set) // batch_size))


# The two axes a round is compared on: (key in comparison.json rows, table heading).
AXES = (("equal_samples", "equal samples"), ("equal_sequential_steps", "equal sequential steps"))


def eval_split(config: RunConfig, model: Path):
    """The run's eval dataset (every episode), with `model`'s features."""
    from lerobot.configs.policies import PreTrainedConfig

    eval_data = open_node_data(config.eval_dataset, config.action_dim, 0, config.state_dim)
    return open_split(eval_data, eval_data.train_episodes, PreTrainedConfig.from_pretrained(model))


def wall_clock(run: FederatedRun, start_model: Path, dataset, out: Path, device: str, fl_action_mse: float | None,
               log=print) -> dict:
    """The third axis, equal wall-clock: the clients of a round train in parallel, so centralized
    training may take as large a batch as all of them together (K x batch-size, K = the round's
    steps over one client's) for as many steps as one client took (num-rounds x L); its final
    checkpoint against the federation's final round."""
    from lerobot.utils.train_utils import get_step_checkpoint_dir

    config = run.config
    clients = max(1, run.steps_per_round // run.sequential_steps_per_round)
    batch, steps = clients * config.batch_size, config.num_rounds * run.sequential_steps_per_round
    log(f"equal wall-clock: lerobot-train, {steps} steps at batch {batch}")
    out.mkdir(parents=True, exist_ok=True)
    command = lerobot_train_command(config, start_model, dataset, out / "train", device,
                                    steps_per_round=run.sequential_steps_per_round, total_steps=steps,
                                    save_freq=steps, batch_size=batch)
    run_lerobot_train(command, out / "lerobot-train.log", device, out / "train" / LEROBOT_CHECKPOINTS, {steps})
    final = get_step_checkpoint_dir(out / "train", steps, steps) / PRETRAINED
    mse = score(final, final, eval_split(config, start_model), config, device, run.eval_batches).action_mse
    gap = 100.0 * (fl_action_mse - mse) / mse if fl_action_mse is not None and mse else None
    return {"batch_size": batch, "central_steps": steps, "central_action_mse": mse, "fl_action_mse": fl_action_mse,
            "gap_pct": gap}


def compare(run: FederatedRun, start_model: Path, train_dir: Path, device: str) -> list[dict]:
    """One row per FL round with a score: FL (its checkpoint, else metrics.jsonl) vs centralized
    at equal samples and at equal sequential steps."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.utils.train_utils import get_step_checkpoint_dir

    config = run.config
    eval_set = eval_split(config, start_model)
    central_scores: dict[int, float | None] = {}

    def central(steps: int) -> float | None:
        """The centralized checkpoint after `steps` steps (0: the start weights under the training
        data's statistics), scored once however many rows compare with it."""
        if steps not in central_scores:
            directory = start_model if steps == 0 else get_step_checkpoint_dir(train_dir, run.total_steps, steps) / PRETRAINED
            central_scores[steps] = (score(directory, directory, eval_set, config, device, run.eval_batches).action_mse
                                     if directory.is_dir() else None)
        return central_scores[steps]

    rows = []
    for server_round in run.compared_rounds:
        logged = run.rows[server_round].get("eval/action_mse")
        fl_checkpoint = run.checkpoint(server_round)
        fl = score(fl_checkpoint, fl_checkpoint, eval_set, config, device, run.eval_batches).action_mse if fl_checkpoint else logged
        if fl is None:
            continue
        row = {"round": server_round, "fl_action_mse": fl,
               "fl_source": "checkpoint" if fl_checkpoint else run.paths.metrics.name, "fl_logged_action_mse": logged}
        for (axis, _), per_round in zip(AXES, (run.steps_per_round, run.sequential_steps_per_round)):
            steps = server_round * per_round
            mse = central(steps)
            row[axis] = {"central_steps": steps, "central_action_mse": mse,
                         "gap_pct": 100.0 * (fl - mse) / mse if mse else None}
        rows.append(row)
    return rows
