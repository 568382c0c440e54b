"""STCH (Lin, Zhang, Wang, Liu & Zhang, ICML 2024, "Smooth Tchebycheff Scalarization for Multi-Objective
Optimization"), in its multitask form (LibMTL's ``STCH``)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import register_method
from .weighting import LossWeighting, load_tensors


@register_method
class STCH(LossWeighting):
    r"""Smooth Tchebycheff scalarisation of the log-normalised task losses.

    The smooth Tchebycheff function :math:`g_\mu(x) = \mu \log \sum_i \exp(\lambda_i (f_i(x) - z_i^*) / \mu)`
    approaches the worst weighted objective :math:`\max_i \lambda_i (f_i - z_i^*)` as :math:`\mu \to 0`. For
    multitask learning (the authors' and LibMTL's code) the objectives are the log-normalised losses
    :math:`f_i = \log(L_i / \nu_i + \delta)` with :math:`z^* = 0`, :math:`\lambda = 1`, and the model is trained on
    :math:`T\, g_\mu`, whose gradient is that of :math:`\sum_i w_i L_i` with

    .. math:: w_i = \frac{T\, \mathrm{softmax}(f / \mu)_i}{L_i + \delta \nu_i}

    (:attr:`task_weights`, from the rank-averaged losses). The nadir point :math:`\nu` is the mean loss over the
    last warm-up epoch: epochs :math:`0 \ldots W - 1` train on :math:`\sum_i \log(L_i + \delta)`
    (:math:`w_i = 1 / (L_i + \delta)`), epoch :math:`W` too while its losses are averaged into :math:`\nu`, and
    STCH starts with epoch :math:`W + 1`. Epochs are counted in steps, ``iters_per_epoch`` each (the method sees
    steps only; the default 1 makes every step an epoch). State: the step count, the running loss sum of epoch
    :math:`W` and :math:`\nu`.

    Args:
        mu: the smoothing :math:`\mu` (LibMTL's ``STCH_mu`` default 1.0).
        warmup_epoch: :math:`W` (LibMTL's ``STCH_warmup_epoch`` default 4).
        iters_per_epoch: steps per epoch (the training set's size over the global batch size).
        delta: :math:`\delta` inside the logarithms (LibMTL: 1e-20).
    """

    def __init__(self, mu: float = 1.0, warmup_epoch: int = 4, iters_per_epoch: int = 1,
                 delta: float = 1e-20) -> None:
        if mu <= 0:
            raise ValueError(f'STCH mu must be > 0, got {mu}')
        if int(warmup_epoch) != warmup_epoch or warmup_epoch < 0:
            raise ValueError(f'STCH warmup_epoch must be an integer >= 0, got {warmup_epoch!r}')
        if int(iters_per_epoch) != iters_per_epoch or iters_per_epoch < 1:
            raise ValueError(f'STCH iters_per_epoch must be an integer >= 1, got {iters_per_epoch!r}')
        if delta < 0:
            raise ValueError(f'STCH delta must be >= 0, got {delta}')
        self.mu, self.warmup_epoch = float(mu), int(warmup_epoch)
        self.iters_per_epoch, self.delta = int(iters_per_epoch), float(delta)
        self.step = 0                          # steps taken
        self.loss_sum: Tensor | None = None    # the sum of epoch W's losses
        self.loss_count = 0                    # the steps in it
        self.nadir: Tensor | None = None       # nu, set on the first step after epoch W

    def extra_repr(self) -> str:
        return f'mu={self.mu}, warmup_epoch={self.warmup_epoch}, iters_per_epoch={self.iters_per_epoch}'

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        if bool((losses < 0).any()):
            raise ValueError(f'STCH takes the log of the task losses: they must be >= 0, got {losses.tolist()}')
        epoch = self.step // self.iters_per_epoch
        self.step += 1
        if epoch <= self.warmup_epoch:
            if epoch == self.warmup_epoch:
                self.loss_sum = losses.clone() if self.loss_sum is None else self.loss_sum + losses
                self.loss_count += 1
            return 1.0 / (losses + self.delta)
        if self.nadir is None:
            if self.loss_sum is None:
                raise ValueError('STCH has no nadir point: the state skips the warm-up epoch (loaded from another '
                                 'run?)')
            self.nadir = self.loss_sum / self.loss_count
            if not bool((self.nadir > 0).all()):
                raise ValueError(f'STCH nadir point (mean losses of epoch {self.warmup_epoch}) must be > 0, got '
                                 f'{self.nadir.tolist()}')
        if self.nadir.shape != losses.shape:
            raise ValueError(f'STCH was set up for {tuple(self.nadir.shape)} losses, got {tuple(losses.shape)}')
        f = torch.log(losses / self.nadir + self.delta)
        soft = torch.softmax(f / self.mu, dim=0)
        return losses.shape[0] * soft / (losses + self.delta * self.nadir)

    def state_dict(self) -> dict[str, Any]:
        return {'step': self.step, 'loss_sum': self.loss_sum, 'loss_count': self.loss_count, 'nadir': self.nadir}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_tensors(self, state, ('step', 'loss_sum', 'loss_count', 'nadir'))
        self.step, self.loss_count = int(self.step or 0), int(self.loss_count or 0)
