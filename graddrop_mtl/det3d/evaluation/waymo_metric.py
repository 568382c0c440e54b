"""``WaymoAPMetric``: Waymo 3D and BEV AP/APH for mmdet3d evaluators, without the Bazel-built binary.

Use it in any Waymo config (with ``custom_imports=dict(imports=['graddrop_mtl.det3d.evaluation'], ...)``)::

    val_evaluator = dict(type='WaymoAPMetric', ann_file='data/waymo/kitti_format/waymo_infos_val.pkl',
                         backend='auto')
    test_evaluator = val_evaluator
"""
from __future__ import annotations

import json
import os
import os.path as osp
import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from mmdet3d.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log

from .common import (
    DEFAULT_IOU_THRESHOLDS,
    LEVELS,
    DetectionArrays,
    EvalResults,
    WaymoEvalConfig,
    default_score_cutoffs,
    mmdet3d_to_waymo_boxes,
    report_name_of,
    results_to_json,
    waymo_type_of,
)
from .ground_truth import WaymoGroundTruth
from .native import evaluate_native
from .official import evaluate_official, official_available

BACKENDS = ('auto', 'official', 'native')
#: Name of the JSON file written to the work dir at every evaluation.
DEFAULT_OUT_FILE = 'waymo_ap.json'


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, 'tensor'):  # mmdet3d BaseInstance3DBoxes
        value = value.tensor
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def metric_keys(results: EvalResults, config: WaymoEvalConfig) -> Dict[str, float]:
    """Flat metric dict: ``'<Class>/L<k> mAP'``/``mAPH`` (3D, mmdet3d ``WaymoMetric``'s names),
    ``'<Class>/L<k> BEV mAP'``/``BEV mAPH``, and ``'Overall/...'`` (mean over the reported classes)."""
    out: Dict[str, float] = {}
    suffixes = {'3d': '', 'bev': ' BEV'}
    for level in config.levels:
        for t in config.types:
            for box_type in config.box_types:
                r = results[box_type][(t, level)]
                out[f'{report_name_of(t)}/{LEVELS[level]}{suffixes[box_type]} mAP'] = float(r.ap)
                out[f'{report_name_of(t)}/{LEVELS[level]}{suffixes[box_type]} mAPH'] = float(r.aph)
        for box_type in config.box_types:
            for name in ('mAP', 'mAPH'):
                values = [out[f'{report_name_of(t)}/{LEVELS[level]}{suffixes[box_type]} {name}']
                          for t in config.types]
                out[f'Overall/{LEVELS[level]}{suffixes[box_type]} {name}'] = float(np.mean(values))
    return out


def format_table(metrics: Mapping[str, float], config: WaymoEvalConfig, title: str) -> str:
    """The metrics as a text table: one row per class and level, columns 3D/BEV AP/APH."""
    columns = []
    for box_type in config.box_types:
        label = '3D' if box_type == '3d' else 'BEV'
        suffix = '' if box_type == '3d' else ' BEV'
        columns += [(f'{label} AP', suffix + ' mAP'), (f'{label} APH', suffix + ' mAPH')]
    names = [report_name_of(t) for t in config.types] + ['Overall']
    header = f"{'class':<12}{'level':<7}" + ''.join(f'{c[0]:>10}' for c in columns)
    lines = [title, header, '-' * len(header)]
    for name in names:
        for level in config.levels:
            key = f'{name}/{LEVELS[level]}'
            lines.append(f'{name:<12}{LEVELS[level]:<7}' + ''.join(f'{metrics[key + c[1]]:>10.4f}' for c in columns))
    return '\n'.join(lines)


