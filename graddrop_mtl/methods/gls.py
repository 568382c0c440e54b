"""GLS, the geometric loss strategy (Chennupati, Sistu, Yogamani & Rawashdeh, CVPR Workshops 2019, "MultiNet++:
Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning")."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import register_method
from .weighting import LossWeighting


@register_method
class GLS(LossWeighting):
    r"""Geometric loss strategy: train on the geometric mean of the task losses, :math:`(\prod_i L_i)^{1/T}`
    (LibMTL's ``GLS``). Its gradient is that of :math:`\sum_i w_i L_i` with

    .. math:: w_i = \frac{(\prod_j L_j)^{1/T}}{T\, L_i},

    the task weights (computed through logarithms, from the rank-averaged losses). No hyperparameters; the losses
    must be positive.
    """

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        n_tasks = losses.shape[0]
        geometric = torch.exp(losses.log().mean(0, keepdim=True))
        return geometric / (n_tasks * losses)
