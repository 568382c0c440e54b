"""Checks of the CUDA path that the CPU test suite cannot make (``tools/analysis/gpu_check.sh`` runs them).

    python tools/analysis/gpu_check.py                       # everything, on cuda
    python tools/analysis/gpu_check.py --only methods amp     # some sections
    python tools/analysis/gpu_check.py --device cpu --quick   # the same checks on the CPU (what the tests run)

Sections (each prints ``[ok]`` lines or raises with what failed):

* ``methods``: every method's ``combine`` on the device: finite, the right shape, and, for the deterministic ones,
  equal to the CPU result of the same inputs;
* ``wrapper``: ``MultiTaskOptimWrapper`` on a small convolutional model on the device: every method trains, ``Sum``
  equals plain ``OptimWrapper`` training, the linear heads' per-task gradients equal the loop's;
* ``amp``: float16 autocast with the dynamic loss scaler: an overflow skips the step and halves the scale, and
  training then proceeds;
* ``tf32``: ``task_grad_precision='tf32'`` against ``'ieee'``: the per-task gradients' largest relative error;
* ``nccl``: a world-size-1 NCCL process group, ``MMDistributedDataParallel`` and one step of a stateful method
  through the reducer (cuda only);
* ``bench``: the CelebA net and the reduced PointPillars model (``tools/analysis/benchmark_mtl.py``'s batches) on
  the device: seconds per iteration and ``torch.cuda.max_memory_allocated`` per method, one method at a time.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import socket
import statistics
import sys
import time

import torch
from mmengine.model import BaseModel
from torch import nn

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SECTIONS = ('methods', 'wrapper', 'amp', 'tf32', 'nccl', 'bench')
#: Methods whose result does not depend on random draws (compared with the CPU).
DETERMINISTIC = [dict(type='Sum'), dict(type='GradDrop', leak=1.0), dict(type='MGDA'),
                 dict(type='MGDA', normalization='l2'), dict(type='GradNorm')]
RANDOM = [dict(type='GradDrop'), dict(type='RandomGradDrop'), dict(type='PCGrad'), dict(type='PCGrad', iterative=True),
          dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop'))]


def ok(msg: str) -> None:
    print(f'[ok] {msg}', flush=True)


class ConvMTL(BaseModel):
    """A convolutional trunk read by two 1x1-convolution heads: a classification loss everywhere, three regression
    losses at a few positions (as a detection head)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.conv_cls = nn.Conv2d(width, 2, 1)
        self.conv_reg = nn.Conv2d(width, 3, 1)

    def forward(self, x, y, pos, mode='loss'):
        h = self.trunk(x)
        cls, reg = self.conv_cls(h), self.conv_reg(h)
        losses = {'loss_cls': nn.functional.binary_cross_entropy_with_logits(cls.float(),
                                                                             pos.unsqueeze(1).expand_as(cls))}
        w = pos.unsqueeze(1)
        for k in range(3):
            losses[f'loss_reg{k}'] = (((reg[:, k:k + 1].float() - y[:, k:k + 1]) ** 2) * w).sum() / w.sum().clamp_min(1)
        return losses


class MLPMTL(BaseModel):
    """A dense trunk read by T linear heads: the per-task gradients at the activation are matmuls (what
    ``task_grad_precision`` changes)."""

    def __init__(self, n_tasks: int = 8, width: int = 512):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, width), nn.Tanh())
        self.heads = nn.Linear(width, n_tasks)

    def forward(self, x, y, mode='loss'):
        preds = self.heads(self.trunk(x))
        return {f'loss_{i}': ((preds[:, i] - y[:, i]) ** 2).mean() for i in range(preds.shape[1])}


def conv_data(device, n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, size, size, generator=g) > 0.85).float()
    data = dict(x=torch.randn(n, 3, size, size, generator=g), y=torch.randn(n, 3, size, size, generator=g), pos=pos)
    return {k: v.to(device) for k, v in data.items()}


def wrapper_for(model, method, **kwargs):
    from graddrop_mtl.engine import MultiTaskOptimWrapper
    kwargs.setdefault('linear_heads', ['conv_cls', 'conv_reg'])
    return MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05), method=copy.deepcopy(method),
                                 shared='trunk', seed=3, **kwargs)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------------------------------- sections
