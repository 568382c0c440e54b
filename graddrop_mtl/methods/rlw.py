"""Random Loss Weighting (Lin et al., TMLR 2022, "Reasonable Effectiveness of Random Weighting")."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import generator_device, per_problem_draws, register_method
from .weighting import LossWeighting


@register_method
class RLW(LossWeighting):
    r"""Random Loss Weighting: at every step :math:`w = \mathrm{softmax}(\epsilon)`, :math:`\epsilon \sim
    \mathcal N(0, I_T)` (the paper's normal distribution, as in LibMTL's ``RLW``); the weights sum to 1.

    The draw comes from the given generator. Several processes: each rank draws :math:`\epsilon`, the draws are
    summed over the ranks and divided by :math:`\sqrt{\text{world size}}`, which is again a standard normal, the
    same on every rank. Stateless apart from the random stream.
    """

    def draws(self, shape: torch.Size, generator) -> list[Tensor]:
        n_tasks, problems = shape[0], tuple(shape[1:])
        n_prob = int(torch.Size(problems).numel())
        eps = per_problem_draws((n_prob, n_tasks), generator, lambda size, g: torch.randn(
            size, generator=g, dtype=torch.float64, device=generator_device(g)))       # [P, T]
        return [eps.t().reshape(shape), torch.ones(1, dtype=torch.float64, device=eps.device)]  # summed: world size

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        eps = draws[0].to(losses.device) / draws[1].to(losses.device).sqrt()
        return torch.softmax(eps, dim=0)
