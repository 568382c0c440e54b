"""Registries of graddrop_mtl (scope ``'graddrop_mtl'``), children of mmengine's root registries.

Where each component registers, and what a config writes to use it:

==========================  ==========================================  ============================================
component                   registry                                    config
==========================  ==========================================  ============================================
``MultiTaskOptimWrapper``   mmengine's root ``OPTIM_WRAPPERS``          ``optim_wrapper=dict(``
                            (found from every scope: mmdet3d's too)     ``type='MultiTaskOptimWrapper', ...)``
multitask methods           :data:`MTL_METHODS` (mirror of              ``method=dict(type='GradDrop', ...)`` inside
                            ``graddrop_mtl.methods.METHODS``)           the optim wrapper
``MMCPUDistributedDataParallel``  mmengine's root ``MODEL_WRAPPERS``    set by ``tools/train.py`` for CPU (gloo) runs
sine / CelebA / CIFAR-100   :data:`MODELS`, :data:`DATASETS`,           ``default_scope='graddrop_mtl'``
models, datasets, metrics   :data:`METRICS` (scope ``graddrop_mtl``)
PointPillars MTL head,      mmdet3d's ``MODELS`` / ``METRICS``          ``default_scope='mmdet3d'`` (registered by
Waymo metric                                                            ``import graddrop_mtl`` where mmdet3d is
                                                                        installed)
==========================  ==========================================  ============================================

Every config writes ``custom_imports=dict(imports=['graddrop_mtl'], allow_failed_imports=False)``, and that is all it
needs: ``import graddrop_mtl`` registers the optim wrapper, the methods and the mmdet3d components; modules of the
``graddrop_mtl`` scope are imported on first use through the registries' ``locations``.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

from .methods.base import on_register

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='graddrop_mtl', locations=['graddrop_mtl.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='graddrop_mtl', locations=['graddrop_mtl.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='graddrop_mtl',
                      locations=['graddrop_mtl.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='graddrop_mtl', locations=['graddrop_mtl.evaluation'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='graddrop_mtl', locations=['graddrop_mtl.engine'])

#: mmengine view of the multitask methods (the source of truth is ``graddrop_mtl.methods.METHODS``; add a method
#: with ``graddrop_mtl.methods.register_method``: it appears here too, also when registered later, e.g. by a
#: project module in ``custom_imports``).
MTL_METHODS = Registry('mtl method', scope='graddrop_mtl')
on_register(lambda name, cls: MTL_METHODS.register_module(name=name, module=cls, force=True))
