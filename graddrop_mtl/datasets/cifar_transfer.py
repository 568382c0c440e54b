"""ImageNet (32x32) -> CIFAR-100 transfer data (paper appendix A.5): both datasets in their real on-disk formats, the
pairing that makes every training batch 8 CIFAR-100 + 8 ImageNet images, and writers of both formats.

On-disk layout (``data_root``)::

    cifar-100-python/train       pickled dict: b'data' uint8 [50000, 3072], b'fine_labels' (0..99), b'filenames', ...
    cifar-100-python/test        the same with 10000 rows
    cifar-100-python/meta        pickled dict: b'fine_label_names' (100 names), b'coarse_label_names'
    Imagenet32_train/train_data_batch_1 .. _10    pickled dicts: 'data' uint8 [N, 3072], 'labels' (1..1000), 'mean'
    Imagenet32_val/val_data                       the same (50000 rows); 'mean' is optional everywhere

Each row is one 32x32 image stored channel-planar: 1024 red values, then 1024 green, then 1024 blue, each plane row
by row (the CIFAR layout, also used by the downsampled ImageNet release of Chrabaszcz et al. 2017). CIFAR's pickles
come from Python 2 (byte-string keys); the ImageNet ones from Python 3 (str keys): both kinds of keys are accepted.
A downsampled-ImageNet file may also be given in the release's ``.npz`` variant (``train_data_batch_1.npz``).

Items are ``dict(img=uint8 [3, 32, 32], gt_label=int (0-based), domain=int, sample_idx=int)``; images stay uint8
here and are divided by 256 in the model's data preprocessor (no augmentation). Domain ids: ``0`` ImageNet (the
source), ``1`` CIFAR-100 (the transfer target), see :data:`DOMAINS`; the DenseNet's loss keys follow that order.

CIFAR-100 splits: ``'train'`` is the first 80% (40k) of the official training file, ``'val'`` the last 20% (10k),
``'trainval'`` all of it and ``'test'`` the official test file (the paper's 40k/10k split; the split is by position,
deterministic, and ``val_fraction`` sets it).

Config::

    train_dataloader = dict(
        batch_size=8,                                   # 8 pairs = 8 ImageNet + 8 CIFAR-100 images
        sampler=dict(type='InfiniteSampler', shuffle=True),
        collate_fn=dict(type='transfer_collate'),
        dataset=dict(type='PairedTransferDataset',
                     source=dict(type='ImageNet32Dataset', data_root=root, split='train'),
                     target=dict(type='CIFAR100Dataset', data_root=root, split='train')))
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.registry import FUNCTIONS
from torch.utils.data import Dataset

from ..registry import DATASETS

#: domain names in id order: ImageNet is the source (id 0), CIFAR-100 the transfer target (id 1).
DOMAINS: tuple[str, ...] = ('imagenet', 'cifar')
IMAGENET, CIFAR = 0, 1
IMAGE_SHAPE = (3, 32, 32)
ROW_SIZE = 3 * 32 * 32
CIFAR_FOLDER = 'cifar-100-python'
IMAGENET_TRAIN_FOLDER = 'Imagenet32_train'
IMAGENET_VAL_FOLDER = 'Imagenet32_val'
NUM_IMAGENET_TRAIN_BATCHES = 10


# ---------------------------------------------------------------------------------------------------------------
# Reading the pickles.
# ---------------------------------------------------------------------------------------------------------------
def _str_key(key: Any) -> Any:
    return key.decode('latin1') if isinstance(key, bytes) else key


def load_pickle_dict(path: str) -> dict[str, Any]:
    """Load a pickled dict written by Python 2 or 3 (or a ``.npz`` archive); keys are returned as ``str``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable pickle / npz, or does not hold a dict.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such file')
    try:
        if path.endswith('.npz'):
            with np.load(path, allow_pickle=False) as archive:
                obj = {k: archive[k] for k in archive.files}
        else:
            with open(path, 'rb') as f:
                obj = pickle.load(f, encoding='latin1')   # Python 2 pickles (CIFAR) need an encoding for numpy
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ValueError(f'{path}: not a readable pickle ({type(err).__name__}: {err})') from None
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path}: expected a pickled dict, found {type(obj).__name__}')
    return {_str_key(k): v for k, v in obj.items()}


