"""The stateful gradient methods of issue 23 that TorchJD 0.18 offers as weightings (ExcessMTL, SDMGrad, MoDo) and
MoCo (LibMTL only): against the peer on random inputs over several steps (the state carries over), the defining
update, degenerate and scaled inputs, TaskBlocks, several ranks and the state round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as torchjd_aggregation  # requirements/bench.txt

from graddrop_mtl.methods import ExcessMTL, MoCo, MoDo, SDMGrad, build_method
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import ThreadAllReduce, check_scaled_inputs, gen, min_norm_by_support_enumeration, run_ranks


def random_grads(seed: int, n_tasks: int, d: int, shared: float = 0.5, dtype=torch.float64) -> torch.Tensor:
    return ((torch.randn(n_tasks, d, generator=gen(seed), dtype=torch.float64)
             + shared * torch.randn(1, d, generator=gen(seed + 1), dtype=torch.float64))
            * torch.rand(n_tasks, 1, generator=gen(seed + 2), dtype=torch.float64).add(0.3)).to(dtype)


CASES = [(0, 2, 10), (1, 3, 20), (2, 5, 40), (3, 9, 100), (4, 12, 30)]


def blocks_and_dense(seed: int) -> tuple[TaskBlocks, torch.Tensor]:
    """Three tasks at a [2, 3, 4, 4] activation: task 0 dense (the base), tasks 1 and 2 at four rows."""
    shape = (2, 3, 4, 4)
    base = torch.randn(1, *shape, generator=gen(seed), dtype=torch.float64)
    rows = torch.tensor([1, 5, 20, 31])
    patch = torch.randn(3, 4, 3, generator=gen(seed + 1), dtype=torch.float64)
    blocks = TaskBlocks(3, shape, base=base, base_tasks=[0], patch=patch, patch_rows=rows, patch_tasks=[0, 1, 2])
    patch[0] = blocks.gather(base)[0]                    # the patch agrees with the base for the base task
    return blocks, blocks.to_dense()


# -- ExcessMTL ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES)
@pytest.mark.parametrize('step_size,warmup', [(1.0, 0), (1.0, 1), (0.3, 2)])
def test_excess_mtl_matches_torchjd_over_steps(seed, n_tasks, d, step_size, warmup):
    """TorchJD's ExcessMTLWeighting fed the same [T, D] matrices for six steps (float64): the same weights and the
    same combined gradient to 1e-12 (rsqrt against 1 / sqrt: rounding only)."""
    ours = ExcessMTL(robust_step_size=step_size, n_warmup_steps=warmup)
    ref = torchjd_aggregation.ExcessMTLWeighting(robust_step_size=step_size, n_warmup_steps=warmup)
    for step in range(6):
        g = random_grads(seed + 10 * step, n_tasks, d)
        out = ours.combine(g)
        w = ref(g)
        torch.testing.assert_close(ours.task_weights, w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, w @ g, rtol=1e-12, atol=1e-12)


def test_excess_mtl_float32_matches_torchjd_in_float64():
    """float32 gradients (float32 accumulator, float64 sums): TorchJD's float64 weights to 1e-5."""
    ours, ref = ExcessMTL(), torchjd_aggregation.ExcessMTLWeighting(n_warmup_steps=1)
    for step in range(4):
        g = random_grads(step, 5, 20_000)
        ours.combine(g.float())
        torch.testing.assert_close(ours.task_weights.double(), ref(g), rtol=1e-5, atol=1e-6)


