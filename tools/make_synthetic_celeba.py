"""Write a small synthetic CelebA set in the official on-disk format (for tests and quick runs).

    python tools/make_synthetic_celeba.py --out-dir data/celeba_synth --num-images 3000 --seed 0 --size 64

Writes ``img_align_celeba/000001.jpg ...``, ``list_attr_celeba.txt`` and ``list_eval_partition.txt`` (train / val /
test in consecutive blocks, 80/10/10 by default). The 40 attributes have CelebA's frequencies. ``--model factors``
(default): eight latent factors per image are drawn into it, and each attribute is a thresholded function of one or
two of them, so that attributes share, correlate, anticorrelate or are independent
(``graddrop_mtl.datasets.celeba.factor_loadings``); ``--model independent``: each attribute independent, painted as
its own patch (``render_synthetic_face``). ``--size`` is an int (square) or ``HxW``, e.g. ``218x178``
for the official aligned size.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from graddrop_mtl.datasets.celeba import SYNTHETIC_MODELS, write_synthetic_celeba  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split('x')
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f'--size must be an int or HxW, got {text!r}') from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f'--size must be an int or HxW with both sides >= 8, got {text!r}')
    return values[0], values[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Write a synthetic CelebA-format data set')
    parser.add_argument('--out-dir', required=True, help='output folder (the data_root of the CelebA configs)')
    parser.add_argument('--num-images', type=int, default=3000, help='number of images (all splits)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--size', type=parse_size, default=(64, 64), help='image size: int or HxW (default 64)')
    parser.add_argument('--split-fractions', type=float, nargs=3, default=(0.8, 0.1, 0.1),
                        metavar=('TRAIN', 'VAL', 'TEST'), help='fractions of train / val / test images')
    parser.add_argument('--model', choices=SYNTHETIC_MODELS, default='factors',
                        help='how attributes relate: shared latent factors (default) or independent')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    summary = write_synthetic_celeba(args.out_dir, num_images=args.num_images, seed=args.seed, size=args.size,
                                     split_fractions=args.split_fractions, model=args.model)
    print(json.dumps(dict(out_dir=args.out_dir, model=args.model, num_images=summary['num_images'],
                          splits=summary['splits'],
                          majority_error_rate={k: round(v, 2) for k, v in summary['majority_error_rate'].items()})))


if __name__ == '__main__':
    main()
