"""Compare the multitask methods of one experiment side by side, over several seeds, on its quick setup.

    python tools/analysis/compare_methods.py EXPERIMENT [--methods M ...] [--seeds N] [--jobs J] [--iters N]

EXPERIMENT is ``sine``, ``celeba``, ``transfer`` or ``pointpillars``. Every run is ``tools/train.py`` on the quick
config ``configs/<experiment>/quick/<prefix><method>.py`` with ``--cfg-options randomness.seed=S`` (seeds
``0 .. N-1``), followed by ``tools/test.py`` on its best checkpoint (the last one for PointPillars; the sine runs
need no test: their trajectory file holds the result). ``--jobs`` runs go at a time. A run that has finished (its
``result.json`` exists for the same settings) is not run again, so an interrupted comparison resumes where it
stopped. A missing synthetic data set is written first, with the command its quick config documents.
``--report-only`` runs nothing and writes the table and plot from the runs finished so far (each method with the
seeds it has; the table's header lists the runs left out), e.g. while a long comparison is still going.

Outputs: ``work_dirs/compare/results/<experiment>.md`` and ``.csv`` (``--results-dir``; the committed tables in
``docs/results`` are written with ``--results-dir docs/results``): per method the mean +- standard deviation
over seeds of each metric, the time per training step relative to the baseline, and per metric whether the
difference to the baseline exceeds the seed spread (``|mean - mean_baseline| > std + std_baseline``, i.e. the two
+-1 std bands do not overlap; "n/a" with one seed); and ``<experiment>.png``: the experiment's curve metric against
the training step, per method, the mean over seeds with the band min..max over seeds shaded. Run logs and
checkpoints stay in ``--work-dir`` (default ``work_dirs/compare/<experiment>``).

Metrics: sine (as ``tools/analysis/sine_study.py``): final total loss (mean over the replicas), % of replicas within
1e-3 of the global minimum, steps to converge; CelebA: test error rate, F1max, test loss; transfer: CIFAR-100 test
top-1 error (and test cross-entropy); PointPillars: LEVEL_1/LEVEL_2 vehicle 3D and BEV AP and APH.
The paper's per-experiment settings are the quick configs' (MGDA's 100x lower learning rate on CelebA; the Table 5
leak sweep on transfer). ``transfer --control`` runs on the control set whose source classes share nothing with the
target classes (written to ``<experiment>_control.*``).
"""
from __future__ import annotations

import argparse
import csv
import glob
import importlib.util
import json
import math
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULT_FILE = 'result.json'


def _load_tool(name: str):
    """Import ``tools/<name>.py`` or ``tools/analysis/<name>.py`` as a module (tools are scripts, not a package)."""
    for path in (osp.join(ROOT, 'tools', f'{name}.py'), osp.join(ROOT, 'tools', 'analysis', f'{name}.py')):
        if osp.isfile(path):
            spec = importlib.util.spec_from_file_location(f'_graddrop_tool_{name}', path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f'no tool named {name!r} under {osp.join(ROOT, "tools")}')


# ------------------------------------------------------------------------------------------------ experiments
@dataclass
class Metric:
    key: str              # key in the run's metrics
    label: str            # column name
    lower_is_better: bool = True
    scale: float = 1.0    # multiply for display (e.g. AP fractions -> %)
    judged: bool = True   # compared with the baseline (False: a description, neither better nor worse)


@dataclass
class Experiment:
    name: str
    config_dir: str                     # relative to ROOT
    prefix: str                         # config file name prefix
    methods: dict[str, str]             # method key -> label, in table order; the paper's comparison
    extra_methods: dict[str, str]       # configs that exist but the paper does not compare there
    baseline: str
    metrics: list[Metric]
    curve_key: str                      # metric plotted against the step
    curve_label: str
    data_root: str | None = None        # relative to ROOT; written by make_data when missing
    make_data: Callable[[str], None] | None = None
    test: bool = True                   # run tools/test.py after training
    best_checkpoint: bool = True        # test the best checkpoint (else the last)
    seed_options: Callable[[int], list[str]] = field(default=lambda s: [])
    data_options: Callable[[str], list[str]] = field(default=lambda root: [])

    def config(self, method: str) -> str:
        return osp.join(ROOT, self.config_dir, f'{self.prefix}{method}.py')


