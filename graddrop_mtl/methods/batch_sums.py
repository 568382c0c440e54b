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

Granularity (``state_dims``): the bias may be shared along the trailing feature dims. ``state_dims = k`` keeps the
first ``k`` feature dims and sums the gradients over the rest as well as over the batch: ``None`` keeps every
feature dim (a bias per feature, e.g. per channel and pixel of a conv map); ``1`` on ``[B, C, H, W]`` gives the
gradient of a per-channel bias (one value per channel, as a conv layer's bias), whose size depends neither on the
batch nor on the spatial extent; ``0`` gives one value per task (a scalar bias added everywhere). The state of
``[T, P, prod(F[:k])]`` values is what the methods keep and what one step sends through the reducer.
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


def check_state_dims(state_dims: int | None, owner: str) -> int | None:
    """``state_dims`` as given to a method's constructor: ``None`` or an int >= 0 (a ValueError naming ``owner``
    and the value otherwise)."""
    if state_dims is None:
        return None
    if isinstance(state_dims, bool) or not isinstance(state_dims, int) or state_dims < 0:
        raise ValueError(f'{owner} state_dims must be None (every feature dim) or an int >= 0 (1: per channel), '
                         f'got {state_dims!r}')
    return state_dims


def state_rest(activation_shape: tuple[int, ...], state_dims: int | None, owner: str = 'the method',
               batch_dim: int = 0) -> int:
    """How many trailing feature elements share one state value: ``prod(F[state_dims:])`` (1 for ``None``), where
    ``F`` is ``activation_shape`` after ``batch_dim`` (the problem dims come before the batch). A ValueError names
    ``state_dims`` and the activation shape when the activation has fewer feature dims than ``state_dims``."""
    shape = tuple(int(d) for d in activation_shape)
    features = shape[batch_dim + 1:]
    if state_dims is None:
        return 1
    if state_dims > len(features):
        raise ValueError(f'{owner} state_dims={state_dims} keeps {state_dims} feature dims, but the activation of '
                         f'shape {shape} has {len(features)} after its batch dim {batch_dim} (features {features}); '
                         f'use state_dims <= {len(features)} or None')
    return int(torch.Size(features[state_dims:]).numel())


def batch_sum(x: Tensor, square: bool = False, dtype: torch.dtype | None = None, rest: int = 1) -> Tensor:
    """``x [T, P, B, F]`` summed over the batch (``x * x`` with ``square``) and over groups of ``rest`` consecutive
    features (the trailing feature dims that share a state value, see :func:`state_rest`): ``[T, P, F / rest]`` in
    ``dtype`` (default ``x``'s). The squares are formed on chunks of about :data:`SQUARE_CHUNK` elements, so no
    ``x``-sized temporary is made."""
    dtype = dtype or x.dtype
    n_tasks, n_prob, n_batch, n_feat = x.shape
    if rest < 1 or n_feat % rest:
        raise ValueError(f'batch_sum: {n_feat} features cannot be grouped by rest={rest}')
    x = x.reshape(n_tasks, n_prob, n_batch, n_feat // rest, rest)
    if not square:
        return x.sum((2, 4), dtype=dtype)
    n_keep = n_feat // rest
    out = torch.zeros(n_tasks, n_prob, n_keep, dtype=dtype, device=x.device)
    per_column = max(1, n_tasks * n_prob * n_batch)
    rest_chunk = max(1, min(rest, SQUARE_CHUNK // per_column))
    keep_chunk = max(1, SQUARE_CHUNK // (per_column * rest_chunk))
    for k0 in range(0, n_keep, keep_chunk):
        for r0 in range(0, rest, rest_chunk):
            part = x[:, :, :, k0:k0 + keep_chunk, r0:r0 + rest_chunk].to(dtype)
            out[..., k0:k0 + keep_chunk] += (part * part).sum((2, 4))
    return out


def n_features(blocks: TaskBlocks) -> int:
    """Features per sample of the blocks' activation (its dims after the first, the batch)."""
    return int(torch.Size(blocks.shape[1:]).numel())


def add_patch_rows(blocks: TaskBlocks, out: Tensor, values: Tensor, rest: int = 1) -> Tensor:
    """Add the patch-row values ``values [n, C]`` (one row of ``blocks.patch``, or a function of it) into the
    batch-summed ``out [n_features / rest]`` (groups of ``rest`` consecutive features share a value, see
    :func:`state_rest`): every row lands on its position within one sample (rows of different samples at the same
    position add up). Returns ``out``."""
    rows = blocks.patch_rows.to(out.device)
    values = values.to(out.dtype)
    if len(blocks.shape) == 1 or out.numel() == 1:          # [C] with channel_dim -1 (the dim is the batch), or
        return out.add_(values.sum())                       # one value per task
    per_sample_rows = blocks.n_rows // blocks.shape[0]
    pos = rows % per_sample_rows
    if blocks.channel_dim == 1:                             # [B, C, *S]: a row is (b, s); feature c * prod(S) + s;
        out.view(blocks.n_channels, -1).index_add_(1, pos // rest, values.t())     # rest divides prod(S)
    elif rest == 1:                                         # [B, *M, C]: a row is (b, m); feature m * C + c
        out.view(per_sample_rows, blocks.n_channels).index_add_(0, pos, values)
    else:                                                   # rest is C times the trailing M dims: the group is a
        out.index_add_(0, pos // (rest // blocks.n_channels), values.sum(1))      # function of m alone
    return out


def blocks_batch_sums(blocks: TaskBlocks, square: bool = False, dtype: torch.dtype | None = None,
                      state_dims: int | None = None, owner: str = 'the method') -> Tensor:
    """Every task's gradient (its square with ``square``) summed over the batch and over the feature dims after
    the first ``state_dims`` (:func:`state_rest`), ``[T, 1, n_features / rest]`` in ``dtype`` (default the
    blocks'), without densifying: a base task's sum over its dense gradient (its patch rows repeat it, as
    :meth:`TaskBlocks.gram` and :meth:`TaskBlocks.linear_combination` take them), a patch-only task's sum over its
    patch rows alone."""
    dtype = dtype or blocks.dtype
    n_feat = n_features(blocks)
    rest = state_rest(tuple(blocks.shape), state_dims, owner)
    out = torch.zeros(blocks.n_tasks, 1, n_feat // rest, dtype=dtype, device=blocks.device)
    if blocks.base is not None:
        base = blocks.base.reshape(len(blocks.base_tasks), 1, blocks.shape[0], n_feat)
        out[blocks.base_tasks] = batch_sum(base, square, dtype, rest)
    if blocks.patch is not None:
        for k, i in enumerate(blocks.patch_tasks):
            if i not in blocks.base_tasks:                  # a base task's patch repeats its base values
                p = blocks.patch[k].to(dtype)
                add_patch_rows(blocks, out[i, 0], p * p if square else p, rest)
    return out
