"""``sum_tasks``, ``abs_sum_tasks`` and the one-pass ``sum_and_abs_sum_tasks`` GradDrop's purity is made of."""
from __future__ import annotations

import pytest
import torch

from graddrop_mtl.methods.base import SMALL_TASK_TENSOR, abs_sum_tasks, sum_and_abs_sum_tasks, sum_tasks

from ._util import gen


@pytest.mark.parametrize('shape,chunk', [((7, 3, 50, 40), 1024),     # 6000 per task: 5 chunks, the last ragged
                                         ((40, 2, 64, 8, 8), 4096),  # CelebA-like, whole chunks
                                         ((3, 9000), 100000)])       # one chunk wider than the tensor
def test_one_pass_sums_equal_the_float64_sums_and_keep_the_shape(shape, chunk):
    g = gen(1)
    x = torch.randn(*shape, generator=g)
    x[:, ..., :3] = 0.0                                           # zeros count as nothing in both sums
    x[1] = -x[0]                                                  # exact cancellation
    total, mass = sum_and_abs_sum_tasks(x, chunk=chunk)
    assert total.shape == mass.shape == x.shape[1:] and total.dtype == mass.dtype == x.dtype
    torch.testing.assert_close(total.double(), x.double().sum(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(mass.double(), x.double().abs().sum(0), rtol=0, atol=1e-5)
    assert torch.equal(total, sum_tasks(x))                       # the same reduction as the plain sum
    assert bool((mass >= total.abs()).all())


def test_small_tensors_keep_the_fixed_task_order():
    """At most SMALL_TASK_TENSOR elements per task: the same values, bit for bit, as the row-by-row sums, so that a
    problem alone and among others agree."""
    g = gen(2)
    x = torch.randn(9, SMALL_TASK_TENSOR, generator=g) * torch.logspace(-6, 6, 9)[:, None]
    total, mass = sum_and_abs_sum_tasks(x)
    assert torch.equal(total, sum_tasks(x)) and torch.equal(mass, abs_sum_tasks(x))


def test_non_contiguous_stacks_give_the_sums_of_their_values():
    """A stack whose tasks are innermost in memory (reshaped as a strided view, not copied) gives the same sums up to
    the order of the additions."""
    g = gen(3)
    x = torch.randn(40, 300, 9, generator=g).permute(2, 0, 1)     # [9, 40, 300], tasks innermost in memory
    assert not x.is_contiguous()
    total, mass = sum_and_abs_sum_tasks(x, chunk=512)
    torch.testing.assert_close(total.double(), x.double().sum(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(mass.double(), x.double().abs().sum(0), rtol=0, atol=1e-5)
