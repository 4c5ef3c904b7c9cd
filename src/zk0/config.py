"""The run configuration: every key of `[tool.flwr.app.config]`, typed and validated once.

Flower hands the apps a flat `run_config` mapping (pyproject defaults merged with
`--run-config` overrides). `RunConfig.from_run_config` turns it into one frozen
object, or stops with a one-line `ConfigError` naming the offending key.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from zk0.server.aggregation import AGGREGATIONS
from zk0.wire.codec import CODECS as UPDATE_CODECS
from zk0.policy.lora import LORA_AGGREGATIONS, LORA_TARGETS, TRAINABLES, LoraSpec
from zk0.data.uri import DatasetURI, URIError, parse_dataset_uri
from zk0.sim import ENVS

LR_SCHEDULES = ("constant", "cosine")
NORMALIZATIONS = ("federated", "local")
# none: every node is scored with the global model; finetune: after the last round each node
# fine-tunes the final global model on its own training episodes (personal-steps), keeps the
# result on its own disk and reports only its score; adapter: each node trains a personal LoRA
# adapter over the global model every round it trains, merged into the final global model for
# its personal model (zk0.node.personal).
PERSONALIZATIONS = ("none", "finetune", "adapter")
# none: plain local steps; scaffold: SCAFFOLD-style control variates kept in node memory,
# estimated from the global models the node receives (zk0.node.drift): nothing extra travels.
DRIFT_CORRECTIONS = ("none", "scaffold")
DEVICES = ("auto", "cpu", "cuda", "mps")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A run-config value is missing, mistyped or out of range."""


