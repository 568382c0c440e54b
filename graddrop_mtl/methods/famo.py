"""FAMO (Liu, Liang, Gong, Stone & Liu, NeurIPS 2023, "FAMO: Fast Adaptive Multitask Optimization")."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import register_method
from .weighting import LossWeighting, load_tensors


@register_method
class FAMO(LossWeighting):
    r"""Fast Adaptive Multitask Optimization: balance the tasks' log-loss decrease with O(1) work per step.

    Logits :math:`\xi` (state, initialised to 0) give :math:`z = \mathrm{softmax}(\xi)`. The model is trained on
    :math:`\sum_i \frac{z_i}{c} \log(L_i - L_i^* + \epsilon)`, :math:`c = \sum_i z_i / (L_i - L_i^* + \epsilon)`,
    whose gradient is that of :math:`\sum_i w_i L_i` with task weights
    :math:`w_i = z_i / (c\,(L_i - L_i^* + \epsilon))` (:attr:`task_weights`). After a step, with the log-loss
    decrease :math:`\delta_i = \log(L_i^{prev} - L_i^* + \epsilon) - \log(L_i - L_i^* + \epsilon)`, the logits
    take one Adam step (learning rate ``w_lr`` = the paper's :math:`\beta`, weight decay ``gamma`` = the paper's
    :math:`\gamma`) along :math:`J_{\mathrm{softmax}}(\xi)^\top \delta`, as the authors' ``FAMO.update``.

    The authors evaluate :math:`\delta` on the same batch after the update (one more forward pass); here it uses
    the next step's losses (the losses the wrapper passes), so FAMO adds no forward pass. State: the logits,
    Adam's moments and step count, and the previous losses (all from the rank-averaged losses).

    Args:
        w_lr: the logits' learning rate :math:`\beta` (0.025).
        gamma: the logits' weight decay :math:`\gamma` (0.001).
        min_losses: :math:`L^*`, a lower bound of each loss (0).
        eps: :math:`\epsilon` (1e-8).
    """

    def __init__(self, w_lr: float = 0.025, gamma: float = 0.001, min_losses: float = 0.0,
                 eps: float = 1e-8) -> None:
        if w_lr <= 0:
            raise ValueError(f'FAMO w_lr must be > 0, got {w_lr}')
        self.w_lr, self.gamma, self.min_losses, self.eps = float(w_lr), float(gamma), float(min_losses), float(eps)
        self.logits: Tensor | None = None
        self.exp_avg: Tensor | None = None
        self.exp_avg_sq: Tensor | None = None
        self.adam_step = 0
        self.prev_losses: Tensor | None = None

    def extra_repr(self) -> str:
        return f'w_lr={self.w_lr}, gamma={self.gamma}'

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        if self.logits is None:
            self.logits = torch.zeros_like(losses)
            self.exp_avg, self.exp_avg_sq = torch.zeros_like(losses), torch.zeros_like(losses)
        if self.logits.shape != losses.shape:
            raise ValueError(f'FAMO was set up for {tuple(self.logits.shape)} losses, got {tuple(losses.shape)}')
        shifted = losses - self.min_losses + self.eps
        if self.prev_losses is not None:
            delta = (self.prev_losses - self.min_losses + self.eps).log() - shifted.log()
            z = torch.softmax(self.logits, dim=0)
            grad = z * (delta - (z * delta).sum(0, keepdim=True))        # J_softmax^T delta
            self._adam(grad)
        z = torch.softmax(self.logits, dim=0)
        c = (z / shifted).sum(0, keepdim=True)
        self.prev_losses = losses.clone()
        return z / (c * shifted)

    def _adam(self, grad: Tensor, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        """One step of ``torch.optim.Adam(lr=w_lr, weight_decay=gamma)`` on the logits."""
        grad = grad + self.gamma * self.logits
        self.adam_step += 1
        self.exp_avg = beta1 * self.exp_avg + (1 - beta1) * grad
        self.exp_avg_sq = beta2 * self.exp_avg_sq + (1 - beta2) * grad * grad
        bias1 = 1 - beta1 ** self.adam_step
        bias2 = 1 - beta2 ** self.adam_step
        denom = (self.exp_avg_sq / bias2).sqrt() + eps
        self.logits = self.logits - self.w_lr * (self.exp_avg / bias1) / denom

    def state_dict(self) -> dict[str, Any]:
        return {'logits': self.logits, 'exp_avg': self.exp_avg, 'exp_avg_sq': self.exp_avg_sq,
                'adam_step': self.adam_step, 'prev_losses': self.prev_losses}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('logits', 'exp_avg', 'exp_avg_sq', 'adam_step', 'prev_losses'))
        self.adam_step = int(self.adam_step or 0)
