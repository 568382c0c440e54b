"""The 3D detection experiment, registered in mmdet3d's registries.

* :mod:`graddrop_mtl.det3d.models` - ``MultiTaskAnchor3DHead``: PointPillars' head with nine task losses;
* :mod:`graddrop_mtl.det3d.evaluation` - ``WaymoAPMetric``: Waymo AP/APH without the Bazel binary;
* :mod:`graddrop_mtl.det3d.waymo` - Waymo Open Dataset conversion without TensorFlow (tools/create_data.py).

Nothing is imported here, so the data tools do not pay for importing mmdet3d's models. Configs write::

    custom_imports = dict(imports=['graddrop_mtl', 'graddrop_mtl.det3d.models', 'graddrop_mtl.det3d.evaluation'],
                          allow_failed_imports=False)
"""
