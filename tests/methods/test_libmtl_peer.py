"""The loss weightings (and CAGrad, PCGrad, IMTL) against LibMTL 1.1.5, the peer library that has them
(requirements/tests-nodeps.txt), and DB-MTL and STCH, which that release lacks, against re-implementations of
LibMTL's later ``DB_MTL`` and ``STCH`` run through the same adapter, and against their defining properties.

The adapter. A LibMTL weighting is a mixin of LibMTL's model (``AbsWeighting``, an ``nn.Module``): its trainer calls
``model.backward(losses, **weight_args)`` between ``optimizer.zero_grad()`` and ``optimizer.step()``, and the
weighting leaves the update in the ``.grad`` of the shared parameters (``get_share_params()``) and of the task
heads. :class:`Peer` is such a model with one shared parameter vector ``theta`` (D values) and one head scalar per
task, both zero, and task losses ``L_i = L0_i + g_i . theta + head_i``: the losses have the given values ``L0``,
their gradients at the shared parameters are the given ``g_i`` (the per-task gradients at our shared activation)
and each head's gradient is the weight the method puts on its task's loss. So ``theta.grad`` is compared with our
``combine(g, losses=L0)`` and ``heads.grad`` with our ``task_weights`` (or 1 where the heads keep their own
gradients). LibMTL computes in float32 (its gradient buffers are float32); ours run in float64 on the same
values, hence the tolerances of float32 rounding (rtol 1e-5 unless a test says otherwise).

Conventions adapted, not differences of the methods: LibMTL's DWA reads epoch means from the trainer's loss buffer,
which :class:`Peer` fills with the means of our DWA's windows; LibMTL's RLW samples from ``torch.distributions``,
which the test replaces by our generator's draw; LibMTL's PCGrad shuffles with Python's ``random``, which the test
replaces by our orders (the task itself first: its own projection never applies); LibMTL's CAGrad objective is
written for 3 tasks (``x.reshape(1, 3)``), so it is compared on 3 tasks. LibMTL's STCH counts epochs, ours steps
(``iters_per_epoch``), so :class:`Peer` sets its epoch from the step.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from graddrop_mtl.methods import DBMTL, DWA, GLS, IMTLG, IMTLL, RLW, STCH, UW, CAGrad, Compose, PCGrad, build_method
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import ThreadAllReduce, check_scaled_inputs, gen, pcgrad_orders, run_ranks


def _libmtl_weighting() -> types.ModuleType:
    """``LibMTL.weighting`` of the installed LibMTL 1.1.5 without running ``LibMTL/__init__.py``: that imports
    ``LibMTL.model``, whose ResNet module needs ``torchvision.models.utils`` (gone since torchvision 0.13, and
    torchvision is no dependency here). The weighting modules need only torch, numpy and scipy."""
    if 'LibMTL' not in sys.modules:
        spec = importlib.util.find_spec('LibMTL')
        if spec is None or not spec.submodule_search_locations:
            raise ImportError('LibMTL 1.1.5 is not installed: pip install --no-deps -r requirements/tests-nodeps.txt')
        package = types.ModuleType('LibMTL')
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules['LibMTL'] = package
    return importlib.import_module('LibMTL.weighting')


LIBMTL = _libmtl_weighting()


class Peer:
    """A LibMTL weighting class run as LibMTL's trainer runs it, on given losses and shared-parameter gradients."""

    def __init__(self, weighting: type, n_tasks: int, dim: int, **weight_args) -> None:
        class Model(weighting):
            def get_share_params(self):
                return [self.theta]

            def zero_grad_share_params(self):
                # in place, as torch's zero_grad did when LibMTL 1.1.5 was written (its _reset_grad writes into
                # the shared parameters' .grad, which torch >= 2.0's default set_to_none would remove)
                self.theta.grad.zero_()

        self.model = Model()
        self.model.task_num, self.model.device, self.model.rep_grad, self.model.epoch = n_tasks, 'cpu', False, 0
        self.model.theta = nn.Parameter(torch.zeros(dim))
        self.model.heads = nn.Parameter(torch.zeros(n_tasks))
        self.model.init_param()
        self.weight_args = weight_args

    def backward(self, losses: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``model.backward``: the shared parameters' and the heads' gradients (float64)."""
        m = self.model
        for p in m.parameters():
            p.grad = torch.zeros_like(p)                   # optimizer.zero_grad(set_to_none=False)
        task_losses = losses.float() + grads.float() @ m.theta + m.heads
        m.backward(task_losses, **self.weight_args)
        return m.theta.grad.double(), m.heads.grad.double()


def random_case(seed: int, n_tasks: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive losses of different scales and gradients of different norms (float64)."""
    g = gen(seed)
    losses = (0.2 + torch.rand(n_tasks, generator=g, dtype=torch.float64)) * torch.logspace(0, 1, n_tasks,
                                                                                             dtype=torch.float64)
    grads = torch.randn(n_tasks, dim, generator=g, dtype=torch.float64) * torch.logspace(
        -1, 1, n_tasks, dtype=torch.float64)[:, None]
    return losses, grads


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal to ``rtol`` of the reference's largest element (float32 rounding in the peer)."""
    scale = max(float(ref.abs().max()), 1e-30)
    torch.testing.assert_close(ours.double(), ref.double(), rtol=0, atol=rtol * scale)


def train_scales_alongside(peer: Peer, ours, n_tasks: int, dim: int, first_seed: int, lr: float) -> torch.Tensor:
    """Six SGD steps of our method's one parameter (UW's log-variances, IMTL-L's scales) and of LibMTL's
    ``loss_scale`` on the same losses and gradients: the trunk gradient, the heads' weights, the parameter's gradient
    and its updated value agree at every step. Returns our parameter."""
    (s,) = ours.parameters()
    for step in range(6):
        losses, grads = random_case(first_seed + step, n_tasks, dim)
        ref_trunk, ref_heads = peer.backward(losses, grads)
        assert_close(ours.combine(grads, losses=losses).detach(), ref_trunk)
        assert_close(ours.task_weights.detach(), ref_heads)
        s.grad = None
        ((ours.task_weights * losses.float()).sum() + ours.loss_term()).backward()
        assert_close(s.grad, peer.model.loss_scale.grad)
        with torch.no_grad():
            s -= lr * s.grad
            peer.model.loss_scale -= lr * peer.model.loss_scale.grad
        assert_close(s.detach(), peer.model.loss_scale.detach())
    return s


# -- UW, IMTL (IMTL-L + IMTL-G), GLS, RLW, DWA ----------------------------------------------------------------------
@pytest.mark.parametrize('n_tasks', [2, 5])
def test_uw_matches_libmtl_while_training(n_tasks):
    """Six steps, the log-variances trained by SGD on both sides: the same trunk gradient, head weights, gradient of
    the log-variances and log-variances."""
    dim, lr = 7, 0.3
    s = train_scales_alongside(Peer(LIBMTL.UW, n_tasks, dim), UW(num_tasks=n_tasks), n_tasks, dim, 0, lr)
    assert float((s.detach() + 0.5).abs().max()) > 0.1                  # they did move


@pytest.mark.parametrize('n_tasks,dim', [(2, 6), (3, 9), (5, 12)])
def test_imtl_matches_libmtl_as_imtl_l_then_imtl_g(n_tasks, dim):
    """LibMTL's IMTL is IMTL-L (scales s, losses e^s L - s) with IMTL-G on the scaled losses' gradients: here
    ``Compose(IMTLL, IMTLG)``, whose parameters and loss term are IMTL-L's. Six SGD steps on the scales: the trunk
    gradient (IMTL-G's weights on e^s g), the heads' weights e^s and the scales' gradient e^s L - 1 agree (LibMTL's
    closed form, a float32 inverse of D U^T, and our pseudo-inverse of the Gram matrix give the same weights for
    independent gradients)."""
    ours = Compose(weighting=IMTLL(num_tasks=n_tasks), then=IMTLG())   # its parameters and loss term: IMTL-L's
    s = train_scales_alongside(Peer(LIBMTL.IMTL, n_tasks, dim), ours, n_tasks, dim, 10, lr=0.2)
    assert float(s.detach().abs().max()) > 0.1


@pytest.mark.parametrize('n_tasks', [1, 2, 4, 8])
def test_gls_matches_libmtl(n_tasks):
    """The gradient of LibMTL's loss (prod_i L_i)^(1/T): trunk and heads."""
    peer = Peer(LIBMTL.GLS, n_tasks, 5)
    for step in range(3):
        losses, grads = random_case(20 + step, n_tasks, 5)
        ref_trunk, ref_heads = peer.backward(losses, grads)
        ours = GLS()
        assert_close(ours.combine(grads, losses=losses), ref_trunk)
        assert_close(ours.task_weights, ref_heads)


class FixedDraw:
    """Stands in for LibMTL's ``torch.distributions.Normal``: ``sample()`` returns the given draw."""

    def __init__(self, draw: torch.Tensor) -> None:
        self.draw = draw

    def sample(self) -> torch.Tensor:
        return self.draw


@pytest.mark.parametrize('n_tasks', [2, 6])
def test_rlw_matches_libmtl_on_the_same_draw(n_tasks):
    """LibMTL's RLW with its normal draw replaced by the one our generator makes: softmax weights on trunk and
    heads."""
    peer = Peer(LIBMTL.RLW, n_tasks, 4, dist='Normal')
    for step in range(4):
        losses, grads = random_case(30 + step, n_tasks, 4)
        peer.model.distribution = FixedDraw(torch.randn((1, n_tasks), generator=gen(step), dtype=torch.float64)[0]
                                            .float())
        ref_trunk, ref_heads = peer.backward(losses, grads)
        ours = RLW()
        assert_close(ours.combine(grads, losses=losses, generator=gen(step)), ref_trunk)
        assert_close(ours.task_weights, ref_heads)


@pytest.mark.parametrize('window', [1, 3])
def test_dwa_matches_libmtl_with_windows_as_epochs(window):
    """LibMTL's DWA with ``window`` steps per epoch, its trainer's loss buffer holding each epoch's mean losses:
    the same weights at every step of 5 epochs (ones for the first two)."""
    n_tasks, dim, epochs = 4, 6, 5
    peer = Peer(LIBMTL.DWA, n_tasks, dim, T=2.0)
    peer.model.train_loss_buffer = np.zeros([n_tasks, epochs])
    ours = DWA(temp=2.0, window=window)
    for epoch in range(epochs):
        peer.model.epoch = epoch
        seen = []
        for step in range(window):
            losses, grads = random_case(40 + epoch * window + step, n_tasks, dim)
            losses = losses * math.exp(-0.3 * epoch)
            seen.append(losses)
            ref_trunk, ref_heads = peer.backward(losses, grads)
            assert_close(ours.combine(grads, losses=losses), ref_trunk)
            assert_close(ours.task_weights, ref_heads)
        peer.model.train_loss_buffer[:, epoch] = torch.stack(seen).mean(0).numpy()
    assert not torch.equal(ours.task_weights, torch.ones(n_tasks, dtype=torch.float64))


# -- CAGrad and PCGrad (not compared with TorchJD elsewhere) ---------------------------------------------------------
@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('calpha,rescale', [(0.5, 1), (0.2, 0), (0.8, 2)])
def test_cagrad_matches_libmtl(seed, calpha, rescale):
    """LibMTL's CAGrad (SciPy SLSQP at its default ftol 1e-6, finite-difference gradients, float32 Gram matrix;
    written for 3 tasks) within 1e-3 of the result's norm (ours solves the dual to 1e-12); the heads keep their own
    gradients on both sides."""
    losses, grads = random_case(50 + seed, 3, 8)
    peer = Peer(LIBMTL.CAGrad, 3, 8, calpha=calpha, rescale=rescale)
    ref_trunk, ref_heads = peer.backward(losses, grads)
    ours = CAGrad(c=calpha, rescale=rescale)
    trunk = ours.combine(grads, losses=losses)
    assert float((trunk - ref_trunk).norm()) <= 1e-3 * float(ref_trunk.norm())
    assert ours.task_weights is None and bool((ref_heads == 1).all())


class FixedOrders:
    """Stands in for the ``random`` module in LibMTL's PCGrad: ``shuffle`` puts the task list into the next of the
    given orders."""

    def __init__(self, orders: list[list[int]]) -> None:
        self.orders = list(orders)

    def shuffle(self, items: list[int]) -> None:
        order = self.orders.pop(0)
        assert sorted(order) == sorted(items)
        items[:] = order


@pytest.mark.parametrize('seed,n_tasks,dim', [(0, 2, 5), (1, 3, 8), (2, 5, 12), (3, 8, 20)])
def test_pcgrad_matches_libmtl_with_the_same_orders(seed, n_tasks, dim, monkeypatch):
    """LibMTL's PCGrad (projections onto the original gradients, tasks in index order) with our random orders of
    the other tasks; the heads keep their own gradients on both sides."""
    losses, _ = random_case(60 + seed, n_tasks, dim)
    grads = torch.randn(n_tasks, dim, generator=gen(seed), dtype=torch.float64)
    grads[-1] = -grads[:-1].sum(0) + 0.3 * grads[-1]              # conflicts with the others
    others, _ = pcgrad_orders(seed, n_tasks, iterative=False)
    module = sys.modules[LIBMTL.PCGrad.__module__]
    monkeypatch.setattr(module, 'random', FixedOrders([[i, *others[i]] for i in range(n_tasks)]))
    peer = Peer(LIBMTL.PCGrad, n_tasks, dim)
    ref_trunk, ref_heads = peer.backward(losses, grads)
    ours = PCGrad()
    assert_close(ours.combine(grads, losses=losses, generator=gen(seed)), ref_trunk)
    assert ours.task_weights is None and bool((ref_heads == 1).all())
    assert float((ref_trunk - grads.sum(0)).abs().max()) > 1e-3       # some projection happened


# -- DB-MTL -----------------------------------------------------------------------------------------------------------
class DBMTLReference(LIBMTL.AbsWeighting):
    """LibMTL's ``DB_MTL`` (LibMTL/weighting/DB_MTL.py, median-research-group/LibMTL, MIT licence; after 1.1.5),
    re-written on LibMTL 1.1.5's ``AbsWeighting``: the gradients of log(L_i + 1e-8) at the shared parameters, a
    moving average of them with rate DB_beta / step^DB_beta_sigma from a zero buffer, each averaged gradient scaled
    by max_j |avg_j| / (|avg_i| + 1e-8), and their sum as the shared parameters' gradient. The heads keep the
    gradients of the log losses."""

    def init_param(self):
        self.step = 0
        self._compute_grad_dim()
        self.grad_buffer = torch.zeros(self.task_num, self.grad_dim)

    def backward(self, losses, **kwargs):
        self.step += 1
        rate = kwargs['DB_beta'] / self.step ** kwargs['DB_beta_sigma']
        self._compute_grad_dim()
        batch = self._compute_grad(torch.log(losses + 1e-8), mode='backward')
        self.grad_buffer = batch + rate * (self.grad_buffer - batch)
        norms = self.grad_buffer.norm(dim=-1)
        alpha = norms.max() / (norms + 1e-8)
        self._reset_grad((alpha[:, None] * self.grad_buffer).sum(0))
        return np.ones(self.task_num)


@pytest.mark.parametrize('n_tasks,dim', [(2, 5), (4, 9)])
def test_dbmtl_without_averaging_is_libmtls(n_tasks, dim):
    """beta = 0 (no moving average): LibMTL's DB_MTL on arbitrary gradients, at every step."""
    peer = Peer(DBMTLReference, n_tasks, dim, DB_beta=0.0, DB_beta_sigma=0.0)
    ours = DBMTL(beta=0.0)
    for step in range(4):
        losses, grads = random_case(70 + step, n_tasks, dim)
        ref_trunk, ref_heads = peer.backward(losses, grads)
        assert_close(ours.combine(grads, losses=losses), ref_trunk)
        assert_close(ours.task_weights, ref_heads)


@pytest.mark.parametrize('beta,beta_sigma', [(0.9, 0.0), (0.9, 0.5), (0.5, 1.0)])
def test_dbmtl_matches_libmtl_for_gradients_of_fixed_directions(beta, beta_sigma):
    """Each task's gradient keeps its direction and changes its length and loss over 8 steps: the moving average of
    the norms is the norm of LibMTL's moving average of the gradients, so the two agree at every step (from the
    first, where both averages start from zero)."""
    n_tasks, dim = 3, 7
    _, directions = random_case(80, n_tasks, dim)
    peer = Peer(DBMTLReference, n_tasks, dim, DB_beta=beta, DB_beta_sigma=beta_sigma)
    ours = DBMTL(beta=beta, beta_sigma=beta_sigma)
    for step in range(8):
        losses, _ = random_case(90 + step, n_tasks, dim)
        lengths = 0.2 + torch.rand(n_tasks, generator=gen(100 + step), dtype=torch.float64) * 3
        grads = directions * lengths[:, None]
        ref_trunk, ref_heads = peer.backward(losses, grads)
        assert_close(ours.combine(grads, losses=losses), ref_trunk)
        assert_close(ours.task_weights, ref_heads)
    assert ours.step == 8


def test_dbmtl_balances_the_magnitudes():
    """Every task contributes max_j n_j along its own direction, n the moving average of |g_j| / (L_j + eps):
    checked against a step-by-step recomputation over 5 steps of arbitrary gradients; the heads get 1 / (L + eps);
    ``weigh`` (for Compose) moves the state as ``combine`` does."""
    n_tasks, dim, beta, sigma = 4, 10, 0.8, 0.5
    method, weighed = DBMTL(beta=beta, beta_sigma=sigma), DBMTL(beta=beta, beta_sigma=sigma)
    n = torch.zeros(n_tasks, dtype=torch.float64)
    for step in range(1, 6):
        losses, grads = random_case(110 + step, n_tasks, dim)
        out = method.combine(grads, losses=losses)
        norms = grads.norm(dim=1)
        rate = beta / step ** sigma
        n = rate * n + (1 - rate) * norms / (losses + 1e-8)
        expected = n.max() * (grads / norms[:, None]).sum(0)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        for i in range(n_tasks):       # each task's part of the trunk gradient has the largest averaged norm
            part = out if n_tasks == 1 else n.max() * grads[i] / norms[i]
            torch.testing.assert_close(part.norm(), n.max(), rtol=1e-12, atol=0)
        torch.testing.assert_close(method.task_weights, 1 / (losses + 1e-8), rtol=1e-15, atol=0)
        torch.testing.assert_close(weighed.weigh(grads, losses=losses), method.task_weights, rtol=0, atol=0)
        torch.testing.assert_close(weighed.state_dict(), method.state_dict(), rtol=0, atol=0)


def test_dbmtl_degenerate_inputs_and_positive_homogeneity():
    """A zero gradient contributes nothing (its weight is 0), one task is its gradient scaled to its averaged
    norm, and the result scales with the gradients (from 1e-30 to 1e20, float32 included)."""
    losses = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    g = torch.randn(3, 6, generator=gen(0), dtype=torch.float64)
    g[1] = 0
    out = DBMTL().combine(g, losses=losses)
    n = 0.1 * g.norm(dim=1) / (losses + 1e-8)                    # first step: (1 - beta) |h|
    torch.testing.assert_close(out, n.max() * (g[0] / g[0].norm() + g[2] / g[2].norm()))
    assert bool((DBMTL().combine(torch.zeros(2, 4), losses=torch.ones(2)) == 0).all())
    one = DBMTL(beta=0.0).combine(g[:1], losses=losses[:1])
    torch.testing.assert_close(one, g[0] / (1 + 1e-8))
    check_scaled_inputs(lambda: DBMTL(), torch.randn(3, 4, 5, generator=gen(1)), losses=torch.rand(3) + 0.5)
    with pytest.raises(ValueError, match='log of the task losses'):
        DBMTL().combine(g, losses=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match='losses'):
        DBMTL().combine(g)
    for bad in (dict(beta=1.0), dict(beta=-0.1), dict(beta_sigma=-1.0), dict(eps=-1.0)):
        with pytest.raises(ValueError, match='DBMTL'):
            DBMTL(**bad)


def test_dbmtl_blocks_and_problems():
    """TaskBlocks (a dense base task and sparse patch tasks) give the densified stack's result; with problem dims
    every problem is its own DB-MTL (own averages)."""
    shape = (2, 3, 4, 4)
    base = torch.randn(1, *shape, generator=gen(0), dtype=torch.float64)
    patch = torch.randn(3, 4, 3, generator=gen(1), dtype=torch.float64)
    blocks = TaskBlocks(3, shape, base=base, base_tasks=[0], patch=patch, patch_rows=torch.tensor([1, 5, 20, 31]),
                        patch_tasks=[0, 1, 2])
    patch[0] = blocks.gather(base)[0]                       # the patch agrees with the base for the base task
    losses = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    a, b = DBMTL(), DBMTL()
    for _ in range(3):
        torch.testing.assert_close(b.combine_blocks(blocks, losses=losses), a.combine(blocks.to_dense(), losses=losses))
    shape = (2, 3, 2)
    g = torch.randn(3, *shape, generator=gen(2), dtype=torch.float64)
    batched = DBMTL()
    loss_p = torch.rand(3, 2, generator=gen(3), dtype=torch.float64) + 0.5
    alone = [DBMTL(), DBMTL()]
    for _ in range(3):
        out = batched.combine(g, losses=loss_p, problem_dims=1)
        for p in range(2):
            torch.testing.assert_close(out[p], alone[p].combine(g[:, p], losses=loss_p[:, p]))


# -- STCH -------------------------------------------------------------------------------------------------------------
class STCHReference(LIBMTL.AbsWeighting):
    """LibMTL's ``STCH`` (LibMTL/weighting/STCH.py, median-research-group/LibMTL, MIT licence; after 1.1.5; from the
    authors' STCH_MTL), re-written on LibMTL 1.1.5's ``AbsWeighting``: the sum of log(L_i + 1e-20) up to epoch
    STCH_warmup_epoch, whose mean losses become the nadir point; then
    T * mu * log sum_i exp((log(L_i / nadir_i + 1e-20) - max) / mu), the max detached."""

    def init_param(self):
        self.nadir, self.loss_sum, self.count = None, 0.0, 0

    def backward(self, losses, **kwargs):
        mu, warmup = kwargs['STCH_mu'], kwargs['STCH_warmup_epoch']
        if self.epoch <= warmup:
            if self.epoch == warmup:
                self.loss_sum = self.loss_sum + losses.detach()
                self.count += 1
            torch.log(losses + 1e-20).sum().backward()
        else:
            if self.nadir is None:
                self.nadir = self.loss_sum / self.count
            f = torch.log(losses / self.nadir + 1e-20)
            shifted = f - f.detach().max()
            (mu * torch.log(torch.exp(shifted / mu).sum()) * self.task_num).backward()
        return np.ones(self.task_num)


@pytest.mark.parametrize('mu,warmup,per_epoch', [(1.0, 4, 1), (1.0, 1, 3), (0.1, 0, 2), (3.0, 2, 2)])
def test_stch_matches_libmtl(mu, warmup, per_epoch):
    """The warm-up on the log losses, the nadir point from epoch ``warmup``'s mean losses, then the smooth
    Tchebycheff weights: trunk and heads agree at every step of ``warmup + 4`` epochs."""
    n_tasks, dim = 4, 6
    peer = Peer(STCHReference, n_tasks, dim, STCH_mu=mu, STCH_warmup_epoch=warmup)
    ours = STCH(mu=mu, warmup_epoch=warmup, iters_per_epoch=per_epoch)
    for step in range((warmup + 4) * per_epoch):
        peer.model.epoch = step // per_epoch
        losses, grads = random_case(120 + step, n_tasks, dim)
        ref_trunk, ref_heads = peer.backward(losses, grads)
        assert_close(ours.combine(grads, losses=losses), ref_trunk)
        assert_close(ours.task_weights, ref_heads)
    torch.testing.assert_close(ours.nadir, peer.model.nadir.double(), rtol=1e-6, atol=0)


def test_stch_is_the_smooth_maximum_of_the_normalised_losses():
    """After the warm-up: the weights are the gradient of T mu logsumexp(log(L / nadir) / mu) (autograd), they
    sum to T / L-weighted softmax, and as mu -> 0 they go to the worst task's alone, T / L_k."""
    losses = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    nadir = torch.tensor([1.0, 1.0, 0.25], dtype=torch.float64)     # normalised losses 0.5, 2, 4: task 2 is worst
    for mu in (2.0, 0.5, 0.01):
        method = STCH(mu=mu, warmup_epoch=0)
        method.weigh_losses(nadir)                                   # epoch 0: the nadir point is its mean loss
        w = method.weigh_losses(losses)
        x = losses.clone().requires_grad_()
        (3 * mu * torch.logsumexp(torch.log(x / nadir) / mu, 0)).backward()
        torch.testing.assert_close(w, x.grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 3.0]) / losses, rtol=0, atol=1e-12)


