"""What a step of MultiTaskOptimWrapper means beyond the method: skipped accumulation windows (issue 20.4), the
counter-based random stream (20.2), the structure checks of the first step (20.6), old checkpoints."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

from graddrop_mtl.engine import MultiTaskOptimWrapper

from .toy import ToyConvMTL, ToyMTL, toy_conv_data, toy_data


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------------- 20.4: accumulation
@pytest.mark.parametrize('bad_micro_step', [0, 1, 2])
def test_skipped_micro_step_skips_its_whole_window(bad_micro_step):
    """accumulative_counts=3: a non-finite loss in any micro-step drops the whole window (nothing is updated, the
    micro-steps before it are not kept, the ones after it are not applied); the next window trains as if the
    skipped one had never been there."""
    torch.manual_seed(0)
    model = ToyMTL()
    plain = copy.deepcopy(model)
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='Sum'),
                                    shared='trunk', accumulative_counts=3)
    before = _params(model)
    for micro in range(3):
        data = toy_data(seed=micro)
        if micro == bad_micro_step:
            data['y'][0, 1] = float('inf')
        if micro == bad_micro_step:
            with pytest.warns(UserWarning, match='loss_1.*step skipped'):
                model.train_step(data, wrapper)
        else:
            model.train_step(data, wrapper)
    assert all(torch.equal(a, b) for a, b in zip(_params(model), before))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    assert wrapper.skipped_steps == 3 - bad_micro_step
    # the next window: exactly plain accumulation of its three micro-steps
    plain_wrapper = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1), accumulative_counts=3)
    for micro in range(3, 6):
        model.train_step(toy_data(seed=micro), wrapper)
        plain.train_step(toy_data(seed=micro), plain_wrapper)
    for a, b in zip(_params(model), _params(plain)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_overflow_in_a_window_backs_off_once_and_skips_the_window():
    """Dynamic loss scaling with accumulation: an overflow in micro-step 1 of 3 lowers the scale once, and the
    window's remaining micro-steps are not applied (GradScaler's semantics)."""
    torch.manual_seed(0)
    model = ToyConvMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05), method=dict(type='GradDrop'),
                                    shared='trunk', linear_heads=['conv_cls', 'conv_reg'], seed=3,
                                    accumulative_counts=3, amp=dict(dtype=None, loss_scale=dict(init_scale=2.0**127)))
    before = _params(model)
    for micro in range(3):
        data = toy_conv_data(seed=micro)
        if micro == 0:
            data['y'] = data['y'] * 1e4          # regression losses ~1e8: times 2^127 they overflow float32
        model.train_step(data, wrapper)
    assert all(torch.equal(a, b) for a, b in zip(_params(model), before))
    assert wrapper.loss_scaler.get_scale() == 2.0**126
    for micro in range(3, 6):
        model.train_step(toy_conv_data(seed=micro), wrapper)
    assert any(not torch.equal(a, b) for a, b in zip(_params(model), before))
    assert wrapper.loss_scaler.get_scale() == 2.0**126


# ------------------------------------------------------------------------------------------- 20.2: streams
def test_random_stream_is_a_function_of_seed_rank_and_step():
    from graddrop_mtl.engine.streams import StepStreams
    act = torch.zeros(4, 3)

    def draw(rank, step, seed=5):
        return torch.rand(8, generator=StepStreams(rank).for_step(seed, step, act))

    assert torch.equal(draw(0, 7), draw(0, 7))              # no hidden state: the same key, the same numbers
    assert not torch.equal(draw(0, 7), draw(1, 7))          # every rank its own stream
    assert not torch.equal(draw(0, 7), draw(0, 8))
    assert not torch.equal(draw(0, 7), draw(0, 7, seed=6))
    per_problem = StepStreams(0, problem_rng=True, problem_ids=[3, 9]).for_step(5, 2, torch.zeros(2, 4), 1)
    alone = StepStreams(0, problem_rng=True, problem_ids=[9]).for_step(5, 2, torch.zeros(1, 4), 1)
    assert torch.equal(torch.rand(4, generator=per_problem[1]), torch.rand(4, generator=alone[0]))


def test_checkpoint_holds_no_generator_state_and_old_checkpoints_load():
    torch.manual_seed(0)
    model = ToyMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='RandomGradDrop'),
                                    shared='trunk', seed=4)
    model.train_step(toy_data(), wrapper)
    state = wrapper.state_dict()
    assert 'generator' not in state['mtl'] and state['mtl']['seed'] == 4 and state['mtl']['steps'] == 1
    old = copy.deepcopy(state)     # as main 3d674eb wrote it: rank 0's seed and its generator state
    old['mtl']['generator'] = torch.Generator().manual_seed(4).get_state()
    del old['mtl']['window_skipped']
    other = MultiTaskOptimWrapper(torch.optim.SGD(ToyMTL().parameters(), lr=0.1), method=dict(type='RandomGradDrop'),
                                  shared='trunk', seed=9)
    other.load_state_dict(old)
    assert other.seed == 4 and other._steps == 1


# ------------------------------------------------------------------------------------------- 20.6: structure
class _LeakyMTL(ToyMTL):
    """Head 2 also reads the first trunk layer's output: its raw gradient would reach ``trunk.0``."""

    def forward(self, x, y, mode='loss'):
        losses = super().forward(x, y, mode)
        if mode == 'loss':
            losses['loss_2'] = losses['loss_2'] + 0.1 * self.trunk[0](x).pow(2).mean()
        return losses


