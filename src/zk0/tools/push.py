"""`zk0 push`: share a checkpoint on the Hugging Face Hub, with a LeRobot model card.

The source is a run directory (its `best` checkpoint unless told otherwise), a checkpoint
directory (`checkpoints/000005`) or its `pretrained_model` directory. The uploaded folder
is exactly what `--dry-run DIR` writes: the `pretrained_model` files unchanged, README.md
(the card), and the run's run_config.json, metrics.jsonl and zk0_round.json with local
filesystem paths replaced, so a push never reveals the admin's directory layout. The run
directory is only read; the upload is staged in a temporary directory that is always removed.

A LoRA run's checkpoint (`trainable = lora`) also has `adapter/`; its adapter files go to the
folder's root beside the merged weights, where LeRobot's own PEFT push puts them and where
peft's `PeftModel.from_pretrained(base, repo_id)` and LeRobot's `make_policy` (with `use_peft`)
read them: a subfolder would be out of reach of `make_policy`. The root's config.json stays the
merged policy's (no `use_peft`), so `SmolVLAPolicy.from_pretrained(repo_id)` needs no base. The
adapter's base (`base_model_name_or_path`) is kept only when it is a hub id; a local base
(a preset, a directory) becomes null, which loaders report as a missing base instead of
looking for a path of this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zk0.run.checkpoint import ADAPTER
from zk0.tools.model_card import CardInput, build_card, hub_model
from zk0.run.directory import LINKS, PRETRAINED, ROUND_RECORD, RunDir, read_json, round_of_name

LOCAL_PATH = "<local path>"
# An absolute path inside a string: a `/` not preceded by a name character (so `owner/name`
# and URLs' `//host/x` stay) and not doubled, up to whitespace, a quote or a separator.
_ABS_PATH = re.compile(r"(?<![\w.~/-])/(?!/)[^\s'\",;)\]}]+")
# peft's file names (peft.utils.constants CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME).
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_SOURCE_HINT = "give a run directory, a checkpoint directory (checkpoints/000005) or its pretrained_model directory"


class PushError(ValueError):
    """A push that cannot go ahead: bad input, no token, Hub offline or refusing."""


@dataclass(frozen=True)
class Selected:
    """The checkpoint a push uploads."""

    model_dir: Path  # the pretrained_model directory
    adapter_dir: Path | None  # a LoRA run's adapter directory, beside model_dir
    round: int | None
    run: RunDir | None  # None when the checkpoint is not inside a run directory
    labels: tuple[str, ...]  # which of the run's `best`/`last` links point at it

    def describe(self) -> str:
        name = "round unknown" if self.round is None else f"round {self.round}"
        return f"{name} ({', '.join(self.labels)})" if self.labels else name


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("needs exactly one '/'")
        validate_repo_id(repo_id)
    except HFValidationError:
        raise PushError(
            f"--repo-id '{repo_id}' is not a Hub model id: use owner/name (letters, digits, '-', '_', '.'; "
            "no '--' or '..'; at most 96 characters), e.g. --repo-id you/zk0-smolvla"
        ) from None


def select_checkpoint(source: Path, checkpoint: str | None = None) -> Selected:
    """Find the checkpoint named by `source` (and, for a run directory, `checkpoint`: best, last or a round)."""
    if not source.exists():
        raise PushError(f"{source} does not exist; {_SOURCE_HINT}")
    path = source.resolve()
    if RunDir(path).is_run():
        model_dir = _pick(RunDir(path), checkpoint or "best") / PRETRAINED
    elif checkpoint is not None:
        raise PushError(f"--checkpoint chooses among a run directory's checkpoints, and {source} is not a run "
                        "directory; drop --checkpoint or give the run directory")
    elif (path / PRETRAINED).is_dir():
        model_dir = path / PRETRAINED
    elif (path / "config.json").is_file():
        model_dir = path
    else:
        raise PushError(f"{source} is not a zk0 run or checkpoint; {_SOURCE_HINT}")
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise PushError(f"{model_dir} has no {name}: not a complete LeRobot checkpoint")
    # Only a checkpoint in zk0's layout (checkpoints/<round>/pretrained_model) belongs to a run.
    checkpoint_dir = model_dir.parent if model_dir.name == PRETRAINED else None
    run = None
    if checkpoint_dir is not None:
        owner = RunDir(checkpoint_dir.parent.parent)
        run = owner if owner.checkpoints == checkpoint_dir.parent else None
    labels = tuple(name for name in LINKS if run is not None and run.link(name).resolve() == checkpoint_dir)
    adapter_dir = checkpoint_dir / ADAPTER if checkpoint_dir is not None else None
    if adapter_dir is not None and not adapter_dir.is_dir():
        adapter_dir = None  # not a LoRA run's checkpoint
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if adapter_dir and not (adapter_dir / name).is_file()]
    if missing:
        raise PushError(f"{adapter_dir} has no {missing[0]}: not a complete LoRA adapter")
    return Selected(model_dir, adapter_dir, _round_of(checkpoint_dir) if checkpoint_dir else None, run, labels)


def _pick(run: RunDir, which: str) -> Path:
    rounds = run.checkpoint_rounds()
    if not rounds:
        raise PushError(f"run {run.path} has no checkpoints yet: they are written every checkpoint-every rounds "
                        "and at the last round")
    available = ", ".join(str(r) for r in rounds)
    if which in LINKS:
        link = run.link(which)
        if not link.is_dir():
            why = " (the server evaluated no checkpointed round)" if which == "best" else ""
            raise PushError(f"run {run.path} has no '{which}' checkpoint{why}; use --checkpoint with a round: {available}")
        return link.resolve()
    if not (which.isascii() and which.isdigit()):
        raise PushError(f"--checkpoint '{which}' is not best, last or a round number (this run has {available})")
    chosen = run.checkpoint(int(which))
    if not chosen.is_dir():
        raise PushError(f"run {run.path} has no checkpoint for round {int(which)}; it has rounds {available}")
    return chosen.resolve()


def _round_of(checkpoint_dir: Path) -> int | None:
    record = _read_json(checkpoint_dir / ROUND_RECORD)
    if isinstance(record, dict) and isinstance(record.get("round"), int):
        return record["round"]
    return round_of_name(checkpoint_dir.name)


def _read_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def redact(value: Any) -> Any:
    """`value` with every absolute filesystem path in its strings (and dict keys) replaced by LOCAL_PATH."""
    if isinstance(value, str):
        return _ABS_PATH.sub(LOCAL_PATH, value)
    if isinstance(value, dict):
        return {redact(key): redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def redact_run_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """The run config without local paths: whole `local:` URIs and output-dir, even with spaces in them."""
    clean = dict(run_config)
    for key in ("datasets", "eval-dataset"):
        if isinstance(clean.get(key), str):
            clean[key] = ",".join(
                f"local:{LOCAL_PATH}" if part.strip().startswith("local:") else part
                for part in clean[key].split(",")
            )
    if "output-dir" in clean:
        clean["output-dir"] = LOCAL_PATH
    if isinstance(clean.get("model"), str) and clean["model"].startswith("/"):
        clean["model"] = LOCAL_PATH
    return redact(clean)


def adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's config as uploaded: its base named only by a hub id (else null), no local paths."""
    config = read_json(adapter_dir / ADAPTER_CONFIG)
    if not isinstance(config, dict):
        raise PushError(f"{adapter_dir / ADAPTER_CONFIG} is not a peft adapter config")
    base = config.get("base_model_name_or_path")
    return redact({**config, "base_model_name_or_path": hub_model(base if isinstance(base, str) else None)})


