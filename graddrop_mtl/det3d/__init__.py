"""The 3D detection experiment, registered in mmdet3d's registries.

* :mod:`graddrop_mtl.det3d.models` - ``MultiTaskAnchor3DHead``: PointPillars' head with nine task losses;
* :mod:`graddrop_mtl.det3d.evaluation` - ``WaymoAPMetric``: Waymo AP/APH without the Bazel binary;
* :mod:`graddrop_mtl.det3d.waymo` - Waymo Open Dataset conversion without TensorFlow (tools/create_data.py).

Nothing is imported here, so the data tools (``graddrop_mtl.det3d.waymo``) do not pay for importing mmdet3d's
models. ``import graddrop_mtl`` adds ``models`` and ``evaluation`` to the import locations of mmdet3d's ``MODELS`` and
``METRICS`` registries when mmdet3d is installed (imported on their first lookup), so a config needs only::

    custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)
"""
