import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from graddrop_mtl.datasets.celeba import (
    ATTR_FILE,
    CELEBA_ATTRIBUTES,
    FACTOR_COLS,
    FACTOR_ROWS,
    GRID_COLS,
    GRID_ROWS,
    IMG_DIR,
    NUM_FACTORS,
    PARTITION_FILE,
    CelebADataset,
    factor_loadings,
    parse_attr_file,
    parse_partition_file,
    render_factor_face,
    render_synthetic_face,
    write_synthetic_celeba,
)


def test_round_trip(tmp_path):
    root = str(tmp_path / 'synth')
    summary = write_synthetic_celeba(root, num_images=30, seed=1, size=(20, 16))
    assert summary['splits'] == {'train': 24, 'val': 3, 'test': 3}
    attrs = parse_attr_file(osp.join(root, ATTR_FILE))
    assert attrs.names == list(CELEBA_ATTRIBUTES)
    assert attrs.files == [f'{i:06d}.jpg' for i in range(1, 31)]
    parts = parse_partition_file(osp.join(root, PARTITION_FILE))
    assert [parts[f][0] for f in attrs.files] == [0] * 24 + [1] * 3 + [2] * 3
    np.testing.assert_allclose(summary['positive_rate'], (attrs.labels > 0).mean(0))
    for split, pid in (('train', 0), ('val', 1), ('test', 2)):
        p = (attrs.labels[[parts[f][0] == pid for f in attrs.files]] > 0).mean(0)
        assert summary['majority_error_rate'][split] == pytest.approx(np.minimum(p, 1 - p).mean() * 100)
        ds = CelebADataset(data_root=root, split=split, img_size=None)
        assert len(ds) == summary['splits'][split]
        assert ds[0]['inputs'].shape == (3, 20, 16)
    with Image.open(osp.join(root, IMG_DIR, '000030.jpg')) as im:
        assert im.format == 'JPEG' and im.size == (16, 20)


def test_seed_determinism(tmp_path):
    a = write_synthetic_celeba(str(tmp_path / 'a'), num_images=6, seed=5, size=16)
    b = write_synthetic_celeba(str(tmp_path / 'b'), num_images=6, seed=5, size=16)
    c = write_synthetic_celeba(str(tmp_path / 'c'), num_images=6, seed=6, size=16)
    read = lambda d: open(osp.join(str(tmp_path), d, ATTR_FILE)).read()  # noqa: E731
    assert a == b and read('a') == read('b')
    assert c['positive_rate'] != a['positive_rate'] and read('a') != read('c')
    img = lambda d: np.asarray(Image.open(osp.join(str(tmp_path), d, IMG_DIR, '000003.jpg')))  # noqa: E731
    np.testing.assert_array_equal(img('a'), img('b'))


def test_priors_follow_celeba_frequencies(tmp_path):
    # 'No_Beard' (83.5% in CelebA) is mostly positive, 'Bald' (2.2%) mostly negative.
    s = write_synthetic_celeba(str(tmp_path / 's'), num_images=400, seed=0, size=8)
    rate = dict(zip(CELEBA_ATTRIBUTES, s['positive_rate']))
    assert rate['No_Beard'] > 0.75 and rate['Bald'] < 0.06 and 0.4 < rate['Attractive'] < 0.6
    assert 15 < s['majority_error_rate']['train'] < 25


@pytest.mark.parametrize('attribute', [0, 13, 39])
def test_each_attribute_paints_its_own_cell(attribute):
    h, w = 50, 80
    labels = np.zeros(40, dtype=np.int8)
    labels[attribute] = 1
    diffs = []
    for seed in range(4):
        off = render_synthetic_face(np.zeros(40, dtype=np.int8), (h, w), np.random.default_rng(seed)).astype(float)
        on = render_synthetic_face(labels, (h, w), np.random.default_rng(seed)).astype(float)
        diffs.append(np.abs(on - off).sum(-1))
    diff = np.mean(diffs, 0)
    r, c = divmod(attribute, GRID_COLS)
    ch, cw = h // GRID_ROWS, w // GRID_COLS
    cell = np.zeros((h, w), bool)
    cell[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = True
    assert diff[cell].mean() > 20 and diff[~cell].mean() < 5


def test_cli(tmp_path, repo_root):
    out = str(tmp_path / 'cli')
    proc = subprocess.run([sys.executable, osp.join(repo_root, 'tools', 'make_synthetic_celeba.py'), '--out-dir', out,
                           '--num-images', '5', '--seed', '2', '--size', '12x10'],
                          capture_output=True, text=True, check=True, env={'PYTHONPATH': repo_root, 'PATH': ''})
    info = json.loads(proc.stdout)
    assert info['num_images'] == 5 and info['splits'] == {'train': 3, 'val': 1, 'test': 1}
    with Image.open(osp.join(out, IMG_DIR, '000005.jpg')) as im:
        assert im.size == (10, 12)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_images'):
        write_synthetic_celeba(str(tmp_path), num_images=0)
    with pytest.raises(ValueError, match='positive_rates'):
        write_synthetic_celeba(str(tmp_path), num_images=2, positive_rates=[0.5] * 39)
    with pytest.raises(ValueError, match="model must be one of .*'clusters'"):
        write_synthetic_celeba(str(tmp_path), num_images=2, model='clusters')


def _label_correlations(root: str) -> np.ndarray:
    labels = (parse_attr_file(osp.join(root, ATTR_FILE)).labels > 0).astype(float)
    return np.corrcoef(labels.T)


def test_factor_model_relates_the_attributes(tmp_path):
    """Attributes on one factor with the same sign correlate, with opposite signs anticorrelate, on different
    factors are independent; the independent model relates none."""
    w = factor_loadings()
    assert w.shape == (40, NUM_FACTORS)
    shared = w @ w.T
    off = ~np.eye(40, dtype=bool)
    write_synthetic_celeba(str(tmp_path / 'f'), num_images=1500, seed=0, size=8)
    c = _label_correlations(str(tmp_path / 'f'))
    assert c[(shared > 0.5) & off].mean() > 0.25
    assert c[(shared < -0.5) & off].mean() < -0.15
    assert np.abs(c[(shared == 0) & off]).mean() < 0.04
    # e.g. attributes 0 and 16 share factor 0 with the same sign, 0 and 8 with opposite signs
    assert w[0, 0] == w[16, 0] == 1 and w[8, 0] == -1
    write_synthetic_celeba(str(tmp_path / 'i'), num_images=1500, seed=0, size=8, model='independent')
    ci = _label_correlations(str(tmp_path / 'i'))
    assert np.abs(ci[(shared > 0.5) & off]).mean() < 0.04 and np.abs(ci[(shared < -0.5) & off]).mean() < 0.04


@pytest.mark.parametrize('factor', [0, 5, 7])
def test_each_factor_paints_its_own_cell(factor):
    h, w = 40, 64
    low, high = np.full(NUM_FACTORS, -3.0), np.full(NUM_FACTORS, -3.0)
    high[factor] = 3.0
    diffs = []
    for seed in range(4):
        off = render_factor_face(low, (h, w), np.random.default_rng(seed)).astype(float)
        on = render_factor_face(high, (h, w), np.random.default_rng(seed)).astype(float)
        diffs.append(np.abs(on - off).sum(-1))
    diff = np.mean(diffs, 0)
    r, c = divmod(factor, FACTOR_COLS)
    ch, cw = h // FACTOR_ROWS, w // FACTOR_COLS
    cell = np.zeros((h, w), bool)
    cell[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = True
    assert diff[cell].mean() > 20 and diff[~cell].mean() < 5
