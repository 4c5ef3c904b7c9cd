"""The held-out metric, shared by the server and the clients.

Deterministic: the flow-matching noise and time and the denoising start noise come
from a generator seeded per batch, and the samples are fixed, so the same weights on
the same data give the same numbers. Two figures:
- `loss`: SmolVLA's flow-matching training loss (normalized units);
- `action_mse`: open-loop MSE of the predicted action chunk against the recorded
  actions, in the dataset's own units (after the postprocessor unnormalizes),
  ignoring chunk steps past the episode end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EVAL_SEED = 1234


@dataclass
class EvalResult:
    loss: float
    action_mse: float
    samples: int


def _flow_matching_time(generator: torch.Generator, batch_size: int) -> torch.Tensor:
    # SmolVLA samples t ~ Beta(1.5, 1) scaled to [0.001, 1]; Beta(1.5, 1) has CDF x^1.5,
    # so inverse-CDF sampling from a seeded uniform gives the same law, reproducibly.
    u = torch.rand(batch_size, generator=generator)
    return u ** (1.0 / 1.5) * 0.999 + 0.001


@torch.no_grad()
def evaluate_policy(policy, preprocessor, postprocessor, batches) -> EvalResult:
    config = policy.config
    device = next(policy.parameters()).device
    policy.eval()
    loss_sum = sq_err_sum = 0.0
    valid_sum = 0
    samples = 0
    for index, raw in enumerate(batches):
        generator = torch.Generator().manual_seed(EVAL_SEED + index)
        target = raw["action"].clone()
        valid = ~raw["action_is_pad"] if "action_is_pad" in raw else torch.ones(target.shape[:2], dtype=torch.bool)
        batch = preprocessor(raw)
        size = target.shape[0]
        shape = (size, config.chunk_size, config.max_action_dim)
        noise = torch.randn(shape, generator=generator).to(device)
        time = _flow_matching_time(generator, size).to(device)
        loss, _ = policy.forward(dict(batch), noise=noise, time=time)

        policy.reset()
        start_noise = torch.randn(shape, generator=generator).to(device)
        predicted = postprocessor(policy.predict_action_chunk(dict(batch), noise=start_noise))
        sq_err = ((predicted.float().cpu() - target.float()) ** 2).mean(dim=-1)

        loss_sum += loss.item() * size
        sq_err_sum += (sq_err * valid).sum().item()
        valid_sum += int(valid.sum())
        samples += size
    if samples == 0:
        raise ValueError("evaluation got no samples")
    return EvalResult(loss=loss_sum / samples, action_mse=sq_err_sum / max(valid_sum, 1), samples=samples)
