"""Inputs at the edges: huge and tiny gradients, NaN / inf, empty activations, inputs that require grad, tied
(parallel) gradients, and the published PCGrad at a small original norm."""
from __future__ import annotations

import math

import pytest
import torch

from graddrop_mtl.methods import MGDA, GradDrop, GradNorm, PCGrad, RandomGradDrop, Sum, build_method
from graddrop_mtl.methods.base import gram_matrix, sq_norms
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import SCALES, check_scaled_inputs, gen


def stack(n_tasks: int, d: int, seed: int = 0) -> torch.Tensor:
    """float32 gradients [T, d] (d above the float64 short path) with a shared component."""
    return torch.randn(n_tasks, d, generator=gen(seed)) + 0.5 * torch.randn(1, d, generator=gen(seed + 1))


# -- float32 products over / underflow ----------------------------------------------------------------------------
@pytest.mark.parametrize('scale', [1e17, 1e18, 1e20, 1e-19, 1e-22, 1e-30])
@pytest.mark.parametrize('n_tasks', [3, 30])           # the batched-product and the syrk path
def test_gram_and_norms_right_at_extreme_scales(scale, n_tasks):
    x = stack(n_tasks, 20_000) * scale
    ref = x.double() @ x.double().T
    _, gram = gram_matrix(x)
    top = float(ref.diagonal().max())
    assert float((gram[0] - ref).abs().max()) <= 1e-6 * top
    assert float((sq_norms(x) - ref.diagonal()).abs().max()) <= 1e-6 * top


def test_gram_of_mixed_scales_and_zero_rows():
    """One task at 1e-22 beside tasks at 1 and an all-zero task: each squared norm right relative to its own size,
    the zero row exactly zero."""
    x = stack(4, 10_000)
    x[1] *= 1e-22
    x[2] = 0
    ref = x.double() @ x.double().T
    _, gram = gram_matrix(x)
    torch.testing.assert_close(gram[0].diagonal(), ref.diagonal(), rtol=1e-6, atol=0)
    torch.testing.assert_close(sq_norms(x), ref.diagonal(), rtol=1e-6, atol=0)
    assert float(gram[0, 2].abs().max()) == 0.0


def test_non_finite_gradients_stay_non_finite_in_the_gram():
    x = stack(3, 10_000)
    x[1, 7] = float('nan')
    _, gram = gram_matrix(x)
    assert not bool(torch.isfinite(gram[0, 1]).any()) and bool(torch.isfinite(gram[0, 0, 0]))
    assert not bool(torch.isfinite(sq_norms(x)[1]))


HOMOGENEOUS = {
    'Sum': lambda: Sum(),
    'GradDrop': lambda: GradDrop(),
    'GradDrop-k0.5-leak': lambda: GradDrop(k=0.5, leak=0.2),
    'RandomGradDrop': lambda: RandomGradDrop(),
    'PCGrad': lambda: PCGrad(),
    'PCGrad-iterative': lambda: PCGrad(iterative=True),
    'MGDA-none': lambda: MGDA(),
    'MGDA-l2': lambda: MGDA(normalization='l2'),
    'MGDA-loss+': lambda: MGDA(normalization='loss+'),
}


@pytest.mark.parametrize('name', sorted(HOMOGENEOUS))
@pytest.mark.parametrize('n_tasks', [3, 30])
def test_scaled_inputs(name, n_tasks):
    """combine(c g) = c combine(g) for c from 0 to 1e20 (float32, 20,000 elements per task: the chunked Gram
    matrix; on main 3d674eb MGDA was 5x off at 1e18 and PCGrad 13%)."""
    grads = stack(n_tasks, 20_000, seed=n_tasks)
    losses = torch.rand(n_tasks, generator=gen(5)) + 0.5
    check_scaled_inputs(HOMOGENEOUS[name], grads, losses=losses)


def test_scales_cover_the_extremes():
    assert min(s for s in SCALES if s > 0) <= 1e-22 and max(SCALES) >= 1e18 and 0.0 in SCALES


# -- NaN / inf propagate ------------------------------------------------------------------------------------------
NON_FINITE = [float('nan'), float('inf'), -float('inf')]


@pytest.mark.parametrize('value', NON_FINITE)
@pytest.mark.parametrize('make', [GradDrop, RandomGradDrop, lambda: GradDrop(k=0.5), lambda: GradDrop(eps=1e-7),
                                  lambda: GradDrop(leak=0.3), Sum, PCGrad, MGDA])
@pytest.mark.parametrize('d', [2, 10_000])                 # the PyTorch path and the compiled pass
def test_non_finite_elements_propagate(make, value, d):
    """[[nan, 1], [1, 1]] gave [0, 2] on main 3d674eb in GradDrop: the NaN element must stay non-finite."""
    grads = torch.ones(2, d)
    grads[0, 0] = value
    for seed in range(4):
        out = make().combine(grads, generator=gen(seed), losses=torch.ones(2))
        assert not bool(torch.isfinite(out[0])), (make, value, seed)


def test_graddrop_nan_example_from_the_issue():
    out = GradDrop().combine(torch.tensor([[float('nan'), 1.0], [1.0, 1.0]]), generator=gen(0))
    assert math.isnan(float(out[0])) and float(out[1]) == 2.0


