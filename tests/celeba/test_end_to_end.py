import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from graddrop_mtl.datasets.celeba import write_synthetic_celeba

KEYS = ('celeba/error_rate', 'celeba/f1max', 'celeba/loss', 'celeba/majority_error_rate')


def _shrink(root):
    opts = ['model.head_pool=2']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}', f'{loader}.dataset.img_size=16', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts + ['val_dataloader.batch_size=4', 'test_dataloader.batch_size=4']


def _run(repo_root, args):
    env = dict(os.environ, PYTHONPATH=repo_root, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *args], cwd=repo_root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_graddrop_then_test_best_checkpoint(tmp_path, repo_root):
    root = str(tmp_path / 'data')
    write_synthetic_celeba(root, num_images=24, seed=0, size=16)
    config = osp.join(repo_root, 'configs', 'celeba', 'celeba_graddrop.py')
    work = str(tmp_path / 'train')
    out = _run(repo_root, [osp.join('tools', 'train.py'), config, '--work-dir', work, '--cfg-options',
                           *_shrink(root), 'train_cfg.max_iters=4', 'train_cfg.val_interval=2',
                           'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1'])
    assert 'mtl/conflict_frac' in out          # the GradDrop method ran inside the multitask wrapper
    assert osp.isfile(osp.join(work, 'iter_4.pth'))
    (best,) = glob.glob(osp.join(work, 'best_celeba_error_rate_iter_*.pth'))

    test_work = str(tmp_path / 'test')
    _run(repo_root, [osp.join('tools', 'test.py'), config, best, '--work-dir', test_work, '--cfg-options',
                     *_shrink(root)])
    (result_file,) = glob.glob(osp.join(test_work, '*', '*.json'))
    with open(result_file) as f:
        metrics = json.load(f)
    for key in KEYS:
        assert key in metrics and math.isfinite(metrics[key]), metrics
    # 2 test images: every per-attribute error is 0, 50 or 100%, and so is the majority rate
    assert 0.0 <= metrics['celeba/error_rate'] <= 100.0
    assert metrics['celeba/majority_error_rate'] <= 50.0
