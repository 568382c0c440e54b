"""GradNorm (Chen et al., 2018): learn task weights that balance the tasks' gradient norms."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import (
    Method,
    check_grads,
    flat_per_problem,
    reduce_statistics,
    register_method,
    sq_norms,
    sum_tasks,
    weights_view,
)
from .blocks import TaskBlocks


@register_method
class GradNorm(Method):
    r"""GradNorm task weighting.

    Weights :math:`w_i` (initialised to 1, renormalised to sum to :math:`T` after every update) multiply the task
    losses. At every call, with :math:`G_i = \lVert w_i \nabla_A L_i \rVert_2` the norm of the weighted task
    gradient and :math:`r_i = \tilde L_i / \mathrm{mean}_j \tilde L_j`, :math:`\tilde L_i = L_i(t) / L_i(0)`:

    .. math:: L_{grad} = \sum_i \big| G_i - \bar G \, r_i^{\alpha} \big|,

    with the target :math:`\bar G r_i^\alpha` held constant, and the weights take one gradient-descent step
    :math:`w \leftarrow w - \mathrm{lr}\, \partial L_{grad} / \partial w`, where
    :math:`\partial L_{grad} / \partial w_i = \mathrm{sign}(G_i - \bar G r_i^\alpha) \lVert \nabla_A L_i \rVert`.
    Weights are kept above ``min_weight`` before the renormalisation.

    Which tensor's norm: the paper's GradNorm uses the gradient with respect to the last shared layer's *weights*;
    here :math:`\nabla_A L_i` is the gradient with respect to the shared *activation* A (the output of that layer),
    which the wrapper already computes for every task, so GradNorm costs nothing extra. This is the
    "representation" variant also used by LibMTL.

    The current weights are used for this step (:attr:`task_weights`; the trunk receives
    :math:`\sum_i w_i \nabla_A L_i`), then updated for the next one. :math:`L_i(0)` are the losses of the first
    call. Both are part of the state (checkpointed by the wrapper).

    Several processes (:meth:`~graddrop_mtl.methods.Method.set_reducer`): the squared norms
    :math:`\lVert \nabla_A L_i \rVert^2` are summed over the ranks (the norms of the concatenated gradients) and
    the losses averaged, before anything is computed from them: every rank holds the same weights and the same
    :math:`L_i(0)`.

    Args:
        alpha: the asymmetry :math:`\alpha` (1.5 is typical).
        lr: learning rate of the weights.
        min_weight: lower bound for a weight before renormalisation.
    """

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, min_weight: float = 1e-3) -> None:
        if lr <= 0:
            raise ValueError(f'GradNorm lr must be > 0, got {lr}')
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.min_weight = float(min_weight)
        self.weights: Tensor | None = None         # [T, *problem]
        self.initial_losses: Tensor | None = None  # [T, *problem]
        self._stats: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, lr={self.lr}'

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        w = self.weigh(grads, losses=losses, problem_dims=problem_dims)
        return sum_tasks(grads * weights_view(w, grads, problem_dims))

    def weigh(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
              generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        shape = grads.shape[:1 + problem_dims]
        flat = flat_per_problem(grads.detach(), problem_dims)                   # [P, T, D]
        n_prob, n_tasks, dim = flat.shape
        sq = sq_norms(flat.reshape(n_prob * n_tasks, dim)).reshape(n_prob, n_tasks).t().reshape(shape)
        return self._step(sq, losses, grads.dtype)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        return blocks.linear_combination(self.weigh_blocks(blocks, losses=losses))

    def weigh_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        return self._step(blocks.sq_norms(), losses, blocks.dtype)

    def _step(self, sq: Tensor, losses: Tensor | None, dtype: torch.dtype) -> Tensor:
        """This step's weights ``[T, *problem]`` (set as :attr:`task_weights`), then the update for the next one,
        from the squared norms of the unweighted task gradients ``sq`` (float64), summed over the processes, and
        the losses, averaged over them (with a reducer)."""
        if losses is None:
            raise ValueError('GradNorm needs the task losses (losses=...)')
        shape = sq.shape
        (sq,), (losses,) = reduce_statistics(self.reducer, [sq], [losses.detach().reshape(shape)])
        raw_norms = sq.sqrt().to(dtype)                                          # |grad_A L_i|
        losses = losses.to(dtype)
        if self.weights is None or self.weights.shape != shape:
            if self.weights is not None:
                raise ValueError(f'GradNorm was set up for weights of shape {tuple(self.weights.shape)} '
                                 f'but got {tuple(shape)} (number of tasks changed?)')
            self.weights = torch.ones(shape, dtype=raw_norms.dtype, device=raw_norms.device)
        if self.initial_losses is None:
            self.initial_losses = losses.clone()
        w = self.weights.to(device=raw_norms.device, dtype=raw_norms.dtype)
        self.task_weights = w.clone()
        norms = w * raw_norms
        ratio = losses / self.initial_losses.to(losses).clamp_min(1e-12)
        n_tasks = shape[0]
        rel = ratio / (sum_tasks(ratio) / n_tasks).clamp_min(1e-12)
        target = (sum_tasks(norms) / n_tasks) * rel.pow(self.alpha)
        grad_w = torch.sign(norms - target) * raw_norms
        new = (w - self.lr * grad_w).clamp_min(self.min_weight)
        self.weights = new * (n_tasks / sum_tasks(new))
        self._stats = {'gradnorm_loss': (norms - target).abs().sum().item()}
        return w

    def state_dict(self) -> dict[str, Any]:
        return {'weights': self.weights, 'initial_losses': self.initial_losses}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {'weights', 'initial_losses'}
        if unknown:
            raise KeyError(f'GradNorm state has unknown keys {sorted(unknown)}')
        self.weights = state.get('weights')
        self.initial_losses = state.get('initial_losses')
