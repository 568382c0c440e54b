"""graddrop_mtl: GradDrop and rival multitask gradient methods as a config switch in the OpenMMLab stack.

* :mod:`graddrop_mtl.methods` - the methods, plain PyTorch (GradDrop, RandomGradDrop, PCGrad, MGDA, GradNorm,
  GradPenalty, Sum, Compose), registered in ``graddrop_mtl.methods.METHODS``.
* :mod:`graddrop_mtl.engine` - ``MultiTaskOptimWrapper``: per-task gradients at a shared activation, the method,
  one backward; registered in mmengine's root ``OPTIM_WRAPPERS`` so that every scope finds it.
* :mod:`graddrop_mtl.registry` - the ``graddrop_mtl`` scope (models, datasets, metrics of the sine, CelebA and
  CIFAR-100 experiments) and where everything registers.
* :mod:`graddrop_mtl.det3d` - PointPillars with nine task losses, Waymo data and metric (mmdet3d registries).

``import graddrop_mtl`` (with mmengine) registers everything a config can name: the optim wrapper, the methods,
the ``graddrop_mtl`` scope, and, where mmdet3d is installed, ``MultiTaskAnchor3DHead`` and ``WaymoAPMetric`` in
mmdet3d's registries (imported with mmdet3d's own modules, on the registries' first lookup). It also lets
``torch.load(weights_only=True)`` read mmengine checkpoints
(:func:`graddrop_mtl.engine.launch.allow_mmengine_checkpoints`), so stock tools such as mmdet3d's ``init_model``
load them with no environment variable.

A config uses the components with::

    custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)
    optim_wrapper = dict(type='MultiTaskOptimWrapper', optimizer=dict(type='Adam', lr=1e-3),
                         method=dict(type='GradDrop'), shared='neck')
"""
from . import methods  # noqa: F401  (plain PyTorch; importable without mmengine)

__version__ = '0.1.0'


def _register_det3d() -> None:
    """Where mmdet3d is installed, have its ``MODELS`` and ``METRICS`` registries import ``graddrop_mtl.det3d.models``
    and ``graddrop_mtl.det3d.evaluation`` when they import mmdet3d's own modules: on their first lookup (mmengine's
    registry ``locations``), so a process that never builds an mmdet3d component does not pay for importing
    mmdet3d's models; at once if that lookup already happened. Without mmdet3d, nothing happens."""
    import importlib
    import importlib.util
    try:
        installed = importlib.util.find_spec('mmdet3d') is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return
    try:
        from mmdet3d import registry as det3d_registry
    except ImportError as err:   # e.g. a broken mmcv: the other experiments still work
        import warnings
        warnings.warn(f'graddrop_mtl: mmdet3d is installed but does not import, so MultiTaskAnchor3DHead and '
                      f'WaymoAPMetric are not registered: {err!r}', RuntimeWarning, stacklevel=2)
        return
    for registry, module in ((det3d_registry.MODELS, 'graddrop_mtl.det3d.models'),
                             (det3d_registry.METRICS, 'graddrop_mtl.det3d.evaluation')):
        if registry._imported:            # its locations were imported already: register now
            importlib.import_module(module)
        elif module not in (registry._locations or []):
            registry._locations = [*(registry._locations or []), module]


try:
    import mmengine  # noqa: F401
except ImportError:  # pragma: no cover - the methods alone work without mmengine
    pass
else:
    from . import engine, registry  # noqa: F401
    from .engine.launch import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()
    _register_det3d()
