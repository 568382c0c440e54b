"""MultiTaskOptimWrapper under stock (CPU) DDP: 2 and 4 gloo processes, tiny models.

Every scenario runs in spawned processes (``run_workers``): each rank trains the same initial model on its own
sub-batch and writes what it ends with; the test compares the ranks with each other and with single-process
references. What is guarded: parameters and method state identical on all ranks for every method, GradNorm/MGDA
weights computed from the all-reduced statistics (issue 20.1), the random streams across a resume (20.2), one skip
decision and one loss scale under mixed precision (20.3).
"""
import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from graddrop_mtl.methods import METHODS as REGISTERED

from .toy import ToyConvMTL, ToyMTL, toy_conv_data, toy_data

#: Every registered method (with default arguments), and variants with and without state, random or not, composed.
METHODS = [dict(type='Sum'), dict(type='GradDrop'), dict(type='GradDrop', leak=[0.0, 0.5, 1.0]),
           dict(type='RandomGradDrop'), dict(type='PCGrad'), dict(type='PCGrad', iterative=True),
           dict(type='MGDA'), dict(type='MGDA', normalization='l2'), dict(type='GradNorm'),
           dict(type='GradPenalty', weight=0.1),
           dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop')),
           dict(type='Compose', weighting=dict(type='MGDA'), then=dict(type='PCGrad'))]
METHODS += [dict(type=name) for name in sorted(REGISTERED) if name != 'Compose' and dict(type=name) not in METHODS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world, port, scenario, kwargs, out_path):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from graddrop_mtl.engine import init_cpu_distributed
    init_cpu_distributed()
    result = globals()[scenario](rank, world, **kwargs)
    torch.save(result, f'{out_path}.{rank}')
    # Leave without tearing the gloo process group down: its destructor joins a worker thread that may wait for the
    # GIL held by the destructor (a torch teardown deadlock seen here once in CI), so exit right after a barrier.
    torch.distributed.barrier()
    os._exit(0)


def run_workers(tmp_path, world, scenario, **kwargs):
    """Run ``scenario(rank, world, **kwargs)`` in ``world`` gloo processes; returns each rank's result."""
    out = str(tmp_path / scenario)
    mp.spawn(_worker, args=(world, _free_port(), scenario, kwargs, out), nprocs=world, join=True)
    return [torch.load(f'{out}.{r}', weights_only=False) for r in range(world)]


def _shard(data, rank, world):
    n = next(iter(data.values())).shape[0] // world
    return {k: v[rank * n:(rank + 1) * n] for k, v in data.items()}


