"""MGDA-UB: the min-norm point of the convex hull, against closed forms and independent solvers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from graddrop_mtl.methods import MGDA, min_norm_simplex
from graddrop_mtl.methods import mgda as mgda_module
from graddrop_mtl.methods.mgda import ACTIVE_SET_STEPS, _active_set_min_norm, _wolfe_min_norm

from ._util import gen, kkt_residual, min_norm_by_support_enumeration


def random_grads(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=torch.float64)


def slsqp_min_norm(gram: np.ndarray) -> tuple[np.ndarray, float]:
    """scipy's SLSQP on min a^T M a, sum a = 1, a >= 0 (M scaled to unit mean diagonal for conditioning)."""
    t = gram.shape[0]
    m = gram / np.mean(np.diag(gram))
    res = minimize(lambda a: a @ m @ a, np.full(t, 1.0 / t), jac=lambda a: 2 * m @ a, method='SLSQP',
                   bounds=[(0.0, 1.0)] * t, constraints=[dict(type='eq', fun=lambda a: a.sum() - 1.0,
                                                               jac=lambda a: np.ones_like(a))],
                   options=dict(ftol=1e-16, maxiter=2000))
    assert res.success, res.message
    return res.x, float(res.x @ gram @ res.x)


# -- two tasks: closed form ---------------------------------------------------------------------------------------
def two_task_alpha(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """Sener & Koltun's Algorithm 1: alpha = clip((g2 - g1) . g2 / |g1 - g2|^2, 0, 1)."""
    return float(((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1))


@pytest.mark.parametrize('case', ['obtuse', 'g1_dominates', 'g2_dominates', 'acute_interior'])
def test_two_tasks_closed_form(case):
    g1, g2 = random_grads(0, (2, 10))
    if case == 'obtuse':
        g2 = -0.5 * g1 + 0.3 * g2
    elif case == 'g1_dominates':        # g1 . g2 >= |g1|^2: the min-norm point is the vertex g1
        g2 = 3.0 * g1 + 0.1 * g2
    elif case == 'g2_dominates':
        g1 = 2.5 * g2 + 0.1 * g1
    else:                              # acute angle, min-norm point strictly inside the segment
        e = g1
        u = g2 - (g2 @ e) / (e @ e) * e
        u = u * (0.6 * e.norm() / u.norm())
        g1, g2 = e + 1.2 * u, e - u
    grads = torch.stack([g1, g2]).reshape(2, 2, 5)
    method = MGDA()
    out = method.combine(grads)
    a = two_task_alpha(g1, g2)
    if case == 'g1_dominates':
        assert a == 1.0
    if case == 'g2_dominates':
        assert a == 0.0
    if case in ('obtuse', 'acute_interior'):
        assert 0.05 < a < 0.95
    torch.testing.assert_close(method.task_weights, torch.tensor([a, 1 - a], dtype=torch.float64), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(out.reshape(-1), a * g1 + (1 - a) * g2, rtol=1e-12, atol=1e-12)
    assert method.last_stats()['kkt_residual'] <= 1e-6


# -- more tasks: independent solvers ------------------------------------------------------------------------------
@pytest.mark.parametrize('n_tasks,d,seed', [(3, 20, 0), (4, 10, 1), (5, 30, 2), (6, 12, 3), (7, 50, 4)])
@pytest.mark.parametrize('kind', ['gaussian', 'shifted'])
def test_matches_support_enumeration(n_tasks, d, seed, kind):
    g = random_grads(seed, (n_tasks, d))
    if kind == 'shifted':              # a common component: the minimiser has a mid-sized support
        g = g + 1.5 * random_grads(seed + 50, (1, d))
    method = MGDA()
    out = method.combine(g)
    gram = (g @ g.T).numpy()
    alpha_ref, obj_ref = min_norm_by_support_enumeration(gram)
    alpha = method.task_weights.numpy()
    np.testing.assert_allclose(alpha, alpha_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), alpha_ref @ g.numpy(), rtol=0, atol=1e-6 * np.abs(g.numpy()).max())
    assert float(out @ out) == pytest.approx(obj_ref, rel=1e-6, abs=1e-12)
    assert alpha.min() >= 0 and alpha.sum() == pytest.approx(1.0, abs=1e-12)
    assert kkt_residual(gram, alpha) <= 1e-6
    assert method.last_stats()['kkt_residual'] <= 1e-6


@pytest.mark.parametrize('n_tasks,d,seed', [(8, 5, 0), (12, 3, 1)])
def test_rank_deficient_gram(n_tasks, d, seed):
    """More tasks than dimensions: the weights are not unique, the minimal norm is."""
    g = random_grads(seed, (n_tasks, d)) + 0.8
    method = MGDA()
    out = method.combine(g)
    gram = (g @ g.T).numpy()
    _, obj_ref = min_norm_by_support_enumeration(gram)
    assert float(out @ out) == pytest.approx(obj_ref, rel=1e-6, abs=1e-9)
    assert kkt_residual(gram, method.task_weights.numpy()) <= 1e-6


@pytest.mark.parametrize('n_tasks,d,seed', [(9, 64, 0), (40, 128, 1), (40, 256, 2)])
def test_many_tasks_against_slsqp(n_tasks, d, seed):
    g = random_grads(seed, (n_tasks, d)) + 0.3 * random_grads(seed + 9, (1, d))
    method = MGDA()
    out = method.combine(g)
    gram = (g @ g.T).numpy()
    _, obj_ref = slsqp_min_norm(gram)
    obj = float(out @ out)
    assert obj <= obj_ref * (1 + 1e-6) + 1e-12          # at least as good as SLSQP
    assert obj == pytest.approx(obj_ref, rel=1e-5)
    assert kkt_residual(gram, method.task_weights.numpy()) <= 1e-6
    assert method.last_stats()['kkt_residual'] <= 1e-6


def test_min_norm_simplex_batch_of_gram_matrices():
    grams = []
    for seed in range(6):
        g = random_grads(seed, (5, 7)) + 0.5
        grams.append(g @ g.T)
    alpha, residual = min_norm_simplex(torch.stack(grams))
    assert alpha.shape == (6, 5) and residual.shape == (6,)
    for p, gram in enumerate(grams):
        ref, _ = min_norm_by_support_enumeration(gram.numpy())
        np.testing.assert_allclose(alpha[p].numpy(), ref, atol=1e-6)
        assert float(residual[p]) <= 1e-6


# -- normalisations -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('normalization', ['none', 'l2', 'loss', 'loss+'])
def test_normalisations(normalization):
    """alpha minimises |sum alpha_i g_i / n_i| but the trunk receives sum alpha_i g_i (unnormalised)."""
    g = random_grads(3, (4, 3, 5)) * torch.tensor([1.0, 5.0, 0.2, 2.0], dtype=torch.float64)[:, None, None]
    losses = torch.tensor([0.7, 2.0, 0.1, 1.3], dtype=torch.float64)
    flat = g.reshape(4, -1)
    norms = flat.norm(dim=1)
    scale = dict(none=torch.ones(4, dtype=torch.float64), l2=norms, loss=losses, **{'loss+': losses * norms})
    scaled = flat / scale[normalization][:, None]
    alpha_ref, _ = min_norm_by_support_enumeration((scaled @ scaled.T).numpy())
    method = MGDA(normalization=normalization)
    out = method.combine(g, losses=losses)
    np.testing.assert_allclose(method.task_weights.numpy(), alpha_ref, atol=1e-6)
    np.testing.assert_allclose(out.reshape(-1).numpy(), alpha_ref @ flat.numpy(), atol=1e-6 * float(norms.max()))
    assert method.last_stats()['kkt_residual'] <= 1e-6


def test_normalisations_give_different_weights():
    g = random_grads(4, (3, 8)) * torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)[:, None]
    losses = torch.tensor([3.0, 0.2, 1.0], dtype=torch.float64)
    weights = {}
    for name in ('none', 'l2', 'loss', 'loss+'):
        method = MGDA(normalization=name)
        method.combine(g, losses=losses)
        weights[name] = method.task_weights
    for a in weights:
        for b in weights:
            if a < b:
                assert not torch.allclose(weights[a], weights[b], atol=1e-3), (a, b)


def test_loss_normalisation_needs_losses_and_names_are_checked():
    with pytest.raises(ValueError, match="'loss' needs the task losses"):
        MGDA(normalization='loss').combine(random_grads(0, (2, 3)))
    with pytest.raises(ValueError, match="normalization must be one of"):
        MGDA(normalization='L2')


# -- problems, 1-D, degenerate cases --------------------------------------------------------------------------------
@pytest.mark.parametrize('normalization', ['none', 'loss'])
def test_replicas_are_independent(normalization):
    g = random_grads(5, (4, 6, 2, 3))                 # 6 replicas of a [2, 3] problem
    losses = torch.rand(4, 6, generator=gen(1), dtype=torch.float64) + 0.1
    method = MGDA(normalization=normalization)
    out = method.combine(g, losses=losses, problem_dims=1)
    assert method.task_weights.shape == (4, 6)
    for r in range(6):
        solo = MGDA(normalization=normalization)
        torch.testing.assert_close(out[r], solo.combine(g[:, r], losses=losses[:, r]), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(method.task_weights[:, r], solo.task_weights, rtol=0, atol=1e-9)


def test_one_dimensional_problems():
    """Scalar gradients: 0 is in the hull when the signs differ, otherwise the smallest vertex."""
    columns = [(3.0, -1.0, 2.0), (2.0, 0.5, 4.0), (-2.0, -0.25, -1.0), (0.0, 2.0, 1.0), (1.0, -1.0, -5.0)]
    g = torch.tensor(columns, dtype=torch.float64).T[:, :, None]      # [T=3, P=5, 1]
    method = MGDA()
    out = method.combine(g, problem_dims=1)[:, 0]
    expected = torch.tensor([0.0, 0.5, -0.25, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    weights = method.task_weights
    assert weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(0), torch.ones(5, dtype=torch.float64))
    assert bool((weights >= 0).all())
    torch.testing.assert_close((weights * g[:, :, 0]).sum(0), out)
    assert method.last_stats()['kkt_residual'] <= 1e-6


def test_one_task_and_a_zero_gradient():
    g = random_grads(6, (1, 4))
    method = MGDA(normalization='l2')
    torch.testing.assert_close(method.combine(g), g[0])
    torch.testing.assert_close(method.task_weights, torch.ones(1, dtype=torch.float64))
    g = random_grads(7, (3, 4))
    g[1] = 0.0                                          # 0 is a vertex: the min norm is 0
    for normalization in ('none', 'l2'):
        method = MGDA(normalization=normalization)
        out = method.combine(g)
        assert bool(torch.isfinite(out).all())
        torch.testing.assert_close(out, torch.zeros_like(out), rtol=0, atol=1e-9)


def test_input_untouched_and_dtype_kept():
    g = torch.randn(3, 2, 4, generator=gen(0))
    before = g.clone()
    method = MGDA(normalization='l2')
    out = method.combine(g)
    assert torch.equal(g, before)
    assert out.dtype == torch.float32 and out.shape == (2, 4)
    assert method.task_weights.dtype == torch.float32


@pytest.mark.parametrize('seed,n_tasks,d,noise', [(2, 6, 200, 1e-4), (5, 6, 200, 1e-4), (0, 10, 500, 1e-3)])
def test_nearly_collinear_gradients(seed, n_tasks, d, noise):
    """Tasks that (almost) agree: g_i = c + small noise. The minimiser is the vertex of the smallest gradient; the
    weights must be found to the solver's tolerance like in any other case (they weight the heads' losses)."""
    g = torch.randn(1, d, generator=gen(seed), dtype=torch.float64) \
        + noise * torch.randn(n_tasks, d, generator=gen(seed + 100), dtype=torch.float64) \
        * 5 * torch.rand(n_tasks, 1, generator=gen(seed + 200), dtype=torch.float64)
    method = MGDA()
    method.combine(g)
    gram = (g @ g.T).numpy()
    alpha_ref, _ = min_norm_by_support_enumeration(gram)
    assert kkt_residual(gram, alpha_ref) <= 1e-9
    assert kkt_residual(gram, method.task_weights.numpy()) <= 1e-6
    np.testing.assert_allclose(method.task_weights.numpy(), alpha_ref, atol=1e-6)


def test_float32_gradients_with_many_elements():
    """Representation gradients are float32 and large (PointPillars: 78M elements per task). The weights must solve
    the QP of the given gradients to the tolerance: their Gram matrix, exactly (float64) computed, is the problem.
    A Gram matrix accumulated in float32 over 1e6 elements is off by ~1e-4 relative, too much for tol = 1e-6."""
    g = torch.randn(9, 1_000_000, generator=gen(0)) + 0.5 * torch.randn(1, 1_000_000, generator=gen(1))
    method = MGDA()
    method.combine(g)
    gram = (g.double() @ g.double().T).numpy()
    assert kkt_residual(gram, method.task_weights.double().numpy()) <= 1e-6


# -- the two solvers: active-set Newton steps first, Wolfe's algorithm as the fallback ------------------------------
def random_gram(seed: int, n_tasks: int, d: int, shared: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_tasks, d)) + shared * rng.standard_normal(d)
    x *= rng.uniform(0.2, 3.0, (n_tasks, 1))
    g = x @ x.T
    return g / np.abs(np.diag(g)).max()


@pytest.mark.parametrize('n_tasks,d,shared,seed', [(5, 30, 0.0, 0), (7, 50, 1.5, 1), (40, 4000, 0.0, 2),
                                                   (40, 4000, 0.5, 3), (40, 100, 2.0, 4), (12, 40, 0.8, 5)])
def test_active_set_steps_find_the_kkt_point(n_tasks, d, shared, seed):
    """Full-rank Gram matrices with supports from one task to all 40: the Newton steps settle on the minimiser that
    support enumeration (small T) or Wolfe's algorithm (T = 40) finds."""
    g = random_gram(seed, n_tasks, d, shared)
    lam = _active_set_min_norm(g, ACTIVE_SET_STEPS)
    assert lam is not None
    assert lam.min() >= 0 and lam.sum() == pytest.approx(1.0, abs=1e-12)
    assert kkt_residual(g, lam) <= 1e-10
    ref = min_norm_by_support_enumeration(g)[0] if n_tasks <= 7 else _wolfe_min_norm(g, 1e-9, 5000)
    np.testing.assert_allclose(lam, ref, atol=1e-8)


@pytest.mark.parametrize('case', ['duplicate_task', 'more_tasks_than_dims'])
def test_singular_systems_fall_back_to_wolfe(case):
    """A repeated gradient, or more tasks than dimensions, makes the full-support system singular: the Newton
    steps give up (None) and MGDA still returns weights that meet the KKT conditions."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 20)) if case == 'duplicate_task' else rng.standard_normal((12, 3)) + 0.8
    if case == 'duplicate_task':
        x = np.concatenate([x, x[:2]])
    g = x @ x.T
    assert _active_set_min_norm(g / np.abs(np.diag(g)).max(), ACTIVE_SET_STEPS) is None
    method = MGDA()
    out = method.combine(torch.from_numpy(x))
    alpha = method.task_weights.numpy()
    assert kkt_residual(g, alpha) <= 1e-6
    assert float(out @ out) == pytest.approx(min_norm_by_support_enumeration(g)[1], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize('seed', range(6))
def test_both_solvers_give_the_same_weights(seed, monkeypatch):
    """The same MGDA weights with the Newton steps on and off (0 steps: Wolfe's algorithm alone)."""
    rng = np.random.default_rng(100 + seed)
    n_tasks = int(rng.integers(3, 41))
    g = torch.from_numpy(rng.standard_normal((n_tasks, 300)) + rng.uniform(0, 2) * rng.standard_normal(300))
    method = MGDA()
    method.combine(g)
    fast = method.task_weights.clone()
    monkeypatch.setattr(mgda_module, 'ACTIVE_SET_STEPS', 0)
    method.combine(g)
    torch.testing.assert_close(method.task_weights, fast, rtol=0, atol=1e-7)
