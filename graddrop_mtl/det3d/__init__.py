"""The 3D detection experiment: PointPillars with nine task losses, Waymo Open Dataset conversion without
TensorFlow, and the Waymo metric; registered in mmdet3d's registries. Configs import it with
``custom_imports=dict(imports=['graddrop_mtl', 'graddrop_mtl.det3d'], allow_failed_imports=False)``."""
from . import evaluation, models, waymo  # noqa: F401