def plan_folder(selected: Selected, repo_id: str) -> dict[str, Path | str]:
    """What the uploaded folder holds: relative name -> file to copy unchanged, or text to write."""
    run = selected.run
    saved = run.read_record() if run else None
    run_config = saved["run_config"] if saved else None
    metrics = run.read_metrics() if run else []
    config = _read_json(selected.model_dir / "config.json") or {}
    plan: dict[str, Path | str] = {
        path.relative_to(selected.model_dir).as_posix(): path
        for path in sorted(selected.model_dir.rglob("*")) if path.is_file()
    }
    adapter = adapter_config(selected.adapter_dir) if selected.adapter_dir else None
    if adapter is not None:
        plan[ADAPTER_CONFIG] = json.dumps(adapter, indent=2)
        plan[ADAPTER_WEIGHTS] = selected.adapter_dir / ADAPTER_WEIGHTS
    card = build_card(CardInput(
        repo_id=repo_id,
        round=selected.round,
        labels=selected.labels,
        run_config=run_config,
        metrics=metrics,
        local_backbone=str(config.get("vlm_model_name", "")).startswith("/"),
        adapter=adapter is not None,
        adapter_base=adapter["base_model_name_or_path"] if adapter else None,
    ))
    plan["README.md"] = str(card)
    if saved is not None:
        plan[run.record.name] = json.dumps({**redact(saved), "run_config": redact_run_config(run_config)}, indent=2)
    if metrics:
        plan[run.metrics.name] = "".join(json.dumps(redact(row)) + "\n" for row in metrics)
    in_layout = selected.model_dir.name == PRETRAINED
    record = _read_json(selected.model_dir.parent / ROUND_RECORD) if in_layout else None
    if record is not None:
        plan[ROUND_RECORD] = json.dumps(redact(record), indent=2)
    return plan