@dataclass(frozen=True)
class RunConfig:
    model: str
    datasets: tuple[DatasetURI, ...]
    eval_dataset: DatasetURI
    rename_maps: str
    num_rounds: int
    local_steps: int
    batch_size: int
    lr: float
    lr_schedule: str
    warmup_rounds: int
    lr_min: float
    keep_optimizer_state: bool
    proximal_mu: float
    aggregation: str
    drift_correction: str
    personalize: str
    personal_steps: int
    personal_lr: float
    update_codec: str
    normalization: str
    trainable: str
    lora_rank: int
    lora_alpha: float
    lora_aggregation: str
    lora_targets: str
    max_update_norm_ratio: float
    clip_update_norm_ratio: float
    trimmed_avg_beta: float
    server_lr: float
    server_momentum: float
    server_beta_1: float
    server_beta_2: float
    server_tau: float
    krum_num_malicious: int
    multikrum_keep: int
    fraction_train: float
    fraction_evaluate: float
    min_train_clients: int
    min_evaluate_clients: int
    min_available_clients: int
    round_timeout: float
    train_quorum: float
    round_retries: int
    node_wait_timeout: float
    heldout_episodes: int
    eval_every: int
    eval_batches: int
    eval_env: str
    eval_episodes: int
    eval_env_every: int
    checkpoint_every: int
    action_dim: int
    state_dim: int
    num_workers: int
    device: str
    seed: int
    output_dir: str
    wandb: bool
    wandb_project: str
    resume_from: str

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "RunConfig":
        values: dict[str, Any] = {}
        known = {f.name.replace("_", "-") for f in fields(cls)}
        unknown = sorted(set(run_config) - known)
        if unknown:
            raise ConfigError(f"unknown run-config key '{unknown[0]}'; valid keys are listed in docs/RUNNING.md")
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key not in run_config:
                raise ConfigError(f"run-config key '{key}' is missing; add it to [tool.flwr.app.config]")
            values[f.name] = _coerce(key, f.type, run_config[key])
        config = cls(**values)
        config._validate()
        return config

    def _validate(self) -> None:
        positive = ("num_rounds", "local_steps", "batch_size", "eval_every", "eval_batches", "eval_episodes", "eval_env_every",
                    "checkpoint_every", "action_dim", "min_train_clients", "min_evaluate_clients",
                    "min_available_clients", "multikrum_keep", "lora_rank", "personal_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"run-config key '{_key(name)}' must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_rounds", "heldout_episodes", "num_workers", "proximal_mu", "lr_min", "krum_num_malicious",
                     "state_dim", "round_retries", "personal_lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"run-config key '{_key(name)}' must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "round_timeout", "node_wait_timeout", "lora_alpha"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"run-config key '{_key(name)}' must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.train_quorum <= 1.0:
            raise ConfigError(f"run-config key 'train-quorum' must be in (0, 1], got {self.train_quorum}")
        for name in ("fraction_train", "fraction_evaluate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"run-config key '{_key(name)}' must be in [0, 1], got {getattr(self, name)}")
        if self.fraction_train == 0.0:
            raise ConfigError("run-config key 'fraction-train' must be > 0: a round without training does nothing")
        for name, choices in (("lr_schedule", LR_SCHEDULES), ("update_codec", UPDATE_CODECS),
                              ("normalization", NORMALIZATIONS), ("trainable", TRAINABLES),
                              ("lora_aggregation", LORA_AGGREGATIONS), ("lora_targets", LORA_TARGETS),
                              ("personalize", PERSONALIZATIONS), ("drift_correction", DRIFT_CORRECTIONS),
                              ("aggregation", AGGREGATIONS), ("device", DEVICES)):
            _one_of(name, getattr(self, name), choices)
        if self.personalize != "none" and self.fraction_evaluate == 0.0:
            raise ConfigError(f"run-config key 'personalize' is '{self.personalize}' but fraction-evaluate is 0: "
                              f"nodes personalize when the final evaluation reaches them; set fraction-evaluate > 0")
        if self.personalize == "adapter" and self.trainable == "lora":
            # The shared part would itself be a LoRA adapter on the same layers: a second one on top
            # is not built.
            raise ConfigError("run-config key 'personalize' is 'adapter' but trainable is 'lora': a personal adapter "
                              "goes over the shared expert; set trainable='expert' or personalize='finetune'")
        plain_average = self.aggregation == "fedprox" or (
            self.aggregation == "fedavgm" and self.server_lr == 1.0 and self.server_momentum == 0.0)
        if self.drift_correction == "scaffold" and not plain_average:
            # The nodes read the federation's mean update off the global model's last change: a
            # server step (or a robust aggregation) feeds its own step back into every correction
            # (measured: fedavgm server-lr 2 diverged by round 12 on the tiny demo).
            raise ConfigError(
                f"run-config key 'drift-correction' is 'scaffold', which needs the global model to move by the "
                f"plain average of the updates: aggregation 'fedprox' (or 'fedavgm' with server-lr 1.0, "
                f"server-momentum 0.0), not '{self.aggregation}'"
                + (f" with server-lr {self.server_lr:g}, server-momentum {self.server_momentum:g}"
                   if self.aggregation == "fedavgm" else ""))
        if self.resume_from and not self.resume_from.startswith("/"):
            raise ConfigError(f"run-config key 'resume-from' must be an absolute run directory path, got '{self.resume_from}'")
        if not (self.max_update_norm_ratio == 0.0 or self.max_update_norm_ratio >= 1.0):
            raise ConfigError(
                f"run-config key 'max-update-norm-ratio' must be 0 (off) or >= 1, got {self.max_update_norm_ratio}"
            )
        if not (self.clip_update_norm_ratio == 0.0 or self.clip_update_norm_ratio >= 1.0):
            raise ConfigError(
                f"run-config key 'clip-update-norm-ratio' must be 0 (off) or >= 1, got {self.clip_update_norm_ratio}"
            )
        if self.server_lr <= 0:
            raise ConfigError(f"run-config key 'server-lr' must be > 0, got {self.server_lr}")
        limit = AGGREGATIONS[self.aggregation].max_server_lr
        if limit is not None and self.server_lr > limit:
            raise ConfigError(
                f"run-config key 'server-lr' is {self.server_lr:g}, too large for aggregation '{self.aggregation}' "
                f"(it moves every weight by about server-lr each round): set it near one round's update, "
                f"e.g. server-lr=1e-3 (at most {limit:g})"
            )
        if not 0.0 <= self.server_momentum < 1.0:
            raise ConfigError(f"run-config key 'server-momentum' must be in [0, 1), got {self.server_momentum}")
        for name in ("server_beta_1", "server_beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"run-config key '{_key(name)}' must be in [0, 1), got {getattr(self, name)}")
        if self.server_tau <= 0:
            raise ConfigError(f"run-config key 'server-tau' must be > 0, got {self.server_tau}")
        if not 0.0 <= self.trimmed_avg_beta < 0.5:
            raise ConfigError(f"run-config key 'trimmed-avg-beta' must be in [0, 0.5), got {self.trimmed_avg_beta}")
        if self.eval_env and self.eval_env not in ENVS:
            raise ConfigError(f"run-config key 'eval-env' must be '' (no rollouts) or one of {', '.join(ENVS)}; "
                              f"got '{self.eval_env}'")
        if not (self.model.startswith("/") or _HUB_ID.match(self.model)):
            from zk0.policy.presets import PRESETS  # torch comes with it: only paid for a preset name

            if self.model not in PRESETS:
                raise ConfigError(
                    f"run-config key 'model' is '{self.model}'; use a preset ({', '.join(PRESETS)}), a hub id "
                    f"such as 'lerobot/smolvla_base' or an absolute path to a pretrained_model directory"
                )
        if self.fraction_evaluate > 0 and self.heldout_episodes == 0:
            raise ConfigError(
                "run-config key 'heldout-episodes' is 0 but fraction-evaluate > 0: clients need held-out "
                "episodes to evaluate on; set heldout-episodes >= 1 or fraction-evaluate = 0.0"
            )
        self._rename_maps()
        if not self.output_dir.strip():
            raise ConfigError("run-config key 'output-dir' is empty; give a directory for run outputs")

    @property
    def lora(self) -> LoraSpec | None:
        """The LoRA adapters every process wraps the policy with (None: expert mode)."""
        if self.trainable != "lora":
            return None
        return LoraSpec(self.lora_rank, self.lora_alpha, self.lora_aggregation, self.seed, self.lora_targets)

    def rename_map_json(self, dataset: DatasetURI) -> str:
        """Simulation's camera mapping for one dataset, as node-config rename-map takes it
        in deployment ('' if `rename-maps` has none for it)."""
        mapping = self._rename_maps().get(str(dataset))
        return json.dumps(mapping) if mapping else ""

    def _rename_maps(self) -> dict[str, dict[str, str]]:
        """`rename-maps`: a JSON object of dataset URI (one of `datasets`) -> rename map."""
        if not self.rename_maps.strip():
            return {}
        from zk0.data.cameras import RUN_CONFIG, CameraError, checked_rename_map

        example = '\'{"local:/data/arm": {"observation.images.top": "observation.images.front"}}\''
        try:
            maps = json.loads(self.rename_maps)
        except json.JSONDecodeError as err:
            raise ConfigError(f"run-config key 'rename-maps' is not JSON ({err.msg}); write it as {example}") from None
        if not isinstance(maps, dict):
            raise ConfigError(f"run-config key 'rename-maps' must be a JSON object of dataset URI -> rename map, e.g. {example}")
        by_uri = {}
        for text, mapping in maps.items():
            try:
                uri = parse_dataset_uri(text)
                by_uri[str(uri)] = checked_rename_map(mapping, f"{RUN_CONFIG} for {uri}")
            except URIError as err:
                raise ConfigError(f"run-config key 'rename-maps': {err}") from None
            except CameraError as err:
                raise ConfigError(str(err)) from None
            if uri not in self.datasets:
                raise ConfigError(f"run-config key 'rename-maps' names {uri}, which run-config 'datasets' does not list; "
                                  f"use the URIs as 'datasets' writes them")
        return by_uri

    def evaluates_after(self, server_round: int) -> bool:
        """Server evaluation: before training, every `eval-every` rounds and after the last."""
        return server_round == 0 or server_round % self.eval_every == 0 or server_round == self.num_rounds

    def rolls_out_after(self, server_round: int) -> bool:
        """Closed-loop scores (eval-env): before training, every `eval-env-every` rounds and after the last."""
        return bool(self.eval_env) and (
            server_round == 0 or server_round % self.eval_env_every == 0 or server_round == self.num_rounds)

    def checkpoints_after(self, server_round: int) -> bool:
        """Checkpoints: every `checkpoint-every` rounds and after the last."""
        return server_round > 0 and (server_round % self.checkpoint_every == 0 or server_round == self.num_rounds)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _one_of(name: str, value: str, choices) -> None:
    """Refuse a value outside `choices`, suggesting the nearest one (a typo such as 'fedavgg')."""
    if value in choices:
        return
    near = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.75)
    raise ConfigError(f"run-config key '{_key(name)}' must be one of {', '.join(choices)}; got '{value}'"
                      + (f"; did you mean '{near[0]}'?" if near else ""))


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """Convert one raw run-config value to the field's type, or raise ConfigError."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"run-config key '{key}' must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"run-config key '{key}' must be an integer, got {value!r}")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"run-config key '{key}' must be a number, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"run-config key '{key}' must be a string, got {value!r}")
    if kind == "str":
        return value
    try:
        if kind == "DatasetURI":
            return parse_dataset_uri(value)
        if kind == "tuple[DatasetURI, ...]":
            uris = tuple(parse_dataset_uri(part) for part in value.split(",") if part.strip())
            if not uris:
                raise URIError("no dataset given; list dataset URIs separated by commas")
            return uris
    except URIError as err:
        raise ConfigError(f"run-config key '{key}': {err}") from None
    raise TypeError(f"unsupported config field type {kind}")
