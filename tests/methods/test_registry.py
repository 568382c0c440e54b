"""The method registry, build_method's errors, the mmengine mirror, and the contract every method follows."""
from __future__ import annotations

import pytest
import torch

from graddrop_mtl.methods import METHODS, Method, build_method, register_method

from ._util import gen

EXPECTED = {'Sum', 'GradDrop', 'RandomGradDrop', 'PCGrad', 'MGDA', 'GradNorm', 'GradPenalty', 'Compose', 'DBMTL',
            'STCH'}

# one valid config per registered method (Compose needs its parts)
CONFIGS = {
    'Sum': dict(type='Sum'),
    'GradDrop': dict(type='GradDrop', k=0.5, leak=0.1),
    'RandomGradDrop': dict(type='RandomGradDrop'),
    'PCGrad': dict(type='PCGrad', iterative=True),
    'MGDA': dict(type='MGDA', normalization='loss+'),
    'GradNorm': dict(type='GradNorm', alpha=1.0),
    'GradPenalty': dict(type='GradPenalty', weight=0.1),
    'Compose': dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop')),
    'CAGrad': dict(type='CAGrad', c=0.4),
    'NashMTL': dict(type='NashMTL', max_norm=0.0),
    'FairGrad': dict(type='FairGrad', alpha=2.0),
    'IMTLG': dict(type='IMTLG'),
    'AlignedMTL': dict(type='AlignedMTL', scale_mode='median'),
    'UPGrad': dict(type='UPGrad'),
    'GradVac': dict(type='GradVac', beta=0.1),
    'UW': dict(type='UW'),
    'IMTLL': dict(type='IMTLL'),
    'DWA': dict(type='DWA', temp=2.0),
    'RLW': dict(type='RLW'),
    'FAMO': dict(type='FAMO', w_lr=0.05),
    'DBMTL': dict(type='DBMTL', beta=0.5, beta_sigma=0.5),
    'STCH': dict(type='STCH', mu=0.5, warmup_epoch=1, iters_per_epoch=2),
    'DualProj': dict(type='DualProj'),
    'ConFIG': dict(type='ConFIG'),
    'GLS': dict(type='GLS'),
    'Random': dict(type='Random'),
    'Krum': dict(type='Krum', n_byzantine=0, n_selected=2),
    'TrimmedMean': dict(type='TrimmedMean', trim_number=1),
    'ExcessMTL': dict(type='ExcessMTL', robust_step_size=0.5),
    'SDMGrad': dict(type='SDMGrad', lambda_=0.5),
    'MoCo': dict(type='MoCo', rho=0.1),
    'MoDo': dict(type='MoDo', gamma=0.05),
}
EXPECTED |= {'CAGrad', 'NashMTL', 'FairGrad', 'IMTLG', 'AlignedMTL', 'UPGrad', 'GradVac', 'UW', 'IMTLL', 'DWA', 'RLW',
             'FAMO', 'DualProj', 'ConFIG', 'GLS', 'Random', 'Krum', 'TrimmedMean'}
EXPECTED |= {'ExcessMTL', 'SDMGrad', 'MoCo', 'MoDo'}


def test_every_method_is_registered():
    assert EXPECTED <= set(METHODS)
    builtin = {n for n, c in METHODS.items() if c.__module__.startswith('graddrop_mtl.methods')}
    assert set(CONFIGS) >= builtin, f'add a config for {builtin - set(CONFIGS)}'
    for name, cls in METHODS.items():
        assert cls.__name__ == name and issubclass(cls, Method)


def test_mmengine_registry_mirrors_every_method():
    from graddrop_mtl.registry import MTL_METHODS
    for name, cls in METHODS.items():
        assert MTL_METHODS.get(name) is cls, name
    built = MTL_METHODS.build(dict(type='GradDrop', k=0.25))
    assert type(built) is METHODS['GradDrop'] and built.k == 0.25


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_build_each_method(name):
    method = build_method(CONFIGS[name])
    assert type(method) is METHODS[name]
    assert build_method(method) is method                      # already built: returned as is
    assert type(build_method(dict(CONFIGS[name], type=METHODS[name]))) is METHODS[name]   # a class as type


def test_unknown_type_lists_the_registered_names():
    with pytest.raises(KeyError) as info:
        build_method(dict(type='GradDropp'))
    message = str(info.value)
    assert 'GradDropp' in message
    for name in METHODS:
        assert repr(name) in message


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_unknown_argument_is_named(name):
    """A misspelt argument must be reported by name for every method (including those without an __init__)."""
    with pytest.raises(TypeError, match='not_an_argument'):
        build_method(dict(CONFIGS[name], not_an_argument=1))


