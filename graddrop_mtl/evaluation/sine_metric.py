"""Metric of the sine experiment: final total loss, distance to the global minimum, share of converged replicas."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from ..models.sine import PAPER_SINES, global_minimum, sine_frequencies
from ..registry import METRICS


@METRICS.register_module()
class SineMetric(BaseMetric):
    """Per-replica final total loss against the global minimum of the total loss on the initial range.

    Reports ``total_loss_mean``, ``total_loss_std`` (over replicas), ``global_min`` and ``at_global_min`` (the share
    of replicas whose final total loss is within ``tol`` of the global minimum). The per-replica values are written to
    ``<work_dir>/sine_final.npz`` by ``SineTrajectoryHook`` for the study script.
    """

    default_prefix = 'sine'

    def __init__(self, sines: Sequence[Sequence[float]] = PAPER_SINES, overlap: float = 0.0,
                 init_range: Sequence[float] = (0.0, 4 * math.pi), tol: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        freqs = sine_frequencies([a for a, _ in sines], overlap)
        self.w_star, self.l_star = global_minimum(freqs, [b for _, b in sines], *init_range)
        self.tol = tol

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            self.results.append(np.asarray(sample['total_loss'], dtype=np.float64))

    def compute_metrics(self, results: list) -> dict:
        total = np.concatenate(results)
        return dict(total_loss_mean=float(total.mean()), total_loss_std=float(total.std()),
                    global_min=self.l_star, at_global_min=float(np.mean(total - self.l_star < self.tol)))
