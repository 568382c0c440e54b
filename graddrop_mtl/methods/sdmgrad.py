"""SDMGrad (Xiao, Ban & Ji, NeurIPS 2023, "Direction-oriented Multi-objective Learning: Simple and Provable
Stochastic Algorithms")."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .base import register_method
from .mgda import _project_simplex, _simplex_rows
from .weighting import GramWeighting, load_tensors


@register_method
class SDMGrad(GramWeighting):
    r"""Stochastic Direction-oriented Multi-objective Gradient descent: the MGDA direction pulled towards a preferred
    direction (by default the mean gradient).

    The weights solve :math:`\min_{w \in \Delta} \frac12 \lVert G^\top w \rVert^2 + \lambda\, w^\top G G^\top
    \tilde w` (the paper's Eq. 7) approximately, by ``n_iter`` steps of projected SGD with momentum on the simplex,
    warm-started from the previous step's :math:`w` (state, from :math:`1/T`), on the matrix scaled by the mean of
    the square roots of its diagonal (:math:`A / (s^2 + 10^{-8})`, as the authors' code):
    :math:`v \leftarrow \mu v + A (w + \lambda \tilde w)`, :math:`w \leftarrow \Pi_\Delta(w - \mathrm{lr}\, v)`.
    The trunk receives :math:`\sum_i \frac{w_i + \lambda \tilde w_i}{1 + \lambda} g_i`; the heads their own
    gradients. The stochastic algorithm takes :math:`A = J_\xi J_{\xi'}^\top` from two independent batches and the
    update from a third; here all three are the step's batch, so :math:`A` is the Gram matrix of the task
    gradients at the shared activation and the method works on :class:`TaskBlocks` without densifying. TorchJD's
    ``SDMGradWeighting`` on that matrix gives the same weights (its defaults are these).

    Args:
        lr: the inner SGD's learning rate (TorchJD's 10; LibMTL uses 5).
        momentum: the inner SGD's momentum :math:`\mu` (0.5).
        n_iter: inner steps per training step (20).
        lambda_: :math:`\lambda`, the pull towards the preferred direction (0.3, the authors' experiments).
        pref_vector: :math:`\tilde w` (default uniform :math:`1/T`: the mean gradient).
    """

    def __init__(self, lr: float = 10.0, momentum: float = 0.5, n_iter: int = 20, lambda_: float = 0.3,
                 pref_vector: Sequence[float] | None = None) -> None:
        if not lr > 0 or not 0.0 <= momentum < 1.0 or int(n_iter) < 1 or lambda_ < 0:
            raise ValueError(f'SDMGrad needs lr > 0, 0 <= momentum < 1, n_iter >= 1 and lambda_ >= 0; got lr={lr}, '
                             f'momentum={momentum}, n_iter={n_iter}, lambda_={lambda_}')
        self.lr, self.momentum, self.n_iter, self.lambda_ = float(lr), float(momentum), int(n_iter), float(lambda_)
        self.pref_vector = None if pref_vector is None else [float(v) for v in pref_vector]
        self.w: Tensor | None = None                   # [P, T] float64: the inner variable, on the simplex

    def extra_repr(self) -> str:
        return f'lr={self.lr}, momentum={self.momentum}, n_iter={self.n_iter}, lambda_={self.lambda_}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        pref = torch.full((t,), 1.0 / t, dtype=torch.float64) if self.pref_vector is None else \
            torch.tensor(self.pref_vector, dtype=torch.float64)
        if pref.shape != (t,):
            raise ValueError(f'SDMGrad pref_vector has {pref.numel()} values for {t} tasks')
        self.w = _simplex_rows(self.w, problem, t, 'SDMGrad')
        a = gram.cpu()
        if not bool(torch.isfinite(a).all()):
            return torch.full((t,), float('nan'), dtype=gram.dtype, device=gram.device)
        scale = a.diagonal().clamp_min(0).sqrt().mean()
        a = a / (scale * scale + 1e-8)
        w = self.w[problem].cpu()
        target = self.lambda_ * pref
        velocity = None
        for _ in range(self.n_iter):
            step = a @ (w + target)
            velocity = step if velocity is None else self.momentum * velocity + step
            w = _project_simplex((w - self.lr * velocity)[None])[0]
        self.w = self.w.cpu().clone()
        self.w[problem] = w
        return ((w + target) / (1.0 + self.lambda_)).to(device=gram.device, dtype=gram.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {'w': self.w}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('w',))
