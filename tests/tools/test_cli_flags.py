"""tools/train.py and tools/test.py flags: what works, and the clear errors for what cannot (no training here)."""
import functools
import http.server
import importlib.util
import os
import os.path as osp
import threading

import numpy as np
import pytest
import torch

from graddrop_mtl.engine import cli

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'graddrop_tools_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = _tool('train')
test_tool = _tool('test')

SINE = osp.join(ROOT, 'configs', 'sine', 'sine_graddrop.py')
POINTPILLARS = osp.join(ROOT, 'configs', 'pointpillars_waymo', 'pointpillars_mtl_graddrop_reduced-car_demo.py')


@pytest.fixture
def fake_ckpt(tmp_path):
    path = tmp_path / 'iter_1.pth'
    path.write_bytes(b'not read: the tools stop before loading it')
    return str(path)


@pytest.mark.parametrize('tool', [train_tool, test_tool])
def test_ceph_is_gone(tool, capsys):
    argv = [SINE, '--ceph'] if tool is train_tool else [SINE, 'x.pth', '--ceph']
    with pytest.raises(SystemExit):
        tool.parse_args(argv)
    assert 'unrecognized arguments: --ceph' in capsys.readouterr().err


def test_tta_without_tta_model_is_a_clear_error(fake_ckpt):
    with pytest.raises(ValueError, match=r'--tta: .*sine_graddrop\.py defines no tta_model and no tta_pipeline'):
        test_tool.main([SINE, fake_ckpt, '--tta'])


def test_show_dir_without_a_visualization_hook_is_a_clear_error(fake_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r'--show/--show-dir: .*sine_graddrop\.py has no default_hooks\.visualization'):
        test_tool.main([SINE, fake_ckpt, '--show-dir', str(tmp_path / 'vis')])


def test_show_dir_without_task_takes_the_configs_task(tmp_path):
    """PointPillars: the hook names its task (lidar_det), so --show-dir alone suffices; --task overrides it."""
    args = test_tool.parse_args([POINTPILLARS, 'x.pth', '--show-dir', 'bev', '--score-thr', '0.4'])
    cfg = cli.load_config(args)
    test_tool.trigger_visualization_hook(cfg, args)
    hook = cfg.default_hooks.visualization
    assert hook.type == 'BEVVisualizationHook'
    assert (hook.draw, hook.test_out_dir, hook.vis_task, hook.score_thr) == (True, 'bev', 'lidar_det', 0.4)


def test_show_dir_with_a_hook_naming_no_task_asks_for_task(tmp_path):
    args = test_tool.parse_args([POINTPILLARS, 'x.pth', '--show-dir', 'bev', '--cfg-options',
                                 'default_hooks.visualization.type=Det3DVisualizationHook',
                                 'default_hooks.visualization.vis_task=None'])
    cfg = cli.load_config(args)
    with pytest.raises(ValueError, match='names no vis_task; pass --task'):
        test_tool.trigger_visualization_hook(cfg, args)
    args.task = 'lidar_det'
    test_tool.trigger_visualization_hook(cfg, args)
    assert cfg.default_hooks.visualization.vis_task == 'lidar_det'


def test_checkpoint_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        test_tool.main([SINE, str(tmp_path / 'missing.pth')])
    with pytest.raises(ValueError, match='only local files and http://'):
        cli.check_checkpoint('s3://bucket/iter_1.pth')
    cli.check_checkpoint('https://example.org/iter_1.pth')     # accepted: loaded when the Runner loads it


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_url_checkpoint_loads(http_server, tmp_path, monkeypatch):
    """An http(s) checkpoint is downloaded once into torch's hub directory and loaded with weights_only=False
    (mmengine's checkpoints hold numpy values, which torch's default weights_only=True rejects)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    served, url = http_server
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    ckpt = {'state_dict': {'trunk.weight': torch.arange(3.0)}, 'meta': {'seed': np.int64(7)}}
    torch.save(ckpt, served / 'model.pth')
    cli.trust_url_checkpoints()
    loaded = CheckpointLoader.load_checkpoint(f'{url}/model.pth', map_location='cpu')
    torch.testing.assert_close(loaded['state_dict']['trunk.weight'], torch.arange(3.0))
    assert loaded['meta']['seed'] == 7
    assert (tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'model.pth').is_file()


def test_slurm_environment_becomes_torchrun_environment(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.setenv(key, 'inherited')   # recorded, so that what the function sets is undone after the test
        monkeypatch.delenv(key)
    monkeypatch.setenv('RANK', '0')            # from the submitting shell: srun's task id wins
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('SLURM_PROCID', '3')
    monkeypatch.setenv('SLURM_NTASKS', '4')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.5')
    cli.slurm_to_torch_env()
    assert [os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')] == \
        ['3', '4', '1', '10.0.0.5', '29500']
    monkeypatch.delenv('SLURM_PROCID')
    with pytest.raises(RuntimeError, match='SLURM_PROCID not set; start the job with srun'):
        cli.slurm_to_torch_env()
