"""Time per training iteration of the CIFAR-100 transfer model (DenseNet-BC, 8 + 8 images) under GradDrop and the
other multitask methods, relative to the baseline.

    python tools/analysis/benchmark_transfer.py [--depth 100] [--growth-rate 12] [--iters 5] [--rounds 3]
        [--threads 2] [--methods plain Sum GradDrop] [--grad-mode loop] [--clock wall|cpu]

Every variant runs mmengine's ``model.train_step`` (data preprocessor, forward, the optim wrapper's update, Adam
step) on the same random batch of 8 ImageNet + 8 CIFAR-100 images:

* ``plain`` - mmengine's ``OptimWrapper``: one ``loss.backward()`` of the summed losses (no multitask wrapper);
* ``Sum`` - ``MultiTaskOptimWrapper`` with the plain sum (the transfer baseline as the configs run it);
* ``GradDrop`` - the default GradDrop config (batch-separated, k = 0.25, leak [1.0, 0.0]);
* ``RandomGradDrop``, ``GradNorm``, ``MGDA``, ``GradPenalty`` - as in ``configs/cifar100_transfer``.

Variants are timed in interleaved rounds (each round times ``--iters`` iterations of every variant after
``--warmup`` untimed ones) and the median seconds per iteration over rounds is reported, with the ratio to
``Sum`` and to ``plain``. ``--clock wall`` (default) measures wall-clock time; on a machine shared with other jobs
``--clock cpu --threads 1`` (CPU time of this process, one thread) is far less noisy.
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import graddrop_mtl  # noqa: E402,F401
from graddrop_mtl.engine.memory import keep_freed_memory  # noqa: E402
from graddrop_mtl.models.densenet import DenseNetTransfer  # noqa: E402

METHODS = {
    'Sum': dict(type='Sum'),
    'GradDrop': dict(type='GradDrop', k=0.25, leak=[1.0, 0.0], batch_separated=True),
    'RandomGradDrop': dict(type='RandomGradDrop', leak=[1.0, 0.0], batch_separated=True),
    'GradNorm': dict(type='GradNorm', alpha=1.5, lr=0.025),
    'MGDA': dict(type='MGDA', normalization='loss+'),
    'GradPenalty': dict(type='GradPenalty', weight=0.01),
}

CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def build_wrapper(model, name: str, grad_mode: str):
    from mmengine.optim import build_optim_wrapper
    optimizer = dict(type='Adam', lr=1e-3, betas=(0.9, 0.999))
    if name == 'plain':
        return build_optim_wrapper(model, dict(type='OptimWrapper', optimizer=optimizer))
    return build_optim_wrapper(model, dict(type='MultiTaskOptimWrapper', optimizer=optimizer, method=METHODS[name],
                                           shared='backbone', tasks=['loss_imagenet', 'loss_cifar'],
                                           grad_mode=grad_mode, seed=0))


def make_batch(per_domain: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2 * per_domain, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.cat([torch.randint(0, 1000, (per_domain,), generator=g),
                        torch.randint(0, 100, (per_domain,), generator=g)])
    domain = torch.tensor([0] * per_domain + [1] * per_domain)
    return dict(inputs=images, data_samples=dict(gt_label=labels, domain=domain))


def benchmark(depth: int = 100, growth_rate: int = 12, methods=('plain', 'Sum', 'GradDrop'), iters: int = 5,
              warmup: int = 2, rounds: int = 3, per_domain: int = 8, grad_mode: str = 'loop',
              threads: int | None = None, clock: str = 'wall') -> dict[str, float]:
    """Median seconds per iteration of every variant (wall-clock or CPU time of this process)."""
    if clock not in CLOCKS:
        raise ValueError(f'clock must be one of {sorted(CLOCKS)}, got {clock!r}')
    timer = CLOCKS[clock]
    if threads:
        torch.set_num_threads(threads)
    unknown = [m for m in methods if m != 'plain' and m not in METHODS]
    if unknown:
        raise ValueError(f'unknown methods {unknown}; choose from {["plain", *METHODS]}')
    torch.manual_seed(0)
    reference = DenseNetTransfer(depth=depth, growth_rate=growth_rate)
    data = make_batch(per_domain)
    runs = {}
    for name in methods:
        model = copy.deepcopy(reference)
        model.train()
        wrapper = build_wrapper(model, name, grad_mode)
        for _ in range(warmup):
            model.train_step(copy.copy(data), wrapper)
        runs[name] = (model, wrapper)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name in methods:
            model, wrapper = runs[name]
            start = timer()
            for _ in range(iters):
                model.train_step(copy.copy(data), wrapper)
            times[name].append((timer() - start) / iters)
    return {name: statistics.median(t) for name, t in times.items()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Time per iteration of the CIFAR-100 transfer model per method')
    p.add_argument('--depth', type=int, default=100)
    p.add_argument('--growth-rate', type=int, default=12)
    p.add_argument('--methods', nargs='+', default=['plain', 'Sum', 'GradDrop'],
                   help=f'variants: plain {" ".join(METHODS)}')
    p.add_argument('--iters', type=int, default=5, help='timed iterations per variant and round')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--per-domain', type=int, default=8, help='images per domain in the batch (8 + 8)')
    p.add_argument('--grad-mode', default='loop', choices=['loop', 'batched', 'auto'],
                   help="the wrapper's per-task gradient mode")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--clock', default='wall', choices=sorted(CLOCKS),
                   help='wall: wall-clock time; cpu: CPU time of this process (robust on a shared machine)')
    return p.parse_args(argv)


def main(argv=None) -> dict[str, float]:
    a = parse_args(argv)
    print(f'freed memory kept for reuse (graddrop_mtl.engine.memory): {keep_freed_memory()}')
    result = benchmark(a.depth, a.growth_rate, a.methods, a.iters, a.warmup, a.rounds, a.per_domain, a.grad_mode,
                       a.threads, a.clock)
    print(f'DenseNet-BC depth {a.depth}, growth {a.growth_rate}, batch {a.per_domain} + {a.per_domain}, '
          f'{torch.get_num_threads()} threads, grad_mode={a.grad_mode}, {a.clock} clock, median of {a.rounds} rounds '
          f'x {a.iters} iters')
    print(f'{"method":<16}{"s/iter":>10}{"vs Sum":>10}{"vs plain":>10}')
    for name, sec in result.items():
        vs_sum = f'{sec / result["Sum"]:.3f}' if 'Sum' in result else '-'
        vs_plain = f'{sec / result["plain"]:.3f}' if 'plain' in result else '-'
        print(f'{name:<16}{sec:>10.4f}{vs_sum:>10}{vs_plain:>10}')
    return result


if __name__ == '__main__':
    main()
