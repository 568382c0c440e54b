"""Waymo detection AP/APH with the official waymo-open-dataset ``detection_metrics`` TensorFlow op.

Runs in the official toolchain environment (``.venv-waymo``, made by ``bash tools/setup_waymo_env.sh``); it imports
nothing of graddrop_mtl. ``graddrop_mtl.det3d.evaluation.official`` calls it in a subprocess::

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python TF_CPP_MIN_LOG_LEVEL=3 \\
        .venv-waymo/bin/python tools/waymo_official/compute_metrics.py CASE.npz [CASE2.npz ...] --output OUT.json

Each input ``.npz`` (plain arrays, loaded with ``allow_pickle=False``) holds

* ``config``: a JSON string: ``types`` (Waymo types to report), ``iou_thresholds`` (5 values: unknown, vehicle,
  pedestrian, sign, cyclist), ``score_cutoffs``, ``levels`` (1, 2), ``box_types`` ('3d', 'bev'),
  ``desired_recall_delta``, ``min_precision``, ``min_heading_accuracy``;
* ``pred_bbox`` float32 [M, 7] (centre x, y, z, length, width, height, heading), ``pred_type`` uint8,
  ``pred_score`` float32, ``pred_frame_id`` int64, ``pred_overlap_nlz`` bool;
* ``gt_bbox`` float32 [N, 7], ``gt_type`` uint8, ``gt_frame_id`` int64, ``gt_difficulty`` uint8.

The op gets a ``metrics_pb2.Config`` with the ``OBJECT_TYPE`` breakdown, the given difficulty levels, the
``TYPE_HUNGARIAN`` matcher and box type ``TYPE_3D`` (7-dof boxes) for '3d' or ``TYPE_2D`` (x, y, length, width,
heading) for 'bev'. The output JSON is ``{"import_seconds": .., "cases": [..]}`` with one case per input::

    {"results": {"3d": {"Vehicle/L1": {"ap": .., "aph": .., "precision": [..], "recall": [..],
                                       "precision_ha": [..], "recall_ha": [..],
                                       "num_tps": [..], "num_fps": [..], "num_fns": [..]}, ...}, "bev": {...}},
     "seconds": {"3d": .., "bev": ..}}

(``num_*`` are empty lists when the installed op does not report counts.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault('PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION', 'python')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import numpy as np  # noqa: E402

TYPE_NAMES = {1: 'Vehicle', 2: 'Pedestrian', 3: 'Sign', 4: 'Cyclist'}
LEVEL_NAMES = {1: 'L1', 2: 'L2'}
REQUIRED = ('config', 'pred_bbox', 'pred_type', 'pred_score', 'pred_frame_id', 'pred_overlap_nlz', 'gt_bbox',
            'gt_type', 'gt_frame_id', 'gt_difficulty')


def build_config(cfg: dict, box_type: str):
    from waymo_open_dataset import label_pb2
    from waymo_open_dataset.protos import breakdown_pb2, metrics_pb2

    config = metrics_pb2.Config()
    config.breakdown_generator_ids.append(breakdown_pb2.Breakdown.OBJECT_TYPE)
    difficulty = config.difficulties.add()
    for level in cfg['levels']:
        difficulty.levels.append(int(level))
    config.matcher_type = metrics_pb2.MatcherProto.TYPE_HUNGARIAN
    for value in cfg['iou_thresholds']:
        config.iou_thresholds.append(float(value))
    config.box_type = label_pb2.Label.Box.TYPE_3D if box_type == '3d' else label_pb2.Label.Box.TYPE_2D
    for value in cfg['score_cutoffs']:
        config.score_cutoffs.append(float(value))
    config.desired_recall_delta = float(cfg['desired_recall_delta'])
    config.min_precision = float(cfg['min_precision'])
    config.min_heading_accuracy = float(cfg['min_heading_accuracy'])
    return config


def evaluate_file(path: str) -> dict:
    import tensorflow as tf
    from waymo_open_dataset.metrics.ops import py_metrics_ops

    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in REQUIRED if k not in data.files]
        if missing:
            raise SystemExit(f'{path}: missing arrays {missing}')
        arrays = {k: data[k] for k in REQUIRED}
    cfg = json.loads(str(arrays.pop('config')))
    out = {'results': {}, 'seconds': {}}
    for box_type in cfg['box_types']:
        columns = [0, 1, 2, 3, 4, 5, 6] if box_type == '3d' else [0, 1, 3, 4, 6]
        config = build_config(cfg, box_type)
        start = time.perf_counter()
        outputs = py_metrics_ops.detection_metrics(
            prediction_bbox=tf.constant(arrays['pred_bbox'].reshape(-1, 7)[:, columns], tf.float32),
            prediction_type=tf.constant(arrays['pred_type'], tf.uint8),
            prediction_score=tf.constant(arrays['pred_score'], tf.float32),
            prediction_frame_id=tf.constant(arrays['pred_frame_id'], tf.int64),
            prediction_overlap_nlz=tf.constant(arrays['pred_overlap_nlz'], tf.bool),
            ground_truth_bbox=tf.constant(arrays['gt_bbox'].reshape(-1, 7)[:, columns], tf.float32),
            ground_truth_type=tf.constant(arrays['gt_type'], tf.uint8),
            ground_truth_frame_id=tf.constant(arrays['gt_frame_id'], tf.int64),
            ground_truth_difficulty=tf.constant(arrays['gt_difficulty'], tf.uint8),
            config=config.SerializeToString())
        outputs = [o.numpy() for o in outputs]
        out['seconds'][box_type] = time.perf_counter() - start
        if len(outputs) == 7:  # ap, aph, apl, pr, pr_ha, pr_longitudinal, breakdown
            ap, aph, _, pr, pr_ha, _, breakdown = outputs
        else:  # older ops: ap, aph, pr, pr_ha, breakdown
            ap, aph, pr, pr_ha, breakdown = outputs
        per_box = {}
        for b in range(len(ap)):
            waymo_type = int(breakdown[b, 1]) + 1  # OBJECT_TYPE shard = type - 1
            level = int(breakdown[b, 2])
            if waymo_type not in cfg['types'] or level not in cfg['levels']:
                continue
            counts = pr.shape[-1] >= 5
            per_box[f'{TYPE_NAMES[waymo_type]}/{LEVEL_NAMES[level]}'] = dict(
                ap=float(ap[b]), aph=float(aph[b]),
                precision=pr[b, :, 0].tolist(), recall=pr[b, :, 1].tolist(),
                precision_ha=pr_ha[b, :, 0].tolist(), recall_ha=pr_ha[b, :, 1].tolist(),
                num_tps=[int(v) for v in pr[b, :, 2]] if counts else [],
                num_fps=[int(v) for v in pr[b, :, 3]] if counts else [],
                num_fns=[int(v) for v in pr[b, :, 4]] if counts else [])
        out['results'][box_type] = per_box
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('inputs', nargs='+', help='.npz files with the arrays described in the module docstring')
    parser.add_argument('--output', required=True, help='JSON file to write (one case per input)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    import tensorflow as tf  # noqa: F401  (imported once, timed separately)
    from waymo_open_dataset.metrics.ops import py_metrics_ops  # noqa: F401
    import_seconds = time.perf_counter() - start
    results = [evaluate_file(path) for path in args.inputs]
    with open(args.output, 'w') as f:
        json.dump({'import_seconds': import_seconds, 'cases': results}, f)
    return 0


if __name__ == '__main__':
    sys.exit(main())
