"""A bird's-eye-view picture of one frame: points, ground-truth boxes and predicted boxes (matplotlib, no display).

:func:`draw_bev` draws one frame into a PNG (``tools/demo.py``); :class:`BEVVisualizationHook`, registered in
mmdet3d's ``HOOKS`` when ``graddrop_mtl.det3d.visualization`` is imported (the PointPillars configs list it in
``custom_imports``), is mmdet3d's ``Det3DVisualizationHook`` for ``lidar_det`` drawing these pictures, so that
``tools/test.py CONFIG CKPT --show-dir DIR`` writes one PNG per test frame on a machine without a display.
"""
from __future__ import annotations

import importlib.util
import os
import os.path as osp

import numpy as np


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """Corners ``[N, 4, 2]`` of LiDAR boxes ``[N, >=7]`` (x, y, z, l, w, h, yaw) seen from above."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, boxes.shape[-1] if len(boxes) else 7)
    x, y, l, w, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    dx = np.array([0.5, 0.5, -0.5, -0.5])
    dy = np.array([0.5, -0.5, -0.5, 0.5])
    cx, cy = l[:, None] * dx, w[:, None] * dy
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + c * cx - s * cy, y[:, None] + s * cx + c * cy], -1)


def render_bev(points: np.ndarray, gt_boxes: np.ndarray, pred_boxes: np.ndarray,
               pred_scores: np.ndarray | None = None, extent: float = 19.2, score_thr: float = 0.3,
               title: str = ''):
    """A matplotlib figure (Agg canvas, no display) of the BEV picture of :func:`draw_bev`; close it after use."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 7))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = np.asarray(points, dtype=np.float64)
    points = points.reshape(-1, 3) if points.size == 0 else points.reshape(len(points), -1)   # a frame may be empty
    pts = points[(np.abs(points[:, 0]) < extent) & (np.abs(points[:, 1]) < extent)]
    ground = np.percentile(pts[:, 2], 30) if len(pts) else 0.0
    above = pts[:, 2] > ground + 0.3                     # object points stand out from the ground rings
    ax.scatter(pts[~above, 0], pts[~above, 1], s=0.2, c='0.7', linewidths=0)
    ax.scatter(pts[above, 0], pts[above, 1], s=1.0, c='k', linewidths=0)
    for corners in box_corners_bev(gt_boxes):
        ax.fill(corners[:, 0], corners[:, 1], fill=False, ec='tab:green', lw=1.6)
    keep = np.ones(len(pred_boxes), bool) if pred_scores is None else np.asarray(pred_scores) >= score_thr
    preds = np.asarray(pred_boxes)[keep]
    for box, corners in zip(preds, box_corners_bev(preds)):
        ax.fill(corners[:, 0], corners[:, 1], fill=False, ec='tab:red', lw=1.0)
        front = box[:2] + 0.5 * box[3] * np.array([np.cos(box[6]), np.sin(box[6])])
        ax.plot([box[0], front[0]], [box[1], front[1]], color='tab:red', lw=1.0)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect('equal')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    ax.set_title(title or f'ground truth (green) vs predictions with score >= {score_thr} (red)', fontsize=9)
    fig.tight_layout()
    return fig


def draw_bev(path: str, points: np.ndarray, gt_boxes: np.ndarray, pred_boxes: np.ndarray,
             pred_scores: np.ndarray | None = None, extent: float = 19.2, score_thr: float = 0.3,
             title: str = '') -> str:
    """Save a BEV picture: ground points (grey), points above the ground (black), ground truth (green), predictions
    with a score of at least ``score_thr`` (red, heading drawn as a line from the centre to the front)."""
    fig = render_bev(points, gt_boxes, pred_boxes, pred_scores, extent, score_thr, title)
    fig.savefig(path, dpi=110)
    return path


def _boxes_array(boxes) -> np.ndarray:
    """``[N, 7]`` float array of mmdet3d boxes (``BaseInstance3DBoxes``, tensor or array)."""
    if boxes is None:
        return np.zeros((0, 7))
    boxes = getattr(boxes, 'tensor', boxes)
    boxes = boxes.detach().cpu().numpy() if hasattr(boxes, 'detach') else np.asarray(boxes)
    return boxes.reshape(-1, boxes.shape[-1] if boxes.size else 7)[:, :7].astype(np.float64)


