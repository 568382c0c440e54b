"""A small multitask model for the wrapper tests: a shared trunk and three linear heads."""
import torch
from mmengine.model import BaseModel
from torch import nn


class ToyMTL(BaseModel):
    def __init__(self, n_tasks: int = 3, width: int = 16, tuple_output: bool = False):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, width), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(width, 1) for _ in range(n_tasks)])
        self.tuple_output = tuple_output
        if tuple_output:
            self.trunk.register_forward_hook(lambda m, i, o: (o[:, : width // 2], o[:, width // 2:]))

    def forward(self, x, y, mode='loss'):
        h = self.trunk(x)
        if self.tuple_output:
            h = torch.cat(h, 1)
        preds = torch.cat([head(h) for head in self.heads], 1)
        if mode == 'tensor':
            return preds
        return {f'loss_{i}': ((preds[:, i] - y[:, i]) ** 2).mean() for i in range(len(self.heads))}


def toy_data(n=6, n_tasks=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(n, 8, generator=g), y=torch.randn(n, n_tasks, generator=g))


class ToyConvMTL(BaseModel):
    """A convolutional trunk read by two 1x1-convolution heads, like a detection head: the classification loss has
    a gradient at every position, the three regression losses only at the "positive" positions ``pos``."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.conv_cls = nn.Conv2d(width, 2, 1)
        self.conv_reg = nn.Conv2d(width, 3, 1)

    def forward(self, x, y, pos, mode='loss'):
        h = self.trunk(x)
        cls, reg = self.conv_cls(h), self.conv_reg(h)
        losses = {'loss_cls': nn.functional.binary_cross_entropy_with_logits(cls, pos.unsqueeze(1).expand_as(cls))}
        w = pos.unsqueeze(1)
        for k in range(3):
            losses[f'loss_reg{k}'] = (((reg[:, k:k + 1] - y[:, k:k + 1]) ** 2) * w).sum() / w.sum().clamp_min(1)
        return losses


def toy_conv_data(n=2, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, size, size, generator=g) > 0.85).float()
    return dict(x=torch.randn(n, 3, size, size, generator=g), y=torch.randn(n, 3, size, size, generator=g), pos=pos)
