"""mmengine integration: the multitask optim wrapper and the launch helpers (CPU distributed, checkpoints, freed
memory kept for reuse).

The wrapper (:mod:`.optim_wrapper`) orchestrates one idea per module: :mod:`.capture` (forward hooks),
:mod:`.tasks` (loss grouping), :mod:`.task_grads` and :mod:`.linear_heads` (per-task gradients),
:mod:`.combine` (the method's combination and the heads' loss), :mod:`.sync` (cross-rank decisions and the
methods' statistics reducer), :mod:`.streams` (counter-based random streams), :mod:`.amp` (autocast and loss
scaling), :mod:`.precision` (``task_grad_precision``), :mod:`.mtl_log` (logged scalars)."""
from .hooks import SineTrajectoryHook
from .launch import MMCPUDistributedDataParallel, init_cpu_distributed, trust_local_checkpoints
from .memory import keep_freed_memory
from .optim_wrapper import MultiTaskOptimWrapper

__all__ = ['MultiTaskOptimWrapper', 'SineTrajectoryHook', 'MMCPUDistributedDataParallel', 'init_cpu_distributed',
           'trust_local_checkpoints', 'keep_freed_memory']
