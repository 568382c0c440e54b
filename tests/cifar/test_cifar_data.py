"""CIFAR-100 and downsampled-ImageNet loaders (real formats), their errors, the 8 + 8 pairing and the collate."""
from __future__ import annotations

import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config

from graddrop_mtl.datasets.cifar_transfer import (
    CIFAR,
    IMAGENET,
    CIFAR100Dataset,
    ImageNet32Dataset,
    PairedTransferDataset,
    read_cifar100_file,
    read_imagenet32_file,
    transfer_collate,
    write_cifar100,
    write_imagenet32,
)

from .conftest import CONFIG_DIR, TINY


def _pickle(path, obj):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def _copy_cifar(src_root, dst_root):
    os.makedirs(osp.join(dst_root, 'cifar-100-python'))
    for name in ('train', 'test', 'meta'):
        with open(osp.join(src_root, 'cifar-100-python', name), 'rb') as f:
            data = f.read()
        with open(osp.join(dst_root, 'cifar-100-python', name), 'wb') as f:
            f.write(data)


# ------------------------------------------------------------------------------------------------ formats
def test_written_files_have_the_release_formats(synth_root):
    with open(osp.join(synth_root, 'cifar-100-python', 'train'), 'rb') as f:
        train = pickle.load(f, encoding='bytes')
    assert {b'data', b'fine_labels', b'coarse_labels', b'filenames', b'batch_label'} <= set(train)
    assert train[b'data'].dtype == np.uint8 and train[b'data'].shape == (TINY['cifar_train'], 3072)
    assert isinstance(train[b'filenames'][0], bytes)
    with open(osp.join(synth_root, 'cifar-100-python', 'meta'), 'rb') as f:
        meta = pickle.load(f, encoding='bytes')
    assert len(meta[b'fine_label_names']) == 100
    with open(osp.join(synth_root, 'Imagenet32_train', 'train_data_batch_10'), 'rb') as f:
        batch = pickle.load(f)
    assert {'data', 'labels', 'mean'} <= set(batch)
    assert batch['data'].shape == (TINY['imagenet_per_batch'], 3072) and batch['data'].dtype == np.uint8
    assert min(batch['labels']) >= 1 and max(batch['labels']) <= 1000
    with open(osp.join(synth_root, 'Imagenet32_val', 'val_data'), 'rb') as f:
        assert len(pickle.load(f)['labels']) == TINY['imagenet_val']


def test_channel_planar_rows_become_chw_images(tmp_path):
    img = np.zeros((2, 3, 32, 32), np.uint8)
    img[:, 0], img[:, 1], img[:, 2] = 10, 20, 30
    img[1, 0, 0, 5] = 200                       # red plane, row 0, column 5 -> byte 5 of the row
    labels = np.array([3, 7])
    write_cifar100(str(tmp_path), (img, labels), (img, labels), [f'c{i}' for i in range(100)])
    data, _ = read_cifar100_file(str(tmp_path / 'cifar-100-python' / 'train'))
    assert data[1, 5] == 200 and data[0, 1024] == 20 and data[0, 2048] == 30
    ds = CIFAR100Dataset(str(tmp_path), split='trainval')
    assert ds[1]['img'][0, 0, 5] == 200 and (ds[0]['img'][2] == 30).all() and ds[0]['gt_label'] == 3


# ------------------------------------------------------------------------------------------------ CIFAR-100
def test_cifar_splits_are_the_last_fifth_for_validation(synth_root):
    images, labels = read_cifar100_file(osp.join(synth_root, 'cifar-100-python', 'train'))
    train = CIFAR100Dataset(synth_root, split='train')
    val = CIFAR100Dataset(synth_root, split='val')
    test = CIFAR100Dataset(synth_root, split='test')
    assert (len(train), len(val), len(test)) == (160, 40, TINY['cifar_test'])
    assert len(CIFAR100Dataset(synth_root, split='trainval')) == 200
    np.testing.assert_array_equal(val[0]['img'].reshape(-1), images[160])
    np.testing.assert_array_equal(train[159]['img'].reshape(-1), images[159])
    assert [val[i]['gt_label'] for i in range(40)] == labels[160:].tolist()
    assert train[0]['domain'] == CIFAR and train.metainfo['classes'][0] == 'synthetic_class_000'
    assert len(train.metainfo['classes']) == 100


