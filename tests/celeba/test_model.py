import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper

from graddrop_mtl.datasets.celeba import CELEBA_ATTRIBUTES
from graddrop_mtl.models.celeba import CelebAMultiTaskNet, HeadPool, build_celeba_model, window_matrix
from graddrop_mtl.registry import MODELS


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return build_celeba_model()


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g) for _ in range(n)]
    labels = [(torch.rand(40, generator=g) < 0.3).float() for _ in range(n)]
    return dict(inputs=inputs, data_samples=dict(gt_label=labels, img_id=[f'{i:06d}.jpg' for i in range(n)]))


def test_layer_stack_matches_appendix(model):
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 512, 512]   # 7 conv + 2 dense = 9 layers
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.backbone.modules()) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules()) == 7
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [512, 512, 40]
    assert linears[0].in_features == 512 * 8 * 8
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.head.modules()) == 2
    assert isinstance(model.head[-1], torch.nn.Linear)                             # no batch norm on the head


def test_shapes_and_modes(model):
    model.eval()
    data = model.data_preprocessor(_batch(3, 64), False)
    assert data['inputs'].dtype == torch.float32 and float(data['inputs'].max()) <= 1.0
    with torch.no_grad():
        assert model.backbone(data['inputs']).shape == (3, 512, 8, 8)
        logits = model(data['inputs'], mode='tensor')
        assert logits.shape == (3, 40)
        preds = model(**data, mode='predict')
    assert len(preds) == 3 and preds[1]['img_id'] == '000001.jpg'
    torch.testing.assert_close(preds[0]['pred_score'], logits[0].sigmoid())
    torch.testing.assert_close(preds[2]['gt_label'], data['data_samples']['gt_label'][2])
    with pytest.raises(ValueError, match='mode'):
        model(data['inputs'], mode='bogus')


def test_forty_losses_equal_per_attribute_bce(model):
    model.eval()
    data = model.data_preprocessor(_batch(4, 32), False)
    losses = model(**data, mode='loss')
    assert list(losses) == [f'loss_{a}' for a in CELEBA_ATTRIBUTES]
    assert list(losses)[0] == 'loss_5_o_Clock_Shadow'
    logits = model(data['inputs'], mode='tensor')
    target = torch.stack(data['data_samples']['gt_label'])
    for j, value in enumerate(losses.values()):
        torch.testing.assert_close(value, F.binary_cross_entropy_with_logits(logits[:, j], target[:, j]))


def test_list_of_dict_samples_and_label_errors(model):
    model.eval()
    batch = _batch(2, 32)
    samples = [dict(gt_label=lab) for lab in batch['data_samples']['gt_label']]
    inputs = torch.stack(batch['inputs']).float() / 255
    a = model(inputs, samples, mode='loss')
    b = model(inputs, dict(gt_label=torch.stack(batch['data_samples']['gt_label'])), mode='loss')
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    with pytest.raises(ValueError, match='gt_label'):
        model(inputs, None, mode='loss')
    with pytest.raises(ValueError, match='shape'):
        model(inputs, dict(gt_label=torch.zeros(2, 39)), mode='loss')


def test_multitask_wrapper_sees_forty_tasks_and_updates():
    torch.manual_seed(0)
    model = build_celeba_model(head_pool=2)   # the appendix layers; a small DENSE-512 input keeps the test fast
    wrapper = build_optim_wrapper(model, dict(type='MultiTaskOptimWrapper', optimizer=dict(type='Adam', lr=1e-3),
                                              method=dict(type='GradDrop'), shared='backbone', grad_mode='loop',
                                              log_per_task=False))
    before = [p.detach().clone() for p in (model.backbone[0][0].weight, model.head[-1].weight)]
    log_vars = model.train_step(_batch(4, 32), wrapper)
    assert list(log_vars) == ['loss']                     # per-task losses are not logged by default
    assert wrapper.method.last_stats()['conflict_frac'] > 0   # 40 task gradients at the conv output disagree
    after = (model.backbone[0][0].weight, model.head[-1].weight)
    assert all(not torch.equal(b, a) for b, a in zip(before, after))


def test_registry_options_and_builder():
    m = MODELS.build(dict(type='CelebAMultiTaskNet', attributes=['a', 'b'], conv_channels=(8, 'M', 16),
                          dense_channels=(12,), head_pool=None, input_size=(8, 6), log_task_losses=True))
    assert isinstance(m, CelebAMultiTaskNet) and m.loss_keys == ['loss_a', 'loss_b']
    assert m.head[2][0].in_features == 16 * 4 * 3
    out = m(torch.rand(2, 3, 8, 6), dict(gt_label=torch.ones(2, 2)), mode='loss')
    _, log_vars = m.parse_losses(out)
    assert set(log_vars) == {'loss', 'loss_a', 'loss_b'}
    with pytest.raises(ValueError, match='input_size'):
        build_celeba_model(head_pool=None)
    with pytest.raises(ValueError, match='unique'):
        build_celeba_model(attributes=['a', 'a'])


def test_head_pool_is_the_stock_pool_and_leaves_a_map_of_its_size_in_the_graph_untouched():
    pool, stock = HeadPool((4, 4)), torch.nn.AdaptiveAvgPool2d((4, 4))
    x = torch.randn(2, 3, 9, 7)
    # a larger map is pooled as by the stock module (up to the rounding of the window sums)
    torch.testing.assert_close(pool(x), stock(x), rtol=0, atol=1e-6)
    y = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = pool(y)
    assert out is y                                  # already 4 x 4: no pooling op (and no backward) in the graph
    assert torch.equal(stock(y), y)                  # which is what the stock module computes there


