"""MultiTaskOptimWrapper on a small model: equivalence with plain training, composition with mmengine features,
errors, non-finite gradients, checkpoint state."""
import copy
import math

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from graddrop_mtl.engine import MultiTaskOptimWrapper

from .toy import ToyConvMTL, ToyMTL, toy_conv_data, toy_data

METHODS = [dict(type='Sum'), dict(type='GradDrop'), dict(type='GradDrop', leak=[0.0, 0.5, 1.0]),
           dict(type='RandomGradDrop'), dict(type='PCGrad'), dict(type='PCGrad', iterative=True),
           dict(type='MGDA', normalization='l2'), dict(type='GradNorm'), dict(type='GradPenalty', weight=0.1),
           dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop')),
           dict(type='Compose', weighting=dict(type='MGDA'), then=dict(type='GradDrop'))]


def make(method=None, model=None, lr=0.1, **kwargs):
    torch.manual_seed(0)
    model = model or ToyMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=lr), method=method, shared='trunk',
                                    seed=1, **kwargs)
    return model, wrapper


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_params_close(a, b, atol=1e-6):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


@pytest.mark.parametrize('grad_mode', ['loop', 'batched', 'auto'])
def test_sum_matches_plain_backward(grad_mode):
    model, wrapper = make(dict(type='Sum'), grad_mode=grad_mode)
    plain = copy.deepcopy(model)
    plain_wrapper = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1))
    for step in range(3):
        data = toy_data(seed=step)
        model.train_step(data, wrapper)
        plain.train_step(data, plain_wrapper)
    assert_params_close(params(model), params(plain))


@pytest.mark.parametrize('grad_mode', ['loop', 'linear'])
def test_sum_between_statistics_steps_matches_plain_backward(grad_mode):
    """Sum takes the gradient of the summed loss alone except on statistics steps: still plain training, and the
    per-task gradient norms are logged on the statistics steps."""
    torch.manual_seed(0)
    model = ToyConvMTL()
    plain = copy.deepcopy(model)
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='Sum'),
                                    shared='trunk', grad_mode=grad_mode, linear_heads=['conv_cls', 'conv_reg'],
                                    stats_interval=3)
    wrapper.message_hub = MessageHub.get_instance(f'mtl-test-sum-interval-{grad_mode}')
    plain_wrapper = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1))
    norms = []
    for step in range(4):
        data = toy_conv_data(seed=step)
        model.train_step(data, wrapper)
        plain.train_step(data, plain_wrapper)
        norms.append(wrapper.message_hub.log_scalars['train/mtl/grad_norm/loss_reg1'].current())
    assert_params_close(params(model), params(plain))
    assert norms[0] == norms[1] == norms[2] != norms[3]     # logged on steps 0 and 3 only


@pytest.mark.parametrize('method', [dict(type='Sum'), dict(type='GradDrop', leak=1.0), dict(type='PCGrad'),
                                    dict(type='MGDA', normalization='l2'), dict(type='GradNorm'),
                                    dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='PCGrad'))],
                         ids=lambda m: m['type'])
def test_sparse_linear_heads_train_like_the_loop(method):
    """1x1-convolution heads whose regression losses live at a few positions: the linear mode keeps those tasks
    only there (TaskBlocks) and trains exactly as the per-task loop."""
    torch.manual_seed(0)
    a = ToyConvMTL()
    b = copy.deepcopy(a)
    kw = dict(method=method, shared='trunk', linear_heads=['conv_cls', 'conv_reg'], seed=3)
    wa = MultiTaskOptimWrapper(torch.optim.SGD(a.parameters(), lr=0.1), grad_mode='linear', **kw)
    wb = MultiTaskOptimWrapper(torch.optim.SGD(b.parameters(), lr=0.1), grad_mode='loop', **kw)
    data = toy_conv_data(seed=0)
    blocks = _capture_grads(a, wa, data)
    assert blocks.base_tasks == [0] and blocks.patch_tasks == [0, 1, 2, 3]
    assert blocks.patch_rows.numel() == int(data['pos'].sum()) < data['pos'].numel()
    for step in range(3):
        a.train_step(toy_conv_data(seed=step), wa)
        b.train_step(toy_conv_data(seed=step), wb)
    assert_params_close(params(a), params(b), atol=1e-5)


def _capture_grads(model, wrapper, data):
    with wrapper.optim_context(model):
        model(**data)
    cap, wrapper._capture = wrapper._capture, None
    _, task_losses = wrapper._task_losses(cap.losses)
    return wrapper._grads_linear(task_losses, cap.detached, cap.head_calls)


def test_leak_one_matches_plain_backward():
    model, wrapper = make(dict(type='GradDrop', leak=1.0))
    plain = copy.deepcopy(model)
    plain_wrapper = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1))
    data = toy_data()
    model.train_step(data, wrapper)
    plain.train_step(data, plain_wrapper)
    assert_params_close(params(model), params(plain))


