"""mmengine integration: the multitask optim wrapper and the launch helpers (CPU distributed, checkpoints)."""
from .hooks import SineTrajectoryHook
from .launch import MMCPUDistributedDataParallel, init_cpu_distributed, trust_local_checkpoints
from .optim_wrapper import MultiTaskOptimWrapper

__all__ = ['MultiTaskOptimWrapper', 'SineTrajectoryHook', 'MMCPUDistributedDataParallel', 'init_cpu_distributed',
           'trust_local_checkpoints']
