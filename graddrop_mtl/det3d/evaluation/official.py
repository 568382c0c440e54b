"""The ``official`` backend: waymo-open-dataset's ``detection_metrics`` op in ``.venv-waymo``, through a subprocess.

The arrays go to ``tools/waymo_official/compute_metrics.py`` as ``.npz`` files (plain arrays and a JSON config
string, never pickled objects) and the results come back as JSON. The environment is found at ``$WAYMO_VENV`` or
``<repository>/.venv-waymo`` (the variable and default of ``tools/setup_waymo_env.sh``).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .common import SETUP_COMMAND, DetectionArrays, EvalResults, WaymoEvalConfig, dumps_config, results_from_json

#: The repository root (this file is graddrop_mtl/det3d/evaluation/official.py).
REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / 'tools' / 'waymo_official' / 'compute_metrics.py'


class WaymoEnvironmentError(RuntimeError):
    """The official Waymo toolchain environment is missing or broken."""


def waymo_venv(venv: Optional[str] = None) -> Path:
    """The official environment: ``venv``, else ``$WAYMO_VENV``, else ``<repository>/.venv-waymo``."""
    return Path(venv or os.environ.get('WAYMO_VENV') or REPO_ROOT / '.venv-waymo')


def waymo_python(venv: Optional[str] = None) -> Path:
    return waymo_venv(venv) / 'bin' / 'python'


def official_available(venv: Optional[str] = None) -> bool:
    """Whether the official environment's Python and the metric script exist (what ``backend='auto'`` checks)."""
    return waymo_python(venv).exists() and SCRIPT.exists()


def _check_environment(venv: Optional[str]) -> Path:
    python = waymo_python(venv)
    if not python.exists():
        raise WaymoEnvironmentError(
            f"The official Waymo metric backend needs the waymo-open-dataset environment, but {python} does not "
            f"exist. Create it with `{SETUP_COMMAND}` (from {REPO_ROOT}), point $WAYMO_VENV at an existing one, or "
            f"use backend='native'.")
    if not SCRIPT.exists():
        raise WaymoEnvironmentError(f'{SCRIPT} is missing (the official backend runs it in {python}); '
                                    f"reinstall graddrop_mtl from its repository or use backend='native'.")
    return python


def write_case(path: Path, pred: DetectionArrays, gt: DetectionArrays, config: WaymoEvalConfig) -> None:
    """Writes one ``.npz`` input of ``compute_metrics.py``."""
    n_pred = len(pred)
    np.savez(path, config=np.array(dumps_config(config)),
             pred_bbox=pred.bbox, pred_type=pred.type, pred_frame_id=pred.frame_id,
             pred_score=pred.score if pred.score is not None else np.ones(n_pred, np.float32),
             pred_overlap_nlz=pred.overlap_nlz if pred.overlap_nlz is not None else np.zeros(n_pred, np.bool_),
             gt_bbox=gt.bbox, gt_type=gt.type, gt_frame_id=gt.frame_id,
             gt_difficulty=gt.difficulty if gt.difficulty is not None else np.ones(len(gt), np.uint8))


def evaluate_official_many(cases: Sequence[Tuple[DetectionArrays, DetectionArrays, WaymoEvalConfig]],
                           venv: Optional[str] = None, timeout: Optional[float] = None
                           ) -> Tuple[List[EvalResults], dict]:
    """Evaluates several (predictions, ground truth, config) cases in one subprocess (TensorFlow loads once).

    Returns the results of each case and the timings reported by the script (``import_seconds`` and, per case,
    the op's seconds per box type).
    """
    python = _check_environment(venv)
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION='python', TF_CPP_MIN_LOG_LEVEL='3',
               CUDA_VISIBLE_DEVICES='')
    env.pop('PYTHONPATH', None)  # the official environment must not see this project's packages
    with tempfile.TemporaryDirectory(prefix='waymo_official_') as tmp:
        inputs = []
        for k, (pred, gt, config) in enumerate(cases):
            path = Path(tmp) / f'case_{k}.npz'
            write_case(path, pred, gt, config)
            inputs.append(str(path))
        output = Path(tmp) / 'results.json'
        proc = subprocess.run([str(python), str(SCRIPT), *inputs, '--output', str(output)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not output.exists():
            tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
            raise WaymoEnvironmentError(
                f'{SCRIPT.name} failed in {python} (exit code {proc.returncode}); if the environment is broken, '
                f'rebuild it with `{SETUP_COMMAND}`. Its output ended with:\n{tail}')
        data = json.loads(output.read_text())
    results = [results_from_json(case['results']) for case in data['cases']]
    timing = dict(import_seconds=data['import_seconds'], cases=[case['seconds'] for case in data['cases']])
    return results, timing


def evaluate_official(pred: DetectionArrays, gt: DetectionArrays, config: WaymoEvalConfig,
                      venv: Optional[str] = None) -> EvalResults:
    """AP/APH of one set of predictions and ground truth with the official op."""
    results, _ = evaluate_official_many([(pred, gt, config)], venv=venv)
    return results[0]
