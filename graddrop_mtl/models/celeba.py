"""The CelebA network of the paper's appendix A.4: nine 3x3 conv layers with batch norm, two dense layers, and a
40-way head; one sigmoid cross-entropy loss per attribute (40 tasks).

Layer stack (CONV-F-C: F x F convolution with C channels, batch norm, ReLU; MAX: 2 x 2 max pool, stride 2)::

    backbone  [CONV-3-64][MAX][CONV-3-128][CONV-3-128][MAX][CONV-3-256][CONV-3-256][MAX][CONV-3-512][CONV-3-512]
    head      [DENSE-512 + BN + ReLU][DENSE-512 + BN + ReLU][DENSE-40]   (no batch norm on the predictive head)

The multitask methods act on the output of the final conv layer, ``model.backbone`` (``shared='backbone'`` in the
optim wrapper). The appendix does not say how the conv map meets DENSE-512; here it is average-pooled to
``head_pool`` (8 x 8 by default, an identity for 64 x 64 inputs whose map is already 8 x 8) and flattened, so that
the dense layers see the spatial layout and their size does not depend on the input resolution.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..datasets.celeba import CELEBA_ATTRIBUTES
from ..registry import MODELS

#: ``(out_channels or 'M')`` for the nine conv layers and three max pools of appendix A.4.
CONV_STACK: tuple[int | str, ...] = (64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """CONV-3-C with batch norm and ReLU (no conv bias: the batch norm has one)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def dense_bn_relu(in_features: int, out_features: int) -> nn.Sequential:
    """DENSE-H with batch norm and ReLU."""
    return nn.Sequential(nn.Linear(in_features, out_features, bias=False), nn.BatchNorm1d(out_features),
                         nn.ReLU(inplace=True))


