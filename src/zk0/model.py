"""The policy: LeRobot's SmolVLA, from a preset, fitted to a dataset's features.

`model` is a hub id (`lerobot/smolvla_base`, the real default), a local pretrained
directory, or `tiny`: a SmolVLA over a tiny locally generated SmolVLM backbone,
materialised once in the cache as an ordinary pretrained directory, so both follow
the same `from_pretrained` path.

Only trainable parameters (action expert and projections; the VLM and vision
encoder stay frozen, as in SmolVLA's recipe) travel between server and clients.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from zk0.paths import build_once, cache_dir
from zk0.tiny_backbone import ensure_tiny_backbone

TINY = "tiny"
TINY_SEED = 0
TINY_OVERRIDES = {
    "load_vlm_weights": False,
    "num_vlm_layers": 4,
    "num_expert_layers": -1,
    "resize_imgs_with_padding": (64, 64),
    "chunk_size": 10,
    "n_action_steps": 10,
    "num_steps": 5,
    "tokenizer_max_length": 24,
}


class ModelError(ValueError):
    """A model preset or directory that cannot be used."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("run-config device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return device


def pretrained_path(model: str) -> str:
    """The `from_pretrained` argument for a model preset."""
    if model == TINY:
        return str(ensure_tiny_policy(cache_dir()))
    if model.startswith("/") and not (Path(model) / "config.json").is_file():
        raise ModelError(f"model '{model}': no config.json there; give a LeRobot pretrained_model directory")
    return model


# Bump when the cached tiny policy's contents change, so stale caches are rebuilt beside them.
TINY_POLICY_VERSION = 2


def ensure_tiny_policy(root: Path) -> Path:
    """Write the tiny SmolVLA (seeded random weights) once; every process then loads the same weights.

    The directory is a complete LeRobot pretrained_model, processors included, so that
    `lerobot-train --policy.path=<it>` starts from it (it refuses a directory without them).
    The processors carry no statistics: whoever uses them supplies a dataset's, as
    `lerobot-train` does with its training dataset's.
    """
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    backbone = ensure_tiny_backbone(root)

    def build(staging: Path) -> None:
        config = SmolVLAConfig(
            vlm_model_name=str(backbone),
            device="cpu",
            input_features={
                "observation.state": PolicyFeature(FeatureType.STATE, (6,)),
                "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, 64, 64)),
            },
            output_features={"action": PolicyFeature(FeatureType.ACTION, (6,))},
            **TINY_OVERRIDES,
        )
        with torch.random.fork_rng():
            torch.manual_seed(TINY_SEED)
            SmolVLAPolicy(config).save_pretrained(staging)
        for processor in make_smolvla_pre_post_processors(config, dataset_stats=None):
            processor.save_pretrained(staging)

    name = f"tiny-smolvla-v{TINY_POLICY_VERSION}-{backbone.name}"
    return build_once(root / name, "model.safetensors", build)


def load_policy(model: str, dataset_meta, device: str):
    """SmolVLA from `model`, its input/output features taken from the dataset (as `lerobot-train` does)."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.configs.types import FeatureType
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    path = pretrained_path(model)
    try:
        config = PreTrainedConfig.from_pretrained(path)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelError(f"model '{model}': cannot load its config ({type(err).__name__}: {reason})") from None
    if config.type != "smolvla":
        raise ModelError(f"model '{model}' is a '{config.type}' policy; zk0 trains SmolVLA")
    features = dataset_to_policy_features(dataset_meta.features)
    config.output_features = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    config.input_features = {k: f for k, f in features.items() if k not in config.output_features}
    config.device = device
    # The policy checkpoint holds the VLM weights too: don't fetch the backbone's separately.
    config.load_vlm_weights = False
    policy = SmolVLAPolicy.from_pretrained(path, config=config)
    return policy.to(device)


def make_processors(policy, stats: dict):
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    return make_smolvla_pre_post_processors(policy.config, dataset_stats=stats)


def trainable_names(policy) -> list[str]:
    return [name for name, param in policy.named_parameters() if param.requires_grad]


def get_trainable(policy) -> "OrderedDict[str, np.ndarray]":
    """Trainable parameters as float32 numpy arrays (the wire format; bf16 cannot travel)."""
    return OrderedDict(
        (name, param.detach().to("cpu", torch.float32).numpy())
        for name, param in policy.named_parameters()
        if param.requires_grad
    )


def set_trainable(policy, arrays: dict[str, np.ndarray]) -> None:
    """Load received trainable parameters in place; a missing or extra name is an error."""
    params = dict(policy.named_parameters())
    expected = set(trainable_names(policy))
    if set(arrays) != expected:
        missing = sorted(expected - set(arrays))[:3]
        extra = sorted(set(arrays) - expected)[:3]
        raise ModelError(f"received parameters do not match the model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, value in arrays.items():
            param = params[name]
            param.copy_(torch.from_numpy(np.asarray(value)).to(param.device, param.dtype))
