"""ExcessMTL (He, Zhou, Zhao & Xu, ICML 2024, "Robust Multi-Task Learning with Excess Risks")."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Method, check_grads, combine_with_coefficients, flat_per_problem, reduce_statistics, register_method
from .blocks import TaskBlocks
from .weighting import load_tensors

#: Columns per chunk of the excess-risk evaluation (:meth:`ExcessMTL._excess`).
EXCESS_CHUNK = 1 << 12


@register_method
class ExcessMTL(Method):
    r"""Task weights raised by an exponentiated-gradient step on each task's estimated excess risk.

    Every element of the activation keeps a running sum of each task's squared gradients,
    :math:`S_i \leftarrow S_i + g_i^2` (AdaGrad's diagonal Hessian estimate, the paper's Eq. 7). Task i's excess
    risk is estimated by :math:`E_i = g_i^\top H_i^{-1} g_i = \sum g_i^2 / \sqrt{S_i + \epsilon}` (Eq. 6), divided
    by its baseline :math:`E^{(0)}` (Sec. 3.2), and the weights on the simplex move by Eq. 9,
    :math:`\alpha \leftarrow \mathrm{softmax}(\log \alpha + \eta_\alpha E / (E^{(0)} + \epsilon))`, from
    :math:`1/T` (TorchJD's log-space form of the update). For the first ``n_warmup_steps`` steps the weights stay
    uniform and the baseline is their average excess risk: one step (the default) is the authors' code and LibMTL,
    whose first step only sets the baseline; the paper's Appendix C.1 suggests three epochs. With 0 (TorchJD's
    default) the first step sets the baseline and also moves the weights by its raw, scale-dependent :math:`E`.
    The weights sum to 1 as in the paper and TorchJD (the authors' code scales them to sum to T). The trunk
    receives :math:`\sum_i \alpha_i g_i` and, as in the authors' code, the weights also weight the task losses
    (the heads). TorchJD's ``ExcessMTLWeighting`` with the same arguments gives the same weights.

    The accumulator is indexed by the flat element of the activation (per problem); a larger activation extends it
    with zeros, a smaller one (a short last batch) uses its leading elements (its first samples when dim 0 is the
    batch). Several processes: the excess risks are summed over the ranks (one reducer call), so the weights and
    the baseline are the same on every rank; the accumulator belongs to each rank's own part of the activation.
    A step with non-finite excess risks (non-finite gradients) leaves the state unchanged.

    Args:
        robust_step_size: :math:`\eta_\alpha` (TorchJD's 1.0).
        n_warmup_steps: steps with uniform weights whose average excess risk is the baseline (1: the authors').
        eps: :math:`\epsilon` in :math:`\sqrt{S + \epsilon}` (1e-7, as the authors) and in the baseline's
            denominator (as TorchJD).
    """

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 1, eps: float = 1e-7) -> None:
        if not robust_step_size > 0:
            raise ValueError(f'ExcessMTL robust_step_size must be > 0, got {robust_step_size}')
        if int(n_warmup_steps) < 0 or eps < 0:
            raise ValueError(f'ExcessMTL needs n_warmup_steps >= 0 and eps >= 0, got {n_warmup_steps}, {eps}')
        self.robust_step_size, self.n_warmup_steps, self.eps = float(robust_step_size), int(n_warmup_steps), float(eps)
        self.weights: Tensor | None = None          # [P, T] float64, on the simplex
        self.baseline: Tensor | None = None         # [P, T] float64: the excess risks the later ones are divided by
        self.warmup_sum: Tensor | None = None       # [P, T] float64
        self.sq_grad_sum: Tensor | None = None      # [T, P, D] in the gradients' dtype, at least float32
        self.step = 0

    def extra_repr(self) -> str:
        return f'robust_step_size={self.robust_step_size}, n_warmup_steps={self.n_warmup_steps}'

    def _accumulator(self, n_tasks: int, n_prob: int, dim: int, like: Tensor) -> Tensor:
        """The accumulator ``[T, P, >= dim]`` (created, or extended with zeros)."""
        s = self.sq_grad_sum
        if s is not None and s.shape[:2] != (n_tasks, n_prob):
            raise ValueError(f'ExcessMTL was set up for {s.shape[0]} tasks and {s.shape[1]} problems, got '
                             f'{n_tasks} and {n_prob}')
        if s is None or s.shape[2] < dim:
            grown = torch.zeros(n_tasks, n_prob, dim, dtype=torch.promote_types(like.dtype, torch.float32),
                                device=like.device)
            if s is not None:
                grown[:, :, :s.shape[2]] = s.to(grown)
            s = grown
        self.sq_grad_sum = s = s.to(device=like.device, dtype=torch.promote_types(like.dtype, torch.float32))
        return s

    def _excess(self, g: Tensor, acc: Tensor) -> Tensor:
        """``sum g^2 / sqrt(S + g^2 + eps)`` over the last dim, in float64, ``S`` left as it is. Evaluated on
        column chunks of :data:`EXCESS_CHUNK` (the temporaries stay in cache; the float64 sum runs per chunk)."""
        out = torch.zeros(g.shape[:-1], dtype=torch.float64, device=g.device)
        dim = g.shape[-1]
        buf = torch.empty((*g.shape[:-1], min(dim, EXCESS_CHUNK)), dtype=acc.dtype, device=g.device)
        for start in range(0, dim, EXCESS_CHUNK):
            gc, ac = g[..., start:start + EXCESS_CHUNK], acc[..., start:start + EXCESS_CHUNK]
            b = buf[..., :gc.shape[-1]]
            torch.addcmul(ac, gc, gc, out=b)
            out += b.add_(self.eps).rsqrt_().mul_(gc).mul_(gc).sum(-1, dtype=torch.float64)
        return out

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        flat = flat_per_problem(grads, problem_dims)                            # [P, T, D]
        n_prob, n_tasks, dim = flat.shape
        g = flat.detach().transpose(0, 1)                                       # [T, P, D]
        acc = self._accumulator(n_tasks, n_prob, dim, g)[:, :, :dim]
        w = self._update(self._excess(g, acc).t(), lambda: acc.addcmul_(g, g))
        self.task_weights = w.t().reshape(grads.shape[:1 + problem_dims]).to(grads.dtype)
        return combine_with_coefficients(flat, w, grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """Each task on its own rows: a base task over the whole activation (its patch rows replaced), a patch-only
        task at its patch rows alone (its gradient is zero elsewhere); the stack is never densified."""
        dim = blocks.shape.numel()
        acc = self._accumulator(blocks.n_tasks, 1, dim, torch.empty(0, dtype=blocks.dtype, device=blocks.device))
        excess = torch.zeros(blocks.n_tasks, dtype=torch.float64, device=blocks.device)
        updates = []
        for i in range(blocks.n_tasks):
            s_i = acc[i, 0, :dim].view(blocks.shape)
            p = None if blocks.patch is None or i not in blocks.patch_tasks else \
                blocks.patch[blocks.patch_tasks.index(i)]
            if i in blocks.base_tasks:
                g = blocks.base[blocks.base_tasks.index(i)].contiguous()
                if p is not None:
                    g = blocks.scatter_(g.clone(), p)
                excess[i] = self._excess(g.reshape(-1), s_i.reshape(-1))
                updates.append((s_i, g))
            elif p is not None:
                excess[i] = self._excess(p.reshape(-1), blocks.gather(s_i).reshape(-1))
                updates.append((s_i, p))

        def commit():
            for s_i, g in updates:
                if g.shape == s_i.shape:
                    s_i.addcmul_(g, g)
                else:
                    blocks.scatter_(s_i, g * g, add=True)

        w = self._update(excess[None], commit)
        self.task_weights = w[0].to(blocks.dtype)
        return blocks.linear_combination(w[0])

    def _update(self, excess: Tensor, commit) -> Tensor:
        """Eq. 9 on the (rank-summed) excess risks ``[P, T]``; ``commit()`` stores the accumulator when they are
        finite. Returns the weights ``[P, T]`` (float64)."""
        (excess,), _ = reduce_statistics(self.reducer, [excess])
        n_prob, n_tasks = excess.shape
        if self.weights is None:
            self.weights = torch.full((n_prob, n_tasks), 1.0 / n_tasks, dtype=torch.float64, device=excess.device)
            self.warmup_sum = torch.zeros_like(self.weights)
        self.weights, self.warmup_sum = self.weights.to(excess.device), self.warmup_sum.to(excess.device)
        if not bool(torch.isfinite(excess).all()):
            return torch.full_like(self.weights, float('nan'))
        commit()
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
