"""PointPillars with nine task losses (registered in mmdet3d's MODELS)."""
from .mtl_anchor3d_head import MultiTaskAnchor3DHead

__all__ = ['MultiTaskAnchor3DHead']