def _register_hook():
    from mmdet3d.engine.hooks import Det3DVisualizationHook
    from mmdet3d.registry import HOOKS

    @HOOKS.register_module(force=True)
    class BEVVisualizationHook(Det3DVisualizationHook):
        """mmdet3d's ``Det3DVisualizationHook`` for ``lidar_det`` without a display: bird's-eye views by matplotlib.

        Same arguments and switches as the stock hook (``tools/test.py --show-dir DIR --score-thr T`` set ``draw``,
        ``test_out_dir``, ``score_thr``). Testing: one ``<lidar file name>.png`` per frame in ``test_out_dir``
        (relative paths under ``WORK_DIR/<timestamp>/``, as mmdet3d). Validation: the first frame of every
        ``interval``-th batch goes to the visualizer's backends (``val_bev``, e.g. TensorBoard) while ``draw``.
        The points drawn are the model's input (after the test pipeline); ground truth comes from the samples'
        ``eval_ann_info`` when the dataset provides it.

        Args:
            extent: half the side of the square drawn, in metres; default: the farthest input point.
            draw_gt: draw the ground truth too (default True, unlike the stock hook).
            **kwargs: ``Det3DVisualizationHook``'s (``vis_task`` must be ``'lidar_det'``).
        """

        def __init__(self, vis_task: str = 'lidar_det', extent: float | None = None, draw_gt: bool = True,
                     **kwargs):
            if vis_task != 'lidar_det':
                raise ValueError(f'BEVVisualizationHook draws lidar detections only: vis_task={vis_task!r} '
                                 "(use --task lidar_det or the stock Det3DVisualizationHook)")
            if kwargs.get('show'):
                raise ValueError('BEVVisualizationHook writes pictures and shows none (no display is needed or '
                                 'used): use --show-dir DIR instead of --show')
            super().__init__(vis_task=vis_task, draw_gt=draw_gt, **kwargs)
            self.extent = extent
            self._out_dir = None

        def _figure(self, points, data_sample):
            points = np.asarray(points.cpu().numpy() if hasattr(points, 'cpu') else points)
            gt = None
            ann = data_sample.get('eval_ann_info', None)
            if self.draw_gt and ann is not None:
                gt = ann.get('gt_bboxes_3d')
            pred = data_sample.get('pred_instances_3d', None)
            boxes = _boxes_array(None if pred is None else pred.bboxes_3d)
            scores = None if pred is None else pred.scores_3d.detach().cpu().numpy()
            extent = self.extent
            if extent is None:
                extent = float(np.ceil(np.abs(points[:, :2]).max())) if len(points) else 10.0
            name = data_sample.metainfo.get('sample_idx', self._test_index)
            return render_bev(points, _boxes_array(gt), boxes, scores, extent=extent, score_thr=self.score_thr,
                              title=f'sample {name}: ground truth (green), predictions with score >= '
                                    f'{self.score_thr:g} (red)')

        def _file_name(self, data_sample) -> str:
            lidar_path = data_sample.metainfo.get('lidar_path')
            if lidar_path:
                return osp.splitext(osp.basename(lidar_path))[0] + '.png'
            sample_idx = data_sample.metainfo.get('sample_idx')
            if sample_idx is None:
                raise KeyError('BEVVisualizationHook names each picture after the sample\'s lidar_path or '
                               'sample_idx; the test pipeline\'s Pack3DDetInputs keeps neither in meta_keys')
            return f'{sample_idx}.png'

        def after_val_iter(self, runner, batch_idx: int, data_batch: dict, outputs) -> None:
            if self.draw is False or (runner.iter + batch_idx) % self.interval:
                return
            fig = self._figure(data_batch['inputs']['points'][0], outputs[0])
            fig.canvas.draw()
            image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
            self._visualizer.add_image('val_bev', image, step=runner.iter + batch_idx)

        def after_test_iter(self, runner, batch_idx: int, data_batch: dict, outputs) -> None:
            if self.draw is False:
                return
            if self.test_out_dir is None:
                raise ValueError('BEVVisualizationHook: draw=True needs test_out_dir (tools/test.py --show-dir DIR)')
            if self._out_dir is None:
                self._out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
                os.makedirs(self._out_dir, exist_ok=True)
            for points, data_sample in zip(data_batch['inputs']['points'], outputs):
                self._test_index += 1
                self._figure(points, data_sample).savefig(osp.join(self._out_dir, self._file_name(data_sample)),
                                                          dpi=110)

    return BEVVisualizationHook


# the picture functions need only matplotlib; the hook needs mmdet3d
BEVVisualizationHook = _register_hook() if importlib.util.find_spec('mmdet3d') is not None else None
