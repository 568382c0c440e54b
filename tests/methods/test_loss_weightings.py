"""The loss weightings of issue 23 (UW, IMTL-L, DWA, RLW, FAMO): against the reference code's formulas (LibMTL's
and the FAMO authors' update re-implemented here with autograd and torch.optim.Adam, as they are written), the
defining property of the learnt weightings, several ranks, and the common contract."""
from __future__ import annotations

import math

import pytest
import torch

from graddrop_mtl.methods import DWA, FAMO, GLS, IMTLL, RLW, UW, build_method
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import ThreadAllReduce, gen, run_ranks


def loss_sequence(n_steps: int, n_tasks: int, seed: int) -> list[torch.Tensor]:
    """Decreasing, noisy losses of different scales."""
    scale = torch.linspace(0.5, 4.0, n_tasks, dtype=torch.float64)
    return [scale * (1.0 + 0.2 * torch.rand(n_tasks, generator=gen(seed + s), dtype=torch.float64))
            * math.exp(-0.05 * s) for s in range(n_steps)]


# -- UW and IMTL-L: trainable parameters ---------------------------------------------------------------------------
def test_uw_gradient_is_libmtl_s():
    """The heads' loss sum_i w_i L_i + loss_term() has, in the log-variances, the gradient of LibMTL's
    ``(losses / (2 exp(s)) + s / 2).sum()``."""
    losses = torch.tensor([0.7, 2.0, 5.0])
    method = UW(num_tasks=3)
    (s,) = method.parameters()
    w = method.weigh_losses(losses)
    assert w.requires_grad
    (w * losses).sum().add(method.loss_term()).backward()
    ref_s = torch.full((3,), -0.5, requires_grad=True)
    (losses / (2 * ref_s.exp()) + ref_s / 2).sum().backward()
    torch.testing.assert_close(s.grad, ref_s.grad)
    torch.testing.assert_close(w.detach(), 0.5 * torch.exp(torch.full((3,), 0.5)))


@pytest.mark.parametrize('make,optimum', [(lambda: UW(num_tasks=3), lambda L: L.log()),
                                          (lambda: IMTLL(num_tasks=3), lambda L: -L.log())])
def test_learnt_scales_reach_their_optimum(make, optimum):
    """Optimised with the model's optimiser: UW's s -> log L (sigma^2 = L), IMTL-L's s -> -log L (e^s L = 1)."""
    losses = torch.tensor([0.3, 1.0, 4.0])
    method = make()
    opt = torch.optim.SGD(method.parameters(), lr=0.2)
    for _ in range(400):
        opt.zero_grad()
        w = method.weigh_losses(losses)
        ((w * losses).sum() + method.loss_term()).backward()
        opt.step()
    torch.testing.assert_close(method.parameters()[0].detach(), optimum(losses), rtol=1e-4, atol=1e-4)


def test_task_parameters_lazy_creation_and_in_place_restore():
    method = UW()
    assert method.parameters() == [] and method.loss_term() is None
    method.combine(torch.randn(2, 5), losses=torch.tensor([1.0, 2.0]))
    (s,) = method.parameters()
    assert s.shape == (2,) and s.requires_grad
    with torch.no_grad():
        s.add_(0.25)
    state = method.state_dict()
    fresh = UW(num_tasks=2)
    (p,) = fresh.parameters()
    fresh.load_state_dict(state)
    assert fresh.parameters()[0] is p                          # the optimiser keeps its reference
    torch.testing.assert_close(p.detach(), s.detach())
    with pytest.raises(ValueError, match='task parameters'):
        UW(num_tasks=3).load_state_dict(state)
    with pytest.raises(ValueError, match='num_tasks'):
        UW(num_tasks=0)


# -- DWA -------------------------------------------------------------------------------------------------------------
def dwa_reference(history: list[torch.Tensor], temp: float, n_tasks: int) -> torch.Tensor:
    """LibMTL's DWA: T * softmax(L(t-1) / L(t-2) / T), ones for the first two epochs."""
    if len(history) < 2:
        return torch.ones(n_tasks, dtype=torch.float64)
    w_i = history[-1] / history[-2]
    return n_tasks * torch.softmax(w_i / temp, dim=-1)


@pytest.mark.parametrize('window', [1, 3])
def test_dwa_matches_the_formula(window):
    losses = loss_sequence(12, 4, seed=1)
    method = DWA(temp=2.0, window=window)
    epoch_means: list[torch.Tensor] = []
    for step, loss in enumerate(losses):
        w = method.weigh_losses(loss)
        torch.testing.assert_close(w, dwa_reference(epoch_means, 2.0, 4), rtol=1e-12, atol=0)
        if (step + 1) % window == 0:
            epoch_means.append(torch.stack(losses[step + 1 - window:step + 1]).mean(0))
    assert float(method.task_weights.sum()) == pytest.approx(4.0)


# -- RLW -------------------------------------------------------------------------------------------------------------
def test_rlw_is_the_softmax_of_the_generators_normal_draw():
    method = RLW()
    w = method.weigh_losses(torch.ones(5), gen(3))
    torch.testing.assert_close(w, torch.softmax(torch.randn(5, generator=gen(3), dtype=torch.float64), 0).float())
    assert float(w.sum()) == pytest.approx(1.0)
    assert not torch.equal(RLW().weigh_losses(torch.ones(5), gen(4)), w)