def test_head_pool_of_a_multiple_of_its_size_is_a_batched_mean_with_the_stock_values_and_gradients():
    pool, stock = HeadPool((4, 4)), torch.nn.AdaptiveAvgPool2d((4, 4))
    x = torch.randn(2, 3, 8, 12, requires_grad=True)
    out = pool(x)
    torch.testing.assert_close(out, stock(x), rtol=0, atol=1e-6)
    assert out.grad_fn.name() == 'WindowMeanBackward'    # not the stock op, whose backward has no batching rule
    v = torch.randn(5, *out.shape)                         # five tasks' gradients at the output, in one call
    (batched,) = torch.autograd.grad(out, x, v, is_grads_batched=True, retain_graph=True)
    (one,) = torch.autograd.grad(stock(x), x, v[3])
    torch.testing.assert_close(batched[3], one, rtol=0, atol=1e-7)


@pytest.mark.parametrize('size,pooled', [((8, 12), (4, 4)), ((16, 16), (8, 8)), ((9, 6), (3, 2))])
def test_window_mean_backward_equals_the_stock_pool_for_every_task_and_differentiates_twice(size, pooled):
    """WindowMean's own backward (the window's gradient repeated by two stacks) gives exactly the stock pool's
    gradient (to the last bit for windows of 2^k elements) for each of the per-task gradients taken in one batched
    call, and has a gradient itself."""
    pool, stock = HeadPool(pooled), torch.nn.AdaptiveAvgPool2d(pooled)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    out = pool(x)
    v = torch.randn(4, *out.shape, dtype=torch.float64)
    (batched,) = torch.autograd.grad(out, x, v, is_grads_batched=True)
    for i in range(4):
        (one,) = torch.autograd.grad(stock(x), x, v[i])
        window = (size[0] // pooled[0]) * (size[1] // pooled[1])
        if window & (window - 1) == 0:     # 2^k elements: dividing by the window size is exact
            assert torch.equal(batched[i], one)
        else:                              # a 3 x 3 window's 1/9 may round differently from the stock op's
            torch.testing.assert_close(batched[i], one, rtol=1e-15, atol=0)
    assert torch.autograd.gradgradcheck(lambda t: pool(t).pow(2), (x,))


@pytest.mark.parametrize('size,out', [(27, 8), (22, 8), (9, 4), (7, 4), (5, 3), (8, 8), (3, 1)])
def test_window_matrix_rows_are_the_adaptive_pool_windows(size, out):
    """Row i averages rows floor(i * size / out) .. ceil((i + 1) * size / out) - 1: each row sums to 1, and applied
    to a signal it gives the stock 1-d adaptive average pool."""
    m = window_matrix(size, out, dtype=torch.float64)
    assert m.shape == (out, size)
    torch.testing.assert_close(m.sum(1), torch.ones(out, dtype=torch.float64), rtol=0, atol=1e-15)
    signal = torch.randn(3, size, dtype=torch.float64)
    torch.testing.assert_close(signal @ m.t(), torch.nn.functional.adaptive_avg_pool1d(signal[None], out)[0],
                               rtol=0, atol=1e-14)
    # the windows overlap (share a row) exactly where size / out is not an integer
    shared = int(((m > 0).sum(0) > 1).sum())
    assert (shared == 0) == (size % out == 0)


@pytest.mark.parametrize('size', [(27, 22), (9, 7), (11, 16)])
def test_head_pool_of_any_other_size_batches_the_per_task_gradients_with_the_stock_values(size):
    """CelebA's stored 218 x 178 images give a 27 x 22 map: it is pooled by the two window matrices (no stock pooling
    op, whose backward has no batching rule), with the stock op's values, per-task gradients in one batched call
    that equal the stock op's gradient task by task, and a gradient of its own (the gradient penalty)."""
    pool, stock = HeadPool((8, 8)), torch.nn.AdaptiveAvgPool2d((8, 8))
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    out = pool(x)
    torch.testing.assert_close(out, stock(x), rtol=0, atol=1e-14)
    names = set()
    todo = [out.grad_fn]
    while todo:                                    # every op between the output and x
        fn = todo.pop()
        if fn is not None:
            names.add(fn.name())
            todo.extend(f for f, _ in fn.next_functions)
    assert not any('AdaptiveAvgPool' in n for n in names), names
    v = torch.randn(5, *out.shape, dtype=torch.float64)
    (batched,) = torch.autograd.grad(out, x, v, is_grads_batched=True, retain_graph=True)
    for i in range(5):
        (one,) = torch.autograd.grad(stock(x), x, v[i])
        torch.testing.assert_close(batched[i], one, rtol=0, atol=1e-14)
    assert torch.autograd.gradgradcheck(lambda t: pool(t).pow(2), (x,))


@pytest.mark.parametrize('output_size', [4, (4, None), (None, 3)])
def test_head_pool_takes_the_stock_output_size_forms(output_size):
    """An int and None entries mean what they mean for AdaptiveAvgPool2d (None keeps that dim's size)."""
    pool, stock = HeadPool(output_size), torch.nn.AdaptiveAvgPool2d(output_size)
    x = torch.randn(2, 3, 9, 7)
    torch.testing.assert_close(pool(x), stock(x), rtol=0, atol=1e-6)