def test_head_reading_another_trunk_tensor_is_an_error_naming_the_module():
    torch.manual_seed(0)
    model = _LeakyMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='GradDrop'),
                                    shared='trunk', seed=1)
    before = _params(model)
    with pytest.raises(RuntimeError, match=r"trunk\.0\.weight.*module\(s\) \['trunk\.0'\].*other than through the "
                                           r"shared activation 'trunk'"):
        model.train_step(toy_data(), wrapper)
    assert all(torch.equal(a, b) for a, b in zip(_params(model), before))


def test_explicit_linear_mode_must_see_every_reader_of_the_activation():
    """grad_mode='linear' with a head left out of linear_heads would silently drop its gradient: the first step
    compares with the gradient at the activation and names what to fix."""
    torch.manual_seed(0)
    model = ToyMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='Sum'),
                                    shared='trunk', grad_mode='linear', linear_heads=['heads.0', 'heads.1'])
    with pytest.raises(RuntimeError, match=r"grad_mode='linear'.*\['heads\.0', 'heads\.1'\]"):
        model.train_step(toy_data(), wrapper)
    quiet = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='Sum'),
                                  shared='trunk', grad_mode='linear', linear_heads=['heads.0', 'heads.1'],
                                  log_per_task=False)     # Sum then takes the summed gradient only: checked too
    with pytest.raises(RuntimeError, match=r"grad_mode='linear'.*\['heads\.0', 'heads\.1'\]"):
        model.train_step(toy_data(), quiet)
    complete = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='Sum'),
                                     shared='trunk', grad_mode='linear', linear_heads=['heads.0', 'heads.1', 'heads.2'])
    model.train_step(toy_data(), complete)


# ------------------------------------------------------------------------------------------- method parameters
@pytest.mark.parametrize('num_tasks', [3, None], ids=['eager', 'lazy'])
def test_method_parameters_train_with_the_model(num_tasks):
    """UW's log-variances s join the optimizer and get the gradient of sum_i 0.5 exp(-s_i) L_i + 0.5 s_i: one SGD
    step moves them by -lr * (0.5 - 0.5 exp(-s_i) L_i), created at construction or on the first step."""
    torch.manual_seed(0)
    model = ToyMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=dict(type='UW',
                                    num_tasks=num_tasks), shared='trunk')
    data = toy_data()
    with torch.no_grad():
        losses = torch.stack(list(model(**data).values()))
    model.train_step(data, wrapper)
    (s,) = wrapper.method.parameters()
    expected = -0.5 - 0.1 * (0.5 - 0.5 * torch.exp(torch.tensor(0.5)) * losses)
    torch.testing.assert_close(s.detach(), expected, rtol=0, atol=1e-6)
    assert len(wrapper.optimizer.param_groups) == 2 and wrapper.optimizer.param_groups[1]['params'][0] is s


def test_method_parameters_resume_with_their_optimizer_state():
    """A lazily created parameter comes back from the checkpoint before the optimizer state (Adam's moments for
    it) is loaded, and training continues exactly."""
    def make():
        torch.manual_seed(0)
        model = ToyMTL()
        return model, MultiTaskOptimWrapper(torch.optim.Adam(model.parameters(), lr=0.01), method=dict(type='UW'),
                                            shared='trunk')

    model, wrapper = make()
    for step in range(2):
        model.train_step(toy_data(seed=step), wrapper)
    model_state, wrapper_state = copy.deepcopy(model.state_dict()), copy.deepcopy(wrapper.state_dict())
    for step in range(2, 4):
        model.train_step(toy_data(seed=step), wrapper)
    resumed, wrapper2 = make()
    resumed.load_state_dict(model_state)
    wrapper2.load_state_dict(wrapper_state)
    for step in range(2, 4):
        resumed.train_step(toy_data(seed=step), wrapper2)
    for a, b in zip(_params(resumed) + wrapper2.method.parameters(), _params(model) + wrapper.method.parameters()):
        assert torch.equal(a.detach(), b.detach())
