"""CelebA metrics of the rebuttal's Table I: mean error rate, F1max and test loss over the 40 attributes."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS


def bce_with_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Elementwise binary cross-entropy of logits against 0/1 labels (numerically stable)."""
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 over all decision thresholds for one attribute (a fraction in [0, 1]).

    Thresholds run over the distinct scores: predicting positive for ``score >= t``, F1 = 2 TP / (2 TP + FP + FN).
    Images with equal scores are always on the same side. NaN when ``labels`` has no positive (F1 undefined).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float('nan')
    order = np.argsort(-scores, kind='stable')
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(s) + 1)                 # predicted positives when cutting after position k
    last_of_tie = np.r_[s[1:] != s[:-1], True]    # only cut between distinct scores
    f1 = 2 * tp[last_of_tie] / (k[last_of_tie] + n_pos)
    return float(f1.max())


@METRICS.register_module()
class CelebAMetric(BaseMetric):
    r"""Mean error rate, F1max and test loss over the CelebA attributes (rebuttal Table I), plus the majority-class
    error rate of the evaluated split for reference.

    For attributes :math:`a = 1..A` (40) and images :math:`n = 1..N` with logits :math:`z_{na}`, scores
    :math:`s_{na} = \sigma(z_{na})` and 0/1 labels :math:`y_{na}`:

    * ``error_rate`` (percent): :math:`\frac{100}{A} \sum_a \frac{1}{N} \sum_n \mathbb 1[\mathbb 1[s_{na} > t]
      \neq y_{na}]` with the threshold :math:`t` = ``thr`` (0.5).
    * ``f1max`` (percent): for each attribute the best F1 score over all decision thresholds (:func:`f1_max`),
      averaged over the attributes that have at least one positive image in the split (F1 is undefined otherwise).
    * ``loss``: the test loss, :math:`\sum_a \frac1N \sum_n \mathrm{BCE}(z_{na}, y_{na})`, i.e. the sum of the 40
      mean task losses the model trains on.
    * ``majority_error_rate`` (percent): the error rate of predicting, for each attribute, the class that is in
      the majority *in the evaluated split*: :math:`\frac{100}{A} \sum_a \min(p_a, 1 - p_a)`, :math:`p_a` the
      positive fraction. A trained model must beat it to have learnt anything.
    * with ``per_attribute=True`` also ``error_rate/<attribute>`` and ``f1max/<attribute>``.

    Keys get the prefix ``celeba/`` (e.g. ``'celeba/error_rate'``, the key a ``CheckpointHook`` saves the best
    checkpoint on, with ``rule='less'``).

    Expects the model's ``predict`` output: one dict per image with ``pred_logit`` ``[A]`` and ``gt_label`` ``[A]``.

    Args:
        thr: decision threshold on the sigmoid score for the error rate.
        per_attribute: also report each attribute's error rate and F1max.
        collect_device, prefix, collect_dir: as for :class:`mmengine.evaluator.BaseMetric`.
    """

    default_prefix = 'celeba'

    def __init__(self, thr: float = 0.5, per_attribute: bool = False, collect_device: str = 'cpu',
                 prefix: str | None = None, collect_dir: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if not 0.0 < thr < 1.0:
            raise ValueError(f'thr must lie in (0, 1), got {thr}')
        self.thr = float(thr)
        self.per_attribute = per_attribute

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'gt_label' not in sample:
                raise KeyError('CelebAMetric needs gt_label in the predictions (evaluate a split with labels)')
            logit = torch.as_tensor(sample['pred_logit']).detach().float().cpu().numpy()
            label = torch.as_tensor(sample['gt_label']).detach().float().cpu().numpy()
            if logit.shape != label.shape or logit.ndim != 1:
                raise ValueError(f'pred_logit {logit.shape} and gt_label {label.shape} must both be [num_attributes]')
            self.results.append((logit, label))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            raise ValueError('CelebAMetric got no predictions (is the evaluated split empty?)')
        logits = np.stack([r[0] for r in results]).astype(np.float64)
        labels = np.stack([r[1] for r in results]).astype(np.float64)
        names = self._attribute_names(logits.shape[1])
        return self.metrics_from_arrays(logits, labels, names)

    def metrics_from_arrays(self, logits: np.ndarray, labels: np.ndarray,
                            names: Sequence[str] | None = None) -> dict[str, float]:
        """The metrics (without prefix) of logits and 0/1 labels, both ``[N, A]``."""
        labels = (labels > 0.5).astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        errors = ((scores > self.thr) != (labels > 0.5)).mean(0)
        f1 = np.array([f1_max(scores[:, a], labels[:, a]) for a in range(logits.shape[1])])
        pos = labels.mean(0)
        out = dict(error_rate=float(errors.mean() * 100),
                   f1max=float(np.nanmean(f1) * 100) if np.isfinite(f1).any() else float('nan'),
                   loss=float(bce_with_logits(logits, labels).mean(0).sum()),
                   majority_error_rate=float(np.minimum(pos, 1 - pos).mean() * 100))
        if self.per_attribute:
            names = names or [str(a) for a in range(logits.shape[1])]
            for a, name in enumerate(names):
                out[f'error_rate/{name}'] = float(errors[a] * 100)
                out[f'f1max/{name}'] = float(f1[a] * 100)
        return out

    def _attribute_names(self, n: int) -> list[str] | None:
        meta = self.dataset_meta or {}
        names = meta.get('attributes')
        return list(names) if names is not None and len(names) == n else None
