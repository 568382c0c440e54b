import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from graddrop_mtl.engine import MultiTaskOptimWrapper
from graddrop_mtl.models.celeba import build_celeba_model

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs', 'celeba')
METHOD_CONFIGS = {
    'celeba_sum.py': ('Sum', None),
    'celeba_graddrop.py': ('GradDrop', None),
    'celeba_random_graddrop.py': ('RandomGradDrop', None),
    'celeba_pcgrad.py': ('PCGrad', None),
    'celeba_mgda.py': ('MGDA', None),
    'celeba_gradnorm.py': ('GradNorm', None),
    'celeba_gradclip.py': ('Sum', 10.0),
    'celeba_gradpenalty.py': ('GradPenalty', None),
    'celeba_graddrop_gradclip.py': ('GradDrop', 10.0),
}


def _load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def test_every_config_is_listed():
    found = {osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py'))}
    assert found == set(METHOD_CONFIGS) | {'celeba_base.py'}


def test_base_follows_appendix():
    cfg = _load('celeba_base.py')
    opt = cfg.optim_wrapper
    assert opt.type == 'MultiTaskOptimWrapper' and opt.shared == 'backbone'
    assert opt.optimizer.type == 'Adam' and opt.optimizer.lr == 1e-3 and tuple(opt.optimizer.betas) == (0.9, 0.999)
    assert cfg.train_dataloader.batch_size == 8
    (sched,) = cfg.param_scheduler
    assert (sched.type, sched.step_size, sched.gamma, sched.by_epoch) == ('StepLR', 2400, 0.96, False)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.default_hooks.checkpoint.save_best == 'celeba/error_rate' and cfg.default_hooks.checkpoint.rule == 'less'
    assert (cfg.train_dataloader.dataset.split, cfg.val_dataloader.dataset.split,
            cfg.test_dataloader.dataset.split) == ('train', 'val', 'test')
    assert cfg.train_dataloader.dataset.data_root == 'data/celeba'


@pytest.mark.parametrize('name', sorted(METHOD_CONFIGS))
def test_differs_from_baseline_only_in_optim_wrapper(name):
    base = _load('celeba_sum.py').to_dict()
    cfg = _load(name).to_dict()
    opt, base_opt = cfg.pop('optim_wrapper'), base.pop('optim_wrapper')
    assert cfg == base
    method, clip = METHOD_CONFIGS[name]
    assert opt['method']['type'] == method
    assert (opt.get('clip_grad') or {}).get('max_norm') == clip
    expected_lr = 1e-5 if method == 'MGDA' else 1e-3     # appendix: MGDA needs a 100x lower learning rate
    assert opt['optimizer']['lr'] == pytest.approx(expected_lr)
    rest = {k: v for k, v in opt.items() if k not in ('method', 'clip_grad', 'optimizer')}
    base_rest = {k: v for k, v in base_opt.items() if k not in ('method', 'clip_grad', 'optimizer')}
    assert rest == base_rest
    assert {k: v for k, v in opt['optimizer'].items() if k != 'lr'} == \
        {k: v for k, v in base_opt['optimizer'].items() if k != 'lr'}


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return build_celeba_model(head_pool=1)


@pytest.mark.parametrize('name', sorted(METHOD_CONFIGS))
def test_optim_wrapper_builds(name, tiny_model):
    init_default_scope('graddrop_mtl')
    wrapper = build_optim_wrapper(tiny_model, _load(name).optim_wrapper)
    assert isinstance(wrapper, MultiTaskOptimWrapper)
    assert type(wrapper.method).__name__ == METHOD_CONFIGS[name][0]


@pytest.mark.parametrize('name', sorted(METHOD_CONFIGS) + ['celeba_base.py'])
def test_per_task_gradients_are_exact_by_default(name, tiny_model):
    """A reproduction config computes the method exactly: no reduced matmul precision unless the user asks."""
    init_default_scope('graddrop_mtl')
    wrapper = build_optim_wrapper(tiny_model, _load(name).optim_wrapper)
    assert wrapper.task_grad_precision is None


def test_bf16_is_one_documented_option_away(tiny_model):
    """The opt-in that configs/celeba/README.md and celeba_base.py document builds the CPU-only bf16 setting."""
    cfg = _load('celeba_graddrop.py')
    option = 'optim_wrapper.task_grad_precision.cpu=bf16'
    assert option in open(osp.join(CONFIG_DIR, 'celeba_base.py')).read()
    assert option in open(osp.join(CONFIG_DIR, 'README.md')).read()
    key, value = option.split('=')
    cfg.merge_from_dict({key: value})
    init_default_scope('graddrop_mtl')
    wrapper = build_optim_wrapper(tiny_model, cfg.optim_wrapper)
    assert wrapper.task_grad_precision == dict(cpu='bf16')
