import os.path as osp
import shutil

import pytest

from graddrop_mtl.datasets.celeba import write_synthetic_celeba


@pytest.fixture(scope='session')
def celeba_template(tmp_path_factory) -> str:
    """A 20-image synthetic CelebA set (16 train / 2 val / 2 test, 24 x 20 images), written once per session."""
    root = str(tmp_path_factory.mktemp('celeba_template'))
    write_synthetic_celeba(root, num_images=20, seed=3, size=(24, 20))
    return root


@pytest.fixture()
def celeba_root(celeba_template, tmp_path) -> str:
    """A private, writable copy of the template set (tests corrupt it)."""
    root = osp.join(str(tmp_path), 'celeba')
    shutil.copytree(celeba_template, root)
    return root
