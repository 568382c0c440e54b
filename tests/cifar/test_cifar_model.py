"""DenseNet-BC with per-domain batch norm: architecture, domain separation, losses, predictions, the wrapper."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graddrop_mtl.methods import GradDrop
from graddrop_mtl.models.densenet import DenseNetBC, DenseNetTransfer, DomainBatchNorm2d, DomainGroups


def tiny(**kwargs) -> DenseNetTransfer:
    torch.manual_seed(0)
    return DenseNetTransfer(depth=10, growth_rate=4, **kwargs)


def batch(n_per_domain: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * n_per_domain, 3, 32, 32, generator=g)
    labels = torch.cat([torch.randint(0, 1000, (n_per_domain,), generator=g),
                        torch.randint(0, 100, (n_per_domain,), generator=g)])
    domain = torch.tensor([0] * n_per_domain + [1] * n_per_domain)
    return x, dict(gt_label=labels, domain=domain)


# ------------------------------------------------------------------------------------------------ architecture
def test_densenet_bc_100_layout():
    net = DenseNetBC(depth=100, growth_rate=12, compression=0.5)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 99                      # + the linear head = 100 layers
    assert [len(b) for b in net.blocks] == [16, 16, 16]
    assert net.out_channels == 342              # 24 -> 216 -> 108 -> 300 -> 150 -> 342
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    n_dbn = sum(isinstance(m, DomainBatchNorm2d) for m in net.modules())
    assert n_bn == 2 * n_dbn and n_dbn == 98     # every conv but the stem is preceded by a per-domain BN
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    x = torch.rand(2, 3, 32, 32)
    groups = DomainGroups.from_ids(torch.tensor([0, 1]), 2)
    with torch.no_grad():
        assert net(x, groups).shape == (2, 342, 8, 8)


@pytest.mark.parametrize('depth', [9, 12, 101, 4])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match='6n \\+ 4'):
        DenseNetBC(depth=depth)


def test_model_exposes_backbone_and_two_heads():
    model = DenseNetTransfer(depth=16, growth_rate=6)
    assert isinstance(model.get_submodule('backbone'), DenseNetBC)
    assert model.heads['imagenet'].out_features == 1000 and model.heads['cifar'].out_features == 100
    with pytest.raises(ValueError, match='equal length'):
        DenseNetTransfer(depth=10, growth_rate=4, domains=('a', 'b'), num_classes=(10,))


# ------------------------------------------------------------------------------------------------ per-domain BN
def test_domain_bn_keeps_separate_statistics():
    torch.manual_seed(0)
    bn = DomainBatchNorm2d(3, 2, momentum=1.0)            # momentum 1: running stats = last batch stats
    x = torch.randn(6, 3, 4, 4)
    x[[1, 3, 5]] = x[[1, 3, 5]] * 5.0 + 10.0               # domain 1 rows: another scale and offset
    ids = torch.tensor([0, 1, 0, 1, 0, 1])                 # interleaved: the general (index) path
    groups = DomainGroups.from_ids(ids, 2)
    out = bn(x, groups)
    d0, d1 = x[[0, 2, 4]], x[[1, 3, 5]]
    torch.testing.assert_close(bn.bns[0].running_mean, d0.mean((0, 2, 3)))
    torch.testing.assert_close(bn.bns[1].running_mean, d1.mean((0, 2, 3)))
    torch.testing.assert_close(bn.bns[1].running_var, d1.var((0, 2, 3), unbiased=True))
    # every row normalised with its own domain's batch statistics, rows back in batch order
    ref0 = F.batch_norm(d0, None, None, training=True)
    ref1 = F.batch_norm(d1, None, None, training=True)
    torch.testing.assert_close(out[[0, 2, 4]], ref0)
    torch.testing.assert_close(out[[1, 3, 5]], ref1)
    # eval: each domain's running statistics
    bn.eval()
    out = bn(x, groups)
    torch.testing.assert_close(out[[1, 3, 5]], (d1 - bn.bns[1].running_mean.view(1, 3, 1, 1))
                               / (bn.bns[1].running_var.view(1, 3, 1, 1) + 1e-5).sqrt())


def test_domain_groups_contiguous_and_permuted():
    g = DomainGroups.from_ids(torch.tensor([0, 0, 1, 1, 1]), 2)
    assert g.inverse is None and g.rows == (slice(0, 2), slice(2, 5))
    g = DomainGroups.from_ids(torch.tensor([1, 0, 1, 0]), 2)
    x = torch.arange(4.0)
    assert [p.tolist() for p in g.split(x)] == [[1.0, 3.0], [0.0, 2.0]]
    assert g.merge(g.split(x)).tolist() == x.tolist()
    with pytest.raises(ValueError, match=r'domain ids must lie in \[0, 1\]'):
        DomainGroups.from_ids(torch.tensor([0, 2]), 2)


def test_task_losses_see_only_their_rows_of_the_shared_activation():
    model = tiny()
    model.train()
    x, samples = batch()
    groups = model.domain_groups(samples, len(x))
    x.requires_grad_(True)
    feats = model.extract_feat(x, groups)
    losses = model.loss(model.head_logits(feats, groups), groups, samples)
    g_cifar_a, g_cifar_x = torch.autograd.grad(losses['loss_cifar'], [feats, x], retain_graph=True)
    g_imnet_a, g_imnet_x = torch.autograd.grad(losses['loss_imagenet'], [feats, x])
    assert g_cifar_a[:4].abs().max() == 0 and g_cifar_a[4:].abs().sum() > 0
    assert g_imnet_a[4:].abs().max() == 0 and g_imnet_a[:4].abs().sum() > 0
    # nothing in the trunk mixes domains either (per-domain batch statistics)
    assert g_cifar_x[:4].abs().max() == 0 and g_imnet_x[4:].abs().max() == 0


# ------------------------------------------------------------------------------------------------ modes
def test_loss_mode_keys_order_and_values():
    model = tiny()
    x, samples = batch()
    losses = model(x, samples, mode='loss')
    assert list(losses) == ['loss_imagenet', 'loss_cifar']
    logits = model(x, samples, mode='tensor')
    assert logits['imagenet'].shape == (4, 1000) and logits['cifar'].shape == (4, 100)
    torch.testing.assert_close(losses['loss_cifar'], F.cross_entropy(logits['cifar'], samples['gt_label'][4:]))
    torch.testing.assert_close(losses['loss_imagenet'],
                               F.cross_entropy(logits['imagenet'], samples['gt_label'][:4]))
    assert math.isfinite(float(losses['loss_imagenet'].detach()))


def test_loss_needs_both_domains_and_domain_ids():
    model = tiny()
    x, samples = batch()
    with pytest.raises(ValueError, match=r"no \['imagenet'\] rows"):
        model(x[4:], dict(gt_label=samples['gt_label'][4:], domain=samples['domain'][4:]), mode='loss')
    with pytest.raises(ValueError, match='domain id'):
        model(x, None, mode='loss')
    with pytest.raises(ValueError, match='invalid mode'):
        model(x, samples, mode='train')


def test_predict_follows_batch_order_with_each_domains_head():
    model = tiny()
    model.eval()
    x, samples = batch()
    perm = torch.tensor([4, 0, 5, 1, 6, 2, 7, 3])      # interleaved domains
    with torch.no_grad():
        grouped = model(x, samples, mode='predict')
        mixed = model(x[perm], {k: v[perm] for k, v in samples.items()}, mode='predict')
    assert [p['domain'] for p in mixed] == [1, 0, 1, 0, 1, 0, 1, 0]
    for j, i in enumerate(perm.tolist()):
        torch.testing.assert_close(mixed[j]['logits'], grouped[i]['logits'])
        assert mixed[j]['gt_label'] == int(samples['gt_label'][i])
        assert mixed[j]['pred_label'] == int(grouped[i]['logits'].argmax())
    assert grouped[0]['logits'].shape == (1000,) and grouped[7]['logits'].shape == (100,)


def test_data_preprocessor_divides_by_256():
    model = tiny()
    raw = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    data = model.data_preprocessor(dict(inputs=raw, data_samples=dict(domain=torch.tensor([0, 1]))), False)
    assert data['inputs'].dtype == torch.float32 and torch.all(data['inputs'] == 0.5)


# ------------------------------------------------------------------------------------------------ with GradDrop
def test_batch_separated_graddrop_leaks_follow_imagenet_cifar_order():
    """With leak [1.0, 0.0] the ImageNet rows of the trunk gradient are exactly the ImageNet task gradient, and the
    CIFAR rows are the CIFAR gradient with some elements dropped."""
    model = tiny()
    x, samples = batch()
    groups = model.domain_groups(samples, len(x))
    feats = model.extract_feat(x, groups)
    losses = model.loss(model.head_logits(feats, groups), groups, samples)
    grads = torch.stack([torch.autograd.grad(losses[k], feats, retain_graph=True)[0]
                         for k in ('loss_imagenet', 'loss_cifar')])
    method = GradDrop(k=0.25, leak=[1.0, 0.0], batch_separated=True)
    out = method.combine(grads, activation=feats.detach(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:4], grads[0, :4])
    cifar = grads[1, 4:]
    kept = out[4:] == cifar
    dropped = out[4:] == 0
    assert torch.all(kept | dropped)
    assert 0 < (dropped & (cifar != 0)).float().mean() < 1


def test_train_step_through_the_multitask_wrapper_updates_both_heads_and_trunk():
    from mmengine.optim import build_optim_wrapper

    import graddrop_mtl.engine  # noqa: F401  (registers MultiTaskOptimWrapper)
    model = tiny()
    wrapper = build_optim_wrapper(model, dict(
        type='MultiTaskOptimWrapper', optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.999)),
        method=dict(type='GradDrop', k=0.25, leak=[1.0, 0.0], batch_separated=True), shared='backbone',
        tasks=['loss_imagenet', 'loss_cifar'], seed=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, samples = batch()
    raw = (x * 255).to(torch.uint8)
    log_vars = model.train_step(dict(inputs=raw, data_samples=samples), wrapper)
    assert math.isfinite(float(torch.as_tensor(log_vars['loss_cifar']).detach()))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert 'heads.imagenet.weight' in changed and 'heads.cifar.weight' in changed
    assert 'backbone.stem.weight' in changed
    assert 'backbone.blocks.0.0.norm1.bns.0.weight' in changed and 'backbone.blocks.0.0.norm1.bns.1.weight' in changed


def test_sum_through_the_wrapper_equals_plain_training():
    """The transfer baseline (Sum at the shared activation) makes exactly the update of one plain backward."""
    import copy

    from mmengine.optim import build_optim_wrapper

    import graddrop_mtl.engine  # noqa: F401
    plain_model = tiny()
    mtl_model = copy.deepcopy(plain_model)
    optimizer = dict(type='Adam', lr=1e-3, betas=(0.9, 0.999))
    plain = build_optim_wrapper(plain_model, dict(type='OptimWrapper', optimizer=optimizer))
    mtl = build_optim_wrapper(mtl_model, dict(type='MultiTaskOptimWrapper', optimizer=optimizer,
                                              method=dict(type='Sum'), shared='backbone',
                                              tasks=['loss_imagenet', 'loss_cifar']))
    x, samples = batch()
    data = dict(inputs=(x * 255).to(torch.uint8), data_samples=samples)
    for _ in range(2):
        plain_model.train_step(dict(data), plain)
        mtl_model.train_step(dict(data), mtl)
    for (name, p), q in zip(plain_model.named_parameters(), mtl_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_benchmark_tool_times_every_variant():
    from .conftest import load_tool
    bench = load_tool('analysis/benchmark_transfer')
    result = bench.benchmark(depth=10, growth_rate=4, methods=('plain', 'Sum', 'GradDrop'), iters=1, warmup=1,
                             rounds=1, per_domain=2, clock='cpu')
    assert set(result) == {'plain', 'Sum', 'GradDrop'} and all(t > 0 for t in result.values())
    with pytest.raises(ValueError, match='unknown methods'):
        bench.benchmark(depth=10, growth_rate=4, methods=('PCGradX',))
