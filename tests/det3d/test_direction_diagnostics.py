"""tools/analysis/direction_diagnostics.py: the shape statistic, the linear probe, and the report on synthetic data."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis' / 'direction_diagnostics.py'


def _tool():
    spec = importlib.util.spec_from_file_location('direction_diagnostics', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_end_heights_follow_the_yaw():
    """A vehicle whose rear is taller: read along its yaw the rear is higher; turned by pi the ends swap."""
    dd = _tool()
    xs = np.linspace(-2.2, 2.2, 45)
    points = np.stack([xs, np.zeros_like(xs), np.where(xs < 0, 1.6, 0.9)], axis=1)
    box = np.array([0.0, 0.0, 0.0, 4.6, 1.8, 1.8, 0.0])
    front, rear = dd.end_heights(points, box, 0.8)
    assert front == pytest.approx(0.9) and rear == pytest.approx(1.6)
    box[6] = np.pi
    front, rear = dd.end_heights(points, box, 0.8)
    assert front == pytest.approx(1.6) and rear == pytest.approx(0.9)
    assert dd.end_heights(points[:2], box, 0.8) is None          # too few points on an end


def test_linear_probe_reads_a_linear_label_and_not_noise():
    dd = _tool()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g, dtype=torch.float64)
    separable = (x[:, 2] - 0.5 * x[:, 5] > 0).double()
    noise = (torch.rand(600, generator=g, dtype=torch.float64) > 0.5).double()
    assert dd.linear_probe(x, separable) > 0.95
    assert abs(dd.linear_probe(x, noise) - 0.5) < 0.1


@pytest.mark.slow
def test_report_on_synthetic_waymo(synthetic_waymo):
    """On the synthetic set every target is the bin of its yaw and the yaw points to the vehicle's low end."""
    root = f'{synthetic_waymo}/kitti_format/'
    out = subprocess.run(
        [sys.executable, str(TOOL), str(ROOT / 'configs/pointpillars_waymo/quick/pointpillars_quick_sum.py'),
         '--frames', '4', '--cfg-options', f'train_dataloader.dataset.dataset.data_root={root}'],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = dict(line.split(': ', 1) for line in out.splitlines() if ': ' in line)
    assert float(lines['target agrees with yaw']) == 1.0
    assert float(lines['yaw points to the lower end'].split()[0]) >= 0.9
    assert 0.0 <= float(lines['linear probe (held-out accuracy, initialisation)']) <= 1.0
