"""The wrapper's fast path for loss weightings (``method.loss_only``: UW, IMTL-L, DWA, RLW, FAMO, GLS, and any
registered later): the weights from ``weigh_losses`` instead of ``combine``, the trunk gradient of
``sum_i w_i L_i`` taken as one task. Guarded: the same training as the per-task path (the same method with
``loss_only`` switched off on the instance, so that the wrapper takes per-task gradients and calls ``combine``),
one gradient at the shared activation per step, the state moved once per applied step and not at all on a
skipped one, resume, accumulation, loss scaling, and DDP."""
import copy

import pytest
import torch
import torch.multiprocessing as mp

from graddrop_mtl.engine import MultiTaskOptimWrapper
from graddrop_mtl.methods import METHODS

from .test_distributed import _assert_same, _ddp_setup, _free_port, _params, _shard
from .toy import ToyConvMTL, ToyMTL, toy_conv_data, toy_data

#: every registered loss weighting, with default arguments
LOSS_ONLY = sorted(name for name, cls in METHODS.items() if cls.loss_only)


def test_the_registry_has_loss_weightings():
    assert {'UW', 'IMTLL', 'DWA', 'RLW', 'FAMO', 'GLS'} <= set(LOSS_ONLY)


def _wrapper(model, name, per_task=False, lr=0.1, **kwargs):
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=lr), method=dict(type=name),
                                    shared='trunk', seed=5, **kwargs)
    if per_task:
        wrapper.method.loss_only = False      # the reference: per-task gradients and method.combine
    return wrapper


def _pair(name, conv=False, **kwargs):
    """Two copies of one model: (model, fast-path wrapper), (model, per-task wrapper)."""
    torch.manual_seed(0)
    a = ToyConvMTL() if conv else ToyMTL()
    b = copy.deepcopy(a)
    if conv:
        kwargs = dict(linear_heads=['conv_cls', 'conv_reg'], grad_mode='linear', **kwargs)
    return (a, _wrapper(a, name, **kwargs)), (b, _wrapper(b, name, per_task=True, **kwargs))


def _data(conv, step):
    return toy_conv_data(seed=step) if conv else toy_data(seed=step)


def _trained(wrapper, model):
    return [p.detach().clone() for p in list(model.parameters()) + wrapper.method.parameters()]


def _assert_close(a, b, atol=1e-6):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=atol)


def _assert_state_close(a, b, what='state'):
    """Nested state dicts equal, tensors to float tolerance."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, equal_nan=True, msg=what)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _assert_state_close(a[k], b[k], f'{what}[{k!r}]')
    else:
        assert a == b, what


# ------------------------------------------------------------------------------------------- same training
@pytest.mark.parametrize('conv', [False, True], ids=['dense-auto', 'sparse-linear'])
@pytest.mark.parametrize('name', LOSS_ONLY)
def test_fast_path_trains_like_the_per_task_path(name, conv):
    """Model parameters, the method's own parameters and its state after 5 SGD steps agree with the per-task
    path; statistics every 3 steps, so that steps 0 and 3 take the per-task gradients (and combine them with the
    weights) and the others the gradient of the weighted sum alone."""
    (a, fast), (b, ref) = _pair(name, conv, stats_interval=3)
    before = _trained(fast, a)
    for step in range(5):
        a.train_step(_data(conv, step), fast)
        b.train_step(_data(conv, step), ref)
        torch.testing.assert_close(fast.method.task_weights.detach(), ref.method.task_weights.detach())
    _assert_close(_trained(fast, a), _trained(ref, b))
    _assert_state_close(fast.state_dict()['mtl'], ref.state_dict()['mtl'])
    assert any(not torch.equal(x, y) for x, y in zip(before, _trained(fast, a)))


@pytest.mark.parametrize('name', ['UW', 'DWA', 'RLW'])
def test_accumulation_and_loss_scale_as_the_per_task_path(name):
    """accumulative_counts=2 with a static loss scale and clipping: the same update as the per-task path (no
    per-task logging: every step but the first takes the gradient of the weighted sum alone)."""
    kw = dict(accumulative_counts=2, amp=dict(dtype=None, loss_scale=1024.0), clip_grad=dict(max_norm=1.0),
              log_per_task=False)
    (a, fast), (b, ref) = _pair(name, conv=True, **kw)
    for step in range(4):
        a.train_step(_data(True, step), fast)
        b.train_step(_data(True, step), ref)
    _assert_close(_trained(fast, a), _trained(ref, b))
    assert fast.state_dict()['loss_scaler']['scale'] == 1024.0


def test_overflow_of_the_weighted_gradient_backs_off_and_leaves_the_method_as_it_was():
    """Dynamic loss scale: the weighted sum's gradient overflows at 2**127 (the losses are finite), so the step is
    skipped, the scale halves and DWA's window is as before the step; the next steps train."""
    torch.manual_seed(0)
    model = ToyConvMTL()
    wrapper = _wrapper(model, 'DWA', lr=0.05, linear_heads=['conv_cls', 'conv_reg'], grad_mode='linear',
                       log_per_task=False, amp=dict(dtype=None, loss_scale=dict(init_scale=2.0**127)))
    model.train_step(toy_conv_data(seed=0), wrapper)        # ordinary data fit at that scale
    state = copy.deepcopy(wrapper.method.state_dict())
    before = _trained(wrapper, model)
    data = toy_conv_data(seed=1)
    data['y'] = data['y'] * 1e4
    model.train_step(data, wrapper)
    assert wrapper.loss_scaler.get_scale() == 2.0**126 and wrapper.skipped_steps == 1
    _assert_state_close(wrapper.method.state_dict(), state)
    _assert_close(_trained(wrapper, model), before, atol=0)
    for step in range(2, 4):
        model.train_step(toy_conv_data(seed=step), wrapper)
    assert wrapper.method.state_dict()['history'] is not None
    assert any(not torch.equal(x, y) for x, y in zip(before, _trained(wrapper, model)))


