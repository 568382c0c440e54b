"""``MultiTaskAnchor3DHead``: mmdet3d's ``Anchor3DHead`` with one loss per box dimension (nine task losses)."""
from __future__ import annotations

from typing import Any

from mmdet3d.models.dense_heads import Anchor3DHead
from mmdet3d.registry import MODELS
from torch import Tensor, nn

#: Names of the box-code dimensions of ``DeltaXYZWLHRBBoxCoder`` for LiDAR boxes (x_size = length, y_size = width,
#: z_size = height in mmdet3d's LiDAR convention).
BOX_DIM_NAMES = ('x', 'y', 'z', 'length', 'width', 'height', 'yaw')


class _PerDimensionLoss(nn.Module):
    """Wraps a box regression loss: returns the stock total and records the loss of every code dimension.

    The wrapped loss (``SmoothL1Loss``, ``L1Loss``: elementwise, summed with weights and divided by ``avg_factor``) is
    evaluated once per dimension with that dimension's prediction, target and weight; the components add up to the
    loss over all dimensions.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss
        self.records: list[tuple[Tensor, list[Tensor]]] = []

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None, avg_factor: Any = None,
                **kwargs) -> Tensor:
        parts = [self.loss(pred[:, k], target[:, k], None if weight is None else weight[:, k],
                           avg_factor=avg_factor, **kwargs) for k in range(pred.shape[-1])]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        self.records.append((total, parts))
        return total


@MODELS.register_module()
class MultiTaskAnchor3DHead(Anchor3DHead):
    """``Anchor3DHead`` whose ``loss_by_feat`` returns nine task losses instead of three (paper appendix A.6).

    ``loss_cls``; ``loss_x``, ``loss_y``, ``loss_z``, ``loss_length``, ``loss_width``, ``loss_height``, ``loss_yaw``
    (the stock ``loss_bbox`` split by box-code dimension: they add up to it, also when no anchor is positive); and
    ``loss_dir`` (the direction classifier: cross-entropy on whether a box faces forwards or backwards). A box code
    longer than 7 (e.g. velocities) gives ``loss_code7``, ... Everything else - layers, anchors, targets, inference -
    is the stock head's, so stock checkpoints load and stock inference runs unchanged.

    Args:
        split_bbox_loss: ``False`` returns the stock three losses (for comparisons).
        **kwargs: as for ``Anchor3DHead``.
    """

    def __init__(self, *args, split_bbox_loss: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.split_bbox_loss = split_bbox_loss
        if split_bbox_loss:
            self.loss_bbox = _PerDimensionLoss(self.loss_bbox)

    def box_loss_names(self) -> list[str]:
        names = list(BOX_DIM_NAMES[:self.box_code_size])
        names += [f'code{k}' for k in range(len(names), self.box_code_size)]
        return [f'loss_{n}' for n in names]

    def loss_by_feat(self, *args, **kwargs) -> dict:
        if not self.split_bbox_loss:
            return super().loss_by_feat(*args, **kwargs)
        self.loss_bbox.records = []
        losses = super().loss_by_feat(*args, **kwargs)
        if losses is None:
            return None
        records = self.loss_bbox.records
        self.loss_bbox.records = []
        names = self.box_loss_names()
        per_dim: list[list[Tensor]] = [[] for _ in names]
        for level_total in losses.pop('loss_bbox'):
            parts = next((p for total, p in records if total is level_total), None)
            if parts is None:   # no positive anchor at this level: the stock head returns pos_bbox_pred.sum()
                parts = [level_total] + [level_total * 0.0 for _ in names[1:]]
            for k, part in enumerate(parts):
                per_dim[k].append(part)
        out = {'loss_cls': losses.pop('loss_cls')}
        out.update(zip(names, per_dim))
        out.update(losses)                 # loss_dir
        return out
