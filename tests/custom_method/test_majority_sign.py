import torch

from graddrop_mtl.methods import build_method


def test_majority_sign_is_registered_and_keeps_the_majority():
    import projects.MajoritySign.majority_sign  # noqa: F401
    method = build_method(dict(type='MajoritySign'))
    grads = torch.tensor([[3.0, -1.0, 2.0], [-1.0, -2.0, -2.0]])     # majorities: +, -, tie
    out = method.combine(grads, generator=torch.Generator().manual_seed(0))
    assert out[0] == 3.0 and out[1] == -3.0 and out[2] in (2.0, -2.0)


def test_config_loads_the_project(repo_root):
    from mmengine.config import Config
    cfg = Config.fromfile(f'{repo_root}/projects/MajoritySign/configs/sine_majority_sign.py')
    assert cfg.optim_wrapper.method.type == 'MajoritySign'
    assert cfg.optim_wrapper.type == 'MultiTaskOptimWrapper'


def test_a_method_registered_later_appears_in_the_mmengine_registry():
    import projects.MajoritySign.majority_sign as project
    from graddrop_mtl.registry import MTL_METHODS
    assert MTL_METHODS.get('MajoritySign') is project.MajoritySign
