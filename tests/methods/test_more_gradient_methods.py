"""The stateful gradient methods of issue 23 that TorchJD 0.18 offers as weightings (ExcessMTL, SDMGrad, MoDo) and
MoCo (LibMTL only): against the peer on random inputs over several steps (the state carries over), the defining
update, degenerate and scaled inputs, TaskBlocks, several ranks and the state round trip.

ExcessMTL and MoCo keep their state on the gradients summed over the batch (``graddrop_mtl.methods.batch_sums``);
a stack ``[T, 1, D]`` is one sample of D features, where they equal the peers' updates on ``[T, D]``."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchjd.aggregation as torchjd_aggregation  # requirements/bench.txt

from graddrop_mtl.methods import ExcessMTL, MoCo, MoDo, SDMGrad, build_method
from graddrop_mtl.methods.batch_sums import batch_sum, per_sample, state_rest
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import (
    DEGENERATE_CASES,
    ThreadAllReduce,
    assert_degenerate_output,
    check_scaled_inputs,
    degenerate_grads,
    gen,
    min_norm_by_support_enumeration,
    run_ranks,
)


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
    """TorchJD's ExcessMTLWeighting fed the same [T, D] matrices for six steps (float64), ours one sample of D
    features: the same weights and the same combined gradient to 1e-12 (rsqrt against 1 / sqrt: rounding only)."""
    ours = ExcessMTL(robust_step_size=step_size, n_warmup_steps=warmup)
    ref = torchjd_aggregation.ExcessMTLWeighting(robust_step_size=step_size, n_warmup_steps=warmup)
    for step in range(6):
        g = random_grads(seed + 10 * step, n_tasks, d)
        out = ours.combine(g[:, None])
        w = ref(g)
        torch.testing.assert_close(ours.task_weights, w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[0], w @ g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('warmup', [0, 1])
def test_excess_mtl_batch_is_torchjd_on_the_root_batch_sum_of_squares(warmup):
    """A batch of B samples: the weights are TorchJD's fed sqrt(sum_b g_b^2) (per feature), whose square is the
    batch-summed q the accumulator and the excess risks are made of; the trunk gets w @ g per sample."""
    ours, ref = ExcessMTL(n_warmup_steps=warmup), torchjd_aggregation.ExcessMTLWeighting(n_warmup_steps=warmup)
    for step, batch in enumerate([4, 4, 2, 5, 4]):
        g = random_grads(step, 3, batch * 15).reshape(3, batch, 15)
        out = ours.combine(g)
        w = ref(g.pow(2).sum(1).sqrt())
        torch.testing.assert_close(ours.task_weights, w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, torch.einsum('t,tbd->bd', w, g), rtol=1e-12, atol=1e-12)
    assert ours.sq_grad_sum.shape == (3, 1, 15)


def test_excess_mtl_float32_matches_torchjd_in_float64():
    """float32 gradients (float32 accumulator, float64 sums): TorchJD's float64 weights to 1e-5."""
    ours, ref = ExcessMTL(), torchjd_aggregation.ExcessMTLWeighting(n_warmup_steps=1)
    for step in range(4):
        g = random_grads(step, 5, 20_000)
        ours.combine(g.float()[:, None])
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
        method.combine(torch.from_numpy(grads)[:, None])
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
    g = degenerate_grads(case)
    method = ExcessMTL()
    for _ in range(3):
        out = method.combine(g)
        assert_degenerate_output(out, g, case)
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
    """float32 gradients (8 samples) scaled by 0 .. 1e15: finite results; with one warm-up step (the baseline) the
    weights are those of the unscaled gradients wherever S is far above eps (scales 1 .. 1e15)."""
    steps = [random_grads(s, 4, 20_000, dtype=torch.float32).reshape(4, 8, 2500) for s in range(4)]
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


