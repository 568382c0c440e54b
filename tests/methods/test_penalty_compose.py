"""GradPenalty (value and double-backward gradient) and Compose (a weighting, then a combiner)."""
from __future__ import annotations

import pytest
import torch

from graddrop_mtl.methods import MGDA, Compose, GradDrop, GradNorm, GradPenalty, Method, Sum, build_method

from ._util import gen


# -- GradPenalty ----------------------------------------------------------------------------------------------------
def test_penalty_value_and_combine():
    grads = torch.randn(3, 4, 5, generator=gen(0), dtype=torch.float64)
    gp = GradPenalty(weight=0.3)
    assert gp.create_graph is True
    assert gp.penalty(grads).item() == pytest.approx(0.3 * float((grads.sum(0) ** 2).sum()), rel=1e-12)
    torch.testing.assert_close(gp.combine(grads), grads.sum(0))
    with pytest.raises(ValueError, match='weight must be >= 0'):
        GradPenalty(weight=-1.0)


def test_penalty_gradient_closed_form():
    """L_i = c_i |A|^2 / 2: G_i = c_i A, penalty = lam (sum c)^2 |A|^2, so
    d/dA = 2 lam (sum c)^2 A and d/dc_j = 2 lam (sum c) |A|^2 -- through the per-task gradients (double backward)."""
    lam = 0.2
    a = torch.randn(2, 3, generator=gen(1), dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64, requires_grad=True)
    losses = [c[i] * a.pow(2).sum() / 2 for i in range(3)]
    grads = torch.stack([torch.autograd.grad(loss, a, create_graph=True)[0] for loss in losses])
    penalty = GradPenalty(weight=lam).penalty(grads)
    d_a, d_c = torch.autograd.grad(penalty, (a, c))
    s = c.sum().detach()
    sq = float(a.detach().pow(2).sum())
    assert penalty.item() == pytest.approx(lam * float(s) ** 2 * sq, rel=1e-12)
    torch.testing.assert_close(d_a, 2 * lam * s ** 2 * a.detach())
    torch.testing.assert_close(d_c, torch.full((3,), 2 * lam * float(s) * sq, dtype=torch.float64))


def test_penalty_gradient_gradcheck():
    """Numerical check of the double backward for nonlinear heads: penalty(A, W) with L_i = sum tanh(A W_i)."""
    def penalty_of(a, w):
        losses = [torch.tanh(a @ w[i]).sum() for i in range(w.shape[0])]
        grads = torch.stack([torch.autograd.grad(loss, a, create_graph=True)[0] for loss in losses])
        return GradPenalty(weight=0.7).penalty(grads)

    a = torch.randn(3, 4, generator=gen(2), dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 2, generator=gen(3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(penalty_of, (a, w))


# -- Compose ----------------------------------------------------------------------------------------------------------
class FixedWeights(Method):
    """A weighting that always returns the same task weights (a test double; not registered)."""

    def __init__(self, weights):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)

    def combine(self, grads, **kwargs):
        self.task_weights = self.weights
        return (grads * self.weights.view(-1, *[1] * (grads.dim() - 1))).sum(0)


def test_weights_are_applied_before_graddrop():
    """One element, gradients (3, -1), weights (0.1, 0.9): the weighted gradients (0.3, -0.9) have P = 0.25, so a
    steep GradDrop keeps the negative side, -0.9. Weighting after GradDrop would keep 3 (P = 0.75) and give 0.3."""
    grads = torch.tensor([[3.0], [-1.0]], dtype=torch.float64)
    method = Compose(weighting=FixedWeights([0.1, 0.9]), then=GradDrop(k=1e4))
    out = method.combine(grads, generator=gen(0))
    torch.testing.assert_close(out, torch.tensor([-0.9], dtype=torch.float64))
    torch.testing.assert_close(method.task_weights, torch.tensor([0.1, 0.9], dtype=torch.float64))


def test_gradnorm_then_graddrop():
    grads_seq = [torch.randn(3, 4, 5, generator=gen(s), dtype=torch.float64) for s in range(3)]
    losses_seq = [torch.tensor([1.0, 2.0, 0.5]) * torch.tensor([0.9, 0.7, 1.0]) ** s for s in range(3)]
    composed = build_method(dict(type='Compose', weighting=dict(type='GradNorm', lr=0.1),
                                 then=dict(type='GradDrop', leak=[0.0, 0.5, 0.0])))
    weighting, combiner = GradNorm(lr=0.1), GradDrop(leak=[0.0, 0.5, 0.0])
    for s, (grads, losses) in enumerate(zip(grads_seq, losses_seq)):
        out = composed.combine(grads, losses=losses, generator=gen(10 + s))
        weighting.combine(grads, losses=losses)
        w = weighting.task_weights
        expected = combiner.combine(grads * w[:, None, None], generator=gen(10 + s))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(composed.task_weights, w, rtol=0, atol=0)
    assert not torch.allclose(composed.task_weights, torch.ones(3, dtype=torch.float64))
    # the state of the weighting is the composed state
    restored = Compose(weighting=GradNorm(lr=0.1), then=GradDrop(leak=[0.0, 0.5, 0.0]))
    restored.load_state_dict(composed.state_dict())
    torch.testing.assert_close(restored.weighting.weights, composed.weighting.weights)


def test_mgda_then_graddrop():
    grads = torch.randn(4, 3, 6, generator=gen(20), dtype=torch.float64)
    method = Compose(weighting=MGDA(), then=GradDrop())
    out = method.combine(grads, generator=gen(21))
    alpha = MGDA()
    alpha.combine(grads)
    torch.testing.assert_close(method.task_weights, alpha.task_weights)
    expected = GradDrop().combine(grads * alpha.task_weights[:, None, None], generator=gen(21))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # with leak 1 the combiner passes everything: MGDA's own output
    passthrough = Compose(weighting=MGDA(), then=GradDrop(leak=1.0)).combine(grads, generator=gen(21))
    torch.testing.assert_close(passthrough, MGDA().combine(grads))


@pytest.mark.parametrize('make', [lambda: GradNorm(lr=0.1), lambda: MGDA(normalization='loss')])
def test_weigh_gives_the_weights_and_state_of_combine_without_the_weighted_sum(make, monkeypatch):
    """GradNorm's and MGDA's weigh() returns the task_weights a combine() would set, leaves the same state for the
    next step, and is what Compose calls (the weighting's combined gradient would be thrown away)."""
    a, b = make(), make()
    for s in range(3):
        grads = torch.randn(3, 4, 5, generator=gen(50 + s), dtype=torch.float64)
        losses = torch.rand(3, generator=gen(60 + s), dtype=torch.float64) + 0.5
        a.combine(grads, losses=losses)
        w = b.weigh(grads, losses=losses)
        torch.testing.assert_close(w, a.task_weights, rtol=0, atol=0)
        torch.testing.assert_close(b.task_weights, a.task_weights, rtol=0, atol=0)
        assert b.state_dict().keys() == a.state_dict().keys()
        for key, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0)
    method = Compose(weighting=make(), then=GradDrop())
    monkeypatch.setattr(type(method.weighting), 'combine',
                        lambda *args, **kwargs: pytest.fail('Compose ran the weighting\'s combine'))
    method.combine(grads, losses=losses, generator=gen(1))
    assert method.task_weights is not None


