"""The Hub model card of a zk0 checkpoint, in LeRobot's conventions.

Metadata as `lerobot`'s own `push_model_to_hub` writes it (library_name `lerobot`,
pipeline_tag `robotics`, apache-2.0, base_model, datasets), plus zk0's tags. The body
says what zk0 is, the run's settings, the held-out metric per round and how to load
the policy. Only hub ids are named: local datasets and models are described, never
given by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from zk0.data.uri import URIError, parse_dataset_uri

TAGS = ["lerobot", "smolvla", "robotics", "federated-learning", "flower"]
LOCAL_DATASET = "local dataset (not published)"
# Run-config keys shown in the card, in this order (the rest are in the uploaded run_config.json).
SETTINGS = ("num-rounds", "local-steps", "batch-size", "lr", "lr-schedule", "warmup-rounds", "lr-min",
            "aggregation", "proximal-mu", "update-codec", "normalization", "fraction-train", "min-train-clients",
            "eval-batches", "checkpoint-every", "seed")
# Each aggregation's name, what it does, and the run-config keys that tune it (zk0.config.AGGREGATIONS).
AGGREGATORS = {
    "fedprox": ("FedProx", "weighted average", ()),
    "fedavgm": ("FedAvgM", "weighted average applied with server momentum", ("server-lr", "server-momentum")),
    "fedadam": ("FedAdam", "weighted average applied with a server Adam step",
                ("server-lr", "server-beta-1", "server-beta-2", "server-tau")),
    "fedyogi": ("FedYogi", "weighted average applied with a server Yogi step",
                ("server-lr", "server-beta-1", "server-beta-2", "server-tau")),
    "fedadagrad": ("FedAdagrad", "weighted average applied with a server Adagrad step", ("server-lr", "server-tau")),
    "fedtrimmedavg": ("FedTrimmedAvg", "per-coordinate trimmed mean", ("trimmed-avg-beta",)),
    "fedmedian": ("FedMedian", "per-coordinate median", ()),
    "krum": ("Krum", "the one update closest to its neighbours", ("krum-num-malicious",)),
    "multikrum": ("MultiKrum", "average of the updates with the best Krum scores", ("krum-num-malicious", "multikrum-keep")),
}
# `lora-aggregation`: its name and what it does (zk0.policy.lora).
LORA_AGGREGATORS = {
    "ffa": ("FFA-LoRA", "A frozen at its seeded initialization on every node, only B trained and averaged, "
            "so the averaged update B·A is exact"),
    "fedit": ("FedIT", "A and B trained and averaged separately"),
}
LORA_SETTINGS = ("trainable", "lora-rank", "lora-alpha", "lora-aggregation", "lora-targets")
# Runs recorded before these keys existed ran FedProx on fp32 weights, normalized per node,
# training the action expert.
LEGACY_DEFAULTS = {"aggregation": "fedprox", "update-codec": "fp32", "normalization": "local", "trainable": "expert"}


@dataclass(frozen=True)
class CardInput:
    repo_id: str
    round: int | None
    labels: tuple[str, ...]  # which of the run's `best`/`last` links point at this checkpoint
    run_config: dict[str, Any] | None  # None: the checkpoint is not inside a run directory
    metrics: list[dict[str, Any]]
    local_backbone: bool  # config.json names its VLM backbone by a local path (the tiny preset)
    adapter: bool = False  # the folder holds a LoRA run's adapter files beside the merged weights (zk0.tools.push)
    adapter_base: str | None = None  # the adapter's base as its adapter_config.json names it: a hub id or None


def hub_dataset(uri: str) -> str | None:
    """The hub id of a dataset URI, or None for a local (or unreadable) one."""
    try:
        parsed = parse_dataset_uri(uri)
    except URIError:
        return None
    return parsed.location if parsed.scheme == "hf" else None


def hub_model(model: str | None) -> str | None:
    """The run's `model` when it is a hub id (not `tiny`, not a local path)."""
    if not model or model == "tiny" or model.startswith("/"):
        return None
    return model if hub_dataset(model) else None