def check_methods(device: torch.device, quick: bool) -> None:
    from graddrop_mtl.methods import build_method
    g = torch.Generator().manual_seed(0)
    shape = (5, 8, 16, 12, 12) if not quick else (3, 4, 8, 6, 6)
    grads = torch.randn(*shape, generator=g)
    activation = torch.randn(*shape[1:], generator=g)
    losses = torch.rand(shape[0], generator=g) + 0.5
    for cfg in DETERMINISTIC + RANDOM:
        method = build_method(copy.deepcopy(cfg))
        gen = torch.Generator(device=device).manual_seed(1)
        out = method.combine(grads.to(device), activation=activation.to(device), losses=losses.to(device),
                             generator=gen)
        assert out.shape == grads.shape[1:] and out.device.type == device.type, (cfg, out.shape, out.device)
        assert torch.isfinite(out).all(), cfg
        if cfg in DETERMINISTIC:
            ref = build_method(copy.deepcopy(cfg)).combine(grads, activation=activation, losses=losses,
                                                           generator=torch.Generator().manual_seed(1))
            err = float((out.cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            assert err < 1e-4, f'{cfg}: {device} differs from the CPU by {err:.2e} (relative)'
            ok(f'methods: {cfg} on {device} equals the CPU (relative error {err:.1e})')
        else:
            ok(f'methods: {cfg} on {device}: finite, shape {tuple(out.shape)}')


def check_wrapper(device: torch.device, quick: bool) -> None:
    from mmengine.optim import OptimWrapper
    steps = 2 if quick else 4
    for cfg in DETERMINISTIC + RANDOM + [dict(type='GradPenalty', weight=0.1)]:
        torch.manual_seed(0)
        model = ConvMTL().to(device)
        wrapper = wrapper_for(model, cfg)
        before = params(model)
        for step in range(steps):
            model.train_step(conv_data(device, seed=step), wrapper)
        after = params(model)
        assert all(torch.isfinite(p).all() for p in after), cfg
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), cfg
        ok(f'wrapper: {cfg} trains on {device} (grad_mode {wrapper.grad_mode})')
    torch.manual_seed(0)
    model = ConvMTL().to(device)
    plain = copy.deepcopy(model)
    wrapper = wrapper_for(model, dict(type='Sum'))
    plain_wrapper = OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.05))
    for step in range(steps):
        model.train_step(conv_data(device, seed=step), wrapper)
        plain.train_step(conv_data(device, seed=step), plain_wrapper)
    err = max(float((a - b).abs().max()) for a, b in zip(params(model), params(plain)))
    assert err < 1e-5, f'Sum differs from plain training by {err:.2e} on {device}'
    ok(f'wrapper: Sum equals plain OptimWrapper training on {device} (max difference {err:.1e})')
    torch.manual_seed(0)
    model = ConvMTL().to(device)
    wrapper = wrapper_for(model, dict(type='Sum'))
    with wrapper.optim_context(model):
        model(**conv_data(device))
    cap, wrapper._capture = wrapper._capture, None
    _, task_losses = wrapper._task_losses(cap.losses)
    linear = wrapper._grads('linear', task_losses, cap.detached, cap.head_calls)
    linear = [linear.to_dense()] if hasattr(linear, 'to_dense') else linear
    loop = wrapper._grads('loop', task_losses, cap.detached, cap.head_calls)
    err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(linear, loop))
    assert err < 1e-4, f'linear heads differ from the loop by {err:.2e} on {device}'
    ok(f'wrapper: per-task gradients through the linear heads equal the loop on {device} (relative {err:.1e})')


def check_amp(device: torch.device, quick: bool) -> None:
    torch.manual_seed(0)
    model = ConvMTL().to(device)
    wrapper = wrapper_for(model, dict(type='GradDrop'), amp=dict(dtype='float16', loss_scale='dynamic'))
    data = conv_data(device, seed=0)
    for _ in range(20):     # normal steps until one keeps the scale (the initial 2^16 may overflow at first)
        scale0 = wrapper.loss_scaler.get_scale()
        model.train_step(data, wrapper)
        if wrapper.loss_scaler.get_scale() == scale0:
            break
    scale0 = wrapper.loss_scaler.get_scale()
    before = params(model)
    bad = dict(data, y=data['y'] * 1e6)        # regression gradients ~1e6 x scale: float16 overflows
    model.train_step(bad, wrapper)
    assert all(torch.equal(a, b) for a, b in zip(before, params(model))), 'the overflow step changed parameters'
    assert wrapper.loss_scaler.get_scale() == scale0 / 2, (scale0, wrapper.loss_scaler.get_scale())
    ok(f'amp: float16 overflow on {device}: step skipped, scale {scale0:g} -> {wrapper.loss_scaler.get_scale():g}')
    losses = []
    for _ in range(10 if quick else 30):
        losses.append(float(model.train_step(data, wrapper)['loss'].detach()))
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < losses[0], losses
    ok(f'amp: float16 autocast trains on {device}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, scale '
       f'{wrapper.loss_scaler.get_scale():g}')


