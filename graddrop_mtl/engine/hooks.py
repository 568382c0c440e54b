"""Hooks of graddrop_mtl."""
from __future__ import annotations

import os.path as osp

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..methods.base import sum_tasks
from ..registry import HOOKS


@HOOKS.register_module()
class SineTrajectoryHook(Hook):
    """Save the sine model's per-step total losses and final weights to ``<work_dir>/sine_trajectory.npz``.

    Arrays: ``total_loss [steps + 1, R]`` (row t: before update t; last row: after training), ``weights [R]`` (final)
    and ``replica_ids [R]``.
    """

    priority = 'LOW'

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with torch.no_grad():
            w = model.trunk()
            final = sum_tasks(model.task_losses(w))
        history = torch.stack(model.trajectory + [final]) if model.trajectory else final[None]
        np.savez_compressed(osp.join(runner.work_dir, 'sine_trajectory.npz'),
                            total_loss=history.double().cpu().numpy(), weights=w.detach().double().cpu().numpy(),
                            replica_ids=np.asarray(model.replica_ids))
