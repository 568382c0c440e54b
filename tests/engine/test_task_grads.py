"""Per-task gradient modes (graddrop_mtl/engine/task_grads.py): how grad_mode='auto' decides (structure, memory,
agreement; never timing), in bounded memory, with the reason logged."""
import copy
import time

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn

import graddrop_mtl.engine.task_grads as tg
from graddrop_mtl.engine import MultiTaskOptimWrapper
from graddrop_mtl.engine.task_grads import TaskGradients, bypassing_consumers, check_blocks_at_rows
from graddrop_mtl.methods.blocks import TaskBlocks

from .toy import ToyConvMTL, ToyMTL, toy_conv_data, toy_data

REAL_LOOP = TaskGradients.loop


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def wrap(model, **kwargs):
    kwargs.setdefault('method', dict(type='GradDrop'))
    return MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05), shared='trunk', seed=3, **kwargs)


class PooledHeads(BaseModel):
    """A conv trunk whose output is read by a pooling and Linear heads: no linear layer reads it directly, so the
    per-task gradients need a dense stack."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(3)])

    def forward(self, x, y, pos, mode='loss'):
        h = self.trunk(x).mean((2, 3))
        return {f'loss_{i}': ((head(h)[:, 0] - y[:, i, 0, 0]) ** 2).mean() for i, head in enumerate(self.heads)}


class InplaceHead(ToyConvMTL):
    """A 1x1 conv head whose output is changed in place (an inplace ReLU) before the loss."""

    def forward(self, x, y, pos, mode='loss'):
        h = self.trunk(x)
        cls = torch.relu_(self.conv_cls(h))
        reg = self.conv_reg(h)
        w = pos.unsqueeze(1)
        return {'loss_cls': cls.square().mean(), 'loss_reg': (((reg - y) ** 2) * w).mean()}


@pytest.fixture
def small_threshold(monkeypatch):
    """Found linear layers are used whatever the size (the default keeps small models on the dense path)."""
    monkeypatch.setattr(tg, 'AUTO_LINEAR_MIN_BYTES', 0)


def test_auto_choice_does_not_depend_on_timing(monkeypatch):
    """Two seeded runs on a machine whose clock says 'batched' is slow in one and fast in the other choose the same
    mode and train identically (issue 22: a seeded run must not depend on the machine's load)."""
    results = []
    for pattern in ([1, 1, 10, 10], [10, 10, 1, 1]):    # per-run durations of loop, loop, batched, batched
        seq, t = [], 0.0
        for d in pattern:                  # a start and an end reading per timed run
            seq += [t, t + d]
            t += d
        ticks = iter(seq + [100.0 + i for i in range(10_000)])
        monkeypatch.setattr(time, 'perf_counter', lambda: next(ticks))
        torch.manual_seed(0)
        model = ToyMTL()
        wrapper = wrap(model)
        for step in range(2):
            model.train_step(toy_data(seed=step), wrapper)
        results.append((wrapper.grad_mode, params(model)))
    assert results[0][0] == results[1][0] == 'batched'
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)


def test_auto_logs_the_choice_and_why(monkeypatch):
    logged = []
    monkeypatch.setattr(tg, 'print_log', lambda msg, logger=None: logged.append(msg))
    model = ToyMTL()
    wrapper = wrap(model)
    model.train_step(toy_data(), wrapper)
    model.train_step(toy_data(seed=1), wrapper)
    assert len(logged) == 1           # decided once
    out = logged[0]
    assert "grad_mode='auto' uses 'batched'" in out and 'agrees with the loop' in out
    assert 'dense stack of 3 x [[6, 16]]' in out
    assert wrapper._task_grads.reason in out


