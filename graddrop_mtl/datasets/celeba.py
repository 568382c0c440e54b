"""CelebA (Liu et al., 2015) with its 40 binary attributes as 40 tasks (paper appendix A.4), and a generator of small
synthetic sets in exactly CelebA's on-disk format.

On-disk layout read by :class:`CelebADataset` (the files of the official release; ``data_root`` defaults to
``data/celeba`` in the configs)::

    data/celeba/
        img_align_celeba/000001.jpg ...   aligned and cropped faces (178 x 218 in the official release)
        list_attr_celeba.txt              line 1: number of images; line 2: the 40 attribute names;
                                          then one line per image: file name and 40 values, each -1 or 1
        list_eval_partition.txt           one line per image: file name and 0 (train), 1 (val) or 2 (test)

The official archive keeps the two text files in ``Anno/`` and ``Eval/``; pass ``ann_file='Anno/list_attr_celeba.txt'``
and ``partition_file='Eval/list_eval_partition.txt'`` for that layout. The standard split is 162,770 / 19,867 /
19,962 images (the appendix's "160k/20k split").

A sample after the default pipeline (:class:`LoadCelebAImage` then :class:`PackCelebAInputs`) is
``dict(inputs=uint8 Tensor [3, H, W], data_samples=dict(gt_label=float32 Tensor [40] of 0/1, img_id=str))``;
the model's ``ImgDataPreprocessor`` scales it to float.

:func:`write_synthetic_celeba` (command line: ``tools/make_synthetic_celeba.py``) writes a small set in the same
format, with CelebA's attribute frequencies, so that a network can learn them and the majority-class error rate is a
meaningful yardstick. Two models of how attributes relate (``model=``):

* ``'factors'`` (default): :data:`NUM_FACTORS` latent factors per image, each drawn into the image
  (:func:`render_factor_face`), and every attribute a thresholded function of one or two of them
  (:func:`factor_loadings`): attributes that load on the same factor with the same sign are correlated, with
  opposite signs anticorrelated, on different factors independent. The tasks thus share features (a factor is
  useful to every attribute that loads on it) and can conflict (the same feature pushes anticorrelated attributes
  in opposite directions), as CelebA's attributes do (Male / Wearing_Lipstick, Smiling / Mouth_Slightly_Open);
* ``'independent'``: every attribute drawn independently and painted as its own patch
  (:func:`render_synthetic_face`): no relation between the tasks at all.
"""
from __future__ import annotations

import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from PIL import Image

from ..registry import DATASETS, TRANSFORMS

#: The 40 attributes of ``list_attr_celeba.txt``, in file order.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes', 'Bald', 'Bangs', 'Big_Lips', 'Big_Nose',
    'Black_Hair', 'Blond_Hair', 'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin', 'Eyeglasses',
    'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones', 'Male', 'Mouth_Slightly_Open', 'Mustache',
    'Narrow_Eyes', 'No_Beard', 'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline', 'Rosy_Cheeks',
    'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair', 'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick',
    'Wearing_Necklace', 'Wearing_Necktie', 'Young')

#: Approximate fraction of positive images per attribute in CelebA (rounded; used by the synthetic generator only).
CELEBA_POSITIVE_RATES: tuple[float, ...] = (
    0.111, 0.267, 0.513, 0.205, 0.022, 0.152, 0.241, 0.235, 0.239, 0.148, 0.051, 0.205, 0.142, 0.058, 0.047, 0.065,
    0.063, 0.042, 0.387, 0.455, 0.417, 0.482, 0.042, 0.115, 0.835, 0.284, 0.043, 0.277, 0.080, 0.066, 0.057, 0.482,
    0.208, 0.320, 0.189, 0.048, 0.472, 0.123, 0.073, 0.774)

#: Partition ids of ``list_eval_partition.txt``.
SPLITS: dict[str, int] = {'train': 0, 'val': 1, 'test': 2}

ATTR_FILE = 'list_attr_celeba.txt'
PARTITION_FILE = 'list_eval_partition.txt'
IMG_DIR = 'img_align_celeba'