class WindowMean(torch.autograd.Function):
    """The mean over equal ``kh x kw`` windows of the last two dims (a map whose size is a multiple of the pooled
    size), with a backward that batches over the multitask wrapper's per-task gradients.

    Forward: a sum over a reshaped view. Backward: each window's gradient divided by ``kh * kw`` and repeated over
    the window by two ``torch.stack`` calls (along the width, then the height). Autograd's own backward of the view
    and sum (an expand made contiguous, whose innermost dim has stride 0) writes the same values several times
    slower (docs/benchmarks.md, "CelebA head pool"). The backward is made of ops with
    batching rules, so ``autograd.grad(..., is_grads_batched=True)`` runs it once for all tasks, and of
    differentiable ops, so it can be differentiated again (``generate_vmap_rule`` also lets ``torch.func.vmap``
    batch the forward).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, kh: int, kw: int) -> Tensor:
        h, w = x.shape[-2:]
        return x.reshape(*x.shape[:-2], h // kh, kh, w // kw, kw).sum((-3, -1)) / (kh * kw)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, ctx.kh, ctx.kw = inputs

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = grad / (ctx.kh * ctx.kw)
        *lead, oh, ow = g.shape
        rows = torch.stack([g] * ctx.kw, -1).reshape(*lead, oh, ow * ctx.kw)
        return torch.stack([rows] * ctx.kh, -2).reshape(*lead, oh * ctx.kh, ow * ctx.kw), None, None


def window_matrix(size: int, out: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    """``[out, size]``: row ``i`` averages the ``i``-th of the ``out`` windows an adaptive average pool uses along a
    dim of ``size`` (rows ``floor(i * size / out)`` to ``ceil((i + 1) * size / out)``, excluded, as in PyTorch's
    ``adaptive_avg_pool``), so that ``P_h @ x @ P_w^T`` pools the last two dims of ``x`` as the stock op does."""
    i = torch.arange(out, device=device)
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    rows = torch.arange(size, device=device)
    member = (rows >= start[:, None]) & (rows < end[:, None])
    return member.to(dtype) / (end - start)[:, None].to(dtype)


class HeadPool(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d`` computed by ops whose backward batches over the multitask wrapper's per-task
    gradients.

    * A map already of the output size passes through unchanged (no op in the graph).
    * A map whose size is a multiple of the output size is pooled by :class:`WindowMean`.
    * Any other size (the stored 218 x 178 images give a 27 x 22 map) is pooled by the two window-averaging matrices
      of :func:`window_matrix`, ``P_h @ (x @ P_w^T)`` (two products).

    The values are the stock module's up to the rounding of the window sums (the stock op divides a window's sum by
    its area, the matrices by its height and its width in turn; 2.4e-7 apart at most for CelebA's maps). The stock
    op itself is never used: its backward has no batching rule, so when the wrapper takes the 40 per-task gradients
    at the backbone output in one ``is_grads_batched`` call, vmap runs it once per task and stacks the results.
    The matrices write the per-task gradients once, contiguously (an ``einsum`` returns them permuted, which costs a
    copy). Measured costs: docs/benchmarks.md ("CelebA head pool").
    """

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        oh, ow = _pair(self.output_size)
        oh, ow = h if oh is None else oh, w if ow is None else ow     # None keeps that size, as in the stock module
        if (h, w) == (oh, ow):
            return x
        if h % oh == 0 and w % ow == 0:   # equal windows: a mean whose backward batches over tasks
            return WindowMean.apply(x, h // oh, w // ow)
        rows = window_matrix(h, oh, dtype=x.dtype, device=x.device)
        cols = window_matrix(w, ow, dtype=x.dtype, device=x.device)
        # width first: the backward then writes the full-size gradient once, contiguous, by its last product
        return rows @ (x @ cols.t())


@MODELS.register_module()
class CelebAMultiTaskNet(BaseModel):
    """Appendix A.4's nine-layer conv net with one binary sigmoid cross-entropy loss per CelebA attribute.

    ``forward(inputs, data_samples, mode)``:

    * ``mode='loss'``: ``{'loss_<attribute>': mean BCE over the batch}`` for each attribute, in attribute order
      (e.g. ``'loss_5_o_Clock_Shadow'``), so that :class:`~graddrop_mtl.engine.MultiTaskOptimWrapper` sees one task
      per attribute.
    * ``mode='predict'``: one dict per image: ``pred_logit`` and ``pred_score`` (sigmoid) ``[40]``, ``gt_label``
      ``[40]`` (when given), ``img_id``.
    * ``mode='tensor'``: the logits ``[B, 40]``.

    ``inputs`` is a float ``[B, 3, H, W]`` batch (the ``data_preprocessor``, by default mmengine's
    ``ImgDataPreprocessor`` scaling 0..255 to 0..1, stacks and converts the dataset's uint8 images).
    ``data_samples`` carries ``gt_label`` (``[B, 40]`` of 0/1, or a list of ``[40]`` tensors) and optionally
    ``img_id``, as a dict of lists (mmengine's ``pseudo_collate``) or a list of per-image dicts.

    Args:
        attributes: task names (default: CelebA's 40 attributes); the head has one output each.
        in_channels: image channels.
        conv_channels: the conv stack, ints for CONV-3-C and ``'M'`` for MAX (default :data:`CONV_STACK`).
        dense_channels: widths of the dense layers before the head.
        head_pool: ``(h, w)`` the final conv map is average-pooled to before flattening (see the module docstring);
            ``None`` flattens it as is (``DENSE-512``'s input size then follows from ``input_size``).
        input_size: ``(H, W)`` of the inputs; needed only with ``head_pool=None``.
        log_task_losses: log all 40 task losses (``parse_losses``' ``log_vars``); by default only their sum
            ``loss`` is logged. The multitask optim wrapper reads the task losses from the forward's loss dict either
            way.
        data_preprocessor: mmengine data preprocessor config.
        init_cfg: mmengine init config.
    """

    def __init__(self, attributes: Sequence[str] | None = None, in_channels: int = 3,
                 conv_channels: Sequence[int | str] = CONV_STACK, dense_channels: Sequence[int] = (512, 512),
                 head_pool: int | Sequence[int] | None = (8, 8), input_size: Sequence[int] | None = None,
                 log_task_losses: bool = False,
                 data_preprocessor: Mapping[str, Any] | nn.Module | None = None,
                 init_cfg: Mapping[str, Any] | list | None = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='ImgDataPreprocessor', mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0])
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.log_task_losses = log_task_losses
        self.attributes: tuple[str, ...] = tuple(attributes) if attributes is not None else CELEBA_ATTRIBUTES
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f'attribute names must be unique, got {self.attributes}')
        layers: list[nn.Module] = []
        channels, n_pools = in_channels, 0
        for spec in conv_channels:
            if spec == 'M':
                layers.append(nn.MaxPool2d(2, 2))
                n_pools += 1
            else:
                layers.append(conv_bn_relu(channels, int(spec)))
                channels = int(spec)
        #: The shared trunk: its output (the final conv layer's) is where the multitask methods act.
        self.backbone = nn.Sequential(*layers)
        if head_pool is not None:
            pool_hw = (head_pool, head_pool) if isinstance(head_pool, int) else tuple(int(v) for v in head_pool)
            pool: nn.Module = HeadPool(pool_hw)
        else:
            if input_size is None:
                raise ValueError('head_pool=None needs input_size=(H, W) to size the first dense layer')
            pool_hw = (int(input_size[0]) >> n_pools, int(input_size[1]) >> n_pools)
            pool = nn.Identity()
        dense: list[nn.Module] = [pool, nn.Flatten(1)]
        features = channels * pool_hw[0] * pool_hw[1]
        for width in dense_channels:
            dense.append(dense_bn_relu(features, int(width)))
            features = int(width)
        dense.append(nn.Linear(features, len(self.attributes)))
        #: The task-specific part: dense layers and the predictive head (one logit per attribute).
        self.head = nn.Sequential(*dense)

    @property
    def loss_keys(self) -> list[str]:
        """The loss dict keys, one task per attribute: ``'loss_<attribute>'``."""
        return [f'loss_{name}' for name in self.attributes]

    def parse_losses(self, losses: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """mmengine's ``parse_losses``; keeps only the summed ``loss`` in ``log_vars`` unless ``log_task_losses``."""
        loss, log_vars = super().parse_losses(losses)
        if not self.log_task_losses:
            log_vars = OrderedDict(loss=log_vars['loss'])
        return loss, log_vars

    def forward(self, inputs: Tensor, data_samples: Any = None, mode: str = 'tensor') -> Any:
        logits = self.head(self.backbone(inputs))
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            target = self._gt_labels(data_samples, logits)
            per_task = F.binary_cross_entropy_with_logits(logits, target, reduction='none').mean(0)
            return dict(zip(self.loss_keys, per_task.unbind(0)))
        if mode == 'predict':
            scores = logits.sigmoid()
            target = self._gt_labels(data_samples, logits, required=False)
            ids = self._field(data_samples, 'img_id')
            out = []
            for i in range(logits.shape[0]):
                sample = dict(pred_logit=logits[i].detach(), pred_score=scores[i].detach())
                if target is not None:
                    sample['gt_label'] = target[i]
                if ids is not None:
                    sample['img_id'] = ids[i]
                out.append(sample)
            return out
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    @staticmethod
    def _field(data_samples: Any, key: str) -> Any:
        if data_samples is None:
            return None
        if isinstance(data_samples, Mapping):
            return data_samples.get(key)
        if isinstance(data_samples, (list, tuple)):
            values = [s.get(key) if isinstance(s, Mapping) else getattr(s, key, None) for s in data_samples]
            return None if all(v is None for v in values) else values
        return getattr(data_samples, key, None)

    def _gt_labels(self, data_samples: Any, logits: Tensor, required: bool = True) -> Tensor | None:
        labels = self._field(data_samples, 'gt_label')
        if labels is None:
            if required:
                raise ValueError("mode='loss' needs data_samples with 'gt_label' ([B, num_attributes] of 0/1)")
            return None
        if not isinstance(labels, Tensor):
            labels = torch.stack([torch.as_tensor(v) for v in labels])
        labels = labels.to(device=logits.device, dtype=logits.dtype)
        if labels.shape != logits.shape:
            raise ValueError(f'gt_label has shape {tuple(labels.shape)}, expected {tuple(logits.shape)} '
                             f'(batch, {len(self.attributes)} attributes)')
        return labels


def build_celeba_model(**kwargs: Any) -> CelebAMultiTaskNet:
    """Build :class:`CelebAMultiTaskNet` (keyword arguments as for the class), e.g. for a benchmark."""
    return CelebAMultiTaskNet(**kwargs)
