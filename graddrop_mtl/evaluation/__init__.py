"""Metrics of the ``graddrop_mtl`` scope; registered in ``graddrop_mtl.registry.METRICS``."""
from . import celeba_metric, sine_metric, transfer_metric  # noqa: F401
