"""Seeded synthetic detection sets for tests, parity checks and benchmarks of the Waymo metric.

:func:`make_case` draws ground truth and predictions (Waymo arrays) that exercise the metric's corner cases:
several frames, empty frames, frames with only predictions or only ground truth, LEVEL_2 boxes, overlapping ground
truths, detections with heading errors near (and exactly) 180 degrees, duplicated detections (some identical up to
a flipped heading: ties that the matcher must break like the official one), predictions of another class, false
positives, score ties (scores on a 0.05 grid, some equal to cutoffs, 0 and 1), no-label-zone flags, a few
degenerate boxes, and rows shuffled across frames.

:func:`make_infos` writes the same kind of scene as an mmdet3d 1.4 (v2) Waymo info file plus matching model outputs,
for end-to-end tests of :class:`~.waymo_metric.WaymoAPMetric`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from .common import LEVEL_2_MAX_POINTS, DetectionArrays, mmdet3d_to_waymo_boxes

# (length, width, height) ranges per Waymo type.
_SIZES = {1: ((3.5, 5.5), (1.6, 2.2), (1.4, 2.0)), 2: ((0.5, 1.0), (0.5, 1.0), (1.5, 1.9)),
          3: ((0.15, 0.4), (0.5, 0.9), (0.6, 1.0)), 4: ((1.5, 2.0), (0.5, 0.9), (1.5, 1.9))}


@dataclasses.dataclass
class CaseOptions:
    """Knobs of :func:`make_case` (defaults: a small, broad case)."""

    num_frames: int = 8
    max_gt_per_frame: int = 12
    types: Tuple[int, ...] = (1, 2, 4)
    other_types: Tuple[int, ...] = (3,)       # ground truth / predictions of types that are not reported
    range_m: float = 40.0
    p_empty_frame: float = 0.1
    p_frame_without_pred: float = 0.1
    p_frame_without_gt: float = 0.1
    p_level2: float = 0.3
    p_detect: float = 0.8
    p_flip: float = 0.12                      # heading error near 180 degrees
    p_duplicate: float = 0.15
    p_wrong_class: float = 0.08
    p_overlap_gt: float = 0.15
    p_nlz: float = 0.08
    p_degenerate: float = 0.02
    max_false_positives: int = 4
    p_grid_scores: float = 0.4                # frames whose scores lie on a 0.05 grid (ties, cutoff values)


def _random_box(rng: np.random.Generator, waymo_type: int, range_m: float) -> np.ndarray:
    (l0, l1), (w0, w1), (h0, h1) = _SIZES[waymo_type]
    length, width, height = rng.uniform(l0, l1), rng.uniform(w0, w1), rng.uniform(h0, h1)
    x, y = rng.uniform(-range_m, range_m, size=2)
    z = rng.uniform(-0.5, 0.5) + height / 2
    return np.array([x, y, z, length, width, height, rng.uniform(-np.pi, np.pi)])


def _detect(rng: np.random.Generator, box: np.ndarray, opts: CaseOptions) -> np.ndarray:
    out = box.copy()
    scale = max(box[3], box[4])
    out[:2] += rng.normal(0.0, 0.06 * scale, size=2)
    out[2] += rng.normal(0.0, 0.08)
    out[3:6] *= np.exp(rng.normal(0.0, 0.06, size=3))
    u = rng.uniform()
    if u < opts.p_flip * 0.3:
        out[6] += np.pi                              # exactly reversed
    elif u < opts.p_flip:
        out[6] += np.pi + rng.normal(0.0, 0.08)      # nearly reversed
    else:
        out[6] += rng.normal(0.0, 0.1)
    if rng.uniform() < 0.5:
        out[6] = (out[6] + np.pi) % (2 * np.pi) - np.pi  # both wrapped and unwrapped headings occur
    return out


def make_case(seed: int, opts: Optional[CaseOptions] = None) -> Tuple[DetectionArrays, DetectionArrays]:
    """Predictions and ground truth (Waymo arrays, difficulty already 1/2) of a seeded random case."""
    opts = opts or CaseOptions()
    rng = np.random.default_rng(seed)
    all_types = tuple(opts.types) + tuple(opts.other_types)
    gt_rows: List[Tuple] = []
    pd_rows: List[Tuple] = []
    frame_ids = rng.choice(np.arange(10**12, 10**12 + 10**6), size=opts.num_frames, replace=False)
    for frame in frame_ids.tolist():
        u = rng.uniform()
        if u < opts.p_empty_frame:
            continue
        with_pred = u >= opts.p_empty_frame + opts.p_frame_without_pred
        with_gt = not (opts.p_empty_frame + opts.p_frame_without_pred <= u
                       < opts.p_empty_frame + opts.p_frame_without_pred + opts.p_frame_without_gt)
        grid_scores = rng.uniform() < opts.p_grid_scores

        def score() -> float:
            if grid_scores:
                return float(rng.integers(0, 21)) * 0.05
            return float(rng.uniform())

        boxes: List[Tuple[np.ndarray, int]] = []
        if with_gt:
            for _ in range(int(rng.integers(0, opts.max_gt_per_frame + 1))):
                t = int(rng.choice(all_types)) if rng.uniform() < 0.15 else int(rng.choice(opts.types))
                if boxes and rng.uniform() < opts.p_overlap_gt:
                    base, t = boxes[int(rng.integers(len(boxes)))]
                    box = base.copy()
                    box[:2] += rng.normal(0.0, 0.35 * max(box[3], box[4]), size=2)
                    box[6] += rng.normal(0.0, 0.3)
                else:
                    box = _random_box(rng, t, opts.range_m)
                level = 2 if rng.uniform() < opts.p_level2 else 1
                boxes.append((box, t))
                gt_rows.append((box, t, frame, level))
        if not with_pred:
            continue
        frame_preds: List[Tuple] = []
        for box, t in boxes:
            if rng.uniform() > opts.p_detect:
                continue
            t_pred = int(rng.choice([x for x in all_types if x != t])) if rng.uniform() < opts.p_wrong_class else t
            det = _detect(rng, box, opts)
            frame_preds.append((det, t_pred, score()))
            if rng.uniform() < opts.p_duplicate:
                dup = det.copy()
                if rng.uniform() < 0.5:
                    dup[6] += np.pi  # identical box, reversed heading: an IoU tie with a different heading accuracy
                else:
                    dup = _detect(rng, box, opts)
                frame_preds.append((dup, t_pred, score()))
        for _ in range(int(rng.integers(0, opts.max_false_positives + 1))):
            t = int(rng.choice(all_types))
            frame_preds.append((_random_box(rng, t, opts.range_m), t, score()))
        for det, t, s in frame_preds:
            if rng.uniform() < opts.p_degenerate:
                det = det.copy()
                det[3 + int(rng.integers(3))] = 0.005
            pd_rows.append((det, t, frame, s, rng.uniform() < opts.p_nlz))
    gt_order = rng.permutation(len(gt_rows))
    pd_order = rng.permutation(len(pd_rows))
    gt = DetectionArrays(
        bbox=np.array([gt_rows[i][0] for i in gt_order]).reshape(-1, 7),
        type=[gt_rows[i][1] for i in gt_order], frame_id=[gt_rows[i][2] for i in gt_order],
        difficulty=[gt_rows[i][3] for i in gt_order])
    pred = DetectionArrays(
        bbox=np.array([pd_rows[i][0] for i in pd_order]).reshape(-1, 7),
        type=[pd_rows[i][1] for i in pd_order], frame_id=[pd_rows[i][2] for i in pd_order],
        score=[pd_rows[i][3] for i in pd_order], overlap_nlz=[pd_rows[i][4] for i in pd_order])
    return pred, gt


def make_benchmark_case(seed: int = 0, num_frames: int = 200, boxes_per_frame: int = 200
                        ) -> Tuple[DetectionArrays, DetectionArrays]:
    """``num_frames`` frames with ``boxes_per_frame`` ground-truth boxes and as many predictions each.

    Ground truth is spread over a 75 m square (vehicles, pedestrians, cyclists); predictions are noisy detections
    of 80% of them plus random false positives, scores uniform.
    """
    rng = np.random.default_rng(seed)
    gts, pds = [], []
    for frame in range(num_frames):
        types = rng.choice([1, 2, 4], size=boxes_per_frame, p=[0.5, 0.35, 0.15])
        boxes = np.stack([_random_box(rng, int(t), 75.0) for t in types])
        level = np.where(rng.uniform(size=boxes_per_frame) < 0.2, 2, 1)
        gts.append((boxes, types, np.full(boxes_per_frame, frame), level))
        detected = rng.uniform(size=boxes_per_frame) < 0.8
        det = np.stack([_detect(rng, b, CaseOptions()) for b in boxes[detected]])
        n_fp = boxes_per_frame - len(det)
        fp_types = rng.choice([1, 2, 4], size=n_fp)
        fp = np.stack([_random_box(rng, int(t), 75.0) for t in fp_types]) if n_fp else np.zeros((0, 7))
        p_boxes = np.concatenate([det, fp])
        p_types = np.concatenate([types[detected], fp_types])
        order = rng.permutation(len(p_boxes))
        pds.append((p_boxes[order], p_types[order], np.full(len(p_boxes), frame), rng.uniform(size=len(p_boxes))))
    gt = DetectionArrays(bbox=np.concatenate([g[0] for g in gts]), type=np.concatenate([g[1] for g in gts]),
                         frame_id=np.concatenate([g[2] for g in gts]), difficulty=np.concatenate([g[3] for g in gts]))
    pred = DetectionArrays(bbox=np.concatenate([p[0] for p in pds]), type=np.concatenate([p[1] for p in pds]),
                           frame_id=np.concatenate([p[2] for p in pds]), score=np.concatenate([p[3] for p in pds]),
                           overlap_nlz=np.zeros(sum(len(p[0]) for p in pds), np.bool_))
    return pred, gt


# --------------------------------------------------------------------------------------------------------------------
# mmdet3d v2 infos + model outputs
# --------------------------------------------------------------------------------------------------------------------
CLASSES = ('Car', 'Pedestrian', 'Cyclist')
_TYPE_TO_LABEL = {1: 0, 2: 1, 4: 2}


def waymo_to_mmdet3d_boxes(boxes: np.ndarray) -> np.ndarray:
    """Waymo boxes (centre z) -> mmdet3d LiDAR boxes (bottom-centre z); the inverse of ``mmdet3d_to_waymo_boxes``."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 7).copy()
    out[:, 2] -= out[:, 5] / 2
    return out


