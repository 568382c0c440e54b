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


def test_cpu_syrk_path_restores_blas_threads_and_agrees_with_torch(monkeypatch):
    blas = base._numpy_blas()
    if blas is None:
        pytest.fail('numpy BLAS not found by threadpoolctl: the CPU syrk path of gram_matrix is not in use')
    grads = torch.randn(6, 4, 3000, generator=gen(1))[:, :, ::2]          # a strided view (rows of stride 6000)
    before = blas.get_num_threads()
    calls = []
    real = base._gram_syrk

    def spy(*args):
        calls.append(blas.get_num_threads())
        return real(*args)

    monkeypatch.setattr(base, '_gram_syrk', spy)
    monkeypatch.setattr(base.torch, 'get_num_threads', lambda: 1)
    _, fast = gram_matrix(grads, chunk=512)
    assert calls, 'the syrk path was not taken'
    assert blas.get_num_threads() == before          # numpy's BLAS thread count is put back
    monkeypatch.setattr(base, '_numpy_blas', lambda: None)
    _, slow = gram_matrix(grads, chunk=512)          # torch's bmm
    assert float((fast - slow).abs().max() / slow.diagonal(dim1=1, dim2=2).amax()) < 1e-6   # float32 chunk products
    ref = reference(grads, 0)
    assert float((fast - ref).abs().max() / ref.diagonal(dim1=1, dim2=2).amax()) < 1e-6   # float32 chunk products


def test_syrk_runs_on_torch_thread_count():
    blas = base._numpy_blas()
    assert blas is not None
    seen = []

    class Probe:
        def get_num_threads(self):
            return 7

        def set_num_threads(self, n):
            seen.append(n)

    grads = torch.randn(3, 2048, generator=gen(2))
    base._gram_syrk(base.flat_per_problem(grads, 0), 512, Probe())
    assert seen == [torch.get_num_threads(), 7]   # set to torch's count for the products, then back
