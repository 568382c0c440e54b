"""GradVac (Wang, Tsvetkov, Firat & Cao, ICLR 2021, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models")."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from .base import generator_device, per_problem_draws, register_method
from .weighting import GramWeighting, load_tensors


@register_method
class GradVac(GramWeighting):
    r"""Gradient Vaccine: raise each pair's gradient cosine to its running target.

    For each task i, over the other tasks j in a random order, with :math:`\phi_{ij}` the cosine of the current
    :math:`g_i'` (starting at :math:`g_i`) and the original :math:`g_j`, and :math:`\hat\phi_{ij}` its target
    (state, an EMA starting at 0): if :math:`\phi_{ij} < \hat\phi_{ij}`,

    .. math:: g_i' \leftarrow g_i' + \frac{\lVert g_i' \rVert (\hat\phi_{ij} \sqrt{1 - \phi_{ij}^2}
              - \phi_{ij} \sqrt{1 - \hat\phi_{ij}^2})}{\lVert g_j \rVert \sqrt{1 - \hat\phi_{ij}^2} + \epsilon}\, g_j ,

    and in every case :math:`\hat\phi_{ij} \leftarrow (1 - \beta) \hat\phi_{ij} + \beta \phi_{ij}`. The trunk
    receives :math:`\sum_i g_i'`. As in TorchJD's ``GradVac`` it runs on the Gram matrix (every :math:`g_i'` is a
    combination of the originals) and on the whole activation as one parameter group (LibMTL's
    ``GradVac_group_type=0``). The heads receive their own gradients.

    The random orders come from uniforms drawn from the generator and, with several processes, summed over the
    ranks before they are sorted (a uniformly random order, the same on every rank), so that the state stays
    identical across ranks.

    Args:
        beta: the EMA rate :math:`\beta` (LibMTL's and TorchJD's default 0.5).
        eps: :math:`\epsilon` in the denominators (TorchJD's 1e-8).
    """

    def __init__(self, beta: float = 0.5, eps: float = 1e-8) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f'GradVac beta must lie in [0, 1], got {beta}')
        if eps < 0:
            raise ValueError(f'GradVac eps must be >= 0, got {eps}')
        self.beta, self.eps = float(beta), float(eps)
        self.targets: Tensor | None = None       # [P, T, T]: the EMA targets phi-hat

    def extra_repr(self) -> str:
        return f'beta={self.beta}, eps={self.eps}'

    def draws(self, n_prob: int, n_tasks: int, generator, device: torch.device) -> list[Tensor]:
        u = per_problem_draws((n_prob, n_tasks, n_tasks), generator, lambda size, g: torch.rand(
            size, generator=g, dtype=torch.float64, device=generator_device(g)))
        return [u.to(device)]

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        if self.targets is None or self.targets.shape[1] != t:
            if self.targets is not None:
                raise ValueError(f'GradVac was set up for {self.targets.shape[1]} tasks, got {t}')
            self.targets = torch.zeros(0, t, t, dtype=torch.float64)
        if self.targets.shape[0] <= problem:
            self.targets = torch.cat([self.targets, torch.zeros(problem + 1 - self.targets.shape[0], t, t,
                                                                dtype=torch.float64)])
        u = draws[0].cpu().clone()
        u.fill_diagonal_(float('inf'))                         # the task itself sorts last, then is dropped
        orders = u.argsort(-1)[:, :-1].numpy()
        coef, targets = gradvac_coefficients(gram.cpu().numpy(), self.targets[problem].numpy(), orders,
                                             self.beta, self.eps)
        self.targets = self.targets.clone()
        self.targets[problem] = torch.from_numpy(targets)
        return torch.from_numpy(coef.sum(0)).to(device=gram.device, dtype=gram.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {'targets': self.targets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('targets',))


def gradvac_coefficients(gram: np.ndarray, targets: np.ndarray, orders: np.ndarray, beta: float,
                         eps: float) -> tuple[np.ndarray, np.ndarray]:
    """GradVac on a Gram matrix: ``C [T, T]`` with :math:`g_i' = \\sum_k C_{ik} g_k`, and the updated targets.
    ``orders[i]`` lists the other tasks in the order task i visits them."""
    t = gram.shape[0]
    coef = np.eye(t)
    targets = targets.copy()
    with np.errstate(invalid='ignore', divide='ignore'):
        for i in range(t):
            c_g = coef[i] @ gram                      # g_i' . g_k for every k
            for j in orders[i]:
                norm_i = np.sqrt(max(float(c_g @ coef[i]), 0.0))
                norm_j = np.sqrt(max(float(gram[j, j]), 0.0))
                phi = c_g[j] / (norm_i * norm_j + eps)
                hat = targets[i, j]
                if phi < hat:
                    w = norm_i * (hat * np.sqrt(max(1 - phi * phi, 0.0)) - phi * np.sqrt(max(1 - hat * hat, 0.0))) \
                        / (norm_j * np.sqrt(max(1 - hat * hat, 0.0)) + eps)
                    coef[i, j] += w
                    c_g = c_g + w * gram[j]
                targets[i, j] = (1 - beta) * hat + beta * phi
    return coef, targets