def test_auto_finds_the_pointwise_heads_without_linear_heads(small_threshold):
    """A stock head: the 1x1 convolutions that read the activation are found by the wrapper's hooks; the per-task
    gradients are sparse blocks and the training is the loop's."""
    torch.manual_seed(0)
    a = ToyConvMTL()
    b = copy.deepcopy(a)
    wa, wb = wrap(a, method=dict(type='PCGrad')), wrap(b, method=dict(type='PCGrad'), grad_mode='loop')
    for step in range(3):
        a.train_step(toy_conv_data(seed=step), wa)
        b.train_step(toy_conv_data(seed=step), wb)
    assert wa.grad_mode == 'linear'
    assert "['conv_cls', 'conv_reg']" in wa._task_grads.reason and 'sparse blocks' in wa._task_grads.reason
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_small_activations_keep_the_dense_modes_by_default():
    model = ToyConvMTL()
    wrapper = wrap(model)
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode == 'batched'
    assert 'linear layers found but not used' in wrapper._task_grads.reason


def _forbid_dense(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('a dense per-task stack was computed')
    monkeypatch.setattr(TaskGradients, 'loop', staticmethod(refuse))
    monkeypatch.setattr(TaskGradients, 'batched', staticmethod(refuse))


def test_auto_at_full_size_takes_no_dense_stack(monkeypatch):
    """When a dense stack would not fit, 'auto' with linear heads (found, not listed) neither runs the loop nor the
    batched mode, not even to check: the sparse result is checked at a few rows."""
    monkeypatch.setattr(tg, 'available_memory', lambda device: 4 * 6 * 8 * 4)    # less than one activation
    _forbid_dense(monkeypatch)
    model = ToyConvMTL()
    wrapper = wrap(model)
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode == 'linear'
    assert 'checked against autograd through the layers' in wrapper._task_grads.reason


def test_auto_refuses_a_dense_stack_that_does_not_fit_before_allocating(monkeypatch):
    monkeypatch.setattr(tg, 'available_memory', lambda device: 10_000)
    _forbid_dense(monkeypatch)
    model = PooledHeads()
    wrapper = wrap(model)
    with pytest.raises(RuntimeError, match=r"dense stack of 3 x \[\[2, 8, 6, 6\]\] would take .*linear_heads=.*"
                                           r"grad_mode='loop'") as err:
        model.train_step(toy_conv_data(), wrapper)
    assert 'no linear layer' in str(err.value)
    # asked for, the dense stack is taken whatever the budget
    monkeypatch.setattr(TaskGradients, 'loop', staticmethod(REAL_LOOP))
    model = PooledHeads()
    wrapper = wrap(model, grad_mode='loop')
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode == 'loop'


def test_auto_skips_batched_when_loop_and_batched_would_not_fit_together(monkeypatch):
    stack = 3 * 2 * 8 * 6 * 6 * 4
    monkeypatch.setattr(tg, 'available_memory', lambda device: int(1.5 * stack / tg.DENSE_FRACTION))

    def refuse(*args, **kwargs):
        raise AssertionError('batched was run')
    monkeypatch.setattr(TaskGradients, 'batched', staticmethod(refuse))
    model = PooledHeads()
    wrapper = wrap(model)
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode == 'loop' and 'batched not tried' in wrapper._task_grads.reason


@pytest.mark.parametrize('error', [MemoryError(), torch.OutOfMemoryError('CUDA out of memory'),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                                                '2018525184 bytes')], ids=['MemoryError', 'OOM', 'cpu-alloc'])
def test_allocation_failures_rule_a_candidate_out(monkeypatch, small_threshold, error):
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(TaskGradients, 'batched', staticmethod(fail))
    monkeypatch.setattr(tg, 'task_blocks', fail)
    torch.manual_seed(0)
    model = ToyConvMTL()
    wrapper = wrap(model)
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode == 'loop'
    reason = wrapper._task_grads.reason
    assert 'linear through' in reason and 'batched not used: failed' in reason


