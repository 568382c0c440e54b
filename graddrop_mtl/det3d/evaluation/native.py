"""The ``native`` backend: Waymo's detection AP/APH with NumPy and Numba, no TensorFlow.

It follows waymo-open-dataset's C++ metric (``metrics/detection_metrics.cc``, ``matcher.cc``, ``metrics_utils.cc``)
step by step, for the ``OBJECT_TYPE`` breakdown and the ``TYPE_HUNGARIAN`` matcher:

* frames are independent; within a frame each Waymo type is matched separately (predictions of another type never
  match, so a prediction of the wrong class is a false positive of its own class);
* for every score cutoff the predictions with ``score >= cutoff`` (in their input order) are matched to all ground
  truths of the frame and type by :func:`~.hungarian.kuhn_munkres` on the quantised IoUs (pairs below the class
  IoU threshold cannot match);
* per difficulty level L: a matched prediction is a TP (its heading accuracy ``1 - |heading error| / pi`` is added
  to ``sum_ha``) whatever the level of its ground truth; an unmatched prediction is an FP unless it overlaps a
  no-label zone; an unmatched ground truth is an FN when its level is <= L;
* counts are summed over frames; precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, the heading-weighted
  precision ``sum_ha / (tp + fp)``; AP is the area under the precision envelope sampled at least every
  ``desired_recall_delta`` of recall (``ComputeMeanAveragePrecision``), in float32 like the C++ code.

Identical prediction subsets (consecutive cutoffs with no score between them) are matched once.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numba
import numpy as np

from .common import BreakdownResult, DetectionArrays, EvalResults, WaymoEvalConfig
from .hungarian import kuhn_munkres
from .iou import box_iou

_TWO_PI = 2.0 * np.pi


@numba.njit(cache=True)
def _normalize_angle(a):
    """Wrap to [-pi, pi) (``NormalizeAngle`` of waymo's ``metrics_utils.cc``)."""
    r = a + np.pi
    m = r - np.trunc(r / _TWO_PI) * _TWO_PI
    if m < 0.0:
        m = m + _TWO_PI
        if m >= _TWO_PI:
            m = 0.0
    return m - np.pi


@numba.njit(cache=True)
def heading_accuracy(pd_heading, gt_heading):
    """``1 - |heading error| / pi`` with the error wrapped to [0, pi]; float32 like ``ComputeHeadingAccuracy``."""
    a = np.float32(_normalize_angle(pd_heading))
    b = np.float32(_normalize_angle(gt_heading))
    diff = np.float32(abs(a - b))
    if diff > np.pi:
        diff = np.float32(_TWO_PI - diff)
    return np.float32(min(1.0, max(0.0, 1.0 - diff / np.pi)))


@numba.njit(cache=True)
def _frame_type_measurements(pd_box, pd_score, pd_nlz, gt_box, gt_level, threshold, cutoffs, levels, min_ha,
                             is_3d, tp, fp, fn, sum_ha):
    """Adds the measurements of one frame and one type to tp/fp/fn [L, C] (int64) and sum_ha [L, C] (float32)."""
    n_pd = pd_box.shape[0]
    n_gt = gt_box.shape[0]
    n_levels = levels.shape[0]
    can = np.zeros((n_pd, n_gt), np.bool_)
    quantized = np.zeros((n_pd, n_gt), np.int64)
    any_can = np.zeros(n_pd, np.bool_)
    for i in range(n_pd):
        for j in range(n_gt):
            iou = np.float32(box_iou(pd_box[i], gt_box[j], is_3d))
            if iou >= threshold:
                can[i, j] = True
                any_can[i] = True
                quantized[i, j] = np.int64(np.floor(np.float64(np.float32(iou * np.float32(1e6))) + 0.5))
    # Measurements per prediction-subset size (subsets of different cutoffs are nested: equal size = equal set).
    done = np.zeros(n_pd + 1, np.bool_)
    cache_tp = np.zeros((n_pd + 1, n_levels), np.int64)
    cache_fp = np.zeros((n_pd + 1, n_levels), np.int64)
    cache_fn = np.zeros((n_pd + 1, n_levels), np.int64)
    cache_ha = np.zeros((n_pd + 1, n_levels), np.float32)
    subset = np.empty(n_pd, np.int64)
    gt_matched = np.zeros(n_gt, np.bool_)
    for c in range(cutoffs.shape[0]):
        k = 0
        for i in range(n_pd):
            if pd_score[i] >= cutoffs[c]:
                subset[k] = i
                k += 1
        if not done[k]:
            pd_match = np.full(k, -1, np.int64)
            gt_matched[:] = False
            has_edge = False
            for r in range(k):
                if any_can[subset[r]]:
                    has_edge = True
                    break
            if has_edge:
                n = max(k, n_gt)
                w = np.zeros((n, n), np.int64)
                for r in range(k):
                    for j in range(n_gt):
                        w[r, j] = quantized[subset[r], j]
                assignment = kuhn_munkres(w)
                for r in range(k):
                    j = assignment[r]
                    if j < n_gt and can[subset[r], j]:
                        pd_match[r] = j
                        gt_matched[j] = True
            n_tp = 0
            n_fp = 0
            ha_sum = np.float32(0.0)
            for r in range(k):
                i = subset[r]
                if pd_match[r] >= 0:
                    ha = heading_accuracy(pd_box[i, 6], gt_box[pd_match[r], 6])
                    if ha <= min_ha:
                        continue
                    n_tp += 1
                    ha_sum = np.float32(ha_sum + ha)
                elif not pd_nlz[i]:
                    n_fp += 1
            for li in range(n_levels):
                n_fn = 0
                for j in range(n_gt):
                    if not gt_matched[j] and gt_level[j] <= levels[li]:
                        n_fn += 1
                cache_tp[k, li] = n_tp
                cache_fp[k, li] = n_fp
                cache_fn[k, li] = n_fn
                cache_ha[k, li] = ha_sum
            done[k] = True
        for li in range(n_levels):
            tp[li, c] += cache_tp[k, li]
            fp[li, c] += cache_fp[k, li]
            fn[li, c] += cache_fn[k, li]
            sum_ha[li, c] = np.float32(sum_ha[li, c] + cache_ha[k, li])


@numba.njit(cache=True)
def _accumulate(pd_box, pd_group, pd_score, pd_nlz, gt_box, gt_group, gt_level, num_groups, group_type_index,
                thresholds, cutoffs, levels, min_ha, is_3d, tp, fp, fn, sum_ha):
    """Loops over (frame, type) groups in frame order; rows of each side are sorted by group, stable."""
    p0 = 0
    g0 = 0
    for g in range(num_groups):
        p1 = p0
        while p1 < pd_group.shape[0] and pd_group[p1] == g:
            p1 += 1
        g1 = g0
        while g1 < gt_group.shape[0] and gt_group[g1] == g:
            g1 += 1
        t = group_type_index[g]
        if p1 > p0 or g1 > g0:
            _frame_type_measurements(pd_box[p0:p1], pd_score[p0:p1], pd_nlz[p0:p1], gt_box[g0:g1], gt_level[g0:g1],
                                     thresholds[t], cutoffs, levels, min_ha, is_3d, tp[t], fp[t], fn[t], sum_ha[t])
        p0 = p1
        g0 = g1


def compute_measurements(pred: DetectionArrays, gt: DetectionArrays, config: WaymoEvalConfig, box_type: str
                         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN counts (int64) and heading-accuracy sums (float32), each [num types, num levels, num cutoffs]."""
    types = np.asarray(config.types, np.int64)
    type_index = np.full(256, -1, np.int64)
    type_index[types] = np.arange(len(types))
    pred_score = pred.score if pred.score is not None else np.ones(len(pred), np.float32)
    pred_nlz = pred.overlap_nlz if pred.overlap_nlz is not None else np.zeros(len(pred), np.bool_)
    gt_level = gt.difficulty if gt.difficulty is not None else np.ones(len(gt), np.uint8)
    # Dense frame index in increasing frame id order (the op iterates a std::set of frame ids).
    frames = np.union1d(pred.frame_id, gt.frame_id)
    num_types = len(types)

    def grouped(arr: DetectionArrays):
        keep = type_index[arr.type] >= 0
        group = np.searchsorted(frames, arr.frame_id) * num_types + type_index[arr.type]
        order = np.argsort(group[keep], kind='stable')
        return np.nonzero(keep)[0][order], group[keep][order]

    p_rows, p_group = grouped(pred)
    g_rows, g_group = grouped(gt)
    num_groups = len(frames) * num_types
    group_type_index = np.tile(np.arange(num_types, dtype=np.int64), len(frames))
    shape = (num_types, len(config.levels), len(config.score_cutoffs))
    tp = np.zeros(shape, np.int64)
    fp = np.zeros(shape, np.int64)
    fn = np.zeros(shape, np.int64)
    sum_ha = np.zeros(shape, np.float32)
    thresholds = np.asarray([config.iou_thresholds[t] for t in types], np.float32)
    _accumulate(np.ascontiguousarray(pred.bbox[p_rows], np.float64), p_group.astype(np.int64),
                np.ascontiguousarray(pred_score[p_rows]), np.ascontiguousarray(pred_nlz[p_rows]),
                np.ascontiguousarray(gt.bbox[g_rows], np.float64), g_group.astype(np.int64),
                np.ascontiguousarray(gt_level[g_rows], np.int64), num_groups, group_type_index, thresholds,
                np.asarray(config.score_cutoffs, np.float32), np.asarray(config.levels, np.int64),
                np.float32(config.min_heading_accuracy), box_type == '3d', tp, fp, fn, sum_ha)
    return tp, fp, fn, sum_ha


def mean_average_precision(precisions: Sequence[float], recalls: Sequence[float], max_recall_delta: float) -> float:
    """Waymo's ``ComputeMeanAveragePrecision`` in float32 arithmetic.

    The precision at each recall is the best precision at that recall or any higher one; recall gaps wider than
    ``max_recall_delta`` are filled with points every ``max_recall_delta`` (carrying that precision); the point
    (recall 0, precision 1) is added and its precision replaced by that of the next point; the area is integrated
    with trapezoids.
    """
    f32 = np.float32
    if len(precisions) == 0:
        return 0.0
    delta = f32(max_recall_delta)
    recall_precision: Dict[np.float32, np.float32] = {f32(0.0): f32(1.0)}
    for p, r in zip(precisions, recalls):
        r = f32(r)
        recall_precision[r] = max(recall_precision.get(r, f32(0.0)), f32(p))
    keys = sorted(recall_precision)
    points: List[Tuple[np.float32, np.float32]] = []  # (precision, recall), recall descending
    last_recall = keys[0]
    max_precision = f32(0.0)
    error = f32(1e-6)
    for r in reversed(keys):
        while f32(last_recall - r) > f32(delta + error):
            last_recall = f32(last_recall - delta)
            points.append((max_precision, last_recall))
        max_precision = max(recall_precision[r], max_precision)
        points.append((max_precision, r))
        last_recall = r
    if len(points) < 2:
        return 0.0
    points[-1] = (points[-2][0], points[-1][1])
    ap = f32(0.0)
    for (p0, r0), (p1, r1) in zip(points[:-1], points[1:]):
        ap = f32(float(ap) + 0.5 * float(f32(r0 - r1)) * float(f32(p0 + p1)))
    return float(ap)


def metrics_from_measurements(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, sum_ha: np.ndarray,
                              config: WaymoEvalConfig) -> BreakdownResult:
    """Precision/recall per cutoff and AP/APH of one breakdown (``ToDetectionMetrics``); inputs are [cutoffs]."""
    f32 = np.float32
    precision, recall, precision_ha, recall_ha = [], [], [], []
    min_precision = f32(config.min_precision)
    for n_tp, n_fp, n_fn, ha in zip(tp.tolist(), fp.tolist(), fn.tolist(), sum_ha.tolist()):
        if n_tp + n_fp <= 0:
            p = p_ha = f32(0.0)
        else:
            p = f32(n_tp) / f32(n_tp + n_fp)
            p_ha = f32(ha) / f32(n_tp + n_fp)
            p = f32(0.0) if p < min_precision else p
            p_ha = f32(0.0) if p_ha < min_precision else p_ha
        r = f32(0.0) if n_tp + n_fn <= 0 else f32(n_tp) / f32(n_tp + n_fn)
        if r == 0.0:
            p = p_ha = f32(1.0)
        precision.append(p)
        recall.append(r)
        precision_ha.append(p_ha)
        recall_ha.append(r)
    return BreakdownResult(
        ap=mean_average_precision(precision, recall, config.desired_recall_delta),
        aph=mean_average_precision(precision_ha, recall_ha, config.desired_recall_delta),
        precision=[float(v) for v in precision], recall=[float(v) for v in recall],
        precision_ha=[float(v) for v in precision_ha], recall_ha=[float(v) for v in recall_ha],
        num_tps=tp.tolist(), num_fps=fp.tolist(), num_fns=fn.tolist())


def evaluate_native(pred: DetectionArrays, gt: DetectionArrays, config: WaymoEvalConfig) -> EvalResults:
    """AP/APH for every box type, reported type and difficulty level of ``config``."""
    results: EvalResults = {}
    for box_type in config.box_types:
        tp, fp, fn, sum_ha = compute_measurements(pred, gt, config, box_type)
        results[box_type] = {}
        for ti, t in enumerate(config.types):
            for li, level in enumerate(config.levels):
                results[box_type][(t, level)] = metrics_from_measurements(tp[ti, li], fp[ti, li], fn[ti, li],
                                                                          sum_ha[ti, li], config)
    return results