def test_stch_warm_up_state_and_errors():
    """The warm-up trains the log losses (w = 1 / L); the state (step, running sum, nadir point) round-trips mid
    warm-up and continues identically; two ranks hold the state of one process fed the mean losses; bad input is
    named."""
    method = STCH(warmup_epoch=1, iters_per_epoch=2)
    seq = [random_case(130 + k, 3, 1)[0] for k in range(8)]
    for k in range(3):
        torch.testing.assert_close(method.weigh_losses(seq[k]), 1 / seq[k], rtol=1e-15, atol=0)
    clone = STCH(warmup_epoch=1, iters_per_epoch=2)
    clone.load_state_dict(method.state_dict())
    for k in range(3, 8):
        torch.testing.assert_close(clone.weigh_losses(seq[k]), method.weigh_losses(seq[k]), rtol=0, atol=0)
    torch.testing.assert_close(method.nadir, (seq[2] + seq[3]) / 2, rtol=1e-15, atol=0)
    with pytest.raises(KeyError):
        STCH().load_state_dict({**method.state_dict(), 'bogus': 1})

    reduce = ThreadAllReduce(2)
    pairs = [(random_case(140 + k, 3, 1)[0], random_case(150 + k, 3, 1)[0]) for k in range(6)]
    single = STCH(warmup_epoch=1, iters_per_epoch=2)
    expected = [single.weigh_losses((a + b) / 2) for a, b in pairs]

    def rank(r):
        m = STCH(warmup_epoch=1, iters_per_epoch=2)
        m.set_reducer(reduce.reducer(r))
        return [m.weigh_losses(p[r]) for p in pairs], m.state_dict()

    (w0, s0), (w1, s1) = run_ranks(2, rank)
    torch.testing.assert_close(s0, s1, rtol=0, atol=0)
    for a, b, e in zip(w0, w1, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, e, rtol=1e-12, atol=0)

    with pytest.raises(ValueError, match='log of the task losses'):
        STCH().weigh_losses(torch.tensor([1.0, -0.5]))
    zero = STCH(warmup_epoch=0)
    zero.weigh_losses(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match='nadir'):
        zero.weigh_losses(torch.tensor([1.0, 1.0]))
    for bad in (dict(mu=0.0), dict(warmup_epoch=-1), dict(warmup_epoch=1.5), dict(iters_per_epoch=0),
                dict(delta=-1.0)):
        with pytest.raises(ValueError, match='STCH'):
            STCH(**bad)