def test_trunk_receives_the_combined_gradient_and_heads_their_own():
    """After one step, trunk gradients come from method.combine, head gradients from the task losses."""
    model, wrapper = make(dict(type='GradDrop'))
    data = toy_data()
    captured = {}

    def spy(grads, **kw):
        out = type(wrapper.method).combine(wrapper.method, grads, **kw)
        captured['out'] = out
        captured['grads'] = grads
        return out

    wrapper.method.combine = spy
    wrapper.should_update = lambda: False    # keep the gradients for inspection
    model.train_step(data, wrapper)
    h = model.trunk(data['x'])
    expected_trunk = torch.autograd.grad(h, model.trunk[0].weight, captured['out'])[0]
    torch.testing.assert_close(model.trunk[0].weight.grad, expected_trunk)
    # each head only sees its own loss, whatever the method does at the trunk
    losses = model(**data)
    g_head = torch.autograd.grad(losses['loss_1'], model.heads[1].weight)[0]
    torch.testing.assert_close(model.heads[1].weight.grad, g_head)
    # the per-task gradients handed to the method are dL_i/dh
    hd = h.detach().requires_grad_(True)
    preds = torch.cat([head(hd) for head in model.heads], 1)
    g0 = torch.autograd.grad(((preds[:, 0] - data['y'][:, 0]) ** 2).mean(), hd)[0]
    torch.testing.assert_close(captured['grads'][0], g0)


@pytest.mark.parametrize('method', METHODS, ids=lambda m: m['type'] + str(len(m)))
def test_every_method_trains_and_logs(method):
    model, wrapper = make(method)
    hub = MessageHub.get_instance('mtl-test-' + method['type'])
    wrapper.message_hub = hub
    before = params(model)
    for step in range(3):
        model.train_step(toy_data(seed=step), wrapper)
    after = params(model)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(torch.isfinite(p).all() for p in after)
    scalars = hub.log_scalars
    for i in range(3):
        assert f'train/mtl/grad_norm/loss_{i}' in scalars
    if method['type'] in ('GradDrop', 'RandomGradDrop'):
        assert 'train/mtl/sign_purity' in scalars and 'train/mtl/conflict_frac' in scalars
        assert 'train/mtl/kept/loss_0' in scalars
    if method['type'] in ('GradNorm', 'MGDA') or method.get('weighting'):
        assert 'train/mtl/weight/loss_0' in scalars


def test_mgda_heads_receive_weighted_losses():
    model, wrapper = make(dict(type='MGDA'))
    wrapper.should_update = lambda: False
    data = toy_data()
    model.train_step(data, wrapper)
    alpha = wrapper.method.task_weights
    assert torch.isclose(alpha.sum(), torch.tensor(1.0))
    losses = model(**data)
    g_head = torch.autograd.grad(alpha[2] * losses['loss_2'], model.heads[2].weight)[0]
    torch.testing.assert_close(model.heads[2].weight.grad, g_head)


def test_gradient_penalty_adds_double_backward_term():
    model, wrapper = make(dict(type='GradPenalty', weight=0.5))
    wrapper.should_update = lambda: False
    data = toy_data()
    ref = copy.deepcopy(model)
    model.train_step(data, wrapper)
    losses = ref(**data)
    total = sum(losses.values())
    h = ref.trunk(data['x'])
    # reference: loss + 0.5 * |dL/dh|^2 through the whole network
    preds = torch.cat([head(h) for head in ref.heads], 1)
    task = sum(((preds[:, i] - data['y'][:, i]) ** 2).mean() for i in range(3))
    g = torch.autograd.grad(task, h, create_graph=True)[0]
    objective = total + 0.5 * g.pow(2).sum()
    ref_grads = torch.autograd.grad(objective, list(ref.parameters()))
    for p, r in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-6)


def test_tuple_output_and_accumulation_match_plain():
    """A shared module returning a tuple works; accumulative_counts=2 equals plain accumulation."""
    model, wrapper = make(dict(type='Sum'), model=ToyMTL(tuple_output=True), accumulative_counts=2)
    plain = copy.deepcopy(model)
    plain_wrapper = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1), accumulative_counts=2)
    for step in range(4):
        model.train_step(toy_data(seed=step), wrapper)
        plain.train_step(toy_data(seed=step), plain_wrapper)
    assert_params_close(params(model), params(plain))


def test_clip_grad_composes():
    model, wrapper = make(dict(type='GradDrop'), clip_grad=dict(max_norm=1e-3))
    hub = MessageHub.get_instance('mtl-test-clip')
    wrapper.message_hub = hub
    before = params(model)
    model.train_step(toy_data(), wrapper)
    step = math.sqrt(sum(((a - b) ** 2).sum().item() for a, b in zip(params(model), before)))
    assert step <= 0.1 * 1e-3 * 1.0001      # lr * max_norm
    assert 'train/grad_norm' in hub.log_scalars


