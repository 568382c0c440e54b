"""Waymo data without TensorFlow: TFRecord framing, range-image conversion, synthetic segments, create_data."""
from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from waymo_open_dataset import dataset_pb2

from graddrop_mtl.det3d.waymo import crc as crc_mod
from graddrop_mtl.det3d.waymo.converter import create_waymo_data, load_points
from graddrop_mtl.det3d.waymo.frame import WaymoFrameError, decode_matrix, encode_matrix_float, iter_frames, parse_frame
from graddrop_mtl.det3d.waymo.infos import gather_instances
from graddrop_mtl.det3d.waymo.points import frame_to_points, rotation_from_rpy
from graddrop_mtl.det3d.waymo.synthetic import (
    LABEL_MARGIN,
    VEHICLE_BODY_HEIGHT,
    VEHICLE_HOOD_LENGTH,
    SyntheticConfig,
    make_segment,
    make_synthetic_dataset,
    write_segments,
)
from graddrop_mtl.det3d.waymo.tfrecord import TFRecordCorruptError, TFRecordReader, write_tfrecord

ROOT = Path(__file__).resolve().parents[2]

TINY = SyntheticConfig(num_frames=2, width=128, num_objects=6)


# ----------------------------------------------------------------------------------------------------------------
# CRC-32C and TFRecord framing

def test_crc32c_known_values():
    # RFC 3720 (iSCSI) B.4 test vectors and the classic check value.
    assert crc_mod.crc32c(b'123456789') == 0xE3069283
    assert crc_mod.crc32c(bytes(32)) == 0x8A9136AA
    assert crc_mod.crc32c(b'\xff' * 32) == 0x62A8AB43
    assert crc_mod.crc32c(bytes(range(32))) == 0x46DD794E
    assert crc_mod.crc32c(b'') == 0


