"""ExcessMTL (He, Zhou, Zhao & Xu, ICML 2024, "Robust Multi-Task Learning with Excess Risks")."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Method, check_grads, combine_with_coefficients, flat_per_problem, reduce_statistics, register_method
from .batch_sums import batch_sum, blocks_batch_sums, check_state_dims, per_sample, state_rest
from .blocks import TaskBlocks
from .weighting import load_tensors

#: Columns per chunk of the excess-risk evaluation (:meth:`ExcessMTL._excess`).
EXCESS_CHUNK = 1 << 12


@register_method
class ExcessMTL(Method):
    r"""Task weights raised by an exponentiated-gradient step on each task's estimated excess risk.

    Every feature of the activation keeps a running sum of each task's squared gradients summed over the batch,
    :math:`S_i \leftarrow S_i + q_i` with :math:`q_i = \sum_b g_{i,b}^2` (AdaGrad's diagonal Hessian estimate, the
    paper's Eq. 7). Task i's excess risk is estimated by :math:`E_i = \sum q_i / \sqrt{S_i + \epsilon}` (Eq. 6,
    :math:`S_i` including this step), divided by its baseline :math:`E^{(0)}` (Sec. 3.2), and the weights on the
    simplex move by Eq. 9, :math:`\alpha \leftarrow \mathrm{softmax}(\log \alpha + \eta_\alpha E / (E^{(0)} +
    \epsilon))`, from :math:`1/T` (TorchJD's log-space form of the update). For the first ``n_warmup_steps`` steps
    the weights stay uniform and the baseline is their average excess risk: one step (the default) is the authors'
    code and LibMTL, whose first step only sets the baseline; the paper's Appendix C.1 suggests three epochs. With 0
    (TorchJD's default) the first step sets the baseline and also moves the weights by its raw, scale-dependent
    :math:`E`. The weights sum to 1 as in the paper and TorchJD (the authors' code scales them to sum to T). The
    trunk receives :math:`\sum_i \alpha_i g_i` and, as in the authors' code, the weights also weight the task
    losses (the heads).

    Where it differs from the peers: TorchJD and the authors' code precondition the gradient of the shared
    PARAMETERS, a vector of fixed meaning. At the shared activation an element's sample changes from step to step,
    so the accumulator is kept per feature (the activation's dims after the batch, see
    :mod:`~graddrop_mtl.methods.batch_sums`), summed over the batch: the diagonal preconditioner of a bias added to
    every sample's activation. Its size does not depend on the batch, and :math:`E_i` weighs every sample's squared
    gradient by its feature's accumulator. For a batch of one sample this is exactly TorchJD's
    ``ExcessMTLWeighting`` on that sample's gradients; for a batch, its weights are TorchJD's on
    :math:`\sqrt{q}` (both tested).

    Granularity (``state_dims``): by default every feature (e.g. every channel and pixel of a conv map) has its
    accumulator, T x F values. With ``state_dims = k`` only the first k feature dims keep their own: :math:`q` is
    summed over the batch and the remaining feature dims, so with 1 on a ``[B, C, H, W]`` map it is the squared
    gradients of a per-channel bias summed over the batch and the pixels (T x C values), the diagonal
    preconditioner of a conv layer's bias; with 0 one value per task. The excess risk sums over these values.

    Several processes: :math:`q` (T x F values per problem) is summed over the ranks in the method's one reducer
    call, and everything else is computed from it, so every rank holds the same state, that of one process holding
    the whole global batch, and a checkpoint of any rank resumes every rank exactly. The features must keep their
    shape from step to step (the batch may change, a short last batch included). A step with non-finite :math:`q`
    (non-finite gradients) leaves the state unchanged.

    Args:
        robust_step_size: :math:`\eta_\alpha` (TorchJD's 1.0).
        n_warmup_steps: steps with uniform weights whose average excess risk is the baseline (1: the authors').
        eps: :math:`\epsilon` in :math:`\sqrt{S + \epsilon}` (1e-7, as the authors) and in the baseline's
            denominator (as TorchJD).
        state_dims: how many of the activation's feature dims (after the batch) keep their own accumulator:
            ``None`` every one (per feature), 1 per channel of a ``[B, C, ...]`` map, 0 one per task.
    """

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 1, eps: float = 1e-7,
                 state_dims: int | None = None) -> None:
        if not robust_step_size > 0:
            raise ValueError(f'ExcessMTL robust_step_size must be > 0, got {robust_step_size}')
        if int(n_warmup_steps) < 0 or eps < 0:
            raise ValueError(f'ExcessMTL needs n_warmup_steps >= 0 and eps >= 0, got {n_warmup_steps}, {eps}')
        self.robust_step_size, self.n_warmup_steps, self.eps = float(robust_step_size), int(n_warmup_steps), float(eps)
        self.state_dims = check_state_dims(state_dims, 'ExcessMTL')
        self.weights: Tensor | None = None          # [P, T] float64, on the simplex
        self.baseline: Tensor | None = None         # [P, T] float64: the excess risks the later ones are divided by
        self.warmup_sum: Tensor | None = None       # [P, T] float64
        self.sq_grad_sum: Tensor | None = None      # [T, P, F] (F state values per task, see state_dims), >= float32
        self.step = 0

    def extra_repr(self) -> str:
        return (f'robust_step_size={self.robust_step_size}, n_warmup_steps={self.n_warmup_steps}, '
                f'state_dims={self.state_dims}')

    def _accumulator(self, shape: tuple[int, int, int], like: Tensor) -> Tensor:
        """The accumulator ``[T, P, F]`` (zeros at the start) on ``like``'s device and dtype."""
        s = self.sq_grad_sum
        if s is None:
            s = torch.zeros(shape, dtype=like.dtype, device=like.device)
        elif tuple(s.shape) != tuple(shape):
            raise ValueError(f'ExcessMTL was set up for {s.shape[0]} tasks, {s.shape[1]} problems and {s.shape[2]} '
                             f'features per sample (sq_grad_sum {tuple(s.shape)}); got {tuple(shape)}')
        self.sq_grad_sum = s = s.to(device=like.device, dtype=like.dtype)
        return s

    def _excess(self, q: Tensor, acc: Tensor) -> Tensor:
        """``sum q / sqrt(S + q + eps)`` over the last dim, in float64, ``S`` left as it is. Evaluated on column
        chunks of :data:`EXCESS_CHUNK` (the temporaries stay in cache; the float64 sum runs per chunk)."""
        out = torch.zeros(q.shape[:-1], dtype=torch.float64, device=q.device)
        dim = q.shape[-1]
        buf = torch.empty((*q.shape[:-1], min(dim, EXCESS_CHUNK)), dtype=acc.dtype, device=q.device)
        for start in range(0, dim, EXCESS_CHUNK):
            qc, ac = q[..., start:start + EXCESS_CHUNK], acc[..., start:start + EXCESS_CHUNK]
            b = buf[..., :qc.shape[-1]]
            torch.add(ac, qc, out=b)
            out += b.add_(self.eps).rsqrt_().mul_(qc).sum(-1, dtype=torch.float64)
        return out

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        rest = state_rest(tuple(grads.shape[1:]), self.state_dims, 'ExcessMTL', problem_dims)
        x = per_sample(grads.detach(), problem_dims)                              # [T, P, B, F]
        q = batch_sum(x, square=True, dtype=torch.promote_types(x.dtype, torch.float32), rest=rest)
        w = self._update(q)
        self.task_weights = w.t().reshape(grads.shape[:1 + problem_dims]).to(grads.dtype)
        return combine_with_coefficients(flat_per_problem(grads, problem_dims), w, grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """The same step on :class:`TaskBlocks` without densifying them: a patch-only task's squares are summed
        over its patch rows alone."""
        q = blocks_batch_sums(blocks, square=True, dtype=torch.promote_types(blocks.dtype, torch.float32),
                              state_dims=self.state_dims, owner='ExcessMTL')
        w = self._update(q)
        self.task_weights = w[0].to(blocks.dtype)
        return blocks.linear_combination(w[0])

    def _update(self, q: Tensor) -> Tensor:
        """Eq. 9 from this step's batch-summed squares ``q [T, P, F]``, summed over the ranks here; the accumulator
        takes them when the excess risks are finite. Returns the weights ``[P, T]`` (float64)."""
        (q,), _ = reduce_statistics(self.reducer, [q])
        n_tasks, n_prob, _ = q.shape
        acc = self._accumulator(tuple(q.shape), q)
        excess = self._excess(q, acc).t()                                           # [P, T]
        if self.weights is None:
            self.weights = torch.full((n_prob, n_tasks), 1.0 / n_tasks, dtype=torch.float64, device=excess.device)
            self.warmup_sum = torch.zeros_like(self.weights)
        self.weights, self.warmup_sum = self.weights.to(excess.device), self.warmup_sum.to(excess.device)
        if not bool(torch.isfinite(excess).all()):
            return torch.full_like(self.weights, float('nan'))
        acc.add_(q)
        self.step += 1
        if self.step <= self.n_warmup_steps:
            self.warmup_sum = self.warmup_sum + excess
            return self.weights
        if self.baseline is None:
            self.baseline = self.warmup_sum / self.n_warmup_steps if self.n_warmup_steps else excess
            if not self.n_warmup_steps:
                return self._move(excess)
        return self._move(excess / (self.baseline.to(excess.device) + self.eps))

    def _move(self, risk: Tensor) -> Tensor:
        self.weights = torch.softmax(self.weights.log() + self.robust_step_size * risk, dim=-1)
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {'weights': self.weights, 'baseline': self.baseline, 'warmup_sum': self.warmup_sum,
                'sq_grad_sum': self.sq_grad_sum, 'step': self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('weights', 'baseline', 'warmup_sum', 'sq_grad_sum', 'step'))
        self.step = int(self.step or 0)