def _get(d: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in d:
        raise KeyError(f'{path}: missing key {key!r} (the file has keys {sorted(map(str, d))})')
    return d[key]


def _check_images(data: Any, path: str, key: str = 'data') -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise ValueError(f'{path}: key {key!r} must be uint8 pixel rows, found dtype {arr.dtype}')
    if arr.ndim != 2 or arr.shape[1] != ROW_SIZE:
        raise ValueError(f'{path}: key {key!r} must have shape [N, {ROW_SIZE}] (32x32 RGB rows), found '
                         f'{tuple(arr.shape)}')
    return arr


def _check_labels(labels: Any, n_rows: int, low: int, high: int, path: str, key: str) -> np.ndarray:
    try:
        arr = np.asarray(labels)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f'{path}: key {key!r} is not a list of integer labels ({err})') from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{path}: key {key!r} must be a flat list of integer labels, found dtype {arr.dtype} and '
                         f'shape {tuple(arr.shape)}')
    if arr.shape[0] != n_rows:
        raise ValueError(f'{path}: key {key!r} has {arr.shape[0]} labels but "data" has {n_rows} rows')
    bad = np.flatnonzero((arr < low) | (arr > high))
    if bad.size:
        raise ValueError(f'{path}: key {key!r} has label {int(arr[bad[0]])} at index {int(bad[0])}, outside '
                         f'[{low}, {high}]')
    return arr.astype(np.int64)


def read_cifar100_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3072]`` and fine labels ``int64 [N]`` (0..99) of a CIFAR-100 ``train``/``test`` file."""
    d = load_pickle_dict(path)
    data = _check_images(_get(d, 'data', path), path)
    labels = _check_labels(_get(d, 'fine_labels', path), len(data), 0, 99, path, 'fine_labels')
    return data, labels


def read_cifar100_meta(path: str) -> tuple[str, ...]:
    """The 100 fine class names of a CIFAR-100 ``meta`` file."""
    d = load_pickle_dict(path)
    names = _get(d, 'fine_label_names', path)
    names = tuple(_str_key(n) for n in names)
    if len(names) != 100:
        raise ValueError(f'{path}: key {"fine_label_names"!r} must hold 100 names, found {len(names)}')
    return names


def read_imagenet32_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3072]`` and 0-based labels ``int64 [N]`` of a downsampled-ImageNet batch file (its labels
    are stored 1-based, 1..1000)."""
    d = load_pickle_dict(path)
    data = _check_images(_get(d, 'data', path), path)
    labels = _check_labels(_get(d, 'labels', path), len(data), 1, 1000, path, 'labels')
    if 'mean' in d:
        mean = np.asarray(d['mean'])
        if mean.size != ROW_SIZE:
            raise ValueError(f'{path}: key "mean" must hold {ROW_SIZE} values, found shape {tuple(mean.shape)}')
    return data, labels - 1


# ---------------------------------------------------------------------------------------------------------------
# Writing both formats (for the synthetic sets; the real ones are downloaded by the user).
# ---------------------------------------------------------------------------------------------------------------
def _check_write(images: np.ndarray, labels: np.ndarray, low: int, high: int) -> tuple[np.ndarray, list[int]]:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] not in ((ROW_SIZE,), IMAGE_SHAPE):
        raise ValueError(f'images must be uint8 [N, 3072] or [N, 3, 32, 32], got {images.dtype} '
                         f'{tuple(images.shape)}')
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or labels.min(initial=low) < low or labels.max(initial=low) > high:
        raise ValueError(f'labels must be {len(images)} integers in [{low}, {high}]')
    return np.ascontiguousarray(images.reshape(len(images), ROW_SIZE)), [int(v) for v in labels]


