"""grad_mode='auto' on mmdet3d's PointPillars (reduced grid): a user of the stock head who sets no linear_heads gets
the sparse per-task gradients through the head's 1x1 convolutions, found on the first step, equal to the loop's."""
import pytest
import torch

pytest.importorskip('mmdet3d')    # the det3d extra; tests/det3d covers the model itself

from tests.det3d.test_pointpillars_mtl import fake_batch  # noqa: E402

REDUCED = 'configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'


def build(stock_head: bool):
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import graddrop_mtl.det3d.models  # noqa: F401
    cfg = Config.fromfile(REDUCED)
    if stock_head:
        cfg.model.pts_bbox_head.type = 'Anchor3DHead'     # mmdet3d's own head: three losses
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize('stock_head', [True, False], ids=['Anchor3DHead', 'MultiTaskAnchor3DHead'])
def test_auto_finds_the_heads_1x1_convolutions_without_linear_heads(stock_head):
    from graddrop_mtl.engine import MultiTaskOptimWrapper
    from graddrop_mtl.methods.blocks import TaskBlocks
    cfg, model = build(stock_head)
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0), method=dict(type='GradDrop'),
                                    shared='pts_neck')       # grad_mode='auto', no linear_heads
    data = model.data_preprocessor(fake_batch(npts=3000), True)
    with wrapper.optim_context(model):
        model(**data, mode='loss')
    cap, wrapper._capture = wrapper._capture, None
    names, losses = wrapper._task_losses(cap.losses)
    blocks = wrapper._per_task_grads(losses, cap.detached, cap.head_calls)
    assert wrapper.grad_mode == 'linear' and isinstance(blocks, TaskBlocks)
    reason = wrapper._task_grads.reason
    assert "['pts_bbox_head.conv_cls', 'pts_bbox_head.conv_dir_cls', 'pts_bbox_head.conv_reg']" in reason
    loop = wrapper._task_grads.loop(losses, cap.detached)[0]
    scale = float(loop.abs().max())
    torch.testing.assert_close(blocks.to_dense(), loop, rtol=1e-4, atol=1e-5 * scale)
    assert blocks.base_tasks == [0] and len(names) == (3 if stock_head else 9)
