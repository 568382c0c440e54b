"""Models of the ``graddrop_mtl`` scope (sine toy, CelebA net, DenseNet-BC transfer); registered in
``graddrop_mtl.registry.MODELS``."""
from . import celeba, densenet, sine  # noqa: F401