class CelebAFormatError(ValueError):
    """A CelebA annotation file (or the image folder) does not match the official format."""


def _size_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise ValueError(f'image size must be an int or (height, width), got {size!r}')
    return (int(size[0]), int(size[1]))


# ---------------------------------------------------------------------------------------------------- parsing
@dataclass
class CelebAAttributes:
    """The parsed ``list_attr_celeba.txt``: attribute names, image file names, labels (-1/1 as int8) and the
    1-based line number of each image's row."""

    names: list[str]
    files: list[str]
    labels: np.ndarray      # [N, 40] int8 of -1/1
    lines: list[int]


def parse_attr_file(path: str, num_attributes: int = 40) -> CelebAAttributes:
    """Parse ``list_attr_celeba.txt``; any deviation from the format raises :class:`CelebAFormatError` naming the
    file and the (1-based) line."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'CelebA attribute file {path!r} does not exist')
    with open(path, encoding='utf-8') as f:
        raw = f.read().splitlines()
    # Trailing blank lines are tolerated; blank lines inside the rows are not.
    while raw and not raw[-1].strip():
        raw.pop()
    if len(raw) < 2:
        raise CelebAFormatError(f'{path}: expected a count line and an attribute-name line, found {len(raw)} '
                                'non-empty line(s)')
    count_text = raw[0].strip()
    try:
        count = int(count_text)
    except ValueError:
        raise CelebAFormatError(f'{path}:1: the first line must be the number of images, got {count_text!r}') \
            from None
    if count < 0:
        raise CelebAFormatError(f'{path}:1: the number of images must be >= 0, got {count}')
    names = raw[1].split()
    if len(names) != num_attributes:
        raise CelebAFormatError(f'{path}:2: expected {num_attributes} attribute names, found {len(names)}: '
                                f'{" ".join(names)[:200]!r}')
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise CelebAFormatError(f'{path}:2: duplicate attribute names {dup}')
    files: list[str] = []
    lines: list[int] = []
    labels = np.empty((len(raw) - 2, num_attributes), dtype=np.int8)
    seen: dict[str, int] = {}
    for i, text in enumerate(raw[2:]):
        lineno = i + 3
        parts = text.split()
        if len(parts) != num_attributes + 1:
            raise CelebAFormatError(f'{path}:{lineno}: expected a file name and {num_attributes} values '
                                    f'({num_attributes + 1} columns), found {len(parts)} column(s): {text[:120]!r}')
        name = parts[0]
        if name in seen:
            raise CelebAFormatError(f'{path}:{lineno}: image {name!r} is listed again (first on line {seen[name]})')
        for j, value in enumerate(parts[1:]):
            if value == '1':
                labels[i, j] = 1
            elif value == '-1':
                labels[i, j] = -1
            else:
                raise CelebAFormatError(f'{path}:{lineno}: attribute {names[j]!r} (column {j + 2}) of image '
                                        f'{name!r} must be -1 or 1, got {value!r}')
        seen[name] = lineno
        files.append(name)
        lines.append(lineno)
    if len(files) != count:
        raise CelebAFormatError(f'{path}:1: the count line says {count} images but the file lists {len(files)}')
    return CelebAAttributes(names=names, files=files, labels=labels, lines=lines)


def parse_partition_file(path: str) -> dict[str, tuple[int, int]]:
    """Parse ``list_eval_partition.txt`` into ``file name -> (partition id, 1-based line)``; malformed lines raise
    :class:`CelebAFormatError` naming the file and line."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'CelebA partition file {path!r} does not exist')
    valid = {str(v) for v in SPLITS.values()}
    out: dict[str, tuple[int, int]] = {}
    with open(path, encoding='utf-8') as f:
        raw = f.read().splitlines()
    while raw and not raw[-1].strip():
        raw.pop()
    for i, text in enumerate(raw):
        lineno = i + 1
        parts = text.split()
        if len(parts) != 2:
            raise CelebAFormatError(f'{path}:{lineno}: expected "<file name> <partition id>", found {len(parts)} '
                                    f'column(s): {text[:120]!r}')
        name, pid = parts
        if pid not in valid:
            raise CelebAFormatError(f'{path}:{lineno}: unknown partition id {pid!r} for image {name!r} '
                                    '(0 train, 1 val, 2 test)')
        if name in out:
            raise CelebAFormatError(f'{path}:{lineno}: image {name!r} is listed again (first on line '
                                    f'{out[name][1]})')
        out[name] = (int(pid), lineno)
    return out


