"""Personalization (run-config `personalize`): what a node makes of the final global model for
itself. It stays on the node's own disk; the server learns only its score.

`finetune`: when the final evaluation message brings the last global model, the node scores it
on its held-out episodes (as every node does), then fine-tunes it on its own training episodes
for `personal-steps` AdamW steps at `personal-lr` (0: the run's `lr`; no proximal term: the
point is to leave the federation's optimum for this node's task), saves the result as a LeRobot
checkpoint, scores it on the same held-out episodes and replies both scores: numbers only, the
evaluate reply holds no arrays (zk0.wire.protocol.EvaluateReport).

`adapter`: the node keeps a personal LoRA adapter (LeRobot's `wrap_with_peft` on the run's
`lora-targets`, `lora-rank`, `lora-alpha`; A and B both train) over the shared trainable part,
FedRep-like: each round it trains the shared part exactly as with `none` and builds its reply
from that, then puts the round's global model back, adds its adapter and trains only the adapter
for `adapter_steps` steps (`personal-steps` spread over the rounds) at `personal-lr`. The adapter
and its AdamW moments live in node memory (zk0.node.memory, under the run key) between rounds
and never enter a reply: its steps over the rounds are one optimizer's (measured on the tiny
demo, restarting AdamW every 10 steps at lr 1e-2 undid most of what 120 steps bought). When the
final evaluation brings the last global model, the node merges its adapter into it (peft's
`merge_and_unload`: a plain SmolVLA checkpoint, no adapter files) and saves and scores that as
its personal model; a node that trained no round has no adapter and reports no personal score.

Where the personal model goes (`personal_dir`):
- simulation (the node's config holds a `partition-id`; the nodes run on the server's machine):
  `<run directory>/nodes/client_<partition>/personal/`, beside the run's records, so that
  `zk0 baseline` finds every owner's personal model. The server's records (metrics.jsonl,
  checkpoints/, state/, server.log) never hold it;
- deployment: node-config `personal-dir`, else `$ZK0_HOME/personal` (zk0bot's home, `~/.zk0`),
  then `<run name>/<node key>/personal/`, the run name being the server's run directory name.

`<...>/personal/pretrained_model` loads with `SmolVLAPolicy.from_pretrained` and
`make_pre_post_processors` (this node's normalization as it trained: the federation's pooled
statistics, or its own with normalization = "local"); `personal/zk0_personal.json` says how it
was made and what it scored.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zk0.util.atomic import replace_dir

NODES = "nodes"  # inside a simulation's run directory: one folder per simulated node
PERSONAL = "personal"
RECORD = "zk0_personal.json"
PERSONAL_SEED = 1_000_003  # the fine-tuning's batch stream: apart from every round's
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class PersonalError(ValueError):
    """Where to keep the personal model cannot be told; one line."""


@dataclass(frozen=True)
class PersonalResult:
    directory: Path  # <...>/personal: pretrained_model/ and the record
    steps: int
    lr: float
    loss: float
    seconds: float


def simulation_dir(run_dir: Path, partition: int) -> Path:
    """A simulated node's folder in its run directory."""
    return Path(run_dir) / NODES / f"client_{partition}"


def personal_dir(node_config: dict, run_dir: str, node_key: str) -> Path:
    """Where this node keeps its personal model of the run whose server directory is `run_dir`."""
    name = Path(run_dir).name
    if not _RUN_NAME.fullmatch(name):
        raise PersonalError(f"the server names its run directory '{name[:60]}', not a usable folder name")
    if "dataset-uri" not in node_config and "partition-id" in node_config:
        if not Path(run_dir).is_absolute():
            raise PersonalError(f"the server's run directory '{run_dir[:200]}' is not an absolute path")
        return simulation_dir(Path(run_dir), int(node_config["partition-id"])) / PERSONAL
    if "personal-dir" in node_config:
        root = Path(str(node_config["personal-dir"])).expanduser()
    else:
        root = Path(os.environ.get("ZK0_HOME", Path.home() / ".zk0")).expanduser() / PERSONAL
    return root / name / node_key / PERSONAL