def test_excess_mtl_follows_the_authors_code():
    """The update of the authors' ``ExcessMTL.backward`` (yifei-he/ExcessMTL, LibMTL/LibMTL/weighting/ExcessMTL.py,
    MIT licence) transcribed in numpy, with its weights divided by T (theirs sum to T) and TorchJD's 1e-7 in the
    baseline's denominator: the first step only sets the baseline, then alpha <- alpha exp(eta E_t / E_1),
    normalised (the paper's Eq. 6, 7, 9). A task whose gradients grow against its first step gains weight."""
    eta = 0.5
    method = ExcessMTL(robust_step_size=eta)                    # the default: one warm-up step
    growth = np.array([1.0, 1.0, 3.0])
    grad_sum = np.zeros((3, 30))
    loss_weight = np.ones(3)
    base = random_grads(7, 3, 30).numpy()
    for step in range(5):
        grads = base * (growth[:, None] ** step)
        method.combine(torch.from_numpy(grads))
        grad_sum += grads ** 2
        w = np.array([grads[i] * (1 / np.sqrt(grad_sum[i] + 1e-7)) @ grads[i] for i in range(3)])
        if step == 0:
            initial_w = w
        else:
            loss_weight = loss_weight * np.exp(w / (initial_w + 1e-7) * eta)
            loss_weight = loss_weight / loss_weight.sum() * 3
        np.testing.assert_allclose(method.task_weights.numpy(), loss_weight / 3, rtol=1e-12)
    assert method.task_weights[2] > method.task_weights[0] and method.task_weights[2] > method.task_weights[1]


@pytest.mark.parametrize('case', ['zero', 'one_task', 'parallel', 'opposite'])
def test_excess_mtl_degenerate_inputs(case):
    g = {'zero': torch.zeros(3, 6), 'one_task': torch.randn(1, 6, generator=gen(0)),
         'parallel': torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]),
         'opposite': torch.tensor([[1.0, 2.0], [-1.0, -2.0]])}[case]
    method = ExcessMTL()
    for _ in range(3):
        out = method.combine(g)
        assert out.shape == g.shape[1:] and out.dtype == g.dtype and bool(torch.isfinite(out).all())
    w = method.task_weights
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    if case == 'zero':                 # no excess risk anywhere: the weights stay uniform, the result is zero
        assert bool((out == 0).all()) and torch.equal(w, torch.full((3,), 1 / 3))
    if case == 'one_task':
        torch.testing.assert_close(out, g[0])
    if case == 'opposite':             # equal excess risks: equal weights, the gradients cancel
        torch.testing.assert_close(w, torch.full((2,), 0.5))
        torch.testing.assert_close(out, torch.zeros(2), atol=1e-6, rtol=0)


def test_excess_mtl_non_finite_step_leaves_the_state():
    g = random_grads(0, 3, 8)
    method = ExcessMTL()
    method.combine(g)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in method.state_dict().items()}
    bad = g.clone()
    bad[1, 3] = float('nan')
    assert not bool(torch.isfinite(method.combine(bad)).all())
    torch.testing.assert_close(method.state_dict(), before, rtol=0, atol=0)


@pytest.mark.parametrize('scale', [0.0, 1e-30, 1e-15, 1e-3, 1.0, 1e8, 1e15])
def test_excess_mtl_scaled_inputs(scale):
    """float32 gradients scaled by 0 .. 1e15: finite results; with one warm-up step (the baseline) the weights are
    those of the unscaled gradients wherever S is far above eps (scales 1 .. 1e15)."""
    steps = [random_grads(s, 4, 20_000, dtype=torch.float32) for s in range(4)]
    ref, method = ExcessMTL(), ExcessMTL()
    for g in steps:
        ref.combine(g)
        out = method.combine(g * scale)
        assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(method.task_weights).all())
    if scale >= 1.0:
        torch.testing.assert_close(method.task_weights, ref.task_weights, rtol=1e-4, atol=1e-6)


def test_excess_mtl_blocks_give_the_dense_result():
    """Three steps on TaskBlocks and on their dense stack: the same results and the same state."""
    a, b = ExcessMTL(), ExcessMTL()
    for step in range(3):
        blocks, dense = blocks_and_dense(10 * step)
        torch.testing.assert_close(b.combine_blocks(blocks), a.combine(dense), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.task_weights, a.task_weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.state_dict(), a.state_dict(), rtol=1e-12, atol=1e-12)


def test_excess_mtl_smaller_activation_uses_the_leading_elements():
    """A short batch (10 of 20 elements) gives what the same gradients zero-padded to 20 give: zeros add nothing to
    the excess risks or the accumulator."""
    a, b = ExcessMTL(), ExcessMTL()
    for step, d in enumerate([20, 10, 20, 10]):
        g = random_grads(step, 3, d)
        a.combine(g)
        b.combine(torch.nn.functional.pad(g, (0, 20 - d)))
        torch.testing.assert_close(a.task_weights, b.task_weights, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match='set up for 3 tasks'):
        a.combine(random_grads(0, 4, 10))


