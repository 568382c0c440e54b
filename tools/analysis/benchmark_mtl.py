"""Time per training iteration of every registered multitask method, relative to the ``Sum()`` baseline.

    python tools/analysis/benchmark_mtl.py                      # reduced PointPillars (9 tasks) and CelebA net (40)
    python tools/analysis/benchmark_mtl.py --models pointpillars --iters 5
    python tools/analysis/benchmark_mtl.py --models celeba --celeba-size 218 178   # the stored image size
    python tools/analysis/benchmark_mtl.py --models celeba --stats-interval 10     # statistics every 10 steps
    python tools/analysis/benchmark_mtl.py --models celeba --task-grad-precision ieee   # exact per-task gradients
    python tools/analysis/benchmark_mtl.py --combine            # also our combine() vs TorchJD / LibMTL
                                                                # (tools/analysis/benchmark_combine.py)
    python tools/analysis/benchmark_mtl.py --models pointpillars-full   # the paper's grid and batch: time AND peak
                                                                        # memory, one method per process

Each model is built from its experiment's config and trained with the stock ``train_step`` on a fixed synthetic
batch; one optim wrapper per method is built from the config with only ``method`` changed, and the methods take
turns iteration by iteration. Reported: median wall-clock and process CPU seconds per iteration (after warm-up
iterations), divided by the ``Sum`` baseline through the same wrapper and by ``plain``, mmengine's ``OptimWrapper``
with ``loss.backward()`` (no per-task gradients at all). CPU time is the robust figure on a shared machine. The
methods are every registered one (:data:`METHODS`, from the registry: a method registered later is timed too; MGDA
with ``normalization='loss+'``, ExcessMTL and MoCo per channel as their configs, ``Compose`` as GradNorm +
GradDrop), and the last line says which miss the target of a step within 1.05x of ``Sum``'s.
For the CelebA net a ``(floor)`` row times, in the same turns, the one product every exact per-task method pays
there (the 40 per-task gradients through the first dense layer): its ratio to ``Sum`` is the least any of them
can add to a step.

``pointpillars-full`` is the paper's Waymo PointPillars at full size (the ``waymoD5`` config: 468 x 468 BEV grid,
batch 2, the 384-channel neck output shared by nine tasks) on a synthetic full-range batch (150k points per frame,
30 vehicles). Each method (and ``plain``, mmengine's ``OptimWrapper`` with the config's optimizer and clipping)
runs in its own process, one after the other, so that the peaks do not mix: building the model, ``--warmup`` steps
(the first one is where ``grad_mode='auto'`` decides) and ``--iters`` timed steps. Reported per method: median wall
and CPU seconds per step, the process's peak resident memory (``ru_maxrss``; on a GPU also
``torch.cuda.max_memory_allocated``), the per-task gradient mode, and the ratios to ``Sum`` (time) and ``plain``
(memory) with the targets (peak <= 1.10x plain, GradDrop <= 1.05x Sum).

``--task-grad-precision`` sets the wrappers' ``task_grad_precision`` (the float32 matmul precision of the per-task
gradient pass; ``bf16``, the CelebA configs' choice on the CPU, is fast on CPUs with AMX; ``ieee`` is exact). With a
reduced precision the script also prints, on the benchmark batch, how far the per-task gradients then are from the
exact ones and how often GradDrop (same random draws) keeps the other sign.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from graddrop_mtl.engine.memory import keep_freed_memory  # noqa: E402
from graddrop_mtl.methods import METHODS as REGISTERED  # noqa: E402

#: Settings other than a method's defaults in the rows named after it.
SETTINGS = {
    'MGDA': dict(type='MGDA', normalization='loss+'),
    'GradPenalty': dict(type='GradPenalty', weight=0.01),
    # per-channel state, as their configs (per feature, the state is T times the activation per sample)
    'ExcessMTL': dict(type='ExcessMTL', state_dims=1),
    'MoCo': dict(type='MoCo', state_dims=1),
}
#: Rows that are not one registered method (``Compose`` is timed as GradNorm + GradDrop).
COMPOSED = {
    'GradNorm+GradDrop': dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop')),
}
#: The paper's methods first, then every other registered method by name.
FIRST = ['Sum', 'GradDrop', 'RandomGradDrop', 'PCGrad', 'MGDA', 'GradNorm', 'GradNorm+GradDrop', 'GradPenalty']


#: Issue 23's target: every method's training step on the reduced PointPillars within this factor of ``Sum``'s.
TARGET_VS_SUM = 1.05


def all_methods() -> dict[str, dict]:
    """Label -> method config: every registered method (with :data:`SETTINGS`), and :data:`COMPOSED`."""
    rows = {name: SETTINGS.get(name, dict(type=name)) for name in sorted(REGISTERED) if name != 'Compose'}
    rows.update(COMPOSED)
    order = [m for m in FIRST if m in rows] + [m for m in rows if m not in FIRST]
    return {m: rows[m] for m in order}


METHODS = all_methods()


def pointpillars():
    from mmdet3d.registry import MODELS
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    import graddrop_mtl.det3d.models  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, 'configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'))
    init_default_scope('mmdet3d')
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.rand(20000, 5, generator=g) * torch.tensor([51.2, 51.2, 4, 1, 1])
                      - torch.tensor([25.6, 25.6, 2, 0, 0]))
        s = Det3DDataSample()
        gt = InstanceData()
        centres = torch.rand(8, 2, generator=g) * 40 - 20
        boxes = torch.cat([centres, torch.full((8, 1), -1.0), torch.tensor([[4.5, 2.0, 1.6]]).repeat(8, 1),
                           torch.rand(8, 1, generator=g) * 3], 1)
        gt.bboxes_3d = LiDARInstance3DBoxes(boxes)
        gt.labels_3d = torch.zeros(8, dtype=torch.long)
        s.gt_instances_3d = gt
        s.set_metainfo(dict(box_type_3d=LiDARInstance3DBoxes))
        samples.append(s)
    return model, cfg.optim_wrapper, dict(inputs=dict(points=inputs), data_samples=samples)


#: What ``--models pointpillars-full`` runs, one process each (``plain``: mmengine's ``OptimWrapper``).
FULL_METHODS = ['plain', 'Sum', 'GradDrop', 'PCGrad', 'MGDA', 'GradNorm']
FULL_CONFIG = 'configs/pointpillars_waymo/pointpillars_mtl_sum_waymoD5-car.py'


def pointpillars_full(points_per_frame: int = 150_000, boxes_per_frame: int = 30):
    """The full-size model of :data:`FULL_CONFIG` and a synthetic batch of 2 frames over the full range
    (``[-74.88, 74.88]`` in x and y), vehicles standing on the ground (z = -1 at their bottom)."""
    from mmdet3d.registry import MODELS
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    import graddrop_mtl.det3d.models  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, FULL_CONFIG))
    init_default_scope('mmdet3d')
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(cfg.train_dataloader.batch_size):
        inputs.append(torch.rand(points_per_frame, 5, generator=g) * torch.tensor([149.76, 149.76, 6, 1, 1])
                      - torch.tensor([74.88, 74.88, 2, 0, 0]))
        s = Det3DDataSample()
        gt = InstanceData()
        centres = torch.rand(boxes_per_frame, 2, generator=g) * 140 - 70
        boxes = torch.cat([centres, torch.full((boxes_per_frame, 1), -1.0),
                           torch.tensor([[4.7, 2.1, 1.8]]).repeat(boxes_per_frame, 1),
                           torch.rand(boxes_per_frame, 1, generator=g) * 3], 1)
        gt.bboxes_3d = LiDARInstance3DBoxes(boxes)
        gt.labels_3d = torch.zeros(boxes_per_frame, dtype=torch.long)
        s.gt_instances_3d = gt
        s.set_metainfo(dict(box_type_3d=LiDARInstance3DBoxes))
        samples.append(s)
    return model, cfg.optim_wrapper, dict(inputs=dict(points=inputs), data_samples=samples)


def peak_rss_bytes() -> int:
    """The process's peak resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == 'darwin' else peak * 1024)


