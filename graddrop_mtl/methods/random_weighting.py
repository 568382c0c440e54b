"""Random weighting of the gradients (Lin et al., TMLR 2022, "Reasonable Effectiveness of Random Weighting"),
TorchJD's ``Random`` aggregator."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import generator_device, per_problem_draws, register_method
from .weighting import GramWeighting


@register_method
class Random(GramWeighting):
    r"""Random gradient weighting: the trunk receives :math:`\sum_i w_i g_i` with :math:`w = \mathrm{softmax}
    (\epsilon)`, :math:`\epsilon \sim \mathcal N(0, I_T)` drawn at every step; the heads receive their own
    gradients (TorchJD's ``Random``; :class:`~graddrop_mtl.methods.rlw.RLW` weights the losses, heads included).

    The draw comes from the given generator; with several processes the ranks' draws are summed and divided by
    :math:`\sqrt{\text{world size}}` (again a standard normal, the same on every rank). The Gram matrix is not
    needed for the weights; it travels with the draws only because it is the base class's one reduction.
    """

    def draws(self, n_prob: int, n_tasks: int, generator, device: torch.device) -> list[Tensor]:
        eps = per_problem_draws((n_prob, n_tasks), generator, lambda size, g: torch.randn(
            size, generator=g, dtype=torch.float64, device=generator_device(g)))
        return [eps.to(device), torch.ones(n_prob, dtype=torch.float64, device=device)]   # summed: world size

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        eps = draws[0] / draws[1].sqrt()
        return torch.softmax(eps, dim=0).to(gram)
