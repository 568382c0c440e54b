"""pytest set-up for the tests of :mod:`graddrop_mtl.methods` (plain PyTorch on CPU)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine's 2 cores are shared: run every test single-threaded, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
