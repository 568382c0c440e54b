"""MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, ICLR 2023, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach"). Follows LibMTL's ``LibMTL/weighting/MoCo.py`` (the authors' code)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import (
    GRAM_BATCH,
    Method,
    check_grads,
    combine_with_coefficients,
    gram_matrix,
    reduce_statistics,
    register_method,
)
from .blocks import TaskBlocks
from .weighting import load_tensors


def cross_products(y: Tensor, g: Tensor, chunk: int = 1 << 12) -> Tensor:
    """``[P, K, T]`` float64 with entry ``(p, i, j) = y[i, p] . g[j, p]`` for ``y [K, P, D]``, ``g [T, P, D]``, as
    :func:`~graddrop_mtl.methods.base.gram_matrix` forms a Gram matrix: products of ``chunk`` columns in the
    inputs' precision, batched, summed in float64 (float64 products for float64 or short inputs)."""
    n_tasks, n_prob, dim = g.shape
    out = torch.zeros(n_prob, y.shape[0], n_tasks, dtype=torch.float64, device=g.device)
    for p in range(n_prob):
        yp, gp = y[:, p], g[:, p]
        if g.dtype == torch.float64 or dim <= chunk:
            out[p] = yp.double() @ gp.double().T
            continue
        n = dim // chunk
        ys = yp[:, :n * chunk].unflatten(1, (n, chunk)).transpose(0, 1)          # [n, K, chunk]
        gs = gp[:, :n * chunk].unflatten(1, (n, chunk)).permute(1, 2, 0)         # [n, chunk, T]
        for start in range(0, n, GRAM_BATCH):
            out[p] += torch.bmm(ys[start:start + GRAM_BATCH], gs[start:start + GRAM_BATCH]).sum(0, dtype=torch.float64)
        if n * chunk < dim:
            out[p] += (yp[:, n * chunk:] @ gp[:, n * chunk:].T).double()
    return out


