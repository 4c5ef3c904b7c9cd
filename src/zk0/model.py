"""The policy: LeRobot's SmolVLA, from a preset, fitted to a dataset's features.

`model` is a hub id (`lerobot/smolvla_base`, the real default), a local pretrained
directory, or a preset built offline with seeded random weights:

- `tiny`: SmolVLA over a tiny SmolVLM backbone, for tests and demos;
- `smolvla-shape`: SmolVLA's real architecture and default config over SmolVLM2-500M's
  shapes (450M parameters, 100M trainable), the stand-in for `lerobot/smolvla_base`
  wherever the hub is unreachable (sizes, memory, timings; it has learnt nothing).

A preset is materialised once in zk0's cache as an ordinary pretrained directory, so
presets and hub models follow the same `from_pretrained` path.

Only trainable parameters (action expert and projections; the VLM and vision
encoder stay frozen, as in SmolVLA's recipe) travel between server and clients.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zk0.paths import build_once, cache_dir
from zk0.tiny_backbone import SMOLVLM2_500M_BACKBONE, TINY_BACKBONE, BackboneShape, ensure_backbone

TINY = "tiny"
SMOLVLA_SHAPE = "smolvla-shape"
PRESET_SEED = 0


@dataclass(frozen=True)
class Preset:
    """A SmolVLA with seeded random weights: backbone shapes plus SmolVLAConfig overrides.

    Its input features only make the saved directory complete (an SO-100 arm: 6 joint
    states and actions); `load_policy` replaces them with the dataset's.
    """

    directory: str  # name in the cache; bump its version when the saved contents change
    backbone: BackboneShape
    overrides: dict = field(default_factory=dict)  # SmolVLAConfig fields that differ from its defaults
    cameras: tuple[str, ...] = ("front",)
    image_shape: tuple[int, int, int] = (3, 480, 640)


PRESETS = {
    TINY: Preset(
        "tiny-smolvla-v2",
        TINY_BACKBONE,
        overrides={
            "num_vlm_layers": 4,
            "resize_imgs_with_padding": (64, 64),
            "chunk_size": 10,
            "n_action_steps": 10,
            "num_steps": 5,
            "tokenizer_max_length": 24,
        },
        image_shape=(3, 64, 64),
    ),
    # SmolVLAConfig's defaults are lerobot/smolvla_base's architecture: 16 of the VLM's
    # 32 layers kept, an action expert 0.75 as wide, chunks of 50 actions.
    SMOLVLA_SHAPE: Preset("smolvla-shape-v1", SMOLVLM2_500M_BACKBONE, cameras=("front", "wrist")),
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
    if model in PRESETS:
        return str(ensure_preset_policy(model, cache_dir()))
    if model.startswith("/") and not (Path(model) / "config.json").is_file():
        raise ModelError(f"model '{model}': no config.json there; give a LeRobot pretrained_model directory")
    return model


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ModelError(f"model preset '{name}' does not exist; presets are {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, root: Path):
    """The SmolVLAConfig of preset `name`, its backbone directory written under `root` if missing."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    preset = _preset(name)
    image = PolicyFeature(FeatureType.VISUAL, preset.image_shape)
    images = {f"observation.images.{camera}": image for camera in preset.cameras}
    return SmolVLAConfig(
        vlm_model_name=str(ensure_backbone(root, preset.backbone)),
        # The preset's weights are all in its own checkpoint; none come from the backbone.
        load_vlm_weights=False,
        device="cpu",
        input_features={"observation.state": PolicyFeature(FeatureType.STATE, (6,)), **images},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (6,))},
        **preset.overrides,
    )


def seeded_policy(config):
    """SmolVLAPolicy(config) with the presets' seeded random weights, on torch's current default device.

    Under `with torch.device("meta"):` it allocates nothing, which counts a real-size
    model's parameters in seconds.
    """
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    with torch.random.fork_rng():
        torch.manual_seed(PRESET_SEED)
        return SmolVLAPolicy(config)


def ensure_preset_policy(name: str, root: Path) -> Path:
    """Write preset `name` under `root` once; every process then loads the same weights.

    The directory is a complete LeRobot pretrained_model, processors included, so that
    `lerobot-train --policy.path=<it>` starts from it (it refuses a directory without them).
    The processors carry no statistics: whoever uses them supplies a dataset's, as
    `lerobot-train` does with its training dataset's. At real size (`smolvla-shape`)
    the build takes ~7 GB of memory and writes 1.8 GB.
    """
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    preset = _preset(name)
    backbone = ensure_backbone(root, preset.backbone)

    def build(staging: Path) -> None:
        config = preset_config(name, root)
        seeded_policy(config).save_pretrained(staging)
        for processor in make_smolvla_pre_post_processors(config, dataset_stats=None):
            processor.save_pretrained(staging)

    # The backbone's name is part of the directory's: its path is recorded in config.json.
    return build_once(root / f"{preset.directory}-{backbone.name}", "model.safetensors", build)


def ensure_tiny_policy(root: Path) -> Path:
    """The `tiny` preset's directory under `root` (built once)."""
    return ensure_preset_policy(TINY, root)


def load_policy(model: str, dataset_meta, device: str, rename_map: dict[str, str] | None = None):
    """SmolVLA from `model`, its input/output features taken from the dataset (as `lerobot-train` does),
    cameras renamed by `rename_map` (zk0.cameras)."""
    from zk0.cameras import renamed

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