def finetune(session, directory: Path, steps: int, lr: float) -> PersonalResult:
    """Fine-tune the session's policy (holding the global model) on the node's training episodes
    and save it under `directory`; the policy keeps the fine-tuned weights (the caller restores)."""
    from zk0.policy.train import train_local
    from zk0.run.checkpoint import write_model

    started = time.perf_counter()
    result = train_local(session.policy, session.preprocessor, session.train_batches(seed=PERSONAL_SEED),
                         steps=steps, lr=lr, proximal_mu=0.0, desc=f"personal {session.data.uri}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with replace_dir(directory) as staging:
        write_model(staging, session.policy, session.preprocessor, session.postprocessor)
        (staging / RECORD).write_text(json.dumps({
            "personalize": "finetune", "dataset": str(session.data.uri), "steps": steps, "lr": lr,
            "train/loss": result.loss, "train_episodes": list(session.data.train_episodes),
            "heldout_episodes": list(session.data.heldout_episodes)}, indent=2))
    return PersonalResult(directory, steps, lr, result.loss, time.perf_counter() - started)


def adapter_steps(config) -> int:
    """A personal adapter's steps per round the node trains: `personal-steps` spread over the
    rounds (at least one), so that both methods spend about the same personal steps."""
    return max(1, math.ceil(config.personal_steps / config.num_rounds))


def _adapter_spec(config):
    from zk0.policy.lora import LoraSpec

    # A and B both train ("fedit"): nothing is averaged, so FFA's frozen A buys nothing here.
    return LoraSpec(config.lora_rank, config.lora_alpha, "fedit", config.seed, config.lora_targets)


def adapter_on(session, state: dict[str, np.ndarray] | None):
    """The session's policy with this node's adapter `state` on it, for a `with` block (zk0.policy.lora)."""
    from zk0.policy.lora import personal_adapter
    from zk0.policy.presets import pretrained_path

    return personal_adapter(session.policy, _adapter_spec(session.config), pretrained_path(session.config.model), state)


def train_adapter(session, state: dict[str, np.ndarray] | None, optimizer: dict | None,
                  server_round: int) -> tuple[dict[str, np.ndarray], dict]:
    """This node's adapter and its AdamW state after `adapter_steps` more steps over the global
    model the session's policy holds, the shared part frozen (`state` None: a fresh adapter, B at zero)."""
    from zk0.policy.train import train_local

    config = session.config
    with adapter_on(session, state) as adapter:
        result = train_local(adapter.model, session.preprocessor, session.train_batches(seed=PERSONAL_SEED + server_round),
                             steps=adapter_steps(config), lr=config.personal_lr or config.lr, proximal_mu=0.0,
                             desc=f"round {server_round} adapter {session.data.uri}",
                             optimizer_state=optimizer, keep_optimizer_state=True)
        return adapter.state(), result.optimizer_state


def merge_adapter(session, directory: Path, state: dict[str, np.ndarray]) -> None:
    """Fold the node's adapter into the global model the session's policy holds and save that
    under `directory`; the policy keeps the merged weights (the caller restores)."""
    from zk0.run.checkpoint import write_model

    config = session.config
    with adapter_on(session, state) as adapter:
        policy = adapter.merge()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with replace_dir(directory) as staging:
        write_model(staging, policy, session.preprocessor, session.postprocessor)
        (staging / RECORD).write_text(json.dumps({
            "personalize": "adapter", "dataset": str(session.data.uri), "steps_per_round": adapter_steps(config),
            "lr": config.personal_lr or config.lr, "lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha,
            "lora_targets": config.lora_targets, "merged": True, "train_episodes": list(session.data.train_episodes),
            "heldout_episodes": list(session.data.heldout_episodes)}, indent=2))


def record_scores(directory: Path, scores: dict) -> None:
    """Add the personal model's held-out scores to its record."""
    path = directory / RECORD
    record = json.loads(path.read_text())
    record.update(scores)
    path.write_text(json.dumps(record, indent=2))