@register_method
class MoCo(Method):
    r"""Multi-objective gradient with Correction: MGDA-like weights on a tracked, less biased estimate of the task
    gradients.

    At step :math:`t` each task's gradient is normalised and scaled by its loss, :math:`\hat g_i = L_i g_i /
    (\lVert g_i \rVert + \epsilon)`; the tracked estimates move towards them, :math:`y_i \leftarrow y_i -
    \beta_t (y_i - \hat g_i)` with :math:`\beta_t = \beta / t^{\sigma_\beta}`; the weights take one step,
    :math:`\lambda \leftarrow \mathrm{softmax}(\lambda - \gamma_t (Y Y^\top + \rho I) \lambda)` with
    :math:`\gamma_t = \gamma / t^{\sigma_\gamma}`; the trunk receives :math:`Y^\top \lambda` (the heads their own
    gradients). This is the update of LibMTL's MoCo (the authors' code), on the gradients at the shared activation;
    ``y`` (zeros at the start, shaped like the gradients), :math:`\lambda` (from :math:`1/T`) and ``t`` are the
    state. A larger activation extends ``y`` with zeros, a smaller one (a short last batch) is treated as the
    leading elements of a zero-padded one.

    :math:`Y Y^\top` after the step is formed in float64 from the Gram matrix of the gradients, the products
    :math:`y_i \cdot g_j` and :math:`Y Y^\top` before it; with several processes these are summed over the ranks
    (the losses averaged) in one reducer call, so :math:`\lambda` is the same on every rank while each rank tracks
    ``y`` on its own part of the activation. A step with non-finite statistics leaves the state unchanged.

    Args:
        beta, beta_sigma: :math:`\beta` and :math:`\sigma_\beta` (LibMTL's 0.5 and 0.5).
        gamma, gamma_sigma: :math:`\gamma` and :math:`\sigma_\gamma` (0.1 and 0.5).
        rho: :math:`\rho`, the :math:`\ell_2` regularisation of the weight step (0).
        eps: :math:`\epsilon` in the normalisation (1e-8).
    """

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1, gamma_sigma: float = 0.5,
                 rho: float = 0.0, eps: float = 1e-8) -> None:
        if not 0 < beta <= 1 or not gamma > 0 or beta_sigma < 0 or gamma_sigma < 0 or rho < 0 or eps < 0:
            raise ValueError(f'MoCo needs 0 < beta <= 1, gamma > 0 and non-negative beta_sigma, gamma_sigma, rho, '
                             f'eps; got beta={beta}, gamma={gamma}, beta_sigma={beta_sigma}, '
                             f'gamma_sigma={gamma_sigma}, rho={rho}, eps={eps}')
        self.beta, self.beta_sigma, self.gamma = float(beta), float(beta_sigma), float(gamma)
        self.gamma_sigma, self.rho, self.eps = float(gamma_sigma), float(rho), float(eps)
        self.y: Tensor | None = None            # [T, P, D]: the tracked gradients (at least float32)
        self.lambd: Tensor | None = None        # [P, T] float64
        self.step = 0

    def extra_repr(self) -> str:
        return f'beta={self.beta}, gamma={self.gamma}, rho={self.rho}'

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        if losses is None:
            raise ValueError('MoCo needs the task losses (losses=...)')
        n_tasks = grads.shape[0]
        g = grads.detach().reshape(n_tasks, int(torch.Size(grads.shape[1:1 + problem_dims]).numel()), -1)
        if g.dtype in (torch.float16, torch.bfloat16):       # y and the products in float32
            g = g.float()
        _, n_prob, dim = g.shape
        y = self._tracked(n_tasks, n_prob, dim, g)
        loss = losses.detach().reshape(n_tasks, n_prob).t().double()
        coef = self._step(gram_matrix(g, 1)[1], gram_matrix(y, 1)[1], cross_products(y[:, :, :dim], g), loss)
        if coef is None:
            return torch.full_like(grads, float('nan'))[0]
        y[:, :, :dim].addcmul_(g, coef.t()[:, :, None].to(device=g.device, dtype=g.dtype))
        return combine_with_coefficients(y[:, :, :dim].transpose(0, 1), self.lambd, grads).to(grads.dtype)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """The same step on :class:`TaskBlocks` without densifying them: the products with a patch-only task's
        gradient and its update of ``y`` are taken at its patch rows alone."""
        if losses is None:
            raise ValueError('MoCo needs the task losses (losses=...)')
        n_tasks, dim = blocks.n_tasks, blocks.shape.numel()
        dtype = torch.promote_types(blocks.dtype, torch.float32)
        y = self._tracked(n_tasks, 1, dim, torch.empty(0, dtype=dtype, device=blocks.device))
        yv = y[:, 0, :dim]                                                                  # [T, dim]
        extra = [] if blocks.patch is None else \
            [k for k, i in enumerate(blocks.patch_tasks) if i not in blocks.base_tasks]         # patch-only tasks
        yg = torch.zeros(1, n_tasks, n_tasks, dtype=torch.float64, device=blocks.device)
        if blocks.base is not None:
            base = blocks.base.reshape(len(blocks.base_tasks), 1, dim).to(dtype)
            yg[0][:, blocks.base_tasks] = cross_products(yv[:, None], base)[0]
        if extra:
            rows = blocks.gather(yv.reshape(n_tasks, *blocks.shape)).reshape(n_tasks, 1, -1)
            patch = blocks.patch[extra].reshape(len(extra), 1, -1).to(dtype)
            yg[0][:, [blocks.patch_tasks[k] for k in extra]] = cross_products(rows, patch)[0]
        loss = losses.detach().reshape(1, n_tasks).double()
        coef = self._step(blocks.gram()[None], gram_matrix(y, 1)[1], yg, loss)
        if coef is None:
            return torch.full(blocks.shape, float('nan'), dtype=blocks.dtype, device=blocks.device)
        coef = coef[0].tolist()
        if blocks.base is not None:
            for k, i in enumerate(blocks.base_tasks):
                yv[i].add_(blocks.base[k].reshape(-1), alpha=coef[i])
        for k in extra:
            j = blocks.patch_tasks[k]
            blocks.scatter_(yv[j].view(blocks.shape), blocks.patch[k].to(dtype) * coef[j], add=True)
        like = torch.empty((1, *blocks.shape), device='meta')
        return combine_with_coefficients(yv[None], self.lambd, like).to(blocks.dtype)

    def _step(self, gg: Tensor, yy: Tensor, yg: Tensor, loss: Tensor) -> Tensor | None:
        """From the Gram matrix of the gradients, ``Y Y^T`` and ``Y G^T`` (``[P, T, T]``) and the losses ``[P, T]``,
        summed / averaged over the ranks here: the step of lambda and of the counter, ``y`` decayed by
        :math:`1 - \beta_t`; returns the coefficients ``[P, T]`` of the gradients to add to ``y``
        (:math:`\beta_t L_i / (\\lVert g_i \rVert + \\epsilon)`), or ``None`` (state unchanged) for non-finite
        statistics."""
        n_prob, n_tasks = loss.shape
        (gg, yy, yg), (loss,) = reduce_statistics(self.reducer, [gg, yy, yg], [loss])
        if self.lambd is None:
            self.lambd = torch.full((n_prob, n_tasks), 1.0 / n_tasks, dtype=torch.float64, device=gg.device)
        if not all(bool(torch.isfinite(s).all()) for s in (gg, yy, yg, loss)):
            return None
        step = self.step + 1
        b = self.beta / step ** self.beta_sigma
        a, gamma = 1.0 - b, self.gamma / step ** self.gamma_sigma
        c = loss / (gg.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt() + self.eps)            # [P, T]
        cross = yg * c[:, None, :]                                                           # y_i . g^_j
        yy_new = a * a * yy + a * b * (cross + cross.transpose(1, 2)) + b * b * gg * c[:, :, None] * c[:, None, :]
        lambd = self.lambd.to(gg.device)
        reg = yy_new + self.rho * torch.eye(n_tasks, dtype=torch.float64, device=gg.device)
        self.lambd = torch.softmax(lambd - gamma * (reg @ lambd[:, :, None])[..., 0], dim=-1)
        self.step = step
        self.y.mul_(a)
        return b * c

    def _tracked(self, n_tasks: int, n_prob: int, dim: int, like: Tensor) -> Tensor:
        """``y`` ``[T, P, >= dim]`` (created, or extended with zeros)."""
        y = self.y
        if y is not None and y.shape[:2] != (n_tasks, n_prob):
            raise ValueError(f'MoCo was set up for {y.shape[0]} tasks and {y.shape[1]} problems, got {n_tasks} and '
                             f'{n_prob}')
        if y is None or y.shape[2] < dim:
            grown = torch.zeros(n_tasks, n_prob, dim, dtype=like.dtype, device=like.device)
            if y is not None:
                grown[:, :, :y.shape[2]] = y.to(grown)
            y = grown
        self.y = y.to(device=like.device, dtype=like.dtype)
        return self.y

    def state_dict(self) -> dict[str, Any]:
        return {'y': self.y, 'lambd': self.lambd, 'step': self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('y', 'lambd', 'step'))
        self.step = int(self.step or 0)
