"""LoRA through LeRobot's own PEFT support (run-config `trainable = "lora"`).

`PreTrainedPolicy.wrap_with_peft` freezes the policy and adds adapters on SmolVLA's
default targets (`_get_default_peft_targets`: the action expert's q/v projections and the
state/action/time projections) or, with `lora-targets = "expert"`, on every linear layer of
the action expert and those projections; what then has `requires_grad` is the trainable set that
zk0.policy.model moves, so the codecs, checks and aggregators see adapters like any weights.

Server and nodes wrap the same way: peft creates each adapter on the CPU and draws A
(Kaiming-uniform; B starts at zero) from torch's generator, seeded here with the run's
seed, so every process holds the same A. That makes FFA-LoRA exact: with A frozen at that
init and only B trained, the average of the B·A products is (average B)·A.

LeRobot logs "Training SmolVLA from scratch using PEFT" at each wrap because zk0 loads with
`load_vlm_weights=False`; the VLM's weights come from the policy checkpoint all the same.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

TRAINABLES = ("expert", "lora")
# fedit: average A and B separately (FedIT, the baseline; the average of B·A is only
# approximated); ffa: A frozen at its seeded init, only B trained and averaged (FFA-LoRA).
LORA_AGGREGATIONS = ("fedit", "ffa")
# lerobot: SmolVLA's defaults (`_get_default_peft_targets`); expert: every linear layer of the
# action expert (attention and MLP) plus the same projections, closer to what `expert` mode trains.
LORA_TARGETS = ("lerobot", "expert")
_PROJECTIONS = "state_proj|action_in_proj|action_out_proj|action_time_mlp_in|action_time_mlp_out"
_EXPERT_TARGETS = rf"(model\.vlm_with_expert\.lm_expert\..*\.(q|k|v|o|gate|up|down)_proj|model\.({_PROJECTIONS}))"


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    aggregation: str
    seed: int
    targets: str = "lerobot"


def wrap(policy, spec: LoraSpec, base: str):
    """`policy` wrapped with LoRA adapters (a peft `PeftModel`); `base` is where it was loaded
    from, which the adapter records so that LeRobot's `make_policy` finds its base again."""
    import torch

    policy.config.pretrained_path = base
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        overrides = {"r": spec.rank, "lora_alpha": spec.alpha}
        if spec.targets == "expert":
            overrides["target_modules"] = _EXPERT_TARGETS
        model = policy.wrap_with_peft(peft_cli_overrides=overrides)
    if spec.aggregation == "ffa":
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
    return model


def is_lora(policy) -> bool:
    from peft import PeftModel

    return isinstance(policy, PeftModel)


def save_adapter(model, directory: Path) -> None:
    """The adapter as `lerobot-train --peft...` saves it: peft's adapter files plus the policy
    config (with `use_peft`), which `make_policy` reads to load the adapter over its base."""
    model.save_pretrained(directory)
    model.config.save_pretrained(directory)


def merged(model):
    """A plain SmolVLAPolicy with the adapters folded into its weights (the model is untouched)."""
    policy = copy.deepcopy(model).merge_and_unload()
    policy.config.use_peft = False
    policy.config.pretrained_path = None
    return policy