def test_cifar_bad_arguments(synth_root):
    with pytest.raises(ValueError, match='split'):
        CIFAR100Dataset(synth_root, split='valid')
    with pytest.raises(ValueError, match='val_fraction'):
        CIFAR100Dataset(synth_root, val_fraction=1.0)


def test_cifar_missing_file_names_it(tmp_path, synth_root):
    _copy_cifar(synth_root, str(tmp_path))
    os.remove(tmp_path / 'cifar-100-python' / 'meta')
    with pytest.raises(FileNotFoundError, match=r'cifar-100-python/meta'):
        CIFAR100Dataset(str(tmp_path))


def test_cifar_corrupt_file_names_it(tmp_path, synth_root):
    _copy_cifar(synth_root, str(tmp_path))
    path = tmp_path / 'cifar-100-python' / 'train'
    path.write_bytes(path.read_bytes()[:500])            # truncated pickle
    with pytest.raises(ValueError, match=r'cifar-100-python/train: not a readable pickle'):
        CIFAR100Dataset(str(tmp_path))


def test_cifar_missing_key_names_file_and_key(tmp_path, synth_root):
    _copy_cifar(synth_root, str(tmp_path))
    path = tmp_path / 'cifar-100-python' / 'test'
    _pickle(path, {b'data': np.zeros((3, 3072), np.uint8), b'coarse_labels': [0, 0, 0]})
    with pytest.raises(KeyError, match=r"cifar-100-python/test: missing key 'fine_labels'"):
        CIFAR100Dataset(str(tmp_path), split='test')


@pytest.mark.parametrize('data, labels, match', [
    (np.zeros((3, 3000), np.uint8), [0, 1, 2], r"key 'data' must have shape \[N, 3072\]"),
    (np.zeros((3, 3072), np.float32), [0, 1, 2], r"key 'data' must be uint8"),
    (np.zeros((3, 3072), np.uint8), [0, 1], r"key 'fine_labels' has 2 labels but \"data\" has 3 rows"),
    (np.zeros((3, 3072), np.uint8), [0, 100, 2], r"key 'fine_labels' has label 100 at index 1"),
])
def test_cifar_wrong_shapes_and_labels(tmp_path, synth_root, data, labels, match):
    _copy_cifar(synth_root, str(tmp_path))
    path = tmp_path / 'cifar-100-python' / 'test'
    _pickle(path, {b'data': data, b'fine_labels': labels})
    with pytest.raises(ValueError, match=r'cifar-100-python/test: ' + match):
        CIFAR100Dataset(str(tmp_path), split='test')


def test_cifar_meta_needs_100_names(tmp_path, synth_root):
    _copy_cifar(synth_root, str(tmp_path))
    _pickle(tmp_path / 'cifar-100-python' / 'meta', {b'fine_label_names': [b'a', b'b']})
    with pytest.raises(ValueError, match=r"meta: key 'fine_label_names' must hold 100 names, found 2"):
        CIFAR100Dataset(str(tmp_path))


# ------------------------------------------------------------------------------------------------ ImageNet 32x32
def test_imagenet_train_concatenates_the_ten_files_with_zero_based_labels(synth_root):
    ds = ImageNet32Dataset(synth_root, split='train')
    per = TINY['imagenet_per_batch']
    assert len(ds) == 10 * per
    for b in (1, 2, 10):
        data, labels = read_imagenet32_file(osp.join(synth_root, 'Imagenet32_train', f'train_data_batch_{b}'))
        with open(osp.join(synth_root, 'Imagenet32_train', f'train_data_batch_{b}'), 'rb') as f:
            raw_labels = pickle.load(f)['labels']
        assert labels.tolist() == [v - 1 for v in raw_labels]
        item = ds[(b - 1) * per]
        np.testing.assert_array_equal(item['img'].reshape(-1), data[0])
        assert item['gt_label'] == raw_labels[0] - 1 and item['domain'] == IMAGENET
    val = ImageNet32Dataset(synth_root, split='val')
    assert len(val) == TINY['imagenet_val']


