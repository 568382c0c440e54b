"""The two families most of the methods of LibMTL and TorchJD belong to, as base classes.

* :class:`GramWeighting`: the trunk receives :math:`\\sum_i w_i g_i` with weights :math:`w` computed from the
  :math:`T \\times T` Gram matrix :math:`G_{ij} = g_i \\cdot g_j` of the per-task gradients at the shared activation
  (CAGrad, Nash-MTL, IMTL-G, Aligned-MTL, UPGrad, GradVac, FairGrad). The Gram matrix is accumulated in float64
  (:func:`~graddrop_mtl.methods.base.gram_matrix`, or :meth:`TaskBlocks.gram` without densifying), the weights are
  computed on it, and the D-dimensional gradients are read once more for the weighted sum.
* :class:`LossWeighting`: the weights depend on the task losses only (UW, DWA, RLW, IMTL-L, FAMO): the trunk
  receives :math:`\\sum_i w_i g_i` and the heads :math:`\\nabla \\sum_i w_i L_i`, which is the gradient of the
  weighted loss; :meth:`LossWeighting.weigh_losses` gives the weights without any gradient.

Several processes (see :class:`~graddrop_mtl.methods.Method`): the Gram matrix is summed and the losses averaged
over the ranks (one reducer call) before the weights are computed, so every rank uses the same weights and holds
the same state. Random draws a method makes (orders, random weights) are summed over the ranks in the same call,
which turns the ranks' independent draws into one common draw (see :meth:`GramWeighting.draws`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Method, check_grads, combine_with_coefficients, flat_per_problem, gram_matrix, reduce_statistics
from .blocks import TaskBlocks


class GramWeighting(Method):
    """Base class: trunk gradient :math:`\\sum_i w_i g_i`, with ``w = self.weights(gram, ...)`` per problem.

    Subclasses implement :meth:`weights`. With :attr:`weights_losses` the weights also multiply the task losses
    (:attr:`task_weights`, the heads receive :math:`\\nabla \\sum_i w_i L_i`), as the method's authors do;
    otherwise the heads receive their own gradients (as TorchJD's aggregators, which act on the shared
    parameters only).
    """

    #: the weights also weight the task losses (the heads' gradients).
    weights_losses: bool = False
    #: the method reads the task losses.
    uses_losses: bool = False

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        _, gram = gram_matrix(grads.detach(), problem_dims)                    # [P, T, T] float64
        w = self._weights(gram, losses, generator, grads.shape[:1 + problem_dims], grads.dtype)
        return combine_with_coefficients(flat_per_problem(grads, problem_dims), w, grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        w = self._weights(blocks.gram()[None], losses, generator, torch.Size([blocks.n_tasks]), blocks.dtype)
        return blocks.linear_combination(w[0])

    def _weights(self, gram: Tensor, losses: Tensor | None, generator, shape: torch.Size,
                 dtype: torch.dtype) -> Tensor:
        """Weights ``[P, T]`` (float64) for Gram matrices ``[P, T, T]``, after the cross-rank reduction."""
        n_prob, n_tasks, _ = gram.shape
        if self.uses_losses and losses is None:
            raise ValueError(f'{type(self).__name__} needs the task losses (losses=...)')
        draws = self.draws(n_prob, n_tasks, generator, gram.device)
        loss = [] if not self.uses_losses else [losses.detach().reshape(n_tasks, n_prob).t().double()]
        (gram, *draws), loss = reduce_statistics(self.reducer, [gram, *draws], loss)
        w = torch.stack([self.weights(gram[p], loss=loss[0][p] if loss else None, draws=[d[p] for d in draws],
                                      problem=p) for p in range(n_prob)])
        self.task_weights = w.t().reshape(shape).to(dtype) if self.weights_losses else None
        return w

    def draws(self, n_prob: int, n_tasks: int, generator, device: torch.device) -> list[Tensor]:
        """Random draws ``[P, ...]`` (float64) the weights need; they are SUMMED over the ranks before
        :meth:`weights` sees them (draws whose law survives that: uniforms to be argsorted, normals divided by
        the square root of the world size). Default: none."""
        return []

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        """The weights ``[T]`` (float64) for one problem's Gram matrix ``gram [T, T]`` (float64), its losses
        ``loss [T]`` (when :attr:`uses_losses`) and summed draws."""
        raise NotImplementedError


class LossWeighting(Method):
    """Base class: task weights from the task losses alone; trunk :math:`\\sum_i w_i g_i`, heads
    :math:`\\nabla \\sum_i w_i L_i`.

    Subclasses implement :meth:`loss_weights`. :meth:`weigh_losses` is the whole method for a caller that takes the
    gradient of :math:`\\sum_i w_i L_i` itself (no per-task gradients needed); :meth:`combine` gives the same
    trunk gradient from per-task gradients. Call one of them once per step: both advance the state.
    """

    #: the weights depend on the losses only (:meth:`weigh_losses`).
    loss_only: bool = True

    def weigh_losses(self, losses: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """This step's task weights (shaped like ``losses``, ``[T, *problems]``), set as :attr:`task_weights`;
        the state moves one step. With a reducer the losses are averaged over the ranks first."""
        if losses is None:
            raise ValueError(f'{type(self).__name__} needs the task losses (losses=...)')
        losses = losses.detach()
        draws = [d.to(losses.device) for d in self.draws(losses.shape, generator)]
        draws, (mean,) = reduce_statistics(self.reducer, draws, [losses.double()])
        w = self.loss_weights(mean, draws)
        self.task_weights = w if w.requires_grad else w.to(losses.dtype)
        return self.task_weights

    def draws(self, shape: torch.Size, generator) -> list[Tensor]:
        """Random draws (float64) summed over the ranks before :meth:`loss_weights` sees them; default none."""
        return []

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        """The weights for the (rank-averaged, float64) losses ``[T, *problems]``."""
        raise NotImplementedError

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        if losses is None:
            raise ValueError(f'{type(self).__name__} needs the task losses (losses=...)')
        w = self.weigh_losses(losses.reshape(grads.shape[:1 + problem_dims]), generator).detach()
        coef = w.reshape(grads.shape[0], -1).t()                                  # [P, T]
        return combine_with_coefficients(flat_per_problem(grads, problem_dims), coef, grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        if losses is None:
            raise ValueError(f'{type(self).__name__} needs the task losses (losses=...)')
        w = self.weigh_losses(losses.reshape(blocks.n_tasks), generator).detach()
        return blocks.linear_combination(w)

    def weigh(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
              generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        if losses is None:
            raise ValueError(f'{type(self).__name__} needs the task losses (losses=...)')
        return self.weigh_losses(losses.reshape(grads.shape[:1 + problem_dims]), generator)

    def weigh_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        if losses is None:
            raise ValueError(f'{type(self).__name__} needs the task losses (losses=...)')
        return self.weigh_losses(losses.reshape(blocks.n_tasks), generator)


def load_tensors(method: Method, state: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Set the attributes ``keys`` of ``method`` from a state dict, refusing unknown keys (naming them)."""
    unknown = set(state) - set(keys)
    if unknown:
        raise KeyError(f'{type(method).__name__} state has unknown keys {sorted(unknown)}; expected {list(keys)}')
    for key in keys:
        value = state.get(key)
        setattr(method, key, value.clone() if isinstance(value, Tensor) else value)