def write_cifar100(root: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   fine_label_names: Sequence[str], coarse_labels: Sequence[np.ndarray] | None = None) -> str:
    """Write ``root/cifar-100-python/{train,test,meta}`` exactly as the CIFAR-100 python release stores them
    (byte-string keys, ``b'data'`` uint8 rows, ``b'fine_labels'``, ``b'coarse_labels'``, ``b'filenames'``,
    ``b'batch_label'``). ``train``/``test`` are ``(images, fine labels 0..99)``. Returns the folder."""
    if len(fine_label_names) != 100:
        raise ValueError(f'CIFAR-100 needs 100 fine label names, got {len(fine_label_names)}')
    folder = osp.join(root, CIFAR_FOLDER)
    os.makedirs(folder, exist_ok=True)
    for i, (split, (images, labels)) in enumerate((('train', train), ('test', test))):
        rows, fine = _check_write(images, labels, 0, 99)
        coarse = ([int(v) for v in coarse_labels[i]] if coarse_labels is not None else [v // 5 for v in fine])
        entry = {b'batch_label': f'{split}ing batch 1 of 1'.encode(), b'fine_labels': fine,
                 b'coarse_labels': coarse, b'data': rows,
                 b'filenames': [f'synthetic_{split}_{j:05d}.png'.encode() for j in range(len(rows))]}
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    meta = {b'fine_label_names': [n.encode() for n in fine_label_names],
            b'coarse_label_names': [f'coarse_{j}'.encode() for j in range(20)]}
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def write_imagenet32(root: str, train_batches: Sequence[tuple[np.ndarray, np.ndarray]],
                     val: tuple[np.ndarray, np.ndarray]) -> tuple[str, str]:
    """Write ``root/Imagenet32_train/train_data_batch_{1..n}`` and ``root/Imagenet32_val/val_data`` as the
    downsampled ImageNet release stores them (str keys, ``'data'`` uint8 rows, ``'labels'`` 1-based list, ``'mean'``
    of the training rows in each training file). Labels are given 0-based (0..999) and stored 1-based."""
    train_dir = osp.join(root, IMAGENET_TRAIN_FOLDER)
    val_dir = osp.join(root, IMAGENET_VAL_FOLDER)
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(val_dir, exist_ok=True)
    checked = [_check_write(im, lb, 0, 999) for im, lb in train_batches]
    mean = np.concatenate([r for r, _ in checked]).mean(0) if checked else np.zeros(ROW_SIZE)
    for i, (rows, labels) in enumerate(checked, start=1):
        with open(osp.join(train_dir, f'train_data_batch_{i}'), 'wb') as f:
            pickle.dump({'data': rows, 'labels': [v + 1 for v in labels], 'mean': mean}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
    rows, labels = _check_write(*val, 0, 999)
    with open(osp.join(val_dir, 'val_data'), 'wb') as f:
        pickle.dump({'data': rows, 'labels': [v + 1 for v in labels]}, f, protocol=pickle.HIGHEST_PROTOCOL)
    return train_dir, val_dir


# ---------------------------------------------------------------------------------------------------------------
# Datasets.
# ---------------------------------------------------------------------------------------------------------------
class _RowImageDataset(BaseDataset):
    """Base of the two datasets: all images in one uint8 array ``[N, 3072]`` (not serialised per item); the data
    list holds ``dict(row, gt_label, domain)`` per item, so mmengine's ``indices`` and serialisation work as usual."""

    def __init__(self, data_root: str = '', domain: int = 0, **kwargs) -> None:
        if not isinstance(domain, int) or domain < 0:
            raise ValueError(f'domain must be a non-negative int, got {domain!r}')
        self.domain = domain
        self._images: np.ndarray | None = None
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(data_root=data_root, **kwargs)

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load_data_list(self) -> list[dict]:
        images, labels = self._read()
        self._images = images
        return [dict(row=i, gt_label=int(lab), domain=self.domain) for i, lab in enumerate(labels.tolist())]

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        info['img'] = self._images[info['row']].reshape(IMAGE_SHAPE)
        return info

    @property
    def images(self) -> np.ndarray:
        """All rows read from disk (before ``indices``), ``uint8 [N, 3072]``."""
        if self._images is None:
            self.full_init()
        return self._images


@DATASETS.register_module()
class CIFAR100Dataset(_RowImageDataset):
    """CIFAR-100 from the python release (``data_root/cifar-100-python/{train,test,meta}``), fine labels.

    Args:
        data_root: the folder holding ``cifar-100-python``.
        split: ``'train'`` (first ``1 - val_fraction`` of the official training file: 40k), ``'val'`` (its last
            ``val_fraction``: 10k), ``'trainval'`` (all 50k) or ``'test'`` (the official 10k test file).
        val_fraction: share of the official training file held out for validation (0.2: the paper's 40k/10k).
        domain: domain id given to every item (default 1, the transfer target; see :data:`DOMAINS`).
        folder: name of the release folder under ``data_root``.
        **kwargs: as for mmengine's ``BaseDataset`` (``indices``, ``pipeline``, ``lazy_init``, ...).
    """

    SPLITS = ('train', 'val', 'trainval', 'test')

    def __init__(self, data_root: str = '', split: str = 'train', val_fraction: float = 0.2, domain: int = CIFAR,
                 folder: str = CIFAR_FOLDER, **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f'CIFAR100Dataset split must be one of {self.SPLITS}, got {split!r}')
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f'val_fraction must lie in (0, 1), got {val_fraction}')
        self.split = split
        self.val_fraction = float(val_fraction)
        self.folder = folder
        super().__init__(data_root=data_root, domain=domain, **kwargs)

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        folder = osp.join(self.data_root, self.folder)
        names = read_cifar100_meta(osp.join(folder, 'meta'))
        self._metainfo.update(classes=names, domain=DOMAINS[self.domain] if self.domain < len(DOMAINS) else None)
        path = osp.join(folder, 'test' if self.split == 'test' else 'train')
        images, labels = read_cifar100_file(path)
        if self.split in ('train', 'val'):
            n_val = int(round(len(images) * self.val_fraction))
            if not 0 < n_val < len(images):
                raise ValueError(f'{path}: {len(images)} rows cannot be split with val_fraction={self.val_fraction}')
            cut = len(images) - n_val
            sl = slice(0, cut) if self.split == 'train' else slice(cut, None)
            images, labels = images[sl], labels[sl]
        return images, labels


@DATASETS.register_module()
class ImageNet32Dataset(_RowImageDataset):
    """ImageNet at 32x32 from the downsampled ImageNet release (Chrabaszcz et al. 2017), 1000 classes.

    Args:
        data_root: the folder holding ``Imagenet32_train`` and ``Imagenet32_val``.
        split: ``'train'`` (``train_data_batch_1`` .. ``_{num_train_batches}``, concatenated in order) or
            ``'val'`` (``val_data``).
        num_train_batches: number of training files (10 in the release).
        domain: domain id of every item (default 0, the source; see :data:`DOMAINS`).
        train_folder, val_folder: folder names under ``data_root``.
        **kwargs: as for mmengine's ``BaseDataset``.
    """

    SPLITS = ('train', 'val')

    def __init__(self, data_root: str = '', split: str = 'train',
                 num_train_batches: int = NUM_IMAGENET_TRAIN_BATCHES, domain: int = IMAGENET,
                 train_folder: str = IMAGENET_TRAIN_FOLDER, val_folder: str = IMAGENET_VAL_FOLDER, **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f'ImageNet32Dataset split must be one of {self.SPLITS}, got {split!r}')
        if num_train_batches < 1:
            raise ValueError(f'num_train_batches must be >= 1, got {num_train_batches}')
        self.split = split
        self.num_train_batches = int(num_train_batches)
        self.train_folder, self.val_folder = train_folder, val_folder
        super().__init__(data_root=data_root, domain=domain, **kwargs)

    def files(self) -> list[str]:
        """The files of this split, in reading order (the ``.npz`` variant where only it exists)."""
        if self.split == 'train':
            names = [osp.join(self.data_root, self.train_folder, f'train_data_batch_{i}')
                     for i in range(1, self.num_train_batches + 1)]
        else:
            names = [osp.join(self.data_root, self.val_folder, 'val_data')]
        return [n + '.npz' if not osp.isfile(n) and osp.isfile(n + '.npz') else n for n in names]

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        self._metainfo.update(classes=tuple(str(i) for i in range(1, 1001)),
                              domain=DOMAINS[self.domain] if self.domain < len(DOMAINS) else None)
        files = self.files()
        missing = [f for f in files if not osp.isfile(f)]
        if missing:
            raise FileNotFoundError(f'downsampled ImageNet {self.split} file(s) missing: {missing}')
        parts = [read_imagenet32_file(f) for f in files]
        if len(parts) == 1:
            return parts[0]
        images = np.empty((sum(len(p[0]) for p in parts), ROW_SIZE), np.uint8)
        start = 0
        for i in range(len(parts)):
            im, _ = parts[i]
            images[start:start + len(im)] = im
            start += len(im)
            parts[i] = (None, parts[i][1])   # free each file's rows once copied
        return images, np.concatenate([p[1] for p in parts])


def _build(cfg: Dataset | Mapping[str, Any]) -> Dataset:
    return DATASETS.build(cfg) if isinstance(cfg, Mapping) else cfg


@DATASETS.register_module()
class PairedTransferDataset(Dataset):
    """Pairs of one source (ImageNet) and one target (CIFAR-100) item: a loader with ``batch_size=8`` and
    :func:`transfer_collate` gives batches of 8 + 8 images.

    Item ``i`` is ``(source[i % len(source)], target[i % len(target)])`` and the length is the larger of the two, so
    one pass of a shuffled sampler visits every item of the larger dataset once and every item of the smaller one
    ``len(larger) / len(smaller)`` times (rounded up or down), in random batches.

    Args:
        source: the source dataset or its config (ImageNet; its items carry domain id 0).
        target: the transfer dataset or its config (CIFAR-100; domain id 1).
        lazy_init: defer the datasets' ``full_init`` (and the check that neither is empty) to :meth:`full_init`,
            which the Runner calls; give the two dataset configs ``lazy_init=True`` as well to defer reading files.
    """

    def __init__(self, source: Dataset | Mapping[str, Any], target: Dataset | Mapping[str, Any],
                 lazy_init: bool = False) -> None:
        self.source = _build(source)
        self.target = _build(target)
        s_dom, t_dom = getattr(self.source, 'domain', None), getattr(self.target, 'domain', None)
        if s_dom is not None and s_dom == t_dom:
            raise ValueError(f'source and target datasets have the same domain id {s_dom}; give them different ids')
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        for ds in (self.source, self.target):
            if hasattr(ds, 'full_init'):
                ds.full_init()
            if len(ds) == 0:
                raise ValueError(f'{type(ds).__name__} is empty: nothing to pair')
        self._fully_initialized = True

    @property
    def metainfo(self) -> dict:
        """The target's meta information (the task that is evaluated), plus the source's under ``'source'``."""
        meta = dict(getattr(self.target, 'metainfo', {}))
        meta['source'] = dict(getattr(self.source, 'metainfo', {}))
        return meta

    def __len__(self) -> int:
        self.full_init()
        return max(len(self.source), len(self.target))

    def __getitem__(self, idx: int) -> tuple[dict, dict]:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f'index {idx} out of range for {n} pairs')
        idx %= n
        return self.source[idx % len(self.source)], self.target[idx % len(self.target)]


@FUNCTIONS.register_module()
def transfer_collate(batch: Sequence[dict | Sequence[dict]]) -> dict:
    """Collate items (or pairs of items, from :class:`PairedTransferDataset`) into one batch grouped by domain.

    Returns ``dict(inputs=uint8 [B, 3, 32, 32], data_samples=dict(gt_label=int64 [B], domain=int64 [B],
    sample_idx=int64 [B]))`` with the rows sorted by domain id (stable: ImageNet rows first, then CIFAR-100 rows,
    each in loader order). Eight pairs give 16 rows: 8 of domain 0 then 8 of domain 1.
    """
    items: list[dict] = []
    for entry in batch:
        if isinstance(entry, Mapping):
            items.append(entry)
        elif isinstance(entry, (list, tuple)):
            items.extend(entry)
        else:
            raise TypeError(f'transfer_collate: expected items (dicts) or pairs of items, got {type(entry).__name__}')
    if not items:
        raise ValueError('transfer_collate: empty batch')
    for key in ('img', 'gt_label', 'domain'):
        if key not in items[0]:
            raise KeyError(f'transfer_collate: items need the key {key!r}; got {sorted(items[0])}')
    items.sort(key=lambda it: int(it['domain']))     # list.sort is stable
    images = torch.from_numpy(np.stack([np.asarray(it['img'], dtype=np.uint8) for it in items]))
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f'transfer_collate: images must be {IMAGE_SHAPE}, got {tuple(images.shape[1:])}')
    return dict(inputs=images,
                data_samples=dict(gt_label=torch.tensor([int(it['gt_label']) for it in items], dtype=torch.long),
                                  domain=torch.tensor([int(it['domain']) for it in items], dtype=torch.long),
                                  sample_idx=torch.tensor([int(it.get('sample_idx', -1)) for it in items],
                                                          dtype=torch.long)))


__all__ = ['DOMAINS', 'IMAGENET', 'CIFAR', 'CIFAR100Dataset', 'ImageNet32Dataset', 'PairedTransferDataset',
           'transfer_collate', 'read_cifar100_file', 'read_cifar100_meta', 'read_imagenet32_file', 'load_pickle_dict',
           'write_cifar100', 'write_imagenet32']