@METRICS.register_module()
class WaymoAPMetric(BaseMetric):
    """Waymo detection metric: per class and difficulty level, 3D and BEV AP and APH (heading-weighted AP).

    Ground truth comes from the mmdet3d v2 info file ``ann_file`` (see :mod:`.ground_truth` for the difficulty
    rule); predictions are the model's ``pred_instances_3d`` (``bboxes_3d`` LiDAR boxes, ``scores_3d``,
    ``labels_3d`` indexing the dataset's classes, and optionally a boolean ``overlap_nlz`` per box: predictions
    overlapping a no-label zone are not counted as false positives). Each prediction is matched to its info frame by
    ``(context_name, timestamp)``, or by the file name of its ``lidar_path`` when those are missing (mmdet3d's stock
    Waymo pipelines keep only ``lidar_path``, a default meta key of ``Pack3DDetInputs``; ``sample_idx`` is the
    dataset position there, not the info file's); the frames evaluated are the predicted ones.

    Returned keys (with the ``'Waymo metric'`` prefix): ``'Vehicle/L1 mAP'``, ``'Vehicle/L1 mAPH'``, ... and
    ``'Overall/L1 mAP'`` (mean over the reported classes) as in mmdet3d's ``WaymoMetric`` (3D boxes), plus
    ``'Vehicle/L1 BEV mAP'``, ``'Vehicle/L1 BEV mAPH'``, ... for bird's-eye-view boxes. The table is logged and the
    numbers, precision/recall curves and counts are written as JSON to ``out_file``.

    Args:
        ann_file: the info file (``.pkl``) with the ground truth.
        backend: 'official' (waymo-open-dataset's op in ``.venv-waymo``, through a subprocess), 'native'
            (NumPy/Numba) or 'auto' (official when that environment exists, else native).
        classes: class names to report ('Car'/'Vehicle', 'Pedestrian', 'Cyclist', 'Sign'); default: the dataset's.
        iou_thresholds: per reported class name, overrides of the official thresholds (Vehicle 0.7, others 0.5).
        score_cutoffs: default the official 0.00, 0.01, ..., 0.99, 1.0.
        box_types: '3d' and/or 'bev'.
        desired_recall_delta: recall step of the AP integration (official 0.05).
        waymo_venv: the official environment (default ``$WAYMO_VENV`` or ``<repository>/.venv-waymo``).
        out_file: JSON path; a relative path is taken inside the work dir (found from the current ``MMLogger``'s
            log file, ``<work_dir>/<timestamp>/<timestamp>.log``; the current directory without a runner).
            ``None`` writes no file.
        backend_args: file backend arguments for reading ``ann_file``.
    """

    default_prefix = 'Waymo metric'

    def __init__(self, ann_file: str, backend: str = 'auto', classes: Optional[Sequence[str]] = None,
                 iou_thresholds: Optional[Mapping[str, float]] = None,
                 score_cutoffs: Optional[Sequence[float]] = None, box_types: Sequence[str] = ('3d', 'bev'),
                 desired_recall_delta: float = 0.05, waymo_venv: Optional[str] = None,
                 out_file: Optional[str] = DEFAULT_OUT_FILE, backend_args: Optional[dict] = None,
                 collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        self.ann_file = ann_file
        self.backend = backend
        self.classes = None if classes is None else list(classes)
        for name in list(self.classes or []) + list(iou_thresholds or {}):
            waymo_type_of(name)  # fail early on unknown names
        self.iou_thresholds = dict(iou_thresholds or {})
        self.score_cutoffs = tuple(float(c) for c in (score_cutoffs or default_score_cutoffs()))
        self.box_types = tuple(box_types)
        self.desired_recall_delta = float(desired_recall_delta)
        self.waymo_venv = waymo_venv
        self.out_file = out_file
        self.backend_args = backend_args
        self.eval_config()  # validates the options
        self._ground_truth: Optional[WaymoGroundTruth] = None

    # ----------------------------------------------------------------------------------------------------------------
    def _dataset_classes(self) -> Optional[List[str]]:
        meta = self.dataset_meta or {}
        return list(meta['classes']) if 'classes' in meta else None

    def eval_config(self) -> WaymoEvalConfig:
        """The evaluation config (classes from ``classes``, else the dataset's, else Vehicle/Pedestrian/Cyclist)."""
        names = self.classes or self._dataset_classes() or ['Vehicle', 'Pedestrian', 'Cyclist']
        return WaymoEvalConfig.from_class_names(names, self.iou_thresholds, score_cutoffs=self.score_cutoffs,
                                                box_types=self.box_types,
                                                desired_recall_delta=self.desired_recall_delta)

    def resolved_backend(self) -> str:
        if self.backend == 'auto':
            return 'official' if official_available(self.waymo_venv) else 'native'
        return self.backend

    @property
    def ground_truth(self) -> WaymoGroundTruth:
        if self._ground_truth is None:
            self._ground_truth = WaymoGroundTruth(self.ann_file, self._dataset_classes(), self.backend_args)
        return self._ground_truth

    # ----------------------------------------------------------------------------------------------------------------
    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keeps each sample's predictions (numpy) and frame keys."""
        for sample in data_samples:
            pred = sample['pred_instances_3d']
            boxes = _to_numpy(pred['bboxes_3d']).astype(np.float32)
            boxes = boxes.reshape(-1, 7) if boxes.ndim == 1 else boxes
            nlz = pred.get('overlap_nlz') if hasattr(pred, 'get') else None
            self.results.append(dict(
                sample_idx=sample.get('sample_idx'), context_name=sample.get('context_name'),
                timestamp=sample.get('timestamp'), lidar_path=sample.get('lidar_path'), bboxes_3d=boxes,
                scores_3d=_to_numpy(pred['scores_3d']).astype(np.float32).reshape(-1),
                labels_3d=_to_numpy(pred['labels_3d']).astype(np.int64).reshape(-1),
                overlap_nlz=None if nlz is None else _to_numpy(nlz).astype(bool).reshape(-1)))

    def arrays_from_results(self, results: Sequence[dict]) -> tuple:
        """(predictions, ground truth) as Waymo arrays; frame id = position of the frame in the info file."""
        gt_all = self.ground_truth
        pred_classes = self._dataset_classes() or self.classes or gt_all.class_names
        pred_types = np.array([waymo_type_of(name) for name in pred_classes], np.uint8)
        preds, frames = [], []
        for r in results:
            frame = gt_all.find(r.get('context_name'), r.get('timestamp'), r.get('lidar_path'),
                                sample_idx=r.get('sample_idx'))
            labels = r['labels_3d']
            if len(labels) and (labels.min() < 0 or labels.max() >= len(pred_types)):
                raise ValueError(f"predictions of sample {r['sample_idx']!r}: labels_3d {labels.tolist()} are not "
                                 f'indices into the classes {pred_classes}')
            n = len(labels)
            preds.append(DetectionArrays(
                bbox=mmdet3d_to_waymo_boxes(r['bboxes_3d']) if n else np.zeros((0, 7), np.float32),
                frame_id=np.full(n, frame), type=pred_types[labels], score=r['scores_3d'],
                overlap_nlz=r['overlap_nlz'] if r['overlap_nlz'] is not None else np.zeros(n, bool)))
            frames.append(frame)
        frames = sorted(set(frames))
        gts = [DetectionArrays(bbox=gt_all.frames[f].boxes, frame_id=np.full(len(gt_all.frames[f].types), f),
                               type=gt_all.frames[f].types, difficulty=gt_all.frames[f].levels) for f in frames]
        return DetectionArrays.concatenate(preds), DetectionArrays.concatenate(gts), len(frames)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        config = self.eval_config()
        pred, gt, num_frames = self.arrays_from_results(results)
        backend = self.resolved_backend()
        start = time.perf_counter()
        if backend == 'official':
            eval_results = evaluate_official(pred, gt, config, venv=self.waymo_venv)
        else:
            eval_results = evaluate_native(pred, gt, config)
        seconds = time.perf_counter() - start
        metrics = metric_keys(eval_results, config)
        title = (f'Waymo AP/APH ({backend} backend, {num_frames} frames, {len(pred)} predictions, '
                 f'{len(gt)} ground-truth boxes, {seconds:.1f} s)')
        print_log('\n' + format_table(metrics, config, title), logger=logger)
        path = self._out_path(logger)
        if path is not None:
            os.makedirs(osp.dirname(path) or '.', exist_ok=True)
            with open(path, 'w') as f:
                json.dump(dict(backend=backend, ann_file=self.ann_file, num_frames=num_frames,
                               num_predictions=len(pred), num_ground_truth=len(gt), seconds=seconds,
                               config=config.to_json_dict(), metrics=metrics,
                               breakdowns=results_to_json(eval_results)), f, indent=1)
            print_log(f'Waymo metrics written to {path}', logger=logger)
        return metrics

    def _out_path(self, logger: MMLogger) -> Optional[str]:
        if self.out_file is None:
            return None
        if osp.isabs(self.out_file):
            return self.out_file
        log_file = getattr(logger, 'log_file', None)
        work_dir = osp.dirname(osp.dirname(log_file)) if log_file else '.'
        return osp.join(work_dir, self.out_file)


__all__ = ['WaymoAPMetric', 'metric_keys', 'format_table', 'DEFAULT_IOU_THRESHOLDS']