@pytest.mark.parametrize('n', [4095, 4096, 4097, 65536 + 13, 1_000_003])
def test_crc32c_vectorised_matches_bytewise(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    expected = crc_mod._crc_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert crc_mod.crc32c(data) == expected
    k = n // 3  # a running checksum continues across calls
    assert crc_mod.crc32c(data[k:], crc_mod.crc32c(data[:k])) == expected


def _records() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [b'', b'x', rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
            rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(), b'last']


def _offsets(records: list[bytes]) -> list[int]:
    out, pos = [], 0
    for r in records:
        out.append(pos)
        pos += 16 + len(r)
    return out


def test_tfrecord_round_trip(tmp_path):
    path = tmp_path / 'a.tfrecord'
    records = _records()
    assert write_tfrecord(path, records) == len(records)
    assert os.path.getsize(path) == sum(16 + len(r) for r in records)
    got = list(TFRecordReader(path).records())
    assert [r.data for r in got] == records
    assert [r.offset for r in got] == _offsets(records)
    # The framing itself: little-endian length, masked CRC of the length, payload, masked CRC of the payload.
    raw = path.read_bytes()
    length, lcrc = struct.unpack('<QI', raw[:12])
    assert length == 0 and lcrc == crc_mod.masked_crc32c(raw[:8])
    assert struct.unpack('<I', raw[12:16])[0] == crc_mod.masked_crc32c(b'')


def _corrupt(path: Path, pos: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 0x55
    path.write_bytes(bytes(raw))


def test_corrupt_payload_names_file_and_offset(tmp_path, caplog):
    path = tmp_path / 'seg.tfrecord'
    records = _records()
    write_tfrecord(path, records)
    off = _offsets(records)[3]
    _corrupt(path, off + 12 + 1000)
    with pytest.raises(TFRecordCorruptError) as e:
        list(TFRecordReader(path))
    assert e.value.path == str(path) and e.value.offset == off
    assert str(path) in str(e.value) and f'byte offset {off}' in str(e.value) and 'payload CRC' in str(e.value)
    with caplog.at_level(logging.WARNING):
        reader = TFRecordReader(path, skip_corrupt=True)
        got = list(reader)
    assert got == records[:3] + records[4:]
    assert reader.num_skipped == 1
    assert any(f'byte offset {off}' in m and 'skipped' in m for m in caplog.messages)


def test_corrupt_length_header_resyncs(tmp_path):
    path = tmp_path / 'seg.tfrecord'
    records = _records()
    write_tfrecord(path, records)
    off = _offsets(records)[2]
    _corrupt(path, off + 1)  # the length field of record 2
    with pytest.raises(TFRecordCorruptError, match=f'byte offset {off}: length CRC mismatch'):
        list(TFRecordReader(path))
    reader = TFRecordReader(path, skip_corrupt=True)
    got = list(reader.records())
    assert [r.data for r in got] == records[:2] + records[3:]  # found record 3's header again
    assert [r.offset for r in got][2:] == _offsets(records)[3:]


def test_truncated_file(tmp_path):
    path = tmp_path / 'seg.tfrecord'
    records = _records()
    write_tfrecord(path, records)
    off = _offsets(records)[3]
    path.write_bytes(path.read_bytes()[:off + 12 + 100])  # cut inside record 3's payload
    with pytest.raises(TFRecordCorruptError, match=f'byte offset {off}: truncated record') as e:
        list(TFRecordReader(path))
    assert str(path) in str(e.value)
    assert list(TFRecordReader(path, skip_corrupt=True)) == records[:3]
    path.write_bytes(path.read_bytes()[:off + 5])  # cut inside the header
    with pytest.raises(TFRecordCorruptError, match='truncated record header'):
        list(TFRecordReader(path))


def test_error_is_picklable():
    err = TFRecordCorruptError('/x/seg.tfrecord', 42, 'payload CRC mismatch')
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.offset, str(back)) == (err.path, err.offset, str(err))


def test_non_frame_record_is_a_clear_error(tmp_path):
    path = tmp_path / 'seg.tfrecord'
    write_tfrecord(path, [b'\xff\xff\xff garbage'])
    with pytest.raises(WaymoFrameError, match=r'seg.tfrecord: record 0 at byte offset 0 is not a'):
        list(iter_frames(path))


# ----------------------------------------------------------------------------------------------------------------
# Compressed matrices

def test_matrix_float_matches_protobuf():
    arr = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    ours = encode_matrix_float(arr)
    m = dataset_pb2.MatrixFloat()
    m.ParseFromString(ours)
    assert list(m.shape.dims) == [3, 5, 4]
    np.testing.assert_array_equal(np.asarray(m.data, np.float32).reshape(3, 5, 4), arr)
    theirs = dataset_pb2.MatrixFloat(data=arr.ravel().tolist())
    theirs.shape.dims.extend(arr.shape)
    np.testing.assert_array_equal(decode_matrix(zlib.compress(theirs.SerializeToString())), arr)
    m32 = dataset_pb2.MatrixInt32(data=[0, -1, 7, 300, -70000, 2**31 - 1])
    m32.shape.dims.extend([2, 3])
    np.testing.assert_array_equal(decode_matrix(zlib.compress(m32.SerializeToString()), 'int32'),
                                  [[0, -1, 7], [300, -70000, 2**31 - 1]])


def test_bad_matrix_is_a_clear_error():
    bad = dataset_pb2.MatrixFloat(data=[1.0, 2.0, 3.0])
    bad.shape.dims.extend([2, 2])
    with pytest.raises(Exception, match='TOP range image: 3 values do not fill the declared shape'):
        decode_matrix(zlib.compress(bad.SerializeToString()), what='TOP range image')
    with pytest.raises(Exception, match='not a zlib stream'):
        decode_matrix(b'not zlib')


def test_broken_range_image_names_frame_and_laser():
    frame = make_segment(3, 0, TINY)[0]
    frame.lasers[2].ri_return2.range_image_compressed = b'\x00garbage'
    rec = parse_frame(frame.SerializeToString(), 0, 0, 'seg.tfrecord')
    with pytest.raises(WaymoFrameError, match=r'seg.tfrecord: frame 0 .*laser SIDE_LEFT, return 2'):
        frame_to_points(rec)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic segments and their conversion

@pytest.fixture(scope='module')
def tiny_segment(tmp_path_factory) -> Path:
    (path,) = write_segments(tmp_path_factory.mktemp('tiny'), num_segments=1, seed=5,
                             config=SyntheticConfig(num_frames=3, width=256, num_objects=10))
    return path


def _to_world(points: np.ndarray, frame) -> np.ndarray:
    pose = np.asarray(frame.pose.transform).reshape(4, 4)
    return points[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]


def _in_box(xyz: np.ndarray, box) -> np.ndarray:
    rel = xyz - [box.center_x, box.center_y, box.center_z]
    c, s = np.cos(box.heading), np.sin(box.heading)
    return ((np.abs(c * rel[:, 0] + s * rel[:, 1]) <= box.length / 2)
            & (np.abs(-s * rel[:, 0] + c * rel[:, 1]) <= box.width / 2) & (np.abs(rel[:, 2]) <= box.height / 2))


def test_synthetic_segment_is_real_format(tiny_segment):
    frames = list(iter_frames(tiny_segment))
    assert len(frames) == 3
    assert tiny_segment.name == f'segment-{frames[0].frame.context.name}_with_camera_labels.tfrecord'
    f = frames[0].frame
    assert sorted(l.name for l in f.lasers) == [1, 2, 3, 4, 5]
    calib = {c.name: c for c in f.context.laser_calibrations}
    assert len(calib[1].beam_inclinations) == 64 and len(calib[2].beam_inclinations) == 0
    top = next(l for l in f.lasers if l.name == 1)
    ri = decode_matrix(top.ri_return1.range_image_compressed)
    pose = decode_matrix(top.ri_return1.range_image_pose_compressed)
    assert ri.shape == (64, 256, 4) and pose.shape == (64, 256, 6)
    cp = decode_matrix(top.ri_return2.camera_projection_compressed, 'int32')
    assert cp.shape == (64, 256, 6) and not cp.any()
    # Timestamps 10 Hz, the ego moves, every frame carries the full context.
    ts = [r.frame.timestamp_micros for r in frames]
    assert np.diff(ts).tolist() == [100_000, 100_000]
    assert all(r.frame.context.name == f.context.name and len(r.frame.context.laser_calibrations) == 5
               for r in frames)
    # The same seed gives the same bytes; another seed another segment.
    again = make_segment(5, 0, SyntheticConfig(num_frames=3, width=256, num_objects=10))
    assert again[1].SerializeToString() == frames[1].frame.SerializeToString()
    assert make_segment(6, 0, TINY)[0].context.name != f.context.name


def test_converted_points_reproduce_the_scene(tiny_segment):
    """Features and order as mmdet3d's converter; ground points on z = 0 in the world; labels counted right."""
    for rec in iter_frames(tiny_segment):
        frame = rec.frame
        pts = frame_to_points(rec)
        assert pts.dtype == np.float32 and pts.shape[1] == 6
        top_h, top_w = 64, 256
        idx = pts[:, 5]
        top = idx >= 0
        # TOP points come first in each return; their range-image index runs over both returns.
        first_top = np.flatnonzero(top & (idx < top_h * top_w))
        second_top = np.flatnonzero(idx >= top_h * top_w)
        assert first_top.size > 1000 and second_top.size > 10
        assert np.all(np.diff(first_top) == 1) and first_top[0] == 0
        assert np.all(np.diff(idx[first_top]) > 0) and np.all(np.diff(idx[second_top]) > 0)
        assert np.all(idx[~top] == -1)
        # No-label-zone points are dropped (and only they).
        all_pts = frame_to_points(rec, filter_no_label_zone=False)
        n_nlz = 0
        for laser in frame.lasers:
            for ri in (laser.ri_return1, laser.ri_return2):
                img = decode_matrix(ri.range_image_compressed)
                n_nlz += int(np.count_nonzero((img[..., 0] > 0) & (img[..., 3] == 1.0)))
        assert n_nlz > 0 and all_pts.shape[0] - pts.shape[0] == n_nlz
        # Geometry: points outside every label box are ground hits at world z = 0 (+- 3 sigma of range noise,
        # along the ray); points in a box are on the object, above its label's bottom.
        world = _to_world(pts, frame)
        in_any = np.zeros(len(pts), bool)
        for label in frame.laser_labels:
            inside = _in_box(pts[:, :3].astype(np.float64), label.box)
            in_any |= inside
            assert inside.sum() == label.num_lidar_points_in_box
            assert (inside & top).sum() == label.num_top_lidar_points_in_box
        assert np.abs(world[~in_any, 2]).max() < 0.031
        assert world[in_any, 2].min() > 2 * LABEL_MARGIN - 0.05
        # Instances: kept types with points, bottom-centre boxes, the label's difficulty level.
        inst = gather_instances(frame)
        kept = [l for l in frame.laser_labels if l.type in (1, 2, 4) and l.num_lidar_points_in_box > 0]
        assert len(inst) == len(kept) > 0
        for i, l in zip(inst, kept):
            b = l.box
            np.testing.assert_allclose(i['bbox_3d'], [b.center_x, b.center_y, b.center_z - b.height / 2, b.length,
                                                      b.width, b.height, b.heading], rtol=1e-6, atol=1e-5)
            assert i['bbox_label_3d'] == {1: 0, 2: 1, 4: 2}[l.type] and i['num_lidar_pts'] == l.num_lidar_points_in_box
            assert i['difficulty'] == l.detection_difficulty_level
            if l.num_lidar_points_in_box <= 5:
                assert i['difficulty'] == 2


def test_top_lidar_pixel_pose_is_applied():
    """Rolling shutter: converting the TOP lidar with the frame pose instead of its pixel poses moves points."""
    from graddrop_mtl.det3d.waymo.points import range_image_to_points
    segment = make_segment(11, 0, SyntheticConfig(num_frames=1, width=256, num_objects=4))
    frame = segment[0]
    top = next(l for l in frame.lasers if l.name == 1)
    calib = next(c for c in frame.context.laser_calibrations if c.name == 1)
    ri = decode_matrix(top.ri_return1.range_image_compressed)
    pose = decode_matrix(top.ri_return1.range_image_pose_compressed)
    frame_pose = np.asarray(frame.pose.transform).reshape(4, 4)
    with_pose, _, _ = range_image_to_points(ri, calib, pixel_pose=pose, frame_pose=frame_pose)
    without, _, _ = range_image_to_points(ri, calib)
    world = with_pose @ frame_pose[:3, :3].T + frame_pose[:3, 3]
    ground = np.abs(world[:, 2]) < 0.05
    assert ground.mean() > 0.5
    # The same pixel pose for every pixel equal to the frame pose reproduces the uncorrected points.
    rpy = np.array([np.arctan2(frame_pose[2, 1], frame_pose[2, 2]), -np.arcsin(frame_pose[2, 0]),
                    np.arctan2(frame_pose[1, 0], frame_pose[0, 0])])
    np.testing.assert_allclose(rotation_from_rpy(*rpy), frame_pose[:3, :3], atol=1e-12)
    flat = np.broadcast_to(np.concatenate([rpy, frame_pose[:3, 3]]), pose.shape)
    same, _, _ = range_image_to_points(ri, calib, pixel_pose=flat, frame_pose=frame_pose)
    np.testing.assert_allclose(same, without, atol=1e-6)
    assert np.abs(with_pose - without).max() > 0.01  # the ego moved during the sweep


def test_scene_knobs_keep_objects_close_and_choose_types():
    """The demo's scenes: every object within max_distance of the ego vehicle in every frame, types by weight."""
    cfg = SyntheticConfig(num_frames=3, width=128, num_objects=8, scene_radius=17.0, max_distance=17.0,
                          type_weights=(1.0, 0.0, 0.0, 0.0))
    frames = make_segment(3, 0, cfg)
    for f in frames:
        assert len(f.laser_labels) >= 6 and {l.type for l in f.laser_labels} == {1}  # vehicles only
        assert max(np.hypot(l.box.center_x, l.box.center_y) for l in f.laser_labels) <= 17.0 + 0.5
    with pytest.raises(ValueError, match='type_weights'):
        make_segment(3, 0, SyntheticConfig(num_frames=1, width=128, type_weights=(0.0, 0.0, 0.0, 0.0)))


def test_vehicle_front_differs_from_back():
    """A vehicle's points show which end is its front (the label's heading): a low hood ahead of a taller cabin."""
    cfg = SyntheticConfig(num_frames=1, width=512, num_objects=8, scene_radius=15.0, max_distance=15.0,
                          type_weights=(1.0, 0.0, 0.0, 0.0))
    checked = 0
    for seed in range(2):
        for rec in iter_frames_of(make_segment(seed, 0, cfg)):
            pts = frame_to_points(rec).astype(np.float64)
            for label in rec.frame.laser_labels:
                b = label.box
                inside = _in_box(pts[:, :3], b)
                if inside.sum() < 80:
                    continue
                rel = pts[inside, :3] - [b.center_x, b.center_y, b.center_z - b.height / 2]
                ahead = np.cos(b.heading) * rel[:, 0] + np.sin(b.heading) * rel[:, 1]  # along the heading
                front = ahead > (0.5 - 0.8 * VEHICLE_HOOD_LENGTH) * b.length
                back = ahead < 0.0
                if front.sum() < 10 or back.sum() < 10:
                    continue
                # Heights above the label's bottom: the physical box spans [LABEL_MARGIN, height - LABEL_MARGIN].
                top = b.height - LABEL_MARGIN
                body_top = LABEL_MARGIN + VEHICLE_BODY_HEIGHT * (b.height - 2 * LABEL_MARGIN)
                assert rel[front, 2].max() <= body_top + 0.08
                assert rel[back, 2].max() > body_top + 0.5 * (top - body_top)
                checked += 1
    assert checked >= 4


def iter_frames_of(frames):
    from graddrop_mtl.det3d.waymo.frame import FrameRecord
    return [FrameRecord(f, i, 0, '<synthetic>') for i, f in enumerate(frames)]


# ----------------------------------------------------------------------------------------------------------------
# create_data

def test_create_data_layout(synthetic_waymo):
    data_root = synthetic_waymo / 'kitti_format'
    train = pickle.loads((data_root / 'waymo_infos_train.pkl').read_bytes())
    val = pickle.loads((data_root / 'waymo_infos_val.pkl').read_bytes())
    trainval = pickle.loads((data_root / 'waymo_infos_trainval.pkl').read_bytes())
    assert len(train['data_list']) == 2 * 3  # the fixture: 2 training + 1 validation segments of 3 frames
    assert len(val['data_list']) == 1 * 3
    assert len(trainval['data_list']) == len(train['data_list']) + len(val['data_list'])
    assert train['metainfo']['dataset'] == 'waymo' and train['metainfo']['info_version'] == 'mmdet3d_v1.4'
    assert train['data_list'][0]['sample_idx'] == 0 and train['data_list'][-1]['sample_idx'] == 1002
    assert val['data_list'][0]['sample_idx'] == 1000000  # prefix 1, segment 000, frame 000
    segments = sorted((synthetic_waymo / 'waymo_format' / 'training').glob('*.tfrecord'))
    for info in train['data_list'] + val['data_list']:
        lp = info['lidar_points']
        assert lp['num_pts_feats'] == 6 and lp['lidar_path'] == f"{info['sample_idx']:07d}.bin"
        pts = load_points(data_root / 'training' / 'velodyne' / lp['lidar_path'])
        assert pts.shape[0] > 1000
        assert isinstance(info['context_name'], str) and isinstance(info['timestamp'], int)
        assert np.asarray(info['ego2global']).shape == (4, 4)
        for inst in info['instances']:
            assert inst['difficulty'] in (0, 1, 2) and inst['num_lidar_pts'] >= 1
            assert inst['bbox_label_3d'] in (0, 1, 2) and len(inst['bbox_3d']) == 7
    levels = {inst['difficulty'] for info in train['data_list'] for inst in info['instances']}
    assert {0, 1} <= levels  # stored as labelled: UNKNOWN (0) is left to the metric's rule
    # The points of the first training frame are exactly the converter's.
    rec = next(iter_frames(segments[0]))
    np.testing.assert_array_equal(load_points(data_root / 'training' / 'velodyne' / '0000000.bin'),
                                  frame_to_points(rec))
    assert train['data_list'][0]['context_name'] == rec.frame.context.name
    assert train['data_list'][0]['timestamp'] == rec.frame.timestamp_micros
    assert 'lidar_sweeps' not in train['data_list'][0]
    assert train['data_list'][2]['lidar_sweeps'][0]['lidar_points']['lidar_path'] == '0000001.bin'
    # Ground-truth database: one file per instance of the training frames, with its points.
    dbinfos = pickle.loads((data_root / 'waymo_dbinfos_train.pkl').read_bytes())
    n_inst = sum(len(i['instances']) for i in train['data_list'])
    assert sum(len(v) for v in dbinfos.values()) == n_inst and set(dbinfos) <= {'Car', 'Pedestrian', 'Cyclist'}
    for name, entries in dbinfos.items():
        for e in entries:
            # mmengine's BaseDataset.get_data_info replaces sample_idx by the dataset index: image_idx is that.
            inst = train['data_list'][e['image_idx']]['instances'][e['gt_idx']]
            assert name == ('Car', 'Pedestrian', 'Cyclist')[inst['bbox_label_3d']]
            assert e['num_points_in_gt'] == inst['num_lidar_pts']  # mmdet3d's box test agrees with the labels
            np.testing.assert_allclose(e['box3d_lidar'], inst['bbox_3d'], rtol=1e-6)
            obj = np.fromfile(data_root / e['path'], dtype=np.float32).reshape(-1, 6)
            assert obj.shape[0] == inst['num_lidar_pts']


def test_create_data_resumes(tmp_path):
    root = make_synthetic_dataset(tmp_path, segments={'training': 2}, config=TINY, convert=False)
    kw = dict(workers=0, gt_database=False)
    s1 = create_waymo_data(root, root, **kw)
    assert s1['splits']['training'] == dict(segments=2, converted=2, already_done=0, frames=4, records_skipped=0)
    velodyne = root / 'kitti_format' / 'training' / 'velodyne'
    mtimes = {p.name: p.stat().st_mtime_ns for p in velodyne.iterdir()}
    infos_file = root / 'kitti_format' / 'waymo_infos_train.pkl'
    infos1 = pickle.loads(infos_file.read_bytes())

    s2 = create_waymo_data(root, root, **kw)  # nothing to do
    assert s2['splits']['training']['converted'] == 0 and s2['splits']['training']['already_done'] == 2
    assert {p.name: p.stat().st_mtime_ns for p in velodyne.iterdir()} == mtimes
    assert pickle.loads(infos_file.read_bytes()) == infos1

    # An interrupted run: segment 1 has no done marker (its files may be partial) -> only it is converted again.
    state = root / 'kitti_format' / '.create_data' / 'training'
    done = sorted(state.glob('*.done'))
    assert len(done) == 2
    done[1].unlink()
    (velodyne / '0001001.bin').write_bytes(b'partial')
    s3 = create_waymo_data(root, root, **kw)
    assert s3['splits']['training']['converted'] == 1 and s3['splits']['training']['already_done'] == 1
    after = {p.name: p.stat().st_mtime_ns for p in velodyne.iterdir()}
    assert all(after[n] == mtimes[n] for n in mtimes if n.startswith('0000'))
    assert load_points(velodyne / '0001001.bin').shape[0] > 100
    assert pickle.loads(infos_file.read_bytes()) == infos1

    # Other options make the markers stale.
    s4 = create_waymo_data(root, root, load_interval=2, **kw)
    assert s4['splits']['training']['converted'] == 2 and s4['splits']['training']['frames'] == 2
    infos = pickle.loads((root / 'kitti_format' / 'waymo_infos_train.pkl').read_bytes())['data_list']
    assert [i['sample_idx'] for i in infos] == [0, 1000]  # frame 0 of each segment; frame 1 dropped
    # A done segment whose point file has gone is converted again.
    (velodyne / '0001000.bin').unlink()
    s5 = create_waymo_data(root, root, load_interval=2, **kw)
    assert s5['splits']['training']['converted'] == 1 and (velodyne / '0001000.bin').exists()


def test_create_data_corrupt_segment(tmp_path, caplog):
    root = make_synthetic_dataset(tmp_path, segments={'training': 1}, convert=False,
                                  config=SyntheticConfig(num_frames=3, width=128, num_objects=5))
    (seg,) = sorted((root / 'waymo_format' / 'training').glob('*.tfrecord'))
    offsets = [r.offset for r in TFRecordReader(seg).records()]
    _corrupt(seg, offsets[1] + 12 + 500)  # frame 1's payload
    with pytest.raises(TFRecordCorruptError) as e:
        create_waymo_data(root, root, workers=0, gt_database=False)
    assert e.value.path == str(seg) and e.value.offset == offsets[1]
    assert not list((root / 'kitti_format' / '.create_data' / 'training').glob('*.done'))
    with caplog.at_level(logging.WARNING):
        s = create_waymo_data(root, root, workers=0, gt_database=False, skip_corrupt=True)
    assert s['splits']['training']['frames'] == 2 and s['splits']['training']['records_skipped'] == 1
    assert any(str(seg) in m and f'byte offset {offsets[1]}' in m for m in caplog.messages)


def test_create_data_undecodable_frame(tmp_path, caplog):
    frames = make_segment(4, 0, TINY)
    frames[1].lasers[0].ri_return1.range_image_compressed = zlib.compress(b'\x0a\x05abc')  # truncated data field
    seg = tmp_path / 'waymo_format' / 'training' / 'segment-x_with_camera_labels.tfrecord'
    seg.parent.mkdir(parents=True)
    write_tfrecord(seg, [f.SerializeToString() for f in frames])
    with pytest.raises(WaymoFrameError, match=r'segment-x_with_camera_labels.tfrecord: frame 1 \(record at byte '
                                              r'offset \d+\), laser TOP, return 1: cannot decode'):
        create_waymo_data(tmp_path, tmp_path, workers=0, gt_database=False)
    with caplog.at_level(logging.WARNING):
        s = create_waymo_data(tmp_path, tmp_path, workers=0, gt_database=False, skip_corrupt=True)
    assert s['splits']['training']['frames'] == 1 and s['splits']['training']['records_skipped'] == 1
    assert any('frame 1' in m and 'skipped' in m for m in caplog.messages)


def test_create_data_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'waymo_format/\{training,validation,testing\}/\*\.tfrecord'):
        create_waymo_data(tmp_path, tmp_path, workers=0)


