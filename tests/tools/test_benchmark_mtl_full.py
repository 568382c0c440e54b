"""tools/analysis/benchmark_mtl.py --models pointpillars-full: one process per method, the table and the targets.
The full-size runs themselves take ~10 GiB and minutes per method (docs/benchmarks.md); here the per-method
processes are replaced by their RESULT lines."""
import argparse
import json
import subprocess
import sys
import types

import pytest


def _module(repo_root):
    sys.path.insert(0, f'{repo_root}/tools/analysis')
    try:
        import benchmark_mtl
    finally:
        sys.path.pop(0)
    return benchmark_mtl


def _args(**kw):
    base = dict(methods=['Sum', 'GradDrop', 'PCGrad'], iters=2, warmup=1, threads=2, device='cpu')
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize('graddrop_cpu, graddrop_peak, met', [(10.4, 10.5, True), (10.6, 10.5, False),
                                                             (10.4, 11.2, False)])
def test_one_process_per_method_and_the_targets(repo_root, monkeypatch, capsys, graddrop_cpu, graddrop_peak, met):
    bench = _module(repo_root)
    results = {'plain': (9.0, 10.0), 'Sum': (10.0, 10.4), 'GradDrop': (graddrop_cpu, graddrop_peak),
               'PCGrad': (10.2, 10.9)}
    calls = []

    def fake_run(cmd, capture_output, text):
        method = cmd[cmd.index('--one-full') + 1]
        calls.append(cmd)
        cpu, peak = results[method]
        out = dict(method=method, wall=2 * cpu, cpu=cpu, peak_rss=int(peak * 2**30), grad_mode='linear')
        return types.SimpleNamespace(returncode=0, stdout='noise\nRESULT ' + json.dumps(out) + '\n', stderr='')

    monkeypatch.setattr(subprocess, 'run', fake_run)
    bench.benchmark_full(_args())
    out = capsys.readouterr().out
    assert [c[c.index('--one-full') + 1] for c in calls] == ['plain', 'Sum', 'GradDrop', 'PCGrad']
    assert all(c[0] == sys.executable and '--iters' in c and '--warmup' in c for c in calls)
    assert '| GradDrop | linear |' in out and '| PCGrad | linear |' in out
    peak_ok = max(p for _, p in results.values()) / 10.0 <= 1.10
    time_ok = graddrop_cpu / 10.0 <= 1.05
    assert ('-> met' in out.split('every peak')[1].split(';')[0]) == peak_ok
    assert out.rstrip().endswith('-> met') == time_ok
    assert (peak_ok and time_ok) == met


def test_a_failed_method_is_reported(repo_root, monkeypatch, capsys):
    bench = _module(repo_root)

    def fake_run(cmd, capture_output, text):
        method = cmd[cmd.index('--one-full') + 1]
        if method == 'PCGrad':
            return types.SimpleNamespace(returncode=-9, stdout='', stderr='Killed')
        out = dict(method=method, wall=1.0, cpu=1.0, peak_rss=2**30, grad_mode='linear')
        return types.SimpleNamespace(returncode=0, stdout='RESULT ' + json.dumps(out), stderr='')

    monkeypatch.setattr(subprocess, 'run', fake_run)
    bench.benchmark_full(_args())
    out = capsys.readouterr().out
    assert 'PCGrad: failed (exit -9): Killed' in out and '| PCGrad | failed |' in out


def test_peak_rss_is_the_process_maximum(repo_root):
    bench = _module(repo_root)
    before = bench.peak_rss_bytes()
    block = bytearray(64 * 2**20)
    block[::4096] = b'x' * len(block[::4096])     # touch every page
    assert bench.peak_rss_bytes() >= before and bench.peak_rss_bytes() > 64 * 2**20
