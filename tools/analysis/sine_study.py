"""Run the sine experiment for every method and write its results table (markdown + CSV) and plots.

    python tools/analysis/sine_study.py                       # all methods, 200 replicas x 10k steps, k sweep
    python tools/analysis/sine_study.py --overlap 0 0.5 0.9   # the rebuttal's overlapping-sines study
    python tools/analysis/sine_study.py --iters 500 --replicas 20 --methods sum graddrop   # a quick look

Every run is ``tools/train.py configs/sine/sine_<method>.py`` (same Runner, wrapper and registry as every other
experiment), ``--jobs`` at a time. A line is printed when a run starts and ends, and every
``--progress-every`` seconds with the iteration each running job has reached (from its log). Outputs in ``--out``
(default ``work_dirs/sine_study``): ``results.md``, ``results.csv``, ``landscape.png`` (the total loss and where each
method's replicas end), ``curves.png`` (mean total loss over training).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from graddrop_mtl.models.sine import PAPER_SINES, global_minimum, sine_frequencies, total_loss_np  # noqa: E402

METHODS = {
    'sum': ('SGD (Sum)', []),
    'graddrop': ('GradDrop (k=1)', []),
    'random_graddrop': ('Random GradDrop', []),
    'pcgrad': ('PCGrad', []),
    'iterative_pcgrad': ('Iterative PCGrad', []),
    'mgda': ('MGDA', []),
    'gradnorm': ('GradNorm', []),
}
TOL = 1e-3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default=osp.join('work_dirs', 'sine_study'))
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--k-sweep', nargs='*', type=float, default=[0.25, 0.5, 0.75],
                   help='extra GradDrop runs with these k (activation slopes)')
    p.add_argument('--overlap', nargs='+', type=float, default=[0.0],
                   help='frequency overlap values (0 = the paper; see SineMTLModel)')
    p.add_argument('--iters', type=int, default=10000)
    p.add_argument('--replicas', type=int, default=200)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--python', default=sys.executable)
    p.add_argument('--progress-every', type=float, default=30.0,
                   help='seconds between progress lines while runs are going (default 30)')
    return p.parse_args()


_PRINT_LOCK = threading.Lock()
_ITER_RE = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')


def progress(msg: str) -> None:
    with _PRINT_LOCK:
        print(f'[sine_study {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def last_iteration(log_path: str) -> str:
    """``'i/n'`` of the last training log line of a run (``'starting'`` before the first one)."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            tail = f.read().decode('utf-8', 'replace')
    except OSError:
        return 'starting'
    found = _ITER_RE.findall(tail)
    return f'{found[-1][0]}/{found[-1][1]}' if found else 'starting'


def run_one(args, key: str, config: str, overlap: float, extra: list[str], label: str = '') -> str:
    work_dir = osp.join(args.out, f'overlap{overlap:g}', key)
    done = osp.join(work_dir, 'sine_trajectory.npz')
    os.makedirs(work_dir, exist_ok=True)
    cmd = [args.python, osp.join(ROOT, 'tools', 'train.py'), osp.join(ROOT, 'configs', 'sine', config),
           '--work-dir', work_dir, '--cfg-options', f'train_cfg.max_iters={args.iters}',
           f'train_cfg.val_interval={args.iters}', f'default_hooks.checkpoint.interval={args.iters}',
           f'default_hooks.logger.interval={max(1, args.iters // 10)}', f'model.num_replicas={args.replicas}',
           f'model.init_seed={args.seed}', f'optim_wrapper.seed={args.seed}', f'model.overlap={overlap}',
           f'val_evaluator.overlap={overlap}', f'test_evaluator.overlap={overlap}', *extra]
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=ROOT)
    log_path = osp.join(work_dir, 'study_run.log')
    name = f'{label or key} (overlap {overlap:g})'
    progress(f'{name}: started, log {log_path}')
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                proc.wait(timeout=args.progress_every)
                break
            except subprocess.TimeoutExpired:
                progress(f'{name}: iteration {last_iteration(log_path)}, {time.time() - start:.0f} s')
    if proc.returncode != 0 or not osp.isfile(done):
        raise RuntimeError(f'{key} (overlap {overlap}) failed; see {log_path}')
    final = np.load(done)['total_loss'][-1]
    progress(f'{name}: done in {time.time() - start:.0f} s, final mean total loss {final.mean():.4f}')
    return done


