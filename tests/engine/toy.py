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