def _write_folder(plan: dict[str, Path | str], folder: Path) -> None:
    for name, content in plan.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_text(content)


def dry_run(source: Path, repo_id: str, dest: Path, checkpoint: str | None = None) -> Selected:
    """Write into `dest` (new or empty) exactly the folder `push` would upload; upload nothing."""
    check_repo_id(repo_id)
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise PushError(f"--dry-run {dest} exists and is not an empty directory; give a new or empty directory")
    selected = select_checkpoint(source, checkpoint)
    plan = plan_folder(selected, repo_id)
    dest = dest.resolve()
    staging = dest.with_name(f".{dest.name}.partial")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _write_folder(plan, staging)
        if dest.exists():
            dest.rmdir()
        os.rename(staging, dest)
    except OSError as err:
        raise PushError(f"cannot write --dry-run {dest}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; left only by a failure
    return selected


def push(source: Path, repo_id: str, checkpoint: str | None = None, public: bool = False) -> tuple[Selected, str]:
    """Create (or reuse) the Hub model repo, private unless `public`, and upload the folder; return its URL."""
    check_repo_id(repo_id)
    selected = select_checkpoint(source, checkpoint)
    plan = plan_folder(selected, repo_id)
    _check_hub_access()
    with tempfile.TemporaryDirectory(prefix="zk0-push-") as tmp:
        folder = Path(tmp) / "upload"
        try:
            _write_folder(plan, folder)
        except OSError as err:
            raise PushError(f"cannot stage the upload in {tmp}: {err.strerror or err}; free space or set TMPDIR") from None
        url = _upload(folder, repo_id, selected, public)
    return selected, url


def _check_hub_access() -> None:
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise PushError("the Hugging Face Hub is offline (HF_HUB_OFFLINE is set): unset it to upload, or use "
                        "--dry-run DIR to write the folder without uploading")
    if get_token() is None:
        raise PushError("no Hugging Face token: run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN "
                        "to a token with write access")


def _upload(folder: Path, repo_id: str, selected: Selected, public: bool) -> str:
    import requests
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi()
    try:
        repo_url = api.create_repo(repo_id, private=not public, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_url.repo_id,
            repo_type="model",
            folder_path=folder,
            commit_message=f"zk0 push: SmolVLA checkpoint, {selected.describe()}",
        )
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = {
            401: "the token was refused: log in again (`hf auth login`) or set HF_TOKEN",
            403: f"the token may not write to '{repo_id.split('/')[0]}': use a token with write access there",
        }.get(status, "check the repo id and your access to it")
        raise PushError(f"the Hub refused the upload to {repo_id} ({_one_line(err)}); {hint}") from None
    except OfflineModeIsEnabled:
        raise PushError("the Hugging Face Hub is offline (HF_HUB_OFFLINE is set): unset it to upload, or use "
                        "--dry-run DIR to write the folder without uploading") from None
    except requests.RequestException as err:
        raise PushError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(err).__name__}); "
                        "check the network and retry, or use --dry-run DIR") from None
    return str(repo_url)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split("\n", 1)[0].split())