def run_one_full(method: str, iters: int, warmup: int, device: str) -> dict:
    """One method at full size in this process: build, ``warmup`` + ``iters`` steps; times and peaks."""
    from mmengine.optim import build_optim_wrapper
    model, wrapper_cfg, data = pointpillars_full()
    if device == 'cuda':
        model = model.cuda()
        torch.cuda.reset_peak_memory_stats()
    if method == 'plain':
        cfg = dict(type='OptimWrapper', optimizer=wrapper_cfg['optimizer'], clip_grad=wrapper_cfg.get('clip_grad'))
    else:
        cfg = dict(wrapper_cfg, method=METHODS[method])
    wrapper = build_optim_wrapper(model, cfg)
    walls, cpus = [], []
    for i in range(warmup + iters):
        if device == 'cuda':
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        model.train_step(data, wrapper)
        if device == 'cuda':
            torch.cuda.synchronize()
        if i >= warmup:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    out = dict(method=method, wall=statistics.median(walls), cpu=statistics.median(cpus),
               peak_rss=peak_rss_bytes(), grad_mode=getattr(wrapper, 'grad_mode', '-'))
    if device == 'cuda':
        out['cuda_peak'] = int(torch.cuda.max_memory_allocated())
    return out


def benchmark_full(args) -> None:
    """``--models pointpillars-full``: every method in its own process, one after the other; the table."""
    cpu = None
    if osp.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), None)
    cpu = cpu or platform.processor()
    methods = [m for m in FULL_METHODS if m == 'plain' or m in args.methods]
    print(f'pointpillars-full ({FULL_CONFIG}, 468 x 468, batch 2): one process per method, {args.warmup} warm-up + '
          f'{args.iters} timed steps, {args.threads} threads, device {args.device}, CPU {cpu}', flush=True)
    rows = []
    for method in methods:
        cmd = [sys.executable, osp.abspath(__file__), '--one-full', method, '--iters', str(args.iters),
               '--warmup', str(args.warmup), '--threads', str(args.threads), '--device', args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result = next((json.loads(line[len('RESULT '):]) for line in proc.stdout.splitlines()
                       if line.startswith('RESULT ')), None)
        if proc.returncode != 0 or result is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            print(f'{method}: failed (exit {proc.returncode}): ' + ' | '.join(tail), flush=True)
            rows.append(dict(method=method, failed=True))
            continue
        print(f"{method}: {result['wall']:.2f} s/step wall, {result['cpu']:.2f} s CPU, peak RSS "
              f"{result['peak_rss'] / 2**30:.2f} GiB, grad mode {result['grad_mode']}", flush=True)
        rows.append(result)
    ok = {r['method']: r for r in rows if not r.get('failed')}
    plain, base = ok.get('plain'), ok.get('Sum')
    cuda = args.device == 'cuda'
    print('\n| method | grad mode | wall s/step | CPU s/step | wall / Sum | CPU / Sum | peak RSS GiB | peak / plain |'
          + (' CUDA peak GiB | CUDA peak / plain |' if cuda else ''))
    print('|---|---|---|---|---|---|---|---|' + ('---|---|' if cuda else ''))
    for r in rows:
        if r.get('failed'):
            print(f"| {r['method']} | failed | | | | | | |")
            continue
        line = (f"| {r['method']} | {r['grad_mode']} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                f"{r['wall'] / base['wall'] if base else float('nan'):.3f} | "
                f"{r['cpu'] / base['cpu'] if base else float('nan'):.3f} | {r['peak_rss'] / 2**30:.2f} | "
                f"{r['peak_rss'] / plain['peak_rss'] if plain else float('nan'):.3f} |")
        if cuda:
            line += (f" {r['cuda_peak'] / 2**30:.2f} | "
                     f"{r['cuda_peak'] / plain['cuda_peak'] if plain else float('nan'):.3f} |")
        print(line)
    if plain and base:
        key = 'cuda_peak' if cuda else 'peak_rss'
        worst = max((r[key] / plain[key], r['method']) for r in ok.values())
        print(f'\ntargets: every peak <= 1.10x plain: worst {worst[1]} {worst[0]:.3f}x -> '
              f"{'met' if worst[0] <= 1.10 else 'NOT met'}", end='')
        if 'GradDrop' in ok:
            t_wall = ok['GradDrop']['wall'] / base['wall']
            t_cpu = ok['GradDrop']['cpu'] / base['cpu']
            print(f'; GradDrop step <= 1.05x Sum: wall {t_wall:.3f}x, CPU {t_cpu:.3f}x -> '
                  f"{'met' if min(t_wall, t_cpu) <= 1.05 else 'NOT met'}", end='')
        print(flush=True)


def celeba(size=(64, 64)):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import graddrop_mtl.models  # noqa: F401
    from graddrop_mtl.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/celeba/celeba_sum.py'))
    init_default_scope('graddrop_mtl')
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, *size, generator=g) * 255).to(torch.uint8) for _ in range(8)]
    from mmengine.structures import BaseDataElement
    samples = []
    for _ in range(8):
        s = BaseDataElement()
        s.set_data(dict(gt_label=(torch.rand(40, generator=g) > 0.5).float()))
        samples.append(s)
    return model, cfg.optim_wrapper, dict(inputs=images, data_samples=samples)


