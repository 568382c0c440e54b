"""graddrop_mtl: GradDrop and rival multitask gradient methods as a config switch in the OpenMMLab stack.

* :mod:`graddrop_mtl.methods` - the methods, plain PyTorch (GradDrop, RandomGradDrop, PCGrad, MGDA, GradNorm,
  GradPenalty, Sum, Compose), registered in ``graddrop_mtl.methods.METHODS``.
* :mod:`graddrop_mtl.engine` - ``MultiTaskOptimWrapper``: per-task gradients at a shared activation, the method,
  one backward; registered in mmengine's root ``OPTIM_WRAPPERS`` so that every scope finds it.
* :mod:`graddrop_mtl.registry` - the ``graddrop_mtl`` scope (models, datasets, metrics of the sine, CelebA and
  CIFAR-100 experiments) and where everything registers.
* :mod:`graddrop_mtl.det3d` - PointPillars with nine task losses, Waymo data and metric (mmdet3d registries);
  imported by the Waymo configs through ``custom_imports``.

A config uses the components with::

    custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)
    optim_wrapper = dict(type='MultiTaskOptimWrapper', optimizer=dict(type='Adam', lr=1e-3),
                         method=dict(type='GradDrop'), shared='neck')
"""
from . import methods  # noqa: F401  (plain PyTorch; importable without mmengine)

__version__ = '0.1.0'

try:
    import mmengine  # noqa: F401
except ImportError:  # pragma: no cover - the methods alone work without mmengine
    pass
else:
    from . import engine, registry  # noqa: F401
