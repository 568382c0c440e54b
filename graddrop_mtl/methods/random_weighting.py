"""Random weighting of the gradients (Lin et al., TMLR 2022, "Reasonable Effectiveness of Random Weighting"),
TorchJD's ``Random`` aggregator."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import (
    Method,
    check_grads,
    combine_with_coefficients,
    flat_per_problem,
    generator_device,
    per_problem_draws,
    reduce_statistics,
    register_method,
)
from .blocks import TaskBlocks


@register_method
class Random(Method):
    r"""Random gradient weighting: the trunk receives :math:`\sum_i w_i g_i` with :math:`w = \mathrm{softmax}
    (\epsilon)`, :math:`\epsilon \sim \mathcal N(0, I_T)` drawn at every step; the heads receive their own
    gradients (TorchJD's ``Random``; :class:`~graddrop_mtl.methods.rlw.RLW` weights the losses, heads included).
    No Gram matrix: one pass over the gradients for the weighted sum.

    The draw comes from the given generator; with several processes the ranks' draws are summed and divided by
    :math:`\sqrt{\text{world size}}` (again a standard normal, the same on every rank).
    """

    def _weights(self, n_prob: int, n_tasks: int, generator, device: torch.device) -> Tensor:
        """Weights ``[P, T]`` (float64)."""
        eps = per_problem_draws((n_prob, n_tasks), generator, lambda size, g: torch.randn(
            size, generator=g, dtype=torch.float64, device=generator_device(g))).to(device)
        (eps, world), _ = reduce_statistics(self.reducer, [eps, torch.ones(1, dtype=torch.float64, device=device)])
        return torch.softmax(eps / world.sqrt(), dim=1)

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        flat = flat_per_problem(grads, problem_dims)
        return combine_with_coefficients(flat, self._weights(flat.shape[0], flat.shape[1], generator, grads.device),
                                         grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        return blocks.linear_combination(self._weights(1, blocks.n_tasks, generator, blocks.device)[0])
