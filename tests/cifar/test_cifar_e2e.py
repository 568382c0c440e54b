"""End to end: generate tiny sets, train the default GradDrop config (tiny DenseNet) with tools/train.py, evaluate
the checkpoint with tools/test.py."""
from __future__ import annotations

import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from .conftest import CONFIG_DIR, ROOT


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f'{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.mark.slow
def test_train_then_test_default_graddrop_config(synth_root, tmp_path):
    work = str(tmp_path / 'work')
    config = osp.join(CONFIG_DIR, 'cifar100_transfer_graddrop.py')
    data = [f'train_dataloader.dataset.source.data_root={synth_root}',
            f'train_dataloader.dataset.target.data_root={synth_root}',
            f'val_dataloader.dataset.data_root={synth_root}', f'test_dataloader.dataset.data_root={synth_root}',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0']
    tiny = ['model.depth=10', 'model.growth_rate=4']
    run([osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work, '--cfg-options', *tiny, *data,
         'train_cfg.max_iters=4', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=4',
         'default_hooks.logger.interval=1'], cwd=str(tmp_path))
    ckpt = osp.join(work, 'iter_4.pth')
    assert osp.isfile(ckpt)
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert state['optimizer']['mtl']['steps'] == 4                     # the multitask wrapper made every step
    assert 'backbone.blocks.2.0.norm1.bns.1.running_mean' in state['state_dict']
    train_logs = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    assert train_logs
    with open(train_logs[0]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    assert any('mtl/kept/loss_cifar' in r for r in records)              # GradDrop statistics were logged
    assert any('cifar100/top1_error' in r for r in records)              # validation ran on the val split

    run([osp.join(ROOT, 'tools', 'test.py'), config, ckpt, '--work-dir', work, '--cfg-options', *tiny, *data],
        cwd=str(tmp_path))
    results = [p for p in glob.glob(osp.join(work, '*', '*.json')) if not p.endswith('scalars.json')]
    assert results, 'tools/test.py wrote no metrics file'
    with open(max(results, key=osp.getmtime)) as f:
        metrics = json.load(f)
    assert metrics['cifar100/num_samples'] == 50                        # the whole official-format test file
    for key in ('cifar100/top1_error', 'cifar100/cross_entropy'):
        assert math.isfinite(metrics[key])
    assert 0.0 <= metrics['cifar100/top1_error'] <= 100.0 and metrics['cifar100/cross_entropy'] > 0
