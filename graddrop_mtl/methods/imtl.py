"""IMTL (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"): IMTL-G on the gradients, IMTL-L on the
losses."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import register_method
from .weighting import GramWeighting, LossWeighting


@register_method
class IMTLG(GramWeighting):
    r"""IMTL-G: the combined gradient has equal projections onto every task's unit gradient.

    With :math:`u_i = g_i / \lVert g_i \rVert`, the paper asks for :math:`g = \sum_i w_i g_i` with
    :math:`\sum_i w_i = 1` and :math:`g \cdot u_i` the same for all tasks. On the Gram matrix :math:`G` this is
    :math:`G w \propto d`, :math:`d_i = \lVert g_i \rVert`:

    .. math:: w = \frac{G^{+} d}{\mathbf 1^\top G^{+} d},

    the generalisation of TorchJD (``IMTLG``; Quinton & Rey, "Jacobian Descent For Multi-Objective
    Optimization", 2024) that also holds for linearly dependent gradients (pseudo-inverse). When
    :math:`\mathbf 1^\top G^+ d` vanishes (relative to :math:`\lVert G^+ d \rVert_1`) the weights are 0, as there.
    No hyperparameters. The heads receive their own gradients.
    """

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        d = gram.diagonal().clamp_min(0).sqrt()
        v = torch.linalg.pinv(gram, hermitian=True) @ d
        total = v.sum()
        if not bool(torch.isfinite(total)):
            return torch.full_like(v, float('nan'))
        if float(total.abs()) <= 1e-12 * float(v.abs().sum()):
            return torch.zeros_like(v)
        return v / total


@register_method
class IMTLL(LossWeighting):
    r"""IMTL-L: learnt loss scales that make the scaled losses equal.

    Each task loss is trained as :math:`e^{s_i} L_i - s_i` with a trainable scale :math:`s_i` (initialised to 0):
    at the optimum of :math:`s_i`, :math:`e^{s_i} L_i = 1` for every task. The task weights are
    :math:`w_i = e^{s_i}` and the extra loss term is :math:`-\sum_i s_i` (:meth:`loss_term`); the scales are the
    method's :meth:`parameters`, which the training loop must optimise with the model (see
    :class:`~graddrop_mtl.methods.uw.UW` for the contract). Without that the scales stay at their initial value.

    Args:
        num_tasks: the number of tasks (creates the scales at once; ``None``: on the first call).
    """

    def __init__(self, num_tasks: int | None = None) -> None:
        from .uw import TaskParameters
        self.scales = TaskParameters(num_tasks, 0.0)

    def extra_repr(self) -> str:
        return f'num_tasks={self.scales.num_tasks}'

    def parameters(self) -> list[Tensor]:
        return self.scales.parameters()

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        s = self.scales.get(losses)
        return s.exp()

    def loss_term(self) -> Tensor | None:
        s = self.scales.value
        return None if s is None else -s.sum()

    def state_dict(self) -> dict:
        return self.scales.state_dict()

    def load_state_dict(self, state) -> None:
        self.scales.load_state_dict(state, type(self).__name__)
