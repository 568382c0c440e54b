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

    python tools/analysis/benchmark_waymo_convert.py --create-data [--frames 200] [--rounds 2]

measures instead ``tools/create_data.py waymo`` end to end (one worker, no ground-truth database) on one
full-resolution segment (TOP 64 x 2650, the four short-range lidars, both returns), with the CRC-32C of
``google-crc32c`` and with the NumPy fallback (``GRADDROP_CRC32C=numpy``), each in a fresh process, the two taking
turns ``--rounds`` times; it also times the two CRC-32C implementations alone on the segment's bytes.
"""
import os
import resource

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


def _create_data_once(root: str, out: str, crc: str) -> dict:
    """CPU and wall seconds of ``tools/create_data.py waymo`` over the training split of ``root`` in a new process."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if crc == 'numpy':
        env['GRADDROP_CRC32C'] = 'numpy'
    else:
        env.pop('GRADDROP_CRC32C', None)
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'create_data.py'), 'waymo', '--root-path', root, '--out-dir', out,
           '--workers', '1', '--no-gt-database', '--splits', 'training']
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode:
        raise RuntimeError(f'create_data failed ({" ".join(cmd)}):\n{res.stderr[-3000:]}')
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(cpu=cpu, wall=wall)


def _crc_alone(path: str, repeats: int = 3) -> dict:
    """Seconds (best of ``repeats``) of both CRC-32C implementations over the bytes of ``path``."""
    from graddrop_mtl.det3d.waymo import crc as crc_mod
    with open(path, 'rb') as f:
        data = f.read()
    out = dict(bytes=len(data))
    impls = [('numpy', crc_mod.crc32c_numpy)]
    if crc_mod.BACKEND == 'google-crc32c':
        impls.append(('google-crc32c', crc_mod.crc32c))
    values = set()
    for name, fn in impls:
        best = float('inf')
        for _ in range(repeats):
            c0 = time.process_time()
            values.add(fn(data))
            best = min(best, time.process_time() - c0)
        out[name] = best
    assert len(values) == 1, f'the CRC-32C implementations disagree: {values}'
    return out


def create_data_benchmark(args) -> int:
    from graddrop_mtl.det3d.waymo import crc as crc_mod
    if crc_mod.BACKEND != 'google-crc32c':
        print('note: google-crc32c does not import here (pip install google-crc32c); only the NumPy CRC is timed')
    with tempfile.TemporaryDirectory() as tmp:
        seg_dir = osp.join(tmp, 'waymo_format', 'training')
        t0 = time.perf_counter()
        (path,) = write_segments(seg_dir, num_segments=1, seed=args.seed,
                                 config=SyntheticConfig(num_frames=args.frames, width=args.width))
        size = osp.getsize(path)
        print(f'segment: {args.frames} frames, TOP {SyntheticConfig.top_height} x {args.width}, short-range '
              f'{SyntheticConfig(width=args.width).short_shape()}, both returns, {size / 1e6:.1f} MB '
              f'(generated in {time.perf_counter() - t0:.1f} s)', flush=True)
        alone = _crc_alone(str(path))
        for name in ('numpy', 'google-crc32c'):
            if name in alone:
                print(f'CRC-32C alone, {name:14s}: {alone[name]:.3f} CPU s for the segment '
                      f'({alone["bytes"] / 1e6 / max(alone[name], 1e-9):.0f} MB/s)', flush=True)
        variants = ['google-crc32c', 'numpy'] if crc_mod.BACKEND == 'google-crc32c' else ['numpy']
        runs = {v: [] for v in variants}
        for r in range(args.rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                t = _create_data_once(tmp, osp.join(tmp, f'out_{v}_{r}'), v)
                runs[v].append(t)
                print(f'round {r + 1}/{args.rounds}, CRC {v:14s}: create_data {t["cpu"]:.1f} CPU s, '
                      f'{t["wall"]:.1f} s wall', flush=True)
    print(f'\ncreate_data (1 worker, no gt database), {args.frames} frames, {size / 1e6:.1f} MB, best of '
          f'{args.rounds} (CPU seconds):')
    print(f'{"CRC-32C":16s} {"CPU s":>8s} {"frames/s":>9s} {"MB/s":>7s}')
    best = {v: min(t['cpu'] for t in ts) for v, ts in runs.items()}
    for v in variants:
        print(f'{v:16s} {best[v]:8.1f} {args.frames / best[v]:9.2f} {size / 1e6 / best[v]:7.1f}')
    if len(variants) == 2:
        print(f'google-crc32c / numpy CPU time: {best["google-crc32c"] / best["numpy"]:.3f}')
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description='Waymo conversion throughput: ours vs the official TensorFlow path')
    p.add_argument('--frames', type=int, default=None,
                   help='frames in the benchmark segment (default 3; 200 with --create-data)')
    p.add_argument('--create-data', action='store_true',
                   help='time tools/create_data.py with google-crc32c and with the NumPy CRC-32C instead')
    p.add_argument('--rounds', type=int, default=2, help='--create-data: runs of each variant, taking turns')
    p.add_argument('--width', type=int, default=2650, help='TOP range image width (default 2650, real size)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--waymo-python', default=osp.join(ROOT, '.venv-waymo', 'bin', 'python'),
                   help='python of the official toolchain environment (bash tools/setup_waymo_env.sh)')
    args = p.parse_args(argv)
    if args.create_data:
        args.frames = args.frames or 200
        return create_data_benchmark(args)
    args.frames = args.frames or 3
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
