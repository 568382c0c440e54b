"""The Gram-matrix methods of issue 23 (CAGrad, Nash-MTL, FairGrad, IMTL-G, Aligned-MTL, UPGrad, GradVac) against
TorchJD 0.18 (``torchjd.aggregation``) where it runs in this environment, and against their defining property.

TorchJD's CAGrad and Nash-MTL need cvxpy and its UPGrad's default projector quadprog, none of which this project
installs: CAGrad is checked against the authors' algorithm (SciPy SLSQP, as their code) and its constraint,
Nash-MTL against its bargaining condition, UPGrad through TorchJD's own UPGrad with a SciPy projector (TorchJD's
``DualConeProjector`` interface) and its non-conflict property.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as torchjd_aggregation  # requirements/bench.txt
from torchjd.linalg import DualConeProjector

from graddrop_mtl.methods import (
    IMTLG,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    FairGrad,
    GradVac,
    NashMTL,
    Random,
    UPGrad,
    build_method,
)
from graddrop_mtl.methods.blocks import TaskBlocks
from graddrop_mtl.methods.gradvac import gradvac_coefficients

from ._util import DEGENERATE_CASES, ThreadAllReduce, assert_degenerate_output, degenerate_grads, gen, run_ranks


def random_grads(seed: int, n_tasks: int, d: int, shared: float = 0.5) -> torch.Tensor:
    return (torch.randn(n_tasks, d, generator=gen(seed), dtype=torch.float64)
            + shared * torch.randn(1, d, generator=gen(seed + 1), dtype=torch.float64)) \
        * torch.rand(n_tasks, 1, generator=gen(seed + 2), dtype=torch.float64).add(0.3)


CASES = [(0, 2, 10), (1, 3, 20), (2, 5, 40), (3, 8, 30), (4, 12, 100), (5, 40, 300)]


def weights_of(method, g: torch.Tensor) -> torch.Tensor:
    if isinstance(method, Random):
        return method._weights(1, g.shape[0], gen(0), g.device)[0]
    gram = (g @ g.T)[None]
    return method._weights(gram, None, gen(0), torch.Size([g.shape[0]]), g.dtype)[0]


# -- IMTL-G ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES)
def test_imtlg_matches_torchjd_and_equalises_projections(seed, n_tasks, d):
    """TorchJD's IMTLG on the same matrix (float64): the same combined gradient to 1e-9 relative; every task's
    unit gradient has the same projection on it."""
    g = random_grads(seed, n_tasks, d)
    ours = IMTLG().combine(g)
    ref = torchjd_aggregation.IMTLG()(g)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))
    proj = (g / g.norm(dim=1, keepdim=True)) @ ours
    torch.testing.assert_close(proj, proj.mean().expand_as(proj), rtol=1e-9, atol=0)


def test_imtlg_degenerate_inputs():
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)   # linearly dependent
    out = IMTLG().combine(g)
    proj = (g / g.norm(dim=1, keepdim=True)) @ out
    torch.testing.assert_close(proj, proj.mean().expand_as(proj), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(IMTLG().combine(torch.zeros(3, 4)), torch.zeros(4))
    one = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(IMTLG().combine(one), one[0])
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert bool(torch.isfinite(IMTLG().combine(opposite)).all())


# -- Aligned-MTL ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES + [(6, 12, 5)])        # the last: rank 5 < 12 tasks
@pytest.mark.parametrize('scale_mode', ['min', 'median', 'rmse'])
def test_aligned_mtl_matches_torchjd(seed, n_tasks, d, scale_mode):
    g = random_grads(seed, n_tasks, d)
    ours = AlignedMTL(scale_mode=scale_mode).combine(g)
    ref = torchjd_aggregation.AlignedMTL(scale_mode=scale_mode)(g)
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))


def test_aligned_mtl_aligned_gradients_are_orthogonal_with_equal_norms():
    """The defining property: J^T B has orthogonal columns of equal norm (B^T G B = lambda_min I)."""
    g = random_grads(3, 5, 40)
    gram = g @ g.T
    method = AlignedMTL(pref_vector=[1.0, 0, 0, 0, 0])
    b = weights_of(method, g)                            # B e_1
    lam_min = float(torch.linalg.eigvalsh(gram).min())
    torch.testing.assert_close(b @ gram @ b, torch.tensor(lam_min, dtype=torch.float64), rtol=1e-9, atol=0)


# -- UPGrad -----------------------------------------------------------------------------------------------------------
class ScipyProjector(DualConeProjector):
    """TorchJD's DualConeProjector interface solved by SciPy's SLSQP (min v^T G v s.t. v >= u), tolerance 1e-14."""

    def __call__(self, U, G):
        from scipy.optimize import minimize
        g = G.detach().double().numpy()
        g = g / np.trace(g)
        out = []
        for u in U.detach().double().numpy().reshape(-1, g.shape[0]):
            res = minimize(lambda v: v @ g @ v, u.copy(), jac=lambda v: 2 * g @ v, method='SLSQP',
                           bounds=[(x, None) for x in u], options=dict(ftol=1e-14, maxiter=2000))
            out.append(res.x)
        return torch.as_tensor(np.array(out).reshape(U.shape), dtype=G.dtype)


@pytest.mark.parametrize('seed,n_tasks,d', CASES[:5] + [(6, 6, 3)])
def test_upgrad_matches_torchjd_with_an_exact_projector(seed, n_tasks, d):
    """TorchJD's UPGrad (its weighting: sum of the dual-cone projections of the rows) on a SciPy projector; the
    QP solved to SLSQP's accuracy, so 1e-6 of the result's scale."""
    g = random_grads(seed, n_tasks, d)
    ours = UPGrad().combine(g)
    ref = torchjd_aggregation.UPGrad(projector=ScipyProjector())(g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize('seed,n_tasks,d', CASES + [(6, 12, 5)])
def test_upgrad_conflicts_with_no_task(seed, n_tasks, d):
    g = random_grads(seed, n_tasks, d, shared=0.1)
    out = UPGrad().combine(g)
    assert float((g @ out).min()) >= -1e-9 * float(g.norm(dim=1).max()) ** 2


def test_upgrad_without_conflict_is_the_mean():
    g = torch.tensor([[1.0, 0.2], [0.5, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(UPGrad().combine(g), g.mean(0))


@pytest.mark.parametrize('seed,n_tasks,d', CASES[:5] + [(6, 6, 3)])
def test_dualproj_matches_torchjd_with_an_exact_projector(seed, n_tasks, d):
    g = random_grads(seed, n_tasks, d, shared=0.1)
    ours = DualProj().combine(g)
    ref = torchjd_aggregation.DualProj(projector=ScipyProjector())(g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6 * float(ref.abs().max()))
    assert float((g @ ours).min()) >= -1e-9 * float(g.norm(dim=1).max()) ** 2


def test_dualproj_without_conflict_is_the_mean():
    g = torch.tensor([[1.0, 0.2], [0.5, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(DualProj().combine(g), g.mean(0))


# -- ConFIG ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES)
def test_config_matches_torchjd_and_has_equal_cosines(seed, n_tasks, d):
    """TorchJD's ConFIG (pseudo-inverse of the [T, D] unit matrix) to 1e-8 of the result; the result makes the
    same angle with every task gradient."""
    g = random_grads(seed, n_tasks, d)
    ours = ConFIG().combine(g)
    ref = torchjd_aggregation.ConFIG()(g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-8 * float(ref.abs().max()))
    cos = (g @ ours) / (g.norm(dim=1) * ours.norm())
    torch.testing.assert_close(cos, cos.mean().expand_as(cos), rtol=1e-8, atol=0)


# -- Random --------------------------------------------------------------------------------------------------------
def test_random_matches_torchjd_on_the_same_draw():
    """TorchJD's Random draws torch.randn(T) from the global stream; ours from the generator: the same seed gives
    the same weights."""
    g = random_grads(0, 5, 20)
    torch.manual_seed(7)
    ref = torchjd_aggregation.Random()(g)
    ours = Random().combine(g, generator=gen(7))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert not torch.equal(Random().combine(g, generator=gen(8)), ours)


# -- CAGrad -----------------------------------------------------------------------------------------------------------
def cagrad_authors(g: np.ndarray, c: float, rescale: int) -> np.ndarray:
    """The authors' ``cagrad`` (Cranial-XIX/CAGrad, also LibMTL's) on ``g [T, D]``: SLSQP from the uniform weights
    with its default tolerance, the same 1e-8 offsets."""
    from scipy.optimize import minimize
    t = g.shape[0]
    gg = g @ g.T
    g0_norm = np.sqrt(gg.mean() + 1e-8)
    x_start = np.ones(t) / t
    b = x_start.copy()
    cc = c * g0_norm + 1e-8

    def objfn(x):
        return (x.reshape(1, t).dot(gg).dot(b.reshape(t, 1)) + cc * np.sqrt(
            x.reshape(1, t).dot(gg).dot(x.reshape(t, 1)) + 1e-8)).sum()

    res = minimize(objfn, x_start, bounds=[(0, 1)] * t,
                   constraints=({'type': 'eq', 'fun': lambda x: 1 - sum(x)}))
    gw = res.x @ g
    d = g.mean(0) + cc / (np.linalg.norm(gw) + 1e-8) * gw
    return {0: d, 1: d / (1 + c ** 2), 2: d / (1 + c)}[rescale]


@pytest.mark.parametrize('seed,n_tasks,d', CASES[:5])
@pytest.mark.parametrize('c,rescale', [(0.5, 1), (0.2, 0), (0.8, 2)])
def test_cagrad_matches_the_authors_algorithm(seed, n_tasks, d, c, rescale):
    """Against the authors' code (SciPy SLSQP at its default ftol 1e-6 on an unscaled Gram matrix): within 1e-3
    of the result's norm; ours solves to 1e-12."""
    g = random_grads(seed, n_tasks, d)
    ours = CAGrad(c=c, rescale=rescale).combine(g)
    ref = torch.from_numpy(cagrad_authors(g.numpy(), c, rescale))
    assert float((ours - ref).norm()) <= 1e-3 * float(ref.norm())