def test_excess_mtl_ranks_agree_with_one_process():
    """Two ranks: the excess risks are summed, so both ranks hold the weights and the baseline of one process
    holding the concatenated activation (whose accumulator is the ranks' accumulators side by side)."""
    steps = [[random_grads(10 * s + r, 4, 12) for r in range(2)] for s in range(3)]
    single = ExcessMTL()
    for g in steps:
        single.combine(torch.cat(g, 1))
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = ExcessMTL()
        method.set_reducer(reduce.reducer(r))
        for g in steps:
            method.combine(g[r])
        return method.state_dict()

    s0, s1 = run_ranks(2, rank)
    assert reduce.calls == 3                              # one reducer call per combine
    for key in ('weights', 'baseline', 'step'):
        torch.testing.assert_close(s0[key], s1[key], rtol=0, atol=0)
        torch.testing.assert_close(s0[key], single.state_dict()[key], rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.cat([s0['sq_grad_sum'], s1['sq_grad_sum']], 2),
                               single.state_dict()['sq_grad_sum'])


def test_excess_mtl_arguments_are_checked():
    for bad in (dict(robust_step_size=0.0), dict(n_warmup_steps=-1), dict(eps=-1.0)):
        with pytest.raises(ValueError, match='ExcessMTL'):
            build_method(dict(type='ExcessMTL', **bad))


# -- SDMGrad -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES)
@pytest.mark.parametrize('kwargs', [{}, dict(lr=5.0, lambda_=1.0), dict(lambda_=0.0, momentum=0.0, n_iter=3),
                                    dict(pref_vector=[1.0, 0.0])])
def test_sdmgrad_matches_torchjd_over_steps(seed, n_tasks, d, kwargs):
    """TorchJD's SDMGradWeighting on the Gram matrix of the same gradients, five steps (the inner variable carries
    over): the same combined gradient to 1e-9 of its scale (the inner iteration amplifies rounding differences)."""
    if 'pref_vector' in kwargs:
        kwargs = dict(pref_vector=[1.0] + [0.0] * (n_tasks - 1))
    ours = SDMGrad(**kwargs)
    theirs = dict(kwargs, pref_vector=torch.tensor(kwargs['pref_vector'], dtype=torch.float64)) \
        if 'pref_vector' in kwargs else kwargs
    ref = torchjd_aggregation.SDMGradWeighting(**theirs)
    for step in range(5):
        g = random_grads(seed + 10 * step, n_tasks, d)
        out = ours.combine(g)
        expected = ref(g @ g.T) @ g
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-9 * float(expected.abs().max()))


def test_sdmgrad_without_pull_converges_to_the_min_norm_weights():
    """lambda = 0 and enough inner steps: the inner problem is MGDA's min-norm problem (Eq. 7), whose exact
    minimiser (every support tried) the weights reach to 1e-6."""
    g = random_grads(3, 4, 30, shared=0.2)
    method = SDMGrad(lambda_=0.0, lr=0.5, momentum=0.0, n_iter=20_000)
    w = weights_of(method, g)
    best, _ = min_norm_by_support_enumeration((g @ g.T).numpy())
    np.testing.assert_allclose(w.numpy(), best, atol=1e-6)