def test_imagenet_reads_the_npz_variant(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    os.makedirs(tmp_path / 'Imagenet32_val')
    np.savez(tmp_path / 'Imagenet32_val' / 'val_data.npz', data=data, labels=np.array([1, 1000, 5, 2]))
    ds = ImageNet32Dataset(str(tmp_path), split='val')
    assert [ds[i]['gt_label'] for i in range(4)] == [0, 999, 4, 1]
    np.testing.assert_array_equal(ds[3]['img'].reshape(-1), data[3])


def test_imagenet_missing_batch_file_is_named(tmp_path):
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), np.array([0, 1]))
    write_imagenet32(str(tmp_path), [batch] * 10, batch)
    os.remove(tmp_path / 'Imagenet32_train' / 'train_data_batch_7')
    with pytest.raises(FileNotFoundError, match='train_data_batch_7'):
        ImageNet32Dataset(str(tmp_path), split='train')
    assert len(ImageNet32Dataset(str(tmp_path), split='train', num_train_batches=6)) == 12


@pytest.mark.parametrize('entry, error, match', [
    ({'data': np.zeros((2, 3072), np.uint8), 'labels': [0, 3]}, ValueError, r"key 'labels' has label 0 at index 0, "
                                                                          r'outside \[1, 1000\]'),
    ({'data': np.zeros((2, 3072), np.uint8), 'labels': [1, 1001]}, ValueError,
     r"key 'labels' has label 1001 at index 1"),
    ({'data': np.zeros((2, 32, 32, 3), np.uint8), 'labels': [1, 2]}, ValueError, r"key 'data' must have shape"),
    ({'labels': [1, 2]}, KeyError, r"missing key 'data'"),
    ({'data': np.zeros((2, 3072), np.uint8), 'labels': [1, 2], 'mean': np.zeros(10)}, ValueError,
     r'key "mean" must hold 3072'),
])
def test_imagenet_bad_contents_name_file_and_key(tmp_path, entry, error, match):
    os.makedirs(tmp_path / 'Imagenet32_val')
    _pickle(tmp_path / 'Imagenet32_val' / 'val_data', entry)
    with pytest.raises(error, match=r'Imagenet32_val/val_data: ' + match):
        ImageNet32Dataset(str(tmp_path), split='val')


def test_imagenet_not_a_dict(tmp_path):
    os.makedirs(tmp_path / 'Imagenet32_val')
    _pickle(tmp_path / 'Imagenet32_val' / 'val_data', [1, 2, 3])
    with pytest.raises(ValueError, match=r'val_data: expected a pickled dict, found list'):
        ImageNet32Dataset(str(tmp_path), split='val')


# ------------------------------------------------------------------------------------------------ 8 + 8 batches
def test_pairs_cover_the_larger_dataset_and_cycle_the_smaller(synth_root):
    source = ImageNet32Dataset(synth_root, split='train')          # 60 items
    target = CIFAR100Dataset(synth_root, split='train')            # 160 items
    pairs = PairedTransferDataset(source, target)
    assert len(pairs) == 160
    s, t = pairs[75]
    assert (s['domain'], t['domain']) == (IMAGENET, CIFAR)
    assert s['sample_idx'] == 75 % 60 and t['sample_idx'] == 75
    np.testing.assert_array_equal(s['img'], source[15]['img'])
    with pytest.raises(ValueError, match='same domain id'):
        PairedTransferDataset(source, CIFAR100Dataset(synth_root, domain=IMAGENET))


def test_collate_makes_8_imagenet_then_8_cifar_rows(synth_root):
    pairs = PairedTransferDataset(dict(type='ImageNet32Dataset', data_root=synth_root),
                                  dict(type='CIFAR100Dataset', data_root=synth_root))
    batch = transfer_collate([pairs[i] for i in (3, 90, 17, 5, 150, 42, 8, 100)])
    inputs, samples = batch['inputs'], batch['data_samples']
    assert inputs.shape == (16, 3, 32, 32) and inputs.dtype == torch.uint8
    assert samples['domain'].tolist() == [IMAGENET] * 8 + [CIFAR] * 8
    expected_cifar = [pairs.target[i]['gt_label'] for i in (3, 90, 17, 5, 150, 42, 8, 100)]
    assert samples['gt_label'][8:].tolist() == expected_cifar
    assert torch.equal(inputs[9], torch.from_numpy(pairs.target[90]['img']))
    assert torch.equal(inputs[1], torch.from_numpy(pairs.source[90 % 60]['img']))


def test_collate_groups_single_items_by_domain(synth_root):
    c = CIFAR100Dataset(synth_root, split='test')
    i = ImageNet32Dataset(synth_root, split='val')
    batch = transfer_collate([c[0], i[0], c[1], i[1]])
    assert batch['data_samples']['domain'].tolist() == [0, 0, 1, 1]
    assert batch['data_samples']['sample_idx'].tolist() == [0, 1, 0, 1]
    with pytest.raises(KeyError, match="'img'"):
        transfer_collate([dict(gt_label=1, domain=0)])