def test_task_grouping_with_weights():
    tasks = dict(first=dict(keys=['loss_0', 'loss_1'], weight=2.0), second='loss_2')
    model, wrapper = make(dict(type='Sum'), tasks=tasks)
    plain = copy.deepcopy(model)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    data = toy_data()
    model.train_step(data, wrapper)
    losses = plain(**data)
    (2 * (losses['loss_0'] + losses['loss_1']) + losses['loss_2']).backward()
    opt.step()
    assert_params_close(params(model), params(plain))
    assert 'train/mtl/grad_norm/first' in wrapper.message_hub.log_scalars


def test_errors_name_what_is_wrong():
    model, _ = make()
    with pytest.raises(ValueError, match=r"shared='trunk\.9'.*\['0', '1'\]"):
        w = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk.9')
        model.train_step(toy_data(), w)
    with pytest.raises(ValueError, match=r"shared='neck'.*\['data_preprocessor', 'trunk', 'heads'\]"):
        w = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='neck')
        model.train_step(toy_data(), w)
    with pytest.raises(KeyError, match=r"\['loss_7'\].*'loss_0', 'loss_1', 'loss_2'"):
        w = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk',
                                  tasks=['loss_0', 'loss_7'])
        model.train_step(toy_data(), w)
    with pytest.raises(KeyError, match=r"\['loss_2'\] belong to no task"):
        w = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk',
                                  tasks=['loss_0', 'loss_1'])
        model.train_step(toy_data(), w)
    with pytest.raises(ValueError, match='leak has 2 values but there are 3 tasks'):
        w = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk',
                                  method=dict(type='GradDrop', leak=[0.0, 1.0]))
        model.train_step(toy_data(), w)
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    with pytest.raises(RuntimeError, match='does not require grad'):
        w = MultiTaskOptimWrapper(torch.optim.SGD(model.heads.parameters(), lr=0.1), shared='trunk')
        model.train_step(toy_data(), w)


def test_non_finite_gradients_skip_the_step():
    model, wrapper = make(dict(type='GradDrop'))
    hub = MessageHub.get_instance('mtl-test-nonfinite')
    wrapper.message_hub = hub
    data = toy_data()
    data['y'][0, 1] = float('inf')
    before = params(model)
    with pytest.warns(UserWarning, match=r"tasks \['loss_1'\]; step skipped"):
        model.train_step(data, wrapper)
    assert_params_close(params(model), before, atol=0)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    assert hub.get_scalar('train/mtl/skipped_steps').current() == 1
    model.train_step(toy_data(seed=3), wrapper)      # the next good step trains
    assert any(not torch.equal(a, b) for a, b in zip(before, params(model)))


@pytest.mark.parametrize('method', [dict(type='GradDrop'), dict(type='PCGrad'), dict(type='GradNorm'),
                                    dict(type='Compose', weighting=dict(type='GradNorm'),
                                         then=dict(type='RandomGradDrop'))], ids=lambda m: m['type'])
def test_resume_continues_bit_identically(method):
    """Method state and the random stream are part of the optim wrapper's state dict."""
    model, wrapper = make(method)
    for step in range(3):
        model.train_step(toy_data(seed=step), wrapper)
    model_state = copy.deepcopy(model.state_dict())
    wrapper_state = copy.deepcopy(wrapper.state_dict())
    for step in range(3, 6):
        model.train_step(toy_data(seed=step), wrapper)
    expected = params(model)

    resumed, wrapper2 = make(method)
    wrapper2.seed = 12345                     # a different seed must be overridden by the checkpoint
    resumed.load_state_dict(model_state)
    wrapper2.load_state_dict(wrapper_state)
    for step in range(3, 6):
        resumed.train_step(toy_data(seed=step), wrapper2)
    assert_params_close(params(resumed), expected, atol=0)


def test_random_stream_depends_on_seed():
    a, wa = make(dict(type='RandomGradDrop'))
    b, wb = make(dict(type='RandomGradDrop'))
    wb.seed = wa.seed + 1
    a.train_step(toy_data(), wa)
    b.train_step(toy_data(), wb)
    assert any(not torch.equal(x, y) for x, y in zip(params(a), params(b)))


def test_update_params_outside_optim_context_is_a_clear_error():
    model, wrapper = make()
    loss = sum(model(**toy_data()).values())
    with pytest.raises(RuntimeError, match='optim_context'):
        wrapper.update_params(loss)


