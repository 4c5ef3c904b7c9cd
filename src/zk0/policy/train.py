"""One client's local training: `local_steps` AdamW steps with the FedProx proximal term.

Read top to bottom: set up the optimizer as SmolVLA's recipe does (with the moments the
node kept from its last round, if it keeps them), keep one copy of the global trainable
weights on the device, then loop: batch -> normalize/tokenize -> flow-matching loss +
(mu/2)*||w - w_global||^2 -> clip -> step.

SmolVLA draws its flow-matching noise and time from torch's global generator: the batch
stream (`zk0.data.dataset.infinite_batches`) seeds it when it yields the first batch, so a local
round is a function of the weights, the data and the seed alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

BETAS = (0.9, 0.95)
WEIGHT_DECAY = 1e-10
GRAD_CLIP_NORM = 10.0


@dataclass
class TrainResult:
    loss: float
    proximal_term: float
    steps: int
    samples: int
    seconds: float
    optimizer_state: dict | None = None  # AdamW's per-parameter state, when asked to keep it

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def proximal_term(params: list[torch.Tensor], global_params: list[torch.Tensor]) -> torch.Tensor:
    """||w - w_global||^2 over the trainable parameters (squared L2 norm, as in the FedProx paper)."""
    return sum(((p - g) ** 2).sum() for p, g in zip(params, global_params, strict=True))


def train_local(policy, preprocessor, batches, *, steps: int, lr: float, proximal_mu: float, desc: str,
                optimizer_state: dict | None = None, keep_optimizer_state: bool = False,
                correction: dict | None = None) -> TrainResult:
    """`optimizer_state`: the per-parameter state (torch's `state_dict()["state"]`) a previous
    round returned; with `keep_optimizer_state` this round's is returned in the result.
    `correction`: per trainable parameter (by name), a displacement spread evenly over the steps,
    added after each optimizer step (drift correction: zk0.node.drift)."""
    device = next(policy.parameters()).device
    named = [(name, p) for name, p in policy.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    per_step = None
    if correction is not None:
        per_step = [torch.as_tensor(correction[name], dtype=torch.float32).to(p.device, p.dtype) / steps
                    for name, p in named]
    global_params = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
    if optimizer_state:
        # This round's param_groups (its lr), the kept moments and step counts.
        optimizer.load_state_dict({**optimizer.state_dict(), "state": optimizer_state})
    use_bf16 = device.type == "cuda"

    policy.train()
    loss_sum = prox_sum = 0.0
    samples = 0
    start = time.perf_counter()
    progress = tqdm(range(steps), desc=desc, unit="step", leave=False, mininterval=2.0)
    for _ in progress:
        batch = preprocessor(next(batches))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, _ = policy.forward(batch)
        prox = proximal_term(params, global_params)
        total = loss + (proximal_mu / 2.0) * prox
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)
        optimizer.step()
        if per_step is not None:
            with torch.no_grad():
                for param, delta in zip(params, per_step, strict=True):
                    param.add_(delta)

        loss_sum += loss.item()
        prox_sum += prox.item()
        samples += batch["action"].shape[0]
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    seconds = time.perf_counter() - start
    kept = optimizer.state_dict()["state"] if keep_optimizer_state else None
    return TrainResult(loss=loss_sum / steps, proximal_term=prox_sum / steps, steps=steps, samples=samples,
                       seconds=seconds, optimizer_state=kept)
