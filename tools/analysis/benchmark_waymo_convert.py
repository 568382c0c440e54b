"""Waymo range-image conversion throughput: ours (NumPy, no TensorFlow) vs the official TensorFlow path.

    python tools/analysis/benchmark_waymo_convert.py [--frames 3] [--width 2650] [--seed 0]

Writes one synthetic segment (real-size range images at ``--width 2650``: TOP 64 x 2650, the others 200 x 600),
converts it with graddrop_mtl.det3d.waymo in this process, and with the official ``frame_utils`` /
``range_image_utils`` path (as mmdet3d 1.4's converter uses them) in .venv-waymo through
tools/waymo_official/convert_frames.py. Both run on one core (this process with BLAS/OpenMP threads set to 1,
TensorFlow with ``--threads 1``), and throughput is frames per CPU-second, i.e. frames/s per core, which the other
jobs on a shared machine do not distort. Two phases are reported:

* ``full``: from the record's bytes to the point array (Frame proto, zlib range images, conversion); the official
  path parses range images with protobuf's pure-Python implementation, which its ``frame_utils`` needs
  (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``);
* ``convert``: the range images, already decoded, to points.

Our TFRecord read with both CRCs checked is reported on its own line (the official side's tf.data read is not
timed).
"""
import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[_var] = '1'

import argparse  # noqa: E402
import json  # noqa: E402
import os.path as osp  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


from graddrop_mtl.det3d.waymo.frame import parse_frame  # noqa: E402
from graddrop_mtl.det3d.waymo.points import decode_lasers, lasers_to_points  # noqa: E402
from graddrop_mtl.det3d.waymo.synthetic import SyntheticConfig, write_segments  # noqa: E402
from graddrop_mtl.det3d.waymo.tfrecord import TFRecordReader  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _ours(path: str) -> dict:
    """CPU and wall seconds of our pipeline over every frame of ``path`` (second pass, after a warm-up)."""
    out = {}
    for _pass in range(2):
        t = dict(read=0.0, full=0.0, convert=0.0, read_wall=0.0, full_wall=0.0, convert_wall=0.0, frames=0)
        c0, w0 = time.process_time(), time.perf_counter()
        records = list(TFRecordReader(path).records())
        t['read'], t['read_wall'] = time.process_time() - c0, time.perf_counter() - w0
        for i, rec in enumerate(records):
            c0, w0 = time.process_time(), time.perf_counter()
            fr = parse_frame(rec.data, i, rec.offset, path)
            images, top_pose = decode_lasers(fr)
            c1, w1 = time.process_time(), time.perf_counter()
            lasers_to_points(fr, images, top_pose)
            c2, w2 = time.process_time(), time.perf_counter()
            t['full'] += c2 - c0
            t['full_wall'] += w2 - w0
            t['convert'] += c2 - c1
            t['convert_wall'] += w2 - w1
            t['frames'] += 1
        out = t
    return out


def _official(path: str, python: str) -> dict:
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION='python', TF_CPP_MIN_LOG_LEVEL='3')
    cmd = [python, osp.join(ROOT, 'tools', 'waymo_official', 'convert_frames.py'), path, '--time-only',
           '--threads', '1']
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f'official conversion failed ({" ".join(cmd)}):\n{res.stderr[-3000:]}')
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description='Waymo conversion throughput: ours vs the official TensorFlow path')
    p.add_argument('--frames', type=int, default=3, help='frames in the benchmark segment (default 3)')
    p.add_argument('--width', type=int, default=2650, help='TOP range image width (default 2650, real size)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--waymo-python', default=osp.join(ROOT, '.venv-waymo', 'bin', 'python'),
                   help='python of the official toolchain environment (bash tools/setup_waymo_env.sh)')
    args = p.parse_args(argv)
    if not osp.exists(args.waymo_python):
        sys.exit(f'{args.waymo_python} not found: create the official toolchain with `bash tools/setup_waymo_env.sh`')

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        (path,) = write_segments(tmp, num_segments=1, seed=args.seed,
                                 config=SyntheticConfig(num_frames=args.frames, width=args.width))
        print(f'segment: {args.frames} frames, TOP {SyntheticConfig.top_height} x {args.width}, short-range '
              f'{SyntheticConfig(width=args.width).short_shape()}, {osp.getsize(path) / 1e6:.1f} MB '
              f'(generated in {time.perf_counter() - t0:.1f} s)')
        ours = _ours(path)
        official = _official(path, args.waymo_python)

    n = ours['frames']
    assert official['frames'] == n, (official, ours)
    rows = [
        ('full (record bytes -> points)', n / ours['full'], n / official['cpu_seconds']),
        ('convert (decoded range images -> points)', n / ours['convert'], n / official['convert_cpu_seconds']),
    ]
    print(f'\nframes/s per core (frames per CPU-second, one thread each), {n} frames:')
    print(f'{"phase":44s} {"ours":>10s} {"official TF":>12s} {"ours/official":>14s}')
    for name, a, b in rows:
        print(f'{name:44s} {a:10.2f} {b:12.3f} {a / b:14.1f}')
    print(f'{"ours: TFRecord read + both CRCs":44s} {n / max(ours["read"], 1e-9):10.2f}')
    print(f'(wall clock: ours full {ours["full_wall"] / n:.3f} s/frame, official full {official["seconds"] / n:.3f} '
          f's/frame; convert {ours["convert_wall"] / n:.3f} vs {official["convert_seconds"] / n:.3f} s/frame)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
