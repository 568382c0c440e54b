"""Exact IoU of rotated boxes (bird's-eye view and upright 3D) with Numba.

The BEV intersection is the exact area of the intersection polygon of two rotated rectangles (each rectangle clipped
by the four half-planes of the other, Sutherland-Hodgman, then the shoelace formula); the 3D intersection multiplies
it by the overlap of the closed height intervals. The special cases follow waymo-open-dataset's ``metrics/iou.cc``:
an IoU of 0 when a length or width (and, for 3D, a height) is <= 0.01 m or any dimension is >= 1e6 m, or when the
union is <= 1e-6; the result is clipped to [0, 1].

Boxes are Waymo's: ``(x, y, z, length, width, height, heading)`` with (x, y, z) the centre; BEV uses columns
0, 1, 3, 4, 6.
"""
from __future__ import annotations

import numba
import numpy as np

_MIN_DIM = 1e-2
_MAX_DIM = 1e6
_EPS = 1e-6


@numba.njit(cache=True, inline='always')
def _corners(x, y, length, width, heading, out):
    """Counter-clockwise corners of a rotated rectangle into ``out`` (4 x 2)."""
    c = np.cos(heading)
    s = np.sin(heading)
    hl = 0.5 * length
    hw = 0.5 * width
    # (+l, +w), (-l, +w), (-l, -w), (+l, -w) in the box frame: counter-clockwise.
    dx = (hl, -hl, -hl, hl)
    dy = (hw, hw, -hw, -hw)
    for k in range(4):
        out[k, 0] = x + c * dx[k] - s * dy[k]
        out[k, 1] = y + s * dx[k] + c * dy[k]


@numba.njit(cache=True)
def rectangle_intersection_area(a, b) -> float:
    """Area of the intersection of two rotated rectangles, each ``(x, y, length, width, heading)``."""
    pa = np.empty((4, 2))
    pb = np.empty((4, 2))
    _corners(a[0], a[1], a[2], a[3], a[4], pa)
    _corners(b[0], b[1], b[2], b[3], b[4], pb)
    # Clip polygon A by each edge of B (both convex, counter-clockwise): at most 8 vertices.
    poly = np.empty((8, 2))
    nxt = np.empty((8, 2))
    n = 4
    for k in range(4):
        poly[k, 0] = pa[k, 0]
        poly[k, 1] = pa[k, 1]
    for e in range(4):
        ex0 = pb[e, 0]
        ey0 = pb[e, 1]
        ex1 = pb[(e + 1) % 4, 0]
        ey1 = pb[(e + 1) % 4, 1]
        edx = ex1 - ex0
        edy = ey1 - ey0
        m = 0
        for k in range(n):
            px = poly[k, 0]
            py = poly[k, 1]
            qx = poly[(k + 1) % n, 0]
            qy = poly[(k + 1) % n, 1]
            # Signed distance (times edge length) of P and Q from the edge line; >= 0 is inside (left side).
            dp = edx * (py - ey0) - edy * (px - ex0)
            dq = edx * (qy - ey0) - edy * (qx - ex0)
            if dp >= 0.0:
                nxt[m, 0] = px
                nxt[m, 1] = py
                m += 1
            if (dp >= 0.0) != (dq >= 0.0):
                t = dp / (dp - dq)
                nxt[m, 0] = px + t * (qx - px)
                nxt[m, 1] = py + t * (qy - py)
                m += 1
        n = m
        if n < 3:
            return 0.0
        for k in range(n):
            poly[k, 0] = nxt[k, 0]
            poly[k, 1] = nxt[k, 1]
    area = 0.0
    for k in range(n):
        area += poly[k, 0] * poly[(k + 1) % n, 1] - poly[(k + 1) % n, 0] * poly[k, 1]
    return max(0.5 * area, 0.0)


@numba.njit(cache=True)
def box_iou(a, b, is_3d: bool) -> float:
    """IoU of two Waymo boxes (7 values each); BEV when ``is_3d`` is False. Semantics of waymo's ``ComputeIoU``."""
    if a[3] >= _MAX_DIM or a[4] >= _MAX_DIM or b[3] >= _MAX_DIM or b[4] >= _MAX_DIM:
        return 0.0
    if a[3] <= _MIN_DIM or a[4] <= _MIN_DIM or b[3] <= _MIN_DIM or b[4] <= _MIN_DIM:
        return 0.0
    z_overlap = 1.0
    if is_3d:
        if a[5] <= _MIN_DIM or b[5] <= _MIN_DIM or a[5] >= _MAX_DIM or b[5] >= _MAX_DIM:
            return 0.0
        lo = max(a[2] - 0.5 * a[5], b[2] - 0.5 * b[5])
        hi = min(a[2] + 0.5 * a[5], b[2] + 0.5 * b[5])
        if lo > hi:
            return 0.0
        z_overlap = hi - lo
    # Quick rejection: centres farther apart than the sum of the half diagonals.
    ddx = a[0] - b[0]
    ddy = a[1] - b[1]
    ra = 0.5 * np.sqrt(a[3] * a[3] + a[4] * a[4])
    rb = 0.5 * np.sqrt(b[3] * b[3] + b[4] * b[4])
    if ddx * ddx + ddy * ddy > (ra + rb) * (ra + rb):
        return 0.0
    ra5 = np.empty(5)
    rb5 = np.empty(5)
    ra5[0], ra5[1], ra5[2], ra5[3], ra5[4] = a[0], a[1], a[3], a[4], a[6]
    rb5[0], rb5[1], rb5[2], rb5[3], rb5[4] = b[0], b[1], b[3], b[4], b[6]
    inter = rectangle_intersection_area(ra5, rb5) * z_overlap
    if is_3d:
        vol_a = a[3] * a[4] * a[5]
        vol_b = b[3] * b[4] * b[5]
    else:
        vol_a = a[3] * a[4]
        vol_b = b[3] * b[4]
    union = vol_a + vol_b - inter
    if union <= _EPS:
        return 0.0
    return min(max(inter / union, 0.0), 1.0)


@numba.njit(cache=True)
def iou_matrix(boxes_a, boxes_b, is_3d: bool):
    """IoU of every pair, float64 [len(a), len(b)]; boxes are float64 [N, 7] Waymo boxes."""
    out = np.zeros((boxes_a.shape[0], boxes_b.shape[0]))
    for i in range(boxes_a.shape[0]):
        for j in range(boxes_b.shape[0]):
            out[i, j] = box_iou(boxes_a[i], boxes_b[j], is_3d)
    return out


def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray, box_type: str = '3d') -> np.ndarray:
    """IoU of every pair of Waymo boxes (``[N, 7]`` each): '3d' upright 3D IoU, 'bev' rotated BEV IoU."""
    if box_type not in ('3d', 'bev'):
        raise ValueError(f"box_type must be '3d' or 'bev', got {box_type!r}")
    a = np.ascontiguousarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.ascontiguousarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    return iou_matrix(a, b, box_type == '3d')