def check_tf32(device: torch.device, quick: bool) -> None:
    from graddrop_mtl.engine import MultiTaskOptimWrapper
    precision = 'tf32' if device.type == 'cuda' else 'bf16'
    torch.manual_seed(0)
    model = MLPMTL().to(device)
    g = torch.Generator().manual_seed(0)
    data = dict(x=torch.randn(256, 64, generator=g).to(device), y=torch.randn(256, 8, generator=g).to(device))
    grads = {}
    for p in ('ieee', precision):
        wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05), shared='trunk',
                                        grad_mode='loop', task_grad_precision=p)
        with wrapper.optim_context(model):
            model(**data)
        cap, wrapper._capture = wrapper._capture, None
        _, task_losses = wrapper._task_losses(cap.losses)
        grads[p] = wrapper._per_task_grads(task_losses, cap.detached, cap.head_calls)[0]
    ref = grads['ieee']
    err = float(((grads[precision] - ref).abs().amax(dim=tuple(range(1, ref.dim())))
                 / ref.abs().amax(dim=tuple(range(1, ref.dim()))).clamp_min(1e-30)).max())
    assert err < 5e-2, f'task_grad_precision={precision!r}: largest relative error {err:.2e}'
    ok(f'tf32: task_grad_precision={precision!r} on {device}: per-task gradients within {err:.1e} of ieee '
       f'(relative to each task\'s largest value)')


def check_nccl(device: torch.device, quick: bool) -> None:
    if device.type != 'cuda':
        print('[skip] nccl: needs cuda', flush=True)
        return
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from graddrop_mtl.engine.sync import sum_across_ranks
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('nccl', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        t = torch.arange(4.0, device=device, dtype=torch.float64)
        raw = t.clone()
        dist.all_reduce(raw)
        assert torch.equal(raw, t) and torch.equal(sum_across_ranks(t), t)
        torch.manual_seed(0)
        model = ConvMTL().to(device)
        ddp = MMDistributedDataParallel(module=model, device_ids=[device.index or 0])
        for cfg in (dict(type='GradNorm'), dict(type='GradDrop')):
            wrapper = wrapper_for(model, cfg)
            wrapper.method.set_reducer(sum_across_ranks)      # what a world size > 1 does
            before = params(model)
            for step in range(2):
                ddp.train_step(conv_data(device, seed=step), wrapper)
            assert any(not torch.equal(a, b) for a, b in zip(before, params(model))), cfg
            ok(f'nccl: world size 1 DDP step with {cfg} through the reducer')
    finally:
        dist.destroy_process_group()


def check_bench(device: torch.device, quick: bool, models=('celeba', 'pointpillars')) -> None:
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
    import benchmark_mtl as bm
    from mmengine.optim import OptimWrapper, build_optim_wrapper
    iters, warmup = (2, 1) if quick else (10, 3)
    for name in models:
        model, wrapper_cfg, data = bm.pointpillars() if name == 'pointpillars' else bm.celeba()
        model = model.to(device)
        rows = []
        for label, method in [('plain', None)] + list(bm.METHODS.items()):
            if method is None:
                wrapper = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-4))
            else:
                wrapper = build_optim_wrapper(model, dict(wrapper_cfg, method=method))
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for i in range(warmup + iters):
                start = time.perf_counter()
                model.train_step(data, wrapper)
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else float('nan')
            rows.append((label, statistics.median(times), peak, getattr(wrapper, 'grad_mode', '-')))
        base = dict((r[0], r[1]) for r in rows)['Sum']
        print(f'bench: {name} on {device} ({torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"})'
              f', {iters} timed iterations after {warmup}', flush=True)
        print(f'  {"method":20s} {"s/iter":>9s} {"x Sum":>7s} {"max MiB":>9s}  grad_mode', flush=True)
        for label, t, peak, mode in rows:
            print(f'  {label:20s} {t:9.4f} {t / base:7.2f} {peak:9.1f}  {mode}', flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', help="torch device (default 'cuda'; 'cpu' runs the same checks)")
    p.add_argument('--only', nargs='+', choices=SECTIONS, default=list(SECTIONS), help='sections to run')
    p.add_argument('--quick', action='store_true', help='fewer steps and smaller tensors')
    p.add_argument('--bench-models', nargs='+', choices=['celeba', 'pointpillars'], default=['celeba', 'pointpillars'])
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        p.error(f'--device {args.device}: CUDA is not available in this torch build ({torch.__version__}); '
                'use --device cpu to run the checks on the CPU')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    print(f'torch {torch.__version__}, device {args.device}'
          + (f' ({torch.cuda.get_device_name(args.device)})' if args.device.type == 'cuda' else ''), flush=True)
    for section in SECTIONS:
        if section not in args.only:
            continue
        start = time.perf_counter()
        if section == 'bench':
            check_bench(args.device, args.quick, args.bench_models)
        else:
            globals()[f'check_{section}'](args.device, args.quick)
        print(f'-- {section}: done in {time.perf_counter() - start:.1f} s', flush=True)


if __name__ == '__main__':
    main()
