"""MoDo (Chen, Fernando, Ying & Chen, NeurIPS 2023 / JMLR 2024, "Three-Way Trade-Off in Multi-Objective Learning:
Optimization, Generalization and Conflict-Avoidance")."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import register_method
from .mgda import _project_simplex, _simplex_rows
from .weighting import GramWeighting, load_tensors


@register_method
class MoDo(GramWeighting):
    r"""Multi-objective gradient with Double sampling: MGDA's weights followed by one projected gradient step per
    training step.

    :math:`\lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma (A \lambda + \rho \lambda)\big)` from :math:`1/T`
    (state), and the trunk receives :math:`\sum_i \lambda_i g_i` (the heads their own gradients). The paper takes
    :math:`A = J_1 J_2^\top` from two independent batches (double sampling) and the update from a third; here
    they are all the step's batch, so :math:`A` is the Gram matrix of the task gradients at the shared activation
    (not normalised: :math:`\gamma` acts on its scale) and the method works on :class:`TaskBlocks` without
    densifying. TorchJD's ``MoDoWeighting`` on that matrix gives the same weights.

    Args:
        gamma: the step size :math:`\gamma` of the weights (TorchJD's 0.1; LibMTL's default is 0.001).
        rho: :math:`\rho`, the :math:`\ell_2` regularisation of the weight step (0.1, both peers).
    """

    def __init__(self, gamma: float = 0.1, rho: float = 0.1) -> None:
        if not gamma > 0 or rho < 0:
            raise ValueError(f'MoDo needs gamma > 0 and rho >= 0, got gamma={gamma}, rho={rho}')
        self.gamma, self.rho = float(gamma), float(rho)
        self.lambd: Tensor | None = None               # [P, T] float64, on the simplex

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, rho={self.rho}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        self.lambd = _simplex_rows(self.lambd, problem, t, 'MoDo')
        a = gram.cpu()
        if not bool(torch.isfinite(a).all()):
            return torch.full((t,), float('nan'), dtype=gram.dtype, device=gram.device)
        lambd = self.lambd[problem].cpu()
        lambd = _project_simplex((lambd - self.gamma * (a @ lambd + self.rho * lambd))[None])[0]
        self.lambd = self.lambd.cpu().clone()
        self.lambd[problem] = lambd
        return lambd.to(device=gram.device, dtype=gram.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {'lambd': self.lambd}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('lambd',))