# ------------------------------------------------------------------------------------------- cost and state
@pytest.mark.parametrize('name', LOSS_ONLY)
def test_one_gradient_at_the_activation_and_one_weighing_per_step(name):
    """Between statistics steps the fast path takes ONE gradient at the shared activation (the weighted sum's,
    shaped like the activation) where the per-task loop takes one per task; one backward into the parameters per
    step either way; ``weigh_losses`` once per step and never ``combine``."""
    counts = {}
    for per_task in (False, True):
        torch.manual_seed(0)
        model = ToyMTL()
        wrapper = _wrapper(model, name, per_task=per_task, grad_mode='loop', stats_interval=100)
        at_activation, calls = [], dict(weigh=0, combine=0, backward=0)
        method = wrapper.method
        weigh, combine = method.weigh_losses, method.combine

        def counted_weigh(*a, **k):
            calls['weigh'] += 1
            return weigh(*a, **k)

        def counted_combine(*a, **k):
            calls['combine'] += 1
            return combine(*a, **k)

        method.weigh_losses, method.combine = counted_weigh, counted_combine
        hooked = []   # the tensors themselves: kept alive, so that a new tensor cannot reuse a hooked one's id

        def pre_hook(module, args):   # the heads read the wrapper's detached copy of the trunk's output
            if not any(t is args[0] for t in hooked):
                hooked.append(args[0])
                args[0].register_hook(lambda g: at_activation.append(tuple(g.shape)))

        model.heads[0].register_forward_pre_hook(pre_hook)
        backward = torch.autograd.backward

        def counted_backward(*a, **k):
            calls['backward'] += 1
            return backward(*a, **k)

        torch.autograd.backward = counted_backward
        try:
            for step in range(3):
                model.train_step(toy_data(seed=step), wrapper)
        finally:
            torch.autograd.backward = backward
        counts[per_task] = dict(calls, at_activation=at_activation)
    fast, ref = counts[False], counts[True]
    act_shape = (6, 16)
    # step 0 is a statistics step (and 'loop' per-task gradients are taken there in both paths: 3 tasks)
    assert fast['at_activation'] == [act_shape] * 3 + [act_shape] * 2
    assert ref['at_activation'] == [act_shape] * 9
    assert fast['weigh'] == 3 and fast['combine'] == 0
    assert ref['combine'] == 3
    assert fast['backward'] == ref['backward'] == 3


@pytest.mark.parametrize('name', LOSS_ONLY)
def test_a_skipped_step_leaves_the_method_as_it_was(name):
    """A non-finite loss skips the step after the weights were computed: the method's state is restored, so the
    run goes on as the per-task path's, which never called the method on that step."""
    (a, fast), (b, ref) = _pair(name)
    for step in range(4):
        data = toy_data(seed=step)
        if step == 2:
            data['y'][0, 1] = float('nan')
        for model, wrapper in ((a, fast), (b, ref)):
            if step == 2:
                with pytest.warns(UserWarning, match=r"loss_1.*step skipped"):
                    model.train_step(copy.deepcopy(data), wrapper)
            else:
                model.train_step(copy.deepcopy(data), wrapper)
    assert fast.skipped_steps == ref.skipped_steps == 1
    _assert_close(_trained(fast, a), _trained(ref, b))
    _assert_state_close(fast.state_dict()['mtl'], ref.state_dict()['mtl'])