# ---------------------------------------------------------------------------------------------------- dataset
@DATASETS.register_module()
class CelebADataset(BaseDataset):
    """CelebA, one split, 40 binary attributes as a 0/1 float label vector.

    Args:
        data_root: the CelebA folder (see the module docstring for the layout).
        split: ``'train'``, ``'val'``, ``'test'`` (partition 0, 1, 2), or ``'all'``.
        img_size: ``(height, width)`` (or an int) the images are resized to by the default pipeline; ``None`` keeps
            them as stored (178 x 218 for the official aligned images). The appendix does not state the input
            resolution it used; 64 x 64 (the default) keeps the nine-layer network affordable on a CPU.
        ann_file: the attribute file, relative to ``data_root``.
        partition_file: the partition file, relative to ``data_root``.
        data_prefix: ``dict(img_path=<image folder>)``, relative to ``data_root``.
        attributes: the attribute names the file must list, in order (default: CelebA's 40); a mismatch is an error
            naming the file and line 2, so that label columns cannot be silently misassigned.
        check_images: check when loading that every image of the split exists (an error names the image, the
            attribute file and its line).
        pipeline: mmengine transforms; default ``[LoadCelebAImage(size=img_size), PackCelebAInputs()]``. Dicts are
            built from the ``graddrop_mtl`` transform registry (unknown names fall back to mmengine's root registry).
        **kwargs: the rest of :class:`mmengine.dataset.BaseDataset` (``indices``, ``serialize_data``,
            ``test_mode``, ``lazy_init``, ``max_refetch``, ``metainfo``).

    ``metainfo['attributes']`` holds the attribute names read from the file.
    """

    METAINFO: dict = dict(attributes=CELEBA_ATTRIBUTES)

    def __init__(self, data_root: str = 'data/celeba', split: str = 'train',
                 img_size: int | Sequence[int] | None = (64, 64), ann_file: str = ATTR_FILE,
                 partition_file: str = PARTITION_FILE, data_prefix: Mapping[str, str] | None = None,
                 attributes: Sequence[str] | None = None, check_images: bool = True,
                 pipeline: Sequence[Mapping[str, Any] | Callable] | None = None, **kwargs: Any) -> None:
        if split not in (*SPLITS, 'all'):
            raise ValueError(f"CelebADataset split must be one of {[*SPLITS, 'all']}, got {split!r}")
        self.split = split
        self.img_size = _size_hw(img_size)
        self.expected_attributes = tuple(attributes) if attributes is not None else CELEBA_ATTRIBUTES
        self.check_images = check_images
        self.partition_file = partition_file
        if pipeline is None:
            pipeline = [LoadCelebAImage(size=self.img_size), PackCelebAInputs()]
        pipeline = [TRANSFORMS.build(t) if isinstance(t, Mapping) else t for t in pipeline]
        super().__init__(ann_file=ann_file, data_root=data_root,
                         data_prefix=dict(data_prefix) if data_prefix is not None else dict(img_path=IMG_DIR),
                         pipeline=pipeline, **kwargs)

    def _join_prefix(self) -> None:
        super()._join_prefix()
        if self.partition_file and not osp.isabs(self.partition_file) and self.data_root:
            self.partition_file = osp.join(self.data_root, self.partition_file)

    def load_data_list(self) -> list[dict]:
        attrs = parse_attr_file(self.ann_file, num_attributes=len(self.expected_attributes))
        if tuple(attrs.names) != self.expected_attributes:
            j = next(i for i, (a, b) in enumerate(zip(attrs.names, self.expected_attributes)) if a != b)
            raise CelebAFormatError(f'{self.ann_file}:2: attribute {j + 1} is {attrs.names[j]!r}, expected '
                                    f'{self.expected_attributes[j]!r} (pass attributes=[...] for other names)')
        self._metainfo['attributes'] = tuple(attrs.names)
        partition = parse_partition_file(self.partition_file)
        listed = set(attrs.files)
        for name, (_, lineno) in partition.items():
            if name not in listed:
                raise CelebAFormatError(f'{self.partition_file}:{lineno}: image {name!r} is not in {self.ann_file}')
        img_dir = self.data_prefix.get('img_path', '')
        if self.check_images and not osp.isdir(img_dir):
            raise FileNotFoundError(f'CelebA image folder {img_dir!r} does not exist')
        wanted = None if self.split == 'all' else SPLITS[self.split]
        data_list = []
        for i, name in enumerate(attrs.files):
            entry = partition.get(name)
            if entry is None:
                raise CelebAFormatError(f'{self.ann_file}:{attrs.lines[i]}: image {name!r} has no line in '
                                        f'{self.partition_file}')
            if wanted is not None and entry[0] != wanted:
                continue
            img_path = osp.join(img_dir, name)
            if self.check_images and not osp.isfile(img_path):
                raise FileNotFoundError(f'CelebA image {img_path!r} (listed in {self.ann_file}:{attrs.lines[i]}) '
                                        'does not exist')
            data_list.append(dict(img_path=img_path, img_id=name, partition=entry[0],
                                  gt_label=(attrs.labels[i] > 0).astype(np.float32)))
        return data_list

    def get_cat_ids(self, idx: int) -> list[int]:
        """Indices of the attributes present in image ``idx``."""
        return np.flatnonzero(self.get_data_info(idx)['gt_label']).tolist()


