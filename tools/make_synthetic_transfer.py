"""Write small synthetic CIFAR-100 and downsampled-ImageNet (32x32) sets in exactly the real on-disk formats.

    python tools/make_synthetic_transfer.py --out-dir data/cifar100_transfer_synth [--seed 0]
        [--cifar-train 3000] [--cifar-test 1000] [--imagenet-batches 10] [--imagenet-per-batch 500]
        [--imagenet-val 1000] [--noise 40] [--relation shared|independent]

Layout written under ``--out-dir`` (what ``CIFAR100Dataset`` / ``ImageNet32Dataset`` read)::

    cifar-100-python/{train,test,meta}
    Imagenet32_train/train_data_batch_1 .. _N
    Imagenet32_val/val_data

Images are class-dependent so that a network can learn above chance in a short CPU run: every class has a
prototype, a random mean colour plus a spatial pattern (a 4x4 grid of colour offsets, upsampled to 32x32); a sample
is its class prototype plus a random brightness shift and per-pixel Gaussian noise (``--noise``, in grey levels),
clipped to 0..255. CIFAR-100 labels are balanced (``i % 100``, shuffled); ImageNet labels are uniform over 1000
classes. How the source relates to the target (``--relation``):

* ``shared`` (default): the patterns are visual factors shared between the datasets. ImageNet class ``j`` has the
  pattern of CIFAR-100 class ``j % 100`` and its own mean colour, so the ten ImageNet classes ``c, c + 100, ...``
  differ from one another by colour only and share CIFAR class ``c``'s pattern: the features that tell ImageNet's
  classes apart include those that tell CIFAR's apart, and transfer can help the small CIFAR set;
* ``independent`` (the control): every ImageNet class has its own pattern, drawn independently of CIFAR's; the
  source teaches nothing specific about the target's classes.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from graddrop_mtl.datasets.cifar_transfer import write_cifar100, write_imagenet32  # noqa: E402

RELATIONS = ('shared', 'independent')


def class_prototypes(num_classes: int, rng: np.random.Generator, patterns: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``float32 [C, 3, 32, 32]`` prototypes and their patterns ``[C, 3, 4, 4]``: a mean colour in [40, 215] plus a
    4x4 grid of offsets in [-40, 40] (drawn here unless ``patterns`` are given)."""
    colour = rng.uniform(40, 215, size=(num_classes, 3, 1, 1))
    grid = rng.uniform(-40, 40, size=(num_classes, 3, 4, 4)) if patterns is None else patterns
    return (colour + grid.repeat(8, axis=2).repeat(8, axis=3)).astype(np.float32), grid


def sample_images(prototypes: np.ndarray, labels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``uint8 [N, 3, 32, 32]`` noisy copies of the labels' prototypes."""
    shift = rng.normal(0.0, 15.0, size=(len(labels), 1, 1, 1))
    pix = prototypes[labels] + shift + rng.normal(0.0, noise, size=(len(labels), 3, 32, 32))
    return np.clip(np.rint(pix), 0, 255).astype(np.uint8)


def make_transfer_sets(out_dir: str, seed: int = 0, cifar_train: int = 3000, cifar_test: int = 1000,
                       imagenet_batches: int = 10, imagenet_per_batch: int = 500, imagenet_val: int = 1000,
                       noise: float = 40.0, relation: str = 'shared') -> dict[str, str]:
    """Write both sets under ``out_dir``; returns the folders written (``cifar``, ``imagenet_train``,
    ``imagenet_val``). ``relation``: ``'shared'`` (ImageNet class ``j`` has CIFAR class ``j % 100``'s pattern) or
    ``'independent'`` (the control), see the module docstring."""
    if min(cifar_train, cifar_test, imagenet_batches, imagenet_per_batch, imagenet_val) < 1:
        raise ValueError('every size must be >= 1')
    if relation not in RELATIONS:
        raise ValueError(f'relation must be one of {RELATIONS}, got {relation!r}')
    rng = np.random.default_rng(seed)
    cifar_protos, cifar_patterns = class_prototypes(100, rng)
    shared = cifar_patterns[np.arange(1000) % 100] if relation == 'shared' else None
    imnet_protos, _ = class_prototypes(1000, rng, shared)

    def cifar_split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % 100)
        return sample_images(cifar_protos, labels, noise, rng), labels

    train, test = cifar_split(cifar_train), cifar_split(cifar_test)
    names = [f'synthetic_class_{c:03d}' for c in range(100)]
    cifar_dir = write_cifar100(out_dir, train, test, names)

    def imnet_split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 1000, size=n)
        return sample_images(imnet_protos, labels, noise, rng), labels

    batches = [imnet_split(imagenet_per_batch) for _ in range(imagenet_batches)]
    train_dir, val_dir = write_imagenet32(out_dir, batches, imnet_split(imagenet_val))
    return dict(cifar=cifar_dir, imagenet_train=train_dir, imagenet_val=val_dir)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Write synthetic CIFAR-100 and Imagenet32 sets in the real formats')
    p.add_argument('--out-dir', required=True, help='data root to write (e.g. data/cifar100_transfer_synth)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cifar-train', type=int, default=3000, help='rows of cifar-100-python/train (split 80/20 '
                   'into train/val by CIFAR100Dataset)')
    p.add_argument('--cifar-test', type=int, default=1000, help='rows of cifar-100-python/test')
    p.add_argument('--imagenet-batches', type=int, default=10, help='number of train_data_batch_* files')
    p.add_argument('--imagenet-per-batch', type=int, default=500, help='rows per train_data_batch_* file')
    p.add_argument('--imagenet-val', type=int, default=1000, help='rows of Imagenet32_val/val_data')
    p.add_argument('--noise', type=float, default=40.0, help='per-pixel Gaussian noise (grey levels)')
    p.add_argument('--relation', choices=RELATIONS, default='shared',
                   help='shared: ImageNet classes share the CIFAR classes\' patterns (transfer can help); '
                   'independent: the control')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    out = make_transfer_sets(a.out_dir, a.seed, a.cifar_train, a.cifar_test, a.imagenet_batches,
                             a.imagenet_per_batch, a.imagenet_val, a.noise, a.relation)
    for name, path in out.items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()
