"""Byzantine-robust aggregations, as TorchJD offers them for multitask gradients: Krum (Blanchard, El Mhamdi,
Guerraoui & Stainer, NeurIPS 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent") and
the coordinate-wise trimmed mean (Yin, Chen, Kannan & Bartlett, ICML 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates")."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Method, check_grads, register_method
from .blocks import TaskBlocks
from .weighting import GramWeighting


@register_method
class Krum(GramWeighting):
    r"""Krum: keep the task gradients closest to their neighbours.

    Each task's score is the sum of its :math:`T - f - 2` smallest distances :math:`\lVert g_i - g_j \rVert` to the
    other tasks (:math:`f` = ``n_byzantine``); the trunk receives the mean of the ``n_selected`` gradients of
    smallest score (multi-Krum; TorchJD's ``Krum``). Distances come from the Gram matrix. Needs
    :math:`T \ge f + 3`. The heads receive their own gradients.

    Args:
        n_byzantine: :math:`f`, the number of gradients that may be arbitrary.
        n_selected: how many gradients are averaged (1: Krum).
    """

    def __init__(self, n_byzantine: int = 0, n_selected: int = 1) -> None:
        if int(n_byzantine) < 0 or int(n_selected) < 1:
            raise ValueError(f'Krum needs n_byzantine >= 0 and n_selected >= 1, got {n_byzantine}, {n_selected}')
        self.n_byzantine, self.n_selected = int(n_byzantine), int(n_selected)

    def extra_repr(self) -> str:
        return f'n_byzantine={self.n_byzantine}, n_selected={self.n_selected}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        if t < self.n_byzantine + 3 or t < self.n_selected:
            raise ValueError(f'Krum(n_byzantine={self.n_byzantine}, n_selected={self.n_selected}) needs at least '
                             f'{max(self.n_byzantine + 3, self.n_selected)} tasks, got {t}')
        sq = gram.diagonal()
        dist = (sq[None, :] + sq[:, None] - 2 * gram).clamp_min(0).sqrt()
        closest, _ = torch.topk(dist, k=t - self.n_byzantine - 1, largest=False)
        scores = closest[:, 1:].sum(1)                     # without the distance to itself
        _, chosen = torch.topk(scores, k=self.n_selected, largest=False)
        w = torch.zeros(t, dtype=gram.dtype, device=gram.device)
        w[chosen] = 1.0 / self.n_selected
        return w


@register_method
class TrimmedMean(Method):
    r"""Coordinate-wise trimmed mean: at every element of the activation, the ``trim_number`` largest and the
    ``trim_number`` smallest task gradients are dropped and the rest averaged (TorchJD's ``TrimmedMean``). Needs
    :math:`T > 2\,` ``trim_number``. It is computed as the sum minus the k largest and the k smallest values (for
    k = 1: sum - max - min, three reductions over the tasks). On :class:`TaskBlocks` it stays sparse: where only the
    base tasks are non-zero, the absent tasks' zeros enter the ranking as at most k zeros at each end, so the rows
    are evaluated on the base alone and, at the patch rows, on the patch alone. Elementwise and stateless: local to
    each rank under data parallelism. The heads receive their own gradients.

    Args:
        trim_number: k, how many values are dropped at each end.
    """

    def __init__(self, trim_number: int = 1) -> None:
        if int(trim_number) < 0:
            raise ValueError(f'TrimmedMean trim_number must be >= 0, got {trim_number}')
        self.trim_number = int(trim_number)

    def extra_repr(self) -> str:
        return f'trim_number={self.trim_number}'

    def _check(self, t: int) -> None:
        if t <= 2 * self.trim_number:
            raise ValueError(f'TrimmedMean(trim_number={self.trim_number}) needs more than {2 * self.trim_number} '
                             f'tasks, got {t}')

    def _trimmed_sum(self, values: Tensor, n_zeros: int) -> Tensor:
        """Sum over dim 0 of ``values`` and ``n_zeros`` zero rows, without their k largest and k smallest values.

        The k extremes at each end of that multiset include at most k of the zeros, so ``min(n_zeros, k)`` of them
        stand in for all; with at least k zeros and at most k values, every value is trimmed (a base of one dense
        task among absent ones: the rows outside the patch are zero)."""
        k = self.trim_number
        if k == 0:
            return values.sum(0)
        z = min(n_zeros, k)
        if z == k and values.shape[0] <= k:   # every non-zero value is among the k largest or the k smallest
            return values.new_zeros(values.shape[1:])
        if k == 1:                # one value at each end: two reductions instead of a sort
            high, low = values.amax(0), values.amin(0)
            if z:
                high, low = high.clamp_min_(0), low.clamp_max_(0)
            return values.sum(0) - high - low
        ext = torch.cat([values, values.new_zeros((z, *values.shape[1:]))]) if z else values
        return values.sum(0) - ext.topk(k, 0).values.sum(0) - ext.topk(k, 0, largest=False).values.sum(0)

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        t = grads.shape[0]
        self._check(t)
        return self._trimmed_sum(grads, 0) / (t - 2 * self.trim_number)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        t = blocks.n_tasks
        self._check(t)
        keep = t - 2 * self.trim_number
        if blocks.base is not None:
            out = (self._trimmed_sum(blocks.base, t - len(blocks.base_tasks)) / keep).contiguous()
        else:
            out = torch.zeros(blocks.shape, dtype=blocks.dtype, device=blocks.device)
        if blocks.patch is not None:
            blocks.scatter_(out, self._trimmed_sum(blocks.patch, t - len(blocks.patch_tasks)) / keep)
        return out
