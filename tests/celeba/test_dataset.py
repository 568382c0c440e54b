import os
import os.path as osp
import re

import numpy as np
import pytest
import torch

from graddrop_mtl.datasets.celeba import (
    ATTR_FILE,
    CELEBA_ATTRIBUTES,
    IMG_DIR,
    PARTITION_FILE,
    CelebADataset,
    CelebAFormatError,
    LoadCelebAImage,
    PackCelebAInputs,
    parse_attr_file,
    parse_partition_file,
)
from graddrop_mtl.registry import DATASETS


def _lines(root, name):
    with open(osp.join(root, name)) as f:
        return f.read().splitlines()


def _write(root, name, lines):
    with open(osp.join(root, name), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def _expected(root):
    """Labels and partitions read independently of the dataset code."""
    rows = [ln.split() for ln in _lines(root, ATTR_FILE)[2:]]
    labels = {r[0]: np.array([int(v) for v in r[1:]]) for r in rows}
    parts = dict(ln.split() for ln in _lines(root, PARTITION_FILE))
    return labels, parts


@pytest.mark.parametrize('split,pid', [('train', '0'), ('val', '1'), ('test', '2')])
def test_split_selects_partition_and_labels(celeba_root, split, pid):
    labels, parts = _expected(celeba_root)
    ds = CelebADataset(data_root=celeba_root, split=split, img_size=(16, 12))
    names = [n for n in labels if parts[n] == pid]
    assert len(ds) == len(names) > 0
    for i, name in enumerate(names):
        info = ds.get_data_info(i)
        assert info['img_id'] == name
        assert info['img_path'] == osp.join(celeba_root, IMG_DIR, name)
        np.testing.assert_array_equal(info['gt_label'], (labels[name] > 0).astype(np.float32))
        assert ds.get_cat_ids(i) == np.flatnonzero(labels[name] > 0).tolist()
    assert ds.metainfo['attributes'] == CELEBA_ATTRIBUTES


def test_all_split_and_sample_format(celeba_root):
    ds = CelebADataset(data_root=celeba_root, split='all', img_size=(16, 12))
    assert len(ds) == 20
    sample = ds[0]
    assert sample['inputs'].dtype == torch.uint8 and sample['inputs'].shape == (3, 16, 12)
    gt = sample['data_samples']['gt_label']
    assert gt.dtype == torch.float32 and gt.shape == (40,) and set(gt.unique().tolist()) <= {0.0, 1.0}
    assert sample['data_samples']['img_id'] == '000001.jpg'


def test_img_size_none_keeps_stored_size(celeba_root):
    ds = CelebADataset(data_root=celeba_root, split='val', img_size=None)
    assert ds[0]['inputs'].shape == (3, 24, 20)


def test_registry_build_and_pipeline_dicts(celeba_root):
    ds = DATASETS.build(dict(type='CelebADataset', data_root=celeba_root, split='test',
                             pipeline=[dict(type='LoadCelebAImage', size=8), dict(type='PackCelebAInputs')]))
    assert isinstance(ds, CelebADataset)
    assert ds[1]['inputs'].shape == (3, 8, 8)


def test_official_anno_eval_layout(celeba_root):
    os.makedirs(osp.join(celeba_root, 'Anno'))
    os.makedirs(osp.join(celeba_root, 'Eval'))
    os.rename(osp.join(celeba_root, ATTR_FILE), osp.join(celeba_root, 'Anno', ATTR_FILE))
    os.rename(osp.join(celeba_root, PARTITION_FILE), osp.join(celeba_root, 'Eval', PARTITION_FILE))
    with pytest.raises(FileNotFoundError, match=ATTR_FILE):
        CelebADataset(data_root=celeba_root, split='train')
    ds = CelebADataset(data_root=celeba_root, split='train', ann_file=f'Anno/{ATTR_FILE}',
                       partition_file=f'Eval/{PARTITION_FILE}')
    assert len(ds) == 16


def test_parsers_accept_the_official_spacing(tmp_path):
    # The official file pads positive values with a second space and ends lines with a space.
    attr = tmp_path / 'a.txt'
    attr.write_text('2\n' + ' '.join(CELEBA_ATTRIBUTES) + ' \n'
                    + '000001.jpg ' + ' '.join(['-1', ' 1'] * 20) + ' \n'
                    + '000002.jpg  ' + '  '.join(['1'] * 40) + '\n\n')
    parsed = parse_attr_file(str(attr))
    assert parsed.files == ['000001.jpg', '000002.jpg'] and parsed.lines == [3, 4]
    np.testing.assert_array_equal(parsed.labels[0], [-1, 1] * 20)
    np.testing.assert_array_equal(parsed.labels[1], [1] * 40)
    part = tmp_path / 'p.txt'
    part.write_text('000001.jpg 0\n000002.jpg 2\n')
    assert parse_partition_file(str(part)) == {'000001.jpg': (0, 1), '000002.jpg': (2, 2)}


# ------------------------------------------------------------------------------------------------ errors
def _corrupt_attr(root, lineno, new_text):
    lines = _lines(root, ATTR_FILE)
    lines[lineno - 1] = new_text
    _write(root, ATTR_FILE, lines)


def _error(root, exc=CelebAFormatError, **kwargs):
    with pytest.raises(exc) as info:
        CelebADataset(data_root=root, **kwargs)
    return str(info.value)


def test_error_wrong_column_count(celeba_root):
    row = _lines(celeba_root, ATTR_FILE)[6]
    _corrupt_attr(celeba_root, 7, row.rsplit(' ', 2)[0])   # drop the last value
    msg = _error(celeba_root)
    assert f'{osp.join(celeba_root, ATTR_FILE)}:7:' in msg and '41 columns' in msg


def test_error_value_not_pm1(celeba_root):
    parts = _lines(celeba_root, ATTR_FILE)[4].split()
    parts[3] = '0'
    _corrupt_attr(celeba_root, 5, ' '.join(parts))
    msg = _error(celeba_root)
    assert f'{ATTR_FILE}:5:' in msg and "'Attractive'" in msg and "'0'" in msg


def test_error_attribute_name_count(celeba_root):
    _corrupt_attr(celeba_root, 2, ' '.join(CELEBA_ATTRIBUTES[:39]))
    msg = _error(celeba_root)
    assert f'{ATTR_FILE}:2:' in msg and 'expected 40 attribute names, found 39' in msg


def test_error_attribute_name_mismatch(celeba_root):
    names = list(CELEBA_ATTRIBUTES)
    names[20] = 'Female'
    _corrupt_attr(celeba_root, 2, ' '.join(names))
    msg = _error(celeba_root)
    assert f'{ATTR_FILE}:2:' in msg and "'Female'" in msg and "'Male'" in msg
    # ... unless those names are asked for
    assert len(CelebADataset(data_root=celeba_root, attributes=names)) == 16


def test_error_count_line_mismatch(celeba_root):
    _corrupt_attr(celeba_root, 1, '21')
    msg = _error(celeba_root)
    assert f'{ATTR_FILE}:1:' in msg and '21' in msg and '20' in msg


def test_error_count_line_not_a_number(celeba_root):
    _corrupt_attr(celeba_root, 1, 'twenty')
    assert f'{ATTR_FILE}:1:' in _error(celeba_root)


def test_error_duplicate_image(celeba_root):
    lines = _lines(celeba_root, ATTR_FILE)
    lines[5] = lines[4]
    _write(celeba_root, ATTR_FILE, lines)
    msg = _error(celeba_root)
    assert f'{ATTR_FILE}:6:' in msg and 'line 5' in msg


@pytest.mark.parametrize('bad', ['3', '-1', 'x'])
def test_error_unknown_partition_id(celeba_root, bad):
    lines = _lines(celeba_root, PARTITION_FILE)
    lines[8] = lines[8].split()[0] + ' ' + bad
    _write(celeba_root, PARTITION_FILE, lines)
    msg = _error(celeba_root)
    assert f'{PARTITION_FILE}:9:' in msg and f'{bad!r}' in msg


def test_error_partition_wrong_column_count(celeba_root):
    lines = _lines(celeba_root, PARTITION_FILE)
    lines[2] = lines[2] + ' 1'
    _write(celeba_root, PARTITION_FILE, lines)
    assert f'{PARTITION_FILE}:3:' in _error(celeba_root)


def test_error_image_without_partition(celeba_root):
    lines = _lines(celeba_root, PARTITION_FILE)
    del lines[3]                                  # 000004.jpg, attribute file line 6
    _write(celeba_root, PARTITION_FILE, lines)
    msg = _error(celeba_root)
    assert f'{ATTR_FILE}:6:' in msg and '000004.jpg' in msg


def test_error_partition_lists_unknown_image(celeba_root):
    lines = _lines(celeba_root, PARTITION_FILE) + ['999999.jpg 0']
    _write(celeba_root, PARTITION_FILE, lines)
    msg = _error(celeba_root)
    assert f'{PARTITION_FILE}:21:' in msg and '999999.jpg' in msg


def test_error_missing_image(celeba_root):
    os.remove(osp.join(celeba_root, IMG_DIR, '000005.jpg'))
    msg = _error(celeba_root, exc=FileNotFoundError)
    assert '000005.jpg' in msg and f'{ATTR_FILE}:7' in msg
    # other splits do not need it
    assert len(CelebADataset(data_root=celeba_root, split='val')) == 2


def test_error_missing_image_at_load_time(celeba_root):
    ds = CelebADataset(data_root=celeba_root, split='test')
    os.remove(osp.join(celeba_root, IMG_DIR, '000020.jpg'))
    with pytest.raises(FileNotFoundError, match=re.escape(osp.join(IMG_DIR, '000020.jpg'))):
        ds[1]


def test_error_corrupt_image(celeba_root):
    with open(osp.join(celeba_root, IMG_DIR, '000019.jpg'), 'wb') as f:
        f.write(b'not a jpeg')
    ds = CelebADataset(data_root=celeba_root, split='test')
    with pytest.raises(OSError, match='000019.jpg'):
        ds[0]


def test_error_bad_split(celeba_root):
    with pytest.raises(ValueError, match='split'):
        CelebADataset(data_root=celeba_root, split='validation')


def test_transforms_directly(celeba_root):
    info = dict(img_path=osp.join(celeba_root, IMG_DIR, '000001.jpg'), gt_label=np.ones(40, np.float32),
                img_id='000001.jpg')
    out = LoadCelebAImage(size=(10, 6))(info)
    assert out['img'].shape == (10, 6, 3) and out['ori_shape'] == (24, 20)
    packed = PackCelebAInputs()(out)
    assert packed['inputs'].shape == (3, 10, 6)
    assert torch.equal(packed['inputs'].permute(1, 2, 0), torch.from_numpy(out['img']))