# ---------------------------------------------------------------------------------------------------- transforms
@TRANSFORMS.register_module()
class LoadCelebAImage:
    """Read ``results['img_path']`` as RGB and resize it to ``size`` (bilinear, antialiased).

    Adds ``img`` (uint8 ``[H, W, 3]``), ``img_shape`` and ``ori_shape`` (``(height, width)``).

    Args:
        size: ``(height, width)`` or an int; ``None`` keeps the stored size.
    """

    def __init__(self, size: int | Sequence[int] | None = (64, 64)) -> None:
        self.size = _size_hw(size)

    def __call__(self, results: dict) -> dict:
        path = results['img_path']
        try:
            with Image.open(path) as im:
                im = im.convert('RGB')
                ori = (im.height, im.width)
                if self.size is not None and ori != self.size:
                    im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                img = np.array(im, dtype=np.uint8)
        except FileNotFoundError:
            raise FileNotFoundError(f'CelebA image {path!r} does not exist') from None
        except OSError as err:
            raise OSError(f'CelebA image {path!r} cannot be read: {err}') from err
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = ori
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


@TRANSFORMS.register_module()
class PackCelebAInputs:
    """Pack ``img`` and ``gt_label`` into ``dict(inputs=uint8 Tensor [3, H, W], data_samples=dict(gt_label=float32
    Tensor [40], img_id=str))``."""

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'{results.get("img_path")}: expected an [H, W, 3] image, got shape {img.shape}')
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = dict(gt_label=torch.as_tensor(results['gt_label'], dtype=torch.float32),
                      img_id=results.get('img_id', ''))
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


# ---------------------------------------------------------------------------------------------------- generator
GRID_COLS, GRID_ROWS = 8, 5   # 40 cells, one per attribute