def client_datasets(run_config: dict[str, Any] | None, rows: list[dict[str, Any]]) -> tuple[list[str], str]:
    """The client dataset URIs that took part, and where that list came from.

    metrics.jsonl names every client that trained (`clients` keys are `<node id>:<dataset uri>`),
    which is what a deployment used; the run config's `datasets` (simulation only) is the fallback.
    """
    seen: list[str] = []
    for row in rows:
        for name in row.get("clients") or {}:
            _, known, uri = str(name).partition(":")  # a node that never named its dataset has no `:<uri>` or `:?`
            if known and uri != "?" and uri not in seen:
                seen.append(uri)
    if seen:
        return seen, "the clients that trained, from metrics.jsonl"
    listed = str((run_config or {}).get("datasets", ""))
    return [part.strip() for part in listed.split(",") if part.strip()], "run-config `datasets`"


def eval_dataset(run_config: dict[str, Any] | None) -> str | None:
    uri = (run_config or {}).get("eval-dataset")
    return str(uri).strip() if uri else None


def card_data(info: CardInput) -> ModelCardData:
    base_model = hub_model((info.run_config or {}).get("model"))
    clients, _ = client_datasets(info.run_config, info.metrics)
    eval_uri = eval_dataset(info.run_config)
    datasets: list[str] = []
    for uri in [*clients, *([eval_uri] if eval_uri else [])]:
        repo = hub_dataset(uri)
        if repo and repo not in datasets:
            datasets.append(repo)
    return ModelCardData(
        license="apache-2.0",
        library_name="lerobot",
        pipeline_tag="robotics",
        tags=list(TAGS),
        base_model=base_model or info.adapter_base,
        datasets=datasets or None,
    )


def build_card(info: CardInput) -> ModelCard:
    body = "\n".join([
        f"# {info.repo_id.split('/', 1)[1]}",
        "",
        "A [SmolVLA](https://huggingface.co/lerobot/smolvla_base) robot policy trained with "
        "[zk0](https://github.com/ivelin/zk0): federated fine-tuning of LeRobot's SmolVLA across "
        "SO-100/SO-101 robot owners with [Flower](https://flower.ai). Each owner trains on their own "
        f"LeRobot dataset on their own machine; only {_travelling(info.run_config)} travel to the server, "
        f"which aggregates them{_aggregated_with(info.run_config)}, "
        "evaluates the global policy on a held-out dataset and saves LeRobot checkpoints.",
        "",
        *_checkpoint_section(info),
        *_settings_section(info.run_config, info.metrics),
        *_metrics_section(info.metrics, info.round),
        *_usage_section(info.repo_id, info.local_backbone, info.run_config),
        *_adapter_section(info),
        *_files_section(info.adapter),
    ])
    return ModelCard(f"---\n{card_data(info).to_yaml()}\n---\n\n{body}")


def _checkpoint_section(info: CardInput) -> list[str]:
    total = info.run_config.get("num-rounds") if info.run_config else None
    if info.round is None:
        lines = ["## This checkpoint", "", "A zk0 global model; its round is not recorded with it."]
    else:
        of = f" of {total}" if total else ""
        lines = ["## This checkpoint", "", f"The global model after federated round {info.round}{of}."]
    if "best" in info.labels:
        lines.append("It is the run's `best` checkpoint: the lowest held-out action MSE among its checkpoints.")
    if "last" in info.labels:
        lines.append("It is the run's `last` (newest) checkpoint.")
    return [*lines, ""]


def _settings_section(run_config: dict[str, Any] | None, rows: list[dict[str, Any]]) -> list[str]:
    if run_config is None:
        return ["## Training run", "", "The run's settings were not available (the checkpoint was pushed "
                "without its run directory).", ""]
    start = _start_words(run_config.get("model"))
    clients, source = client_datasets(run_config, rows)
    eval_uri = eval_dataset(run_config)
    name, what, keys = _aggregator(run_config)
    tuned = "".join(f", `{key}` = {run_config[key]}" for key in keys if key in run_config)
    lines = ["## Training run", "",
             f"Started from {start}, trained on {len(clients)} client dataset(s). The server aggregated the "
             f"clients' updates with {name} ({what}{tuned}); clients added FedProx's proximal term "
             f"(μ = {run_config.get('proximal-mu')}) to their loss. Client updates travelled encoded as "
             f"`{_setting(run_config, 'update-codec')}`, and training normalized with "
             f"{_normalization_words(run_config)}.", "", *_lora_words(run_config),
             "| setting | value |", "|---|---|"]
    shown = SETTINGS + (LORA_SETTINGS if _is_lora(run_config) else ())
    lines += [f"| `{key}` | `{run_config[key]}` |" for key in shown if key in run_config]
    lines += ["", f"Client datasets ({source}):", ""]
    lines += [f"- {_dataset_line(uri)}" for uri in clients] or ["- none listed"]
    lines += ["", f"Held-out evaluation dataset (`eval-dataset`): {_dataset_line(eval_uri) if eval_uri else 'not listed'}", ""]
    return lines