@pytest.mark.parametrize('seed,n_tasks,d', CASES)
def test_cagrad_is_optimal_in_its_ball(seed, n_tasks, d):
    """d (before rescaling) lies in the ball |d - g0| <= c |g0| and no point of the ball found by a dense search
    over directions improves the worst task's inner product min_i g_i . d."""
    c = 0.5
    g = random_grads(seed, n_tasks, d)
    out = CAGrad(c=c, rescale=0).combine(g)
    g0 = g.mean(0)
    radius = c * float(g0.norm())
    assert float((out - g0).norm()) <= radius * (1 + 1e-9)
    best = float((g @ out).min())
    rng = np.random.default_rng(seed)
    for _ in range(200):
        direction = torch.from_numpy(rng.standard_normal(d))
        cand = g0 + radius * direction / direction.norm()
        assert float((g @ cand).min()) <= best + 1e-7 * float(g.norm(dim=1).max() * g0.norm())


def test_cagrad_degenerate_inputs():
    assert bool((CAGrad().combine(torch.zeros(3, 5)) == 0).all())
    one = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(CAGrad(rescale=0).combine(one), one[0] * 1.5)     # g0 + c|g0| g0/|g0|
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(CAGrad().combine(opposite), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


# -- Nash-MTL and FairGrad -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES + [(6, 12, 5)])
def test_nash_mtl_bargaining_condition(seed, n_tasks, d):
    """alpha_i (G alpha)_i = 1 for the Frobenius-normalised Gram matrix (Navon et al., Eq. 4), to 1e-9."""
    g = random_grads(seed, n_tasks, d)
    method = NashMTL(max_norm=0)
    out = method.combine(g)
    alpha = method.task_weights
    gram = g @ g.T
    gram = gram / torch.linalg.matrix_norm(gram)
    torch.testing.assert_close(alpha * (gram @ alpha), torch.ones(n_tasks, dtype=torch.float64), rtol=1e-9,
                               atol=0)
    assert bool((alpha > 0).all())
    torch.testing.assert_close(out, alpha @ g)


def test_nash_mtl_max_norm_and_state():
    g = random_grads(1, 3, 20) * 100
    method = NashMTL(max_norm=1.0, update_weights_every=2)
    out = method.combine(g)
    assert float(out.norm()) == pytest.approx(1.0, rel=1e-9)
    first = method.state_dict()['alpha'].clone()
    method.combine(random_grads(2, 3, 20))                     # step 2 reuses step 1's weights
    torch.testing.assert_close(method.state_dict()['alpha'], first)
    clone = NashMTL(max_norm=1.0, update_weights_every=2)
    clone.load_state_dict(method.state_dict())
    g3 = random_grads(3, 3, 20)
    torch.testing.assert_close(clone.combine(g3), method.combine(g3))


@pytest.mark.parametrize('seed,n_tasks,d', CASES)
@pytest.mark.parametrize('alpha', [0.5, 1.0, 2.0, 5.0])
def test_fairgrad_matches_torchjd(seed, n_tasks, d, alpha):
    """TorchJD's FairGrad (SciPy least_squares, its default tolerances 1e-8): the same weights to 1e-5; ours meet
    (G w)_i = w_i^(-1/alpha) to 1e-9."""
    g = random_grads(seed, n_tasks, d)
    w = weights_of(FairGrad(alpha=alpha), g)
    gram = g @ g.T
    torch.testing.assert_close(gram @ w, w ** (-1 / alpha), rtol=1e-9, atol=0)
    ref = torchjd_aggregation.FairGrad(alpha=alpha).gramian_weighting(gram)
    torch.testing.assert_close(w, ref.to(w), rtol=1e-5, atol=0)


def test_fairgrad_alpha_zero_and_degenerate():
    g = random_grads(0, 4, 10)
    torch.testing.assert_close(FairGrad(alpha=0).combine(g), g.mean(0))
    torch.testing.assert_close(FairGrad().combine(torch.zeros(3, 4)), torch.zeros(4))
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert bool(torch.isfinite(FairGrad().combine(opposite)).all())


# -- GradVac ----------------------------------------------------------------------------------------------------------
def torchjd_orders(seed: int, n_tasks: int, n_steps: int) -> list[np.ndarray]:
    """The task orders TorchJD's GradVac draws (``torch.randperm`` on the global stream) after ``manual_seed``."""
    torch.manual_seed(seed)
    steps = []
    for _ in range(n_steps):
        orders = []
        for i in range(n_tasks):
            others = [j for j in range(n_tasks) if j != i]
            orders.append([others[k] for k in torch.randperm(n_tasks - 1).tolist()])
        steps.append(np.array(orders))
    return steps


@pytest.mark.parametrize('seed,n_tasks,d', CASES[:5])
def test_gradvac_matches_torchjd_with_the_same_orders(seed, n_tasks, d):
    """Three steps (the EMA targets carry over): our Gram-matrix GradVac with TorchJD's orders gives TorchJD's
    weights to 1e-10."""
    beta, eps = 0.5, 1e-8
    steps = [random_grads(seed + 10 * s, n_tasks, d) for s in range(3)]
    orders = torchjd_orders(seed, n_tasks, 3)
    torch.manual_seed(seed)
    ref_weighting = torchjd_aggregation.GradVac(beta=beta, eps=eps).gramian_weighting
    targets = np.zeros((n_tasks, n_tasks))
    for g, order in zip(steps, orders):
        gram = (g @ g.T).numpy()
        coef, targets = gradvac_coefficients(gram, targets, order, beta, eps)
        ref = ref_weighting(torch.from_numpy(gram))
        np.testing.assert_allclose(coef.sum(0), ref.numpy(), rtol=1e-10, atol=1e-12)


def test_gradvac_raises_the_cosines_and_keeps_state():
    """After one pass every original pair that was below its target (0 at the start) moved up; the state round
    trips through state_dict."""
    g = torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=torch.float64)
    method = GradVac()
    out = method.combine(g, generator=gen(0))
    assert float(out @ g[0]) > float(g.sum(0) @ g[0])          # the conflict was reduced
    clone = GradVac()
    clone.load_state_dict(method.state_dict())
    torch.testing.assert_close(clone.combine(g, generator=gen(1)), method.combine(g, generator=gen(1)))


