"""Held-out evaluation is deterministic: the same weights on the same data give identical numbers,
so a change between rounds is the model's, never the noise's."""

from __future__ import annotations

import math

import torch

from zk0.data.dataset import fixed_batches
from zk0.policy.evaluate import evaluate_policy
from zk0.policy.model import get_trainable, load_policy, set_trainable

BATCH_SIZE, MAX_BATCHES = 4, 2


def evaluate(policy, processors, eval_split):
    preprocessor, postprocessor = processors
    batches = fixed_batches(eval_split, BATCH_SIZE, num_workers=0, max_batches=MAX_BATCHES)
    return evaluate_policy(policy, preprocessor, postprocessor, batches)


def test_fixed_batches_pick_the_same_spread_out_samples(eval_split):
    """Evaluation reads `batch_size * max_batches` evenly spaced samples, in order, every time."""
    first = [batch["index"].tolist() for batch in fixed_batches(eval_split, BATCH_SIZE, 0, MAX_BATCHES)]
    again = [batch["index"].tolist() for batch in fixed_batches(eval_split, BATCH_SIZE, 0, MAX_BATCHES)]
    indices = sum(first, [])
    assert first == again
    assert len(indices) == BATCH_SIZE * MAX_BATCHES
    assert indices == sorted(indices) and indices[0] == 0 and indices[-1] == len(eval_split) - 1


def test_same_weights_same_data_same_numbers(tiny_policy, processors, eval_split):
    """Two evaluations of one policy agree exactly, even with the global RNG moved in between."""
    first = evaluate(tiny_policy, processors, eval_split)
    torch.manual_seed(12345)
    torch.rand(100)
    second = evaluate(tiny_policy, processors, eval_split)
    assert (first.loss, first.action_mse, first.samples) == (second.loss, second.action_mse, second.samples)
    assert first.samples == BATCH_SIZE * MAX_BATCHES
    assert math.isfinite(first.loss) and first.action_mse > 0


def test_a_fresh_load_of_the_same_weights_scores_the_same(tiny_policy, processors, eval_split, eval_data):
    """The server and a client each load the policy themselves; their numbers for one model must match."""
    other = load_policy("tiny", eval_data.meta, "cpu")
    set_trainable(other, get_trainable(tiny_policy))
    first = evaluate(tiny_policy, processors, eval_split)
    second = evaluate(other, processors, eval_split)
    assert (first.loss, first.action_mse) == (second.loss, second.action_mse)


def test_different_weights_give_different_numbers(tiny_policy, processors, eval_split):
    """Determinism is not a constant: perturbing the trainable weights changes both metrics."""
    before = evaluate(tiny_policy, processors, eval_split)
    with torch.no_grad():
        for param in tiny_policy.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    after = evaluate(tiny_policy, processors, eval_split)
    assert after.loss != before.loss
    assert after.action_mse != before.action_mse