def test_unknown_argument_lists_the_accepted_ones():
    with pytest.raises(TypeError) as info:
        build_method(dict(type='RandomGradDrop', k=0.5))       # RGD has no k
    message = str(info.value)
    assert "['k']" in message and 'leak' in message and 'batch_separated' in message


@pytest.mark.parametrize('cfg', [None, 'GradDrop', dict(k=1.0)])
def test_malformed_configs(cfg):
    with pytest.raises(TypeError, match='"type" key'):
        build_method(cfg)


def test_register_method_refuses_a_second_class_with_the_same_name():
    class GradDrop(Method):
        pass

    before = dict(METHODS)
    with pytest.raises(KeyError, match="'GradDrop' is already registered"):
        register_method(GradDrop)
    assert METHODS == before
    assert register_method(METHODS['PCGrad']) is METHODS['PCGrad']     # re-registering the same class is fine


# -- the contract of combine() ----------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(CONFIGS))
@pytest.mark.parametrize('problem_dims', [0, 1])
def test_combine_contract(name, problem_dims):
    """Shape and dtype of one task's gradient, inputs untouched, task weights shaped [T, *problems]."""
    grads = torch.randn(3, 4, 2, 5, generator=gen(0))
    losses = torch.rand(3, 4, generator=gen(1)) + 0.5 if problem_dims else torch.rand(3, generator=gen(1)) + 0.5
    activation = torch.randn(4, 2, 5, generator=gen(2))
    before = (grads.clone(), losses.clone(), activation.clone())
    method = build_method(CONFIGS[name])
    gens = [gen(10 + r) for r in range(4)] if problem_dims else gen(10)
    out = method.combine(grads, activation=activation, losses=losses, generator=gens, problem_dims=problem_dims)
    assert out.shape == grads.shape[1:] and out.dtype == grads.dtype
    assert bool(torch.isfinite(out).all())
    for a, b in zip((grads, losses, activation), before):
        assert torch.equal(a, b)
    if method.task_weights is not None:
        assert method.task_weights.shape == grads.shape[:1 + problem_dims]
    assert isinstance(method.last_stats(), dict)
    assert name in repr(method)


@pytest.mark.parametrize('name', ['Sum', 'GradDrop', 'RandomGradDrop', 'PCGrad', 'MGDA', 'GradPenalty', 'CAGrad',
                                  'FairGrad', 'IMTLG', 'AlignedMTL', 'UPGrad', 'RLW', 'DualProj', 'ConFIG',
                                  'GLS', 'Random', 'Krum', 'TrimmedMean'])
def test_stateless_methods_state(name):
    method = build_method(CONFIGS[name])
    assert method.state_dict() == {}
    method.load_state_dict({})
    with pytest.raises(KeyError, match='stateless'):
        method.load_state_dict({'weights': torch.ones(2)})


@pytest.mark.parametrize('grads,problem_dims,error', [
    ([[1.0, 2.0]], 0, TypeError),
    (torch.ones(0, 3), 0, ValueError),
    (torch.ones(2, 3), 2, ValueError),
])
def test_bad_gradients(grads, problem_dims, error):
    for name in ('Sum', 'GradDrop', 'PCGrad', 'MGDA'):
        with pytest.raises(error, match='grads must be'):
            build_method(CONFIGS[name]).combine(grads, problem_dims=problem_dims)


STATEFUL = ['GradNorm', 'NashMTL', 'GradVac', 'UW', 'IMTLL', 'DWA', 'FAMO', 'Compose']
STATEFUL += ['ExcessMTL', 'SDMGrad', 'MoCo', 'MoDo']


@pytest.mark.parametrize('name', STATEFUL + ['DBMTL', 'STCH'])
def test_stateful_methods_round_trip(name):
    """Three steps, state_dict into a fresh method (through torch.save, as a checkpoint), then both continue
    identically; unknown keys are refused."""
    import io
    def step(method, k):
        g = torch.randn(3, 4, 5, generator=gen(20 + k), dtype=torch.float64)
        losses = torch.rand(3, generator=gen(40 + k), dtype=torch.float64) + 0.5
        return method.combine(g, losses=losses, generator=gen(60 + k)), method.task_weights
    method = build_method(CONFIGS[name])
    for k in range(3):
        step(method, k)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    clone = build_method(CONFIGS[name])
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    for k in range(3, 6):
        out_a, w_a = step(method, k)
        out_b, w_b = step(clone, k)
        torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
        if w_a is not None:
            torch.testing.assert_close(w_b.detach(), w_a.detach(), rtol=0, atol=0)
    with pytest.raises(KeyError):
        build_method(CONFIGS[name]).load_state_dict({**method.state_dict(), 'bogus': 1})