def test_sdmgrad_large_pull_is_the_mean_gradient():
    g = random_grads(2, 5, 20)
    torch.testing.assert_close(SDMGrad(lambda_=1e9).combine(g), g.mean(0), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize('n_tasks,n_iter', [(3, 20), (30, 5)])
def test_sdmgrad_scaled_inputs(n_tasks, n_iter):
    """Positively homogeneous up to the 1e-8 of the scale normalisation (the authors'): float32 gradients scaled
    by 0 and 1e-2 .. 1e20. With 30 tasks the inner iteration (lr * |A| well above 2) amplifies rounding tenfold
    every few steps, its own sensitivity (20 steps turn 1e-9 into 1e-4), so that case runs 5 inner steps."""
    grads = torch.randn(n_tasks, 20_000, generator=gen(n_tasks)) + 0.5 * torch.randn(1, 20_000, generator=gen(1))
    check_scaled_inputs(lambda: SDMGrad(n_iter=n_iter), grads, scales=(0.0, 1e-2, 1.0, 1e4, 1e15, 1e18, 1e20),
                        rtol=1e-5)


def test_sdmgrad_arguments_are_checked():
    for bad in (dict(lr=0.0), dict(momentum=1.0), dict(n_iter=0), dict(lambda_=-1.0)):
        with pytest.raises(ValueError, match='SDMGrad needs'):
            build_method(dict(type='SDMGrad', **bad))
    with pytest.raises(ValueError, match='pref_vector has 2 values for 3 tasks'):
        SDMGrad(pref_vector=[0.5, 0.5]).combine(torch.ones(3, 4))


# -- MoDo --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,n_tasks,d', CASES)
@pytest.mark.parametrize('gamma,rho', [(0.1, 0.1), (0.001, 0.1), (0.05, 0.0)])
def test_modo_matches_torchjd_over_steps(seed, n_tasks, d, gamma, rho):
    """TorchJD's MoDoWeighting on the Gram matrix of the same gradients, five steps: the same weights to 1e-12."""
    ours, ref = MoDo(gamma=gamma, rho=rho), torchjd_aggregation.MoDoWeighting(gamma=gamma, rho=rho)
    for step in range(5):
        g = random_grads(seed + 10 * step, n_tasks, d) / d ** 0.5
        out = ours.combine(g)
        w = ref(g @ g.T)
        torch.testing.assert_close(ours.lambd[0], w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, w @ g, rtol=1e-12, atol=1e-12)


def test_modo_converges_to_the_min_norm_weights():
    """rho = 0 and a step size below 2 / |G|: the projected gradient iteration reaches MGDA's min-norm weights
    (every support tried) to 1e-6."""
    g = random_grads(3, 4, 30, shared=0.2)
    gram = g @ g.T
    method = MoDo(gamma=1.0 / float(torch.linalg.eigvalsh(gram).max()), rho=0.0)
    for _ in range(20_000):
        w = weights_of(method, g)
    best, _ = min_norm_by_support_enumeration(gram.numpy())
    np.testing.assert_allclose(w.numpy(), best, atol=1e-6)


def test_modo_arguments_are_checked():
    for bad in (dict(gamma=0.0), dict(rho=-1.0)):
        with pytest.raises(ValueError, match='MoDo needs'):
            build_method(dict(type='MoDo', **bad))


# -- the Gram-matrix methods here: blocks, ranks, degenerate inputs --------------------------------------------------
GRAM_CONFIGS = [dict(type='SDMGrad'), dict(type='MoDo')]


def weights_of(method, g: torch.Tensor) -> torch.Tensor:
    return method._weights((g @ g.T)[None], None, gen(0), torch.Size([g.shape[0]]), g.dtype)[0]


@pytest.mark.parametrize('cfg', GRAM_CONFIGS, ids=lambda c: c['type'])
def test_gram_methods_blocks_give_the_dense_result(cfg):
    a, b = build_method(cfg), build_method(cfg)
    for step in range(3):
        blocks, dense = blocks_and_dense(10 * step)
        torch.testing.assert_close(b.combine_blocks(blocks), a.combine(dense), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.state_dict(), a.state_dict(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('cfg', GRAM_CONFIGS, ids=lambda c: c['type'])
def test_gram_methods_ranks_agree_with_one_process(cfg):
    """Two ranks, three steps: one reducer call per step; the weights and the state are the same on both ranks and
    those of one process holding the concatenated gradients."""
    steps = [[random_grads(10 * s + r, 4, 12) for r in range(2)] for s in range(3)]
    single = build_method(cfg)
    expected = [weights_of(single, torch.cat(g, 1)) for g in steps]
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = build_method(cfg)
        method.set_reducer(reduce.reducer(r))
        return [weights_of(method, g[r]) for g in steps], method.state_dict()

    (w0, s0), (w1, s1) = run_ranks(2, rank)
    assert reduce.calls == 3
    torch.testing.assert_close(w0, w1, rtol=0, atol=0)
    torch.testing.assert_close(s0, s1, rtol=0, atol=0)
    torch.testing.assert_close(w0, expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(s0, single.state_dict(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize('cfg', GRAM_CONFIGS, ids=lambda c: c['type'])
@pytest.mark.parametrize('case', ['zero', 'one_task', 'parallel', 'opposite', 'nan', 'float32_large'])
def test_gram_methods_degenerate_inputs(cfg, case):
    g = {'zero': torch.zeros(3, 6), 'one_task': torch.randn(1, 6, generator=gen(0)),
         'parallel': torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]),
         'opposite': torch.tensor([[1.0, 2.0], [-1.0, -2.0]]),
         'nan': torch.tensor([[float('nan'), 1.0], [1.0, 1.0]]),
         'float32_large': torch.randn(3, 20_000, generator=gen(1)) * 1e18}[case]
    method = build_method(cfg)
    for _ in range(2):
        out = method.combine(g, generator=gen(0))
        assert out.shape == g.shape[1:] and out.dtype == g.dtype
        if case == 'nan':
            assert not bool(torch.isfinite(out).all())
        else:
            assert bool(torch.isfinite(out).all()), out
    if case == 'zero':
        assert bool((out == 0).all())
    if case == 'one_task':
        torch.testing.assert_close(out, g[0])
    if case == 'nan':                     # the state is not poisoned: the next finite step is finite
        assert bool(torch.isfinite(method.combine(torch.ones(2, 2))).all())


# -- MoCo --------------------------------------------------------------------------------------------------------------
def moco_libmtl(steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """LibMTL's ``MoCo.backward`` (median-research-group/LibMTL, ``LibMTL/weighting/MoCo.py``, MIT licence; the
    authors' code) transcribed on ``[T, D]`` gradients and ``[T]`` losses per step: the trunk gradient of each
    step."""
    n_tasks, dim = steps[0][0].shape
    y = torch.zeros(n_tasks, dim, dtype=torch.float64)
    lambd = torch.ones(n_tasks, dtype=torch.float64) / n_tasks
    outs = []
    for step, (grads, losses) in enumerate(steps, 1):
        grads = grads.clone()
        for tn in range(n_tasks):
            grads[tn] = grads[tn] / (grads[tn].norm() + 1e-8) * losses[tn]
        y = y - (beta / step ** beta_sigma) * (y - grads)
        lambd = torch.softmax(lambd - (gamma / step ** gamma_sigma)
                              * (y @ y.t() + rho * torch.eye(n_tasks, dtype=torch.float64)) @ lambd, -1)
        outs.append(y.t() @ lambd)
    return outs


def moco_steps(seed, n_tasks, d, n_steps=6, dtype=torch.float64):
    return [(random_grads(seed + 10 * s, n_tasks, d, dtype=dtype),
             (torch.rand(n_tasks, generator=gen(seed + 10 * s + 5), dtype=torch.float64) + 0.5).to(dtype))
            for s in range(n_steps)]


@pytest.mark.parametrize('seed,n_tasks,d', CASES)
@pytest.mark.parametrize('kwargs', [{}, dict(beta=0.9, beta_sigma=0.0, gamma=0.5, gamma_sigma=1.0, rho=0.1)])
def test_moco_matches_libmtl_over_steps(seed, n_tasks, d, kwargs):
    """Six steps against the transcription of LibMTL's MoCo (float64): the same trunk gradient to 1e-12 of its
    scale (y y^T formed in float64 from the Gram and cross products instead of from y)."""
    steps = moco_steps(seed, n_tasks, d)
    method = MoCo(**kwargs)
    for (g, losses), ref in zip(steps, moco_libmtl(steps, **kwargs)):
        out = method.combine(g, losses=losses)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    assert method.task_weights is None and method.step == 6


def test_moco_float32_matches_libmtl_in_float64():
    """float32 gradients over 20,000 elements (chunked float32 products summed in float64): 1e-6 of the scale."""
    steps = moco_steps(0, 5, 20_000)
    method = MoCo()
    for (g, losses), ref in zip(steps, moco_libmtl(steps)):
        out = method.combine(g.float(), losses=losses.float())
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6 * float(ref.abs().max()))


def test_moco_tracks_the_normalised_gradients():
    """Constant gradients: y_i = (1 - prod_s (1 - beta_s)) L_i g_i / (|g_i| + eps) (the tracking recursion),
    lambda stays on the simplex, and the trunk receives y^T lambda."""
    g = random_grads(1, 3, 40)
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    target = g / (g.norm(dim=1, keepdim=True) + 1e-8) * losses[:, None]
    method, keep = MoCo(), 1.0
    for t in range(1, 6):
        out = method.combine(g, losses=losses)
        keep *= 1 - 0.5 / t ** 0.5
        torch.testing.assert_close(method.y[:, 0], (1 - keep) * target, rtol=1e-12, atol=1e-12)
        assert bool((method.lambd >= 0).all()) and float(method.lambd.sum()) == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(out, method.lambd[0] @ method.y[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('scale', [0.0, 1e-30, 1e-15, 1e-3, 1.0, 1e15, 1e20])
def test_moco_scaled_inputs(scale):
    """float32 gradients scaled by 0 .. 1e20: finite results; wherever |g| is far above eps (scales 1e-3 on) the
    result does not depend on the scale (the gradients are normalised), to 1e-5."""
    steps = moco_steps(3, 4, 20_000, n_steps=3, dtype=torch.float32)
    ref, method = MoCo(), MoCo()
    for g, losses in steps:
        expected = ref.combine(g, losses=losses)
        out = method.combine(g * scale, losses=losses)
        assert bool(torch.isfinite(out).all())
        if scale == 0:
            assert bool((out == 0).all())
        if scale >= 1e-3:
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize('case', ['zero', 'one_task', 'parallel', 'opposite'])
def test_moco_degenerate_inputs(case):
    g = {'zero': torch.zeros(3, 6), 'one_task': torch.randn(1, 6, generator=gen(0)),
         'parallel': torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]),
         'opposite': torch.tensor([[1.0, 2.0], [-1.0, -2.0]])}[case]
    method = MoCo()
    for _ in range(3):
        out = method.combine(g, losses=torch.ones(g.shape[0]))
        assert out.shape == g.shape[1:] and out.dtype == g.dtype and bool(torch.isfinite(out).all())
    if case == 'zero':
        assert bool((out == 0).all())
    if case == 'one_task':                 # lambda = 1: the tracked unit gradient
        torch.testing.assert_close(out, method.y[0, 0])
        torch.testing.assert_close(out / out.norm(), g[0] / g[0].norm())
    if case == 'opposite':                 # equal weights, the tracked gradients cancel
        torch.testing.assert_close(out, torch.zeros(2), atol=1e-6, rtol=0)


def test_moco_non_finite_step_leaves_the_state():
    g, losses = random_grads(0, 3, 8), torch.ones(3, dtype=torch.float64)
    method = MoCo()
    method.combine(g, losses=losses)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in method.state_dict().items()}
    bad = g.clone()
    bad[1, 3] = float('nan')
    assert not bool(torch.isfinite(method.combine(bad, losses=losses)).all())
    torch.testing.assert_close(method.state_dict(), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match='MoCo needs the task losses'):
        method.combine(g)


def test_moco_blocks_and_a_smaller_activation():
    """TaskBlocks give the dense result; a short batch (10 of 20 elements) gives the leading elements of what the
    zero-padded gradients give, with the same weights."""
    a, b = MoCo(), MoCo()
    losses = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for step in range(3):
        blocks, dense = blocks_and_dense(10 * step)
        torch.testing.assert_close(b.combine_blocks(blocks, losses=losses), a.combine(dense, losses=losses))
    a, b = MoCo(), MoCo()
    for step, d in enumerate([20, 10, 20, 10]):
        g = random_grads(step, 3, d)
        out = a.combine(g, losses=losses)
        padded = b.combine(torch.nn.functional.pad(g, (0, 20 - d)), losses=losses)
        torch.testing.assert_close(out, padded[:d], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.lambd, b.lambd, rtol=1e-12, atol=0)


def test_moco_ranks_agree_with_one_process():
    """Two ranks, three steps, one reducer call each: lambda is the same on both ranks and that of one process
    holding the concatenated gradients (the losses averaged), whose y is the ranks' y side by side."""
    steps = [[random_grads(10 * s + r, 4, 12) for r in range(2)] for s in range(3)]
    losses = [[torch.rand(4, generator=gen(100 + 10 * s + r), dtype=torch.float64) + 0.5 for r in range(2)]
              for s in range(3)]
    single = MoCo()
    for g, loss in zip(steps, losses):
        single.combine(torch.cat(g, 1), losses=(loss[0] + loss[1]) / 2)
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = MoCo()
        method.set_reducer(reduce.reducer(r))
        for g, loss in zip(steps, losses):
            method.combine(g[r], losses=loss[r])
        return method.state_dict()

    s0, s1 = run_ranks(2, rank)
    assert reduce.calls == 3
    torch.testing.assert_close(s0['lambd'], s1['lambd'], rtol=0, atol=0)
    torch.testing.assert_close(s0['lambd'], single.lambd, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.cat([s0['y'], s1['y']], 2), single.y, rtol=1e-12, atol=1e-14)


def test_moco_arguments_are_checked():
    for bad in (dict(beta=0.0), dict(beta=1.5), dict(gamma=0.0), dict(rho=-1.0), dict(beta_sigma=-1.0)):
        with pytest.raises(ValueError, match='MoCo needs'):
            build_method(dict(type='MoCo', **bad))


@pytest.mark.parametrize('cfg', [dict(type='ExcessMTL'), dict(type='MoCo'), dict(type='SDMGrad'), dict(type='MoDo')],
                         ids=lambda c: c['type'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_gradients(cfg, dtype):
    """Half-precision gradients (mixed precision): the result in their dtype, the state at least float32 (an
    accumulator of squares in float16 would overflow), close to the float32 run."""
    a, b = build_method(cfg), build_method(cfg)
    for step in range(3):
        g = random_grads(step, 3, 5000, dtype=torch.float32)
        losses = torch.tensor([1.0, 0.5, 2.0])
        ref = a.combine(g, losses=losses)
        out = b.combine(g.to(dtype), losses=losses)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref, rtol=0, atol=0.05 * float(ref.abs().max()))
    for value in b.state_dict().values():
        if isinstance(value, torch.Tensor):
            assert value.dtype in (torch.float32, torch.float64)


@pytest.mark.parametrize('cfg', [dict(type='ExcessMTL'), dict(type='MoCo'), dict(type='SDMGrad'), dict(type='MoDo')],
                         ids=lambda c: c['type'])
def test_blocks_without_a_base_and_with_two_base_tasks(cfg):
    """TaskBlocks of patch-only tasks (no dense base), then with two dense base tasks: three steps each give what
    the densified stacks give, the state included."""
    shape = (2, 3, 4, 4)
    losses = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for base_tasks in ([], [0, 2]):
        a, b = build_method(cfg), build_method(cfg)
        for step in range(3):
            rows = torch.tensor([0, 7, 8, 30]) if step % 2 else torch.tensor([2, 3, 17])
            base = torch.randn(len(base_tasks), *shape, generator=gen(step), dtype=torch.float64) \
                if base_tasks else None
            patch = torch.randn(3, len(rows), 3, generator=gen(step + 5), dtype=torch.float64)
            blocks = TaskBlocks(3, shape, base=base, base_tasks=base_tasks, patch=patch, patch_rows=rows,
                                patch_tasks=[0, 1, 2], dtype=torch.float64, device=torch.device('cpu'))
            for k, i in enumerate(base_tasks):
                patch[i] = blocks.gather(base)[k]
            out = b.combine_blocks(blocks, losses=losses)
            torch.testing.assert_close(out, a.combine(blocks.to_dense(), losses=losses), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(b.state_dict(), a.state_dict(), rtol=1e-9, atol=1e-12)