def _attribute_palette(n: int) -> np.ndarray:
    """A distinct saturated RGB colour per attribute ([n, 3] floats in [0, 255])."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    out = np.empty((n, 3))
    for i, h in enumerate(hues):
        k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
        out[i] = 255 * (1 - np.clip(np.minimum(k, 4 - k), 0, 1))   # HSV -> RGB with S = V = 1
    return out


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The synthetic faces' background, ``[h, w, 3]`` float: a random flat tone plus a random linear gradient."""
    base = rng.uniform(60, 190, size=3)
    gy, gx = rng.uniform(-40, 40, size=2)
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.5, 0.5, w), indexing='ij')
    return base[None, None, :] + (gy * yy + gx * xx)[..., None]


def render_synthetic_face(labels: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw a synthetic image whose attributes are visible: a uint8 ``[H, W, 3]`` array.

    The image is split into an 8 x 5 grid of cells, cell ``i`` (row ``i // 8``, column ``i % 8``) belonging to
    attribute ``i``. A positive attribute paints a patch of its own colour with its own texture (``i % 4``: solid,
    horizontal stripes, vertical stripes, checkerboard) into its cell, at a random offset of up to 1/6 of the cell
    and a random strength in [0.3, 1]; a negative attribute paints nothing. The background is a random flat tone
    with a random linear gradient, and Gaussian pixel noise (sigma 12) covers everything. Faint positives blend into
    the noise, so the attributes are learnable but not trivially separable. The random draws do not depend on
    ``labels``: with the same ``rng`` state, two label vectors give images that differ only in the toggled cells.
    """
    h, w = size
    n = len(labels)
    palette = _attribute_palette(n)
    img = _background(rng, h, w)
    ch, cw = h / GRID_ROWS, w / GRID_COLS
    ph, pw = max(1, int(round(ch * 0.75))), max(1, int(round(cw * 0.75)))
    # Drawn for every attribute, so that the random stream (and the noise) does not depend on the labels.
    offsets = rng.uniform(-1.0, 1.0, size=(n, 2)) / 6
    strengths = rng.uniform(0.3, 1.0, size=n)
    py, px = np.meshgrid(np.arange(ph), np.arange(pw), indexing='ij')
    textures = [np.ones((ph, pw)), (py // 2) % 2 == 0, (px // 2) % 2 == 0, ((py // 2 + px // 2) % 2) == 0]
    for i in np.flatnonzero(labels > 0):
        r, c = divmod(int(i), GRID_COLS)
        y0 = int(round(r * ch + (ch - ph) / 2 + offsets[i, 0] * ch))
        x0 = int(round(c * cw + (cw - pw) / 2 + offsets[i, 1] * cw))
        y0, x0 = min(max(y0, 0), h - ph), min(max(x0, 0), w - pw)
        alpha = strengths[i] * np.asarray(textures[i % 4], dtype=float)[..., None]
        patch = img[y0:y0 + ph, x0:x0 + pw]
        img[y0:y0 + ph, x0:x0 + pw] = (1 - alpha) * patch + alpha * palette[i]
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


#: latent factors of the ``'factors'`` model, drawn in a FACTOR_COLS x FACTOR_ROWS grid of cells.
NUM_FACTORS = 8
FACTOR_COLS, FACTOR_ROWS = 4, 2
#: weight of an attribute's second factor (attributes 32..39 load on two factors) and the label noise's std.
SECOND_FACTOR_WEIGHT = 0.7
LABEL_NOISE = 0.3
SYNTHETIC_MODELS = ('factors', 'independent')


def factor_loadings(num_attributes: int = 40, num_factors: int = NUM_FACTORS) -> np.ndarray:
    """``[num_attributes, num_factors]`` weights of the ``'factors'`` model (fixed, not random).

    Attribute ``i`` loads on factor ``i % K`` (``K = num_factors``) with sign ``+1`` when ``(i // K)`` is even and
    ``-1`` when odd; so attribute ``i`` is correlated with ``i + 2K`` and anticorrelated with ``i + K``, and
    independent of the attributes on other factors. The last ``K`` attributes (``i >= num_attributes - K``) also load
    on factor ``(i + 1) % K`` with weight ``SECOND_FACTOR_WEIGHT``: partial sharing between two groups.
    """
    w = np.zeros((num_attributes, num_factors))
    for i in range(num_attributes):
        w[i, i % num_factors] = 1.0 if (i // num_factors) % 2 == 0 else -1.0
        if i >= num_attributes - num_factors:
            w[i, (i + 1) % num_factors] = SECOND_FACTOR_WEIGHT
    return w


def factor_labels(factors: np.ndarray, positive_rates: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Attributes of the ``'factors'`` model: ``int8 [N, A]`` of 0/1 from ``factors`` ``[N, K]`` (standard normal).

    ``a_i = 1[w_i . z + e_i > t_i]`` with ``w`` = :func:`factor_loadings`, label noise ``e_i ~ N(0, LABEL_NOISE^2)``
    and ``t_i`` the threshold that makes ``P(a_i = 1)`` equal ``positive_rates[i]`` (``w_i . z + e_i`` is normal with
    variance ``|w_i|^2 + LABEL_NOISE^2``).
    """
    from statistics import NormalDist
    rates = np.asarray(positive_rates, dtype=float)
    w = factor_loadings(len(rates), factors.shape[1])
    sd = np.sqrt((w ** 2).sum(1) + LABEL_NOISE ** 2)
    thresholds = np.array([NormalDist().inv_cdf(min(max(1.0 - r, 1e-9), 1 - 1e-9)) for r in rates]) * sd
    score = factors @ w.T + rng.normal(0.0, LABEL_NOISE, size=(len(factors), len(rates)))
    return (score > thresholds).astype(np.int8)


def render_factor_face(factors: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw the latent factors of one image (``'factors'`` model): a uint8 ``[H, W, 3]`` array.

    The image is split into a 4 x 2 grid of cells, cell ``k`` (row ``k // 4``, column ``k % 4``) belonging to factor
    ``k``. Each factor paints a patch of its own colour and texture (``k % 4``: solid, horizontal stripes, vertical
    stripes, checkerboard) into its cell with opacity ``sigmoid(2 z_k)``: the factor's value is visible as the patch's
    strength, and an attribute, a threshold on one or two factors, has to be read from it. Background (random tone
    and gradient) and Gaussian pixel noise (sigma 12) as :func:`render_synthetic_face`; the random draws do not
    depend on ``factors``.
    """
    h, w = size
    k = len(factors)
    palette = _attribute_palette(k)
    img = _background(rng, h, w)
    ch, cw = h / FACTOR_ROWS, w / FACTOR_COLS
    ph, pw = max(1, int(round(ch * 0.75))), max(1, int(round(cw * 0.75)))
    offsets = rng.uniform(-1.0, 1.0, size=(k, 2)) / 8
    py, px = np.meshgrid(np.arange(ph), np.arange(pw), indexing='ij')
    textures = [np.ones((ph, pw)), (py // 2) % 2 == 0, (px // 2) % 2 == 0, ((py // 2 + px // 2) % 2) == 0]
    strength = 1.0 / (1.0 + np.exp(-2.0 * np.asarray(factors, dtype=float)))
    for i in range(k):
        r, c = divmod(i, FACTOR_COLS)
        y0 = int(round(r * ch + (ch - ph) / 2 + offsets[i, 0] * ch))
        x0 = int(round(c * cw + (cw - pw) / 2 + offsets[i, 1] * cw))
        y0, x0 = min(max(y0, 0), h - ph), min(max(x0, 0), w - pw)
        alpha = strength[i] * np.asarray(textures[i % 4], dtype=float)[..., None]
        patch = img[y0:y0 + ph, x0:x0 + pw]
        img[y0:y0 + ph, x0:x0 + pw] = (1 - alpha) * patch + alpha * palette[i]
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_synthetic_celeba(out_dir: str, num_images: int = 1000, seed: int = 0,
                           size: int | Sequence[int] = 64, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                           positive_rates: Sequence[float] | None = None, jpeg_quality: int = 92,
                           model: str = 'factors') -> dict[str, Any]:
    """Write a synthetic CelebA-format set into ``out_dir`` (``img_align_celeba/``, ``list_attr_celeba.txt``,
    ``list_eval_partition.txt``).

    Attributes have CelebA's approximate frequencies (:data:`CELEBA_POSITIVE_RATES`). ``model='factors'``: each
    image draws :data:`NUM_FACTORS` standard-normal latent factors, rendered by :func:`render_factor_face`, and its
    attributes are :func:`factor_labels` of them (shared, correlated, anticorrelated and independent tasks; module
    docstring). ``model='independent'``: attributes drawn independently and painted by
    :func:`render_synthetic_face`. Images are numbered ``000001.jpg`` ... and assigned to train, val and
    test in consecutive blocks, as in CelebA, with ``split_fractions`` (each split gets at least one image when
    ``num_images >= 3``). The text files are written in the official layout (two-space separated -1/1 columns).

    Args:
        size: image size, an int or ``(height, width)``; the official aligned images are 218 x 178.

    Returns:
        ``dict(num_images=..., splits={'train': n, 'val': n, 'test': n}, positive_rate=[40 floats],
        majority_error_rate={split: percent}, model=model)``.
    """
    if model not in SYNTHETIC_MODELS:
        raise ValueError(f'model must be one of {SYNTHETIC_MODELS}, got {model!r}')
    hw = _size_hw(size)
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    rates = np.asarray(positive_rates if positive_rates is not None else CELEBA_POSITIVE_RATES, dtype=float)
    if rates.shape != (len(CELEBA_ATTRIBUTES),) or ((rates < 0) | (rates > 1)).any():
        raise ValueError(f'positive_rates must be {len(CELEBA_ATTRIBUTES)} values in [0, 1]')
    fr = np.asarray(split_fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f'split_fractions must be three non-negative numbers, got {split_fractions!r}')
    counts = np.floor(fr / fr.sum() * num_images).astype(int)
    counts[0] += num_images - counts.sum()
    if num_images >= 3:
        for k in (1, 2):
            if counts[k] == 0 and fr[k] > 0:
                counts[k] += 1
                counts[0] -= 1
    partitions = np.repeat(np.arange(3), counts)

    rng = np.random.default_rng(seed)
    if model == 'factors':
        factors = rng.standard_normal((num_images, NUM_FACTORS))
        labels = factor_labels(factors, rates, rng)
    else:
        factors = None
        labels = (rng.random((num_images, len(rates))) < rates).astype(np.int8)
    img_dir = osp.join(out_dir, IMG_DIR)
    os.makedirs(img_dir, exist_ok=True)
    names = [f'{i + 1:06d}.jpg' for i in range(num_images)]
    for i, (name, lab) in enumerate(zip(names, labels)):
        img = render_synthetic_face(lab, hw, rng) if factors is None else render_factor_face(factors[i], hw, rng)
        Image.fromarray(img).save(osp.join(img_dir, name), quality=jpeg_quality)
    with open(osp.join(out_dir, ATTR_FILE), 'w', encoding='utf-8') as f:
        f.write(f'{num_images}\n')
        f.write(' '.join(CELEBA_ATTRIBUTES) + ' \n')
        for name, lab in zip(names, labels):
            f.write(name + ' ' + ' '.join(' 1' if v else '-1' for v in lab) + ' \n')
    with open(osp.join(out_dir, PARTITION_FILE), 'w', encoding='utf-8') as f:
        for name, p in zip(names, partitions):
            f.write(f'{name} {p}\n')
    majority = {}
    for split, pid in SPLITS.items():
        sel = labels[partitions == pid]
        if len(sel):
            p = sel.mean(0)
            majority[split] = float(np.minimum(p, 1 - p).mean() * 100)
    return dict(num_images=num_images, splits={s: int(counts[p]) for s, p in SPLITS.items()},
                positive_rate=labels.mean(0).tolist(), majority_error_rate=majority, model=model)