def steps_to_converge(history: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Per replica: the first step after which the total loss stays within ``tol`` of its final value."""
    far = np.abs(history - history[-1]) >= tol                   # [steps + 1, R]
    last_far = np.where(far.any(0), far.shape[0] - 1 - np.argmax(far[::-1], axis=0), -1)
    return last_far + 1


def summarise(label: str, path: str, l_star: float) -> dict:
    data = np.load(path)
    hist = data['total_loss']
    final = hist[-1]
    steps = steps_to_converge(hist)
    return dict(method=label, final_mean=final.mean(), final_std=final.std(), at_min=np.mean(final - l_star < TOL),
                steps_mean=steps.mean(), steps_median=float(np.median(steps)), weights=data['weights'],
                curve=hist.mean(1))


def write_outputs(args, results: dict, minima: dict, elapsed: float) -> None:
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for overlap, res in results.items():
        for r in res:
            rows.append([f'{overlap:g}', r['method'], f'{r["final_mean"]:.4f}', f'{r["final_std"]:.4f}',
                         f'{100 * r["at_min"]:.1f}', f'{r["steps_mean"]:.0f}', f'{r["steps_median"]:.0f}'])
    header = ['overlap', 'method', 'final total loss (mean)', 'std over repeats', f'% within {TOL:g} of global min',
              'steps to converge (mean)', '(median)']
    with open(osp.join(args.out, 'results.csv'), 'w', newline='') as f:
        csv.writer(f).writerows([header] + rows)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    lines.append('')
    lines.append(f'{args.replicas} replicas x {args.iters} steps; global minimum of the total loss on [0, 4pi): '
                 + ', '.join(f'{minima[o][1]:.4f} at w={minima[o][0]:.4f} (overlap {o:g})' for o in minima)
                 + f'; wall time {elapsed:.0f} s.')
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    overlap = next(iter(results))
    freqs = sine_frequencies([a for a, _ in PAPER_SINES], overlap)
    phases = [b for _, b in PAPER_SINES]
    res = results[overlap]
    w = np.linspace(0, 4 * math.pi, 2000)
    fig, axes = plt.subplots(len(res), 1, figsize=(8, 1.6 * len(res)), sharex=True)
    for ax, r in zip(np.atleast_1d(axes), res):
        ax.plot(w, total_loss_np(w, freqs, phases), color='0.6', lw=1)
        end = np.mod(r['weights'], 4 * math.pi)
        ax.scatter(end, total_loss_np(end, freqs, phases), s=12, alpha=0.5, color='C3')
        ax.set_ylabel('total loss')
        ax.set_title(f'{r["method"]}: {100 * r["at_min"]:.0f}% at the global minimum', fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel('w (mod 4 pi)')
    fig.tight_layout()
    fig.savefig(osp.join(args.out, 'landscape.png'), dpi=90)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in res:
        ax.plot(np.arange(1, len(r['curve']) + 1), r['curve'], label=r['method'])
    ax.axhline(minima[overlap][1], color='k', ls=':', label='global minimum')
    ax.set_xscale('log')
    ax.set_xlabel('step')
    ax.set_ylabel(f'mean total loss over {args.replicas} replicas')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(osp.join(args.out, 'curves.png'), dpi=90)


def main():
    args = parse_args()
    start = time.time()
    jobs = []
    for overlap in args.overlap:
        for m in args.methods:
            jobs.append((overlap, METHODS[m][0], f'sine_{m}.py', m, []))
        for k in args.k_sweep:
            jobs.append((overlap, f'GradDrop (k={k:g})', 'sine_graddrop.py', f'graddrop_k{k:g}',
                         [f'optim_wrapper.method.k={k}']))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        progress(f'{len(jobs)} runs x {args.replicas} replicas x {args.iters} steps, {args.jobs} at a time')
        futures = [pool.submit(run_one, args, key, cfg, overlap, extra, label)
                   for overlap, label, cfg, key, extra in jobs]
        paths = [f.result() for f in futures]
    minima = {o: global_minimum(sine_frequencies([a for a, _ in PAPER_SINES], o), [b for _, b in PAPER_SINES],
                                0.0, 4 * math.pi) for o in args.overlap}
    results: dict = {o: [] for o in args.overlap}
    for (overlap, label, _, _, _), path in zip(jobs, paths):
        results[overlap].append(summarise(label, path, minima[overlap][1]))
    elapsed = time.time() - start
    write_outputs(args, results, minima, elapsed)
    print(f'sine study: {len(jobs)} runs x {args.replicas} replicas x {args.iters} steps in {elapsed:.1f} s '
          f'({args.jobs} parallel jobs); outputs in {args.out}')


if __name__ == '__main__':
    main()