def test_graddrop_blocks_propagate_non_finite():
    grads = torch.ones(3, 2, 4, 5, 5)
    grads[1, 0, 2, 3, 3] = float('nan')
    blocks = TaskBlocks(3, grads.shape[1:], base=grads, base_tasks=[0, 1, 2])
    out = GradDrop().combine_blocks(blocks, generator=gen(0))
    assert math.isnan(float(out[0, 2, 3, 3])) and int(torch.isnan(out).sum()) == 1


# -- empty activations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('cfg', [dict(type='Sum'), dict(type='GradDrop'), dict(type='GradDrop', leak=0.2),
                                 dict(type='RandomGradDrop'), dict(type='PCGrad'), dict(type='PCGrad', iterative=True),
                                 dict(type='MGDA', normalization='l2'), dict(type='GradNorm'),
                                 dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop'))])
@pytest.mark.parametrize('shape', [(3, 0), (3, 4, 0)])
def test_empty_activation(cfg, shape):
    """n = 0 elements: an empty result and finite statistics (GradDrop raised ZeroDivisionError on main 3d674eb)."""
    method = build_method(cfg)
    method.collect_stats = True
    out = method.combine(torch.zeros(shape), losses=torch.ones(3), generator=gen(0))
    assert out.shape == shape[1:]
    assert all(math.isfinite(v) for v in method.last_stats().values())


# -- inputs that require grad -------------------------------------------------------------------------------------
@pytest.mark.parametrize('make', [MGDA, lambda: MGDA(normalization='l2'), PCGrad, lambda: PCGrad(iterative=True),
                                  GradNorm])
@pytest.mark.parametrize('d,n_tasks', [(6, 3), (6, 30), (10_000, 3), (10_000, 30)])
def test_inputs_that_require_grad(make, d, n_tasks):
    """Weights from the values (constants), the result differentiable through the gradients: d(sum out)/dg_i is
    the coefficient of task i (on main 3d674eb: "Can't call numpy() on Tensor that requires grad")."""
    g = stack(n_tasks, d).double().requires_grad_()
    method = make()
    out = method.combine(g, losses=torch.ones(n_tasks, dtype=torch.float64), generator=gen(0))
    ref = make().combine(g.detach(), losses=torch.ones(n_tasks, dtype=torch.float64), generator=gen(0))
    torch.testing.assert_close(out.detach(), ref)
    out.sum().backward()
    coef = g.grad[:, 0]
    torch.testing.assert_close(g.grad, coef[:, None].expand_as(g.grad))
    torch.testing.assert_close((coef[:, None] * g.detach()).sum(0), ref, rtol=1e-9, atol=1e-9)


# -- MGDA: tied gradients -----------------------------------------------------------------------------------------
@pytest.mark.parametrize('normalization', ['none', 'l2', 'loss', 'loss+'])
@pytest.mark.parametrize('grads', [
    [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],                  # parallel: one point under 'l2'
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],                  # a duplicate task
    [[0.3, 0.1], [0.6, 0.2], [-0.2, 0.9], [0.9, 0.3]],     # parallel up to rounding
    [[1.0], [2.0], [3.0]],                                 # one dimension (closed form)
    [[1.0], [-2.0], [2.0], [-1.0]],
])
def test_mgda_weights_do_not_depend_on_the_task_order(normalization, grads):
    """Permuting the tasks permutes the weights and leaves the result unchanged ([[1,0],[2,0],[3,0]] gave [1, 0]
    and, permuted, [3, 0] under 'l2' on main 3d674eb)."""
    g = torch.tensor(grads, dtype=torch.float64)
    losses = torch.linspace(0.5, 2.0, len(grads), dtype=torch.float64)
    ref = MGDA(normalization=normalization)
    out = ref.combine(g, losses=losses)
    for seed in range(4):
        perm = torch.randperm(len(grads), generator=gen(seed))
        method = MGDA(normalization=normalization)
        torch.testing.assert_close(method.combine(g[perm], losses=losses[perm]), out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(method.task_weights, ref.task_weights[perm], rtol=1e-9, atol=1e-9)


def test_mgda_l2_parallel_gradients_get_equal_weights():
    method = MGDA(normalization='l2')
    out = method.combine(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(method.task_weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([2.0, 0.0], dtype=torch.float64))


# -- static PCGrad at a small original norm ----------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_static_pcgrad_projects_onto_a_small_original_gradient(dtype):
    """g1 = (1, 0), g2 = (-1e-7, 1e-7): published PCGrad gives (0.5, 0.5000001); main 3d674eb's guard
    (1e-12 max |g|^2) skipped the projection onto g2 and gave (1, 1e-7)."""
    g = torch.tensor([[1.0, 0.0], [-1e-7, 1e-7]], dtype=dtype)
    out = PCGrad().combine(g, generator=gen(0))
    torch.testing.assert_close(out, torch.tensor([0.5, 0.5000001], dtype=dtype), rtol=1e-7, atol=0)


def test_iterative_pcgrad_keeps_its_guard():
    """Iterative PCGrad may cancel a gradient to rounding noise; it must not project onto that noise."""
    g = torch.tensor([[1.0, 0.0], [-1.0, 1e-9], [0.5, 0.5]], dtype=torch.float64)
    for seed in range(8):
        out = PCGrad(iterative=True).combine(g, generator=gen(seed))
        assert bool(torch.isfinite(out).all()) and float(out.abs().max()) < 10
