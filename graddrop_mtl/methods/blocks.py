"""Per-task gradients stored where they are non-zero: :class:`TaskBlocks`.

Stacking T per-task gradients at a large shared activation costs T times its size in memory and in every pass a
method makes over them, and most of it can be zeros. PointPillars' neck output (2 x 384 x 160 x 160 floats in the
reduced config) is read by three 1x1 convolutions; the classification loss has a gradient at every position, but
the seven box losses and the direction loss only at the few positions with a positive anchor. :class:`TaskBlocks`
keeps the classification gradient as one dense tensor and the other tasks only at those positions, and the methods
work on it directly (:meth:`graddrop_mtl.methods.Method.combine_blocks`): the cost of GradDrop there drops from
nine passes over the activation to about one.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import combine_with_coefficients, gram_matrix, sq_norms


class TaskBlocks:
    r"""The per-task gradients ``[T, *A.shape]`` at one shared activation ``A``, without the zeros.

    ``A`` is seen as rows x channels. For ``A`` of shape ``[B, C, *S]`` (``channel_dim=1``, a convolutional
    feature map) a row is one position ``(b, s)`` holding ``C`` channels, row index ``b * prod(S) + flat(s)``; for
    ``[..., C]`` (``channel_dim=-1``) a row is one index of the leading dims. The gradients are stored as

    * ``base`` ``[t0, *A.shape]``: tasks ``base_tasks``, every row;
    * ``patch`` ``[t1, n, C]``: tasks ``patch_tasks`` (a superset of ``base_tasks``, ascending) at the rows
      ``patch_rows``.

    Task ``i``'s gradient is ``base[base_tasks.index(i)]`` (zero for a task not in the base) overwritten, at the
    patch rows, by its patch values; a task not in the base is zero outside the patch rows. At the patch rows the
    patch holds every task that is non-zero there, so any row-wise (elementwise) method can be evaluated on the
    base and then, at the patch rows, on the patch alone.

    Everything a method needs is here without densifying: :meth:`sq_norms`, :meth:`gram` (float64),
    :meth:`linear_combination`, :meth:`scaled`, and :meth:`gather` / :meth:`scatter_` of activation-shaped tensors
    at the patch rows. :meth:`to_dense` builds ``[T, *A.shape]`` (for methods without a block implementation and for
    checks).
    """

    def __init__(self, n_tasks: int, shape: Sequence[int], *, base: Tensor | None, base_tasks: Sequence[int],
                 patch: Tensor | None = None, patch_rows: Tensor | None = None,
                 patch_tasks: Sequence[int] = (), channel_dim: int = 1, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        if channel_dim not in (1, -1):
            raise ValueError(f'channel_dim must be 1 ([B, C, *S]) or -1 ([..., C]), got {channel_dim}')
        self.n_tasks = int(n_tasks)
        self.shape = torch.Size(shape)
        self.channel_dim = channel_dim
        self.base_tasks = [int(i) for i in base_tasks]
        self.patch_tasks = [int(i) for i in patch_tasks]
        if base is not None and base.shape != (len(self.base_tasks), *self.shape):
            raise ValueError(f'base has shape {tuple(base.shape)}, expected {(len(self.base_tasks), *self.shape)}')
        if patch is not None:
            if patch_rows is None or patch.shape != (len(self.patch_tasks), patch_rows.numel(), self.n_channels):
                n_rows = -1 if patch_rows is None else patch_rows.numel()
                raise ValueError(f'patch has shape {tuple(patch.shape)}, expected '
                                 f'{(len(self.patch_tasks), n_rows, self.n_channels)}')
            missing = set(self.base_tasks) - set(self.patch_tasks)
            if missing:
                raise ValueError(f'patch_tasks must include every base task; missing {sorted(missing)}')
        if sorted(set(self.patch_tasks)) != self.patch_tasks or sorted(set(self.base_tasks)) != self.base_tasks:
            raise ValueError('base_tasks and patch_tasks must be ascending and unique')
        self.base = base if base is not None and len(self.base_tasks) else None
        self.patch = patch
        self.patch_rows = patch_rows
        ref = base if base is not None else patch
        if ref is None and (dtype is None or device is None):
            raise ValueError('TaskBlocks without a base or a patch (every gradient zero) needs dtype and device')
        self.dtype = ref.dtype if ref is not None else dtype
        self.device = ref.device if ref is not None else torch.device(device)
        if patch is not None and patch_rows is not None:
            if self.channel_dim == 1:
                per_sample = int(torch.Size(self.shape[2:]).numel())
                self._index = (patch_rows // per_sample, patch_rows % per_sample)
            else:
                self._index = (patch_rows,)

    # ----------------------------------------------------------------------------------------------- layout
    @property
    def n_channels(self) -> int:
        return int(self.shape[self.channel_dim])

    @property
    def n_rows(self) -> int:
        return self.shape.numel() // self.n_channels

    def _rows_view(self, x: Tensor) -> Tensor:
        """``x`` (``[*lead, *A.shape]``, contiguous) as ``[*lead, B, C, prod(S)]`` or ``[*lead, rows, C]``."""
        lead = x.shape[:x.dim() - len(self.shape)]
        if self.channel_dim == 1:
            return x.view(*lead, self.shape[0], self.shape[1], -1)
        return x.view(*lead, -1, self.n_channels)

    def gather(self, x: Tensor) -> Tensor:
        """The patch rows of an activation-shaped ``x`` (``[*lead, *A.shape]``): ``[*lead, n, C]``."""
        v = self._rows_view(x.contiguous())
        n_lead = v.dim() - (3 if self.channel_dim == 1 else 2)
        if self.channel_dim == 1:
            b, s = self._index
            picked = v[(slice(None),) * n_lead + (b, slice(None), s)]   # advanced indices split: [n, *lead, C]
            return picked.movedim(0, n_lead) if n_lead else picked
        return v[(slice(None),) * n_lead + self._index]

    def scatter_(self, x: Tensor, values: Tensor, add: bool = False) -> Tensor:
        """Write (or add) ``values [n, C]`` into the patch rows of the activation-shaped, contiguous ``x``."""
        v = self._rows_view(x)
        index = (self._index[0], slice(None), self._index[1]) if self.channel_dim == 1 else self._index
        if add:
            v[index] += values
        else:
            v[index] = values
        return x

    # ----------------------------------------------------------------------------------------------- algebra
    def _patch_only(self) -> list[int]:
        """Positions in ``patch`` of the tasks that are not in the base."""
        base = set(self.base_tasks)
        return [k for k, i in enumerate(self.patch_tasks) if i not in base]

    def to_dense(self) -> Tensor:
        """``[T, *A.shape]``."""
        out = torch.zeros((self.n_tasks, *self.shape), dtype=self.dtype, device=self.device)
        if self.base is not None:
            out[self.base_tasks] = self.base
        if self.patch is not None:
            for k, i in enumerate(self.patch_tasks):
                self.scatter_(out[i], self.patch[k])
        return out

    def sq_norms(self) -> Tensor:
        """Squared L2 norm of every task's gradient, ``[T]`` float64."""
        out = torch.zeros(self.n_tasks, dtype=torch.float64, device=self.device)
        if self.base is not None:
            flat = self.base.reshape(len(self.base_tasks), -1)
            out[self.base_tasks] = sq_norms(flat)
        extra = self._patch_only()
        if self.patch is not None and extra:
            out[[self.patch_tasks[k] for k in extra]] = sq_norms(self.patch[extra].reshape(len(extra), -1))
        return out

    def gram(self) -> Tensor:
        """The Gram matrix ``[T, T]`` of the flattened per-task gradients, accumulated in float64."""
        out = torch.zeros(self.n_tasks, self.n_tasks, dtype=torch.float64, device=self.device)
        if self.base is not None:
            idx = torch.tensor(self.base_tasks, device=self.device)
            out[idx[:, None], idx[None, :]] = gram_matrix(self.base)[1][0]
        if self.patch is not None and self._patch_only():
            g = gram_matrix(self.patch)[1][0]
            base = torch.tensor([i in set(self.base_tasks) for i in self.patch_tasks], device=self.device)
            new = ~(base[:, None] & base[None, :])      # base x base pairs are already counted over every row
            idx = torch.tensor(self.patch_tasks, device=self.device)
            out[idx[:, None], idx[None, :]] += torch.where(new, g, torch.zeros_like(g))
        return out

    def linear_combination(self, coef: Tensor | None = None) -> Tensor:
        """``sum_i coef[i] * grad_i`` (``coef`` ``[T]``; ``None``: the plain sum), activation-shaped."""
        if coef is None:
            coef = torch.ones(self.n_tasks, dtype=self.dtype, device=self.device)
        coef = coef.to(device=self.device)
        if self.base is not None:
            flat = self.base.reshape(1, len(self.base_tasks), -1)
            out = combine_with_coefficients(flat, coef[self.base_tasks][None], self.base).contiguous()
        else:
            out = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        extra = self._patch_only()
        if self.patch is not None and extra:
            c = coef[[self.patch_tasks[k] for k in extra]].to(self.dtype)
            self.scatter_(out, torch.einsum('t,tnc->nc', c, self.patch[extra]), add=True)
        return out

    def scaled(self, weights: Tensor, dtype: torch.dtype | None = None) -> 'TaskBlocks':
        """The gradients of ``w_i L_i`` (in ``dtype``, default the blocks' own)."""
        dtype = dtype or self.dtype
        w = weights.to(device=self.device, dtype=dtype).reshape(self.n_tasks)
        base = None if self.base is None else \
            self.base.to(dtype) * w[self.base_tasks].view(-1, *([1] * len(self.shape)))
        patch = None if self.patch is None else self.patch.to(dtype) * w[self.patch_tasks].view(-1, 1, 1)
        return TaskBlocks(self.n_tasks, self.shape, base=base, base_tasks=self.base_tasks, patch=patch,
                          patch_rows=self.patch_rows, patch_tasks=self.patch_tasks, channel_dim=self.channel_dim,
                          dtype=dtype, device=self.device)

    def __repr__(self) -> str:
        n = 0 if self.patch_rows is None else self.patch_rows.numel()
        return (f'TaskBlocks(T={self.n_tasks}, shape={tuple(self.shape)}, base_tasks={self.base_tasks}, '
                f'patch_tasks={self.patch_tasks} at {n}/{self.n_rows} rows)')
