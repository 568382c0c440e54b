"""A dataset for models that need no data (the sine experiment): every item is an empty input."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..registry import DATASETS


@DATASETS.register_module()
class NoDataDataset(Dataset):
    """``length`` identical items ``dict(inputs=tensor(0.))``; the model computes its losses from its own weights."""

    def __init__(self, length: int = 1) -> None:
        if length < 1:
            raise ValueError(f'length must be >= 1, got {length}')
        self.length = int(length)
        self.metainfo: dict = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        return dict(inputs=torch.zeros(()))
