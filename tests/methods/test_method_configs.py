"""Issue 23's methods selected by one line of config: configs/methods/ holds, per method, a CelebA config and a
reduced-PointPillars config that differ from the Sum baseline only in ``optim_wrapper.method``; each builds, and
each trains the CelebA net for a few steps through the MultiTaskOptimWrapper (the PointPillars runs are the slow
test below)."""
from __future__ import annotations

import glob
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs', 'methods')
METHODS = {'cagrad': 'CAGrad', 'nash_mtl': 'NashMTL', 'fairgrad': 'FairGrad', 'imtl_g': 'IMTLG',
           'aligned_mtl': 'AlignedMTL', 'upgrad': 'UPGrad', 'gradvac': 'GradVac', 'dwa': 'DWA', 'rlw': 'RLW',
           'famo': 'FAMO', 'dualproj': 'DualProj', 'config': 'ConFIG', 'gls': 'GLS', 'random': 'Random',
           'krum': 'Krum', 'trimmed_mean': 'TrimmedMean'}
METHODS.update({'excess_mtl': 'ExcessMTL', 'sdmgrad': 'SDMGrad', 'moco': 'MoCo', 'modo': 'MoDo'})
BASES = {'celeba_{}.py': 'configs/celeba/celeba_sum.py',
         'pointpillars_{}_reduced-car.py': 'configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'}
METHODS.update(uw='UW', imtl_l='IMTLL', db_mtl='DBMTL', stch='STCH')


def _load(path):
    from mmengine.config import Config
    return Config.fromfile(path if osp.isabs(path) else osp.join(ROOT, path))


def test_every_config_is_listed():
    found = {osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py'))}
    assert found == {pattern.format(key) for pattern in BASES for key in METHODS}


@pytest.mark.parametrize('pattern', sorted(BASES))
@pytest.mark.parametrize('key', sorted(METHODS))
def test_differs_from_the_baseline_only_in_the_method(pattern, key):
    from graddrop_mtl.methods import METHODS as REGISTRY
    from graddrop_mtl.methods import build_method
    cfg = _load(osp.join(CONFIG_DIR, pattern.format(key))).to_dict()
    base = _load(BASES[pattern]).to_dict()
    method = cfg['optim_wrapper'].pop('method')
    base['optim_wrapper'].pop('method')
    assert cfg == base
    assert method['type'] == METHODS[key]
    assert type(build_method(method)) is REGISTRY[METHODS[key]]


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g) for _ in range(n)]
    labels = [(torch.rand(40, generator=g) < 0.3).float() for _ in range(n)]
    return dict(inputs=inputs, data_samples=dict(gt_label=labels, img_id=[f'{i:06d}.jpg' for i in range(n)]))


@pytest.mark.parametrize('key', sorted(METHODS))
def test_celeba_net_trains_with_each_method(key):
    """Three steps of the CelebA net (the appendix layers, small inputs) with the config's optim wrapper: finite
    losses, the trunk, the heads and the method's own parameters (UW, IMTL-L) change, and a stateful method's state
    round-trips through the wrapper's checkpoint."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from graddrop_mtl.models.celeba import build_celeba_model
    init_default_scope('graddrop_mtl')
    torch.manual_seed(0)
    model = build_celeba_model(head_pool=2)
    opt_cfg = _load(osp.join(CONFIG_DIR, f'celeba_{key}.py')).optim_wrapper
    opt_cfg.log_per_task = False
    wrapper = build_optim_wrapper(model, opt_cfg)
    assert type(wrapper.method).__name__ == METHODS[key]
    trained = [model.backbone[0][0].weight, model.head[-1].weight, *wrapper.method.parameters()]
    before = [p.detach().clone() for p in trained]
    for step in range(3):
        log = model.train_step(_batch(4, 32, seed=step), wrapper)
        assert bool(torch.isfinite(log['loss']))
    after = trained
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    state = wrapper.state_dict()
    fresh = build_optim_wrapper(build_celeba_model(head_pool=2), opt_cfg)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.method.state_dict(), wrapper.method.state_dict(), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize('key', sorted(METHODS))
def test_reduced_pointpillars_trains_with_each_method(key):
    from mmdet3d.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import graddrop_mtl.det3d.models  # noqa: F401
    from tests.det3d.test_pointpillars_mtl import NINE, fake_batch
    cfg = _load(osp.join(CONFIG_DIR, f'pointpillars_{key}_reduced-car.py'))
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = [p.detach().clone() for p in model.parameters()]
    method_before = [p.detach().clone() for p in wrapper.method.parameters()]
    log = model.train_step(fake_batch(npts=3000), wrapper)
    assert [k for k in log if k != 'loss'] == NINE
    assert all(torch.isfinite(v).all() for v in log.values())
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert all(changed[i] for i, (name, _) in enumerate(model.named_parameters()) if 'pts_neck' in name)
    assert all(not torch.equal(a, b) for a, b in zip(method_before, wrapper.method.parameters()))   # UW, IMTL-L
