"""Model presets: SmolVLA built offline with seeded random weights, materialised once in
zk0's cache as an ordinary LeRobot pretrained directory (so presets and hub models follow
the same `from_pretrained` path).

- `tiny`: SmolVLA over a tiny SmolVLM backbone, for tests and demos;
- `smolvla-shape`: SmolVLA's real architecture and default config over SmolVLM2-500M's
  shapes (450M parameters, 100M trainable), the stand-in for `lerobot/smolvla_base`
  wherever the hub is unreachable (sizes, memory, timings; it has learnt nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zk0.util.paths import build_once, cache_dir
from zk0.policy.tiny_backbone import SMOLVLM2_500M_BACKBONE, TINY_BACKBONE, BackboneShape, ensure_backbone

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
    import torch  # here, with LeRobot: a built preset is found without either
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
    preset = _preset(name)
    backbone = ensure_backbone(root, preset.backbone)

    def build(staging: Path) -> None:
        # Imported here: a built preset is found without LeRobot (~10 s of imports).
        from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

        config = preset_config(name, root)
        seeded_policy(config).save_pretrained(staging)
        for processor in make_smolvla_pre_post_processors(config, dataset_stats=None):
            processor.save_pretrained(staging)

    # The backbone's name is part of the directory's: its path is recorded in config.json.
    return build_once(root / f"{preset.directory}-{backbone.name}", "model.safetensors", build)


def ensure_tiny_policy(root: Path) -> Path:
    """The `tiny` preset's directory under `root` (built once)."""
    return ensure_preset_policy(TINY, root)