def test_dbmtl_ranks_hold_one_state():
    """Two ranks: the squared norms summed, the losses averaged: the weights and state of one process on the
    concatenated gradients and the mean losses, bit-identical on both ranks."""
    g = [torch.randn(3, 8, generator=gen(160 + r), dtype=torch.float64) for r in range(2)]
    loss = [torch.rand(3, generator=gen(170 + r), dtype=torch.float64) + 0.5 for r in range(2)]
    single = DBMTL()
    expected = []
    for _ in range(3):
        single.combine(torch.cat(g, 1), losses=(loss[0] + loss[1]) / 2)
        expected.append(single.state_dict()['norms'].clone())
    reduce = ThreadAllReduce(2)

    def rank(r):
        m = DBMTL()
        m.set_reducer(reduce.reducer(r))
        out = []
        for _ in range(3):
            m.combine(g[r], losses=loss[r])
            out.append(m.state_dict()['norms'].clone())
        return out, m.task_weights

    (n0, w0), (n1, w1) = run_ranks(2, rank)
    torch.testing.assert_close(w0, w1, rtol=0, atol=0)
    for a, b, e in zip(n0, n1, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, e, rtol=1e-12, atol=0)


def test_new_methods_build_from_configs():
    for cfg in (dict(type='DBMTL', beta=0.9, beta_sigma=0.0), dict(type='STCH', mu=1.0, warmup_epoch=4)):
        method = build_method(cfg)
        assert type(method).__name__ == cfg['type']
    assert STCH().loss_only and not DBMTL().loss_only


def test_libmtls_imtl_trains_its_scales_through_the_optim_wrapper():
    """``Compose(IMTLL, IMTLG)`` in the MultiTaskOptimWrapper: IMTL-L's scales join the optimizer and one SGD step
    moves them by -lr (e^s L - 1) = -lr (L - 1) from s = 0, the gradient of LibMTL's IMTL losses e^s L - s."""
    from graddrop_mtl.engine import MultiTaskOptimWrapper
    from tests.engine.toy import ToyMTL, toy_data

    torch.manual_seed(0)
    model, data, lr = ToyMTL(), toy_data(n=6, seed=1), 0.1
    with torch.no_grad():
        losses = torch.stack(list(model(**data).values()))
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=lr), shared='trunk',
                                    method=dict(type='Compose', weighting=dict(type='IMTLL', num_tasks=3),
                                                then=dict(type='IMTLG')))
    (s,) = wrapper.method.parameters()
    assert any(p is s for group in wrapper.optimizer.param_groups for p in group['params'])
    model.train_step(data, wrapper)
    torch.testing.assert_close(s.detach(), -lr * (losses - 1), rtol=1e-5, atol=1e-7)
