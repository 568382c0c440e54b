"""The configs of configs/cifar100_transfer: they build, differ from the base only in optim_wrapper, and encode the
paper's settings (appendix A.5, Table 5)."""
from __future__ import annotations

import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from graddrop_mtl.methods import GradDrop, build_method

from .conftest import CONFIG_DIR

BASE = osp.join(CONFIG_DIR, 'cifar100_transfer_base.py')
CONFIGS = sorted(p for p in glob.glob(osp.join(CONFIG_DIR, 'cifar100_transfer_*.py')) if p != BASE)
SWEEP = {'000_100': [0.0, 1.0], '025_075': [0.25, 0.75], '050_050': [0.5, 0.5], '075_025': [0.75, 0.25],
         '100_000': [1.0, 0.0]}


def load(path: str) -> dict:
    return Config.fromfile(path).to_dict()


def test_there_is_a_config_per_method():
    names = {osp.basename(p)[len('cifar100_transfer_'):-3] for p in CONFIGS}
    expected = {'sum', 'graddrop', 'random_graddrop', 'gradnorm', 'mgda', 'gradclip', 'gradpenalty',
                'graddrop_gradclip'} | {f'graddrop_leak_s{k[:3]}_t{k[4:]}' for k in SWEEP}
    assert expected <= names


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_configs_differ_from_the_base_only_in_optim_wrapper(path):
    base, cfg = load(BASE), load(path)
    base.pop('optim_wrapper')
    wrapper = cfg.pop('optim_wrapper')
    assert cfg == base
    assert wrapper['type'] == 'MultiTaskOptimWrapper' and wrapper['shared'] == 'backbone'
    assert wrapper['tasks'] == ['loss_imagenet', 'loss_cifar']
    assert wrapper['optimizer'] == dict(type='Adam', lr=1e-3, betas=(0.9, 0.999))
    build_method(wrapper['method'])


def test_default_graddrop_config():
    method = load(osp.join(CONFIG_DIR, 'cifar100_transfer_graddrop.py'))['optim_wrapper']['method']
    assert method == dict(type='GradDrop', k=0.25, leak=[1.0, 0.0], batch_separated=True)
    built = build_method(method)
    assert isinstance(built, GradDrop)
    p = torch.tensor([0.0, 0.3, 0.5, 1.0])
    torch.testing.assert_close(built.keep_positive_probability(p), 0.25 * (p - 0.5) + 0.5)


@pytest.mark.parametrize('suffix, leak', list(SWEEP.items()))
def test_leak_sweep(suffix, leak):
    method = load(osp.join(CONFIG_DIR, f'cifar100_transfer_graddrop_leak_s{suffix[:3]}_t{suffix[4:]}.py'))[
        'optim_wrapper']['method']
    assert method == dict(type='GradDrop', k=0.25, leak=leak, batch_separated=True)


def test_baselines():
    def method(name):
        return load(osp.join(CONFIG_DIR, f'cifar100_transfer_{name}.py'))['optim_wrapper']
    assert method('sum')['method'] == dict(type='Sum')
    assert method('random_graddrop')['method'] == dict(type='RandomGradDrop', leak=[1.0, 0.0], batch_separated=True)
    assert method('gradnorm')['method']['type'] == 'GradNorm'
    assert method('mgda')['method']['type'] == 'MGDA'
    assert method('gradpenalty')['method']['type'] == 'GradPenalty'
    assert method('gradclip')['clip_grad']['max_norm'] > 0 and method('gradclip')['method'] == dict(type='Sum')
    assert 'clip_grad' not in method('graddrop')
    assert method('graddrop_gradclip')['method']['type'] == 'GradDrop' and 'clip_grad' in method('graddrop_gradclip')


def test_base_settings():
    cfg = load(BASE)
    assert cfg['model']['depth'] == 100 and cfg['model']['growth_rate'] == 12 and cfg['model']['compression'] == 0.5
    assert cfg['train_dataloader']['batch_size'] == 8                      # 8 pairs: 8 ImageNet + 8 CIFAR-100
    assert cfg['train_dataloader']['dataset']['type'] == 'PairedTransferDataset'
    assert cfg['train_cfg']['type'] == 'IterBasedTrainLoop'
    assert cfg['val_dataloader']['dataset']['split'] == 'val' and cfg['test_dataloader']['dataset']['split'] == 'test'
    preprocessor = cfg['model']['data_preprocessor']
    assert preprocessor['std'] == [256.0] * 3 and preprocessor['mean'] == [0.0] * 3       # images / 256


def test_learning_rate_schedule():
    """1e-3 for the first 100k updates, then x0.94 after every further 2000."""
    from mmengine.optim.scheduler import StepLR
    cfg = load(BASE)
    sched_cfg = dict(cfg['param_scheduler'][0])
    assert sched_cfg.pop('type') == 'StepLR'
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=cfg['optim_wrapper']['optimizer']['lr'])
    sched = StepLR(optimizer, **sched_cfg)
    sched._global_step = 99_990    # fast-forward: the scheduler does nothing before `begin`
    lrs = {}
    for step in range(99_990, 106_001):
        lrs[step] = optimizer.param_groups[0]['lr']      # lr of the update after `step` updates
        optimizer.step()
        sched.step()
    assert lrs[99_999] == lrs[100_000] == lrs[101_999] == pytest.approx(1e-3)
    assert lrs[102_000] == lrs[103_999] == pytest.approx(0.94e-3)
    assert lrs[104_000] == pytest.approx(0.94 ** 2 * 1e-3)
    assert lrs[106_000] == pytest.approx(0.94 ** 3 * 1e-3)