def test_rlw_ranks_share_one_standard_normal_draw():
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = RLW()
        method.set_reducer(reduce.reducer(r))
        return method.weigh_losses(torch.ones(4, dtype=torch.float64), gen(10 + r))

    w0, w1 = run_ranks(2, rank)
    torch.testing.assert_close(w0, w1, rtol=0, atol=0)
    eps = (torch.randn(4, generator=gen(10), dtype=torch.float64)
           + torch.randn(4, generator=gen(11), dtype=torch.float64)) / math.sqrt(2)
    torch.testing.assert_close(w0, torch.softmax(eps, 0))


# -- FAMO ------------------------------------------------------------------------------------------------------------
class FamoAuthors:
    """The FAMO authors' weighting (``FAMO.get_weighted_loss`` / ``FAMO.update``) with the update fed the next
    step's losses."""

    def __init__(self, n_tasks: int, w_lr: float = 0.025, gamma: float = 0.001, min_losses: float = 0.0,
                 eps: float = 1e-8):
        self.w = torch.zeros(n_tasks, dtype=torch.float64, requires_grad=True)
        self.w_opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)
        self.min_losses, self.eps = min_losses, eps
        self.prev_loss = None

    def get_weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        self.prev_loss = losses
        z = torch.softmax(self.w, -1)
        d = losses - self.min_losses + self.eps
        c = (z / d).sum().detach()
        return (d.log() * z / c).sum()

    def update(self, curr_loss: torch.Tensor) -> None:
        delta = (self.prev_loss - self.min_losses + self.eps).log() - (curr_loss - self.min_losses + self.eps).log()
        with torch.enable_grad():
            d = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta.detach())[0]
        self.w_opt.zero_grad()
        self.w.grad = d
        self.w_opt.step()


def test_famo_matches_the_authors_update():
    """Over 20 steps: the same logits, and task weights whose weighted loss has the gradient of the authors'
    weighted log-loss (in the losses), to 1e-10."""
    n_tasks = 4
    ours, ref = FAMO(), FamoAuthors(n_tasks)
    for step, loss in enumerate(loss_sequence(20, n_tasks, seed=5)):
        if step:
            ref.update(loss)
        w = ours.weigh_losses(loss)
        x = loss.clone().requires_grad_()
        ref.get_weighted_loss(x).backward()
        torch.testing.assert_close(w, x.grad, rtol=1e-10, atol=0)
        torch.testing.assert_close(ours.state_dict()['logits'], ref.w.detach(), rtol=1e-10, atol=1e-14)


# -- GLS -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('n_tasks', [1, 3, 40])
def test_gls_weights_are_the_gradient_of_the_geometric_mean(n_tasks):
    """LibMTL's GLS loss torch.pow(losses.prod(), 1 / T): its gradient in the losses is the task weights."""
    losses = loss_sequence(1, n_tasks, seed=3)[0]
    x = losses.clone().requires_grad_()
    torch.pow(x.prod(), 1.0 / n_tasks).backward()
    torch.testing.assert_close(GLS().weigh_losses(losses), x.grad, rtol=1e-12, atol=0)


# -- all loss weightings ---------------------------------------------------------------------------------------------
LOSS_CONFIGS = [dict(type='UW', num_tasks=3), dict(type='IMTLL', num_tasks=3), dict(type='DWA'), dict(type='RLW'),
                dict(type='FAMO'), dict(type='GLS')]


@pytest.mark.parametrize('cfg', LOSS_CONFIGS, ids=lambda c: c['type'])
def test_combine_is_the_weighted_sum_and_blocks_agree(cfg):
    """combine gives sum_i w_i g_i with the weights weigh_losses gives (fresh methods stepping in lockstep), the
    blocks the same, and loss_only methods need no gradients for the weights."""
    a, b, c = build_method(cfg), build_method(cfg), build_method(cfg)
    assert a.loss_only
    shape = (2, 3, 2, 2)
    for step, loss in enumerate(loss_sequence(4, 3, seed=9)):
        g = torch.randn(3, *shape, generator=gen(step), dtype=torch.float64)
        out = a.combine(g, losses=loss, generator=gen(50 + step))
        w = b.weigh_losses(loss, gen(50 + step)).detach().double()
        torch.testing.assert_close(out, (w.view(-1, 1, 1, 1, 1) * g).sum(0))
        blocks = TaskBlocks(3, shape, base=g, base_tasks=[0, 1, 2])
        torch.testing.assert_close(c.combine_blocks(blocks, losses=loss, generator=gen(50 + step)), out)


@pytest.mark.parametrize('cfg', [dict(type='DWA'), dict(type='FAMO')], ids=lambda c: c['type'])
def test_ranks_use_the_mean_losses(cfg):
    """Two ranks: every rank's weights and state equal one process's fed the mean losses."""
    seqs = [loss_sequence(6, 3, seed=1), loss_sequence(6, 3, seed=2)]
    single = build_method(cfg)
    expected = [single.weigh_losses((x + y) / 2).clone() for x, y in zip(*seqs)]
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = build_method(cfg)
        method.set_reducer(reduce.reducer(r))
        return [method.weigh_losses(x).clone() for x in seqs[r]], method.state_dict()

    (w0, s0), (w1, s1) = run_ranks(2, rank)
    for a, b, e in zip(w0, w1, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(s0, s1, rtol=0, atol=0)


@pytest.mark.parametrize('cfg', LOSS_CONFIGS, ids=lambda c: c['type'])
def test_loss_weightings_need_losses(cfg):
    with pytest.raises(ValueError, match='losses'):
        build_method(cfg).combine(torch.ones(3, 2))
