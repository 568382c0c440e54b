"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, "End-to-End Multi-Task Learning with Attention")."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import register_method
from .weighting import LossWeighting, load_tensors


@register_method
class DWA(LossWeighting):
    r"""Dynamic Weight Average: tasks whose loss fell slowly get more weight.

    .. math:: w_i(t) = \frac{T \exp(r_i(t-1) / \mathcal T)}{\sum_j \exp(r_j(t-1) / \mathcal T)}, \qquad
              r_i(t-1) = \frac{\bar L_i(t-1)}{\bar L_i(t-2)},

    where :math:`\bar L_i(t)` is task i's mean loss over window t and :math:`\mathcal T` the temperature
    (``temp``, the paper's T = 2). The paper's window is one epoch (``window`` = iterations per epoch; the default
    1 uses the previous two steps' losses, as step-wise implementations do). :math:`w = 1` until two windows are
    complete. State: the window's running sum, the last two window means and the current weights.

    Args:
        temp: the temperature :math:`\mathcal T`.
        window: steps per averaging window.
    """

    def __init__(self, temp: float = 2.0, window: int = 1) -> None:
        if temp <= 0:
            raise ValueError(f'DWA temp must be > 0, got {temp}')
        if int(window) < 1:
            raise ValueError(f'DWA window must be >= 1 step, got {window}')
        self.temp = float(temp)
        self.window = int(window)
        self.running: Tensor | None = None      # sum of the losses in the current window
        self.count = 0                           # steps in the current window
        self.history: Tensor | None = None      # [2, T, *problems]: the means of windows t-2, t-1 (NaN: none yet)
        self.weights: Tensor | None = None

    def extra_repr(self) -> str:
        return f'temp={self.temp}, window={self.window}'

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        if self.weights is None:
            self.weights = torch.ones_like(losses)
            self.history = torch.full((2, *losses.shape), float('nan'), dtype=losses.dtype, device=losses.device)
            self.running = torch.zeros_like(losses)
        if self.weights.shape != losses.shape:
            raise ValueError(f'DWA was set up for {tuple(self.weights.shape)} losses, got {tuple(losses.shape)}')
        w = self.weights.clone()
        self.running = self.running + losses
        self.count += 1
        if self.count == self.window:
            self.history = torch.stack([self.history[1], self.running / self.window])
            self.running = torch.zeros_like(losses)
            self.count = 0
            if not bool(torch.isnan(self.history[0]).any()):
                ratio = self.history[1] / self.history[0]
                self.weights = losses.shape[0] * torch.softmax(ratio / self.temp, dim=0)
        return w

    def state_dict(self) -> dict[str, Any]:
        return {'running': self.running, 'count': self.count, 'history': self.history, 'weights': self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('running', 'count', 'history', 'weights'))
        self.count = int(self.count or 0)
