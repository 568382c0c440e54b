"""TaskBlocks (per-task gradients without their zeros) and every method's ``combine_blocks`` against ``combine`` on
the same gradients densified."""
from __future__ import annotations

import copy

import pytest
import torch

from graddrop_mtl.methods import Compose, GradDrop, GradNorm, RandomGradDrop, Sum, build_method
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import gen


def sparse_blocks(seed=0, shape=(2, 5, 4, 3), channel_dim=1, n_tasks=4, dense_tasks=(0,), rows=(1, 7, 8, 20)):
    """Blocks whose tasks ``dense_tasks`` are non-zero everywhere and the others only at ``rows`` (each of those
    tasks at a random subset of them, so a patch row need not hold every patch task)."""
    g = gen(seed)
    n_channels = shape[channel_dim]
    n_rows = torch.Size(shape).numel() // n_channels
    base = torch.randn(len(dense_tasks), *shape, generator=g)
    rows_t = torch.tensor(rows)
    patch_tasks = list(range(n_tasks))
    patch = torch.randn(n_tasks, len(rows), n_channels, generator=g)
    keep = torch.rand(n_tasks, len(rows), 1, generator=g) > 0.3
    keep[:, 0] = True
    patch = patch * keep
    blocks = TaskBlocks(n_tasks, shape, base=base, base_tasks=list(dense_tasks), patch=patch, patch_rows=rows_t,
                        patch_tasks=patch_tasks, channel_dim=channel_dim)
    # the patch must agree with the base for the base tasks
    base_at_rows = blocks.gather(base)
    for k, i in enumerate(dense_tasks):
        patch[i] = base_at_rows[k]
    assert n_rows > max(rows)
    return blocks


def dense_reference(blocks: TaskBlocks) -> torch.Tensor:
    """Densify by hand, element by element, from the definition."""
    out = torch.zeros(blocks.n_tasks, *blocks.shape)
    for k, i in enumerate(blocks.base_tasks):
        out[i] = blocks.base[k]
    cd = blocks.channel_dim
    moved = out.movedim(1 + cd if cd == 1 else -1, -1)         # [T, B, *S, C] or [T, ..., C]
    flat = moved.reshape(blocks.n_tasks, -1, blocks.n_channels)
    for n, r in enumerate(blocks.patch_rows.tolist()):
        for k, i in enumerate(blocks.patch_tasks):
            flat[i, r] = blocks.patch[k, n]
    return flat.reshape(moved.shape).movedim(-1, 1 + cd if cd == 1 else -1)


@pytest.mark.parametrize('channel_dim,shape', [(1, (2, 5, 4, 3)), (-1, (6, 5, 7))])
def test_layout_and_algebra_match_the_dense_gradients(channel_dim, shape):
    blocks = sparse_blocks(shape=shape, channel_dim=channel_dim, rows=(1, 7, 8, 20))
    dense = dense_reference(blocks)
    torch.testing.assert_close(blocks.to_dense(), dense)
    flat = dense.reshape(blocks.n_tasks, -1).double()
    torch.testing.assert_close(blocks.sq_norms(), (flat ** 2).sum(1), rtol=1e-5, atol=0)
    torch.testing.assert_close(blocks.gram(), flat @ flat.t(), rtol=1e-10, atol=1e-10)
    coef = torch.tensor([0.5, -1.0, 2.0, 0.25])
    torch.testing.assert_close(blocks.linear_combination(coef), torch.einsum('t,t...->...', coef, dense))
    torch.testing.assert_close(blocks.linear_combination(), dense.sum(0))
    torch.testing.assert_close(blocks.scaled(coef).to_dense(), coef.view(-1, *[1] * len(shape)) * dense)
    # gather/scatter address the same elements as the row definition
    x = torch.randn(shape)
    picked = blocks.gather(x)
    assert picked.shape == (4, blocks.n_channels)
    y = blocks.scatter_(x.clone(), picked * 0 + 7.0)
    assert int((y == 7.0).sum()) == 4 * blocks.n_channels
    torch.testing.assert_close(blocks.gather(y), torch.full_like(picked, 7.0))