def test_non_finite_weights_skip_the_step_and_name_the_method():
    """GLS on a zero loss has an infinite weight: the step is skipped (not trained with NaN), the message says
    why."""
    torch.manual_seed(0)
    model = ToyMTL()
    wrapper = _wrapper(model, 'GLS')
    data = toy_data()
    model.train_step(data, wrapper)
    before = _trained(wrapper, model)
    with torch.no_grad():          # head 2 predicts its targets exactly: loss_2 == 0
        model.heads[2].weight.zero_()
        model.heads[2].bias.zero_()
    data['y'][:, 2] = 0.0
    with pytest.warns(UserWarning, match=r"task weights of GLS: \[.*nan\] for the losses \{.*'loss_2': 0\.0\}"):
        model.train_step(data, wrapper)
    assert wrapper.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.equal(before[0], model.trunk[0].weight.detach())


@pytest.mark.parametrize('name', LOSS_ONLY)
def test_fast_path_resumes_bit_identically(name):
    """Two steps, a checkpoint, two more: a fresh model and wrapper loaded from the checkpoint end the same."""
    def make():
        torch.manual_seed(0)
        model = ToyMTL()
        return model, MultiTaskOptimWrapper(torch.optim.Adam(model.parameters(), lr=0.01), method=dict(type=name),
                                            shared='trunk', seed=5, stats_interval=3)

    model, wrapper = make()
    for step in range(2):
        model.train_step(toy_data(seed=step), wrapper)
    states = copy.deepcopy((model.state_dict(), wrapper.state_dict()))
    for step in range(2, 4):
        model.train_step(toy_data(seed=step), wrapper)
    resumed, wrapper2 = make()
    wrapper2.seed = 99                       # the checkpoint's seed wins
    resumed.load_state_dict(states[0])
    wrapper2.load_state_dict(states[1])
    for step in range(2, 4):
        resumed.train_step(toy_data(seed=step), wrapper2)
    for x, y in zip(_trained(wrapper2, resumed), _trained(wrapper, model)):
        assert torch.equal(x, y)
    _assert_same(wrapper2.state_dict()['mtl'], wrapper.state_dict()['mtl'], name)


# ------------------------------------------------------------------------------------------- DDP
def _worker(rank, world, port, out_path):
    import os
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from graddrop_mtl.engine import init_cpu_distributed
    init_cpu_distributed()
    torch.save(ddp_fast_and_per_task(rank, world), f'{out_path}.{rank}')
    torch.distributed.barrier()
    os._exit(0)       # as test_distributed's workers: no gloo teardown


def ddp_fast_and_per_task(rank, world, steps=3):
    torch.manual_seed(0)
    init_state = copy.deepcopy(ToyMTL().state_dict())
    results = {}
    for name in LOSS_ONLY:
        for per_task in (False, True):
            model, ddp, wrapper = _ddp_setup(dict(type=name), init_state, stats_interval=2)
            if per_task:
                wrapper.method.loss_only = False
            for step in range(steps):
                ddp.train_step(_shard(toy_data(n=4 * world, seed=step), rank, world), wrapper)
            results[name, per_task] = dict(params=_params(model) + _params_of(wrapper.method),
                                           state=wrapper.state_dict()['mtl']['method'])
    return results


def _params_of(method):
    return [p.detach().clone() for p in method.parameters()]


@pytest.mark.slow
def test_ddp_fast_path_is_the_per_task_path_and_one_state(tmp_path):
    """Two gloo ranks: on every rank the fast path trains as the per-task path; parameters (the method's own
    included, whose gradients the wrapper averages over the ranks) and state are bit-identical on the ranks; UW
    equals one process on the combined batch (mean losses: the rank-averaged losses are the batch's)."""
    world = 2
    out = str(tmp_path / 'fast')
    mp.spawn(_worker, args=(world, _free_port(), out), nprocs=world, join=True)
    ranks = [torch.load(f'{out}.{r}', weights_only=False) for r in range(world)]
    for name in LOSS_ONLY:
        for r in range(world):
            _assert_close(ranks[r][name, False]['params'], ranks[r][name, True]['params'])
            _assert_state_close(ranks[r][name, False]['state'], ranks[r][name, True]['state'])
        _assert_same(ranks[1][name, False], ranks[0][name, False], f'{name} rank 1')
    torch.manual_seed(0)
    model = ToyMTL()
    wrapper = _wrapper(model, 'UW', stats_interval=2)
    for step in range(3):
        model.train_step(toy_data(n=4 * world, seed=step), wrapper)
    _assert_close(ranks[0]['UW', False]['params'], _trained(wrapper, model))
