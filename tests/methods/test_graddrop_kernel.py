"""``graddrop_kernel``: GradDrop's rule in one compiled pass gives what the PyTorch path gives."""
from __future__ import annotations

import pytest
import torch

from graddrop_mtl.methods import GradDrop, RandomGradDrop, graddrop_kernel
from graddrop_mtl.methods import graddrop as graddrop_module
from graddrop_mtl.methods.base import abs_sum_tasks

from ._util import gen


def test_the_compiled_pass_is_available_here():
    """numba is in requirements/runtime.txt: in the project's environment GradDrop takes the compiled pass (the
    methods fall back to PyTorch only where numba cannot be imported)."""
    assert graddrop_kernel.available(torch.zeros(1))
    assert not graddrop_kernel.available(torch.zeros(1, dtype=torch.float64))


def stack(n_tasks=40, shape=(4, 16, 13, 11), seed=0):
    """Per-task gradients with exact zeros (whole elements and single tasks) and exact cancellations."""
    g = gen(seed)
    x = torch.randn(n_tasks, *shape, generator=g) * torch.logspace(-3, 1, n_tasks).view(-1, *[1] * len(shape))
    x[:, 0, 0] = 0.0                                   # every task zero: P = 1/2, nothing to keep
    x[n_tasks // 2, 1] = 0.0                           # one task zero there
    x[1, -1, -1] = -x[0, -1, -1]
    return x


def rows_sum(x):
    out = x[0].clone()
    for row in x[1:]:
        out += row
    return out


def torch_path(method, x, generator, monkeypatch):
    """The PyTorch path, with the task sums added row by row in task order (the kernel's order)."""
    with monkeypatch.context() as m:
        m.setattr(graddrop_kernel, 'available', lambda flat: False)
        m.setattr(graddrop_module, 'sum_and_abs_sum_tasks', lambda s: (rows_sum(s), abs_sum_tasks(s)))
        out = method.combine(x, generator=generator)
    return out, method.last_stats()


def kernel_path(method, x, generator, monkeypatch):
    calls = []
    real = graddrop_kernel.graddrop_pass
    with monkeypatch.context() as m:
        m.setattr(graddrop_kernel, 'graddrop_pass', lambda *a, **kw: calls.append(1) or real(*a, **kw))
        out = method.combine(x, generator=generator)
    assert calls == [1]                                # combine took the compiled pass
    return out, method.last_stats()


@pytest.mark.parametrize('method', [GradDrop(), GradDrop(k=0.5), GradDrop(k=3.0), GradDrop(eps=1e-3),
                                    RandomGradDrop()], ids=['k1', 'k0.5', 'k3', 'eps', 'random'])
def test_the_kernel_gives_the_pytorch_path_bit_for_bit(method, monkeypatch):
    x = stack()
    ref, ref_stats = torch_path(method, x, gen(7), monkeypatch)
    out, stats = kernel_path(method, x, gen(7), monkeypatch)
    assert out.shape == x.shape[1:] and out.dtype == x.dtype
    assert torch.equal(out, ref)
    assert stats.keys() == ref_stats.keys()
    for key in ref_stats:
        if key == 'sign_purity':                       # a float64 sum in another order
            assert stats[key] == pytest.approx(ref_stats[key], rel=1e-9)
        else:                                          # exact counts
            assert stats[key] == ref_stats[key], key
    assert (out[0, 0] == 0).all()


def test_one_sign_survives_and_the_counts_are_the_masks(monkeypatch):
    """Each element is the positive or the negative mass, never a mix, and the logged kept fractions are those of
    the masks that select them."""
    x = stack(n_tasks=6, shape=(3, 40, 41))
    method = GradDrop()
    out, stats = kernel_path(method, x, gen(3), monkeypatch)
    pos = x.clamp(min=0).sum(0)
    neg = x.clamp(max=0).sum(0)
    took_pos = torch.isclose(out, pos, rtol=1e-5, atol=1e-6) & (pos != 0)
    took_neg = torch.isclose(out, neg, rtol=1e-5, atol=1e-6) & (neg != 0)
    assert bool((took_pos | took_neg | (out == 0)).all())
    survivor = took_pos.float() - (took_neg & ~took_pos).float()
    for t in range(x.shape[0]):
        agree = ((x[t] * survivor) > 0).sum().item()
        nonzero = (x[t] != 0).sum().item()
        assert stats[f'kept_frac_{t}'] == pytest.approx(agree / nonzero, abs=2 / nonzero)


def test_threads_split_the_blocks_without_changing_the_result(monkeypatch):
    x = stack(shape=(2, 50, 97))                       # 9700 columns: ragged last block
    method = GradDrop()
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(kernel_path(method, x, gen(5), monkeypatch))
    finally:
        torch.set_num_threads(threads)
    for out, stats in results[1:]:
        assert torch.equal(out, results[0][0]) and stats == results[0][1]


def test_strided_stacks_and_other_dtypes(monkeypatch):
    """A stack that is not contiguous is read by value; float64 (and small stacks) keep the PyTorch path."""
    x = stack(n_tasks=5, shape=(64, 130))
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    a, _ = kernel_path(GradDrop(), x, gen(1), monkeypatch)
    b, _ = kernel_path(GradDrop(), strided, gen(1), monkeypatch)
    assert torch.equal(a, b)
    assert not graddrop_kernel.available(x.double())
    with pytest.raises(RuntimeError, match='CPU float32'):
        graddrop_kernel.graddrop_pass(x.double().reshape(5, -1), torch.rand(64 * 130).double(), fair_coin=False,
                                      k=1.0, eps=0.0, stats=False)


def test_a_forked_child_runs_the_threaded_pass(monkeypatch):
    """After a fork (dataloader workers, fork-started processes) the parent's pool threads are gone; the child
    starts its own instead of waiting on them."""
    import multiprocessing as mp
    x = stack(n_tasks=4, shape=(64, 130))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        parent, _ = kernel_path(GradDrop(), x, gen(2), monkeypatch)    # the pool exists in the parent now
        ctx = mp.get_context('fork')
        queue = ctx.Queue()
        child = ctx.Process(target=_child_pass, args=(x, parent, queue))
        child.start()
        try:
            same = queue.get(timeout=60)          # raises queue.Empty if the child hangs
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
        assert same is True
    finally:
        torch.set_num_threads(threads)


def _child_pass(x, expected, queue):
    torch.set_num_threads(2)
    queue.put(bool(torch.equal(GradDrop().combine(x, generator=gen(2)), expected)))


class Steep(GradDrop):
    """A subclass with its own f (as projects/MajoritySign): the compiled pass does not know it."""

    def keep_positive_probability(self, purity):
        return (purity > 0.5).to(purity.dtype)


@pytest.mark.parametrize('method', [Steep(), GradDrop(activation_fn=lambda p: p * p)], ids=['subclass', 'fn'])
def test_a_rule_of_its_own_keeps_the_pytorch_path(method, monkeypatch):
    x = stack(n_tasks=5, shape=(64, 130))
    calls = []
    monkeypatch.setattr(graddrop_kernel, 'graddrop_pass', lambda *a, **kw: calls.append(1))
    out = method.combine(x, generator=gen(4))
    assert calls == []
    u = torch.rand(x.shape[1:], generator=gen(4))
    total, mass = x.sum(0), x.abs().sum(0)
    keep = method.keep_positive_probability(0.5 * (1 + total / mass.clamp_min(1e-38)))
    expected = torch.where(keep > u, 0.5 * (total + mass), torch.where(keep < u, 0.5 * (total - mass), 0.0))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
