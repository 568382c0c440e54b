"""TransferMetric on hand-made predictions."""
from __future__ import annotations

import math
import re

import pytest
import torch

from graddrop_mtl.evaluation.transfer_metric import TransferMetric


def pred(logits, label, domain=1):
    return dict(logits=torch.tensor(logits, dtype=torch.float32), gt_label=label, domain=domain,
                pred_label=int(torch.tensor(logits).argmax()))


def test_top1_error_and_cross_entropy_by_hand():
    metric = TransferMetric()
    log3 = math.log(3.0)
    samples = [
        pred([0.0, log3, 0.0, 0.0], 1),      # softmax (1/6, 1/2, 1/6, 1/6): correct, CE = ln 2
        pred([0.0, 0.0, 0.0, 0.0], 2),       # uniform: arg-max is class 0 (first on ties), wrong, CE = ln 4
        pred([5.0, 0.0, 0.0, 0.0], 3),       # wrong, CE = ln(e^5 + 3) - 0
        pred([0.0, 0.0, 2.0, 0.0], 2),       # correct, CE = ln(e^2 + 3) - 2
        pred([9.0] + [0.0] * 999, 7, domain=0),   # ImageNet sample: ignored
    ]
    metric.process({}, samples[:2])
    metric.process({}, samples[2:])
    out = metric.evaluate(4)
    expected_loss = (math.log(2) + math.log(4) + math.log(math.exp(5) + 3) + math.log(math.exp(2) + 3) - 2) / 4
    assert out['cifar100/top1_error'] == pytest.approx(50.0)
    assert out['cifar100/cross_entropy'] == pytest.approx(expected_loss, rel=1e-6)
    assert out['cifar100/num_samples'] == 4
    # mmengine's LogProcessor averages logged keys matching loss|time|grad_norm over past evaluations: avoid them
    assert not any(re.search(r'loss|time|grad_norm', key) for key in out)


def test_other_domain_and_prefix():
    metric = TransferMetric(domain=0, prefix='imagenet')
    metric.process({}, [pred([1.0, 0.0], 0, domain=0), pred([1.0, 0.0], 1, domain=1)])
    out = metric.evaluate(1)
    assert out == {'imagenet/top1_error': 0.0, 'imagenet/cross_entropy': pytest.approx(math.log(1 + math.exp(-1))),
                   'imagenet/num_samples': 1.0}


def test_no_samples_of_the_domain_is_an_error():
    metric = TransferMetric(domain=1)
    metric.process({}, [pred([1.0, 0.0], 0, domain=0)])
    with pytest.raises(ValueError, match=r'no predictions of domain 1 .*domains seen: \[0\]'):
        metric.evaluate(1)


def test_bad_predictions():
    metric = TransferMetric()
    with pytest.raises(KeyError, match="lacks 'logits'"):
        metric.process({}, [dict(gt_label=1, domain=1)])
    with pytest.raises(ValueError, match='label 5 outside the 3 logits'):
        metric.process({}, [pred([0.0, 1.0, 2.0], 5)])
