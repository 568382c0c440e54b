"""Time the two backends of the Waymo metric on a synthetic set (default 200 frames x 200 boxes).

    .venv/bin/python tools/analysis/benchmark_waymo_metric.py [--frames 200] [--boxes 200] [--native-only]

Both backends evaluate the same arrays (3D and BEV, Vehicle/Pedestrian/Cyclist, LEVEL_1/LEVEL_2, the official 101
score cutoffs). Printed: the native time (after a warm-up that compiles the Numba code; the compile time is printed
too), the official time (the whole subprocess: TensorFlow import plus the op, and the op alone), their ratio, and the
largest difference between the two on any reported AP/APH.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from graddrop_mtl.det3d.evaluation.common import WaymoEvalConfig  # noqa: E402
from graddrop_mtl.det3d.evaluation.native import evaluate_native  # noqa: E402
from graddrop_mtl.det3d.evaluation.official import evaluate_official_many  # noqa: E402
from graddrop_mtl.det3d.evaluation.synthetic import make_benchmark_case, make_case  # noqa: E402
from graddrop_mtl.det3d.evaluation.waymo_metric import metric_keys  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--boxes', type=int, default=200, help='ground-truth boxes and predictions per frame')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--native-only', action='store_true', help='skip the official backend')
    args = parser.parse_args(argv)

    config = WaymoEvalConfig()
    pred, gt = make_benchmark_case(args.seed, args.frames, args.boxes)
    print(f'{args.frames} frames, {len(pred)} predictions, {len(gt)} ground-truth boxes; 3D + BEV, '
          f'{len(config.types)} classes x {len(config.levels)} levels, {len(config.score_cutoffs)} score cutoffs')

    start = time.perf_counter()
    small_pred, small_gt = make_case(0)
    evaluate_native(small_pred, small_gt, config)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    native = evaluate_native(pred, gt, config)
    native_seconds = time.perf_counter() - start
    print(f'native:   {native_seconds:8.2f} s   (warm-up incl. Numba compile / cache load: {compile_seconds:.2f} s)')
    if args.native_only:
        return 0

    start = time.perf_counter()
    (official,), timing = evaluate_official_many([(pred, gt, config)])
    official_seconds = time.perf_counter() - start
    op_seconds = sum(timing['cases'][0].values())
    print(f'official: {official_seconds:8.2f} s   (TensorFlow import {timing["import_seconds"]:.2f} s, op '
          f'{op_seconds:.2f} s: ' + ', '.join(f'{k} {v:.2f} s' for k, v in timing['cases'][0].items()) + ')')
    print(f'ratio official / native: {official_seconds / native_seconds:.1f}x (op alone: '
          f'{op_seconds / native_seconds:.1f}x)')
    a, b = metric_keys(native, config), metric_keys(official, config)
    worst = max(abs(a[k] - b[k]) for k in a)
    print(f'largest |native - official| over the {len(a)} reported numbers: {worst:.2e}')
    for key in ('Overall/L1 mAP', 'Overall/L2 mAPH', 'Overall/L2 BEV mAP'):
        print(f'  {key}: native {a[key]:.4f}, official {b[key]:.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
