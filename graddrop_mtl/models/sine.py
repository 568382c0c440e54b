"""The one-dimensional sine experiment (paper Section 4.1, appendix A.3) as an mmengine model.

One trainable weight :math:`w` per replica and five losses :math:`L_i(w) = \\sin(a_i w + b_i) + 1`. The replicas
(the paper's 200 repeats) are trained side by side in one tensor: the shared activation is the weight vector
``[R]`` and the multitask methods treat every replica as an independent problem (``problem_dims=1`` in the optim
wrapper), so replica ``r`` follows exactly the trajectory it would follow alone.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from mmengine.model import BaseModel
from torch import Tensor, nn

from ..methods.base import sum_tasks
from ..registry import MODELS

#: (a_i, b_i) of appendix A.3.
PAPER_SINES = ((1.0, 0.0), (1.5, 0.2), (2.0, 0.4), (2.5, 0.6), (5.0, 0.8))


def sine_frequencies(frequencies: Sequence[float], overlap: float) -> list[float]:
    """Frequencies moved toward their mean: ``a_i' = (1 - overlap) a_i + overlap * mean(a)``.

    ``overlap=0`` is the paper's setting; ``overlap=1`` makes every sine share one frequency (they then differ only by
    phase and overlap strongly). The rebuttal reports that more closely overlapping sines shrink the gap between
    methods.
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f'overlap must lie in [0, 1], got {overlap}')
    mean = float(np.mean(frequencies))
    return [(1.0 - overlap) * a + overlap * mean for a in frequencies]


def total_loss_np(w: np.ndarray, frequencies: Sequence[float], phases: Sequence[float]) -> np.ndarray:
    """:math:`\\sum_i \\sin(a_i w + b_i) + 1` for an array of weights."""
    w = np.asarray(w, dtype=np.float64)
    return sum(np.sin(a * w + b) + 1.0 for a, b in zip(frequencies, phases))


def global_minimum(frequencies: Sequence[float], phases: Sequence[float], low: float, high: float,
                   grid: int = 400_001) -> tuple[float, float]:
    """The global minimum ``(w*, L(w*))`` of the total loss on ``[low, high]``: a dense grid, then Newton steps."""
    w = np.linspace(low, high, grid)
    w0 = float(w[np.argmin(total_loss_np(w, frequencies, phases))])
    for _ in range(20):
        d1 = sum(a * np.cos(a * w0 + b) for a, b in zip(frequencies, phases))
        d2 = sum(-a * a * np.sin(a * w0 + b) for a, b in zip(frequencies, phases))
        if d2 <= 0:
            break
        w0 = float(np.clip(w0 - d1 / d2, low, high))
    return w0, float(total_loss_np(w0, frequencies, phases))


class SineTrunk(nn.Module):
    """Holds the replicas' weights; its output, the weight vector, is the shared activation."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(init.clone())

    def forward(self) -> Tensor:
        return self.weight.view(-1)


@MODELS.register_module()
class SineMTLModel(BaseModel):
    """Five sine losses of one weight, ``num_replicas`` independent replicas trained at once.

    Initial weights: replica ``r`` draws ``w_r ~ U(init_range)`` from its own generator seeded with
    ``init_seed * 1_000_003 + r``, so a replica's start does not depend on how many replicas run. The default range
    ``[0, 4*pi)`` is exactly one period of the paper's total loss (every ``a_i`` is a multiple of 1/2, so the sum is
    ``4*pi``-periodic): every basin of the landscape is sampled in proportion to its width.

    Args:
        sines: the ``(a_i, b_i)`` pairs (default: appendix A.3).
        num_replicas: number of independent repeats.
        replica_ids: ids of the replicas (default ``0..num_replicas-1``); a run of ``replica_ids=[r]`` reproduces
            replica ``r`` of a bigger run.
        init_range: ``(low, high)`` of the uniform initial distribution.
        init_seed: seed of the initial weights.
        overlap: move the frequencies toward their mean (see :func:`sine_frequencies`).
        record_trajectory: keep the total loss of every replica at every training step (read by
            ``SineTrajectoryHook``).
    """

    def __init__(self, sines: Sequence[Sequence[float]] = PAPER_SINES, num_replicas: int = 200,
                 replica_ids: Sequence[int] | None = None, init_range: Sequence[float] = (0.0, 4 * math.pi),
                 init_seed: int = 0, overlap: float = 0.0, record_trajectory: bool = True,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        if not sines or any(len(s) != 2 for s in sines):
            raise ValueError(f'sines must be a list of (a, b) pairs, got {sines}')
        ids = list(range(num_replicas)) if replica_ids is None else [int(i) for i in replica_ids]
        if not ids:
            raise ValueError('at least one replica is needed')
        self.replica_ids = ids
        self.phases = [float(b) for _, b in sines]
        self.frequencies = sine_frequencies([float(a) for a, _ in sines], overlap)
        self.init_range = (float(init_range[0]), float(init_range[1]))
        low, high = self.init_range
        init = torch.empty(len(ids), dtype=torch.float64)
        for k, r in enumerate(ids):
            gen = torch.Generator().manual_seed(int(init_seed) * 1_000_003 + r)
            init[k] = low + (high - low) * torch.rand((), generator=gen, dtype=torch.float64)
        self.trunk = SineTrunk(init.float())
        self.register_buffer('a', torch.tensor(self.frequencies), persistent=False)
        self.register_buffer('b', torch.tensor(self.phases), persistent=False)
        self.record_trajectory = record_trajectory
        self.trajectory: list[Tensor] = []

    def task_losses(self, w: Tensor) -> Tensor:
        """``[T, R]``: :math:`\\sin(a_i w_r + b_i) + 1`."""
        return torch.sin(self.a[:, None] * w[None, :] + self.b[:, None]) + 1.0

    def forward(self, inputs=None, data_samples=None, mode: str = 'tensor'):
        w = self.trunk()
        losses = self.task_losses(w)
        if mode == 'loss':
            if self.record_trajectory and self.training:
                self.trajectory.append(sum_tasks(losses.detach()))
            return {f'loss_sin{i}': losses[i] for i in range(losses.shape[0])}
        if mode == 'predict':
            return [dict(weights=w.detach().double().cpu().numpy(),
                         total_loss=sum_tasks(losses.detach()).double().cpu().numpy(),
                         replica_ids=np.asarray(self.replica_ids))]
        if mode == 'tensor':
            return losses
        raise ValueError(f'invalid mode {mode!r}; expected "loss", "predict" or "tensor"')
