"""DualProj (Quinton & Rey, 2024, "Jacobian Descent For Multi-Objective Optimization")."""
from __future__ import annotations

import numpy as np

from .base import register_method
from .upgrad import UPGrad


@register_method
class DualProj(UPGrad):
    r"""DualProj: the preference-weighted gradient projected onto the dual cone of the task gradients.

    The trunk receives the projection of :math:`\sum_i p_i g_i` onto :math:`\{x : g_j \cdot x \ge 0 \ \forall j\}`,
    :math:`\sum_j v_j g_j` with :math:`v = \arg\min_{v \ge p} v^\top G v` (TorchJD's ``DualProj``; ``p`` the
    preference vector, default :math:`1/T`), solved exactly as in :class:`~graddrop_mtl.methods.upgrad.UPGrad`
    (non-negative least squares, no regularisation). The heads receive their own gradients.

    Args:
        pref_vector: T preference weights (default uniform ``1/T``).
    """

    @staticmethod
    def lower_bounds(pref: np.ndarray) -> np.ndarray:
        """One projection, of the preference-weighted sum: ``v >= p``."""
        return pref[None]