def test_no_patch_and_empty_blocks():
    base = torch.randn(2, 3, 4)
    blocks = TaskBlocks(3, (3, 4), base=base, base_tasks=[0, 2], channel_dim=-1)
    dense = blocks.to_dense()
    assert torch.equal(dense[1], torch.zeros(3, 4)) and torch.equal(dense[2], base[1])
    empty = TaskBlocks(2, (3, 4), base=None, base_tasks=[], channel_dim=-1, dtype=torch.float32, device='cpu')
    assert torch.equal(empty.to_dense(), torch.zeros(2, 3, 4))
    assert torch.equal(Sum().combine_blocks(empty), torch.zeros(3, 4))
    assert torch.equal(GradDrop().combine_blocks(empty, generator=gen(0)), torch.zeros(3, 4))


def test_invalid_blocks_are_named():
    with pytest.raises(ValueError, match='patch_tasks must include every base task'):
        TaskBlocks(2, (3, 4), base=torch.zeros(1, 3, 4), base_tasks=[0], patch=torch.zeros(1, 1, 4),
                   patch_rows=torch.tensor([0]), patch_tasks=[1], channel_dim=-1)
    with pytest.raises(ValueError, match='base has shape'):
        TaskBlocks(2, (3, 4), base=torch.zeros(2, 3, 4), base_tasks=[0], channel_dim=-1)


DETERMINISTIC = [dict(type='Sum'), dict(type='PCGrad'), dict(type='PCGrad', iterative=True), dict(type='MGDA'),
                 dict(type='MGDA', normalization='loss+'), dict(type='GradNorm'), dict(type='GradDrop', leak=1.0),
                 dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='PCGrad')),
                 dict(type='Compose', weighting=dict(type='MGDA', normalization='l2'), then=dict(type='Sum'))]


@pytest.mark.parametrize('cfg', DETERMINISTIC, ids=lambda c: str(c))
def test_combine_blocks_equals_combine(cfg):
    """Same gradients, same random stream (PCGrad's orders): the same trunk gradient and task weights, twice (so
    GradNorm's updated state is compared too)."""
    blocks = sparse_blocks(seed=3)
    dense = blocks.to_dense()
    losses = torch.tensor([1.0, 0.5, 2.0, 0.8])
    a, b = build_method(cfg), build_method(cfg)
    ga, gb = gen(5), gen(5)
    for _ in range(2):
        out_blocks = a.combine_blocks(blocks, losses=losses, generator=ga)
        out_dense = b.combine(dense, losses=losses, generator=gb)
        torch.testing.assert_close(out_blocks, out_dense, rtol=1e-5, atol=1e-6)
        if b.task_weights is not None:
            torch.testing.assert_close(a.task_weights, b.task_weights, rtol=1e-5, atol=1e-7)


def test_methods_without_a_block_version_densify():
    """The default combine_blocks densifies (here: batch-separated GradDrop, which sums over the batch)."""
    blocks = sparse_blocks(seed=4)
    act = torch.randn(blocks.shape, generator=gen(1))
    m = GradDrop(batch_separated=True)
    out = m.combine_blocks(blocks, activation=act, generator=gen(2))
    ref = GradDrop(batch_separated=True).combine(blocks.to_dense(), activation=act, generator=gen(2))
    torch.testing.assert_close(out, ref)


def _graddrop_structure(method, blocks, out):
    """At every element the result is the sum of the positive or of the negative task gradients (or 0)."""
    dense = blocks.to_dense()
    pos = dense.clamp_min(0).sum(0)
    neg = dense.clamp_max(0).sum(0)
    close = lambda a, b: (a - b).abs() <= 1e-6 * (1 + b.abs())   # noqa: E731
    assert bool((close(out, pos) | close(out, neg) | (out == 0)).all())
    return dense, pos, neg


@pytest.mark.parametrize('cls', [GradDrop, RandomGradDrop])
def test_graddrop_blocks_keep_one_sign_and_are_unbiased(cls):
    blocks = sparse_blocks(seed=6)
    method = cls()
    g = gen(0)
    n = 3000
    acc = torch.zeros(blocks.shape, dtype=torch.float64)
    for _ in range(n):
        out = method.combine_blocks(blocks, generator=g)
        acc += out.double()
    dense, pos, neg = _graddrop_structure(method, blocks, out)
    mean = acc / n
    if cls is GradDrop:
        # k = 1: E[out] = sum_i G_i (Proposition 3), and single-task elements are passed through untouched
        total = dense.sum(0).double()
        spread = (pos - neg).abs().double()
        assert float(((mean - total).abs() - 4 * spread / n ** 0.5).max()) <= 1e-6
        single = (dense != 0).sum(0) == 1
        assert torch.equal(out[single], dense.sum(0)[single])
    else:
        # a fair coin per element: E[out] = (pos + neg) / 2
        expected = 0.5 * (pos + neg).double()
        assert float(((mean - expected).abs() - 4 * (pos - neg).abs().double() / n ** 0.5).max()) <= 1e-6