# -- all Gram methods: blocks, scale, several ranks, degenerate -----------------------------------------------------
GRAM_CONFIGS = [dict(type='CAGrad'), dict(type='NashMTL', max_norm=0), dict(type='FairGrad', alpha=2.0),
                dict(type='IMTLG'), dict(type='AlignedMTL'), dict(type='UPGrad'), dict(type='GradVac'),
                dict(type='DualProj'), dict(type='ConFIG'), dict(type='Random')]


@pytest.mark.parametrize('cfg', GRAM_CONFIGS, ids=lambda c: c['type'])
def test_blocks_give_the_dense_result(cfg):
    """TaskBlocks (a dense base task and sparse patch tasks) give what the densified stack gives."""
    shape = (2, 3, 4, 4)
    base = torch.randn(1, *shape, generator=gen(0), dtype=torch.float64)
    rows = torch.tensor([1, 5, 20, 31])
    patch = torch.randn(3, 4, 3, generator=gen(1), dtype=torch.float64)
    blocks = TaskBlocks(3, shape, base=base, base_tasks=[0], patch=patch, patch_rows=rows, patch_tasks=[0, 1, 2])
    patch[0] = blocks.gather(base)[0]                       # the patch agrees with the base for the base task
    dense = blocks.to_dense()
    a = build_method(cfg).combine(dense, generator=gen(3))
    b = build_method(cfg).combine_blocks(blocks, generator=gen(3))
    torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('cfg', GRAM_CONFIGS, ids=lambda c: c['type'])
