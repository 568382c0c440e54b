"""MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, ICLR 2023, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach"). Follows LibMTL's ``LibMTL/weighting/MoCo.py`` (the authors' code)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import (
    Method,
    check_grads,
    combine_with_coefficients,
    flat_per_problem,
    gram_matrix,
    reduce_statistics,
    register_method,
    sq_norms,
)
from .batch_sums import batch_sum, blocks_batch_sums, check_state_dims, per_sample, state_rest
from .blocks import TaskBlocks
from .weighting import load_tensors


@register_method
class MoCo(Method):
    r"""Multi-objective gradient with Correction: MGDA-like weights from a tracked, less biased estimate of the task
    gradients.

    LibMTL's MoCo (the authors' code) normalises each task's gradient of the shared parameters and scales it by the
    task's loss, :math:`\hat g_i = L_i g_i / (\lVert g_i \rVert + \epsilon)`; tracks it, :math:`y_i \leftarrow y_i
    - \beta_t (y_i - \hat g_i)` with :math:`\beta_t = \beta / t^{\sigma_\beta}`; takes one step of the weights,
    :math:`\lambda \leftarrow \mathrm{softmax}(\lambda - \gamma_t (Y Y^\top + \rho I) \lambda)` with
    :math:`\gamma_t = \gamma / t^{\sigma_\gamma}`; and steps along :math:`Y^\top \lambda`.

    Here the gradients are taken at the shared activation, whose rows hold other samples at every step: a vector
    tracked across steps there would add up unrelated samples, differ between data-parallel ranks and grow with
    the batch. So (see :mod:`~graddrop_mtl.methods.batch_sums`)

    * ``y`` tracks the gradients summed over the batch, :math:`s_i = \sum_b g_{i,b}` (the gradient of a bias added
      to every sample's activation: a parameter of fixed size and meaning), normalised and loss-scaled as above,
      :math:`\hat s_i = L_i s_i / (\lVert s_i \rVert + \epsilon)`; :math:`\lambda` steps on :math:`Y Y^\top`
      formed from this ``y``, exactly LibMTL's update on that parameter;
    * the trunk receives this step's gradients, normalised and loss-scaled as LibMTL does, weighted by
      :math:`\lambda`: :math:`\sum_i \lambda_i L_i g_i / (\lVert g_i \rVert + \epsilon)` (the tracked ``y``
      holds earlier samples and cannot be sent into this step's activation).

    For a batch of one sample, ``y`` and :math:`\lambda` are LibMTL's exactly; the trunk gradient is
    :math:`\hat G^\top \lambda` where LibMTL's is :math:`Y^\top \lambda` (the same once ``y`` has converged,
    e.g. for constant gradients). The heads receive their own gradients (LibMTL's MoCo leaves them unweighted).
    ``y`` (``[T, P, F]``, zeros at the start, at least float32), :math:`\lambda` (from :math:`1/T`) and ``t`` are
    the state. A zero gradient contributes zero (whatever :math:`\epsilon`).

    Granularity (``state_dims``): by default :math:`s` and ``y`` hold one value per feature (e.g. every channel
    and pixel of a conv map), T x F values. With ``state_dims = k`` only the first k feature dims keep their own:
    :math:`s` is summed over the batch and the remaining feature dims, so with 1 on a ``[B, C, H, W]`` map it is
    the gradient of a per-channel bias (a conv layer's bias, T x C values), and :math:`\lambda` steps on the Gram
    matrix of those; with 0 one value per task. The trunk gradient is unchanged in form.

    Several processes: :math:`s` (T x F values per problem), the squared norms of the gradients and the losses
    (averaged) go through the method's one reducer call, and everything else is computed from them, so every rank
    holds the same state, that of one process holding the whole global batch, and a checkpoint of any rank resumes
    every rank exactly. The features must keep their shape from step to step (the batch may change). A step with
    non-finite statistics leaves the state unchanged.

    Args:
        beta, beta_sigma: :math:`\beta` and :math:`\sigma_\beta` (LibMTL's 0.5 and 0.5).
        gamma, gamma_sigma: :math:`\gamma` and :math:`\sigma_\gamma` (0.1 and 0.5).
        rho: :math:`\rho`, the :math:`\ell_2` regularisation of the weight step (0).
        eps: :math:`\epsilon` in the normalisation (1e-8).
        state_dims: how many of the activation's feature dims (after the batch) keep their own value in :math:`s`
            and ``y``: ``None`` every one (per feature), 1 per channel of a ``[B, C, ...]`` map, 0 one per task.
    """

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1, gamma_sigma: float = 0.5,
                 rho: float = 0.0, eps: float = 1e-8, state_dims: int | None = None) -> None:
        if not 0 < beta <= 1 or not gamma > 0 or beta_sigma < 0 or gamma_sigma < 0 or rho < 0 or eps < 0:
            raise ValueError(f'MoCo needs 0 < beta <= 1, gamma > 0 and non-negative beta_sigma, gamma_sigma, rho, '
                             f'eps; got beta={beta}, gamma={gamma}, beta_sigma={beta_sigma}, '
                             f'gamma_sigma={gamma_sigma}, rho={rho}, eps={eps}')
        self.beta, self.beta_sigma, self.gamma = float(beta), float(beta_sigma), float(gamma)
        self.gamma_sigma, self.rho, self.eps = float(gamma_sigma), float(rho), float(eps)
        self.state_dims = check_state_dims(state_dims, 'MoCo')
        self.y: Tensor | None = None            # [T, P, F]: the tracked batch sums (F: see state_dims), >= float32
        self.lambd: Tensor | None = None        # [P, T] float64
        self.step = 0

    def extra_repr(self) -> str:
        return f'beta={self.beta}, gamma={self.gamma}, rho={self.rho}, state_dims={self.state_dims}'

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        if losses is None:
            raise ValueError('MoCo needs the task losses (losses=...)')
        rest = state_rest(tuple(grads.shape[1:]), self.state_dims, 'MoCo', problem_dims)
        x = per_sample(grads.detach(), problem_dims)                              # [T, P, B, F]
        dtype = torch.promote_types(x.dtype, torch.float32)
        n_tasks, n_prob = x.shape[:2]
        flat = x.reshape(n_tasks * n_prob, -1)
        sq = sq_norms(flat.to(dtype)).reshape(n_tasks, n_prob).t()                  # [P, T] float64
        loss = losses.detach().reshape(n_tasks, n_prob).t().double()
        coef = self._step(batch_sum(x, dtype=dtype, rest=rest), sq, loss)
        if coef is None:
            return torch.full_like(grads, float('nan'))[0]
        return combine_with_coefficients(flat_per_problem(grads, problem_dims), coef, grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """The same step on :class:`TaskBlocks` without densifying them: a patch-only task's batch sum runs over its
        patch rows alone."""
        if losses is None:
            raise ValueError('MoCo needs the task losses (losses=...)')
        s = blocks_batch_sums(blocks, dtype=torch.promote_types(blocks.dtype, torch.float32),
                              state_dims=self.state_dims, owner='MoCo')
        loss = losses.detach().reshape(1, blocks.n_tasks).double()
        coef = self._step(s, blocks.sq_norms()[None], loss)
        if coef is None:
            return torch.full(blocks.shape, float('nan'), dtype=blocks.dtype, device=blocks.device)
        return blocks.linear_combination(coef[0])

    def _step(self, s: Tensor, sq: Tensor, loss: Tensor) -> Tensor | None:
        r"""From the batch sums ``s [T, P, F]``, the gradients' squared norms ``[P, T]`` (both summed over the ranks
        here) and the losses ``[P, T]`` (averaged): the step of ``y``, lambda and the counter. Returns the trunk
        coefficients ``[P, T]``, :math:`\lambda_i L_i / (\lVert g_i \rVert + \epsilon)`, or ``None`` (state
        unchanged) for non-finite statistics."""
        (s, sq), (loss,) = reduce_statistics(self.reducer, [s, sq], [loss])
        n_tasks, n_prob, n_feat = s.shape
        s_norm = sq_norms(s.reshape(n_tasks * n_prob, n_feat)).reshape(n_tasks, n_prob).t().sqrt()      # [P, T]
        scale = scaled_inverse(loss, s_norm, self.eps)                        # L_i / (|s_i| + eps), 0 for s_i = 0
        trunk = scaled_inverse(loss, sq.clamp_min(0).sqrt(), self.eps)
        if not all(bool(torch.isfinite(t).all()) for t in (s_norm, sq, loss, scale, trunk)):   # s_norm: s finite
            return None
        y = self._tracked(s)
        step = self.step + 1
        b = self.beta / step ** self.beta_sigma
        gamma = self.gamma / step ** self.gamma_sigma
        y.mul_(1.0 - b).addcmul_(s, (b * scale).t()[:, :, None].to(y.dtype))
        yy = gram_matrix(y, 1)[1]                                                       # [P, T, T]
        lambd = self.lambd if self.lambd is not None else \
            torch.full((n_prob, n_tasks), 1.0 / n_tasks, dtype=torch.float64, device=s.device)
        lambd = lambd.to(s.device)
        reg = yy + self.rho * torch.eye(n_tasks, dtype=torch.float64, device=s.device)
        self.lambd = torch.softmax(lambd - gamma * (reg @ lambd[:, :, None])[..., 0], dim=-1)
        self.step = step
        return self.lambd * trunk

    def _tracked(self, s: Tensor) -> Tensor:
        """``y`` ``[T, P, F]`` (zeros at the start) on ``s``'s device and dtype."""
        y = self.y
        if y is None:
            y = torch.zeros_like(s)
        elif y.shape != s.shape:
            raise ValueError(f'MoCo was set up for {y.shape[0]} tasks, {y.shape[1]} problems and {y.shape[2]} '
                             f'features per sample (y {tuple(y.shape)}); got {tuple(s.shape)}')
        self.y = y.to(device=s.device, dtype=s.dtype)
        return self.y

    def state_dict(self) -> dict[str, Any]:
        return {'y': self.y, 'lambd': self.lambd, 'step': self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('y', 'lambd', 'step'))
        self.step = int(self.step or 0)


def scaled_inverse(loss: Tensor, norm: Tensor, eps: float) -> Tensor:
    """``loss / (norm + eps)`` where ``norm > 0``, else 0 (a zero gradient stays zero, also with ``eps = 0``)."""
    return torch.where(norm > 0, loss / (norm + eps), torch.zeros_like(loss))