def test_compose_with_problem_dims():
    grads = torch.randn(3, 5, 4, generator=gen(30), dtype=torch.float64)
    losses = torch.rand(3, 5, generator=gen(31), dtype=torch.float64) + 0.5
    seeds = list(range(5))
    method = Compose(weighting=dict(type='MGDA', normalization='loss'), then=dict(type='GradDrop'))
    out = method.combine(grads, losses=losses, generator=[gen(s) for s in seeds], problem_dims=1)
    assert method.task_weights.shape == (3, 5)
    for r, s in enumerate(seeds):
        solo = Compose(weighting=dict(type='MGDA', normalization='loss'), then=dict(type='GradDrop'))
        torch.testing.assert_close(out[r], solo.combine(grads[:, r], losses=losses[:, r], generator=gen(s)),
                                   rtol=1e-9, atol=1e-9)


def test_task_weights_multiply_when_the_combiner_also_weights():
    grads = torch.randn(2, 7, generator=gen(40), dtype=torch.float64)
    method = Compose(weighting=FixedWeights([2.0, 0.5]), then=MGDA())
    out = method.combine(grads)
    inner = MGDA()
    expected = inner.combine(grads * torch.tensor([2.0, 0.5], dtype=torch.float64)[:, None])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(method.task_weights, torch.tensor([2.0, 0.5], dtype=torch.float64)
                               * inner.task_weights)


def test_compose_errors_stats_and_repr():
    with pytest.raises(ValueError, match='Sum sets no task_weights'):
        Compose(weighting=Sum(), then=GradDrop()).combine(torch.ones(2, 3))
    with pytest.raises(ValueError, match='PCGrad sets no task_weights'):
        Compose(weighting=dict(type='PCGrad'), then=dict(type='GradDrop')).combine(torch.ones(2, 3))
    method = Compose(weighting=GradNorm(), then=GradDrop())
    method.collect_stats = False
    assert method.then.collect_stats is False and method.collect_stats is False
    method.collect_stats = True
    method.combine(torch.randn(2, 8, generator=gen(0)), losses=torch.ones(2), generator=gen(1))
    stats = method.last_stats()
    assert 'gradnorm_loss' in stats and 'sign_purity' in stats
    assert 'GradNorm' in repr(method) and 'GradDrop' in repr(method)
