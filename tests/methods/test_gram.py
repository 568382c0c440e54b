"""``gram_matrix``: the float64 Gram matrices MGDA, PCGrad and the block methods solve on."""
from __future__ import annotations

import pytest
import torch

import graddrop_mtl.methods.base as base
from graddrop_mtl.methods.base import gram_matrix

from ._util import gen


def reference(grads: torch.Tensor, problem_dims: int) -> torch.Tensor:
    flat = base.flat_per_problem(grads.double(), problem_dims)
    return flat @ flat.transpose(1, 2)


@pytest.mark.parametrize('problem_dims', [0, 1])
def test_chunked_gram_matches_float64_products(problem_dims):
    g = gen(0)
    grads = torch.randn(7, 3, 5000, generator=g) + torch.randn(3, 5000, generator=g)   # tasks partly agree
    flat, gram = gram_matrix(grads, problem_dims, chunk=1024)                            # 5 chunks, one ragged
    ref = reference(grads, problem_dims)
    assert gram.dtype == torch.float64 and gram.shape == ref.shape
    scale = ref.diagonal(dim1=1, dim2=2).amax()
    assert float((gram - ref).abs().max() / scale) < 1e-6   # float32 chunk products
    assert torch.equal(gram, gram.transpose(1, 2))
    assert flat.shape == (ref.shape[0], 7, grads[0].numel() // ref.shape[0])


def test_chunk_products_are_batched_in_groups_and_keep_a_ragged_tail(monkeypatch):
    grads = torch.randn(6, 4, 3001, generator=gen(1))[:, :, ::2]          # a strided view, 1501 per row
    ref = reference(grads, 0)
    _, whole = gram_matrix(grads, chunk=256)                              # 23 chunks in one bmm, a 115 tail
    monkeypatch.setattr(base, 'GRAM_BATCH', 4)
    _, grouped = gram_matrix(grads, chunk=256)                            # the same chunks, bmm calls of 4
    scale = ref.diagonal(dim1=1, dim2=2).amax()
    for gram in (whole, grouped):
        assert float((gram - ref).abs().max() / scale) < 1e-6
        assert torch.equal(gram, gram.transpose(1, 2))
    assert float((whole - grouped).abs().max() / scale) < 1e-12           # float64 sums of the same products


def test_chunked_gram_is_more_accurate_than_one_float32_product():
    g = gen(3)
    m = (torch.randn(5, 400_000, generator=g) + 3.0)                      # large, agreeing rows
    ref = m.double() @ m.double().T
    scale = float(ref.diagonal().max())
    chunked = float((base.chunked_gram(m, 4096) - ref).abs().max()) / scale
    single = float(((m @ m.T).double() - ref).abs().max()) / scale
    assert chunked < 1e-7 and chunked < single / 10


def test_gram_is_differentiable():
    grads = torch.randn(3, 9000, generator=gen(2), dtype=torch.float64).float().requires_grad_()
    _, gram = gram_matrix(grads, chunk=2048)
    gram[0].trace().backward()                                            # d tr(G G^T) / dG = 2 G
    torch.testing.assert_close(grads.grad, 2 * grads.detach())


def test_many_tasks_on_the_cpu_use_syrk_which_agrees_and_restores_blas_threads(monkeypatch):
    """From SYRK_MIN_TASKS tasks on, the chunks go through numpy's syrk (on torch's thread count, numpy's own count
    put back afterwards), with the batched product's accuracy; below it, the batched product."""
    blas = base._numpy_blas()
    assert blas is not None, 'threadpoolctl finds no BLAS inside numpy: the syrk path of gram_matrix is not in use'
    t = base.SYRK_MIN_TASKS
    grads = torch.randn(t, 3, 12000, generator=gen(1))[:, :, ::2]         # a strided view, 18,000 per task
    before = blas.get_num_threads()
    calls = []
    real = base.syrk_gram

    def spy(flat, chunk, ctl):
        calls.append(ctl.get_num_threads())
        return real(flat, chunk, ctl)

    monkeypatch.setattr(base, 'syrk_gram', spy)
    monkeypatch.setattr(base, 'SYRK_CHUNK', 4096)                         # 5 chunks, the last ragged
    monkeypatch.setattr(base.torch, 'get_num_threads', lambda: 1)
    _, fast = gram_matrix(grads)
    assert len(calls) == 1
    assert blas.get_num_threads() == before
    ref = reference(grads, 0)
    scale = ref.diagonal(dim1=1, dim2=2).amax()
    assert float((fast - ref).abs().max() / scale) < 1e-6                 # float32 chunk products
    assert torch.equal(fast, fast.transpose(1, 2)) and fast.dtype == torch.float64
    monkeypatch.setattr(base, '_numpy_blas', lambda: None)
    _, slow = gram_matrix(grads)                                          # torch's batched product
    assert float((fast - slow).abs().max() / scale) < 1e-6
    # fewer tasks, a graph, or float64: the batched product
    monkeypatch.undo()
    monkeypatch.setattr(base, 'syrk_gram', spy)
    calls.clear()
    gram_matrix(grads[:t - 1])
    gram_matrix(grads.clone().requires_grad_(True))
    gram_matrix(grads.double())
    assert calls == []


def test_syrk_runs_on_torch_thread_count():
    seen = []

    class Probe:
        def get_num_threads(self):
            return 7

        def set_num_threads(self, n):
            seen.append(n)

    grads = torch.randn(2, 30, 2048, generator=gen(2))
    out = base.syrk_gram(grads, 512, Probe())
    assert seen == [torch.get_num_threads(), 7]   # set to torch's count for the products, then back
    ref = grads.double() @ grads.double().transpose(1, 2)
    assert float((out - ref).abs().max() / ref.diagonal(dim1=1, dim2=2).amax()) < 1e-6
