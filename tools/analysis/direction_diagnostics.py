"""Is an anchor head's direction task learnable on this data, and has the model learned it?

    python tools/analysis/direction_diagnostics.py CONFIG [--checkpoint CKPT] [--frames 80] [--cfg-options K=V]

For the training set of CONFIG (through its training pipeline, augmentation included), at every positive anchor of
the head's own target assignment (mmdet3d's ``anchor_target_3d``):

1. ``target agrees with yaw``: the fraction whose direction target is the bin of the assigned box's yaw
   (mmdet3d's ``get_direction_target``; 1.0 unless the targets are broken);
2. ``yaw points to the lower end``: of the vehicles with points on both ends, the fraction whose highest point
   more than ``--end`` metres behind the centre (along the box's yaw) lies above the highest as far ahead of it.
   On the synthetic Waymo data the cabin sits over the rear, so this is the fraction whose direction the points
   show; on real data it is a rough shape statistic;
3. ``linear probe``: a logistic regression from the neck features at the positive anchors (plus the anchor's
   rotation index) to the direction target, fitted on the first 70% of the anchors and scored on the rest: how
   much of the direction a linear head can read from the features of the model (at initialisation, or of
   ``--checkpoint``). Chance is about 0.5.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import graddrop_mtl  # noqa: F401  (registers the project's modules)


def end_heights(points: np.ndarray, box: np.ndarray, end: float) -> tuple[float, float] | None:
    """Highest point (z) more than ``end`` m ahead of / behind the box centre along its yaw, inside the box."""
    x, y, z, length, width, height, yaw = box[:7]
    dx, dy = points[:, 0] - x, points[:, 1] - y
    lx = math.cos(yaw) * dx + math.sin(yaw) * dy
    ly = -math.sin(yaw) * dx + math.cos(yaw) * dy
    inside = (np.abs(lx) < length / 2) & (np.abs(ly) < width / 2) & (points[:, 2] > z) & (points[:, 2] < z + height)
    front, rear = inside & (lx > end), inside & (lx < -end)
    if front.sum() < 3 or rear.sum() < 3:
        return None
    return float(points[front, 2].max()), float(points[rear, 2].max())


def linear_probe(x: torch.Tensor, y: torch.Tensor, train_fraction: float = 0.7, l2: float = 1e-3) -> float:
    """Held-out accuracy of an L2-regularised logistic regression (LBFGS) from ``x`` to the binary ``y``."""
    n = int(train_fraction * len(y))
    mean, std = x[:n].mean(0), x[:n].std(0) + 1e-6
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x[:n] @ w + b, y[:n]) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x[n:] @ w + b > 0).double() == y[n:]).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--checkpoint', help='model weights to probe (default: the initialisation)')
    p.add_argument('--frames', type=int, default=80, help='training samples to read (default 80)')
    p.add_argument('--end', type=float, default=0.8, help='metres from the centre where a vehicle end starts')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='key=value overrides of the config')
    args = p.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # the augmentation draws from numpy
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    from mmdet3d.registry import DATASETS, MODELS
    from mmdet3d.structures import limit_period
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    head = model.pts_bbox_head
    if not getattr(head, 'use_direction_classifier', False):
        raise SystemExit(f'{args.config}: model.pts_bbox_head has no direction classifier')

    agree, lower, feats, targets = [], [], [], []
    with torch.no_grad():
        for i in range(min(args.frames, len(dataset))):
            sample = dataset[i]
            gt = sample['data_samples'].gt_instances_3d.clone()
            boxes = gt.bboxes_3d.tensor.numpy().copy()
            data = model.data_preprocessor({'inputs': {'points': [sample['inputs']['points']]},
                                            'data_samples': [sample['data_samples']]}, False)
            neck = model.extract_feat(data['inputs'], [s.metainfo for s in data['data_samples']])[1][0]
            h, w = neck.shape[-2:]
            anchors = head.prior_generator.grid_anchors([(h, w)], device='cpu')[0].reshape(-1, head.box_code_size)
            tg = head.anchor_target_3d([[anchors]], [gt], [sample['data_samples'].metainfo], num_classes=1,
                                       label_channels=1)
            bbox_targets, dir_targets, dir_weights = tg[2][0], tg[4][0].reshape(-1), tg[5][0].reshape(-1)
            per_cell = anchors.shape[0] // (h * w)
            cells = neck[0].permute(1, 2, 0).reshape(h * w, -1)
            points = sample['inputs']['points'].numpy()
            for k in torch.nonzero(dir_weights > 0).flatten().tolist():
                yaw = float(bbox_targets.reshape(-1, head.box_code_size)[k, 6] + anchors[k, 6])
                rot = limit_period(torch.tensor(yaw - head.dir_offset), head.dir_limit_offset, 2 * np.pi)
                agree.append(int(rot // np.pi) == int(dir_targets[k]))
                feats.append(torch.cat([cells[k // per_cell].double(), torch.tensor([float(k % per_cell)])]))
                targets.append(float(dir_targets[k]))
            for box in boxes:
                ends = end_heights(points, box, args.end)
                if ends is not None:
                    lower.append(ends[0] < ends[1])
    if not targets:
        raise SystemExit(f'{args.config}: no positive anchor in the first {args.frames} training samples')
    x, y = torch.stack(feats), torch.tensor(targets, dtype=torch.float64)
    print(f'positive anchors: {len(y)} (direction bin 1: {y.mean():.3f}) in {min(args.frames, len(dataset))} '
          f'training samples')
    print(f'target agrees with yaw: {np.mean(agree):.3f}')
    print(f'yaw points to the lower end: {np.mean(lower):.3f} of {len(lower)} boxes with points on both ends')
    print(f'linear probe (held-out accuracy, {"checkpoint" if args.checkpoint else "initialisation"}): '
          f'{linear_probe(x, y):.3f}')


if __name__ == '__main__':
    main()
