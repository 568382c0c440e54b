"""mmengine integration: the multitask optim wrapper and the launch helpers (CPU distributed, checkpoints, freed
memory kept for reuse)."""
from .hooks import SineTrajectoryHook
from .launch import MMCPUDistributedDataParallel, init_cpu_distributed, trust_local_checkpoints
from .memory import keep_freed_memory
from .optim_wrapper import MultiTaskOptimWrapper

__all__ = ['MultiTaskOptimWrapper', 'SineTrajectoryHook', 'MMCPUDistributedDataParallel', 'init_cpu_distributed',
           'trust_local_checkpoints', 'keep_freed_memory']
