"""tools/analysis/compare_methods.py and the quick configs it runs: the configs keep the full configs' methods and
per-experiment settings and honour randomness.seed; the tool runs, resumes, and writes its table, CSV and plot; the
same seed gives the same result on the CPU (a quick run of each experiment)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location('_compare_methods', osp.join(ROOT, 'tools', 'analysis',
                                                                               'compare_methods.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cm = _tool()
EXPERIMENTS = cm.experiments()
FULL = {'sine': 'configs/sine/sine_{}.py', 'celeba': 'configs/celeba/celeba_{}.py',
        'transfer': 'configs/cifar100_transfer/cifar100_transfer_{}.py',
        'pointpillars': 'configs/pointpillars_waymo/pointpillars_mtl_{}_reduced-car.py'}


def _lr(cfg) -> float:
    return cfg.optim_wrapper.optimizer.lr


@pytest.mark.parametrize('name', list(EXPERIMENTS))
def test_quick_configs_keep_the_full_configs_methods(name):
    """Each quick method config has its full config's method and clipping, the same lr relative to the baseline
    (MGDA's 100x lower lr on CelebA), a seed in randomness, a grad_mode that does not depend on timing, and the
    base configs' curves (scalars.json, which compare_methods.py reads, and TensorBoard)."""
    exp = EXPERIMENTS[name]
    quick_base = Config.fromfile(exp.config(exp.baseline))
    full_base = Config.fromfile(osp.join(ROOT, FULL[name].format(exp.baseline)))
    for method in {**exp.methods, **exp.extra_methods}:
        quick = Config.fromfile(exp.config(method))
        full = Config.fromfile(osp.join(ROOT, FULL[name].format(method)))
        assert quick.optim_wrapper.method == full.optim_wrapper.method, method
        assert quick.optim_wrapper.get('clip_grad') == full.optim_wrapper.get('clip_grad'), method
        assert _lr(quick) / _lr(quick_base) == pytest.approx(_lr(full) / _lr(full_base)), method
        assert isinstance(quick.randomness.seed, int)
        assert quick.optim_wrapper.get('grad_mode', 'auto') != 'auto'
        assert quick.optim_wrapper.get('seed') is None  # the wrapper's stream follows randomness.seed
        backends = [b['type'] for b in quick.visualizer.vis_backends]
        assert {'LocalVisBackend', 'TensorboardVisBackend'} <= set(backends), (method, backends)
    if name == 'celeba':
        assert _lr(Config.fromfile(exp.config('mgda'))) == pytest.approx(_lr(quick_base) / 100)
    if name == 'transfer':
        leaks = {tuple(Config.fromfile(exp.config(m)).optim_wrapper.method.leak) for m in exp.methods
                 if m.startswith('graddrop_leak')}
        assert leaks == {(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25)}


def _run(results, metric_values):
    return [dict(seed=i, metrics=dict(err=v), step_time=t, curve=[], curve_steps=[])
            for i, (v, t) in enumerate(zip(metric_values, results))]


def test_summarise_judges_differences_against_the_seed_spread():
    exp = cm.Experiment('toy', 'configs/sine/quick', 'sine_quick_', methods={'sum': 'base', 'a': 'A', 'b': 'B',
                        'c': 'C'}, extra_methods={}, baseline='sum',
                        metrics=[cm.Metric('err', 'error')],
                        curve_key='err', curve_label='error')
    results = {'sum': _run([1.0, 1.0, 1.0], [10.0, 11.0, 12.0]),      # mean 11, std 1
               'a': _run([2.0, 2.0, 2.0], [5.0, 5.5, 6.0]),          # mean 5.5, std 0.5: apart
               'b': _run([1.0, 1.0, 1.0], [10.0, 10.5, 11.0]),       # within the spread
               'c': _run([1.0], [5.0])}                               # one seed
    rows = {r['method']: r for r in cm.summarise(exp, ['sum', 'a', 'b', 'c'], results)}
    assert rows['sum']['metrics']['err']['mean'] == pytest.approx(11.0)
    assert rows['sum']['metrics']['err']['std'] == pytest.approx(1.0)
    assert rows['sum']['metrics']['err']['vs_baseline'] is None
    assert rows['a']['time_ratio'] == pytest.approx(2.0)
    verdicts = [rows[m]['metrics']['err']['vs_baseline'] for m in 'abc']
    assert verdicts == ['better', 'within spread', 'n/a (1 seed)']
    # the same numbers read as an accuracy (higher is better): 'a' is worse
    assert cm.summarise(exp, ['sum', 'a'], results)[1]['metrics']['err']['vs_baseline'] == 'better'
    exp.metrics = [cm.Metric('err', 'accuracy', lower_is_better=False)]
    assert cm.summarise(exp, ['sum', 'a'], results)[1]['metrics']['err']['vs_baseline'] == 'worse'


def test_checkpoint_to_test_is_the_newest_best_else_the_last(tmp_path):
    for name, mtime in (('best_acc_iter_50.pth', 100), ('best_acc_iter_300.pth', 200), ('iter_300.pth', 150),
                        ('iter_1000.pth', 50)):
        (tmp_path / name).write_bytes(b'')
        os.utime(tmp_path / name, (mtime, mtime))
    assert osp.basename(cm.checkpoint_to_test(str(tmp_path), best=True)) == 'best_acc_iter_300.pth'
    assert osp.basename(cm.checkpoint_to_test(str(tmp_path), best=False)) == 'iter_1000.pth'
    with pytest.raises(RuntimeError, match='no checkpoint in'):
        cm.checkpoint_to_test(str(tmp_path / 'missing'), best=False)


def test_validation_curve_takes_the_training_step():
    scalars = [{'loss': 1.0, 'step': 50, 'time': 0.1}, {'acc': 0.5, 'step': 0},
               {'loss': 0.5, 'step': 100, 'time': 0.1}, {'acc': 0.7, 'step': 0}]
    assert cm.curve_from_scalars(scalars, 'acc') == ([50, 100], [0.5, 0.7])
    assert cm.step_time(scalars) == pytest.approx(0.1)


def test_bad_arguments_name_the_value():
    with pytest.raises(SystemExit, match="unknown method 'nope' for celeba"):
        cm.parse_args(['celeba', '--methods', 'nope'])
    with pytest.raises(SystemExit, match='--control applies to the transfer'):
        cm.parse_args(['sine', '--control'])
    with pytest.raises(ValueError, match='--iters must be >= 1'):
        cm.iteration_options(EXPERIMENTS['celeba'], 0)


def _compare(tmp_path, name: str, work: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'compare_methods.py'), name, '--work-dir',
           str(tmp_path / work), '--results-dir', str(tmp_path / f'results_{work}'), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _results(tmp_path, work: str, method: str, seed: int = 0) -> dict:
    with open(tmp_path / work / method / f'seed{seed}' / cm.RESULT_FILE) as f:
        return json.load(f)


def _check_outputs(tmp_path, work: str, name: str, methods: list[str]) -> None:
    res = tmp_path / f'results_{work}'
    md = (res / f'{name}.md').read_text()
    with open(res / f'{name}.csv') as f:
        rows = list(csv.reader(f))
    exp = EXPERIMENTS[name]
    assert [r[0] for r in rows[1:]] == [exp.methods[m] for m in methods]
    for m in methods:
        assert f'| {exp.methods[m]} | 1 |' in md
    assert (res / f'{name}.png').stat().st_size > 1000


def _same_result(a: dict, b: dict) -> None:
    ma = {k: v for k, v in a['metrics'].items() if isinstance(v, float)}
    mb = {k: v for k, v in b['metrics'].items() if isinstance(v, float)}
    assert ma == mb and a['curve'] == b['curve']


@pytest.mark.slow
def test_compare_sine_runs_resumes_and_is_seeded(tmp_path):
    """CI: 2 methods x 1 seed x a few steps; a second call reuses the finished runs; the same seed in another work
    dir gives the same result, another seed another."""
    args = ['--methods', 'sum', 'graddrop', '--seeds', '1', '--iters', '30']
    _compare(tmp_path, 'sine', 'a', *args)
    _check_outputs(tmp_path, 'a', 'sine', ['sum', 'graddrop'])
    again = _compare(tmp_path, 'sine', 'a', *args)
    assert again.stdout.count('done before, not run again') == 2
    _compare(tmp_path, 'sine', 'b', *args)
    for m in ('sum', 'graddrop'):
        _same_result(_results(tmp_path, 'a', m), _results(tmp_path, 'b', m))
    _compare(tmp_path, 'sine', 'c', '--methods', 'graddrop', '--seeds', '2', '--iters', '30')
    assert _results(tmp_path, 'c', 'graddrop', 1)['curve'] != _results(tmp_path, 'a', 'graddrop')['curve']
    # --report-only: the table from the finished runs alone; nothing is run, the missing runs are listed
    report = _compare(tmp_path, 'sine', 'a', '--methods', 'graddrop', 'pcgrad', '--seeds', '2', '--iters', '30',
                      '--report-only')
    assert ': training (' not in report.stdout and not (tmp_path / 'a' / 'pcgrad').exists()
    md = (tmp_path / 'results_a' / 'sine.md').read_text()
    assert 'Not run (left out): pcgrad seed 0, sum seed 1, graddrop seed 1, pcgrad seed 1.' in md
    assert '| SGD (Sum) | 1 |' in md and '| GradDrop (k=1) | 1 |' in md and '| PCGrad |' not in md


@pytest.mark.slow
def test_compare_celeba_end_to_end_and_seeded(tmp_path):
    from graddrop_mtl.datasets.celeba import write_synthetic_celeba
    data = tmp_path / 'celeba'
    write_synthetic_celeba(str(data), num_images=60, seed=0, size=32)
    args = ['--methods', 'sum', 'graddrop', '--seeds', '1', '--iters', '4', '--data-root', str(data)]
    _compare(tmp_path, 'celeba', 'a', *args)
    _check_outputs(tmp_path, 'a', 'celeba', ['sum', 'graddrop'])
    _compare(tmp_path, 'celeba', 'b', *args)
    for m in ('sum', 'graddrop'):
        _same_result(_results(tmp_path, 'a', m), _results(tmp_path, 'b', m))
    assert 0 <= _results(tmp_path, 'a', 'graddrop')['metrics']['celeba/error_rate'] <= 100
    # other settings in the same work dir: run again from scratch, never testing the earlier run's checkpoint
    _compare(tmp_path, 'celeba', 'a', '--methods', 'sum', '--seeds', '1', '--iters', '2', '--data-root', str(data))
    assert _results(tmp_path, 'a', 'sum')['metrics']['checkpoint'] in ('best_celeba_error_rate_iter_1.pth',
                                                                       'best_celeba_error_rate_iter_2.pth')


@pytest.mark.slow
def test_compare_transfer_end_to_end_and_seeded(tmp_path):
    spec = importlib.util.spec_from_file_location('_synth_transfer', osp.join(ROOT, 'tools',
                                                                              'make_synthetic_transfer.py'))
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    data = tmp_path / 'transfer'
    synth.make_transfer_sets(str(data), seed=0, cifar_train=200, cifar_test=100, imagenet_batches=10,
                             imagenet_per_batch=20, imagenet_val=10)
    args = ['--methods', 'sum', 'graddrop', '--seeds', '1', '--iters', '3', '--data-root', str(data)]
    _compare(tmp_path, 'transfer', 'a', *args)
    _check_outputs(tmp_path, 'a', 'transfer', ['sum', 'graddrop'])
    _compare(tmp_path, 'transfer', 'b', *args)
    for m in ('sum', 'graddrop'):
        _same_result(_results(tmp_path, 'a', m), _results(tmp_path, 'b', m))


@pytest.mark.slow
def test_compare_pointpillars_end_to_end_and_seeded(tmp_path):
    from graddrop_mtl.det3d.waymo.synthetic import SyntheticConfig, make_synthetic_dataset
    cfg = SyntheticConfig(num_frames=2, width=256, num_objects=6, scene_radius=15.0, max_distance=15.0,
                          type_weights=(0.7, 0.15, 0.1, 0.05))
    root = make_synthetic_dataset(tmp_path / 'waymo', segments={'training': 2, 'validation': 1}, config=cfg,
                                  gt_database=False)
    args = ['--methods', 'sum', 'graddrop', '--seeds', '1', '--iters', '3', '--data-root',
            str(root / 'kitti_format')]
    _compare(tmp_path, 'pointpillars', 'a', *args)
    _check_outputs(tmp_path, 'a', 'pointpillars', ['sum', 'graddrop'])
    _compare(tmp_path, 'pointpillars', 'b', *args)
    for m in ('sum', 'graddrop'):
        _same_result(_results(tmp_path, 'a', m), _results(tmp_path, 'b', m))
