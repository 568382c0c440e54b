"""DB-MTL (Lin, Ye, Xu, Shi & Kwok, 2023, "Dual-Balancing Multi-Task Learning", arXiv:2308.12029)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import (
    Method,
    check_grads,
    combine_with_coefficients,
    flat_per_problem,
    reduce_statistics,
    register_method,
    sq_norms,
)
from .blocks import TaskBlocks
from .weighting import load_tensors


@register_method
class DBMTL(Method):
    r"""Dual-Balancing MTL: log-transformed losses (loss-scale balancing) and gradients rescaled to the largest
    gradient magnitude (gradient-magnitude balancing).

    Each task is trained on :math:`\log(L_i + \epsilon)`, whose gradient at the shared activation is
    :math:`h_i = g_i / (L_i + \epsilon)`. The paper keeps an exponential moving average of these gradients,
    :math:`\hat h_i \leftarrow \beta_k \hat h_i + (1 - \beta_k) h_i` with :math:`\beta_k = \beta / k^{\sigma}`
    (step k from 1, :math:`\hat h_i = 0` before the first step), and sends

    .. math:: d = \max_j \lVert \hat h_j \rVert \sum_i \frac{\hat h_i}{\lVert \hat h_i \rVert}

    into the shared part: every task contributes the largest task's magnitude. The heads receive the gradient of
    :math:`\sum_i \log(L_i + \epsilon)` (:attr:`task_weights` :math:`1 / (L_i + \epsilon)`).

    At the shared activation the gradients of different steps belong to different batches (other samples in each
    row), so their vector average has no meaning and no graph to backpropagate: the moving average is kept of the
    magnitudes :math:`n_i \leftarrow \beta_k n_i + (1 - \beta_k) \lVert h_i \rVert` (state, 0 before the first
    step), and the directions are this step's,

    .. math:: d = \max_j n_j \sum_i \frac{g_i}{\lVert g_i \rVert},

    i.e. trunk weights :math:`w_i = \max_j n_j / \lVert g_i \rVert` (0 for a zero gradient). With :math:`\beta = 0`
    this is LibMTL's ``DB_MTL`` exactly, and for gradients whose directions stay fixed it is at every step (the
    norm of the average of parallel vectors is the average of their norms). Only the squared norms of the
    gradients are read (float64 sums, :func:`~graddrop_mtl.methods.base.sq_norms`; on :class:`TaskBlocks` without
    densifying), then their weighted sum is formed. Several processes: the squared norms are summed and the losses
    averaged over the ranks (one reducer call), so every rank holds the same state.

    Args:
        beta: :math:`\beta`, the moving average's rate (LibMTL's ``DB_beta`` default 0.9).
        beta_sigma: :math:`\sigma`, the decay of the rate with the step (LibMTL's ``DB_beta_sigma`` default 0).
        eps: :math:`\epsilon` of the log transform (LibMTL: 1e-8).
    """

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f'DBMTL beta must be in [0, 1), got {beta}')
        if beta_sigma < 0:
            raise ValueError(f'DBMTL beta_sigma must be >= 0, got {beta_sigma}')
        if eps < 0:
            raise ValueError(f'DBMTL eps must be >= 0, got {eps}')
        self.beta, self.beta_sigma, self.eps = float(beta), float(beta_sigma), float(eps)
        self.step = 0                          # steps taken (k of the last step)
        self.norms: Tensor | None = None       # [P, T] float64: the moving average n of ||grad log(L_i + eps)||

    def extra_repr(self) -> str:
        return f'beta={self.beta}, beta_sigma={self.beta_sigma}'

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        w = self._weights(self._sq_norms(grads, problem_dims), losses, grads.shape[:1 + problem_dims], grads.dtype)
        return combine_with_coefficients(flat_per_problem(grads, problem_dims), w, grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        w = self._weights(blocks.sq_norms()[None], losses, torch.Size([blocks.n_tasks]), blocks.dtype)
        return blocks.linear_combination(w[0])

    def weigh(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
              generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        """The state update of :meth:`combine`; returns the heads' weights :math:`1 / (L_i + \\epsilon)`."""
        self._weights(self._sq_norms(grads, problem_dims), losses, grads.shape[:1 + problem_dims], grads.dtype)
        return self.task_weights

    def weigh_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        self._weights(blocks.sq_norms()[None], losses, torch.Size([blocks.n_tasks]), blocks.dtype)
        return self.task_weights

    @staticmethod
    def _sq_norms(grads: Tensor, problem_dims: int) -> Tensor:
        """Squared norms ``[P, T]`` (float64) of the per-task gradients of every problem."""
        check_grads(grads, problem_dims)
        flat = flat_per_problem(grads.detach(), problem_dims)                  # [P, T, D]
        n_prob, n_tasks, dim = flat.shape
        return sq_norms(flat.reshape(n_prob * n_tasks, dim)).reshape(n_prob, n_tasks)

    def _weights(self, sq: Tensor, losses: Tensor | None, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """Trunk weights ``[P, T]`` (float64) from the squared norms ``[P, T]``; sets :attr:`task_weights`."""
        n_prob, n_tasks = sq.shape
        if losses is None:
            raise ValueError('DBMTL needs the task losses (losses=...)')
        loss = losses.detach().reshape(n_tasks, n_prob).t().to(device=sq.device, dtype=torch.float64)
        (sq,), (loss,) = reduce_statistics(self.reducer, [sq], [loss])
        if bool((loss + self.eps <= 0).any()):
            raise ValueError(f'DBMTL takes the log of the task losses: they must be > -eps, got {loss.tolist()}')
        inv = 1.0 / (loss + self.eps)                                         # d log(L + eps) / dL, [P, T]
        norms = sq.clamp_min(0).sqrt()                                         # ||g_i||
        if self.norms is None:
            self.norms = torch.zeros_like(norms)
        if self.norms.shape != norms.shape:
            raise ValueError(f'DBMTL was set up for {tuple(self.norms.shape)} (problems, tasks), got '
                             f'{tuple(norms.shape)}')
        self.step += 1
        rate = self.beta / self.step ** self.beta_sigma
        log_norms = norms * inv                                                # ||grad log(L_i + eps)||
        self.norms = log_norms + rate * (self.norms - log_norms)
        scale = self.norms.amax(-1, keepdim=True)
        w = torch.where(norms > 0, scale / norms.clamp_min(1e-300), torch.zeros_like(norms))
        self.task_weights = inv.t().reshape(shape).to(dtype)
        return w

    def state_dict(self) -> dict[str, Any]:
        return {'step': self.step, 'norms': self.norms}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('step', 'norms'))
        self.step = int(self.step or 0)