def _ddp_setup(method, init_state, model_cls=ToyMTL, seed=3, **kwargs):
    from graddrop_mtl.engine import MMCPUDistributedDataParallel, MultiTaskOptimWrapper
    model = model_cls()
    model.load_state_dict(init_state)
    # One parameter per DDP bucket, before and after DDP re-packs its buckets (after the first iteration): in more
    # than two processes the order in which gloo adds an element's contributions depends on its offset in the
    # bucket, so with DDP's default buckets a fresh DDP (a resumed run) differs from a long-running one in the last
    # bit, plain DDP alone included (docs/distributed.md).
    ddp = MMCPUDistributedDataParallel(module=model, device_ids=None, bucket_cap_mb_list=[1e-6])
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=copy.deepcopy(method),
                                    shared='trunk', seed=seed, **kwargs)
    return model, ddp, wrapper


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _assert_same(a, b, what):
    """Bit-identical nested tensors / lists / dicts."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _assert_same(a[k], b[k], f'{what}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{what}[{i}]')
    else:
        assert a == b, what


# ------------------------------------------------------------------------------------------- 20.1: one state
def methods_sync(rank, world, init_state, steps):
    """Every method a few steps on per-rank sub-batches; record parameters, method state, and for GradNorm/MGDA
    the statistics each rank saw at every combine (to rebuild the single-process reference)."""
    results = []
    for method in METHODS:
        model, ddp, wrapper = _ddp_setup(method, init_state)
        seen = []
        if method['type'] in ('GradNorm', 'MGDA'):
            combine = wrapper.method.combine

            def spy(grads, combine=combine, seen=seen, **kw):
                out = combine(grads, **kw)
                seen.append(dict(grads=grads.detach().clone(), losses=kw['losses'].detach().clone(),
                                 weights=wrapper.method.task_weights.detach().clone()))
                return out

            wrapper.method.combine = spy
        for step in range(steps):
            ddp.train_step(_shard(toy_data(n=4 * world, seed=step), rank, world), wrapper)
        results.append(dict(params=_params(model), state=wrapper.state_dict()['mtl']['method'], seen=seen))
    return results


@pytest.mark.slow
@pytest.mark.parametrize('world', [2, 4])
def test_every_method_keeps_one_state_on_all_ranks(tmp_path, world):
    """Parameters AND method state are bit-identical on all ranks; GradNorm's and MGDA's weights at every step are
    the single-process weights of the all-reduced statistics (the ranks' per-task gradients concatenated, the
    losses averaged)."""
    from graddrop_mtl.methods import build_method
    torch.manual_seed(0)
    init_state = copy.deepcopy(ToyMTL().state_dict())
    ranks = run_workers(tmp_path, world, 'methods_sync', init_state=init_state, steps=3)
    for m, method in enumerate(METHODS):
        name = f'{method} rank'
        for r in range(1, world):
            _assert_same(ranks[r][m]['params'], ranks[0][m]['params'], f'{name} {r} params')
            _assert_same(ranks[r][m]['state'], ranks[0][m]['state'], f'{name} {r} method state')
        assert any(not torch.equal(p, q) for p, q in zip(ranks[0][m]['params'], init_state.values())), name
        if not ranks[0][m]['seen']:
            continue
        reference = build_method(copy.deepcopy(method))
        for step in range(3):
            grads = torch.cat([ranks[r][m]['seen'][step]['grads'] for r in range(world)], 1)
            losses = torch.stack([ranks[r][m]['seen'][step]['losses'] for r in range(world)]).mean(0)
            reference.combine(grads, losses=losses)
            assert not torch.equal(ranks[0][m]['seen'][step]['grads'], ranks[1][m]['seen'][step]['grads'])
            for r in range(world):
                torch.testing.assert_close(ranks[r][m]['seen'][step]['weights'], reference.task_weights,
                                           rtol=1e-5, atol=1e-7, msg=f'{name} {r} step {step} weights')


def ddp_sum(rank, world, init_state, steps):
    model, ddp, wrapper = _ddp_setup(dict(type='Sum'), init_state)
    for step in range(steps):
        ddp.train_step(_shard(toy_data(n=8, seed=step), rank, world), wrapper)
    return _params(model)


@pytest.mark.slow
def test_ddp_sum_matches_one_process_on_the_combined_batch(tmp_path):
    from graddrop_mtl.engine import MultiTaskOptimWrapper
    torch.manual_seed(0)
    model = ToyMTL()
    init_state = copy.deepcopy(model.state_dict())
    ranks = run_workers(tmp_path, 2, 'ddp_sum', init_state=init_state, steps=3)
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk')
    for step in range(3):
        model.train_step(toy_data(n=8, seed=step), wrapper)
    for r in range(2):
        for p, q in zip(ranks[r], model.parameters()):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- 20.2: resume
RESUME_METHODS = [dict(type='GradDrop'), dict(type='RandomGradDrop'), dict(type='PCGrad'), dict(type='GradNorm'),
                  dict(type='ExcessMTL'), dict(type='MoCo')]      # per-feature state (batch sums)


def resume(rank, world, init_state, k):
    """2k steps in one go, and k steps + resume from RANK 0's checkpoint (as mmengine saves it) + k steps."""
    from mmengine.dist import broadcast_object_list
    results = []
    for method in RESUME_METHODS:
        model, ddp, wrapper = _ddp_setup(method, init_state, grad_mode='loop')
        for step in range(k):
            ddp.train_step(_shard(toy_data(n=4 * world, seed=step), rank, world), wrapper)
        checkpoint = [copy.deepcopy(dict(model=model.state_dict(), optim=wrapper.state_dict()))]
        broadcast_object_list(checkpoint, src=0)
        for step in range(k, 2 * k):
            ddp.train_step(_shard(toy_data(n=4 * world, seed=step), rank, world), wrapper)
        straight = dict(params=_params(model), state=wrapper.state_dict()['mtl'])

        model, ddp, wrapper = _ddp_setup(method, init_state, seed=rank + 100,    # the checkpoint's seed must win
                                         grad_mode='loop')
        model.load_state_dict(checkpoint[0]['model'])
        wrapper.load_state_dict(checkpoint[0]['optim'])
        for step in range(k, 2 * k):
            ddp.train_step(_shard(toy_data(n=4 * world, seed=step), rank, world), wrapper)
        results.append(dict(straight=straight, resumed=dict(params=_params(model), state=wrapper.state_dict()['mtl'])))
    return results


