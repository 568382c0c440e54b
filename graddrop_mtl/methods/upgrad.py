"""UPGrad (Quinton & Rey, 2024, "Jacobian Descent For Multi-Objective Optimization")."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import register_method
from .weighting import GramWeighting


@register_method
class UPGrad(GramWeighting):
    r"""Unconflicting Projection of Gradients: each task's gradient projected onto the dual cone of all of them,
    then averaged.

    The dual cone is :math:`\{x : g_j \cdot x \ge 0 \ \forall j\}`. The projection of :math:`p_i g_i` onto it is
    :math:`\sum_j v^{(i)}_j g_j` with :math:`v^{(i)} = \arg\min_{v \ge p_i e_i} v^\top G v` (the dual of the
    projection, on the Gram matrix), and the trunk receives :math:`\sum_i \sum_j v^{(i)}_j g_j`, weights
    :math:`w = \sum_i v^{(i)}`; ``p`` is the preference vector (default :math:`1/T`, TorchJD's mean). The result
    conflicts with no task: :math:`g_j \cdot \sum_i w_i g_i \ge 0`.

    Each problem :math:`\min_{z \ge 0} \lVert R (z + p_i e_i) \rVert^2` (:math:`G = R^\top R` from the
    eigendecomposition, negative rounding eigenvalues set to 0) is a non-negative least-squares problem, solved
    exactly by the Lawson-Hanson active-set method (``scipy.optimize.nnls``). TorchJD solves the same QP with
    quadprog on :math:`G / \mathrm{tr}(G) + 10^{-4} I` (its ``reg_eps``); here :math:`G / \mathrm{tr}(G)` is not
    regularised. The heads receive their own gradients.

    Args:
        pref_vector: T preference weights (default uniform ``1/T``).
    """

    def __init__(self, pref_vector: Sequence[float] | None = None) -> None:
        self.pref_vector = None if pref_vector is None else [float(v) for v in pref_vector]

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        pref = np.full(t, 1.0 / t) if self.pref_vector is None else np.asarray(self.pref_vector, dtype=np.float64)
        if pref.shape != (t,):
            raise ValueError(f'{type(self).__name__} pref_vector has {pref.size} values for {t} tasks')
        out = dual_cone_weights(gram.cpu().numpy(), self.lower_bounds(pref)).sum(0)
        return torch.as_tensor(out, dtype=gram.dtype).to(gram.device)

    @staticmethod
    def lower_bounds(pref: np.ndarray) -> np.ndarray:
        """The rows ``u`` of the projections ``argmin_{v >= u} v^T G v`` whose weights are summed: one per task
        (``p_i e_i``)."""
        return np.diag(pref)


def dual_cone_weights(gram: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each row ``u[k]``: ``argmin_{v >= u[k]} v^T G v`` (``[K, T]``), by non-negative least squares on a
    square root of ``G / tr(G)``."""
    from scipy.optimize import nnls
    trace = float(np.trace(gram))
    if not np.isfinite(trace):
        return np.full(u.shape, np.nan)
    if trace <= 0:
        return u.copy()
    lam, vec = np.linalg.eigh(gram / trace)
    root = np.sqrt(np.clip(lam, 0.0, None))[:, None] * vec.T          # R with R^T R = G / tr(G)
    out = np.empty_like(u, dtype=np.float64)
    for k, row in enumerate(u):
        z, _ = nnls(root, -root @ row, maxiter=50 * gram.shape[0])
        out[k] = row + z
    return out
