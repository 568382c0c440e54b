"""Time one training step of every CelebA method config (40 tasks) relative to the baseline.

    python tools/analysis/benchmark_celeba.py [--configs configs/celeba/celeba_*.py] [--iters 10] [--warmup 3]
        [--rounds 3] [--img-size 64] [--threads 1] [--data-root DIR]

For every config: the model (``cfg.model``) and the optim wrapper (``cfg.optim_wrapper``) are built exactly as the
Runner builds them, with the same seed, then ``model.train_step(batch, optim_wrapper)`` - forward, 40 per-task
gradients at the shared activation, the method, one backward, Adam - runs ``--warmup`` untimed steps (the wrapper's
``grad_mode='auto'`` picks loop or batched per-task gradients on its first step) and ``--iters`` timed steps. The
configs are visited ``--rounds`` times in turn (a fresh model each time), so that load changes on a shared machine
spread over all of them; the table gives the median step time over all timed steps, relative to the baseline config
(``celeba_sum.py``) and to GradDrop (``celeba_graddrop.py``). A reference row ``plain OptimWrapper`` trains the
baseline config with mmengine's stock ``OptimWrapper`` (one backward of the summed loss, no per-task gradients), so
the cost of the 40 per-task gradients themselves is visible (``--no-plain`` drops it).

Batches: ``--data-root`` reads the first images of that CelebA-format set's train split; without it, random images
and labels with CelebA's attribute frequencies.
"""
from __future__ import annotations

import argparse
import gc
import glob
import os.path as osp
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import graddrop_mtl  # noqa: E402,F401
from graddrop_mtl.datasets.celeba import CELEBA_POSITIVE_RATES, CelebADataset  # noqa: E402
from graddrop_mtl.engine.memory import keep_freed_memory  # noqa: E402
from graddrop_mtl.registry import MODELS  # noqa: E402

BASELINE, GRADDROP, PLAIN = 'celeba_sum.py', 'celeba_graddrop.py', 'plain OptimWrapper'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Per-step time of the CelebA method configs (40 tasks)')
    parser.add_argument('--configs', nargs='+',
                        default=sorted(p for p in glob.glob(osp.join(ROOT, 'configs', 'celeba', 'celeba_*.py'))
                                       if not p.endswith('celeba_base.py')))
    parser.add_argument('--iters', type=int, default=10, help='timed steps per config and round')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps per config and round')
    parser.add_argument('--rounds', type=int, default=3, help='visits of every config')
    parser.add_argument('--img-size', type=int, default=64, help='square input size (the configs use 64)')
    parser.add_argument('--batch-size', type=int, default=None, help='default: the config\'s (8)')
    parser.add_argument('--threads', type=int, default=1, help='torch intra-op threads')
    parser.add_argument('--data-root', default=None, help='a CelebA-format folder to take the batches from')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-plain', action='store_true', help='skip the plain OptimWrapper reference row')
    return parser.parse_args(argv)


def make_batches(n_batches: int, batch_size: int, img_size: int, data_root: str | None, seed: int) -> list[dict]:
    if data_root:
        ds = CelebADataset(data_root=data_root, split='train', img_size=img_size)
        if len(ds) < batch_size:
            raise ValueError(f'{data_root} has {len(ds)} training images, fewer than the batch size {batch_size}')
        return [pseudo_collate([ds[(b * batch_size + i) % len(ds)] for i in range(batch_size)])
                for b in range(n_batches)]
    g = torch.Generator().manual_seed(seed)
    rates = torch.tensor(CELEBA_POSITIVE_RATES)
    return [dict(inputs=[torch.randint(0, 256, (3, img_size, img_size), dtype=torch.uint8, generator=g)
                         for _ in range(batch_size)],
                 data_samples=dict(gt_label=[(torch.rand(40, generator=g) < rates).float()
                                             for _ in range(batch_size)]))
            for _ in range(n_batches)]


def time_config(cfg: Config, batches: list[dict], warmup: int, iters: int, seed: int) -> tuple[list[float], str]:
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    for i in range(warmup):
        model.train_step(batches[i % len(batches)], wrapper)
    times = []
    for i in range(iters):
        batch = batches[(warmup + i) % len(batches)]
        start = time.perf_counter()
        model.train_step(batch, wrapper)
        times.append(time.perf_counter() - start)
    method = getattr(wrapper, 'method', None)
    mode = 'none' if method is None else 'summed (create_graph)' if method.create_graph else wrapper.grad_mode
    del model, wrapper
    gc.collect()
    return times, mode


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f'freed memory kept for reuse (graddrop_mtl.engine.memory): {keep_freed_memory()}')
    init_default_scope('graddrop_mtl')
    cfgs = {osp.basename(p): Config.fromfile(p) for p in args.configs}
    if BASELINE in cfgs and not args.no_plain:
        plain = cfgs[BASELINE].copy()
        plain.optim_wrapper = dict(type='OptimWrapper', optimizer=cfgs[BASELINE].optim_wrapper.optimizer)
        cfgs[PLAIN] = plain
    batch_size = args.batch_size or next(iter(cfgs.values())).train_dataloader.batch_size
    batches = make_batches(4, batch_size, args.img_size, args.data_root, args.seed)
    times: dict[str, list[float]] = {name: [] for name in cfgs}
    modes: dict[str, str] = {}
    for r in range(args.rounds):
        for name, cfg in cfgs.items():
            t, modes[name] = time_config(cfg, batches, args.warmup, args.iters, args.seed)
            times[name] += t
            print(f'round {r + 1}/{args.rounds} {name}: median {1000 * statistics.median(t):.0f} ms/step',
                  file=sys.stderr, flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    base, gd = med.get(BASELINE), med.get(GRADDROP)
    print(f'\nCelebA, 40 tasks, batch {batch_size}, {args.img_size}x{args.img_size}, {args.threads} thread(s), '
          f'{args.rounds} x {args.iters} timed steps per config (median):\n')
    print('| config | method | per-task grads | ms/step | vs baseline | vs GradDrop |')
    print('|---|---|---|---:|---:|---:|')
    for name, cfg in cfgs.items():
        method = cfg.optim_wrapper.method.type if 'method' in cfg.optim_wrapper else 'Sum (summed-loss backward)'
        if cfg.optim_wrapper.get('clip_grad'):
            method += ' + clip'
        rel_b = f'{med[name] / base:.2f}x' if base else '-'
        rel_g = f'{med[name] / gd:.2f}x' if gd else '-'
        print(f'| {name} | {method} | {modes[name]} | {1000 * med[name]:.0f} | {rel_b} | {rel_g} |')


if __name__ == '__main__':
    main()
