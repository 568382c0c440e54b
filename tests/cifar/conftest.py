"""pytest set-up for the ImageNet -> CIFAR-100 transfer tests: tiny synthetic sets in the real formats."""
from __future__ import annotations

import importlib.util
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs', 'cifar100_transfer')
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: sizes of the tiny sets: CIFAR train file 200 rows (160 train / 40 val), test 50; ImageNet 10 files x 6 rows, val 12.
TINY = dict(cifar_train=200, cifar_test=50, imagenet_batches=10, imagenet_per_batch=6, imagenet_val=12)


def load_tool(name: str):
    """Import ``tools/<name>.py`` (``name`` may hold a sub-folder: the tools folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f'_cifar_tool_{name.replace("/", "_")}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def synth_tool():
    return load_tool('make_synthetic_transfer')


@pytest.fixture(scope='session')
def synth_root(tmp_path_factory, synth_tool) -> str:
    root = str(tmp_path_factory.mktemp('cifar_transfer_data'))
    synth_tool.make_transfer_sets(root, seed=0, **TINY)
    return root
