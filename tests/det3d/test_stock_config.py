"""GradDrop as a plugin on mmdet3d's own (unmodified) Waymo PointPillars car config, and mmengine checkpoints in stock
mmdet3d tools: configs/pointpillars_waymo/stock_pointpillars_*graddrop_waymoD5-car.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STOCK_CAR = 'pointpillars/pointpillars_hv_secfpn_sbn-all_16xb2-2x_waymoD5-3d-car.py'
EXAMPLES = {'Anchor3DHead': 'configs/pointpillars_waymo/stock_pointpillars_graddrop_waymoD5-car.py',
            'MultiTaskAnchor3DHead': 'configs/pointpillars_waymo/stock_pointpillars_mtl_graddrop_waymoD5-car.py'}
TASKS = {'Anchor3DHead': ['loss_cls', 'loss_bbox', 'loss_dir'],
         'MultiTaskAnchor3DHead': ['loss_cls', 'loss_x', 'loss_y', 'loss_z', 'loss_length', 'loss_width',
                                   'loss_height', 'loss_yaw', 'loss_dir']}
PACK_WITH_BOXES = dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])


def stock_config_path() -> Path:
    import mmdet3d
    return Path(mmdet3d.__file__).parent / '.mim' / 'configs' / STOCK_CAR


def load(path):
    from mmengine.config import Config
    return Config.fromfile(str(path))


def strip_scope(obj):
    """A config value as plain data, without the ``_scope_`` keys that reading a base variable adds."""
    if isinstance(obj, dict):
        return {k: strip_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return [strip_scope(v) for v in obj]
    return obj


@pytest.mark.parametrize('head', list(EXAMPLES))
def test_example_is_the_stock_config_plus_the_wrapper(repo_root, head):
    """Everything but the optim wrapper type/method, custom_imports, the train pipeline's last transform (the
    documented fix) and, for the nine-loss variant, the head type, is mmdet3d's config as installed."""
    stock = strip_scope(load(stock_config_path()).to_dict())
    cfg = strip_scope(load(Path(repo_root) / EXAMPLES[head]).to_dict())
    assert cfg.pop('custom_imports') == dict(imports=['graddrop_mtl'], allow_failed_imports=False)
    wrapper, stock_wrapper = cfg.pop('optim_wrapper'), stock.pop('optim_wrapper')
    assert stock_wrapper['type'] == 'OptimWrapper'
    assert wrapper == dict(stock_wrapper, type='MultiTaskOptimWrapper', method=dict(type='GradDrop'),
                           shared='pts_neck')
    pipeline = cfg['train_dataloader']['dataset']['dataset'].pop('pipeline')
    stock_pipeline = stock['train_dataloader']['dataset']['dataset'].pop('pipeline')
    # mmdet3d 1.4's car config trains on no boxes (the README and the config's comment say so): the fix replaces
    # exactly its last transform
    assert stock_pipeline[-1]['type'] == 'Pack3DDetInputs' and stock_pipeline[-1]['keys'] == ['points']
    assert pipeline[:-1] == stock_pipeline[:-1] and pipeline[-1] == PACK_WITH_BOXES
    assert cfg['model']['pts_bbox_head'].pop('type') == head
    stock['model']['pts_bbox_head'].pop('type')
    assert cfg == stock


@pytest.mark.parametrize('mmdet3d_first', [False, True], ids=['graddrop_mtl-first', 'mmdet3d-registry-used-first'])
def test_importing_graddrop_mtl_registers_every_component(mmdet3d_first):
    """``custom_imports=dict(imports=['graddrop_mtl'])`` is all a config needs: in a fresh process that imports the
    package, mmdet3d's registries find the head and the metric (imported on their first lookup, so the import
    itself does not load mmdet3d's models), also when mmdet3d's registries were used before; the wrapper too."""
    code = ('import sys\n'
            + ("from mmdet3d.registry import MODELS as M, METRICS as E\n"
               "M.get('Anchor3DHead'), E.get('WaymoMetric')\n" if mmdet3d_first else '')
            + 'import graddrop_mtl\n'
            "print('graddrop_mtl.det3d.models' in sys.modules)\n"
            'from mmengine.registry import OPTIM_WRAPPERS\n'
            'from mmdet3d.registry import MODELS, METRICS\n'
            "print(MODELS.get('MultiTaskAnchor3DHead').__name__, METRICS.get('WaymoAPMetric').__name__,\n"
            "      OPTIM_WRAPPERS.get('MultiTaskOptimWrapper').__name__)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [str(mmdet3d_first), 'MultiTaskAnchor3DHead', 'WaymoAPMetric',
                                  'MultiTaskOptimWrapper']


