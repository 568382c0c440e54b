"""Metric of the ImageNet -> CIFAR-100 transfer experiment (appendix A.5, Table 5): top-1 error and test loss."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS


@METRICS.register_module()
class TransferMetric(BaseMetric):
    """Top-1 error (%) and mean cross-entropy of the samples of one domain (CIFAR-100 by default).

    Reads the predictions of :class:`~graddrop_mtl.models.densenet.DenseNetTransfer` (one dict per sample with
    ``logits``, ``gt_label`` and ``domain``); samples of other domains are ignored. The loss is the cross-entropy
    of the logits, ``logsumexp(logits) - logits[gt_label]``, averaged over samples (the paper's "test loss"); a
    sample counts as correct when the arg-max of its logits (the first one on ties) is its label.

    Reports ``<prefix>/top1_error`` (%), ``<prefix>/cross_entropy`` (the test loss) and ``<prefix>/num_samples``
    (the number of samples evaluated, as a float). The loss is deliberately not named ``loss``: mmengine's
    ``LogProcessor`` averages every logged key matching ``loss|time`` over its last 10 values, which would blend the
    validation losses of successive evaluations in the logs.

    Args:
        domain: the domain id to evaluate (1: CIFAR-100, see :data:`graddrop_mtl.datasets.cifar_transfer.DOMAINS`).
        prefix: metric-name prefix (default ``'cifar100'``).
        collect_device: as for ``BaseMetric``.
    """

    default_prefix = 'cifar100'

    def __init__(self, domain: int = 1, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.domain = int(domain)
        self._seen_domains: set[int] = set()

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            for key in ('logits', 'gt_label', 'domain'):
                if key not in sample:
                    raise KeyError(f'TransferMetric: a prediction lacks {key!r} (it has {sorted(sample)})')
            domain = int(sample['domain'])
            self._seen_domains.add(domain)
            if domain != self.domain:
                continue
            logits = torch.as_tensor(sample['logits']).detach().double().reshape(-1)
            label = int(sample['gt_label'])
            if not 0 <= label < logits.numel():
                raise ValueError(f'TransferMetric: label {label} outside the {logits.numel()} logits')
            loss = float(torch.logsumexp(logits, 0) - logits[label])
            self.results.append((loss, int(torch.argmax(logits)) == label))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            seen, self._seen_domains = sorted(self._seen_domains), set()
            raise ValueError(f'TransferMetric: no predictions of domain {self.domain} to evaluate (domains seen: '
                             f'{seen})')
        self._seen_domains = set()
        losses = np.array([r[0] for r in results], dtype=np.float64)
        correct = np.array([r[1] for r in results], dtype=bool)
        return dict(top1_error=float(100.0 * (1.0 - correct.mean())), cross_entropy=float(losses.mean()),
                    num_samples=float(len(results)))   # float: mmengine logs only float scalars to json
