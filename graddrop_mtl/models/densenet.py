"""DenseNet-BC shared by two image domains with per-domain batch norm (ImageNet -> CIFAR-100 transfer, appendix A.5).

One trunk runs once on the concatenated batch (8 ImageNet + 8 CIFAR-100 images); every batch-norm layer is a
:class:`DomainBatchNorm2d` that normalises each sample with its own domain's parameters and statistics, so nothing
in the network mixes rows of different domains. The output of the last dense block, ``backbone``, is the shared
activation ``A [B, C, 8, 8]`` for the multitask optim wrapper (``shared='backbone'``): the ImageNet loss depends only
on its ImageNet rows and the CIFAR loss only on its CIFAR rows, which is what batch-separated GradDrop expects
(dim 0 of ``A`` is the batch).

Layer layout (Huang et al. 2017, DenseNet-BC for 32x32 images): a 3x3 convolution to ``2 * growth_rate``
channels, three dense blocks of ``(depth - 4) / 6`` bottleneck layers (BN-ReLU-Conv1x1 to ``4 * growth_rate``,
BN-ReLU-Conv3x3 to ``growth_rate``, concatenated to the input), separated by transitions (BN-ReLU-Conv1x1 to
``compression`` times the channels, 2x2 average pooling). Then, per domain: BN-ReLU, global average pooling and a
linear head (ImageNet 1000 classes, CIFAR-100 100 classes). No dropout. Depth 100, growth 12, compression 0.5
(the paper's DenseNet-BC-100, k = 12) gives ``A`` 342 channels at 8x8 and 0.79 M trunk parameters (two BN sets).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import Tensor, nn

from ..registry import MODELS


# ---------------------------------------------------------------------------------------------------------------
# Which rows belong to which domain.
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainGroups:
    """The rows of a batch grouped by domain: ``rows[j]`` (a slice when the group is contiguous, else an index
    tensor) are the rows of domain ``domains[j]``. :meth:`merge` puts per-group results back in batch order."""

    domains: tuple[int, ...]
    rows: tuple[slice | Tensor, ...]
    inverse: Tensor | None        # batch order from the concatenated groups; None when groups are already in order

    @classmethod
    def from_ids(cls, domain_ids: Tensor, num_domains: int) -> 'DomainGroups':
        ids = torch.as_tensor(domain_ids).reshape(-1).long().cpu()
        if ids.numel() == 0:
            raise ValueError('empty batch: no domain ids')
        if int(ids.min()) < 0 or int(ids.max()) >= num_domains:
            raise ValueError(f'domain ids must lie in [0, {num_domains - 1}], got {sorted(set(ids.tolist()))}')
        present = sorted(set(ids.tolist()))
        order = torch.argsort(ids, stable=True)
        if torch.equal(order, torch.arange(len(ids))):      # grouped already (the collate sorts by domain)
            counts = [int((ids == d).sum()) for d in present]
            starts = [sum(counts[:j]) for j in range(len(counts))]
            rows = tuple(slice(s, s + c) for s, c in zip(starts, counts))
            return cls(tuple(present), rows, None)
        rows = tuple(torch.nonzero(ids == d).flatten() for d in present)
        return cls(tuple(present), rows, torch.argsort(torch.cat(rows)))

    def split(self, x: Tensor) -> list[Tensor]:
        return [x[r] for r in self._on(x.device)]

    def merge(self, parts: Sequence[Tensor]) -> Tensor:
        if len(parts) == 1:
            return parts[0]
        out = torch.cat(list(parts))
        return out if self.inverse is None else out[self.inverse.to(out.device)]

    def _on(self, device: torch.device) -> tuple[slice | Tensor, ...]:
        return tuple(r if isinstance(r, slice) else r.to(device) for r in self.rows)


class DomainBatchNorm2d(nn.Module):
    """Batch norm with one ``BatchNorm2d`` (affine parameters and running statistics) per domain.

    ``forward(x, groups)`` normalises the rows of each domain with that domain's layer only: in training the
    statistics are computed over that domain's rows, so no information crosses domains.
    """

    def __init__(self, num_features: int, num_domains: int = 2, **bn_kwargs: Any) -> None:
        super().__init__()
        if num_domains < 1:
            raise ValueError(f'num_domains must be >= 1, got {num_domains}')
        self.num_features = num_features
        self.bns = nn.ModuleList(nn.BatchNorm2d(num_features, **bn_kwargs) for _ in range(num_domains))

    def forward(self, x: Tensor, groups: DomainGroups) -> Tensor:
        return groups.merge([self.bns[d](part) for d, part in zip(groups.domains, groups.split(x))])

    def extra_repr(self) -> str:
        return f'{self.num_features}, num_domains={len(self.bns)}'


class BottleneckLayer(nn.Module):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k); returns the input with the ``k`` new channels appended."""

    def __init__(self, in_channels: int, growth_rate: int, num_domains: int) -> None:
        super().__init__()
        inter = 4 * growth_rate
        self.norm1 = DomainBatchNorm2d(in_channels, num_domains)
        self.conv1 = nn.Conv2d(in_channels, inter, 1, bias=False)
        self.norm2 = DomainBatchNorm2d(inter, num_domains)
        self.conv2 = nn.Conv2d(inter, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor, groups: DomainGroups) -> Tensor:
        h = self.conv1(F.relu(self.norm1(x, groups)))
        h = self.conv2(F.relu(self.norm2(h, groups)))
        return torch.cat([x, h], 1)


