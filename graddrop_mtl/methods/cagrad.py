"""CAGrad (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task Learning")."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import register_method
from .weighting import GramWeighting


@register_method
class CAGrad(GramWeighting):
    r"""Conflict-Averse Gradient descent: the update in a ball around the mean gradient that maximises the worst
    task's improvement.

    With :math:`g_0 = \frac1T \sum_i g_i`, CAGrad picks :math:`d = \arg\max_{\lVert d - g_0 \rVert \le
    c \lVert g_0 \rVert} \min_i g_i \cdot d`. Its dual: :math:`w^* = \arg\min_{w \in \Delta}
    g_w \cdot g_0 + c \lVert g_0 \rVert \lVert g_w \rVert` with :math:`g_w = \sum_i w_i g_i`, and
    :math:`d = g_0 + \frac{c \lVert g_0 \rVert}{\lVert g_w \rVert} g_w`. As in the authors' code (``rescale=1``,
    LibMTL's default) the trunk receives :math:`d / (1 + c^2)` (``rescale=2``: :math:`d / (1 + c)`, ``0``: d).
    The dual is solved on the Gram matrix (scaled to unit trace) with SciPy's SLSQP from the uniform weights, as
    the authors do, with tolerance ``tol``. The heads receive their own gradients.

    Args:
        c: the radius scale :math:`c` (the paper's and LibMTL's 0.5; ``calagrad_alpha`` in the authors' code).
        rescale: 0, 1 or 2 (see above).
        tol: SLSQP's ``ftol``.
    """

    def __init__(self, c: float = 0.5, rescale: int = 1, tol: float = 1e-12) -> None:
        if c < 0:
            raise ValueError(f'CAGrad c must be >= 0, got {c}')
        if rescale not in (0, 1, 2):
            raise ValueError(f'CAGrad rescale must be 0, 1 or 2, got {rescale!r}')
        self.c, self.rescale, self.tol = float(c), int(rescale), float(tol)

    def extra_repr(self) -> str:
        return f'c={self.c}, rescale={self.rescale}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        b = np.full(t, 1.0 / t)
        trace = float(gram.diagonal().sum())
        if not np.isfinite(trace):
            return torch.full((t,), float('nan'), dtype=gram.dtype, device=gram.device)
        if trace <= 0:
            return torch.as_tensor(b, dtype=gram.dtype, device=gram.device)
        g = (gram / trace).cpu().numpy()
        gb = g @ b
        g0_norm = float(np.sqrt(max(b @ gb, 0.0)))
        radius = self.c * g0_norm
        w = b if radius == 0 else _solve_dual(g, gb, radius, self.tol)
        gw_norm = float(np.sqrt(max(w @ g @ w, 0.0)))
        coef = b + (radius / gw_norm) * w if gw_norm > 0 else b
        coef = coef / {0: 1.0, 1: 1.0 + self.c ** 2, 2: 1.0 + self.c}[self.rescale]
        return torch.as_tensor(coef, dtype=gram.dtype, device=gram.device)


def _solve_dual(g: np.ndarray, gb: np.ndarray, radius: float, tol: float) -> np.ndarray:
    """``argmin_{w in simplex} w . gb + radius * sqrt(w^T g w)`` by SLSQP from the uniform weights."""
    from scipy.optimize import minimize
    t = g.shape[0]

    def objective(w):
        gw = g @ w
        norm = np.sqrt(max(w @ gw, 1e-300))
        return w @ gb + radius * norm, gb + radius * gw / norm

    res = minimize(objective, np.full(t, 1.0 / t), jac=True, method='SLSQP', bounds=[(0.0, 1.0)] * t,
                   constraints=[dict(type='eq', fun=lambda w: w.sum() - 1.0, jac=lambda w: np.ones_like(w))],
                   options=dict(ftol=tol, maxiter=1000))
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()