@pytest.mark.slow
@pytest.mark.parametrize('world', [2, 4])
def test_resumed_run_continues_bit_identically_on_every_rank(tmp_path, world):
    torch.manual_seed(0)
    init_state = copy.deepcopy(ToyMTL().state_dict())
    ranks = run_workers(tmp_path, world, 'resume', init_state=init_state, k=2)
    for r in range(world):
        for method, result in zip(RESUME_METHODS, ranks[r]):
            _assert_same(result['resumed'], result['straight'], f'{method} rank {r}')


# ------------------------------------------------------------------------------------------- 20.3: AMP + DDP
def amp_one_rank_fails(rank, world, init_state, dtype, init_scale, bad):
    """Mixed precision; on the second step rank 1 alone has a non-finite loss (``bad='loss'``) or per-task
    gradients that overflow at the scale (``bad='overflow'``)."""
    out = []
    model, ddp, wrapper = _ddp_setup(dict(type='GradDrop'), init_state, model_cls=ToyConvMTL,
                                     linear_heads=['conv_cls', 'conv_reg'],
                                     amp=dict(dtype=dtype, loss_scale=dict(init_scale=init_scale, growth_interval=3)))
    for step in range(5):
        data = _shard(toy_conv_data(n=2 * world, seed=step), rank, world)
        if step == 1 and rank == 1:
            if bad == 'loss':
                data['y'][0, 0, 0, 0] = float('inf')
                data['pos'][0, 0, 0] = 1.0
            else:
                data['y'] = data['y'] * (1e6 if dtype == 'float16' else 1e18)
        before = _params(model)
        ddp.train_step(data, wrapper)
        out.append(dict(scale=wrapper.loss_scaler.get_scale(), changed=any(
            not torch.equal(a, b) for a, b in zip(before, _params(model))), skipped=wrapper.skipped_steps))
    return dict(steps=out, params=_params(model))


@pytest.mark.slow
@pytest.mark.parametrize('bad', ['loss', 'overflow'])
@pytest.mark.parametrize('dtype,init_scale', [('bfloat16', 2.0**100), ('float16', 2.0**8)])
def test_amp_one_decision_and_one_scale_on_all_ranks(tmp_path, dtype, init_scale, bad):
    """Rank 1 alone sees a non-finite loss or an overflow: every rank skips the step and keeps the same scale (a
    non-finite loss leaves it, an overflow halves it on every rank); the ranks stay identical afterwards."""
    torch.manual_seed(0)
    init_state = copy.deepcopy(ToyConvMTL().state_dict())
    ranks = run_workers(tmp_path, 2, 'amp_one_rank_fails', init_state=init_state, dtype=dtype,
                        init_scale=init_scale, bad=bad)
    for r in range(2):
        steps = ranks[r]['steps']
        assert [s['scale'] for s in steps] == [s['scale'] for s in ranks[0]['steps']], r
        assert steps[1]['scale'] == (init_scale if bad == 'loss' else init_scale / 2)
        assert [s['changed'] for s in steps] == [True, False, True, True, True], r
        assert steps[1]['skipped'] == 1
    _assert_same(ranks[1]['params'], ranks[0]['params'], 'params')


# ------------------------------------------------------------------------------------------- one grad_mode
def auto_mode_per_rank_memory(rank, world, init_state, avail):
    """``grad_mode='auto'`` where the ranks see different free memory (``avail[rank]`` bytes)."""
    import graddrop_mtl.engine.task_grads as tg
    tg.available_memory = lambda device: avail[rank]
    model, ddp, wrapper = _ddp_setup(dict(type='GradDrop'), init_state, grad_mode='auto')
    for step in range(2):
        ddp.train_step(_shard(toy_data(n=4 * world, seed=step), rank, world), wrapper)
    return dict(mode=wrapper.grad_mode, params=_params(model))


@pytest.mark.slow
def test_auto_takes_one_grad_mode_on_all_ranks(tmp_path):
    """Rank 1 has room for one dense stack of per-task gradients but not for two (the loop and batched to compare):
    every rank takes the loop, decided from the smallest memory of all ranks, not each from its own."""
    torch.manual_seed(0)
    init_state = copy.deepcopy(ToyMTL().state_dict())
    stack = 3 * 4 * 16 * 4          # 3 tasks x [4 samples, width 16] float32 per rank
    ranks = run_workers(tmp_path, 2, 'auto_mode_per_rank_memory', init_state=init_state,
                        avail=[2**40, int(1.5 * stack / 0.25)])
    assert [r['mode'] for r in ranks] == ['loop', 'loop']
    _assert_same(ranks[1]['params'], ranks[0]['params'], 'params')
