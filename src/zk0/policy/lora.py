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

`personal_adapter` puts a node's personal adapter (run-config `personalize = "adapter"`) on the
process's shared policy for the time of one training or save, the same way, and takes it off
again (peft's `unload`, or `merge_and_unload` to fold it into the weights).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class PersonalAdapter:
    """A personal LoRA adapter on a plain (expert-mode) policy: only the adapter trains."""

    def __init__(self, policy, spec: LoraSpec, base: str, shared: set[str]) -> None:
        self.shared = shared  # the policy's trainable names before the wrap froze them
        self.model = wrap(policy, spec, base)
        self.wrapped = True

    def load(self, state: dict[str, np.ndarray]) -> None:
        """The adapter's weights as `state` returned them."""
        import torch
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, {name: torch.from_numpy(np.asarray(value))
                                                        for name, value in state.items()})
        if result.unexpected_keys:
            raise ValueError(f"the kept personal adapter does not fit the model ({result.unexpected_keys[:3]})")

    def state(self) -> dict[str, np.ndarray]:
        """The adapter's weights (peft's state dict: A and B per targeted layer), float32."""
        from peft import get_peft_model_state_dict

        import torch

        return {name: value.detach().to("cpu", torch.float32).numpy().copy()
                for name, value in get_peft_model_state_dict(self.model).items()}

    def merge(self):
        """Fold the adapter into the policy's weights (peft's `merge_and_unload`) and return the
        plain policy. Only layers of the shared trainable part may carry it: those are the weights
        the caller loads back afterwards."""
        frozen = sorted(name for name in self.model.base_model.targeted_module_names
                        if f"{name}.weight" not in self.shared)
        if frozen:
            raise ValueError(f"a personal adapter on frozen layers cannot be taken back ({frozen[:3]})")
        policy = self.model.merge_and_unload()
        self.wrapped = False
        return policy

    def remove(self):
        """Take the adapter off (nothing merged) and return the plain policy."""
        policy = self.model.unload() if self.wrapped else self.model
        self.wrapped = False
        return policy


@contextmanager
def personal_adapter(policy, spec: LoraSpec, base: str, state: dict[str, np.ndarray] | None):
    """`policy` (plain SmolVLA, shared by every node this process serves) with a personal adapter
    (seeded A, zero B when `state` is None) for the `with` block; after it the adapter is off
    again and the policy's trainable set and config are as they were (LeRobot's wrap freezes every
    weight and marks the config `use_peft`; peft leaves its `peft_config` on the model, which the
    next wrap would take for a second adapter)."""
    config = policy.config
    kept = (config.pretrained_path, getattr(config, "use_peft", False))
    shared = {name for name, param in policy.named_parameters() if param.requires_grad}
    attributes = set(vars(policy))
    adapter = None
    try:
        adapter = PersonalAdapter(policy, spec, base, shared)
        if state is not None:
            adapter.load(state)
        yield adapter
    finally:
        if adapter is not None and adapter.wrapped:
            adapter.remove()
        for name, param in policy.named_parameters():
            param.requires_grad_(name in shared)
        config.pretrained_path, config.use_peft = kept
        for name in set(vars(policy)) - attributes:
            delattr(policy, name)
