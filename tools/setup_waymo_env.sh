#!/usr/bin/env bash
# Create .venv-waymo: the OFFICIAL Waymo toolchain (tensorflow-cpu 2.13.1 + waymo-open-dataset-tf-2-12-0 1.6.7
# with its own pins). It cannot share an environment with torch 2.13 (it pins setuptools 67 and TensorFlow), so
# graddrop_mtl uses it only through subprocesses (the official metric backend, the conversion parity test).
#
#   bash tools/setup_waymo_env.sh      # idempotent
#
# Environment: PYTHON (default python3.11, else python3), WAYMO_VENV (default .venv-waymo).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${WAYMO_VENV:-$ROOT/.venv-waymo}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP=$VENV/.graddrop-setup-stamp
STAMP_INPUT=$(cat tools/setup_waymo_env.sh requirements/waymo_official.txt | sha256sum | cut -c1-16)
PY=$VENV/bin/python

check() {
  PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python TF_CPP_MIN_LOG_LEVEL=3 "$PY" - <<'PY'
from waymo_open_dataset.metrics.ops import py_metrics_ops  # noqa: F401  (the official metric op)
from waymo_open_dataset.utils import frame_utils  # noqa: F401  (the official range-image conversion)
import tensorflow as tf
print(f"setup_waymo_env: ok - tensorflow {tf.__version__}, waymo_open_dataset metrics op and frame_utils import")
PY
}

if [[ -f $STAMP && $(cat "$STAMP") == "$STAMP_INPUT" ]] && check; then
  exit 0
fi
[[ -x $PY ]] || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install --disable-pip-version-check -q -r requirements/waymo_official.txt
check
echo "$STAMP_INPUT" > "$STAMP"
