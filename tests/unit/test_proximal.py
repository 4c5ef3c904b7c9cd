"""FedProx's proximal term: (mu/2)·||w - w_global||², its gradient, and its pull inside local training."""

from __future__ import annotations

import copy

import pytest
import torch

from zk0.data.dataset import infinite_batches
from zk0.policy.train import proximal_term, train_local


def test_proximal_term_is_the_squared_distance():
    """proximal_term sums (w - w_global)² over every tensor (the squared L2 norm, not the norm)."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, generator=generator), torch.randn(5, generator=generator)]
    global_params = [torch.randn(3, 4, generator=generator), torch.randn(5, generator=generator)]
    expected = sum(((p - g) ** 2).sum() for p, g in zip(params, global_params))
    assert proximal_term(params, global_params).item() == pytest.approx(expected.item())
    assert proximal_term([torch.tensor([3.0])], [torch.tensor([1.0])]).item() == pytest.approx(4.0)


def test_proximal_term_is_zero_at_the_global_weights():
    """A client that has not moved pays nothing."""
    params = [torch.ones(2, 2), torch.arange(3.0)]
    assert proximal_term(params, [p.clone() for p in params]).item() == 0.0


def test_mismatched_parameter_lists_are_an_error():
    """Comparing against a global model of another shape must not silently truncate."""
    with pytest.raises(ValueError):
        proximal_term([torch.ones(2)], [torch.ones(2), torch.ones(3)])


def test_fedprox_gradient_points_from_global_to_local():
    """d/dw (mu/2)·||w - w_g||² = mu·(w - w_g): a descent step moves w towards w_global."""
    mu = 0.5
    w = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    w_global = torch.tensor([1.0, 1.0, 0.5])
    (mu / 2 * proximal_term([w], [w_global])).backward()
    assert torch.allclose(w.grad, mu * (w.detach() - w_global))

    stepped = w.detach() - 0.1 * w.grad
    assert (stepped - w_global).norm() < (w.detach() - w_global).norm()


def test_proximal_term_keeps_local_training_near_the_global_model(tiny_policy, processors, eval_split):
    """Real SmolVLA steps on the same batches drift less from the global weights with a large mu."""
    preprocessor, _ = processors

    def drift(proximal_mu: float) -> tuple[float, float]:
        policy = copy.deepcopy(tiny_policy)
        start = [p.detach().clone() for p in policy.parameters() if p.requires_grad]
        batches = infinite_batches(eval_split, batch_size=2, num_workers=0, seed=0)
        result = train_local(policy, preprocessor, batches, steps=4, lr=1e-3, proximal_mu=proximal_mu, desc="test")
        end = [p.detach() for p in policy.parameters() if p.requires_grad]
        return proximal_term(end, start).item(), result.proximal_term

    free_drift, free_reported = drift(0.0)
    prox_drift, prox_reported = drift(1e4)
    assert free_drift > 0
    assert prox_drift < free_drift / 2
    assert free_reported > 0 and prox_reported < free_reported