def test_another_reader_of_the_activation_rules_linear_out(small_threshold):
    """The loss also reads the activation (not through the heads): the structure check names the autograd node."""
    class Penalised(ToyConvMTL):
        def forward(self, x, y, pos, mode='loss'):
            h = self.trunk(x)
            cls, reg = self.conv_cls(h), self.conv_reg(h)
            w = pos.unsqueeze(1)
            return {'loss_cls': cls.square().mean() + 1e-2 * h.pow(2).mean(),
                    'loss_reg': (((reg - y) ** 2) * w).mean()}

    torch.manual_seed(0)
    model = Penalised()
    wrapper = wrap(model)
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode in ('loop', 'batched')
    assert 'PowBackward0' in wrapper._task_grads.reason
    # listed heads with grad_mode='linear': the same check is an error
    model = Penalised()
    wrapper = wrap(model, grad_mode='linear', linear_heads=['conv_cls', 'conv_reg'])
    with pytest.raises(RuntimeError, match=r"grad_mode='linear': the shared activation is also read .*PowBackward0"):
        model.train_step(toy_conv_data(), wrapper)


def test_listed_heads_that_miss_a_reader_are_an_error_in_linear_mode():
    torch.manual_seed(0)
    model = ToyMTL()
    wrapper = wrap(model, grad_mode='linear', linear_heads=['heads.0', 'heads.1'])
    with pytest.raises(RuntimeError, match=r"grad_mode='linear': .*\['heads.0', 'heads.1'\].*AddmmBackward0"):
        model.train_step(toy_data(), wrapper)


def test_an_inplace_change_of_a_head_output_rules_linear_out(small_threshold):
    model = InplaceHead()
    wrapper = wrap(model)
    model.train_step(toy_conv_data(), wrapper)
    assert wrapper.grad_mode != 'linear'
    assert "'conv_cls' was modified in place" in wrapper._task_grads.reason


def test_bypassing_consumers_walks_the_graph():
    a = torch.randn(2, 3, requires_grad=True)
    lin = nn.Linear(3, 2)
    out = lin(a)
    clean = out.sum()
    extra = out.sum() + a.exp().sum()
    assert bypassing_consumers([clean], [a], [out]) == [set()]
    assert bypassing_consumers([extra], [a], [out]) == [{'ExpBackward0'}]
    assert bypassing_consumers([clean], [a], []) == [{'AddmmBackward0'}]


def test_the_row_check_sees_a_wrong_block(small_threshold):
    torch.manual_seed(0)
    model = ToyConvMTL()
    wrapper = wrap(model, grad_mode='linear', linear_heads=['conv_cls', 'conv_reg'])
    data = model.data_preprocessor(toy_conv_data(), True)
    with wrapper.optim_context(model):
        model(**data, mode='loss')
    cap, wrapper._capture = wrapper._capture, None
    _, losses = wrapper._task_losses(cap.losses)
    tasks = wrapper._task_grads
    blocks, grads_out = tasks._linear(losses, cap.detached, cap.head_calls)
    assert isinstance(blocks, TaskBlocks) and blocks.patch is not None
    assert check_blocks_at_rows(blocks, grads_out, cap.head_calls) is None
    blocks.patch[-1] *= 1.01                       # a wrong value at the rows of a sparse task
    assert 'task 3 differs' in check_blocks_at_rows(blocks, grads_out, cap.head_calls)


def test_a_resumed_run_keeps_the_found_layers(small_threshold):
    """'auto' chose 'linear' on layers it found (no linear_heads); the checkpoint keeps grad_mode='linear' and a
    resumed run records the same layers and continues as the uninterrupted one."""
    torch.manual_seed(0)
    a = ToyConvMTL()
    b = copy.deepcopy(a)
    wa = wrap(a)
    a.train_step(toy_conv_data(seed=0), wa)
    assert wa.grad_mode == 'linear'
    b.load_state_dict(a.state_dict())
    wb = wrap(b)
    wb.load_state_dict(wa.state_dict())
    assert wb.grad_mode == 'linear'
    for step in (1, 2):
        a.train_step(toy_conv_data(seed=step), wa)
        b.train_step(toy_conv_data(seed=step), wb)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)
