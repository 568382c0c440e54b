"""tools/analysis/sine_study.py tells what it is doing while its runs go."""
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_sine_study_prints_progress_lines(repo_root, tmp_path):
    cmd = [sys.executable, 'tools/analysis/sine_study.py', '--out', str(tmp_path), '--iters', '300', '--replicas', '4',
           '--methods', 'sum', 'graddrop', '--k-sweep', '--jobs', '1', '--progress-every', '0.5']
    proc = subprocess.run(cmd, cwd=repo_root, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('[sine_study ')]
    assert '2 runs x 4 replicas x 300 steps, 1 at a time' in lines[0]
    for label in ('SGD (Sum) (overlap 0)', 'GradDrop (k=1) (overlap 0)'):
        assert any(f'{label}: started' in line for line in lines), lines
        assert any(f'{label}: done in' in line and 'final mean total loss' in line for line in lines), lines
    # while a run goes: the iteration it has reached (or 'starting' before its first log line)
    assert any(': iteration ' in line for line in lines), lines
    assert (tmp_path / 'results.md').is_file()
