"""Prepare a dataset for mmdet3d (mmdet3d's ``tools/create_data.py`` command line), without TensorFlow.

    python tools/create_data.py waymo --root-path data/waymo --out-dir data/waymo [--workers 4] \\
        [--load-interval 5] [--skip-corrupt]

Reads Waymo Open Dataset v1.4 segments from ROOT/waymo_format/{training,validation,testing}/*.tfrecord and writes
the mmdet3d 1.4 layout under OUT/kitti_format (the stock Waymo configs' ``data_root``): point ``.bin`` files,
``waymo_infos_{train,val,trainval,test}.pkl``, and the ground-truth database ``waymo_gt_database/`` +
``waymo_dbinfos_train.pkl``. A rerun skips the segments that are already converted. Details:
graddrop_mtl/det3d/waymo/README.md.
"""
import argparse
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Data converter (graddrop-mtl; Waymo without TensorFlow)')
    parser.add_argument('dataset', choices=['waymo'], help='name of the dataset')
    parser.add_argument('--root-path', required=True, help='dataset root: ROOT/waymo_format/<split>/*.tfrecord')
    parser.add_argument('--out-dir', required=True, help='output root: writes OUT/kitti_format')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='worker processes (default min(4, CPUs); 0 or 1: in this process)')
    parser.add_argument('--load-interval', type=int, default=1,
                        help='keep one training frame in N (mmdet3d "D5" = 5); default 1: all frames. '
                        'Validation/testing keep all frames')
    parser.add_argument('--skip-corrupt', action='store_true',
                        help='log and skip corrupted or truncated records instead of stopping')
    parser.add_argument('--extra-tag', default='waymo', help='info file prefix (default waymo)')
    parser.add_argument('--max-sweeps', type=int, default=10, help='previous frames listed in lidar_sweeps')
    parser.add_argument('--splits', nargs='+', default=['training', 'validation', 'testing'],
                        choices=['training', 'validation', 'testing'], help='splits to convert (default: all found)')
    parser.add_argument('--no-gt-database', action='store_true', help='do not build the ground-truth database')
    parser.add_argument('--save-images', action='store_true', help='also extract the camera JPEGs (image_0..4)')
    parser.add_argument('--version', default='v1.4', choices=['v1.4'], help='Waymo Open Dataset version')
    args = parser.parse_args(argv)
    if args.load_interval < 1:
        parser.error('--load-interval must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    from graddrop_mtl.det3d.waymo.converter import create_waymo_data
    summary = create_waymo_data(
        args.root_path, args.out_dir, workers=args.workers, load_interval=args.load_interval,
        skip_corrupt=args.skip_corrupt, info_prefix=args.extra_tag, max_sweeps=args.max_sweeps,
        splits=tuple(args.splits), gt_database=not args.no_gt_database, save_images=args.save_images)
    for split, s in summary['splits'].items():
        print(f"{split}: {s['frames']} frames, {s['segments']} segments ({s['converted']} converted, "
              f"{s['already_done']} already done), {s['records_skipped']} corrupt records skipped")
    print(f"data_root: {summary['data_root']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
