"""GradNorm: the weight update worked step by step from the formula in its docstring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graddrop_mtl.methods import GradNorm

from ._util import gen


def hand_step(w: np.ndarray, grads: np.ndarray, losses: np.ndarray, initial: np.ndarray, *, alpha: float,
              lr: float, min_weight: float = 1e-3) -> np.ndarray:
    """One GradNorm update as the docstring states it, in plain numpy.

    G_i = |w_i grad_A L_i|, r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)), target = mean(G) r_i^alpha (constant),
    dL_grad/dw_i = sign(G_i - target_i) |grad_A L_i|, w <- max(w - lr dL_grad/dw, min_weight), renormalised to sum T.
    """
    t = len(w)
    raw = np.array([np.linalg.norm(grads[i].ravel()) for i in range(t)])
    big_g = w * raw
    ratio = losses / initial
    r = ratio / ratio.mean()
    target = big_g.mean() * r ** alpha
    dw = np.sign(big_g - target) * raw
    new = np.maximum(w - lr * dw, min_weight)
    return new * t / new.sum()


@pytest.mark.parametrize('n_tasks,alpha,lr', [(2, 1.5, 0.1), (3, 1.5, 0.05), (3, 0.5, 0.2)])
def test_weight_updates_worked_by_hand(n_tasks, alpha, lr):
    scales = torch.tensor([1.0, 3.0, 0.5][:n_tasks], dtype=torch.float64)
    grads_seq = [torch.randn(n_tasks, 2, 4, generator=gen(s), dtype=torch.float64) * scales[:, None, None]
                 for s in range(4)]
    losses_seq = [np.array(v[:n_tasks]) for v in ([1.0, 2.0, 0.5], [0.8, 1.9, 0.3], [0.5, 1.7, 0.28],
                                                  [0.45, 1.2, 0.2])]
    method = GradNorm(alpha=alpha, lr=lr)
    w = np.ones(n_tasks)
    initial = losses_seq[0]
    for grads, losses in zip(grads_seq, losses_seq):
        out = method.combine(grads, losses=torch.tensor(losses))
        # this step uses the current weights ...
        np.testing.assert_allclose(method.task_weights.numpy(), w, rtol=1e-12)
        np.testing.assert_allclose(out.numpy(), np.einsum('t,t...->...', w, grads.numpy()), rtol=1e-12)
        # ... and then updates them for the next one
        w = hand_step(w, grads.numpy(), losses, initial, alpha=alpha, lr=lr)
        np.testing.assert_allclose(method.weights.numpy(), w, rtol=1e-12)
        assert method.weights.sum().item() == pytest.approx(n_tasks, rel=1e-12)
    assert not np.allclose(w, 1.0)                      # the weights did move
    np.testing.assert_array_equal(method.initial_losses.numpy(), initial)   # L(0) is the first call's


def test_first_step_moves_the_larger_gradient_down():
    """At the first call all r_i = 1: the target is the mean norm, so the task with the larger gradient loses
    weight and the other gains exactly as much (two tasks, no clamping)."""
    grads = torch.stack([torch.full((5,), 2.0), torch.full((5,), 0.5)]).double()
    method = GradNorm(lr=0.01)
    method.combine(grads, losses=torch.tensor([1.0, 1.0]))
    raw = grads.norm(dim=1)
    # w = 1 - lr * sign * raw: (1 - 0.01 * |g_0|, 1 + 0.01 * |g_1|), then renormalised to sum 2
    new = torch.tensor([1 - 0.01 * raw[0], 1 + 0.01 * raw[1]], dtype=torch.float64)
    torch.testing.assert_close(method.weights, new * 2 / new.sum())
    assert method.weights[0] < 1 < method.weights[1]


def test_min_weight_clamp_before_renormalisation():
    grads = torch.tensor([[10.0] * 4, [0.1] * 4, [0.2] * 4], dtype=torch.float64)
    method = GradNorm(lr=1.0, min_weight=0.05)
    method.combine(grads, losses=torch.tensor([1.0, 1.0, 1.0]))
    # task 0: 1 - 1.0 * 20 < 0 -> 0.05; tasks 1 and 2 (below the mean norm): 1 + |g_i|
    new = np.array([0.05, 1 + 0.2, 1 + 0.4])
    np.testing.assert_allclose(method.weights.numpy(), new * 3 / new.sum(), rtol=1e-12)


def test_state_dict_round_trip():
    grads_seq = [torch.randn(3, 6, generator=gen(s), dtype=torch.float64) for s in range(5)]
    losses_seq = [torch.tensor([1.0, 2.0, 3.0]) * (0.9 ** s) * torch.tensor([1.0, 1.1 ** s, 0.8 ** s])
                  for s in range(5)]
    a = GradNorm()
    for grads, losses in zip(grads_seq[:3], losses_seq[:3]):
        a.combine(grads, losses=losses)
    state = a.state_dict()
    b = GradNorm()
    b.load_state_dict(state)
    for grads, losses in zip(grads_seq[3:], losses_seq[3:]):
        torch.testing.assert_close(b.combine(grads, losses=losses), a.combine(grads, losses=losses), rtol=0, atol=0)
        torch.testing.assert_close(b.weights, a.weights, rtol=0, atol=0)
    torch.testing.assert_close(b.initial_losses, a.initial_losses)
    # a fresh method would have taken L(0) from its first call instead
    fresh = GradNorm()
    fresh.combine(grads_seq[3], losses=losses_seq[3])
    assert not torch.equal(fresh.initial_losses, b.initial_losses)


def test_errors():
    with pytest.raises(ValueError, match='losses'):
        GradNorm().combine(torch.ones(2, 3))
    with pytest.raises(ValueError, match='lr must be > 0'):
        GradNorm(lr=0.0)
    method = GradNorm()
    method.combine(torch.ones(2, 3), losses=torch.ones(2))
    with pytest.raises(ValueError, match=r'\(2,\).*\(3,\)'):
        method.combine(torch.ones(3, 3), losses=torch.ones(3))
    with pytest.raises(KeyError, match='unknown keys'):
        GradNorm().load_state_dict({'weights': None, 'momentum': 1})


def test_replicas_are_independent():
    grads = torch.randn(3, 4, 5, generator=gen(9), dtype=torch.float64)    # 4 replicas of 5 elements
    losses = [torch.rand(3, 4, generator=gen(10 + s), dtype=torch.float64) + 0.5 for s in range(3)]
    batch = GradNorm(lr=0.1)
    solos = [GradNorm(lr=0.1) for _ in range(4)]
    for step in range(3):
        g = grads * (1 + step)
        out = batch.combine(g, losses=losses[step], problem_dims=1)
        for r, solo in enumerate(solos):
            torch.testing.assert_close(out[r], solo.combine(g[:, r], losses=losses[step][:, r]))
            torch.testing.assert_close(batch.weights[:, r], solo.weights)
    assert batch.weights.shape == (3, 4)
    torch.testing.assert_close(batch.weights.sum(0), torch.full((4,), 3.0, dtype=torch.float64))
