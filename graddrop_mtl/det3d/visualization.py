"""A bird's-eye-view picture of one frame: points, ground-truth boxes and predicted boxes."""
from __future__ import annotations

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


def draw_bev(path: str, points: np.ndarray, gt_boxes: np.ndarray, pred_boxes: np.ndarray,
             pred_scores: np.ndarray | None = None, extent: float = 19.2, score_thr: float = 0.3,
             title: str = '') -> str:
    """Save a BEV picture: ground points (grey), points above the ground (black), ground truth (green), predictions above ``score_thr`` (red, heading
    drawn as a line from the centre to the front)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 7))
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
