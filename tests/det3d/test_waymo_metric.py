"""Waymo AP/APH metric: native IoU, matcher and AP integration; WaymoAPMetric end to end; parity with the official op.

The slow tests run waymo-open-dataset's ``detection_metrics`` op in ``.venv-waymo`` (``bash tools/setup_waymo_env.sh``)
and fail, not skip, when that environment is missing.
"""
from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest

from graddrop_mtl.det3d.evaluation import (
    DetectionArrays,
    WaymoAPMetric,
    WaymoEnvironmentError,
    WaymoEvalConfig,
    WaymoGroundTruth,
    box_iou_matrix,
    evaluate_native,
    mmdet3d_to_waymo_boxes,
    official_available,
    waymo_level,
)
from graddrop_mtl.det3d.evaluation.common import SETUP_COMMAND
from graddrop_mtl.det3d.evaluation.hungarian import kuhn_munkres
from graddrop_mtl.det3d.evaluation.native import heading_accuracy, mean_average_precision
from graddrop_mtl.det3d.evaluation.official import evaluate_official_many
from graddrop_mtl.det3d.evaluation.synthetic import CLASSES, CaseOptions, make_case, make_infos
from graddrop_mtl.det3d.evaluation.waymo_metric import metric_keys


# ---------------------------------------------------------------------------------------------------------------------
# IoU
# ---------------------------------------------------------------------------------------------------------------------
def _inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Points [N, 3] inside a Waymo box (centre, l, w, h, heading)."""
    d = points[:, :2] - box[:2]
    c, s = np.cos(box[6]), np.sin(box[6])
    u = c * d[:, 0] + s * d[:, 1]
    v = -s * d[:, 0] + c * d[:, 1]
    return (np.abs(u) <= box[3] / 2) & (np.abs(v) <= box[4] / 2) & (np.abs(points[:, 2] - box[2]) <= box[5] / 2)


def _sample_in(box: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    local = rng.uniform(-0.5, 0.5, size=(n, 3)) * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    return np.stack([box[0] + c * local[:, 0] - s * local[:, 1], box[1] + s * local[:, 0] + c * local[:, 1],
                     box[2] + local[:, 2]], axis=1)


@pytest.mark.parametrize('box_type', ['bev', '3d'])
def test_iou_matches_brute_force_sampling(box_type):
    rng = np.random.default_rng(3)
    n = 200_000
    for _ in range(12):
        a = np.array([*rng.uniform(-5, 5, 2), rng.uniform(0, 1), *rng.uniform(0.5, 5, 3), rng.uniform(-4, 4)])
        b = a.copy()
        b[:3] += rng.normal(0, 0.6, 3)
        b[3:6] *= rng.uniform(0.6, 1.5, 3)
        b[6] = rng.uniform(-4, 4)
        if box_type == 'bev':
            a2, b2 = a.copy(), b.copy()
            a2[2], a2[5], b2[2], b2[5] = 0, 1, 0, 1  # the volume fraction of unit-height prisms = area fraction
        else:
            a2, b2 = a, b
        frac = _inside(_sample_in(a2, n, rng), b2).mean()
        size_a, size_b = np.prod(a2[3:6]), np.prod(b2[3:6])
        inter = frac * size_a
        expected = inter / (size_a + size_b - inter)
        iou = box_iou_matrix(a[None], b[None], box_type)[0, 0]
        sigma = size_a * np.sqrt(max(frac * (1 - frac), 1e-12) / n) * (size_a + size_b) / (size_a + size_b - inter) ** 2
        assert abs(iou - expected) <= 5 * sigma + 1e-9, (a, b, iou, expected)


def test_iou_exact_cases():
    box = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.4]])
    assert box_iou_matrix(box, box)[0, 0] == pytest.approx(1.0, abs=1e-12)
    flipped = box.copy()
    flipped[0, 6] += np.pi
    assert box_iou_matrix(box, flipped)[0, 0] == pytest.approx(1.0, abs=1e-12)
    a = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 0.0]])
    shifted = a + [1.0, 0, 0, 0, 0, 0, 0]
    assert box_iou_matrix(a, shifted, 'bev')[0, 0] == pytest.approx(6 / 10)
    half_up = a + [0, 0, 1.0, 0, 0, 0, 0]  # BEV identical, half the height overlaps: 8 / (16 + 16 - 8)
    assert box_iou_matrix(a, half_up, 'bev')[0, 0] == pytest.approx(1.0)
    assert box_iou_matrix(a, half_up, '3d')[0, 0] == pytest.approx(8 / 24)
    square = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    assert box_iou_matrix(square, square + [0, 0, 0, 0, 0, 0, np.pi / 2])[0, 0] == pytest.approx(1.0)
    # a square rotated by 45 degrees inside the same square: octagon of area 8 (sqrt(2) - 1)
    octagon = 8 * (np.sqrt(2) - 1)
    assert box_iou_matrix(square, square + [0, 0, 0, 0, 0, 0, np.pi / 4], 'bev')[0, 0] == pytest.approx(
        octagon / (8 - octagon))
    far = a + [10, 0, 0, 0, 0, 0, 0]
    assert box_iou_matrix(a, far)[0, 0] == 0.0
    above = a + [0, 0, 3.0, 0, 0, 0, 0]
    assert box_iou_matrix(a, above, '3d')[0, 0] == 0.0
    tiny = a.copy()
    tiny[0, 4] = 0.005  # waymo: a dimension <= 0.01 m gives IoU 0
    assert box_iou_matrix(a, tiny)[0, 0] == 0.0
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(-2, 2, (20, 3)), rng.uniform(0.5, 3, (20, 3)), rng.uniform(-4, 4, (20, 1))], 1)
    m = box_iou_matrix(boxes, boxes, '3d')
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    assert np.all((m >= 0) & (m <= 1))


def test_mmdet3d_box_conversion_matches_lidar_boxes():
    """Waymo heading = mmdet3d yaw and centre z = bottom z + h / 2: the corners of mmdet3d's LiDARInstance3DBoxes."""
    import torch
    from mmdet3d.structures import LiDARInstance3DBoxes

    boxes = np.array([[1.0, -2.0, -1.5, 4.5, 1.9, 1.6, 0.7], [3.0, 5.0, 0.2, 0.8, 0.6, 1.8, -2.5]], np.float32)
    waymo = mmdet3d_to_waymo_boxes(boxes)
    np.testing.assert_allclose(waymo[:, 2], boxes[:, 2] + boxes[:, 5] / 2)
    corners = LiDARInstance3DBoxes(torch.from_numpy(boxes)).corners.numpy()  # [N, 8, 3]
    for box, c in zip(waymo, corners):
        assert _inside(c.astype(np.float64) * (1 - 1e-6) + box[:3] * 1e-6, box.astype(np.float64)).all()
        np.testing.assert_allclose(c.mean(axis=0), box[:3], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Matcher
# ---------------------------------------------------------------------------------------------------------------------
def _kuhn_munkres_reference(w: np.ndarray) -> list:
    """Plain transcription of waymo's hungarian.cc (no shortcuts): alternating trees from the lowest unmatched row,
    neighbours in insertion order, labels improved when the neighbours run out."""
    n = len(w)
    lx = [max(0, *w[i]) for i in range(n)]
    ly = [0] * n
    row, col = [-1] * n, [-1] * n

    def neighbours(rows, nbr, parent):
        for ii, i in enumerate(rows):
            for j in range(n):
                if j not in nbr and lx[i] + ly[j] == w[i][j]:
                    nbr.append(j)
                    parent.append(ii)

    while -1 in row:
        rows, cols, cols_parent, nbr, nbr_parent = [row.index(-1)], [], [], [], []
        neighbours(rows, nbr, nbr_parent)
        while True:
            if len(nbr) == len(cols):
                a = min(lx[i] + ly[j] - w[i][j] for i in rows for j in range(n) if j not in cols)
                for i in rows:
                    lx[i] -= a
                for j in cols:
                    ly[j] += a
                nbr, nbr_parent = [], []
                neighbours(rows, nbr, nbr_parent)
            pick = next(k for k, j in enumerate(nbr) if j not in cols)
            j = nbr[pick]
            cols.append(j)
            cols_parent.append(nbr_parent[pick])
            if col[j] == -1:
                for k in range(len(cols) - 1, -1, -1):
                    if cols[k] == j:
                        ii = cols_parent[k]
                        i = rows[ii]
                        previous, row[i], col[j] = row[i], j, i
                        j = previous
                        if ii == 0:
                            break
                break
            rows.append(col[j])
            before = len(nbr)
            neighbours(rows[-1:], nbr, nbr_parent)
            nbr_parent[before:] = [len(rows) - 1] * (len(nbr) - before)
    return row


def test_kuhn_munkres_is_optimal_and_breaks_ties_like_the_reference():
    rng = np.random.default_rng(11)
    for trial in range(400):
        n = int(rng.integers(1, 8))
        # sparse weights on a coarse grid: many zero rows/columns and many equal-weight optima
        w = np.where(rng.uniform(size=(n, n)) < 0.45, rng.integers(5, 9, size=(n, n)) * 100_000, 0).astype(np.int64)
        if trial % 3 == 0 and n > 1:
            w[1] = w[0]  # duplicated prediction
        got = kuhn_munkres(w)
        assert sorted(got.tolist()) == list(range(n))
        assert got.tolist() == _kuhn_munkres_reference(w.tolist()), w
        best = max(sum(w[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
        assert sum(w[i, got[i]] for i in range(n)) == best


# ---------------------------------------------------------------------------------------------------------------------
# AP integration, heading accuracy
# ---------------------------------------------------------------------------------------------------------------------
def test_mean_average_precision_hand_examples():
    assert mean_average_precision([1.0], [0.5], 0.05) == pytest.approx(0.5, abs=1e-6)
    # envelope: precision 0.5 from recall 1.0 down to 0.55, 1.0 below 0.5 (trapezoid between 0.55 and 0.5)
    assert mean_average_precision([0.5, 1.0], [1.0, 0.5], 0.05) == pytest.approx(0.225 + 0.0375 + 0.5, abs=1e-6)
    assert mean_average_precision([1.0, 1.0], [0.0, 0.0], 0.05) == 0.0
    assert mean_average_precision([1.0], [1.0], 0.05) == pytest.approx(1.0, abs=1e-6)


def test_heading_accuracy():
    assert heading_accuracy(0.3, 0.3) == pytest.approx(1.0)
    assert heading_accuracy(0.3, 0.3 + np.pi) == pytest.approx(0.0, abs=1e-6)
    assert heading_accuracy(0.0, np.pi / 2) == pytest.approx(0.5, abs=1e-6)
    assert heading_accuracy(3.1, -3.1) == pytest.approx(1 - (2 * np.pi - 6.2) / np.pi, abs=1e-6)
    assert heading_accuracy(7.0, 7.0 - 2 * np.pi) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Native metric semantics
# ---------------------------------------------------------------------------------------------------------------------
def _gt_case(levels=(1, 1, 2, 1)) -> DetectionArrays:
    boxes = np.array([[0, 0, 1, 4.5, 2, 1.6, 0.2], [10, 0, 1, 4.5, 2, 1.6, -1.0], [0, 10, 1, 0.8, 0.8, 1.8, 2.0],
                      [20, 5, 1, 1.8, 0.7, 1.7, 1.0]])
    return DetectionArrays(bbox=boxes, frame_id=[0, 0, 0, 1], type=[1, 1, 2, 4], difficulty=levels)


def _pred_from(gt: DetectionArrays, **overrides) -> DetectionArrays:
    fields = dict(bbox=gt.bbox.copy(), frame_id=gt.frame_id, type=gt.type, score=np.full(len(gt), 0.9),
                  overlap_nlz=np.zeros(len(gt), bool))
    fields.update(overrides)
    return DetectionArrays(**fields)


def _aps(results, box_type='3d'):
    return {k: (round(v.ap, 5), round(v.aph, 5)) for k, v in results[box_type].items()}


def test_native_metric_semantics():
    cfg = WaymoEvalConfig()
    gt = _gt_case()
    perfect = evaluate_native(_pred_from(gt), gt, cfg)
    for box_type in ('3d', 'bev'):
        assert all(v == (1.0, 1.0) for v in _aps(perfect, box_type).values())
    flipped_boxes = gt.bbox.copy()
    flipped_boxes[:, 6] += np.pi
    flipped = evaluate_native(_pred_from(gt, bbox=flipped_boxes), gt, cfg)
    assert all(v == (1.0, 0.0) for v in _aps(flipped).values())   # same IoU, heading accuracy 0
    wrong_class = evaluate_native(_pred_from(gt, type=[2, 1, 1, 4]), gt, cfg)
    assert _aps(wrong_class)[(2, 1)] == (0.0, 0.0) and _aps(wrong_class)[(4, 1)] == (1.0, 1.0)
    # a false positive far away: precision 0.5 at its score; flagged as overlapping a no-label zone it is ignored
    extra = DetectionArrays.concatenate([_pred_from(gt), DetectionArrays(
        bbox=[[50, 50, 1, 4.5, 2, 1.6, 0]], frame_id=[0], type=[1], score=[0.95], overlap_nlz=[False])])
    with_fp = evaluate_native(extra, gt, cfg)
    assert with_fp['3d'][(1, 1)].ap < 1.0
    extra.overlap_nlz[-1] = True
    assert _aps(evaluate_native(extra, gt, cfg))[(1, 1)] == (1.0, 1.0)
    # a vehicle shifted along its heading by d: IoU (l - d) / (l + d); 1 m -> 0.636 < 0.7 (an FP and an FN: AP
    # 0.25 = precision 0.5 up to recall 0.5), 0.3 m -> 0.875 (still a TP)
    for d, ap in ((1.0, 0.25), (0.3, 1.0)):
        shifted_boxes = gt.bbox.copy()
        shifted_boxes[0, :2] += d * np.array([np.cos(0.2), np.sin(0.2)])
        shifted = evaluate_native(_pred_from(gt, bbox=shifted_boxes), gt, cfg)
        assert shifted['3d'][(1, 1)].ap == pytest.approx(ap, abs=1e-6)


def test_native_difficulty_levels():
    cfg = WaymoEvalConfig()
    gt = _gt_case(levels=(1, 2, 1, 1))  # vehicle 0 LEVEL_1, vehicle 1 LEVEL_2
    # predictions of type 3 (sign) are not reported and never match a vehicle
    only_l1 = evaluate_native(_pred_from(gt, type=[1, 3, 2, 4]), gt, cfg)
    # vehicle 1 missed: not a false negative at LEVEL_1, one at LEVEL_2
    assert _aps(only_l1)[(1, 1)] == (1.0, 1.0)
    assert _aps(only_l1)[(1, 2)] == (0.5, 0.5)
    only_l2 = evaluate_native(_pred_from(gt, type=[3, 1, 2, 4]), gt, cfg)
    # the matched LEVEL_2 vehicle is a true positive at LEVEL_1 too; vehicle 0 is the LEVEL_1 false negative
    assert only_l2['3d'][(1, 1)].num_tps[0] == 1 and only_l2['3d'][(1, 1)].num_fns[0] == 1
    assert _aps(only_l2)[(1, 1)] == (0.5, 0.5)


def test_waymo_level_rule():
    assert waymo_level(0, 0) == 0 and waymo_level(2, 0) == 0        # no points: dropped
    assert waymo_level(0, 5) == 2 and waymo_level(0, 6) == 1        # not annotated: by points
    assert waymo_level(1, 3) == 1 and waymo_level(2, 100) == 2      # annotated: kept
    with pytest.raises(ValueError, match='difficulty 3'):
        waymo_level(3, 10)


# ---------------------------------------------------------------------------------------------------------------------
# WaymoAPMetric
# ---------------------------------------------------------------------------------------------------------------------
def _data_samples(outputs):
    """Det3DDataSamples as the model returns them (the evaluator turns them into dicts)."""
    import torch
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData

    samples = []
    for out in outputs:
        sample = Det3DDataSample(metainfo=dict(sample_idx=out['sample_idx'], context_name=out['context_name'],
                                               timestamp=out['timestamp']))
        sample.pred_instances_3d = InstanceData(
            bboxes_3d=LiDARInstance3DBoxes(torch.from_numpy(out['bboxes_3d']).reshape(-1, 7)),
            scores_3d=torch.from_numpy(out['scores_3d']), labels_3d=torch.from_numpy(out['labels_3d']),
            overlap_nlz=torch.from_numpy(out['overlap_nlz']))
        samples.append(sample)
    return samples


def _run_metric(tmp_path, seed, out_file=None, **kwargs):
    """Evaluates the model outputs of ``make_infos(seed)`` through mmengine's Evaluator in mmdet3d's scope."""
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope

    infos, outputs, pred, gt = make_infos(seed)
    ann_file = tmp_path / 'waymo_infos_val.pkl'
    with open(ann_file, 'wb') as f:
        pickle.dump(infos, f)
    out_file = str(tmp_path / 'ap.json') if out_file is None else out_file
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        evaluator = Evaluator(dict(type='WaymoAPMetric', ann_file=str(ann_file), out_file=out_file, **kwargs))
    evaluator.dataset_meta = dict(classes=CLASSES)
    samples = _data_samples(outputs)
    for k in range(0, len(samples), 3):
        evaluator.process(samples[k:k + 3], data_batch={})
    return evaluator.metrics[0], evaluator.evaluate(len(samples)), pred, gt


def test_metric_native_end_to_end(tmp_path):
    from mmengine.logging import MMLogger

    work_dir = tmp_path / 'work_dir'
    (work_dir / '20260101_000000').mkdir(parents=True)
    MMLogger.get_instance('test_waymo_metric', log_file=str(work_dir / '20260101_000000' / '20260101_000000.log'))
    metric, metrics, pred, gt = _run_metric(tmp_path, seed=5, out_file='waymo_ap.json', backend='native')
    assert isinstance(metric, WaymoAPMetric)
    expected = metric_keys(evaluate_native(pred, gt, metric.eval_config()), metric.eval_config())
    assert set(metrics) == {f'Waymo metric/{k}' for k in expected}
    for key, value in expected.items():
        assert metrics[f'Waymo metric/{key}'] == value
    for name in ('Vehicle', 'Pedestrian', 'Cyclist', 'Overall'):   # mmdet3d WaymoMetric's key names
        for level in ('L1', 'L2'):
            for suffix in ('mAP', 'mAPH', 'BEV mAP', 'BEV mAPH'):
                assert f'Waymo metric/{name}/{level} {suffix}' in metrics
    saved = json.loads((work_dir / 'waymo_ap.json').read_text())   # the JSON lands in the runner's work dir
    assert saved['backend'] == 'native' and saved['metrics'] == expected
    assert len(saved['breakdowns']['bev']['Cyclist/L2']['precision']) == 101
    assert 0.0 < metrics['Waymo metric/Overall/L2 mAP'] < 1.0


def test_ground_truth_errors_name_file_and_key(tmp_path):
    infos, _, _, _ = make_infos(1)
    del infos['data_list'][2]['instances'][0]['num_lidar_pts']
    path = tmp_path / 'bad.pkl'
    with open(path, 'wb') as f:
        pickle.dump(infos, f)
    with pytest.raises(KeyError, match=r"bad\.pkl: data_list\[2\]\['instances'\]\[0\] has no 'num_lidar_pts'"):
        WaymoGroundTruth(str(path))
    infos, _, _, _ = make_infos(1)
    with open(path, 'wb') as f:
        pickle.dump(infos, f)
    truth = WaymoGroundTruth(str(path))
    with pytest.raises(KeyError, match='no frame with context_name'):
        truth.find('segment-unknown', 1)


def test_backend_selection_and_missing_environment(tmp_path):
    with pytest.raises(ValueError, match='backend'):
        WaymoAPMetric(ann_file='x.pkl', backend='tf')
    auto = WaymoAPMetric(ann_file='x.pkl', backend='auto', waymo_venv=str(tmp_path / 'missing'))
    assert auto.resolved_backend() == 'native'
    with pytest.raises(WaymoEnvironmentError, match=SETUP_COMMAND.replace('.', r'\.')):
        _run_metric(tmp_path, seed=2, backend='official', waymo_venv=str(tmp_path / 'missing'))


# ---------------------------------------------------------------------------------------------------------------------
# Parity with the official op (slow: TensorFlow in .venv-waymo)
# ---------------------------------------------------------------------------------------------------------------------
def _require_official():
    if not official_available():
        pytest.fail(f'The official Waymo environment (.venv-waymo) is missing: create it with `{SETUP_COMMAND}`.')


#: Seeded, broad cases: the default generator, crowded frames with many duplicates, and all four types reported.
PARITY_CASES = ([(seed, CaseOptions(), (1, 2, 4)) for seed in range(16)]
                + [(100 + seed, CaseOptions(max_gt_per_frame=30, p_duplicate=0.5, num_frames=5), (1, 2, 4))
                   for seed in range(6)]
                + [(200 + seed, CaseOptions(), (1, 2, 3, 4)) for seed in range(4)])


def _assert_close(native, official, where, atol=1e-3):
    for box_type in native:
        for key, a in native[box_type].items():
            b = official[box_type][key]
            tag = f'{where} {box_type} {key}'
            assert abs(a.ap - b.ap) <= atol, (tag, 'AP', a.ap, b.ap)
            assert abs(a.aph - b.aph) <= atol, (tag, 'APH', a.aph, b.aph)
            for field in ('precision', 'recall', 'precision_ha', 'recall_ha'):
                np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=atol, err_msg=f'{tag} {field}')
            if b.num_tps:  # counts are reported by the installed op (waymo-open-dataset >= 1.5)
                for field in ('num_tps', 'num_fps', 'num_fns'):
                    assert getattr(a, field) == getattr(b, field), (tag, field)


@pytest.mark.slow
def test_native_matches_official_on_random_cases():
    _require_official()
    cases = []
    for seed, opts, types in PARITY_CASES:
        pred, gt = make_case(seed, opts)
        cases.append((pred, gt, WaymoEvalConfig(types=types)))
    pred, gt = make_case(3)
    no_pred = DetectionArrays(np.zeros((0, 7)), np.zeros(0), np.zeros(0), score=np.zeros(0), overlap_nlz=np.zeros(0))
    no_gt = DetectionArrays(np.zeros((0, 7)), np.zeros(0), np.zeros(0), difficulty=np.zeros(0))
    edge_cases = [(no_pred, gt, WaymoEvalConfig()), (pred, no_gt, WaymoEvalConfig()),
                  (no_pred, no_gt, WaymoEvalConfig())]
    official, _ = evaluate_official_many(cases + edge_cases)
    assert len(official) == len(cases) + len(edge_cases)
    for k, ((p, g, cfg), off) in enumerate(zip(edge_cases, official[len(cases):])):
        _assert_close(evaluate_native(p, g, cfg), off, f'edge case {k}')
    features = dict(pred_only_frames=0, gt_only_frames=0, level2=0, score_ties=0, nlz=0, other_class=0)
    for (seed, _, _), (pred, gt, cfg), off in zip(PARITY_CASES, cases, official):
        native = evaluate_native(pred, gt, cfg)
        _assert_close(native, off, f'seed {seed}')
        keys_native, keys_official = metric_keys(native, cfg), metric_keys(off, cfg)
        assert keys_native.keys() == keys_official.keys()
        for key in keys_native:
            assert abs(keys_native[key] - keys_official[key]) <= 1e-3, (seed, key)
        features['pred_only_frames'] += len(np.setdiff1d(pred.frame_id, gt.frame_id))
        features['gt_only_frames'] += len(np.setdiff1d(gt.frame_id, pred.frame_id))
        features['level2'] += int((gt.difficulty == 2).sum())
        features['score_ties'] += len(pred) - len(set(zip(pred.frame_id.tolist(), pred.score.tolist())))
        features['nlz'] += int(pred.overlap_nlz.sum())
        features['other_class'] += int((~np.isin(pred.type, cfg.types)).sum() + (~np.isin(gt.type, cfg.types)).sum())
    assert all(v > 0 for v in features.values()), features


@pytest.mark.slow
def test_metric_official_backend_matches_native(tmp_path):
    _require_official()
    (tmp_path / 'official').mkdir()
    (tmp_path / 'native').mkdir()
    _, official, _, _ = _run_metric(tmp_path / 'official', seed=9, backend='official')
    _, native, _, _ = _run_metric(tmp_path / 'native', seed=9, backend='native')
    assert official.keys() == native.keys()
    for key in native:
        assert abs(native[key] - official[key]) <= 1e-3, key
    assert json.loads((tmp_path / 'official' / 'ap.json').read_text())['backend'] == 'official'


@pytest.mark.slow
def test_metric_reads_the_converters_infos(synthetic_waymo, tmp_path):
    """The converter's ``waymo_infos_val.pkl`` (``categories`` metainfo, int sample_idx) as ground truth: predictions
    equal to the labels score AP = APH = 1, reversed headings APH = 0."""
    import mmengine
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope

    ann_file = synthetic_waymo / 'kitti_format' / 'waymo_infos_val.pkl'
    infos = mmengine.load(str(ann_file))
    truth = WaymoGroundTruth(str(ann_file))
    assert sum(len(f.types) for f in truth.frames) == sum(
        sum(inst['num_lidar_pts'] > 0 for inst in s['instances']) for s in infos['data_list'])
    present = {truth.class_names[inst['bbox_label_3d']] for s in infos['data_list'] for inst in s['instances']}
    for flip, aph in ((0.0, 1.0), (np.pi, 0.0)):
        outputs = []
        for s in infos['data_list']:
            boxes = np.array([inst['bbox_3d'] for inst in s['instances']], np.float32).reshape(-1, 7)
            boxes[:, 6] += flip
            n = len(boxes)
            outputs.append(dict(sample_idx=s['sample_idx'], context_name=s['context_name'], timestamp=s['timestamp'],
                                bboxes_3d=boxes, scores_3d=np.full(n, 0.8, np.float32),
                                labels_3d=np.array([inst['bbox_label_3d'] for inst in s['instances']], np.int64),
                                overlap_nlz=np.zeros(n, bool)))
        with DefaultScope.overwrite_default_scope('mmdet3d'):
            evaluator = Evaluator(dict(type='WaymoAPMetric', ann_file=str(ann_file), backend='native',
                                       out_file=str(tmp_path / 'ap.json')))
        evaluator.dataset_meta = dict(classes=('Car', 'Pedestrian', 'Cyclist'))
        evaluator.process(_data_samples(outputs), data_batch={})
        metrics = evaluator.evaluate(len(outputs))
        for name in present:
            report = 'Vehicle' if name == 'Car' else name
            for level in ('L1', 'L2'):
                assert metrics[f'Waymo metric/{report}/{level} mAP'] == pytest.approx(1.0, abs=1e-6)
                assert metrics[f'Waymo metric/{report}/{level} BEV mAPH'] == pytest.approx(aph, abs=1e-6)


STOCK_CAR = 'pointpillars/pointpillars_hv_secfpn_sbn-all_16xb2-2x_waymoD5-3d-car.py'


def stock_mmdet3d_config(name: str):
    """A config of the installed mmdet3d package (its ``.mim/configs``), unmodified."""
    from pathlib import Path

    import mmdet3d
    from mmengine.config import Config
    return Config.fromfile(str(Path(mmdet3d.__file__).parent / '.mim' / 'configs' / name))


def test_ground_truth_finds_frames_by_point_cloud_file(tmp_path):
    infos, _, _, _ = make_infos(1)
    for k, s in enumerate(infos['data_list']):
        s['lidar_points'] = dict(lidar_path=f'{1000000 + k}.bin')
    path = tmp_path / 'infos.pkl'
    path.write_bytes(pickle.dumps(infos))
    truth = WaymoGroundTruth(str(path))
    last = len(infos['data_list']) - 1
    assert truth.find(lidar_path=f'data/waymo/kitti_format/training/velodyne/{1000000 + last}.bin') == last
    s = infos['data_list'][1]     # (context_name, timestamp) first, when given
    assert truth.find(s['context_name'], s['timestamp'], lidar_path=f'{1000000 + last}.bin') == 1
    with pytest.raises(KeyError, match=r"no frame with the point cloud file '999\.bin'"):
        truth.find(lidar_path='velodyne/999.bin', sample_idx=0)
    with pytest.raises(KeyError, match=r"sample 0 carries neither context_name/timestamp nor lidar_path"):
        truth.find(sample_idx=0)
    infos['data_list'][0]['lidar_points'] = dict(lidar_path=f'{1000000 + last}.bin')
    path.write_bytes(pickle.dumps(infos))
    with pytest.raises(KeyError, match='several frames have the point cloud file'):
        WaymoGroundTruth(str(path)).find(lidar_path=f'{1000000 + last}.bin')


@pytest.mark.parametrize('load_interval', [1, 2])
def test_metric_with_the_stock_car_test_pipeline(synthetic_waymo, tmp_path, load_interval):
    """mmdet3d 1.4's stock car config (``Pack3DDetInputs(keys=['points'])``, default meta keys: no context_name or
    timestamp, and ``sample_idx`` replaced by the dataset position) feeds WaymoAPMetric through mmengine's Evaluator:
    predictions equal to each frame's cars score AP = 1 (a frame mix-up would not), also when ``load_interval``
    makes dataset positions differ from info positions."""
    import copy

    import mmdet3d.datasets  # noqa: F401  (registers WaymoDataset and the transforms)
    import torch
    from mmdet3d.registry import DATASETS
    from mmdet3d.structures import LiDARInstance3DBoxes
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData

    cfg = stock_mmdet3d_config(STOCK_CAR)
    root = str(synthetic_waymo / 'kitti_format') + '/'
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.update(data_root=root, load_interval=load_interval)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        dataset = DATASETS.build(ds_cfg)
        evaluator = Evaluator(dict(type='WaymoAPMetric', ann_file=root + 'waymo_infos_val.pkl', backend='native',
                                   out_file=None))
    evaluator.dataset_meta = dataset.metainfo
    assert len(dataset) == len(range(0, 3, load_interval))
    cars = 0
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        assert 'context_name' not in sample.metainfo and sample.sample_idx == i   # what survives: lidar_path
        ann = dataset.get_data_info(i)['eval_ann_info']
        keep = ann['gt_labels_3d'] == 0
        boxes = ann['gt_bboxes_3d'].tensor[torch.from_numpy(keep)]
        cars += len(boxes)
        sample.pred_instances_3d = InstanceData(bboxes_3d=LiDARInstance3DBoxes(boxes),
                                                scores_3d=torch.full((len(boxes),), 0.9),
                                                labels_3d=torch.zeros(len(boxes), dtype=torch.long))
        evaluator.process([sample], data_batch={})
    assert cars > 0
    metrics = evaluator.evaluate(len(dataset))
    assert metrics['Waymo metric/Vehicle/L1 mAP'] == pytest.approx(1.0, abs=1e-6)
    assert metrics['Waymo metric/Vehicle/L2 BEV mAPH'] == pytest.approx(1.0, abs=1e-6)
