"""MultiTaskOptimWrapper under stock (CPU) DDP: 2 gloo processes."""
import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from .toy import ToyMTL, toy_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world, port, method, init_state, out_path, steps):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from graddrop_mtl.engine import MMCPUDistributedDataParallel, MultiTaskOptimWrapper, init_cpu_distributed
    init_cpu_distributed()
    model = ToyMTL()
    model.load_state_dict(init_state)
    ddp = MMCPUDistributedDataParallel(module=model, device_ids=[rank])
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), method=method, shared='trunk',
                                    seed=3)
    for step in range(steps):
        data = toy_data(n=8, seed=step)
        half = {k: v[rank * 4:(rank + 1) * 4] for k, v in data.items()}
        ddp.train_step(half, wrapper)
    torch.save([p.detach() for p in model.parameters()], f'{out_path}.{rank}')
    # Leave without tearing the gloo process group down: its destructor joins a worker thread that may wait for the
    # GIL held by the destructor (a torch teardown deadlock seen here once in CI), so exit right after a barrier.
    torch.distributed.barrier()
    os._exit(0)


def run_ddp(tmp_path, method, init_state, steps=3):
    out = str(tmp_path / 'params')
    mp.spawn(_worker, args=(2, _free_port(), method, init_state, out, steps), nprocs=2, join=True)
    return [torch.load(f'{out}.{r}') for r in range(2)]


@pytest.mark.slow
def test_ddp_sum_matches_one_process_on_the_combined_batch(tmp_path):
    from graddrop_mtl.engine import MultiTaskOptimWrapper
    torch.manual_seed(0)
    model = ToyMTL()
    init_state = copy.deepcopy(model.state_dict())
    ranks = run_ddp(tmp_path, dict(type='Sum'), init_state)
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk')
    for step in range(3):
        model.train_step(toy_data(n=8, seed=step), wrapper)
    for r in range(2):
        for p, q in zip(ranks[r], model.parameters()):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('method', [dict(type='GradDrop'), dict(type='GradNorm')], ids=lambda m: m['type'])
def test_ddp_ranks_stay_identical(tmp_path, method):
    """Each rank applies the method to its own sub-batch; DDP's single backward keeps parameters in sync."""
    torch.manual_seed(0)
    init_state = copy.deepcopy(ToyMTL().state_dict())
    ranks = run_ddp(tmp_path, method, init_state)
    for p, q in zip(*ranks):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert any(not torch.equal(p, q) for p, q in zip(ranks[0], init_state.values()))