def celeba_task_grad_product(model, data, precision: str | None = None):
    """The floor of every exact per-task method on the CelebA net: the T per-task gradients at the backbone output
    go through the first dense layer's weight, one ``[T * B, 512] x [512, C * 8 * 8]`` product (what the wrapper's
    per-task gradient computes there, batched or through ``linear_heads``). Timed alone, on random head-side
    gradients, at the matmul ``precision`` (see ``MultiTaskOptimWrapper``'s ``task_grad_precision``)."""
    from graddrop_mtl.engine.optim_wrapper import fp32_matmul_precision
    weight = model.head[2][0].weight.detach()                       # DENSE-512 after the pool and the flatten
    g_out = torch.randn(len(model.attributes) * len(data['inputs']), weight.shape[0])

    def product():
        with fp32_matmul_precision('cpu', precision):
            return torch.mm(g_out, weight)
    return product


def task_grad_error(model, wrapper_cfg, data, precision: str) -> str:
    """One forward on the benchmark batch; the per-task gradients exact and at ``precision``; their distance and
    what it does to GradDrop with the same random draws."""
    from mmengine.optim import build_optim_wrapper

    from graddrop_mtl.methods import build_method
    grads = []
    for prec in ('ieee', precision):
        mode = wrapper_cfg.get('grad_mode', 'auto')
        cfg = dict(wrapper_cfg, method=dict(type='Sum'), grad_mode='batched' if mode == 'auto' else mode,
                   task_grad_precision=prec)
        wrapper = build_optim_wrapper(model, cfg)
        torch.manual_seed(0)
        with wrapper.optim_context(model):
            losses = model(**model.data_preprocessor(data, True), mode='loss')
        cap = wrapper._capture
        result = wrapper._per_task_grads(wrapper._task_losses(cap.losses)[1], cap.detached, cap.head_calls)
        grads.append(result.to_dense() if hasattr(result, 'to_dense') else result[0])
        wrapper._capture = None
        del losses
    exact, low = (g.reshape(g.shape[0], -1) for g in grads)
    peak = exact.abs().amax(1).clamp_min(1e-30)
    rel = ((low - exact).abs().amax(1) / peak)
    visible = exact.abs() > 1e-3 * peak[:, None]
    flipped = ((low > 0) != (exact > 0)) & visible

    def graddrop(g, seed=0):
        return build_method(dict(type='GradDrop')).combine(g, generator=torch.Generator().manual_seed(seed))

    def rel_l2(a, b):
        return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()

    outs = [graddrop(exact), graddrop(low)]
    other_sign = ((outs[0] > 0) != (outs[1] > 0)) & (outs[0] != 0) | ((outs[0] == 0) != (outs[1] == 0))
    between_draws = rel_l2(graddrop(exact, 1), outs[0])
    return (f'per-task gradients at task_grad_precision={precision!r} against exact ({exact.shape[0]} tasks, '
            f'{exact.shape[1]} elements): largest error / the task\'s largest value: max {rel.max().item():.2e}, '
            f'median {rel.median().item():.2e}; elements above 1e-3 of it with the other sign '
            f'{flipped.sum().item() / max(1, visible.sum().item()):.2e}; GradDrop with the same draws: '
            f'{other_sign.float().mean().item():.2e} of the elements keep another side, relative L2 difference '
            f'{rel_l2(outs[1], outs[0]):.2e} (exact GradDrop with other draws: {between_draws:.2e}); '
            f'sum over the tasks: relative L2 difference {rel_l2(low.sum(0), exact.sum(0)):.2e}')


