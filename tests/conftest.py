import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope='session')
def repo_root() -> str:
    return ROOT


#: Test folders that run with one intra-op thread: their tests are many small CPU ops, and on the shared 2-core
#: machine two threads oversubscribe the cores and run several times slower.
SINGLE_THREAD_DIRS = ('celeba', 'cifar', 'methods')


@pytest.fixture(autouse=True)
def _one_thread(request):
    if request.node.path.parent.name not in SINGLE_THREAD_DIRS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