def test_import_without_mmdet3d(tmp_path):
    """Without mmdet3d (hidden from the import system), ``import graddrop_mtl`` still works and registers the rest."""
    code = ('import sys\n'
            "sys.modules['mmdet3d'] = None\n"          # what Python's import system reads as 'not installed'
            'import graddrop_mtl\n'
            'from mmengine.registry import OPTIM_WRAPPERS\n'
            "print(OPTIM_WRAPPERS.get('MultiTaskOptimWrapper').__name__, 'graddrop_mtl.det3d.models' in sys.modules)\n")
    out = subprocess.run([sys.executable, '-W', 'error::RuntimeWarning', '-c', code], capture_output=True, text=True,
                         env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ['MultiTaskOptimWrapper', 'False']


def test_a_broken_mmdet3d_is_named_not_fatal():
    """mmdet3d installed but not importable (here its registry module is hidden): ``import graddrop_mtl`` warns,
    naming the error and what is not registered, and the rest works."""
    code = ('import sys, warnings\n'
            "sys.modules['mmdet3d.registry'] = None\n"
            'with warnings.catch_warnings(record=True) as caught:\n'
            "    warnings.simplefilter('always')\n"
            '    import graddrop_mtl\n'
            'from mmengine.registry import OPTIM_WRAPPERS\n'
            "print(OPTIM_WRAPPERS.get('MultiTaskOptimWrapper').__name__)\n"
            "print([str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    name, messages = out.stdout.strip().splitlines()[-2:]
    assert name == 'MultiTaskOptimWrapper'
    assert 'mmdet3d is installed but does not import' in messages and 'MultiTaskAnchor3DHead' in messages
    assert 'mmdet3d.registry' in messages


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env.update(OMP_NUM_THREADS='1', **extra)
    return env


#: The test-time override of an example config: a 38.4 m square (96 x 96 pillars, the demo's grid) instead of
#: 149.76 m (468 x 468), batch 1, 4 training frames (one epoch of 4 steps), the converted synthetic data, and
#: WaymoAPMetric as the evaluator (the stock WaymoMetric needs Waymo's compiled tool). The pipelines are the
#: example's (the stock ones plus the fix); only paths and the range filters change.
OVERRIDE = '''
_base_ = [{example!r}]
root = {root!r}
point_cloud_range = [-19.2, -19.2, -2, 19.2, 19.2, 4]
voxel_size = [0.4, 0.4, 6]
model = dict(
    data_preprocessor=dict(voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                                            max_voxels=(8000, 8000))),
    pts_voxel_encoder=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size),
    pts_middle_encoder=dict(output_shape=[96, 96]),
    pts_bbox_head=dict(anchor_generator=dict(ranges=[[-19.2, -19.2, -0.0345, 19.2, 19.2, -0.0345]])),
    test_cfg=dict(pts=dict(nms_pre=1024, max_num=100, score_thr=0.0)))   # untrained: keep low scores


def reduced(pipeline):
    out = []
    for t in pipeline:
        t = dict(t)
        if 'point_cloud_range' in t:
            t['point_cloud_range'] = point_cloud_range
        if t['type'] == 'ObjectSample':
            t['db_sampler'] = dict(t['db_sampler'], data_root=root, info_path=root + 'waymo_dbinfos_train.pkl')
        out.append(t)
    return out


train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(times=1, dataset=dict(data_root=root, load_interval=1, indices=4,
                                       pipeline=reduced(_base_.train_dataloader.dataset.dataset.pipeline))))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=root, pipeline=reduced(_base_.val_dataloader.dataset.pipeline)))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='WaymoAPMetric', ann_file=root + 'waymo_infos_val.pkl', backend='native')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''

#: Run in a fresh process without TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: the checkpoint does not load with torch's
#: default (weights_only=True) before graddrop_mtl is imported; mmdet3d's init_model (whose Config.fromfile runs the
#: config's custom_imports) loads it into the dumped training config's model and into the stock config's model
#: (stock Anchor3DHead) on the reduced grid; both predict what the trained weights predict when loaded by hand.
ROUND_TRIP = '''
import json, sys
import torch
config, checkpoint, stock_config, points = sys.argv[1:5]
try:
    torch.load(checkpoint)
    refused = False
except Exception as err:
    refused = 'HistoryBuffer' in str(err) or 'numpy' in str(err)
from mmdet3d.apis import inference_detector, init_model
from mmengine.config import Config
results = {}
for name, cfg in (('trained', config), ('stock', stock_config)):
    model = init_model(cfg, checkpoint, device='cpu')
    out = inference_detector(model, points)[0].pred_instances_3d
    results[name] = (model.pts_bbox_head.__class__.__name__, out.bboxes_3d.tensor, out.scores_3d, out.labels_3d)
from mmdet3d.registry import MODELS
reference = MODELS.build(Config.fromfile(config).model)
reference.load_state_dict(torch.load(checkpoint, weights_only=False)['state_dict'])
reference.cfg = Config.fromfile(config)
reference.eval()
out = inference_detector(reference, points)[0].pred_instances_3d
ref = (out.bboxes_3d.tensor, out.scores_3d, out.labels_3d)
print(json.dumps(dict(
    refused_before_import=refused,
    heads={k: v[0] for k, v in results.items()},
    num_boxes=len(ref[1]),
    identical={k: all(torch.equal(a, b) for a, b in zip(v[1:], ref)) for k, v in results.items()})))
'''


@pytest.mark.slow
@pytest.mark.parametrize('head', list(EXAMPLES))
def test_example_trains_tests_and_loads_in_init_model(synthetic_waymo, tmp_path, repo_root, head):
    root = str(synthetic_waymo / 'kitti_format') + '/'
    config = tmp_path / 'reduced.py'
    config.write_text(OVERRIDE.format(example=str(Path(repo_root) / EXAMPLES[head]), root=root))
    env = _clean_env()
    work = tmp_path / 'train'
    train = subprocess.run([sys.executable, 'tools/train.py', str(config), '--work-dir', str(work)],
                           cwd=repo_root, env=env, capture_output=True, text=True)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-4000:]
    assert 'Epoch(train) [1][4/4]' in log, log[-3000:]
    for task in TASKS[head]:                 # GradDrop ran on the head's tasks (its per-task statistics)
        assert f'mtl/kept/{task}:' in log and f' {task}:' in log, (task, log[-3000:])
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.is_file()
    assert 'Vehicle/L1 mAP' in log                         # validation at the end of the epoch

    test = subprocess.run([sys.executable, 'tools/test.py', str(config), str(checkpoint), '--work-dir',
                           str(tmp_path / 'test')], cwd=repo_root, env=env, capture_output=True, text=True)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-4000:]
    assert 'Vehicle/L1 mAP' in out and 'Vehicle/L2 BEV mAPH' in out
    assert json.loads((tmp_path / 'test' / 'waymo_ap.json').read_text())['num_frames'] == 3

    # the stock config (stock Anchor3DHead, no graddrop_mtl import of its own) on the same reduced grid
    stock = tmp_path / 'stock_reduced.py'
    stock.write_text(OVERRIDE.format(example=str(stock_config_path()), root=root))
    dumped = work / 'reduced.py'
    points = next(Path(root, 'training', 'velodyne').glob('1*.bin'))      # a validation frame
    rt = subprocess.run([sys.executable, '-c', ROUND_TRIP, str(dumped), str(checkpoint), str(stock), str(points)],
                        cwd=str(tmp_path), env=dict(env, PYTHONPATH=repo_root), capture_output=True, text=True)
    assert rt.returncode == 0, rt.stdout[-3000:] + rt.stderr[-4000:]
    result = json.loads(rt.stdout.strip().splitlines()[-1])
    assert result['refused_before_import'], result
    assert result['heads'] == {'trained': head, 'stock': 'Anchor3DHead'}
    assert result['num_boxes'] > 0
    assert result['identical'] == {'trained': True, 'stock': True}


def test_readme_shows_the_example_config(repo_root):
    """The README's snippet is the example config's code, line for line."""
    readme = (Path(repo_root) / 'configs/pointpillars_waymo/README.md').read_text()
    code = [line.split('  # noqa')[0] for line in (Path(repo_root) / EXAMPLES['Anchor3DHead']).read_text().splitlines()
            if line and not line.startswith('#')]
    snippet = readme.split("## GradDrop on mmdet3d's stock config")[1].split('```python\n')[1].split('```')[0]
    assert snippet.splitlines() == code


def test_d5_is_taken_once(repo_root):
    """configs/pointpillars_waymo/README.md's create_data command and the configs' load_interval together keep one
    training frame in five for the waymoD5 configs (not 1/25) and every frame for the reduced ones; the README's
    override for data converted with --load-interval 5 sets the configs' interval to 1."""
    import re
    root = Path(repo_root)
    readme = (root / 'configs/pointpillars_waymo/README.md').read_text()
    commands = [line for line in readme.splitlines() if line.startswith('python tools/create_data.py waymo')]
    assert commands
    for command in commands:
        found = re.search(r'--load-interval[ =](\d+)', command)
        conversion = int(found.group(1)) if found else 1
        for path in sorted((root / 'configs/pointpillars_waymo').glob('*.py')):
            dataset = load(path).train_dataloader.dataset
            interval = (dataset.dataset if dataset.type == 'RepeatDataset' else dataset).load_interval
            expected = 5 if 'waymoD5' in path.name else 1
            assert conversion * interval == expected, (command, path.name, interval)
    override = 'train_dataloader.dataset.dataset.load_interval=1'
    assert f'--cfg-options {override}' in readme
    cfg = load(root / 'configs/pointpillars_waymo/pointpillars_mtl_graddrop_waymoD5-car.py')
    key, value = override.split('=')
    cfg.merge_from_dict({key: int(value)})
    assert cfg.train_dataloader.dataset.dataset.load_interval == 1