def time_methods(model, wrapper_cfg, data, methods: dict, iters: int, warmup: int, extra: dict | None = None):
    """Median wall and CPU seconds per iteration of every method (``None``: the plain ``OptimWrapper``), the methods
    taking turns iteration by iteration so that a change in the machine's load affects them all alike. ``extra``:
    more labelled callables timed in the same turns (e.g. a cost floor). A method whose wrapper cannot be built or
    whose step raises drops out with its error (``failures``, printed), so that one failure does not end the run."""
    from mmengine.optim import OptimWrapper, build_optim_wrapper
    wrappers, failures = {}, {}
    for label, method in methods.items():
        if method is None:
            wrappers[label] = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-4))
            continue
        try:
            wrappers[label] = build_optim_wrapper(model, dict(wrapper_cfg, method=method))
        except Exception as err:   # reported with the table
            failures[label] = f'{type(err).__name__}: {err}'
    calls = {label: (lambda w=wrapper: model.train_step(data, w)) for label, wrapper in wrappers.items()}
    calls.update(extra or {})
    walls = {label: [] for label in calls}
    cpus = {label: [] for label in calls}
    for i in range(warmup + iters):
        for label, call in list(calls.items()):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                call()
            except Exception as err:
                failures[label] = f'{type(err).__name__}: {err}'
                del calls[label]
                continue
            if i >= warmup:
                walls[label].append(time.perf_counter() - w0)
                cpus[label].append(time.process_time() - c0)
    for label, err in failures.items():
        print(f'{label}: failed: {err}', flush=True)
    return {label: (statistics.median(walls[label]), statistics.median(cpus[label]),
                    getattr(wrappers.get(label), 'grad_mode', '-')) for label in calls}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['pointpillars', 'celeba'],
                   choices=['pointpillars', 'celeba', 'pointpillars-full'])
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS),
                   help='the methods to time (Sum, the baseline, always runs; a few at a time keep the memory low: '
                        'each wrapper holds its own optimizer state)')
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--celeba-size', type=int, nargs=2, default=(64, 64), metavar=('H', 'W'),
                   help="CelebA input size (the config's 64 64; 218 178 is the stored images' size)")
    p.add_argument('--stats-interval', type=int, default=None, metavar='N',
                   help="the wrappers' stats_interval (default: the config's; CelebA computes the statistics every "
                        'step, PointPillars every 10): what the logged statistics cost')
    p.add_argument('--task-grad-precision', default=None, choices=['ieee', 'tf32', 'bf16'],
                   help="the wrappers' task_grad_precision (default: the config's; the CelebA configs' is bf16 on "
                        'the CPU, ieee gives exact per-task gradients)')
    p.add_argument('--combine', action='store_true', help='also run benchmark_combine.py (peers)')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'], help='pointpillars-full only')
    p.add_argument('--one-full', default=None, choices=FULL_METHODS, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()
    if args.one_full:
        print('RESULT ' + json.dumps(run_one_full(args.one_full, args.iters, args.warmup, args.device)), flush=True)
        return
    print(f'freed memory kept for reuse (graddrop_mtl.engine.memory): {kept}')
    for name in args.models:
        if name == 'pointpillars-full':
            benchmark_full(args)
            continue
        model, wrapper_cfg, data = pointpillars() if name == 'pointpillars' else celeba(tuple(args.celeba_size))
        if args.stats_interval is not None:
            wrapper_cfg = dict(wrapper_cfg, stats_interval=args.stats_interval)
        if args.task_grad_precision is not None:
            wrapper_cfg = dict(wrapper_cfg, task_grad_precision=args.task_grad_precision)
        from graddrop_mtl.engine.optim_wrapper import precision_for
        precision = precision_for('cpu', wrapper_cfg.get('task_grad_precision'))
        if precision not in (None, 'ieee'):
            print(f'\n{name}: {task_grad_error(model, wrapper_cfg, data, precision)}')
        extra = {}
        if name == 'celeba':
            extra['(floor) per-task gradient product alone'] = celeba_task_grad_product(model, data)
            if precision not in (None, 'ieee'):
                extra[f'(floor) the product at {precision}'] = celeba_task_grad_product(model, data, precision)
        labels = ['Sum'] + [m for m in args.methods if m != 'Sum']
        timed = time_methods(model, wrapper_cfg, data, {'plain OptimWrapper': None, **{m: METHODS[m] for m in labels}},
                             args.iters, args.warmup, extra)
        rows = [(label, *values) for label, values in timed.items()]
        base = next(r for r in rows if r[0] == 'Sum')
        print(f'\n{name}: {args.iters} timed iterations after {args.warmup} warm-up, {args.threads} threads, '
              f"statistics every {wrapper_cfg.get('stats_interval', 1)} steps, per-task gradient matmuls at "
              f"{precision or 'the global precision'}")
        plain = rows[0]
        print('| method | grad mode | wall s/iter | CPU s/iter | wall / Sum | CPU / Sum | wall / plain | CPU / plain |')
        print('|---|---|---|---|---|---|---|---|')
        for label, wall, cpu, mode in rows:
            print(f'| {label} | {mode} | {wall:.3f} | {cpu:.3f} | {wall / base[1]:.2f} | {cpu / base[2]:.2f} '
                  f'| {wall / plain[1]:.2f} | {cpu / plain[2]:.2f} |')
        over = [f'{label} {cpu / base[2]:.2f}x' for label, _, cpu, _ in rows
                if label in METHODS and cpu / base[2] > TARGET_VS_SUM]
        print(f'target: every method\'s step <= {TARGET_VS_SUM}x Sum (CPU time): '
              + (f'NOT met by {", ".join(over)}' if over else 'met'))
        sys.stdout.flush()
    if args.combine:
        import runpy
        sys.argv = [osp.join(ROOT, 'tools/analysis/benchmark_combine.py')]
        runpy.run_path(sys.argv[0], run_name='__main__')


if __name__ == '__main__':
    main()