def _points_and_difficulty(rng: np.random.Generator, level: int) -> Tuple[int, int]:
    """A (num_lidar_pts, difficulty) pair that Waymo's rule maps to ``level`` (0: a box without points)."""
    if level == 0:
        return 0, int(rng.choice([0, 1, 2]))
    if level == 2:
        return (int(rng.integers(1, LEVEL_2_MAX_POINTS + 1)), 0) if rng.uniform() < 0.5 \
            else (int(rng.integers(1, 500)), 2)
    return (int(rng.integers(LEVEL_2_MAX_POINTS + 1, 500)), int(rng.choice([0, 1]))) if rng.uniform() < 0.8 \
        else (int(rng.integers(1, LEVEL_2_MAX_POINTS + 1)), 1)


def make_infos(seed: int, opts: Optional[CaseOptions] = None, p_no_points: float = 0.05
               ) -> Tuple[Dict, List[Dict], DetectionArrays, DetectionArrays]:
    """An mmdet3d v2 Waymo info dict, model outputs per sample, and the equivalent Waymo arrays.

    Returns ``(infos, outputs, pred, gt)``: ``infos`` is ``{'metainfo': {'classes': CLASSES, ...}, 'data_list':
    [...]}`` with per sample ``sample_idx``, ``context_name``, ``timestamp``, ``lidar_points`` and ``instances``
    (``bbox_3d`` as mmdet3d LiDAR boxes, ``bbox_label_3d``, ``num_lidar_pts``, ``difficulty``; Sign ground truth
    labelled -1); ``outputs`` are dicts like the data samples the evaluator passes to ``process`` (numpy boxes in
    mmdet3d's convention, ``labels_3d`` indexing ``CLASSES``); ``pred``/``gt`` are what the metric should evaluate
    (ground truth without points dropped, levels after Waymo's rule, signs removed, frame id = sample index).
    """
    opts = opts or CaseOptions(other_types=())
    rng = np.random.default_rng(seed + 7919)
    pred, gt = make_case(seed, opts)
    frames = np.union1d(pred.frame_id, gt.frame_id)
    data_list, outputs = [], []
    keep_gt = np.ones(len(gt), bool)
    for idx, frame in enumerate(frames.tolist()):
        context = f'segment-{seed}-{idx // 3}'
        timestamp = 1_500_000_000_000_000 + frame
        instances = []
        for row in np.nonzero(gt.frame_id == frame)[0].tolist():
            level = 0 if rng.uniform() < p_no_points else int(gt.difficulty[row])
            num_points, difficulty = _points_and_difficulty(rng, level)
            if level == 0 or int(gt.type[row]) not in _TYPE_TO_LABEL:
                keep_gt[row] = False
            instances.append(dict(bbox_3d=waymo_to_mmdet3d_boxes(gt.bbox[row])[0].tolist(),
                                  bbox_label_3d=_TYPE_TO_LABEL.get(int(gt.type[row]), -1),
                                  num_lidar_pts=num_points, difficulty=difficulty))
        data_list.append(dict(sample_idx=idx, context_name=context, timestamp=timestamp,
                              lidar_points=dict(num_pts_feats=6, lidar_path=f'{idx:07d}.bin'),
                              instances=instances))
        rows = np.nonzero((pred.frame_id == frame) & np.isin(pred.type, list(_TYPE_TO_LABEL)))[0]
        outputs.append(dict(sample_idx=idx, context_name=context, timestamp=timestamp,
                            bboxes_3d=waymo_to_mmdet3d_boxes(pred.bbox[rows]).astype(np.float32),
                            scores_3d=pred.score[rows].copy(),
                            labels_3d=np.array([_TYPE_TO_LABEL[int(t)] for t in pred.type[rows]], np.int64),
                            overlap_nlz=pred.overlap_nlz[rows].copy()))
    # The expected arrays go through the same box conversion as the metric (mmdet3d -> Waymo, float32).
    frame_index = {f: i for i, f in enumerate(frames.tolist())}
    keep_pred = np.isin(pred.type, list(_TYPE_TO_LABEL))
    pred_boxes = waymo_to_mmdet3d_boxes(pred.bbox[keep_pred]).astype(np.float32)
    pred_out = DetectionArrays(bbox=mmdet3d_to_waymo_boxes(pred_boxes), type=pred.type[keep_pred],
                               frame_id=[frame_index[f] for f in pred.frame_id[keep_pred].tolist()],
                               score=pred.score[keep_pred], overlap_nlz=pred.overlap_nlz[keep_pred])
    gt_out = DetectionArrays(bbox=mmdet3d_to_waymo_boxes(waymo_to_mmdet3d_boxes(gt.bbox[keep_gt])),
                             type=gt.type[keep_gt],
                             frame_id=[frame_index[f] for f in gt.frame_id[keep_gt].tolist()],
                             difficulty=gt.difficulty[keep_gt])
    infos = dict(metainfo=dict(classes=CLASSES, dataset='waymo', info_version='1.1'), data_list=data_list)
    return infos, outputs, pred_out, gt_out
