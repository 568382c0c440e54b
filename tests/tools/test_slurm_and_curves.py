"""tools/slurm_train.sh / slurm_test.sh through a stand-in ``srun``, and the curves a short run leaves behind
(TensorBoard event file with the multitask statistics, validation metrics per iteration in scalars.json)."""
import glob
import json
import os
import os.path as osp
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

CONFIG = 'configs/sine/sine_graddrop.py'
SMALL = ['model.num_replicas=4', 'default_hooks.logger.interval=5', 'default_hooks.checkpoint.interval=10']

# srun's part in the launch: record the arguments, then start --ntasks copies of the command with the variables
# srun gives each task (one node; MASTER_ADDR/PORT preset so that no scontrol is needed).
FAKE_SRUN = textwrap.dedent('''\
    #!{python}
    import json, os, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ['SRUN_RECORD'], 'a') as f:
        f.write(json.dumps(args) + '\\n')
    ntasks = next(int(a.split('=', 1)[1]) for a in args if a.startswith('--ntasks='))
    # options are -p VALUE and --name=value; the command starts at the first other argument
    cmd = args[next(i for i, a in enumerate(args) if not a.startswith('-') and args[i - 1] != '-p'):]
    procs = [subprocess.Popen(cmd, env=dict(os.environ, SLURM_PROCID=str(i), SLURM_NTASKS=str(ntasks),
                                            SLURM_LOCALID=str(i), SLURM_NODELIST='localhost'))
             for i in range(ntasks)]
    sys.exit(max(p.wait() for p in procs))
    ''')


def _free_port() -> int:
    """A port no other job on this machine listens on now (other test runs start their own process groups)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_srun(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / 'srun_calls.jsonl'
    # the variables of a launcher the test process may have inherited: srun's tasks must not depend on them
    inherited = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    env = dict(inherited, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', SRUN_RECORD=str(record),
               PYTHON=sys.executable, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(_free_port()), GPUS='2', GPUS_PER_NODE='0', CPUS_PER_TASK='1',
               SRUN_ARGS='--quotatype=auto')
    return env, record


def _run(cmd, repo_root, env, timeout=900):
    """Run ``cmd`` in its own process group; on a timeout the whole group (srun's tasks too) is killed."""
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f'{cmd} did not finish in {timeout} s:\n{(stdout + stderr)[-4000:]}')
    out = stdout + stderr
    assert proc.returncode == 0, f'{cmd} failed:\n{out[-4000:]}'
    return out


@pytest.mark.slow
def test_slurm_train_and_test_two_tasks(repo_root, tmp_path, fake_srun):
    env, record = fake_srun
    work = tmp_path / 'work'
    out = _run(['bash', 'tools/slurm_train.sh', 'cpu_partition', 'gd_job', CONFIG, str(work), '--cfg-options',
                'train_cfg.max_iters=10', 'train_cfg.val_interval=10', *SMALL], repo_root, env)
    assert (work / 'iter_10.pth').is_file()
    assert 'Distributed training: True' in out and 'GPU number: 2' in out, out[-3000:]   # mmengine's env log
    train_call = json.loads(record.read_text().splitlines()[0])
    # OpenMMLab's srun line: partition, job name, tasks, tasks per node, CPUs per task, SRUN_ARGS, then the tool
    assert train_call[:8] == ['-p', 'cpu_partition', '--job-name=gd_job', '--ntasks=2', '--ntasks-per-node=2',
                              '--cpus-per-task=1', '--kill-on-bad-exit=1', '--quotatype=auto']
    assert train_call[8:] == [sys.executable, '-u', 'tools/train.py', CONFIG, f'--work-dir={work}', '--launcher=slurm',
                              '--cfg-options', 'train_cfg.max_iters=10', 'train_cfg.val_interval=10', *SMALL]

    out = _run(['bash', 'tools/slurm_test.sh', 'cpu_partition', 'gd_test', CONFIG, str(work / 'iter_10.pth'),
                '--work-dir', str(tmp_path / 'test'), '--cfg-options', 'model.num_replicas=4'], repo_root, env)
    assert 'sine/total_loss_mean' in out
    test_call = json.loads(record.read_text().splitlines()[1])
    assert test_call[:3] == ['-p', 'cpu_partition', '--job-name=gd_test']
    assert test_call[8:14] == [sys.executable, '-u', 'tools/test.py', CONFIG, str(work / 'iter_10.pth'),
                               '--launcher=slurm']


@pytest.mark.slow
def test_short_run_writes_tensorboard_and_per_iteration_validation(repo_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    env = dict(os.environ, OMP_NUM_THREADS='1')
    _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
          'train_cfg.max_iters=20', 'train_cfg.val_interval=10', *SMALL], repo_root, env)
    (vis_dir,) = glob.glob(str(tmp_path / '*' / 'vis_data'))
    events = glob.glob(osp.join(vis_dir, 'events.out.tfevents.*'))
    assert events, os.listdir(vis_dir)
    acc = EventAccumulator(vis_dir)
    acc.Reload()
    tags = acc.Tags()['scalars']
    mtl = [t for t in tags if t.startswith('mtl/')]
    assert 'mtl/sign_purity' in mtl, tags                      # GradDrop's statistics
    assert 'loss' in tags and 'lr' in tags
    steps = [e.step for e in acc.Scalars(mtl[0])]
    assert steps == [1, 5, 10, 15, 20]                      # mmengine's first iteration, then every interval
    # validation metrics at the training iteration where validation ran (not all at step 0)
    assert [e.step for e in acc.Scalars('sine/total_loss_mean')] == [10, 20]
    rows = [json.loads(line) for line in open(osp.join(vis_dir, 'scalars.json'))]
    val_steps = [r['step'] for r in rows if 'sine/total_loss_mean' in r]
    assert val_steps == [10, 20]
