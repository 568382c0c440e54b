"""Convert Waymo segments with the OFFICIAL TensorFlow toolchain, as mmdet3d 1.4's Waymo converter does.

Runs inside .venv-waymo (tensorflow-cpu 2.13 + waymo-open-dataset-tf-2-12-0; create it with
``bash tools/setup_waymo_env.sh``); it imports nothing from graddrop_mtl. It is the reference side of the parity test
(tests/det3d/test_waymo_data.py) and of tools/analysis/benchmark_waymo_convert.py::

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python TF_CPP_MIN_LOG_LEVEL=3 \\
        .venv-waymo/bin/python tools/waymo_official/convert_frames.py SEGMENT.tfrecord [...] --out-dir DIR

For every frame it writes ``DIR/<segment stem>/<frame index>.npz`` with:

* ``points``: ``[N, 6]`` float32, the point cloud of mmdet3d's ``Waymo2KITTI.save_lidar``: frames read with
  ``tf.data.TFRecordDataset``, range images parsed by ``frame_utils.parse_range_image_and_camera_projection``,
  converted with ``range_image_utils.extract_point_cloud_from_range_image`` (TOP lidar with its per-pixel pose via
  ``transform_utils``), pixels with range > 0 outside no-label zones, lidars sorted by name, first then second
  return, features x, y, z, intensity, elongation, range-image index (TOP) or -1;
* ``points_frame_utils``: ``[M, 3]`` float32, both returns of ``frame_utils.convert_range_image_to_point_cloud``
  (the official API itself: no no-label-zone filter);
* ``bbox_3d`` ``[K, 7]`` float32, ``bbox_label_3d``, ``num_lidar_pts``, ``difficulty`` (int64): mmdet3d's
  ``gather_instance_info`` (VEHICLE/PEDESTRIAN/CYCLIST with at least one point, bottom-centre boxes), ``difficulty``
  the label's ``detection_difficulty_level`` (0, 1, 2);
* ``timestamp``, ``context_name``.

``--copy-to FILE`` also writes the records read to FILE with TensorFlow's own TFRecord writer (the parity test reads
it back with graddrop_mtl's reader).

``--time-only`` converts the points without writing anything and prints one JSON line with the number of frames and
the wall-clock and CPU seconds spent per phase: ``seconds``/``cpu_seconds`` from the record to the point array
(proto parsing, range-image parsing and conversion; the TFRecord read itself is not timed) and
``convert_seconds``/``convert_cpu_seconds`` for the range-image to point conversion alone. ``--threads`` sets
TensorFlow's intra/inter-op thread counts (1 = one core).
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('segments', nargs='+', help='.tfrecord files of Frame protos')
    p.add_argument('--out-dir', help='where to write <segment stem>/<frame>.npz (required unless --time-only)')
    p.add_argument('--time-only', action='store_true', help='only time the point conversion; print JSON')
    p.add_argument('--threads', type=int, default=0, help='TensorFlow intra/inter-op threads (0: TF default)')
    p.add_argument('--max-frames', type=int, default=0, help='stop each segment after this many frames (0: all)')
    p.add_argument('--copy-to', help='also write every record read to this file with tf.io.TFRecordWriter')
    args = p.parse_args(argv)
    if not args.time_only and not args.out_dir:
        p.error('--out-dir is required unless --time-only')
    return args


def main(argv=None):
    args = _parse_args(argv)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from waymo_open_dataset import dataset_pb2
    from waymo_open_dataset.utils import frame_utils, range_image_utils, transform_utils

    def returns_to_points(frame, range_images, range_image_top_pose, ri_index):
        """One return of every lidar, as mmdet3d's Waymo2KITTI.convert_range_image_to_point_cloud."""
        calibrations = sorted(frame.context.laser_calibrations, key=lambda c: c.name)
        frame_pose = tf.convert_to_tensor(value=np.reshape(np.array(frame.pose.transform), [4, 4]))
        top_pose = tf.reshape(tf.convert_to_tensor(value=range_image_top_pose.data),
                              range_image_top_pose.shape.dims)
        top_pose_rotation = transform_utils.get_rotation_matrix(top_pose[..., 0], top_pose[..., 1],
                                                                top_pose[..., 2])
        top_pose = transform_utils.get_transform(top_pose_rotation, top_pose[..., 3:])
        parts = []
        for c in calibrations:
            range_image = range_images[c.name][ri_index]
            if len(c.beam_inclinations) == 0:
                inclinations = range_image_utils.compute_inclination(
                    tf.constant([c.beam_inclination_min, c.beam_inclination_max]),
                    height=range_image.shape.dims[0])
            else:
                inclinations = tf.constant(c.beam_inclinations)
            inclinations = tf.reverse(inclinations, axis=[-1])
            extrinsic = np.reshape(np.array(c.extrinsic.transform), [4, 4])
            ri = tf.reshape(tf.convert_to_tensor(value=range_image.data), range_image.shape.dims)
            pixel_pose = frame_pose_local = None
            if c.name == dataset_pb2.LaserName.TOP:
                pixel_pose = tf.expand_dims(top_pose, axis=0)
                frame_pose_local = tf.expand_dims(frame_pose, axis=0)
            mask = (ri[..., 0] > 0) & (ri[..., 3] != 1.0)  # drop no-label-zone points, as mmdet3d
            cartesian = range_image_utils.extract_point_cloud_from_range_image(
                tf.expand_dims(ri[..., 0], axis=0), tf.expand_dims(extrinsic, axis=0),
                tf.expand_dims(tf.convert_to_tensor(value=inclinations), axis=0),
                pixel_pose=pixel_pose, frame_pose=frame_pose_local)
            cartesian = tf.squeeze(cartesian, axis=0)
            index = tf.where(mask)
            xyz = tf.gather_nd(cartesian, index).numpy()
            intensity = tf.gather_nd(ri[..., 1], index).numpy()
            elongation = tf.gather_nd(ri[..., 2], index).numpy()
            if c.name == dataset_pb2.LaserName.TOP:
                flat = ((ri_index * mask.shape[0] + index[:, 0]) * mask.shape[1] + index[:, 1])
                flat = flat.numpy().astype(elongation.dtype)
            else:
                flat = np.full_like(elongation, -1)
            parts.append(np.column_stack([xyz, intensity, elongation, flat]))
        return parts

    def frame_points(frame):
        range_images, projections, _, top_pose = frame_utils.parse_range_image_and_camera_projection(frame)
        t0, c0 = time.perf_counter(), time.process_time()
        parts = returns_to_points(frame, range_images, top_pose, 0) + returns_to_points(frame, range_images,
                                                                                        top_pose, 1)
        points = np.concatenate(parts, axis=0).astype(np.float32)
        return points, (range_images, projections, top_pose), (time.perf_counter() - t0, time.process_time() - c0)

    def instances(frame):
        keep = {1: 0, 2: 1, 4: 2}  # VEHICLE, PEDESTRIAN, CYCLIST
        boxes, labels, npts, diff = [], [], [], []
        for obj in frame.laser_labels:
            if obj.type not in keep or obj.num_lidar_points_in_box < 1:
                continue
            b = obj.box
            boxes.append(np.array([b.center_x, b.center_y, b.center_z - b.height / 2, b.length, b.width,
                                   b.height, b.heading]).astype(np.float32))
            labels.append(keep[obj.type])
            npts.append(obj.num_lidar_points_in_box)
            diff.append(int(obj.detection_difficulty_level))
        return (np.array(boxes, np.float32).reshape(-1, 7), np.array(labels, np.int64),
                np.array(npts, np.int64), np.array(diff, np.int64))

    n_frames, total, convert, total_cpu, convert_cpu = 0, 0.0, 0.0, 0.0, 0.0
    copy = tf.io.TFRecordWriter(args.copy_to) if args.copy_to else None
    for path in args.segments:
        stem = os.path.splitext(os.path.basename(path))[0]
        if args.out_dir:
            os.makedirs(os.path.join(args.out_dir, stem), exist_ok=True)
        dataset = tf.data.TFRecordDataset(path, compression_type='')
        for idx, data in enumerate(dataset):
            if args.max_frames and idx >= args.max_frames:
                break
            if copy is not None:
                copy.write(data.numpy())
            t0, c0 = time.perf_counter(), time.process_time()
            frame = dataset_pb2.Frame()
            frame.ParseFromString(bytearray(data.numpy()))
            points, (range_images, projections, top_pose), (t_conv, c_conv) = frame_points(frame)
            total += time.perf_counter() - t0
            total_cpu += time.process_time() - c0
            convert += t_conv
            convert_cpu += c_conv
            n_frames += 1
            if args.time_only:
                continue
            official = []
            for ri_index in (0, 1):
                pts, _ = frame_utils.convert_range_image_to_point_cloud(frame, range_images, projections, top_pose,
                                                                        ri_index=ri_index)
                official.extend(pts)
            boxes, labels, npts, diff = instances(frame)
            np.savez(os.path.join(args.out_dir, stem, f'{idx:03d}.npz'), points=points,
                     points_frame_utils=np.concatenate(official, axis=0).astype(np.float32),
                     bbox_3d=boxes, bbox_label_3d=labels, num_lidar_pts=npts, difficulty=diff,
                     timestamp=np.int64(frame.timestamp_micros), context_name=np.str_(frame.context.name))
    if copy is not None:
        copy.close()
    if args.time_only:
        print(json.dumps(dict(frames=n_frames, seconds=total, convert_seconds=convert, cpu_seconds=total_cpu,
                              convert_cpu_seconds=convert_cpu)))
    else:
        print(f'convert_frames: {n_frames} frames written to {args.out_dir}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
