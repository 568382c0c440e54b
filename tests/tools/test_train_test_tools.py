"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on a tiny config (the sine experiment)."""
import os
import subprocess
import sys

import pytest
import torch

CONFIG = 'configs/sine/sine_graddrop.py'
SMALL = ['model.num_replicas=4', 'default_hooks.logger.interval=5', 'default_hooks.checkpoint.interval=10']


def run(repo_root, args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable)
    proc = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def train(repo_root, work_dir, iters, *extra):
    return run(repo_root, [sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir), *extra,
                           '--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                           *SMALL])


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']['trunk.weight']


@pytest.mark.slow
def test_train_resume_test(repo_root, tmp_path):
    straight = tmp_path / 'straight'
    train(repo_root, straight, 30)
    assert (straight / 'iter_30.pth').is_file()

    resumed = tmp_path / 'resumed'
    train(repo_root, resumed, 20)
    assert (resumed / 'iter_20.pth').is_file() and not (resumed / 'iter_30.pth').exists()
    log = train(repo_root, resumed, 30, '--resume')
    assert 'resumed' in log.lower() or 'resume' in log.lower()
    # model, optimizer, lr schedule, GradDrop's random stream: everything continues as if never stopped
    torch.testing.assert_close(weights(resumed / 'iter_30.pth'), weights(straight / 'iter_30.pth'), rtol=0, atol=0)
    assert not torch.equal(weights(resumed / 'iter_20.pth'), weights(resumed / 'iter_30.pth'))

    out = run(repo_root, [sys.executable, 'tools/test.py', CONFIG, str(resumed / 'iter_30.pth'), '--work-dir',
                          str(tmp_path / 'test'), '--cfg-options', 'model.num_replicas=4'])
    assert 'sine/total_loss_mean' in out and 'sine/at_global_min' in out


@pytest.mark.slow
def test_checkpoint_loads_in_plain_mmengine(repo_root, tmp_path):
    """A checkpoint trained with a multitask method has the stock keys: the model loads with no optim wrapper."""
    train(repo_root, tmp_path, 10)
    ckpt = torch.load(tmp_path / 'iter_10.pth', map_location='cpu', weights_only=False)
    assert set(ckpt['state_dict']) == {'trunk.weight'}
    assert 'mtl' in ckpt['optimizer'] and 'state' in ckpt['optimizer']
    from graddrop_mtl.models.sine import SineMTLModel
    model = SineMTLModel(num_replicas=4)
    model.load_state_dict(ckpt['state_dict'])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.load_state_dict({k: v for k, v in ckpt['optimizer'].items() if k != 'mtl'})


@pytest.mark.slow
def test_dist_train_two_cpu_processes(repo_root, tmp_path):
    port = str(29500 + os.getpid() % 1000)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable, PORT=port)
    proc = subprocess.run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(tmp_path), '--cfg-options',
                           'train_cfg.max_iters=10', 'train_cfg.val_interval=10', *SMALL],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / 'iter_10.pth').is_file()
    assert 'Distributed training: True' in out and 'GPU number: 2' in out, out[-3000:]   # mmengine's env log


@pytest.mark.slow
def test_train_amp_uses_the_multitask_wrapper(repo_root, tmp_path):
    """--amp with MultiTaskOptimWrapper: mixed precision inside the wrapper (bfloat16 autocast on the CPU)."""
    train(repo_root, tmp_path, 10, '--amp')
    ckpt = torch.load(tmp_path / 'iter_10.pth', map_location='cpu', weights_only=False)
    assert torch.isfinite(ckpt['state_dict']['trunk.weight']).all()
    dumped = open(tmp_path / 'sine_graddrop.py').read()
    assert "type='MultiTaskOptimWrapper'" in dumped and 'amp=True' in dumped
