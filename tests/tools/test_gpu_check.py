"""tools/analysis/gpu_check.sh / gpu_check.py: the script a CUDA user runs. Without a GPU the shell script is
syntax-checked, and the Python checks run on the CPU (the same code with --device cpu)."""
import re
import subprocess
import sys

import pytest
import torch


def test_shell_script_parses_and_rejects_unknown_arguments(repo_root):
    subprocess.run(['bash', '-n', 'tools/analysis/gpu_check.sh'], cwd=repo_root, check=True)
    res = subprocess.run(['bash', 'tools/analysis/gpu_check.sh', '--bogus'], cwd=repo_root, capture_output=True,
                         text=True)
    assert res.returncode == 2 and "unknown argument '--bogus'" in res.stderr


def _gpu_check(repo_root):
    sys.path.insert(0, f'{repo_root}/tools/analysis')
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    return gpu_check


def test_arguments(repo_root):
    gpu_check = _gpu_check(repo_root)
    args = gpu_check.parse_args(['--device', 'cpu', '--only', 'amp', 'tf32', '--quick'])
    assert args.device == torch.device('cpu') and args.only == ['amp', 'tf32'] and args.quick
    if torch.cuda.is_available():
        assert gpu_check.parse_args([]).device.type == 'cuda'
    else:
        with pytest.raises(SystemExit):
            gpu_check.parse_args([])


def test_checks_pass_on_the_cpu(repo_root, capsys):
    """The sections that do not need CUDA run their checks on the CPU ('tf32' compares bf16 there)."""
    gpu_check = _gpu_check(repo_root)
    gpu_check.main(['--device', 'cpu', '--quick', '--only', 'methods', 'wrapper', 'amp', 'tf32', 'nccl'])
    out = capsys.readouterr().out
    assert out.count('[ok]') >= 20
    assert re.search(r'amp: float16 overflow on cpu: step skipped, scale (\d+) -> (\d+)', out)
    old, new = map(int, re.search(r'step skipped, scale (\d+) -> (\d+)', out).groups())
    assert new == old // 2
    assert '[skip] nccl: needs cuda' in out
