"""``task_grad_precision``: the per-task gradient pass at a reduced float32 matmul precision, and nothing else."""
import pytest
import torch
from mmengine.model import BaseModel
from torch import nn

from graddrop_mtl.engine import MultiTaskOptimWrapper
from graddrop_mtl.engine.optim_wrapper import fp32_matmul_precision


class DenseHeadMTL(BaseModel):
    """A trunk and a two-layer dense head with one output per task: the per-task gradients at the trunk output go
    through matmuls large enough for oneDNN's bfloat16 path (small ones stay exact)."""

    def __init__(self, n_tasks: int = 4, width: int = 64, hidden: int = 128):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, width), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_tasks))

    def forward(self, x, y, mode='loss'):
        preds = self.head(self.trunk(x))
        return {f'loss_{i}': ((preds[:, i] - y[:, i]) ** 2).mean() for i in range(preds.shape[1])}


def data(seed=0, n=16, n_tasks=4):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(n, 8, generator=g), y=torch.randn(n, n_tasks, generator=g))


def bf16_changes_the_per_task_product() -> bool:
    """Whether the per-task gradients at the trunk output (the model's batched backward through the head) come out
    different under ``fp32_precision='bf16'`` on this machine. The effect itself, not a capability flag: a CPU may
    report bfloat16 support while its kernels keep these products exact (AVX-512 BF16 without AMX does)."""
    torch.manual_seed(0)
    model = DenseHeadMTL()
    batch = data()
    feat = model.trunk(batch['x']).detach().requires_grad_()
    preds = model.head(feat)
    stacked = ((preds - batch['y']) ** 2).mean(0)
    eye = torch.eye(stacked.numel())

    def per_task():
        return torch.autograd.grad(stacked, feat, grad_outputs=eye, is_grads_batched=True, retain_graph=True)[0]

    exact = per_task()
    with fp32_matmul_precision('cpu', 'bf16'):
        low = per_task()
    return not torch.equal(exact, low)


def trained(precision, method=None, steps=1, grad_mode='batched'):
    torch.manual_seed(0)
    model = DenseHeadMTL()
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                                    method=method or dict(type='GradDrop', leak=1.0), shared='trunk', seed=1,
                                    grad_mode=grad_mode, task_grad_precision=precision)
    for step in range(steps):
        model.train_step(data(step), wrapper)
    return model, wrapper


def test_the_precision_holds_inside_the_block_and_is_put_back():
    backend = torch.backends.mkldnn.matmul
    before = backend.fp32_precision
    with fp32_matmul_precision('cpu', 'bf16'):
        assert backend.fp32_precision == 'bf16'
    assert backend.fp32_precision == before
    with pytest.raises(RuntimeError, match='inside'):
        with fp32_matmul_precision('cpu', dict(cpu='bf16')):
            assert backend.fp32_precision == 'bf16'
            raise RuntimeError('inside')
    assert backend.fp32_precision == before
    with fp32_matmul_precision('cpu', dict(cuda='tf32')):    # no entry for the CPU: untouched
        assert backend.fp32_precision == before


def test_bf16_changes_only_the_per_task_pass():
    """GradDrop with leak 1 sends the sum of the per-task gradients into the trunk. At 'bf16' the trunk's update
    carries the rounding of that pass; the heads, updated by the float32 backward, are bit for bit as at full
    precision; the global setting is back after the step."""
    exact, _ = trained(None)
    low, _ = trained('bf16')
    assert torch.backends.mkldnn.matmul.fp32_precision == 'none'
    for a, b in zip(exact.head.parameters(), low.head.parameters()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    start = DenseHeadMTL()            # the initial parameters of both runs
    step_exact = exact.trunk[0].weight - start.trunk[0].weight
    step_low = low.trunk[0].weight - start.trunk[0].weight
    error = ((step_low - step_exact).abs().max() / step_exact.abs().max()).item()
    if bf16_changes_the_per_task_product():
        assert 0 < error < 2e-2
    else:                              # bf16 changes no product on this CPU: the per-task pass is exact too
        assert error == 0


def test_ieee_and_a_dict_without_the_device_are_exact():
    exact, _ = trained(None, steps=2)
    for precision in ('ieee', dict(cuda='tf32')):
        model, _ = trained(precision, steps=2)
        for a, b in zip(exact.parameters(), model.parameters()):
            assert torch.equal(a, b)


def test_auto_mode_still_agrees_at_bf16():
    """'auto' checks that the batched mode agrees with the per-task loop: at 'bf16' both round the same inputs,
    so the batched mode is still accepted, and the timing runs leave the global setting as it was."""
    _, wrapper = trained('bf16', method=dict(type='GradDrop'), steps=2, grad_mode='auto')
    assert wrapper.grad_mode in ('loop', 'batched')     # not refused: 'differs from the loop' would leave only loop
    assert torch.backends.mkldnn.matmul.fp32_precision == 'none'


@pytest.mark.parametrize('precision, match', [
    ('bf17', "got 'bf17'"),
    (dict(gpu='tf32'), "unknown device type 'gpu'"),
    (dict(cuda='bf16'), r"task_grad_precision\['cuda'\]='bf16'"),
    (3, 'got int'),
])
def test_bad_precisions_are_named(precision, match):
    model = DenseHeadMTL()
    with pytest.raises((ValueError, TypeError), match=match):
        MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), shared='trunk',
                              task_grad_precision=precision)


def test_a_precision_the_device_lacks_is_named():
    """A string applies to every device; 'bf16' exists for the CPU only, so on CUDA the per-task pass refuses it
    by name (a dict, checked at construction, sets one precision per device instead)."""
    with pytest.raises(ValueError, match="'bf16' is not available on 'cuda'"):
        with fp32_matmul_precision('cuda', 'bf16'):
            pass
