"""DualProj (Quinton & Rey, 2024, "Jacobian Descent For Multi-Objective Optimization")."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import register_method
from .upgrad import dual_cone_weights
from .weighting import GramWeighting


@register_method
class DualProj(GramWeighting):
    r"""DualProj: the preference-weighted gradient projected onto the dual cone of the task gradients.

    The trunk receives the projection of :math:`\sum_i p_i g_i` onto :math:`\{x : g_j \cdot x \ge 0 \ \forall j\}`,
    :math:`\sum_j v_j g_j` with :math:`v = \arg\min_{v \ge p} v^\top G v` (TorchJD's ``DualProj``; ``p`` the
    preference vector, default :math:`1/T`), solved exactly as in :class:`~graddrop_mtl.methods.upgrad.UPGrad`
    (non-negative least squares, no regularisation). The heads receive their own gradients.

    Args:
        pref_vector: T preference weights (default uniform ``1/T``).
    """

    def __init__(self, pref_vector: Sequence[float] | None = None) -> None:
        self.pref_vector = None if pref_vector is None else [float(v) for v in pref_vector]

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        pref = np.full(t, 1.0 / t) if self.pref_vector is None else np.asarray(self.pref_vector, dtype=np.float64)
        if pref.shape != (t,):
            raise ValueError(f'DualProj pref_vector has {pref.size} values for {t} tasks')
        out = dual_cone_weights(gram.cpu().numpy(), pref[None])[0]
        return torch.as_tensor(out, dtype=gram.dtype).to(gram.device)
