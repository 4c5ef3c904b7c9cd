"""The policy: LeRobot's SmolVLA fitted to a dataset's features, and its trainable part.

`model` is a hub id (`lerobot/smolvla_base`, the real default), a local pretrained
directory, or a preset built offline with seeded random weights (zk0.policy.presets).

Only trainable parameters (action expert and projections; the VLM and vision
encoder stay frozen, as in SmolVLA's recipe; or, with run-config `trainable = "lora"`,
LoRA adapters: zk0.policy.lora) travel between server and clients.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from zk0.policy.lora import LoraSpec, wrap
from zk0.policy.presets import ModelError, pretrained_path

def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("run-config device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return device


def load_policy(model: str, dataset_meta, device: str, rename_map: dict[str, str] | None = None,
                lora: LoraSpec | None = None):
    """SmolVLA from `model`, its input/output features taken from the dataset (as `lerobot-train` does),
    cameras renamed by `rename_map` (zk0.data.cameras); with `lora`, wrapped with LoRA adapters (zk0.policy.lora)."""
    from zk0.data.cameras import renamed

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
    features = dataset_to_policy_features(renamed(dataset_meta.features, rename_map or {}))
    config.output_features = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    config.input_features = {k: f for k, f in features.items() if k not in config.output_features}
    config.device = device
    # The policy checkpoint holds the VLM weights too: don't fetch the backbone's separately.
    config.load_vlm_weights = False
    policy = SmolVLAPolicy.from_pretrained(path, config=config)
    if lora is not None:
        policy = wrap(policy, lora, path)
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