def test_graddrop_blocks_statistics_match_dense():
    """Sign purity and the conflict fraction do not depend on the draws: equal for blocks and dense; kept
    fractions agree in expectation."""
    blocks = sparse_blocks(seed=8)
    a, b = GradDrop(), GradDrop()
    a.combine_blocks(blocks, generator=gen(0))
    b.combine(blocks.to_dense(), generator=gen(0))
    sa, sb = a.last_stats(), b.last_stats()
    assert sa.keys() == sb.keys()
    for key in ('sign_purity', 'conflict_frac'):
        assert sa[key] == pytest.approx(sb[key], rel=1e-6)
    ka, kb = [], []
    for s in range(200):
        a.combine_blocks(blocks, generator=gen(s))
        b.combine(blocks.to_dense(), generator=gen(1000 + s))
        ka.append([a.last_stats()[f'kept_frac_{i}'] for i in range(4)])
        kb.append([b.last_stats()[f'kept_frac_{i}'] for i in range(4)])
    torch.testing.assert_close(torch.tensor(ka).mean(0), torch.tensor(kb).mean(0), atol=0.03, rtol=0)


def test_graddrop_blocks_leak_and_norm_keeping():
    blocks = sparse_blocks(seed=9)
    dense = blocks.to_dense()
    out = GradDrop(leak=[1.0, 1.0, 1.0, 1.0]).combine_blocks(blocks, generator=gen(0))
    torch.testing.assert_close(out, dense.sum(0))
    out = GradDrop(keep_grad_norm=True).combine_blocks(blocks, generator=gen(0))
    torch.testing.assert_close(out.norm(), dense.sum(0).norm())
    # a partial leak on a sparse task changes only the patch rows
    a = GradDrop(leak=[0.0, 0.5, 0.0, 0.0]).combine_blocks(blocks, generator=gen(1))
    b = GradDrop().combine_blocks(blocks, generator=gen(1))
    outside = torch.ones(blocks.shape, dtype=torch.bool)
    blocks.scatter_(outside, torch.zeros(4, blocks.n_channels, dtype=torch.bool))
    assert torch.equal(a[outside], b[outside])


def test_compose_blocks_passes_weighted_gradients():
    blocks = sparse_blocks(seed=10)
    losses = torch.tensor([1.0, 0.5, 2.0, 0.8])
    a = Compose(weighting=dict(type='GradNorm'), then=dict(type='GradDrop', leak=1.0))
    ref = GradNorm()
    out = a.combine_blocks(blocks, losses=losses, generator=gen(0))
    ref_out = ref.combine(blocks.to_dense(), losses=losses)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.task_weights, ref.task_weights)
    assert copy.deepcopy(a).state_dict()['weighting']['weights'] is not None


@pytest.mark.parametrize('trim', [0, 1, 2])
@pytest.mark.parametrize('n_tasks,dense_tasks,drop_base', [(6, (0,), False), (7, (0, 3), False), (5, (2,), True)])
@pytest.mark.parametrize('channel_dim,shape', [(1, (2, 5, 4, 3)), (-1, (6, 5, 7))])
def test_trimmed_mean_blocks_stay_sparse_and_equal_dense(trim, n_tasks, dense_tasks, drop_base, channel_dim, shape):
    """TrimmedMean on the blocks (the absent tasks' zeros ranked as at most k zeros at each end) equals the dense
    trimmed mean, and never densifies."""
    from graddrop_mtl.methods import TrimmedMean
    blocks = sparse_blocks(seed=trim + n_tasks, shape=shape, channel_dim=channel_dim, n_tasks=n_tasks,
                           dense_tasks=dense_tasks, rows=(1, 7, 8, 20))
    if drop_base:                 # no base: every task is zero outside the patch rows
        blocks.base, blocks.base_tasks = None, []
    blocks.to_dense = None        # a call would fail: the block path must not densify
    out = TrimmedMean(trim_number=trim).combine_blocks(blocks)
    ref = TrimmedMean(trim_number=trim).combine(dense_reference(blocks))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