def _start_words(model: Any) -> str:
    base = hub_model(model)
    if base:
        return f"[`{base}`](https://huggingface.co/{base})"
    if model == "tiny":
        return "zk0's `tiny` preset (a small random SmolVLA for offline tests, not a useful policy)"
    if isinstance(model, str) and model and "/" not in model:
        return f"zk0's `{model}` preset (random weights, built offline; not a useful policy)"
    return "a local checkpoint (not published)"


def _setting(run_config: dict[str, Any], key: str) -> str:
    return str(run_config.get(key, LEGACY_DEFAULTS[key]))


def _aggregator(run_config: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    aggregation = _setting(run_config, "aggregation")
    return AGGREGATORS.get(aggregation, (f"`{aggregation}`", "zk0's aggregation of that name", ()))


def _is_lora(run_config: dict[str, Any] | None) -> bool:
    return run_config is not None and _setting(run_config, "trainable") == "lora"


def _travelling(run_config: dict[str, Any] | None) -> str:
    if _is_lora(run_config):
        return "LoRA adapters on SmolVLA's action expert and projections"
    return "SmolVLA's trainable weights (action expert and projections)"


def _lora_words(run_config: dict[str, Any]) -> list[str]:
    if not _is_lora(run_config):
        return []
    name, what = LORA_AGGREGATORS.get(str(run_config.get("lora-aggregation")),
                                      (f"`{run_config.get('lora-aggregation')}`", "zk0's adapter aggregation of that name"))
    targets = ("every linear layer of the action expert and the state/action/time projections"
               if run_config.get("lora-targets") == "expert" else "SmolVLA's default targets")
    return [f"The run trained LoRA adapters (`trainable = lora`: LeRobot's `wrap_with_peft` on {targets}, "
            f"rank {run_config.get('lora-rank')}, alpha {run_config.get('lora-alpha')}), aggregated as "
            f"{name} ({what}). This checkpoint's weights have the adapters merged in; the run's checkpoint "
            "directory also keeps them alone in `adapter/`, as `lerobot-train --peft...` saves them.", ""]


def _aggregated_with(run_config: dict[str, Any] | None) -> str:
    return "" if run_config is None else f" with {_aggregator(run_config)[0]}"


def _normalization_words(run_config: dict[str, Any]) -> str:
    if _setting(run_config, "normalization") == "federated":
        return ("the federation's pooled statistics (every client's `observation.state` and `action` statistics "
                "over its training episodes, weighted by frame count; `normalization = federated`)")
    return "each client's own training episodes' statistics (`normalization = local`)"


def _dataset_line(uri: str) -> str:
    repo = hub_dataset(uri)
    return f"[`{repo}`](https://huggingface.co/datasets/{repo})" if repo else LOCAL_DATASET


def _metrics_section(rows: list[dict[str, Any]], this_round: int | None) -> list[str]:
    lines = ["## Held-out evaluation", ""]
    evaluated = [r for r in rows if r.get("eval/action_mse") is not None or r.get("eval/loss") is not None]
    if not evaluated:
        return [*lines, "No server evaluation is recorded with this checkpoint.", ""]
    lines += [
        "The server's evaluation on `eval-dataset` after each round (round 0 is the starting model). "
        "`eval/action_mse`: open-loop MSE of the predicted action chunk against the recorded actions, "
        "in the dataset's units (lower is better); `eval/loss`: SmolVLA's flow-matching loss.",
        "",
        "| round | eval/action_mse | eval/loss |",
        "|---|---|---|",
    ]
    for row in evaluated:
        mark = " (this checkpoint)" if row.get("round") == this_round else ""
        lines.append(f"| {row.get('round')}{mark} | {_number(row.get('eval/action_mse'))} | {_number(row.get('eval/loss'))} |")
    return [*lines, ""]


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def _processor_stats(run_config: dict[str, Any] | None) -> str:
    """What the checkpoint's saved processors normalize with (zk0.server.global_model)."""
    if run_config is None:
        return "The saved processors normalize with the statistics the checkpoint was saved with"
    if _setting(run_config, "normalization") == "federated":
        return ("The saved processors normalize `observation.state` and `action` with the federation's pooled "
                "statistics (all clients' datasets, `normalization = federated`)")
    return ("The saved processors normalize with the statistics of the server's held-out dataset "
            "(`normalization = local`: each client trained with its own)")


def _usage_section(repo_id: str, local_backbone: bool, run_config: dict[str, Any] | None) -> list[str]:
    lines = [
        "## Use it with LeRobot",
        "",
        "```python",
        "from lerobot.policies.factory import make_pre_post_processors",
        "from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy",
        "",
        f'policy = SmolVLAPolicy.from_pretrained("{repo_id}")',
        f'preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path="{repo_id}")',
        "",
        '# observation: {"observation.state": tensor, "observation.images.<camera>": tensor, "task": str}',
        "action = postprocessor(policy.select_action(preprocessor(observation)))",
        "```",
        "",
        f"{_processor_stats(run_config)}; "
        "`make_pre_post_processors(..., preprocessor_overrides={\"normalizer_processor\": {\"stats\": stats}}, "
        "postprocessor_overrides={\"unnormalizer_processor\": {\"stats\": stats}})` uses your own dataset's.",
        "",
    ]
    if local_backbone:
        lines += ["This checkpoint's `config.json` names its VLM backbone by a local directory (zk0's `tiny` "
                  "test preset), so it loads only where that directory exists.", ""]
    return lines


def _adapter_section(info: CardInput) -> list[str]:
    """How to load the LoRA adapter that a LoRA run's push puts beside the merged weights (zk0.tools.push)."""
    if not info.adapter:
        return []
    repo, base = info.repo_id, info.adapter_base
    lines = ["## Or load the LoRA adapter over its base", "",
             "The merged weights above are all you need. This repo also holds the LoRA adapter alone "
             "(`adapter_config.json`, `adapter_model.safetensors`, as peft saves it): its base's weights plus "
             "the adapter give the same policy (up to float rounding)."]
    if base:
        lines.append(f"Its base is [`{base}`](https://huggingface.co/{base}), named in `adapter_config.json`:")
    else:
        started = _start_words(info.run_config.get("model")) if info.run_config else "a model not recorded here"
        lines.append(f"Its base is not on the Hub (the run started from {started}), so `adapter_config.json` "
                     "names no base (`base_model_name_or_path` is null): load the adapter over your own copy of "
                     "that base.")
    lines += ["", "```python", "from lerobot.configs.policies import PreTrainedConfig",
              "from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy", "from peft import PeftModel", "",
              f'config = PreTrainedConfig.from_pretrained("{repo}")  # this run\'s features',
              f'base = SmolVLAPolicy.from_pretrained("{base or "path/to/base"}", config=config)',
              f'policy = PeftModel.from_pretrained(base, "{repo}")', "```", ""]
    if base:
        lines += [f"LeRobot's `make_policy` does the same when `config.use_peft = True` and "
                  f'`config.pretrained_path = "{repo}"`: it reads the base from `adapter_config.json`.', ""]
    return lines


def _files_section(adapter: bool) -> list[str]:
    lora = (", the LoRA adapter's `adapter_config.json` and `adapter_model.safetensors` (the checkpoint's "
            "`adapter/`; its base named only by a hub id)" if adapter else "")
    return [
        "## Files",
        "",
        f"The checkpoint's `pretrained_model` files (config, weights, processors) unchanged{lora}, this card, and "
        "the run's `run_config.json`, `metrics.jsonl` and `zk0_round.json` where present. In those three, "
        "local filesystem paths (`local:` dataset URIs, `output-dir`, a local `model` path, paths in "
        "messages) are replaced by `<local path>`.",
        "",
    ]
