"""graddrop_mtl/engine/linear_heads.py: the gradient at a linear layer's input from the gradient at its output, for
every padding a convolution can have, and non-finite values kept."""
import copy

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn

from graddrop_mtl.engine import MultiTaskOptimWrapper
from graddrop_mtl.engine.linear_heads import is_pointwise, linear_input_grad, task_blocks, used_channels


def autograd_input_grad(layer, act, grad_out):
    x = act.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(layer(x), x, grad_out)
    return g


CONVS = {
    'reflect': lambda: nn.Conv2d(4, 3, 3, padding=1, padding_mode='reflect'),
    'circular': lambda: nn.Conv2d(4, 3, 3, padding=2, padding_mode='circular', dilation=2),
    'replicate': lambda: nn.Conv2d(4, 3, 3, padding=1, padding_mode='replicate'),
    'same-odd': lambda: nn.Conv2d(4, 3, 3, padding='same'),
    'same-even': lambda: nn.Conv2d(4, 3, (2, 4), padding='same'),
    'same-reflect': lambda: nn.Conv2d(4, 3, 3, padding='same', padding_mode='reflect'),
    'valid': lambda: nn.Conv2d(4, 3, 3, padding='valid'),
    'zeros-stride': lambda: nn.Conv2d(4, 3, 3, padding=1, stride=2),
    'conv1d-circular': lambda: nn.Conv1d(4, 3, 5, padding=2, padding_mode='circular'),
    'conv3d-same': lambda: nn.Conv3d(4, 3, 3, padding='same'),
}


@pytest.mark.parametrize('kind', list(CONVS))
def test_input_gradient_for_every_padding(kind):
    """On main 3d674eb the zero-padding transpose was used for every padding mode (wrong at the borders for
    reflect/circular/replicate) and padding='same' raised."""
    torch.manual_seed(0)
    layer = CONVS[kind]()
    spatial = {1: (9,), 2: (7, 8), 3: (5, 6, 4)}[layer.weight.dim() - 2]
    act = torch.randn(2, 4, *spatial)
    grad_out = torch.randn_like(layer(act))
    grad_out[:, 1] = 0                         # an unused channel is left out of the product
    torch.testing.assert_close(linear_input_grad(layer, act, grad_out), autograd_input_grad(layer, act, grad_out),
                               rtol=1e-5, atol=1e-6)


def test_a_channel_holding_nan_is_kept():
    """A channel whose only non-zero value is NaN must reach the result (and with it the finiteness check); on main
    3d674eb ``amax(...) > 0`` dropped it and the result was finite."""
    layer = nn.Conv2d(4, 3, 1)
    act = torch.randn(2, 4, 5, 5)
    grad_out = torch.zeros(2, 3, 5, 5)
    grad_out[:, 0] = 1.0
    grad_out[1, 2, 3, 3] = float('nan')
    assert used_channels(grad_out, 1).tolist() == [0, 2]
    g = linear_input_grad(layer, act, grad_out)
    assert torch.isnan(g[1, :, 3, 3]).all() and torch.isfinite(g[0]).all()
    lin = nn.Linear(4, 3)
    g_lin = torch.zeros(6, 3)
    g_lin[2, 1] = float('nan')
    assert torch.isnan(linear_input_grad(lin, torch.randn(6, 4), g_lin)[2]).all()


def test_a_nan_head_gradient_survives_into_the_blocks():
    layer = nn.Conv2d(4, 2, 1)
    act = torch.randn(1, 4, 3, 3)
    out = layer(act)
    g_ok = torch.ones_like(out)
    g_nan = torch.zeros_like(out)
    g_nan[0, 1, 2, 0] = float('nan')
    blocks = task_blocks([(g_ok,), (g_nan,)], act, [(layer, 0, out)])
    assert not torch.isfinite(blocks.sq_norms()[1])


def test_pointwise_layers():
    assert is_pointwise(nn.Conv2d(4, 3, 1))
    assert is_pointwise(nn.Conv2d(4, 3, 1, padding='same'))
    assert is_pointwise(nn.Conv2d(4, 3, 1, padding_mode='reflect'))
    assert is_pointwise(nn.Linear(4, 3))
    assert not is_pointwise(nn.Conv2d(4, 3, 1, padding=1))
    assert not is_pointwise(nn.Conv2d(4, 3, 3, padding='same'))
    assert not is_pointwise(nn.Conv2d(4, 4, 1, groups=2))


class ReflectHeads(BaseModel):
    """A trunk read by two 3x3 convolution heads with reflect padding."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh())
        self.head_a = nn.Conv2d(6, 1, 3, padding=1, padding_mode='reflect')
        self.head_b = nn.Conv2d(6, 2, 3, padding='same', padding_mode='circular')

    def forward(self, x, y, mode='loss'):
        h = self.trunk(x)
        a, b = self.head_a(h), self.head_b(h)
        return {'loss_a': (a - y[:, :1]).square().mean(), 'loss_b0': (b[:, 0] - y[:, 1]).square().mean(),
                'loss_b1': b[:, 1].abs().mean()}


def test_linear_mode_with_padded_heads_trains_like_the_loop():
    torch.manual_seed(0)
    a = ReflectHeads()
    b = copy.deepcopy(a)
    kw = dict(method=dict(type='GradDrop'), shared='trunk', seed=5)
    wa = MultiTaskOptimWrapper(torch.optim.SGD(a.parameters(), lr=0.1), grad_mode='linear',
                               linear_heads=['head_a', 'head_b'], **kw)
    wb = MultiTaskOptimWrapper(torch.optim.SGD(b.parameters(), lr=0.1), grad_mode='loop', **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        data = dict(x=torch.randn(2, 3, 6, 5, generator=g), y=torch.randn(2, 2, 6, 5, generator=g))
        a.train_step(data, wa)
        b.train_step(data, wb)
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