def test_config_train_loader_gives_8_plus_8_batches(synth_root):
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'cifar100_transfer_graddrop.py'))
    loader_cfg = cfg.train_dataloader.to_dict()
    loader_cfg['num_workers'] = 0
    loader_cfg['dataset']['source']['data_root'] = synth_root
    loader_cfg['dataset']['target']['data_root'] = synth_root
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        loader = Runner.build_dataloader(loader_cfg, seed=0)
    it = iter(loader)
    for _ in range(3):
        batch = next(it)
        assert batch['inputs'].shape == (16, 3, 32, 32)
        assert batch['data_samples']['domain'].tolist() == [IMAGENET] * 8 + [CIFAR] * 8
        assert batch['data_samples']['gt_label'][8:].max() < 100


# ------------------------------------------------------------------------------------------------ generator
def test_generated_classes_are_learnable(synth_tool, tmp_path):
    """A nearest-class-mean classifier fitted on the generated CIFAR train file beats chance (1%) on its test file
    by far: the images carry class information."""
    synth_tool.make_transfer_sets(str(tmp_path), seed=1, cifar_train=1000, cifar_test=300, imagenet_batches=1,
                                  imagenet_per_batch=2, imagenet_val=2)
    x, y = read_cifar100_file(str(tmp_path / 'cifar-100-python' / 'train'))
    xt, yt = read_cifar100_file(str(tmp_path / 'cifar-100-python' / 'test'))
    assert sorted(set(y.tolist())) == list(range(100))
    means = np.stack([x[y == c].astype(np.float64).mean(0) for c in range(100)])
    dist = (means ** 2).sum(1)[None] - 2.0 * xt.astype(np.float64) @ means.T    # squared distance minus |x|^2
    accuracy = float((dist.argmin(1) == yt).mean())
    assert accuracy > 0.3


def _residual_patterns(x: np.ndarray) -> np.ndarray:
    """Images minus their per-channel mean: the spatial pattern without colour and brightness."""
    img = x.astype(np.float64).reshape(len(x), 3, 1024)
    return (img - img.mean(2, keepdims=True)).reshape(len(x), -1)


@pytest.mark.parametrize('relation, transfers', [('shared', True), ('independent', False)])
def test_source_classes_share_patterns_with_target_classes(synth_tool, tmp_path, relation, transfers):
    """'shared': a nearest-pattern classifier fitted on ImageNet images alone (classes grouped by label % 100)
    recognises the CIFAR test images' classes far above chance; the 'independent' control stays at chance."""
    synth_tool.make_transfer_sets(str(tmp_path), seed=2, cifar_train=10, cifar_test=500, imagenet_batches=1,
                                  imagenet_per_batch=4000, imagenet_val=2, relation=relation)
    xs, ys = read_imagenet32_file(str(tmp_path / 'Imagenet32_train' / 'train_data_batch_1'))
    xt, yt = read_cifar100_file(str(tmp_path / 'cifar-100-python' / 'test'))
    rs, rt = _residual_patterns(xs), _residual_patterns(xt)
    means = np.stack([rs[ys % 100 == c].mean(0) for c in range(100)])
    dist = (means ** 2).sum(1)[None] - 2.0 * rt @ means.T
    accuracy = float((dist.argmin(1) == yt).mean())
    assert accuracy > 0.3 if transfers else accuracy < 0.05


def test_generator_rejects_unknown_relation(synth_tool, tmp_path):
    with pytest.raises(ValueError, match="relation must be one of .*'partial'"):
        synth_tool.make_transfer_sets(str(tmp_path), relation='partial')


def test_generator_cli_writes_requested_sizes(synth_tool, tmp_path):
    synth_tool.main(['--out-dir', str(tmp_path), '--seed', '3', '--cifar-train', '20', '--cifar-test', '10',
                     '--imagenet-batches', '2', '--imagenet-per-batch', '3', '--imagenet-val', '4'])
    assert len(CIFAR100Dataset(str(tmp_path), split='trainval')) == 20
    assert len(ImageNet32Dataset(str(tmp_path), split='train', num_train_batches=2)) == 6
    assert not osp.exists(tmp_path / 'Imagenet32_train' / 'train_data_batch_3')