class DenseBlock(nn.ModuleList):
    """``num_layers`` bottleneck layers; the channels grow by ``growth_rate`` per layer."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, num_domains: int) -> None:
        super().__init__(BottleneckLayer(in_channels + i * growth_rate, growth_rate, num_domains)
                         for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor, groups: DomainGroups) -> Tensor:
        for layer in self:
            x = layer(x, groups)
        return x


class Transition(nn.Module):
    """BN-ReLU-Conv1x1 (channel compression) and 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, num_domains: int) -> None:
        super().__init__()
        self.norm = DomainBatchNorm2d(in_channels, num_domains)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor, groups: DomainGroups) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.norm(x, groups))), 2)


class DenseNetBC(nn.Module):
    """The DenseNet-BC trunk for 32x32 images, up to the output of the last dense block (no final BN).

    Args:
        depth: total depth; ``(depth - 4)`` must be a positive multiple of 6 (3 blocks of ``(depth - 4) / 6``
            bottleneck layers, each two convolutions). 100 in the paper; 10 gives one layer per block.
        growth_rate: ``k`` (12 in the paper).
        compression: channel factor of the transitions (0.5: "C" of DenseNet-BC).
        num_domains: number of batch-norm parameter sets.
        in_channels: image channels.
    """

    def __init__(self, depth: int = 100, growth_rate: int = 12, compression: float = 0.5, num_domains: int = 2,
                 in_channels: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f'DenseNet-BC depth must be 6n + 4 with n >= 1 (10, 16, 22, ..., 100), got {depth}')
        if growth_rate < 1:
            raise ValueError(f'growth_rate must be >= 1, got {growth_rate}')
        if not 0.0 < compression <= 1.0:
            raise ValueError(f'compression must lie in (0, 1], got {compression}')
        n = (depth - 4) // 6
        channels = 2 * growth_rate
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for b in range(3):
            block = DenseBlock(n, channels, growth_rate, num_domains)
            self.blocks.append(block)
            channels = block.out_channels
            if b < 2:
                out = int(channels * compression)
                self.transitions.append(Transition(channels, out, num_domains))
                channels = out
        self.out_channels = channels
        self.depth, self.growth_rate, self.compression = depth, growth_rate, compression

    def forward(self, x: Tensor, groups: DomainGroups) -> Tensor:
        x = self.stem(x)
        for b, block in enumerate(self.blocks):
            x = block(x, groups)
            if b < len(self.transitions):
                x = self.transitions[b](x, groups)
        return x


