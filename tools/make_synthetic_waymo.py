"""Write synthetic Waymo Open Dataset segments (real ``.tfrecord`` of ``Frame`` protos) from a seed.

    python tools/make_synthetic_waymo.py --out-dir data/waymo --split training --num-segments 2 --frames 5
    python tools/make_synthetic_waymo.py --out-dir data/waymo --split validation --num-segments 1
    python tools/create_data.py waymo --root-path data/waymo --out-dir data/waymo

Everything is decided by ``--seed`` (and the segment's index): lidar calibrations, a ray-cast scene on a ground plane
(vehicles with a low hood and a taller cabin, so that their front is visible in the points; pedestrians, cyclists
and signs as boxes), range images (both returns, TOP per-pixel pose), labels with their point counts. Segments go to
``OUT-DIR/waymo_format/SPLIT/segment-<context name>_with_camera_labels.tfrecord``, Waymo's layout, which
``tools/create_data.py waymo --root-path OUT-DIR`` reads. What is generated: graddrop_mtl/det3d/waymo/synthetic.py.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from graddrop_mtl.det3d.waymo.synthetic import SPLIT_FIRST_INDEX, SyntheticConfig, write_segments  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Write synthetic Waymo segments (.tfrecord of Frame protos).')
    p.add_argument('--out-dir', required=True, help='dataset root: segments go to OUT-DIR/waymo_format/SPLIT')
    p.add_argument('--split', choices=sorted(SPLIT_FIRST_INDEX), default='training',
                   help='Waymo split folder (default training); segments of different splits never coincide')
    p.add_argument('--num-segments', type=int, default=2, help='segments to write (default 2)')
    p.add_argument('--frames', type=int, default=5, help='frames per segment, 10 Hz (default 5)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--width', type=int, default=SyntheticConfig.width,
                   help=f'TOP range image width; Waymo uses 2650 (default {SyntheticConfig.width}); the short-range '
                   'lidars scale with it')
    p.add_argument('--objects', type=int, default=SyntheticConfig.num_objects,
                   help=f'objects per segment (default {SyntheticConfig.num_objects})')
    p.add_argument('--scene-radius', type=float, default=SyntheticConfig.scene_radius,
                   help=f'objects start within this distance of the ego vehicle, metres '
                   f'(default {SyntheticConfig.scene_radius:g})')
    p.add_argument('--max-distance', type=float, default=SyntheticConfig.max_distance,
                   help=f'objects stay within this distance of the ego vehicle in every frame, metres '
                   f'(default {SyntheticConfig.max_distance:g})')
    p.add_argument('--type-weights', type=float, nargs=4, metavar=('VEHICLE', 'PEDESTRIAN', 'CYCLIST', 'SIGN'),
                   help='relative frequencies of the object types (default 0.5 0.25 0.15 0.1)')
    args = p.parse_args(argv)
    for name in ('num_segments', 'frames', 'width'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.width < 16:
        p.error('--width must be >= 16')
    if not 4.0 < args.scene_radius <= args.max_distance:
        p.error('need 4 < --scene-radius <= --max-distance (objects start at least 4 m from the ego vehicle)')
    if args.type_weights is not None and (min(args.type_weights) < 0 or sum(args.type_weights) <= 0):
        p.error('--type-weights must be non-negative with a positive sum')
    return args


def main(argv=None):
    args = parse_args(argv)
    out = osp.join(args.out_dir, 'waymo_format', args.split)
    cfg = SyntheticConfig(num_frames=args.frames, width=args.width, num_objects=args.objects,
                          scene_radius=args.scene_radius, max_distance=args.max_distance,
                          type_weights=None if args.type_weights is None else tuple(args.type_weights))
    t0 = time.perf_counter()
    paths = write_segments(out, num_segments=args.num_segments, seed=args.seed, config=cfg,
                           first_index=SPLIT_FIRST_INDEX[args.split])
    for p in paths:
        print(p)
    print(f'make_synthetic_waymo: {len(paths)} segment(s) x {args.frames} frame(s) in {out} '
          f'({time.perf_counter() - t0:.1f} s)', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
