"""The server's per-round learning rate: constant, or linear warm-up then cosine decay over rounds."""

from __future__ import annotations

import math


def round_lr(server_round: int, num_rounds: int, *, lr: float, schedule: str, warmup_rounds: int, lr_min: float) -> float:
    """Learning rate for `server_round` (1-based) of `num_rounds`."""
    if schedule == "constant":
        return lr
    if server_round <= warmup_rounds:
        return lr * server_round / (warmup_rounds + 1)
    decay_rounds = max(num_rounds - warmup_rounds, 1)
    progress = min((server_round - warmup_rounds - 1) / max(decay_rounds - 1, 1), 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))
