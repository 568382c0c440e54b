"""An example of a multitask method defined outside the package: deterministic sign majority.

GradDrop keeps the positive sign of an element with probability f(P). The appendix shows that steeper f lower the
variance of the update; the limit k -> infinity of f(P) = clip(k (P - 1/2) + 1/2, 0, 1) is a step function: keep
the sign that holds the majority of the gradient mass, always. ``MajoritySign`` is that limit, registered with
``graddrop_mtl.methods.register_method`` so that configs can use ``method=dict(type='MajoritySign')`` once this
module is in ``custom_imports``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from graddrop_mtl.methods import GradDrop, register_method


@register_method
class MajoritySign(GradDrop):
    r""":math:`f(\mathcal{P}) = \mathbb{1}[\mathcal{P} > 1/2]` (ties: 1/2): the majority sign survives.

    Every other GradDrop option (leak, batch-separated, keep_grad_norm) applies unchanged.
    """

    def keep_positive_probability(self, purity: Tensor) -> Tensor:
        return torch.where(purity > 0.5, 1.0, torch.where(purity < 0.5, 0.0, 0.5)).to(purity.dtype)
