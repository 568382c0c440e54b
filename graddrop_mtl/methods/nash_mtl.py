"""Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game") and FairGrad (Ban & Ji, ICML 2024,
"Fair Resource Allocation in Multi-Task Learning"), which share one solver."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import register_method
from .weighting import GramWeighting, load_tensors


def alpha_fair_weights(gram: Tensor, alpha: float, *, tol: float = 1e-12, max_iter: int = 200) -> Tensor:
    r"""The positive :math:`w` with :math:`(G w)_i = w_i^{-1/\alpha}` for every task (float64).

    It is the minimiser of the strictly convex :math:`\frac12 w^\top G w + \sum_i \phi(w_i)`,
    :math:`\phi'(w) = -w^{-1/\alpha}` (:math:`\phi = -\log` for :math:`\alpha = 1`), found by damped Newton steps
    that keep :math:`w > 0`, until :math:`\max_i |(Gw)_i w_i^{1/\alpha} - 1| \le` ``tol``. ``G`` gets
    ``1e-10 * trace / T`` on its diagonal, which bounds the solution when a non-negative combination of the
    gradients vanishes (opposite gradients), where the exact one is infinite.
    """
    t = gram.shape[0]
    g = gram.double() + 1e-10 * float(gram.diagonal().sum().clamp_min(1e-300)) / t * torch.eye(
        t, dtype=torch.float64, device=gram.device)
    p = 1.0 / alpha

    def value(w: Tensor) -> float:
        phi = -w.log() if alpha == 1 else -(w ** (1 - p)) / (1 - p)
        return float(0.5 * w @ g @ w + phi.sum())

    def residual(w: Tensor) -> float:
        return float(((g @ w) * w ** p - 1).abs().max())

    w = torch.full((t,), 1.0 / max(float(g.diagonal().mean()), 1e-300) ** 0.5, dtype=torch.float64,
                   device=gram.device)
    f, res = value(w), residual(w)
    for _ in range(max_iter):
        if res <= tol:
            break
        grad = g @ w - w ** (-p)
        hess = g + torch.diag(p * w ** (-p - 1))
        step = torch.linalg.solve(hess, grad)
        scale = 1.0
        neg = step > 0
        if bool(neg.any()):                       # stay inside w > 0
            scale = min(1.0, 0.99 * float((w[neg] / step[neg]).min()))
        while True:
            # backtracking (Armijo) on the objective; near the solution, where its decrease is below rounding,
            # a step that lowers the residual is taken
            cand = w - scale * step
            fc, rc = value(cand), residual(cand)
            if fc <= f - 1e-4 * scale * float(grad @ step) or rc < res or scale < 1e-12:
                break
            scale *= 0.5
        if rc >= res and fc >= f:
            break                                 # no progress left in float64
        w, f, res = cand, fc, rc
    return w


@register_method
class NashMTL(GramWeighting):
    r"""Nash-MTL: the Nash bargaining solution, weights with :math:`(G\alpha)_i = 1/\alpha_i`.

    On the Gram matrix divided by its Frobenius norm (as in the authors' code), :math:`\alpha > 0` solves
    :math:`G \alpha = 1/\alpha` (elementwise), which makes every task's share of the update
    :math:`g_i \cdot \sum_j \alpha_j g_j = 1/\alpha_i`. The authors approximate it with 20 convex-concave
    iterations of cvxpy (``optim_niter``); here it is solved to ``tol`` (:func:`alpha_fair_weights`). The trunk
    receives :math:`\sum_i \alpha_i g_i`, and the weights multiply the task losses (:attr:`task_weights`), as
    there. ``max_norm`` > 0 scales :math:`\alpha` down so that :math:`\lVert \sum_i \alpha_i g_i \rVert \le`
    ``max_norm`` (TorchJD's reading of the authors' gradient clipping; the authors clip the shared parameters'
    gradient instead, which the optimiser wrapper's ``clip_grad`` does). ``update_weights_every`` > 1 reuses the
    weights between updates (state).

    Args:
        max_norm: 1.0 (the authors' default); 0 disables it.
        update_weights_every: 1.
        tol: the relative residual of :math:`\alpha_i (G\alpha)_i = 1`.
    """

    weights_losses = True

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, tol: float = 1e-12) -> None:
        if max_norm < 0 or int(update_weights_every) < 1:
            raise ValueError(f'Nash-MTL needs max_norm >= 0 and update_weights_every >= 1, got {max_norm}, '
                             f'{update_weights_every}')
        self.max_norm = float(max_norm)
        self.update_weights_every = int(update_weights_every)
        self.tol = float(tol)
        self.step = 0
        self.alpha: Tensor | None = None      # [P, T], the last computed weights

    def extra_repr(self) -> str:
        return f'max_norm={self.max_norm}, update_weights_every={self.update_weights_every}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        if problem == 0:
            self.step += 1
        reuse = (self.step - 1) % self.update_weights_every != 0 and self.alpha is not None
        if reuse:
            w = self.alpha[problem].to(gram)
        else:
            fro = float(torch.linalg.matrix_norm(gram))
            if not torch.isfinite(gram).all():
                w = torch.full((gram.shape[0],), float('nan'), dtype=gram.dtype, device=gram.device)
            elif fro == 0:
                w = torch.zeros(gram.shape[0], dtype=gram.dtype, device=gram.device)
            else:
                w = alpha_fair_weights(gram / fro, 1.0, tol=self.tol)
            self._remember(w, problem)
        if self.max_norm > 0:
            norm = float((w @ gram @ w).clamp_min(0).sqrt())
            if norm > self.max_norm:
                w = w * (self.max_norm / norm)
        return w

    def _remember(self, w: Tensor, problem: int) -> None:
        """Store problem ``problem``'s weights in :attr:`alpha` ``[P, T]`` (grown as needed)."""
        if self.alpha is None or self.alpha.shape[1] != w.shape[0]:
            self.alpha = w.new_zeros(0, w.shape[0])
        if self.alpha.shape[0] <= problem:
            self.alpha = torch.cat([self.alpha, w.new_zeros(problem + 1 - self.alpha.shape[0], w.shape[0])])
        else:
            self.alpha = self.alpha.clone()
        self.alpha[problem] = w

    def state_dict(self) -> dict[str, Any]:
        return {'step': self.step, 'alpha': self.alpha}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('step', 'alpha'))
        self.step = int(self.step or 0)


@register_method
class FairGrad(GramWeighting):
    r"""FairGrad: :math:`\alpha`-fair allocation of the update among the tasks.

    The weights :math:`w > 0` solve :math:`(G w)_i = w_i^{-1/\alpha}` on the Gram matrix :math:`G` (the paper's
    system, as TorchJD's ``FairGrad`` solves it with SciPy's least squares); here by Newton steps to ``tol``
    (:func:`alpha_fair_weights`). :math:`\alpha = 1` is proportional fairness (Nash-MTL's system without its
    normalisation), :math:`\alpha \to \infty` max-min fairness; :math:`\alpha = 0` is the uniform weighting
    :math:`1/T`. The trunk receives :math:`\sum_i w_i g_i`; the heads their own gradients.

    Args:
        alpha: :math:`\alpha \ge 0` (the paper's default 1).
        tol: the relative residual of :math:`(Gw)_i w_i^{1/\alpha} = 1`.
    """

    def __init__(self, alpha: float = 1.0, tol: float = 1e-12) -> None:
        if alpha < 0:
            raise ValueError(f'FairGrad alpha must be >= 0, got {alpha}')
        self.alpha, self.tol = float(alpha), float(tol)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        if self.alpha == 0:
            return torch.full((t,), 1.0 / t, dtype=gram.dtype, device=gram.device)
        if not bool(torch.isfinite(gram).all()):
            return torch.full((t,), float('nan'), dtype=gram.dtype, device=gram.device)
        if float(gram.diagonal().sum()) == 0:
            return torch.zeros(t, dtype=gram.dtype, device=gram.device)
        return alpha_fair_weights(gram, self.alpha, tol=self.tol)
