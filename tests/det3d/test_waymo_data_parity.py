"""Our TensorFlow-free Waymo conversion equals the official TensorFlow one (run in .venv-waymo)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from graddrop_mtl.det3d.waymo.frame import iter_frames
from graddrop_mtl.det3d.waymo.infos import gather_instances
from graddrop_mtl.det3d.waymo.points import frame_to_points
from graddrop_mtl.det3d.waymo.synthetic import SyntheticConfig, write_segments
from graddrop_mtl.det3d.waymo.tfrecord import TFRecordReader

ROOT = Path(__file__).resolve().parents[2]
WAYMO_PYTHON = Path(os.environ.get('WAYMO_VENV', ROOT / '.venv-waymo')) / 'bin' / 'python'


def _official(*args: str) -> None:
    if not WAYMO_PYTHON.exists():
        pytest.fail(f'the official Waymo toolchain environment is missing ({WAYMO_PYTHON}): create it with '
                    f'`bash tools/setup_waymo_env.sh`')
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION='python', TF_CPP_MIN_LOG_LEVEL='3',
               CUDA_VISIBLE_DEVICES='')
    env.pop('PYTHONPATH', None)
    res = subprocess.run([str(WAYMO_PYTHON), str(ROOT / 'tools' / 'waymo_official' / 'convert_frames.py'), *args],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, f'official conversion failed:\n{res.stderr[-4000:]}'


@pytest.mark.slow
def test_points_and_boxes_match_official_tensorflow_conversion(tmp_path):
    paths = write_segments(tmp_path / 'segments', num_segments=2, seed=7,
                           config=SyntheticConfig(num_frames=2, width=512, num_objects=12))
    copy = tmp_path / 'tf_written.tfrecord'
    _official(*map(str, paths), '--out-dir', str(tmp_path / 'official'), '--copy-to', str(copy))

    n_frames = 0
    for path in paths:
        for rec in iter_frames(path):
            ref = np.load(tmp_path / 'official' / path.stem / f'{rec.index:03d}.npz')
            ours = frame_to_points(rec)
            theirs = ref['points']
            # Same points in the same order: xyz within 1e-4 m, the other features identical.
            assert ours.shape == theirs.shape and ours.shape[0] > 10_000
            assert np.abs(ours[:, :3] - theirs[:, :3]).max() < 1e-4
            np.testing.assert_array_equal(ours[:, 3:], theirs[:, 3:])
            # The official frame_utils API itself (no no-label-zone filter).
            unfiltered = frame_to_points(rec, filter_no_label_zone=False)
            assert unfiltered.shape[0] == ref['points_frame_utils'].shape[0] > ours.shape[0]
            assert np.abs(unfiltered[:, :3] - ref['points_frame_utils']).max() < 1e-4
            # Same boxes, labels, point counts, difficulties; same frame identity.
            inst = gather_instances(rec.frame)
            assert len(inst) == len(ref['bbox_3d']) > 0
            np.testing.assert_array_equal(np.array([i['bbox_3d'] for i in inst], np.float32), ref['bbox_3d'])
            assert [i['bbox_label_3d'] for i in inst] == ref['bbox_label_3d'].tolist()
            assert [i['num_lidar_pts'] for i in inst] == ref['num_lidar_pts'].tolist()
            assert [i['difficulty'] for i in inst] == ref['difficulty'].tolist()
            assert rec.frame.timestamp_micros == int(ref['timestamp'])
            assert rec.frame.context.name == str(ref['context_name'])
            n_frames += 1
    assert n_frames == 4

    # TensorFlow read our TFRecord files (it checks their CRCs) and we read the file TensorFlow wrote.
    ours_payloads = [r for p in paths for r in TFRecordReader(p)]
    assert list(TFRecordReader(copy)) == ours_payloads
    assert copy.read_bytes() == b''.join(p.read_bytes() for p in paths)