def test_ranks_agree_with_one_process(cfg):
    """Two ranks: the Gram matrices are summed, the weights are those of the concatenated gradients on both, and
    the state is the same (GradVac's orders and Random's weights come from summed draws, so one process is not
    comparable there)."""
    g = [random_grads(1, 4, 12), random_grads(2, 4, 12)]
    single = build_method(cfg)
    expected = weights_of(single, torch.cat(g, 1))
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = build_method(cfg)
        method.set_reducer(reduce.reducer(r))
        return weights_of(method, g[r]), method.state_dict()

    (w0, s0), (w1, s1) = run_ranks(2, rank)
    torch.testing.assert_close(w0, w1, rtol=0, atol=0)
    torch.testing.assert_close(s0, s1, rtol=0, atol=0)
    if cfg['type'] not in ('GradVac', 'Random'):
        torch.testing.assert_close(w0, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize('cfg', GRAM_CONFIGS, ids=lambda c: c['type'])
@pytest.mark.parametrize('case', DEGENERATE_CASES)
def test_degenerate_inputs(cfg, case):
    g = degenerate_grads(case)
    assert_degenerate_output(build_method(cfg).combine(g, generator=gen(0)), g, case)


# -- Krum and TrimmedMean (TorchJD's robust aggregators) -----------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', [(0, 3, 10), (1, 5, 20), (2, 8, 30), (3, 12, 100)])
@pytest.mark.parametrize('n_byzantine,n_selected', [(0, 1), (1, 2), (0, 3)])
def test_krum_matches_torchjd(seed, n_tasks, d, n_byzantine, n_selected):
    from graddrop_mtl.methods import Krum
    g = random_grads(seed, n_tasks, d)
    if n_tasks < n_byzantine + 3:                    # TorchJD refuses these too
        with pytest.raises(ValueError, match='at least'):
            Krum(n_byzantine=n_byzantine, n_selected=n_selected).combine(g)
        return
    ours = Krum(n_byzantine=n_byzantine, n_selected=n_selected).combine(g)
    ref = torchjd_aggregation.Krum(n_byzantine=n_byzantine, n_selected=n_selected)(g)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_krum_ignores_an_outlier_and_checks_the_task_count():
    from graddrop_mtl.methods import Krum
    g = torch.tensor([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [100.0, -50.0]], dtype=torch.float64)
    torch.testing.assert_close(Krum(n_byzantine=1, n_selected=3).combine(g), g[:3].mean(0))
    with pytest.raises(ValueError, match='at least 4 tasks'):
        Krum(n_byzantine=1).combine(g[:3])


@pytest.mark.parametrize('n_tasks,trim', [(3, 1), (5, 2), (9, 1), (40, 5)])
def test_trimmed_mean_matches_torchjd(n_tasks, trim):
    from graddrop_mtl.methods import TrimmedMean
    g = torch.randn(n_tasks, 2, 3, 7, generator=gen(n_tasks), dtype=torch.float64)
    ours = TrimmedMean(trim_number=trim).combine(g)
    ref = torchjd_aggregation.TrimmedMean(trim_number=trim)(g.reshape(n_tasks, -1)).reshape(g.shape[1:])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match='more than'):
        TrimmedMean(trim_number=n_tasks).combine(g)


def test_nash_mtl_as_the_weighting_of_a_compose():
    """Nash-MTL weights the losses, so it can lead a Compose: its weights (from weigh, without the weighted sum)
    scale the gradients GradDrop then combines, and the state advances once per step."""
    from graddrop_mtl.methods import Compose, GradDrop
    g = random_grads(4, 3, 50)
    compose = Compose(NashMTL(max_norm=0, update_weights_every=2), GradDrop())
    out = compose.combine(g, generator=gen(0))
    alone = NashMTL(max_norm=0)
    alone.combine(g)
    torch.testing.assert_close(compose.task_weights, alone.task_weights)
    ref = GradDrop().combine(g * alone.task_weights[:, None], generator=gen(0))
    torch.testing.assert_close(out, ref)
    assert compose.weighting.step == 1
    with pytest.raises(ValueError, match='sets no task_weights'):
        Compose(UPGrad(), GradDrop()).combine(g, generator=gen(0))