def test_excess_mtl_short_batch_and_feature_shape():
    """A short batch (2 of 4 samples) gives what the same samples padded with zero samples give (zeros add nothing);
    the state does not grow with the batch; other features or tasks than the state's are refused, named."""
    a, b = ExcessMTL(), ExcessMTL()
    for step, batch in enumerate([4, 2, 4, 2]):
        g = random_grads(step, 3, batch * 5).reshape(3, batch, 5)
        out = a.combine(g)
        padded = b.combine(torch.nn.functional.pad(g, (0, 0, 0, 4 - batch)))
        torch.testing.assert_close(a.task_weights, b.task_weights, rtol=1e-12, atol=0)
        torch.testing.assert_close(out, padded[:batch], rtol=1e-12, atol=0)
    assert a.sq_grad_sum.shape == (3, 1, 5)
    with pytest.raises(ValueError, match='set up for 3 tasks, 1 problems and 5 features'):
        a.combine(random_grads(0, 3, 12).reshape(3, 2, 6))
    with pytest.raises(ValueError, match='set up for 3 tasks'):
        a.combine(random_grads(0, 4, 10).reshape(4, 2, 5))


RANK_GRANULARITIES = [(None, (5,)), (1, (2, 5)), (0, (2, 5))]


@pytest.mark.parametrize('state_dims,features', RANK_GRANULARITIES, ids=lambda v: f'{v}')
def test_excess_mtl_ranks_agree_with_one_process(state_dims, features):
    """Two ranks, three samples each, three steps, one reducer call per combine: both ranks hold the same state,
    bit for bit (the accumulator included), that of one process holding the concatenated batch (to 1e-12), and
    each rank's trunk gradient is that process's at its samples; per feature, per channel and per task."""
    steps = [[random_grads(10 * s + r, 4, 3 * int(np.prod(features))).reshape(4, 3, *features) for r in range(2)]
             for s in range(3)]
    single, outs = ExcessMTL(state_dims=state_dims), []
    for g in steps:
        outs.append(single.combine(torch.cat(g, 1)))
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = ExcessMTL(state_dims=state_dims)
        method.set_reducer(reduce.reducer(r))
        results = [method.combine(g[r]) for g in steps]
        return method.state_dict(), results

    (s0, out0), (s1, out1) = run_ranks(2, rank)
    assert reduce.calls == 3                              # one reducer call per combine
    assert_same_state(s0, s1)
    torch.testing.assert_close(s0, single.state_dict(), rtol=1e-12, atol=0)
    for out, a, b in zip(outs, out0, out1):
        torch.testing.assert_close(torch.cat([a, b]), out, rtol=1e-12, atol=1e-15)


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
@pytest.mark.parametrize('case', DEGENERATE_CASES)
def test_gram_methods_degenerate_inputs(cfg, case):
    g = degenerate_grads(case)
    method = build_method(cfg)
    for _ in range(2):
        out = method.combine(g, generator=gen(0))
        assert_degenerate_output(out, g, case)
    if case == 'one_task':
        torch.testing.assert_close(out, g[0])
    if case == 'nan':                     # the state is not poisoned: the next finite step is finite
        assert bool(torch.isfinite(method.combine(torch.ones(2, 2))).all())