@pytest.mark.parametrize('mode', ['loop', 'batched', 'linear'])
def test_per_task_gradient_modes_agree(mode):
    """The three ways of computing per-task gradients give the same update."""
    heads = ['heads.0', 'heads.1', 'heads.2']
    ref_model, ref = make(dict(type='GradDrop'), grad_mode='loop')
    model, wrapper = make(dict(type='GradDrop'), grad_mode=mode, linear_heads=heads)
    for step in range(2):
        ref_model.train_step(toy_data(seed=step), ref)
        model.train_step(toy_data(seed=step), wrapper)
    assert_params_close(params(model), params(ref_model))


def test_auto_mode_picks_an_agreeing_mode():
    model, wrapper = make(dict(type='Sum'), grad_mode='auto', linear_heads=['heads.0', 'heads.1', 'heads.2'])
    model.train_step(toy_data(), wrapper)
    assert wrapper.grad_mode in ('loop', 'batched', 'linear')


def test_linear_heads_must_be_linear_and_all_consumers():
    model, wrapper = make(dict(type='Sum'), linear_heads=['trunk'])
    with pytest.raises(TypeError, match="linear_heads: 'trunk' is a Sequential"):
        model.train_step(toy_data(), wrapper)
    # heads.2 is left out: auto mode notices the mismatch with the loop and does not use 'linear'
    model, wrapper = make(dict(type='Sum'), grad_mode='auto', linear_heads=['heads.0', 'heads.1'])
    model.train_step(toy_data(), wrapper)
    assert wrapper.grad_mode != 'linear'


# ------------------------------------------------------------------------------------------------ mixed precision
def _conv_wrapper(model, method, **kwargs):
    return MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05), method=method, shared='trunk',
                                 linear_heads=['conv_cls', 'conv_reg'], seed=3, **kwargs)


@pytest.mark.parametrize('method', [dict(type='Sum'), dict(type='GradDrop'), dict(type='GradNorm')],
                         ids=lambda m: m['type'])
def test_static_loss_scale_is_exact(method):
    """A power-of-two loss scale (no autocast) scales and unscales exactly: the same training as without it."""
    torch.manual_seed(0)
    a = ToyConvMTL()
    b = copy.deepcopy(a)
    wa = _conv_wrapper(a, method, amp=dict(dtype=None, loss_scale=1024.0), clip_grad=dict(max_norm=1.0))
    wb = _conv_wrapper(b, method, clip_grad=dict(max_norm=1.0))
    for step in range(3):
        a.train_step(toy_conv_data(seed=step), wa)
        b.train_step(toy_conv_data(seed=step), wb)
    assert_params_close(params(a), params(b), atol=1e-7)
    assert wa.state_dict()['loss_scaler']['scale'] == 1024.0


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_autocast_trains_in_mixed_precision(dtype):
    torch.manual_seed(0)
    model = ToyConvMTL()
    wrapper = _conv_wrapper(model, dict(type='GradDrop'), amp=dict(dtype=dtype))
    seen = []
    model.trunk.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = []
    for step in range(30):
        data = toy_conv_data(seed=0)
        log = model.train_step(data, wrapper)
        losses.append(float(log['loss']))
    assert seen[0] == getattr(torch, dtype)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < 0.9 * losses[0]
    assert (wrapper.loss_scaler is not None) == (dtype == 'float16')


def test_dynamic_loss_scale_overflow_skips_and_backs_off():
    torch.manual_seed(0)
    model = ToyConvMTL()
    wrapper = _conv_wrapper(model, dict(type='GradDrop'), amp=dict(dtype=None, loss_scale=dict(init_scale=2.0**127)))
    before = params(model)
    data = toy_conv_data(seed=0)
    data['y'] = data['y'] * 1e4          # regression losses ~1e8: times 2^127 they overflow float32
    model.train_step(data, wrapper)
    assert_params_close(params(model), before, atol=0)          # overflow: nothing updated
    assert wrapper.loss_scaler.get_scale() == 2.0**126
    for step in range(1, 4):   # ordinary data: the gradients fit at that scale, training proceeds
        model.train_step(toy_conv_data(seed=step), wrapper)
    assert wrapper.loss_scaler.get_scale() == 2.0**126
    assert any(not torch.equal(x, y) for x, y in zip(params(model), before))
    state = wrapper.state_dict()
    other = _conv_wrapper(ToyConvMTL(), dict(type='GradDrop'), amp=dict(dtype=None, loss_scale='dynamic'))
    other.load_state_dict(state)
    assert other.loss_scaler.get_scale() == wrapper.loss_scaler.get_scale()


def test_amp_arguments_are_checked():
    with pytest.raises(ValueError, match="amp dtype must be"):
        _conv_wrapper(ToyConvMTL(), dict(type='Sum'), amp=dict(dtype='float8'))
    with pytest.raises(ValueError, match='amp: unknown keys'):
        _conv_wrapper(ToyConvMTL(), dict(type='Sum'), amp=dict(scale=2))