def _make_celeba(root: str) -> None:
    _run_checked([sys.executable, osp.join(ROOT, 'tools', 'make_synthetic_celeba.py'), '--out-dir', root,
                  '--num-images', '4000', '--seed', '0', '--size', '32'], 'writing the synthetic CelebA set')


def _make_transfer(relation: str) -> Callable[[str], None]:
    def make(root: str) -> None:
        _run_checked([sys.executable, osp.join(ROOT, 'tools', 'make_synthetic_transfer.py'), '--out-dir', root,
                      '--seed', '0', '--relation', relation], 'writing the synthetic transfer sets')
    return make


def _make_waymo(root: str) -> None:
    demo = _load_tool('demo')
    demo.make_demo_data(osp.dirname(root.rstrip('/')), python=sys.executable)


def _transfer_data_options(root: str) -> list[str]:
    root = root.rstrip('/') + '/'
    return [f'train_dataloader.dataset.source.data_root={root}', f'train_dataloader.dataset.target.data_root={root}',
            f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}']


TRANSFER_METHODS = {'sum': 'Baseline (sum)', 'graddrop': 'GradDrop (leak [1, 0])',
                    'random_graddrop': 'Random GradDrop', 'gradclip': 'Gradient clipping',
                    'graddrop_gradclip': 'GradDrop + clipping', 'gradpenalty': 'Gradient penalty',
                    'graddrop_leak_s000_t100': 'GradDrop leak [0, 1]',
                    'graddrop_leak_s025_t075': 'GradDrop leak [0.25, 0.75]',
                    'graddrop_leak_s050_t050': 'GradDrop leak [0.5, 0.5]',
                    'graddrop_leak_s075_t025': 'GradDrop leak [0.75, 0.25]'}

_WAYMO = 'Waymo metric/Vehicle/'


def experiments() -> dict[str, Experiment]:
    return {
        'sine': Experiment(
            'sine', 'configs/sine/quick', 'sine_quick_',
            methods={'sum': 'SGD (Sum)', 'graddrop': 'GradDrop (k=1)', 'random_graddrop': 'Random GradDrop',
                     'pcgrad': 'PCGrad', 'iterative_pcgrad': 'Iterative PCGrad', 'mgda': 'MGDA',
                     'gradnorm': 'GradNorm'},
            extra_methods={}, baseline='sum',
            metrics=[Metric('final_loss', 'final total loss'), Metric('at_min', '% at global min', False),
                     Metric('steps', 'steps to converge', judged=False)],
            curve_key='total_loss', curve_label='mean total loss over the replicas', test=False,
            seed_options=lambda s: [f'model.init_seed={s}']),
        'celeba': Experiment(
            'celeba', 'configs/celeba/quick', 'celeba_quick_',
            methods={'sum': 'Baseline (sum)', 'graddrop': 'GradDrop', 'random_graddrop': 'Random GradDrop',
                     'pcgrad': 'PCGrad', 'mgda': 'MGDA-UB (lr / 100)', 'gradnorm': 'GradNorm',
                     'gradclip': 'Gradient clipping', 'gradpenalty': 'Gradient penalty',
                     'graddrop_gradclip': 'GradDrop + clipping'},
            extra_methods={}, baseline='sum',
            metrics=[Metric('celeba/error_rate', 'test error %'), Metric('celeba/f1max', 'test F1max %', False),
                     Metric('celeba/loss', 'test loss')],
            curve_key='celeba/error_rate', curve_label='validation error rate (%)',
            data_root='data/celeba_synth', make_data=_make_celeba,
            data_options=lambda root: [f'{d}.dataset.data_root={root}' for d in
                                       ('train_dataloader', 'val_dataloader', 'test_dataloader')]),
        'transfer': Experiment(
            'transfer', 'configs/cifar100_transfer/quick', 'transfer_quick_',
            methods=dict(TRANSFER_METHODS),
            extra_methods={'graddrop_leak_s100_t000': 'GradDrop leak [1, 0] (= GradDrop)', 'mgda': 'MGDA-UB',
                           'gradnorm': 'GradNorm'}, baseline='sum',
            metrics=[Metric('cifar100/top1_error', 'test top-1 error %'),
                     Metric('cifar100/cross_entropy', 'test loss')],
            curve_key='cifar100/top1_error', curve_label='CIFAR-100 validation top-1 error (%)',
            data_root='data/cifar100_transfer_synth', make_data=_make_transfer('shared'),
            data_options=_transfer_data_options),
        'pointpillars': Experiment(
            'pointpillars', 'configs/pointpillars_waymo/quick', 'pointpillars_quick_',
            methods={'sum': 'Baseline (sum)', 'graddrop': 'GradDrop', 'random_graddrop': 'Random GradDrop',
                     'pcgrad': 'PCGrad', 'mgda': 'MGDA-UB', 'gradnorm': 'GradNorm',
                     'gradnorm_graddrop': 'GradNorm + GradDrop', 'mgda_graddrop': 'MGDA + GradDrop'},
            extra_methods={}, baseline='sum',
            metrics=[Metric(_WAYMO + k, k.replace(' m', ' '), False, 100.0) for k in
                     ('L1 mAP', 'L1 mAPH', 'L1 BEV mAP', 'L1 BEV mAPH', 'L2 mAP', 'L2 mAPH', 'L2 BEV mAP',
                      'L2 BEV mAPH')],
            curve_key=_WAYMO + 'L1 mAP', curve_label='LEVEL_1 vehicle 3D AP (validation)',
            data_root='data/waymo_quick/kitti_format', make_data=_make_waymo, best_checkpoint=False,
            data_options=lambda root: _waymo_data_options(root)),
    }