def _tool(name: str):
    """Import ``tools/<name>.py`` as a module (to call its ``main(argv)`` in this process)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_command_line_tools(tmp_path, capsys):
    """tools/make_synthetic_waymo.py, then tools/create_data.py waymo as a script with 2 worker processes (segments
    and ground-truth database), then a rerun that finds every segment done."""
    make = _tool('make_synthetic_waymo')
    for split, n in (('training', 2), ('testing', 1)):
        assert make.main(['--out-dir', str(tmp_path), '--split', split, '--num-segments', str(n), '--frames', '2',
                          '--width', '128', '--objects', '5']) == 0
    assert len(list((tmp_path / 'waymo_format' / 'training').glob('segment-*_with_camera_labels.tfrecord'))) == 2
    with pytest.raises(SystemExit):
        make.main(['--out-dir', str(tmp_path), '--frames', '0'])
    args = ['waymo', '--root-path', str(tmp_path), '--out-dir', str(tmp_path), '--workers', '2']
    res = subprocess.run([sys.executable, 'tools/create_data.py', *args], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr
    assert 'training: 4 frames, 2 segments (2 converted, 0 already done)' in res.stdout
    assert 'testing: 2 frames, 1 segments (1 converted, 0 already done)' in res.stdout
    test_infos = pickle.loads((tmp_path / 'kitti_format' / 'waymo_infos_test.pkl').read_bytes())['data_list']
    assert [i['sample_idx'] for i in test_infos] == [2000000, 2000001]
    assert all('instances' not in i for i in test_infos)
    assert (tmp_path / 'kitti_format' / 'testing' / 'velodyne' / '2000001.bin').exists()
    dbinfos = pickle.loads((tmp_path / 'kitti_format' / 'waymo_dbinfos_train.pkl').read_bytes())  # 2 workers
    n_inst = sum(len(i['instances']) for i in pickle.loads(
        (tmp_path / 'kitti_format' / 'waymo_infos_train.pkl').read_bytes())['data_list'])
    assert sum(len(v) for v in dbinfos.values()) == n_inst > 0
    capsys.readouterr()
    assert _tool('create_data').main(args + ['--no-gt-database']) == 0
    assert 'training: 4 frames, 2 segments (0 converted, 2 already done)' in capsys.readouterr().out