# -- MoCo --------------------------------------------------------------------------------------------------------------
def moco_libmtl(steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """LibMTL's ``MoCo.backward`` (median-research-group/LibMTL, ``LibMTL/weighting/MoCo.py``, MIT licence; the
    authors' code) transcribed on ``[T, D]`` gradients and ``[T]`` losses per step: after each step the tracked
    ``y``, the weights ``lambd``, the normalised loss-scaled gradients and LibMTL's trunk gradient ``y^T lambd``."""
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
        outs.append((y, lambd, grads, y.t() @ lambd))
    return outs


def moco_steps(seed, n_tasks, d, n_steps=6, dtype=torch.float64):
    return [(random_grads(seed + 10 * s, n_tasks, d, dtype=dtype),
             (torch.rand(n_tasks, generator=gen(seed + 10 * s + 5), dtype=torch.float64) + 0.5).to(dtype))
            for s in range(n_steps)]


@pytest.mark.parametrize('seed,n_tasks,d', CASES)
@pytest.mark.parametrize('kwargs', [{}, dict(beta=0.9, beta_sigma=0.0, gamma=0.5, gamma_sigma=1.0, rho=0.1)])
def test_moco_matches_libmtl_over_steps(seed, n_tasks, d, kwargs):
    """Six steps against the transcription of LibMTL's MoCo (float64) on one sample of D features: the same y and
    lambda to 1e-12; the trunk gradient is this step's normalised gradients weighted by lambda (LibMTL's is
    y^T lambda: the activation of one step cannot receive earlier samples' gradients)."""
    steps = moco_steps(seed, n_tasks, d)
    method = MoCo(**kwargs)
    for (g, losses), (y, lambd, ghat, _) in zip(steps, moco_libmtl(steps, **kwargs)):
        out = method.combine(g[:, None], losses=losses)
        torch.testing.assert_close(method.y[:, 0], y, rtol=0, atol=1e-12 * float(y.abs().max()))
        torch.testing.assert_close(method.lambd[0], lambd, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(out[0], ghat.t() @ lambd, rtol=0, atol=1e-12 * float(ghat.abs().max()))
    assert method.task_weights is None and method.step == 6


def test_moco_float32_matches_libmtl_in_float64():
    """float32 gradients of 20,000 features (chunked float32 products summed in float64): lambda to 1e-6, the trunk
    gradient to 1e-6 of its scale."""
    steps = moco_steps(0, 5, 20_000)
    method = MoCo()
    for (g, losses), (_, lambd, ghat, _) in zip(steps, moco_libmtl(steps)):
        out = method.combine(g.float()[:, None], losses=losses.float())
        torch.testing.assert_close(method.lambd[0], lambd, rtol=1e-6, atol=1e-7)
        ref = ghat.t() @ lambd
        torch.testing.assert_close(out[0].double(), ref, rtol=0, atol=1e-6 * float(ref.abs().max()))


def test_moco_tracks_the_normalised_gradients():
    """Constant gradients of a batch of 4: y_i = (1 - prod_s (1 - beta_s)) L_i s_i / (|s_i| + eps) for the batch
    sums s_i (the tracking recursion), lambda stays on the simplex and takes LibMTL's step on y y^T, and every
    sample receives sum_i lambda_i L_i g_i / (|g_i| + eps)."""
    g = random_grads(1, 3, 40).reshape(3, 4, 10)
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    s = g.sum(1)
    target = s / (s.norm(dim=1, keepdim=True) + 1e-8) * losses[:, None]
    unit = g / (g.flatten(1).norm(dim=1)[:, None, None] + 1e-8) * losses[:, None, None]
    method, keep, lambd = MoCo(), 1.0, torch.full((3,), 1 / 3, dtype=torch.float64)
    for t in range(1, 6):
        out = method.combine(g, losses=losses)
        keep *= 1 - 0.5 / t ** 0.5
        y = (1 - keep) * target
        lambd = torch.softmax(lambd - 0.1 / t ** 0.5 * (y @ y.t()) @ lambd, -1)
        torch.testing.assert_close(method.y[:, 0], y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(method.lambd[0], lambd, rtol=1e-12, atol=1e-14)
        assert bool((method.lambd >= 0).all()) and float(method.lambd.sum()) == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(out, torch.einsum('t,tbd->bd', lambd, unit), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('scale', [0.0, 1e-30, 1e-15, 1e-3, 1.0, 1e15, 1e20])
def test_moco_scaled_inputs(scale):
    """float32 gradients scaled by 0 .. 1e20: finite results; wherever |g| is far above eps (scales 1e-3 on) the
    result does not depend on the scale (the gradients are normalised), to 1e-5."""
    steps = [(g.reshape(4, 8, 2500), losses) for g, losses in moco_steps(3, 4, 20_000, n_steps=3, dtype=torch.float32)]
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
    g = degenerate_grads(case)
    method = MoCo()
    for _ in range(3):
        out = method.combine(g, losses=torch.ones(g.shape[0]))
        assert_degenerate_output(out, g, case)
    if case == 'zero':
        assert bool((out == 0).all())
    if case == 'one_task':                 # lambda = 1: the unit gradient
        torch.testing.assert_close(out, g[0] / g[0].norm())
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


def test_moco_blocks_and_a_short_batch():
    """TaskBlocks give the dense result and state; a short batch (2 of 4 samples) gives what the same samples padded
    with zero samples give; other features than the state's are refused, named."""
    a, b = MoCo(), MoCo()
    losses = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for step in range(3):
        blocks, dense = blocks_and_dense(10 * step)
        torch.testing.assert_close(b.combine_blocks(blocks, losses=losses), a.combine(dense, losses=losses))
    torch.testing.assert_close(b.state_dict(), a.state_dict(), rtol=1e-12, atol=1e-14)
    a, b = MoCo(), MoCo()
    for step, batch in enumerate([4, 2, 4, 2]):
        g = random_grads(step, 3, batch * 5).reshape(3, batch, 5)
        out = a.combine(g, losses=losses)
        padded = b.combine(torch.nn.functional.pad(g, (0, 0, 0, 4 - batch)), losses=losses)
        torch.testing.assert_close(out, padded[:batch], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=1e-12, atol=0)
    assert a.y.shape == (3, 1, 5)
    with pytest.raises(ValueError, match='set up for 3 tasks, 1 problems and 5 features'):
        a.combine(random_grads(0, 3, 12).reshape(3, 2, 6), losses=losses)


@pytest.mark.parametrize('state_dims,features', RANK_GRANULARITIES, ids=lambda v: f'{v}')
def test_moco_ranks_agree_with_one_process(state_dims, features):
    """Two ranks, three samples each, three steps, one reducer call each: both ranks hold the same state, bit for
    bit (y included), that of one process holding the concatenated batch with the losses averaged (to 1e-12), and
    each rank's trunk gradient is that process's at its samples; per feature, per channel and per task."""
    steps = [[random_grads(10 * s + r, 4, 3 * int(np.prod(features))).reshape(4, 3, *features) for r in range(2)]
             for s in range(3)]
    losses = [[torch.rand(4, generator=gen(100 + 10 * s + r), dtype=torch.float64) + 0.5 for r in range(2)]
              for s in range(3)]
    single, outs = MoCo(state_dims=state_dims), []
    for g, loss in zip(steps, losses):
        outs.append(single.combine(torch.cat(g, 1), losses=(loss[0] + loss[1]) / 2))
    reduce = ThreadAllReduce(2)

    def rank(r):
        method = MoCo(state_dims=state_dims)
        method.set_reducer(reduce.reducer(r))
        results = [method.combine(g[r], losses=loss[r]) for g, loss in zip(steps, losses)]
        return method.state_dict(), results

    (s0, out0), (s1, out1) = run_ranks(2, rank)
    assert reduce.calls == 3
    assert_same_state(s0, s1)
    torch.testing.assert_close(s0, single.state_dict(), rtol=1e-12, atol=1e-15)
    for out, a, b in zip(outs, out0, out1):
        torch.testing.assert_close(torch.cat([a, b]), out, rtol=1e-12, atol=1e-15)


def test_moco_arguments_are_checked():
    for bad in (dict(beta=0.0), dict(beta=1.5), dict(gamma=0.0), dict(rho=-1.0), dict(beta_sigma=-1.0)):
        with pytest.raises(ValueError, match='MoCo needs'):
            build_method(dict(type='MoCo', **bad))


# -- state of ExcessMTL and MoCo: the same on every rank, independent of the batch, resumable --------------------------
def assert_same_state(a: dict, b: dict) -> None:
    """Two state dicts hold the same keys and the same values, bit for bit."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


STATE_CONFIGS = [dict(type='ExcessMTL'), dict(type='ExcessMTL', n_warmup_steps=0), dict(type='MoCo'),
                 dict(type='MoCo', beta=0.9, beta_sigma=0.0, rho=0.1)]


def rank_steps(n_steps: int, dtype=torch.float32) -> list:
    """Per step, per rank (two): gradients of 3 samples at a [3, 2, 4] feature map for 4 tasks, and losses."""
    return [[(random_grads(10 * s + r, 4, 72, dtype=dtype).reshape(4, 3, 3, 2, 4),
              (torch.rand(4, generator=gen(200 + 10 * s + r)) + 0.5).to(dtype)) for r in range(2)]
            for s in range(n_steps)]


#: Per-channel state (state_dims=1): the resume test runs on these too.
CHANNEL_CONFIGS = [dict(type='ExcessMTL', state_dims=1), dict(type='MoCo', state_dims=1)]


@pytest.mark.parametrize('cfg', STATE_CONFIGS + CHANNEL_CONFIGS, ids=lambda c: '-'.join(f'{v}' for v in c.values()))
def test_resume_on_two_ranks_continues_the_uninterrupted_run(cfg):
    """Two ranks (float32): run 2 steps, save rank 0's state_dict through torch.save, load it on BOTH ranks into
    fresh methods and run 3 more: every output and the final states equal, bit for bit, those of the same two
    ranks running 5 steps uninterrupted (and rank 1's own state equals rank 0's at the save)."""
    steps = rank_steps(5)

    def uninterrupted(reduce, r):
        method = build_method(cfg)
        method.set_reducer(reduce.reducer(r))
        return [method.combine(g, losses=loss) for g, loss in (st[r] for st in steps)], method.state_dict()

    reduce = ThreadAllReduce(2)
    full = run_ranks(2, lambda r: uninterrupted(reduce, r))
    saved = []

    def first_part(reduce, r):
        method = build_method(cfg)
        method.set_reducer(reduce.reducer(r))
        outs = [method.combine(g, losses=loss) for g, loss in (st[r] for st in steps[:2])]
        buf = io.BytesIO()
        torch.save(method.state_dict(), buf)
        return outs, buf.getvalue()

    reduce = ThreadAllReduce(2)
    first = run_ranks(2, lambda r: first_part(reduce, r))
    assert_same_state(torch.load(io.BytesIO(first[0][1])), torch.load(io.BytesIO(first[1][1])))
    saved = first[0][1]                                       # rank 0's checkpoint, loaded by every rank

    def second_part(reduce, r):
        method = build_method(cfg)
        method.load_state_dict(torch.load(io.BytesIO(saved)))
        method.set_reducer(reduce.reducer(r))
        return [method.combine(g, losses=loss) for g, loss in (st[r] for st in steps[2:])], method.state_dict()

    reduce = ThreadAllReduce(2)
    second = run_ranks(2, lambda r: second_part(reduce, r))
    for r in range(2):
        for a, b in zip(full[r][0], first[r][0] + second[r][0]):
            assert torch.equal(a, b)
        assert_same_state(full[r][1], second[r][1])
    assert_same_state(full[0][1], full[1][1])
    if cfg.get('state_dims') == 1:                            # the state is per channel: [T, P, C]
        assert (full[0][1]['sq_grad_sum'] if cfg['type'] == 'ExcessMTL' else full[0][1]['y']).shape == (4, 1, 3)


@pytest.mark.parametrize('cfg', STATE_CONFIGS[::2], ids=lambda c: c['type'])
def test_state_does_not_grow_with_the_batch(cfg):
    """Batches of 2 and of 32 samples at a [3, 2, 4] feature map: state tensors of the same shapes, T x 24 floats
    for the per-feature part."""
    sizes = []
    for batch in (2, 32):
        method = build_method(cfg)
        for step in range(2):
            g = random_grads(step, 4, batch * 24, dtype=torch.float32).reshape(4, batch, 3, 2, 4)
            method.combine(g, losses=torch.rand(4, generator=gen(step)) + 0.5)
        sizes.append({k: tuple(v.shape) for k, v in method.state_dict().items() if isinstance(v, torch.Tensor)})
    assert sizes[0] == sizes[1]
    assert max(int(np.prod(shape)) for shape in sizes[0].values()) == 4 * 24


@pytest.mark.parametrize('cfg', STATE_CONFIGS[::2], ids=lambda c: c['type'])
@pytest.mark.parametrize('channel_dim', [1, -1])
@pytest.mark.parametrize('state_dims', [None, 2, 1, 0])
def test_blocks_batch_sums_at_patch_rows(cfg, channel_dim, state_dims):
    """TaskBlocks whose patch rows fall on the same position in different samples (their batch sums add up), for
    both layouts and every granularity of the state: three steps give the densified stack's results and state."""
    cfg = dict(cfg, state_dims=state_dims)
    shape = (3, 2, 2, 3) if channel_dim == 1 else (3, 2, 3, 2)
    per_sample = 6                                            # rows of one sample
    rows = torch.tensor([1, 1 + per_sample, 4 + 2 * per_sample, 5])
    a, b = build_method(cfg), build_method(cfg)
    losses = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for step in range(3):
        base = torch.randn(1, *shape, generator=gen(step), dtype=torch.float64)
        patch = torch.randn(3, len(rows), 2, generator=gen(step + 5), dtype=torch.float64)
        blocks = TaskBlocks(3, shape, base=base, base_tasks=[1], patch=patch, patch_rows=rows,
                            patch_tasks=[0, 1, 2], channel_dim=channel_dim)
        patch[1] = blocks.gather(base)[0]                     # the patch repeats the base task's values
        out = b.combine_blocks(blocks, losses=losses)
        torch.testing.assert_close(out, a.combine(blocks.to_dense(), losses=losses), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b.state_dict(), a.state_dict(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('cfg', [dict(type='ExcessMTL'), dict(type='MoCo'), dict(type='SDMGrad'), dict(type='MoDo')],
                         ids=lambda c: c['type'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_gradients(cfg, dtype):
    """Half-precision gradients (mixed precision): the result in their dtype, the state at least float32 (an
    accumulator of squares in float16 would overflow), close to the float32 run."""
    a, b = build_method(cfg), build_method(cfg)
    for step in range(3):
        g = random_grads(step, 3, 5000, dtype=torch.float32).reshape(3, 10, 500)
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


# -- granularity of the state (state_dims) -----------------------------------------------------------------------
def conv_grads(seed: int, n_tasks: int = 3, batch: int = 4, shape=(3, 2, 5)) -> torch.Tensor:
    """Gradients at a [B, C, H, W] conv map, [T, B, C, H, W] (float64)."""
    return random_grads(seed, n_tasks, batch * int(np.prod(shape))).reshape(n_tasks, batch, *shape)


@pytest.mark.parametrize('square', [False, True])
@pytest.mark.parametrize('state_dims', [None, 0, 1, 2, 3])
def test_batch_sums_are_the_per_feature_sums_summed_over_the_trailing_dims(square, state_dims):
    """batch_sum with the rest of the feature dims grouped: the per-feature batch sums (of squares) summed over
    the feature dims after the first state_dims; kept dims [C, H, W][:state_dims]."""
    g = conv_grads(0)                                                      # [3, 4, 3, 2, 5]
    x = per_sample(g)
    rest = state_rest(tuple(g.shape[1:]), state_dims)
    kept = (3, 2, 5)[:3 if state_dims is None else state_dims]
    assert rest == int(np.prod((3, 2, 5))) // int(np.prod(kept))
    per_feature = batch_sum(x, square)                                     # [3, 1, 30]
    expected = per_feature.reshape(3, 1, *kept, -1).sum(-1).reshape(3, 1, -1)
    out = batch_sum(x, square, rest=rest)
    assert out.shape == (3, 1, int(np.prod(kept)))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)


def test_excess_mtl_per_channel_accumulates_the_per_feature_squares_summed_over_the_pixels():
    """state_dims=1 on [T, B, C, H, W] for four steps: the accumulator is [T, 1, C] and equals the per-feature
    accumulator summed over H and W; the weights are those of the per-feature method fed one sample of C features,
    sqrt of the squares summed over the batch and the pixels (the excess risk runs over the channels); the trunk
    gets w @ g per sample. With problem dims the accumulator is [T, P, C]."""
    channel, feature, root = ExcessMTL(state_dims=1), ExcessMTL(), ExcessMTL()
    for step in range(4):
        g = conv_grads(step)
        out = channel.combine(g)
        feature.combine(g)
        root.combine(g.pow(2).sum((1, 3, 4)).sqrt()[:, None])
        torch.testing.assert_close(channel.task_weights, root.task_weights, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, torch.einsum('t,t...->...', channel.task_weights, g), rtol=1e-12, atol=1e-12)
    assert channel.sq_grad_sum.shape == (3, 1, 3)
    torch.testing.assert_close(channel.sq_grad_sum, feature.sq_grad_sum.reshape(3, 1, 3, 10).sum(-1),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(channel.sq_grad_sum, root.sq_grad_sum, rtol=1e-12, atol=0)
    problems = ExcessMTL(state_dims=1)
    problems.combine(random_grads(9, 3, 2 * 4 * 30).reshape(3, 2, 4, 3, 2, 5), problem_dims=1)
    assert problems.sq_grad_sum.shape == (3, 2, 3)


def test_moco_per_channel_tracks_the_gradient_of_a_per_channel_bias():
    """state_dims=1 on [T, B, C, H, W] for four steps: y is [T, 1, C] and, with lambda, equals the per-feature
    method's fed the gradients summed over the pixels (the gradient of a per-channel bias, whose batch sum is the
    per-feature batch sum summed over H and W); the trunk keeps the per-sample normalisation,
    sum_i lambda_i L_i g_i / (|g_i| + eps)."""
    channel, bias = MoCo(state_dims=1), MoCo()
    losses = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for step in range(4):
        g = conv_grads(step)
        out = channel.combine(g, losses=losses)
        bias.combine(g.sum((3, 4)), losses=losses)
        torch.testing.assert_close(channel.y, bias.y, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(channel.lambd, bias.lambd, rtol=1e-12, atol=1e-15)
        coef = channel.lambd[0] * losses / (g.flatten(1).norm(dim=1) + channel.eps)
        torch.testing.assert_close(out, torch.einsum('t,t...->...', coef, g), rtol=1e-12, atol=1e-15)
    assert channel.y.shape == (3, 1, 3)


@pytest.mark.parametrize('cls', [ExcessMTL, MoCo])
def test_state_dims_is_checked(cls):
    """A bad state_dims is refused at construction, one beyond the activation's feature dims at the first step
    (dense and TaskBlocks); the error names the value and the activation shape."""
    for bad in (-1, 1.5, '1', True):
        with pytest.raises(ValueError, match=f'{cls.__name__} state_dims must be None .* got {bad!r}'):
            cls(state_dims=bad)
    losses = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r'state_dims=4 .* shape \(4, 3, 2, 5\)'):
        cls(state_dims=4).combine(conv_grads(0), losses=losses)
    with pytest.raises(ValueError, match=r'state_dims=1 .* shape \(4, 3, 2, 5\) .* batch dim 3'):
        cls(state_dims=1).combine(conv_grads(0), losses=torch.ones(3, 4, 3, 2, dtype=torch.float64), problem_dims=3)
    blocks, _ = blocks_and_dense(0)
    with pytest.raises(ValueError, match=r'state_dims=4 .* shape \(2, 3, 4, 4\)'):
        cls(state_dims=4).combine_blocks(blocks, losses=losses)
    assert cls(state_dims=3).combine(conv_grads(0), losses=losses).shape == (4, 3, 2, 5)
