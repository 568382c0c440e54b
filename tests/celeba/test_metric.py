import math

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator

from graddrop_mtl.evaluation.celeba_metric import CelebAMetric, bce_with_logits, f1_max
from graddrop_mtl.registry import METRICS


def _logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


def test_f1_max_hand_computed():
    # scores sorted: 0.9(+) 0.8(-) 0.7(+) 0.2(+) 0.1(-); 3 positives
    scores = [0.8, 0.1, 0.9, 0.2, 0.7]
    labels = [0, 0, 1, 1, 1]
    # cut after k=1: TP 1 -> 2/(1+3)=0.5; k=2: TP 1 -> 2/5; k=3: TP 2 -> 4/6; k=4: TP 3 -> 6/7; k=5: 6/8
    assert f1_max(scores, labels) == pytest.approx(6 / 7)


def test_f1_max_ties_are_not_split():
    # Both images score 0.5: a threshold cannot separate them, so F1 = 2*1/(2+1), not 1.
    assert f1_max([0.5, 0.5], [1, 0]) == pytest.approx(2 / 3)
    assert f1_max([0.6, 0.5], [1, 0]) == pytest.approx(1.0)


def test_f1_max_no_positive_is_nan():
    assert math.isnan(f1_max([0.3, 0.9], [0, 0]))


def test_bce_with_logits_matches_torch():
    z = np.array([-30.0, -2.0, 0.0, 1.5, 40.0])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(y), reduction='none')
    np.testing.assert_allclose(bce_with_logits(z, y), ref.numpy(), rtol=1e-12)


def _samples(probs, labels):
    return [dict(pred_logit=torch.tensor(_logit(p)), pred_score=torch.tensor(p), gt_label=torch.tensor(y))
            for p, y in zip(probs, labels)]


def test_metric_values_on_hand_made_predictions():
    # 4 images, 2 attributes
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.3], [0.2, 0.45]])
    labels = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    metric = CelebAMetric(per_attribute=True)
    metric.dataset_meta = dict(attributes=('Smiling', 'Young'))
    metric.process({}, _samples(probs[:2], labels[:2]))
    metric.process({}, _samples(probs[2:], labels[2:]))
    out = metric.compute_metrics(metric.results)
    # attribute 0: predictions 1,0,1,0 vs 1,1,0,0 -> 2 errors of 4; attribute 1: 0,1,0,0 vs 0,0,0,1 -> 2 errors
    assert out['error_rate'] == pytest.approx(50.0)
    assert out['error_rate/Smiling'] == pytest.approx(50.0)
    # F1max attribute 0: sorted 0.9(+) 0.7(-) 0.4(+) 0.2(-), 2 positives: k=1 2/3, k=2 2/4, k=3 4/5, k=4 4/6
    # attribute 1: sorted 0.6(-) 0.45(+) 0.3(-) 0.2(-), 1 positive: k=1 0, k=2 2/3, k=3 2/4, k=4 2/5
    assert out['f1max/Smiling'] == pytest.approx(80.0)
    assert out['f1max/Young'] == pytest.approx(200 / 3)
    assert out['f1max'] == pytest.approx((80.0 + 200 / 3) / 2)
    bce = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert out['loss'] == pytest.approx(bce.mean(0).sum())
    # positive fractions 0.5 and 0.25 -> majority errors 50% and 25%
    assert out['majority_error_rate'] == pytest.approx(37.5)


def test_metric_skips_attributes_without_positives_in_f1max():
    probs = np.array([[0.9, 0.2], [0.1, 0.6]])
    labels = np.array([[1.0, 0.0], [0.0, 0.0]])
    out = CelebAMetric().metrics_from_arrays(_logit(probs), labels)
    assert out['f1max'] == pytest.approx(100.0)
    assert out['error_rate'] == pytest.approx(25.0)


def test_threshold_option():
    probs = np.array([[0.6], [0.7]])
    labels = np.array([[0.0], [1.0]])
    assert CelebAMetric().metrics_from_arrays(_logit(probs), labels)['error_rate'] == pytest.approx(50.0)
    assert CelebAMetric(thr=0.65).metrics_from_arrays(_logit(probs), labels)['error_rate'] == pytest.approx(0.0)
    with pytest.raises(ValueError, match='thr'):
        CelebAMetric(thr=1.0)


def test_evaluator_prefix_and_registry():
    evaluator = Evaluator(METRICS.build(dict(type='CelebAMetric')))
    rng = np.random.default_rng(0)
    labels = (rng.random((6, 40)) < 0.3).astype(np.float64)
    probs = np.clip(labels * 0.8 + 0.1, 0.01, 0.99)      # perfect ranking, all on the right side of 0.5
    evaluator.process(_samples(probs, labels), {})
    out = evaluator.evaluate(6)
    assert set(out) == {'celeba/error_rate', 'celeba/f1max', 'celeba/loss', 'celeba/majority_error_rate'}
    assert out['celeba/error_rate'] == pytest.approx(0.0)
    assert out['celeba/f1max'] == pytest.approx(100.0)


def test_process_rejects_shape_mismatch():
    metric = CelebAMetric()
    with pytest.raises(ValueError, match='pred_logit'):
        metric.process({}, [dict(pred_logit=torch.zeros(40), gt_label=torch.zeros(39))])
    with pytest.raises(KeyError, match='gt_label'):
        metric.process({}, [dict(pred_logit=torch.zeros(40))])
