"""Per-task gradients summed over the batch: the space where ExcessMTL and MoCo keep their state.

The gradients at the shared activation ``A`` hold one row per sample, and the samples in a row change from step to
step; a state kept per element of ``A`` would mix unrelated samples across steps, differ between data-parallel
ranks (each holds its own samples) and grow with the batch. Summed over the batch, a task's gradient is the
gradient of its loss with respect to a bias added to every sample's activation (one value per feature, zero): a
parameter of fixed size, the same for every batch and every rank, and summing it over the ranks gives what one
process holding the whole global batch computes.

Convention: the batch is the activation's first dim after the problem dims (dim ``problem_dims`` of ``A``, as
:func:`graddrop_mtl.engine.combine.flatten` keeps it); the features are the remaining dims, flattened. An
activation without dims beyond the problem dims is one sample of one feature.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .blocks import TaskBlocks

#: Elements of the ``x * x`` temporary per chunk in :func:`batch_sum` (it stays in cache).
SQUARE_CHUNK = 1 << 16


def per_sample(grads: Tensor, problem_dims: int = 0) -> Tensor:
    """``grads [T, *P, B, *F]`` as ``[T, prod(P), B, prod(F)]`` (a view where the layout allows)."""
    n_tasks = grads.shape[0]
    n_prob = int(torch.Size(grads.shape[1:1 + problem_dims]).numel())
    rest = grads.shape[1 + problem_dims:]
    return grads.reshape(n_tasks, n_prob, rest[0] if rest else 1, -1)


def batch_sum(x: Tensor, square: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    """``x [T, P, B, F]`` summed over the batch (``x * x`` with ``square``): ``[T, P, F]`` in ``dtype`` (default
    ``x``'s). The squares are formed on column chunks of about :data:`SQUARE_CHUNK` elements, so no ``x``-sized
    temporary is made."""
    dtype = dtype or x.dtype
    if not square:
        return x.sum(2, dtype=dtype)
    n_tasks, n_prob, n_batch, n_feat = x.shape
    out = torch.empty(n_tasks, n_prob, n_feat, dtype=dtype, device=x.device)
    chunk = max(1, SQUARE_CHUNK // max(1, n_tasks * n_prob * n_batch))
    for start in range(0, n_feat, chunk):
        part = x[..., start:start + chunk].to(dtype)
        torch.sum(part * part, 2, out=out[..., start:start + chunk])
    return out


def n_features(blocks: TaskBlocks) -> int:
    """Features per sample of the blocks' activation (its dims after the first, the batch)."""
    return int(torch.Size(blocks.shape[1:]).numel())


def add_patch_rows(blocks: TaskBlocks, out: Tensor, values: Tensor) -> Tensor:
    """Add the patch-row values ``values [n, C]`` (one row of ``blocks.patch``, or a function of it) into the
    batch-summed ``out [n_features]``: every row lands on its position within one sample (rows of different samples
    at the same position add up). Returns ``out``."""
    rows = blocks.patch_rows.to(out.device)
    values = values.to(out.dtype)
    if len(blocks.shape) == 1:                              # [C] with channel_dim -1: one row, the dim is the batch
        return out.add_(values.sum())
    per_sample_rows = blocks.n_rows // blocks.shape[0]
    if blocks.channel_dim == 1:                             # [B, C, *S]: a row is (b, s); out is [C, prod(S)]
        out.view(blocks.n_channels, -1).index_add_(1, rows % per_sample_rows, values.t())
    else:                                                   # [B, *M, C]: a row is (b, m); out is [prod(M), C]
        out.view(per_sample_rows, blocks.n_channels).index_add_(0, rows % per_sample_rows, values)
    return out


def blocks_batch_sums(blocks: TaskBlocks, square: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    """Every task's gradient (its square with ``square``) summed over the batch, ``[T, 1, n_features]`` in
    ``dtype`` (default the blocks'), without densifying: a base task's sum over its dense gradient (its patch rows
    repeat it, as :meth:`TaskBlocks.gram` and :meth:`TaskBlocks.linear_combination` take them), a patch-only task's
    sum over its patch rows alone."""
    dtype = dtype or blocks.dtype
    n_feat = n_features(blocks)
    out = torch.zeros(blocks.n_tasks, 1, n_feat, dtype=dtype, device=blocks.device)
    if blocks.base is not None:
        base = blocks.base.reshape(len(blocks.base_tasks), 1, blocks.shape[0], n_feat)
        out[blocks.base_tasks] = batch_sum(base, square, dtype)
    if blocks.patch is not None:
        for k, i in enumerate(blocks.patch_tasks):
            if i not in blocks.base_tasks:                  # a base task's patch repeats its base values
                p = blocks.patch[k].to(dtype)
                add_patch_rows(blocks, out[i, 0], p * p if square else p)
    return out