# ---------------------------------------------------------------------------------------------------------------
# The mmengine model.
# ---------------------------------------------------------------------------------------------------------------
@MODELS.register_module()
class DenseNetTransfer(BaseModel):
    """DenseNet-BC with per-domain batch norm and one classification head per domain.

    ``forward(inputs, data_samples, mode)`` with ``inputs`` float ``[B, 3, 32, 32]`` (the data preprocessor divides
    the uint8 images by 256) and ``data_samples = dict(domain=int64 [B], gt_label=int64 [B])`` as built by
    :func:`graddrop_mtl.datasets.cifar_transfer.transfer_collate`:

    * ``'loss'``: ``{'loss_imagenet': ..., 'loss_cifar': ...}`` (one ``loss_<domain>`` per domain, in the order of
      ``domains``), the mean cross-entropy over that domain's rows. Every domain must be in the batch.
    * ``'predict'``: one dict per sample, in batch order: ``logits`` (of its domain's head), ``pred_label``,
      ``gt_label`` (when given), ``domain``.
    * ``'tensor'``: ``{domain name: logits of that domain's rows}`` for the domains present.

    Args:
        depth, growth_rate, compression: of the trunk, see :class:`DenseNetBC`.
        domains: domain names in domain-id order (``('imagenet', 'cifar')``: ImageNet rows carry id 0).
        num_classes: classes per domain, same order (1000 ImageNet, 100 CIFAR-100).
        data_preprocessor: default ``ImgDataPreprocessor`` with mean 0 and std 256 (images divided by 256).
        init_cfg: as for ``BaseModel``.
    """

    def __init__(self, depth: int = 100, growth_rate: int = 12, compression: float = 0.5,
                 domains: Sequence[str] = ('imagenet', 'cifar'), num_classes: Sequence[int] = (1000, 100),
                 data_preprocessor: Mapping[str, Any] | None = None, init_cfg: Any = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='ImgDataPreprocessor', mean=[0.0, 0.0, 0.0], std=[256.0, 256.0, 256.0])
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.domains = tuple(domains)
        if len(self.domains) != len(num_classes) or not self.domains or len(set(self.domains)) != len(self.domains):
            raise ValueError(f'domains {self.domains} and num_classes {tuple(num_classes)} must be non-empty, of '
                             'equal length, with distinct names')
        self.num_classes = tuple(int(c) for c in num_classes)
        self.backbone = DenseNetBC(depth, growth_rate, compression, num_domains=len(self.domains))
        channels = self.backbone.out_channels
        self.final_norm = DomainBatchNorm2d(channels, len(self.domains))
        self.heads = nn.ModuleDict({name: nn.Linear(channels, c) for name, c in zip(self.domains, self.num_classes)})
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def domain_groups(self, data_samples: Mapping[str, Tensor] | None, batch_size: int) -> DomainGroups:
        if data_samples is None or 'domain' not in data_samples:
            raise ValueError('DenseNetTransfer needs data_samples=dict(domain=int64 [B], ...) giving each row\'s '
                             f'domain id (0..{len(self.domains) - 1} for {self.domains})')
        ids = torch.as_tensor(data_samples['domain']).reshape(-1)
        if ids.numel() != batch_size:
            raise ValueError(f'{ids.numel()} domain ids for a batch of {batch_size} images')
        return DomainGroups.from_ids(ids, len(self.domains))

    def extract_feat(self, inputs: Tensor, groups: DomainGroups) -> Tensor:
        """The shared activation: output of the last dense block, ``[B, C, 8, 8]``."""
        return self.backbone(inputs, groups)

    def head_logits(self, feats: Tensor, groups: DomainGroups) -> list[Tensor]:
        """Logits of each present domain's rows (in ``groups.domains`` order) from the shared activation."""
        pooled = F.adaptive_avg_pool2d(F.relu(self.final_norm(feats, groups)), 1).flatten(1)
        return [self.heads[self.domains[d]](part) for d, part in zip(groups.domains, groups.split(pooled))]

    def forward(self, inputs: Tensor, data_samples: Mapping[str, Tensor] | None = None,
                mode: str = 'tensor') -> Any:
        if inputs.dim() != 4:
            raise ValueError(f'inputs must be [B, C, H, W], got shape {tuple(inputs.shape)}')
        groups = self.domain_groups(data_samples, inputs.shape[0])
        logits = self.head_logits(self.extract_feat(inputs, groups), groups)
        if mode == 'tensor':
            return {self.domains[d]: lg for d, lg in zip(groups.domains, logits)}
        if mode == 'loss':
            return self.loss(logits, groups, data_samples)
        if mode == 'predict':
            return self.predict(logits, groups, data_samples)
        raise ValueError(f'invalid mode {mode!r}; expected "loss", "predict" or "tensor"')

    def loss(self, logits: list[Tensor], groups: DomainGroups, data_samples: Mapping[str, Tensor]) -> dict:
        missing = [self.domains[d] for d in range(len(self.domains)) if d not in groups.domains]
        if missing:
            raise ValueError(f'the training batch has no {missing} rows; every batch needs all domains '
                             f'{self.domains} (use PairedTransferDataset with transfer_collate)')
        if 'gt_label' not in data_samples:
            raise ValueError('loss mode needs data_samples["gt_label"]')
        labels = groups.split(torch.as_tensor(data_samples['gt_label']).reshape(-1).to(logits[0].device))
        by_domain = {d: F.cross_entropy(lg, lb) for d, lg, lb in zip(groups.domains, logits, labels)}
        return {f'loss_{name}': by_domain[d] for d, name in enumerate(self.domains)}

    def predict(self, logits: list[Tensor], groups: DomainGroups,
                data_samples: Mapping[str, Tensor]) -> list[dict]:
        gt = data_samples.get('gt_label')
        gts = groups.split(torch.as_tensor(gt).reshape(-1)) if gt is not None else [None] * len(logits)
        per_group = []
        for d, lg, g in zip(groups.domains, logits, gts):
            lg = lg.detach()
            pred = lg.argmax(1)
            per_group.append([dict(logits=lg[i], pred_label=int(pred[i]), domain=d,
                                   **({} if g is None else dict(gt_label=int(g[i]))))
                              for i in range(lg.shape[0])])
        flat = [s for group in per_group for s in group]
        if groups.inverse is None:
            return flat
        return [flat[int(i)] for i in groups.inverse]


__all__ = ['DomainGroups', 'DomainBatchNorm2d', 'DenseNetBC', 'DenseNetTransfer']
