"""Waymo Open Dataset v1.4 without TensorFlow: segments in, the mmdet3d 1.4 layout out (README.md beside this file).

* :mod:`.tfrecord` / :mod:`.crc` - TFRecord reader (both CRCs verified; corrupt records name file and byte
  offset, or are skipped with ``skip_corrupt``) and writer.
* :mod:`.frame` - ``Frame`` protos from a segment; zlib ``MatrixFloat`` range images straight into NumPy.
* :mod:`.points` - range images (both returns, five lidars, TOP per-pixel pose) to vehicle-frame points, the same
  features and order as mmdet3d 1.4's Waymo converter.
* :mod:`.infos` - laser labels and frames to mmdet3d 1.4 info dicts (+ ``difficulty``, ``context_name``,
  ``timestamp``).
* :mod:`.converter` - ``tools/create_data.py waymo``: parallel, resumable conversion, and mmdet3d's ground-truth
  database.
* :mod:`.synthetic` - synthetic segments in the real format (``tools/make_synthetic_waymo.py``).

The stock ``mmdet3d`` ``WaymoDataset`` reads the output; nothing here registers a component.
"""
from .crc import crc32c, masked_crc32c
from .frame import FrameRecord, WaymoFrameError, decode_matrix, iter_frames, parse_frame
from .infos import CLASS_NAMES, frame_info, gather_instances, sample_index
from .points import NUM_POINT_FEATURES, frame_to_points, range_image_to_points
from .tfrecord import TFRecordCorruptError, TFRecordReader, TFRecordWriter, read_tfrecord, write_tfrecord

__all__ = [
    'crc32c', 'masked_crc32c', 'TFRecordCorruptError', 'TFRecordReader', 'TFRecordWriter', 'read_tfrecord',
    'write_tfrecord', 'FrameRecord', 'WaymoFrameError', 'decode_matrix', 'iter_frames', 'parse_frame',
    'NUM_POINT_FEATURES', 'frame_to_points', 'range_image_to_points', 'CLASS_NAMES', 'frame_info',
    'gather_instances', 'sample_index',
]