def _waymo_data_options(root: str) -> list[str]:
    root = root.rstrip('/') + '/'
    return [f'data_root={root}', f'train_dataloader.dataset.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}',
            f'val_evaluator.ann_file={root}waymo_infos_val.pkl', f'test_evaluator.ann_file={root}waymo_infos_val.pkl']


def iteration_options(exp: Experiment, iters: int) -> list[str]:
    """``--cfg-options`` that shorten (or lengthen) a quick run to ``iters`` steps, with its intervals."""
    if iters < 1:
        raise ValueError(f'--iters must be >= 1, got {iters}')
    if exp.name == 'sine':
        return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                f'default_hooks.checkpoint.interval={iters}',
                f'default_hooks.logger.interval={max(1, min(500, iters // 10))}']
    val = max(1, min(100 if exp.name != 'pointpillars' else 200, iters // 2 if iters >= 2 else 1))
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={val}',
            f'default_hooks.checkpoint.interval={val}', f'default_hooks.logger.interval={max(1, min(20, val))}']
    if exp.name == 'pointpillars':
        warm = min(20, max(1, iters // 4))
        opts += [f'param_scheduler.0.end={warm}', f'param_scheduler.1.begin={warm}', f'param_scheduler.1.end={iters}',
                 f'param_scheduler.1.T_max={max(1, iters - warm)}']
    return opts


# ------------------------------------------------------------------------------------------------ running
_print_lock = threading.Lock()


def progress(msg: str) -> None:
    with _print_lock:
        print(f'[compare {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def _run_checked(cmd: list[str], what: str, log: str | None = None, env: dict | None = None) -> None:
    env = env or dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if log is None:
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
    else:
        with open(log, 'w') as f:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        where = f'; see {log}' if log else ''
        raise RuntimeError(f'{what} failed (exit {proc.returncode}): {" ".join(cmd)}{where}')


def read_scalars(work_dir: str) -> list[dict]:
    """The lines of the newest ``<work_dir>/<timestamp>/vis_data/scalars.json`` (empty if none)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_test_metrics(work_dir: str) -> dict[str, float]:
    """The test metrics that mmengine's LoggerHook dumps to ``<work_dir>/<timestamp>/<timestamp>.json``."""
    files = sorted(p for p in glob.glob(osp.join(work_dir, '*', '*.json'))
                   if re.fullmatch(r'\d{8}_\d{6}\.json', osp.basename(p)))
    if not files:
        raise RuntimeError(f'no test metrics (<timestamp>.json) under {work_dir}')
    with open(files[-1]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return {k: float(v) for k, v in lines[-1].items()
            if isinstance(v, (int, float)) and k not in ('time', 'data_time', 'step', 'iter', 'epoch')}


def curve_from_scalars(scalars: list[dict], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of the validation metric ``key``. LoggerHook logs validation metrics by epoch by default
    (step 0 throughout an iteration-based run), so a validation line takes the step of the training line before it
    when that is later."""
    steps, values, last_train = [], [], 0
    for s in scalars:
        if key in s:
            steps.append(max(int(s.get('step', 0)), last_train))
            values.append(float(s[key]))
        elif 'loss' in s and 'step' in s:
            last_train = int(s['step'])
    return steps, values


def step_time(scalars: list[dict]) -> float | None:
    """Mean logged training-step time (IterTimerHook's ``time``), without the first logged window (warm-up)."""
    times = [s['time'] for s in scalars if 'time' in s and 'loss' in s]
    if len(times) > 1:
        times = times[1:]
    return float(np.mean(times)) if times else None


def checkpoint_to_test(train_dir: str, best: bool) -> str:
    if best:
        found = sorted(glob.glob(osp.join(train_dir, 'best_*.pth')), key=osp.getmtime)
        if found:
            return found[-1]
    last = osp.join(train_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    found = sorted(glob.glob(osp.join(train_dir, 'iter_*.pth')),
                   key=lambda p: int(re.findall(r'iter_(\d+)\.pth', p)[0]))
    if not found:
        raise RuntimeError(f'no checkpoint in {train_dir}')
    return found[-1]


def sine_metrics(train_dir: str) -> tuple[dict[str, float], list[float]]:
    from graddrop_mtl.models.sine import PAPER_SINES, global_minimum, sine_frequencies
    study = _load_tool('sine_study')
    data = np.load(osp.join(train_dir, 'sine_trajectory.npz'))
    hist = data['total_loss']
    l_star = global_minimum(sine_frequencies([a for a, _ in PAPER_SINES], 0.0), [b for _, b in PAPER_SINES],
                            0.0, 4 * math.pi)[1]
    final = hist[-1]
    metrics = dict(final_loss=float(final.mean()), at_min=float(100 * np.mean(final - l_star < study.TOL)),
                   steps=float(study.steps_to_converge(hist).mean()))
    return metrics, hist.mean(1).tolist()


def finished_result(exp: Experiment, method: str, seed: int, args, signature: dict) -> dict | None:
    """The result of a finished run of ``method`` with ``seed`` and the same settings (``signature``), else None."""
    run_dir = osp.join(args.work_dir, method, f'seed{seed}')
    result_path = osp.join(run_dir, RESULT_FILE)
    if not osp.isfile(result_path):
        return None
    with open(result_path) as f:
        result = json.load(f)
    if result.get('signature') != signature:
        return None
    scalars = read_scalars(osp.join(run_dir, 'train'))
    if exp.name != 'sine' and scalars:  # re-read the curve (older results stored validation steps as 0)
        result['curve_steps'], result['curve'] = curve_from_scalars(scalars, exp.curve_key)
    return result


def run_one(exp: Experiment, method: str, seed: int, args, signature: dict) -> dict:
    """Train (and test) one method with one seed; returns its result (cached in ``result.json``)."""
    run_dir = osp.join(args.work_dir, method, f'seed{seed}')
    result_path = osp.join(run_dir, RESULT_FILE)
    result = finished_result(exp, method, seed, args, signature)
    if result is not None:
        progress(f'{method} seed {seed}: done before, not run again')
        return result
    train_dir, test_dir = osp.join(run_dir, 'train'), osp.join(run_dir, 'test')
    for stale in (train_dir, test_dir):  # an unfinished run or one with other settings: start afresh
        shutil.rmtree(stale, ignore_errors=True)
    os.makedirs(run_dir, exist_ok=True)
    opts = [f'randomness.seed={seed}', *exp.seed_options(seed), *signature['options']]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.time()
    progress(f'{method} seed {seed}: training ({exp.config(method)})')
    _run_checked([sys.executable, osp.join(ROOT, 'tools', 'train.py'), exp.config(method), '--work-dir', train_dir,
                  '--cfg-options', *opts], f'{exp.name} {method} seed {seed}: training',
                 log=osp.join(run_dir, 'train.log'), env=env)
    scalars = read_scalars(train_dir)
    curve_steps, curve = [], []
    if exp.name == 'sine':
        metrics, curve = sine_metrics(train_dir)
        curve_steps = list(range(len(curve)))
    else:
        curve_steps, curve = curve_from_scalars(scalars, exp.curve_key)
        metrics = {}
    if exp.test:
        ckpt = checkpoint_to_test(train_dir, exp.best_checkpoint)
        progress(f'{method} seed {seed}: testing {osp.basename(ckpt)}')
        _run_checked([sys.executable, osp.join(ROOT, 'tools', 'test.py'), exp.config(method), ckpt, '--work-dir',
                      test_dir, '--cfg-options', *opts], f'{exp.name} {method} seed {seed}: testing',
                     log=osp.join(run_dir, 'test.log'), env=env)
        metrics = read_test_metrics(test_dir)
        metrics['checkpoint'] = osp.basename(ckpt)
    missing = [m.key for m in exp.metrics if m.key not in metrics]
    if missing:
        raise RuntimeError(f'{exp.name} {method} seed {seed}: metrics {missing} missing from the run '
                           f'(got {sorted(metrics)}); see {run_dir}')
    result = dict(signature=signature, method=method, seed=seed, metrics=metrics, step_time=step_time(scalars),
                  curve_steps=curve_steps, curve=curve, wall_s=time.time() - start)
    tmp = result_path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    summary = ', '.join(f'{m.label} {m.scale * metrics[m.key]:.3g}' for m in exp.metrics[:2])
    progress(f'{method} seed {seed}: finished in {result["wall_s"]:.0f} s ({summary})')
    return result


# ------------------------------------------------------------------------------------------------ summarising
def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(exp: Experiment, methods: list[str], results: dict[str, list[dict]]) -> list[dict]:
    """One row per method: per metric mean, std, n; time per step vs the baseline; separation from the baseline."""
    rows = []
    base = results.get(exp.baseline)
    base_time = mean_std([r['step_time'] for r in base if r['step_time']])[0] if base else None
    for m in methods:
        runs = results[m]
        row = dict(method=m, label={**exp.methods, **exp.extra_methods}.get(m, m), seeds=len(runs), metrics={})
        for metric in exp.metrics:
            mean, std = mean_std([metric.scale * r['metrics'][metric.key] for r in runs])
            entry = dict(mean=mean, std=std, n=len(runs), vs_baseline=None)
            if base and m != exp.baseline and metric.judged:
                bmean, bstd = mean_std([metric.scale * r['metrics'][metric.key] for r in base])
                diff = mean - bmean
                better = diff < 0 if metric.lower_is_better else diff > 0
                if len(runs) < 2 or len(base) < 2:
                    verdict = 'n/a (1 seed)'
                elif abs(diff) > std + bstd + 1e-9 * max(abs(mean), abs(bmean)):
                    verdict = 'better' if better else 'worse'
                else:
                    verdict = 'within spread'
                entry.update(diff=diff, vs_baseline=verdict)
            row['metrics'][metric.key] = entry
        times = [r['step_time'] for r in runs if r['step_time']]
        row['step_time'] = mean_std(times)[0] if times else None
        row['time_ratio'] = row['step_time'] / base_time if times and base_time else None
        rows.append(row)
    return rows


def write_table(exp: Experiment, rows: list[dict], stem: str, args, header_note: str) -> str:
    os.makedirs(args.results_dir, exist_ok=True)
    csv_path = osp.join(args.results_dir, f'{stem}.csv')
    with open(csv_path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['method', 'config', 'seeds'] + [f'{m.label} {s}' for m in exp.metrics for s in ('mean', 'std')]
                   + [f'{m.label} vs baseline' for m in exp.metrics] + ['time per step (s)', 'time vs baseline'])
        for r in rows:
            w.writerow([r['label'], osp.basename(exp.config(r['method'])), r['seeds']]
                       + [f'{r["metrics"][m.key][s]:.4f}' for m in exp.metrics for s in ('mean', 'std')]
                       + [r['metrics'][m.key]['vs_baseline'] or 'baseline' for m in exp.metrics]
                       + [f'{r["step_time"]:.4f}' if r['step_time'] else '',
                          f'{r["time_ratio"]:.3f}' if r['time_ratio'] else ''])
    cols = ['method', 'seeds'] + [m.label for m in exp.metrics] + ['time/step vs baseline']
    lines = [f'# {stem}: methods compared (`python tools/analysis/compare_methods.py {" ".join(args.argv)}`)', '',
             header_note, '', '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in rows:
        cells = [r['label'], str(r['seeds'])]
        for m in exp.metrics:
            e = r['metrics'][m.key]
            mark = '' if e['vs_baseline'] in (None, 'within spread', 'n/a (1 seed)') else f' ({e["vs_baseline"]})'
            cells.append(f'{e["mean"]:.2f} ± {e["std"]:.2f}{mark}')
        cells.append(f'{r["time_ratio"]:.2f}x' if r['time_ratio'] else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Each cell: mean ± standard deviation over the seeds. "(better)"/"(worse)": the difference to the '
              'baseline exceeds the seed spread (|difference| > std + std of the baseline); no mark: it does not '
              '(or one seed only). Time per step: the mean logged training-step time relative to the baseline '
              '(same machine; load changes between the runs, and runs sharing the cores with --jobs > 1, show '
              'up here).', '', f'![{exp.curve_label} per method]({stem}.png)', '']
    md_path = osp.join(args.results_dir, f'{stem}.md')
    with open(md_path, 'w') as f:
        f.write('\n'.join(lines))
    return md_path


def plot(exp: Experiment, methods: list[str], results: dict[str, list[dict]], stem: str, args) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, m in enumerate(methods):
        runs = [r for r in results[m] if r['curve']]
        if not runs:
            continue
        n = min(len(r['curve']) for r in runs)
        steps = np.asarray(runs[0]['curve_steps'][:n])
        values = np.asarray([r['curve'][:n] for r in runs])
        label = {**exp.methods, **exp.extra_methods}.get(m, m)
        color = f'C{i % 10}'
        ax.plot(steps, values.mean(0), color=color, label=f'{label} ({len(runs)} seeds)')
        if len(runs) > 1:
            ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15)
    if exp.name == 'sine':
        ax.set_xscale('symlog', linthresh=10)
    ax.set_xlabel('training step')
    ax.set_ylabel(exp.curve_label)
    ax.set_title(f'{stem}: mean over seeds, shaded min..max over seeds', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = osp.join(args.results_dir, f'{stem}.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    exps = experiments()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('experiment', choices=list(exps))
    p.add_argument('--methods', nargs='+', help='method keys (default: those the paper compares there); '
                   'the baseline is always included')
    p.add_argument('--seeds', type=int, default=3, help='seeds 0 .. N-1 (default 3)')
    p.add_argument('--jobs', type=int, default=1, help='runs at a time (default 1)')
    p.add_argument('--threads', type=int, default=1, help='OMP/MKL threads per run (default 1)')
    p.add_argument('--iters', type=int, help="training steps per run (default: the quick config's)")
    p.add_argument('--control', action='store_true', help='transfer only: the control set, where the source '
                   'classes share no visual factor with the target classes')
    p.add_argument('--data-root', help='data set to use (default: the quick config\'s, written when missing)')
    p.add_argument('--work-dir', help='runs (default work_dirs/compare/<experiment>)')
    p.add_argument('--results-dir', default=osp.join(ROOT, 'work_dirs', 'compare', 'results'),
                   help='tables and plots (default work_dirs/compare/results; docs/results holds the committed ones)')
    p.add_argument('--cfg-options', nargs='+', default=[], help='extra key=value options for every run')
    p.add_argument('--report-only', action='store_true', help='run nothing: write the table and plot from the runs '
                   'that have finished with these settings (each method with the seeds it has) and list the missing')
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    exp = exps[args.experiment]
    known = {**exp.methods, **exp.extra_methods}
    args.methods = args.methods or list(exp.methods)
    for m in args.methods:
        if m not in known or not osp.isfile(exp.config(m)):
            raise SystemExit(f'compare_methods: unknown method {m!r} for {exp.name}; choose from {sorted(known)}')
    if exp.baseline not in args.methods:
        args.methods.insert(0, exp.baseline)
    if args.seeds < 1 or args.jobs < 1:
        raise SystemExit('compare_methods: --seeds and --jobs must be >= 1')
    if args.control and exp.name != 'transfer':
        raise SystemExit('compare_methods: --control applies to the transfer experiment only')
    args.stem = exp.name + ('_control' if args.control else '')
    args.work_dir = args.work_dir or osp.join(ROOT, 'work_dirs', 'compare', args.stem)
    return exp, args


def main(argv=None) -> int:
    exp, args = parse_args(argv)
    options = list(args.cfg_options)
    if args.iters:
        options = iteration_options(exp, args.iters) + options
    if exp.data_root is not None:
        root = args.data_root or osp.join(ROOT, exp.data_root + ('_control' if args.control else ''))
        if not osp.isabs(root):
            root = osp.join(ROOT, root)
        if not osp.exists(root) and not args.report_only:
            progress(f'data set {root} missing: writing it')
            if exp.name == 'transfer':
                _make_transfer('independent' if args.control else 'shared')(root)
            else:
                exp.make_data(root)
        options = exp.data_options(root) + options
    signature = dict(options=options)
    jobs = [(m, s) for s in range(args.seeds) for m in args.methods]
    progress(f'{exp.name}: {len(args.methods)} methods x {args.seeds} seeds = {len(jobs)} runs, {args.jobs} at a '
             f'time; work dir {args.work_dir}')
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    failures, missing = [], []
    if args.report_only:
        for m, s in jobs:
            result = finished_result(exp, m, s, args, signature)
            if result is None:
                missing.append(f'{m} seed {s}')
            else:
                results[m].append(result)
        if missing:
            progress(f'not run yet, left out of the table: {", ".join(missing)}')
        args.methods = [m for m in args.methods if results[m]]
        if not args.methods:
            raise SystemExit(f'compare_methods: --report-only: no finished run with these settings in {args.work_dir}')
        jobs = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, exp, m, s, args, signature): (m, s) for m, s in jobs}
        for i, fut in enumerate(as_completed(futures), 1):
            m, s = futures[fut]
            try:
                results[m].append(fut.result())
                progress(f'{i}/{len(jobs)} runs done')
            except Exception as e:  # noqa: BLE001 - report every failed run, keep the finished ones
                failures.append(f'{m} seed {s}: {e}')
                progress(f'{i}/{len(jobs)} FAILED {m} seed {s}: {e}')
    if failures:
        raise SystemExit('compare_methods: some runs failed (the finished ones are kept; run the command again to '
                         'retry the others):\n  ' + '\n  '.join(failures))
    for m in results:
        results[m].sort(key=lambda r: r['seed'])
    results = {m: results[m] for m in args.methods}
    rows = summarise(exp, args.methods, results)
    iters = args.iters or 'the quick config\'s'
    note = (f'Quick setup: `{exp.config_dir}/{exp.prefix}<method>.py`, {iters} training steps per run, seeds '
            f'0..{args.seeds - 1} (`randomness.seed`), '
            + ('table written with --report-only from the finished runs' if args.report_only else
               f'{args.threads} thread(s) per run, {args.jobs} run(s) at a time')
            + f'; extra options: {" ".join(args.cfg_options) or "none"}. Wall time of the runs (train + test, '
            f'summed): {sum(r["wall_s"] for rs in results.values() for r in rs):.0f} s.')
    if missing:
        note += f' Not run (left out): {", ".join(missing)}.'
    md = write_table(exp, rows, args.stem, args, note)
    png = plot(exp, args.methods, results, args.stem, args)
    with open(md) as f:
        print(f.read())
    progress(f'wrote {md}, {md[:-3]}.csv and {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
