"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), and the trainable per-task parameters it and IMTL-L
share."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import register_method
from .weighting import LossWeighting


class TaskParameters:
    """One trainable value per task (a ``torch.nn.Parameter`` of shape ``[T, *problems]``), created at once when
    the number of tasks is known, else on the first call (shaped like the losses). Its state is the values; the
    optimiser's state for them belongs to the optimiser."""

    def __init__(self, num_tasks: int | None, init: float) -> None:
        if num_tasks is not None and int(num_tasks) < 1:
            raise ValueError(f'num_tasks must be a positive number of tasks, got {num_tasks!r}')
        self.num_tasks = None if num_tasks is None else int(num_tasks)
        self.init = float(init)
        self.value: torch.nn.Parameter | None = None
        if self.num_tasks is not None:
            self.value = torch.nn.Parameter(torch.full((self.num_tasks,), self.init))

    def parameters(self) -> list[Tensor]:
        return [] if self.value is None else [self.value]

    def get(self, losses: Tensor) -> Tensor:
        """The parameter, created (or checked) for losses of shape ``[T, *problems]``."""
        if self.value is None:
            self.value = torch.nn.Parameter(torch.full(tuple(losses.shape), self.init, device=losses.device))
            self.num_tasks = int(losses.shape[0])
        elif self.value.shape != losses.shape:
            raise ValueError(f'the method was set up for {tuple(self.value.shape)} task parameters but the losses '
                             f'have shape {tuple(losses.shape)} (number of tasks changed?)')
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {'value': None if self.value is None else self.value.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any], owner: str) -> None:
        unknown = set(state) - {'value'}
        if unknown:
            raise KeyError(f'{owner} state has unknown keys {sorted(unknown)}; expected [\'value\']')
        value = state.get('value')
        if value is None:
            return
        if self.value is None:
            self.value = torch.nn.Parameter(value.detach().clone().float())
            self.num_tasks = int(value.shape[0])
        elif self.value.shape != value.shape:
            raise ValueError(f'{owner}: the checkpoint holds {tuple(value.shape)} task parameters, the method '
                             f'{tuple(self.value.shape)}')
        else:
            with torch.no_grad():            # in place: the optimiser keeps its reference
                self.value.copy_(value)


@register_method
class UW(LossWeighting):
    r"""Uncertainty weighting: each task loss divided by a learnt variance.

    Kendall et al. train :math:`\sum_i \frac{1}{2\sigma_i^2} L_i + \log \sigma_i`; with the log-variance
    :math:`s_i = \log \sigma_i^2` (trainable, initialised to ``init``) that is

    .. math:: \sum_i \tfrac12 e^{-s_i} L_i + \tfrac12 s_i ,

    LibMTL's form (``UW``, ``loss_scale`` initialised to -0.5). Task weights :math:`w_i = \frac12 e^{-s_i}`
    (:attr:`task_weights`, carrying the graph to :math:`s`), extra loss term :math:`\frac12 \sum_i s_i`
    (:meth:`loss_term`).

    Training contract: :meth:`parameters` are trainable parameters of the model. The training loop must (1) give
    them to the optimiser (as a parameter group) and save/restore them with it, (2) backpropagate
    :math:`\sum_i w_i L_i + \mathrm{loss\_term}()` into them (the heads' loss with ``task_weights`` un-detached),
    and (3) under data parallelism average their gradients over the ranks like the model's. The method's
    :meth:`state_dict` holds their values. Without (1) and (2), the weights stay at their initial value.

    Args:
        num_tasks: the number of tasks (creates the parameters at once, so that an optimiser can be built with
            them; ``None``: on the first call).
        init: the initial log-variance (LibMTL: -0.5).
    """

    def __init__(self, num_tasks: int | None = None, init: float = -0.5) -> None:
        self.log_vars = TaskParameters(num_tasks, init)

    def extra_repr(self) -> str:
        return f'num_tasks={self.log_vars.num_tasks}, init={self.log_vars.init}'

    def parameters(self) -> list[Tensor]:
        return self.log_vars.parameters()

    def loss_weights(self, losses: Tensor, draws: list[Tensor]) -> Tensor:
        return 0.5 * torch.exp(-self.log_vars.get(losses))

    def loss_term(self) -> Tensor | None:
        s = self.log_vars.value
        return None if s is None else 0.5 * s.sum()

    def state_dict(self) -> dict[str, Any]:
        return self.log_vars.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log_vars.load_state_dict(state, type(self).__name__)
