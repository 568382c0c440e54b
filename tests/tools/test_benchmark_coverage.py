"""tools/analysis/benchmark_mtl.py and benchmark_combine.py time every registered method (a method registered later
is covered without editing them), and every row runs: one training step per method on the toy model, one
``combine`` (or ``weigh_losses``) per method on a tiny stack, TorchJD's aggregator beside ours where it has the
method."""
import sys

import torch

from graddrop_mtl.methods import METHODS


def _tool(repo_root, name):
    sys.path.insert(0, f'{repo_root}/tools/analysis')
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_benchmark_mtl_times_every_registered_method(repo_root, capsys):
    from tests.engine.toy import ToyMTL, toy_data
    bench = _tool(repo_root, 'benchmark_mtl')
    types = {cfg['type'] for cfg in bench.METHODS.values()}
    assert types == set(METHODS)                      # Compose as GradNorm + GradDrop
    assert bench.METHODS['MGDA'] == dict(type='MGDA', normalization='loss+')
    torch.manual_seed(0)
    model = ToyMTL()
    cfg = dict(type='MultiTaskOptimWrapper', optimizer=dict(type='SGD', lr=0.01), shared='trunk', seed=0)
    timed = bench.time_methods(model, cfg, toy_data(), {'plain OptimWrapper': None, **bench.METHODS}, iters=1,
                               warmup=1)
    assert 'failed' not in capsys.readouterr().out
    assert list(timed) == ['plain OptimWrapper', *bench.METHODS]
    assert all(wall > 0 and cpu >= 0 for wall, cpu, _ in timed.values())


def test_benchmark_mtl_reports_a_failing_method_and_goes_on(repo_root, capsys):
    from tests.engine.toy import ToyMTL, toy_data
    bench = _tool(repo_root, 'benchmark_mtl')
    cfg = dict(type='MultiTaskOptimWrapper', optimizer=dict(type='SGD', lr=0.01), shared='trunk', seed=0)
    timed = bench.time_methods(ToyMTL(), cfg, toy_data(), {'Sum': dict(type='Sum'),
                                                           'bad': dict(type='GradDrop', leak=[0.0, 1.0])}, 1, 0)
    assert list(timed) == ['Sum']
    assert 'bad: failed: ValueError: GradDrop leak has 2 values but there are 3 tasks' in capsys.readouterr().out


def test_benchmark_combine_covers_every_registered_method_against_torchjd(repo_root):
    bench = _tool(repo_root, 'benchmark_combine')
    rows = bench.method_rows()
    labels = [label for label, _ in rows]
    assert {cfg['type'] for _, cfg in rows} == set(METHODS)
    assert len(labels) == len(set(labels)) and labels[:5] == list(bench.FIRST_ROWS)
    assert dict(rows)['CAGrad'] == dict(type='CAGrad', c=0.5, rescale=0)
    tjd = bench.load_torchjd(None)
    assert tjd is not None, 'torchjd (requirements/bench.txt) is not importable'
    shape = (3, 2, 4, 5)
    result = bench.benchmark_shape('tiny', shape, tjd, None, repeats=1, check=True)
    by_label = {row.method: row for row in result}
    for label, cfg in rows:
        loss_only = METHODS[cfg['type']].loss_only
        row = by_label[f'{label} (weigh_losses)' if loss_only else label]
        assert row.times_ms['ours'] > 0
        if label not in bench.torchjd_factories(tjd, shape[0]):
            assert row.times_ms['torchjd'] is None, label
            continue
        try:                                  # a TorchJD aggregator whose optional solver is not installed
            bench.torchjd_factories(tjd, shape[0])[label]()
        except ImportError:
            assert row.times_ms['torchjd'] is None, label
        else:
            assert row.times_ms['torchjd'] > 0, label
    assert by_label['MGDA'].times_ms['torchjd 1e-6'] > 0
    assert any(note.startswith('KKT residual ours') for note in by_label['MGDA'].notes)
    table = bench.format_table(result, ['torchjd', 'libmtl', 'torchjd 1e-6'])
    assert '| UPGrad ' in table and '| UW (weigh_losses) ' in table
