"""Datasets of the ``graddrop_mtl`` scope; registered in ``graddrop_mtl.registry.DATASETS``."""
from . import celeba, cifar_transfer, sine  # noqa: F401
