#!/usr/bin/env bash
# Create .venv with the whole OpenMMLab 3D stack (torch 2.13 CPU, mmengine, mmcv 2.1.0 WITH ops, mmdet, mmdet3d,
# spconv, numba, the waymo protobuf modules) and graddrop_mtl in editable mode.
#
#   bash tools/setup_env.sh            # idempotent: a rerun with nothing to do takes seconds
#
# mmcv 2.1.0 exists only as a source archive; it is built once (the longest step, docs/benchmarks.md) into a
# wheelhouse outside the checkout, $GRADDROP_WHEELHOUSE (default ~/.cache/graddrop-mtl/wheels), and every later run
# installs that wheel.
# Environment: PYTHON (default python3.11, else python3), VENV (default .venv), GRADDROP_WHEELHOUSE.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
WHEELHOUSE=${GRADDROP_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/graddrop-mtl/wheels}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
MMCV_VERSION=2.1.0
log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

"$PYTHON" - <<'PY' || { echo "setup_env: Python 3.11 is required (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

# A stamp of everything that decides the environment: a rerun with the same inputs only re-checks imports.
STAMP_INPUT=$(for f in tools/setup_env.sh requirements/*.txt pyproject.toml; do [[ -f $f ]] && cat "$f"; done \
  | sha256sum | cut -c1-16)
STAMP=$VENV/.graddrop-setup-stamp
PY=$VENV/bin/python

check_imports() {
  "$PY" - <<'PY'
import importlib, sys
mods = ["torch", "mmengine", "mmcv.ops", "mmdet", "mmdet3d.models", "spconv.pytorch",
        "waymo_open_dataset.dataset_pb2", "waymo_open_dataset.label_pb2", "graddrop_mtl"]
failed = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # report every failure, not just the first
        failed.append(f"{m}: {type(e).__name__}: {e}")
if failed:
    print("setup_env: these imports fail:\n  " + "\n  ".join(failed), file=sys.stderr)
    sys.exit(1)
import torch, mmcv, mmdet, mmdet3d, mmengine, numpy
print(f"setup_env: ok - torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__} (ops), "
      f"mmdet {mmdet.__version__}, mmdet3d {mmdet3d.__version__}, numpy {numpy.__version__}")
PY
}

if [[ -f $STAMP && $(cat "$STAMP") == "$STAMP_INPUT" ]] && check_imports; then
  exit 0
fi

[[ -x $PY ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$PY" -m pip install --disable-pip-version-check)
CONSTRAINTS=()
[[ -f requirements/constraints.txt ]] && CONSTRAINTS=(-c requirements/constraints.txt)

log "build tools"
"${PIP[@]}" -q -r requirements/build.txt "${CONSTRAINTS[@]}"
log "torch (CPU build; see README for CUDA)"
"${PIP[@]}" -q "torch==2.13.0" "${CONSTRAINTS[@]}"
log "numpy, mmengine"
"${PIP[@]}" -q "numpy==1.23.5" "mmengine==0.10.7" "${CONSTRAINTS[@]}"

mkdir -p "$WHEELHOUSE"
if ! compgen -G "$WHEELHOUSE/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
  log "building mmcv $MMCV_VERSION with its ops into $WHEELHOUSE (once; ~16 min on 2 cores)"
  MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps -w "$WHEELHOUSE" \
    "mmcv==$MMCV_VERSION"
fi
log "installing mmcv from $WHEELHOUSE"
"${PIP[@]}" -q --no-deps --find-links "$WHEELHOUSE" "mmcv==$MMCV_VERSION"
"${PIP[@]}" -q addict packaging Pillow pyyaml yapf opencv-python "${CONSTRAINTS[@]}"

log "mmdet, mmdet3d, spconv, numba, test tools"
"${PIP[@]}" -q --find-links "$WHEELHOUSE" -r requirements/runtime.txt -r requirements/tests.txt \
  -r requirements/bench.txt "mmcv==$MMCV_VERSION" "${CONSTRAINTS[@]}"
log "waymo protobuf modules (without TensorFlow: --no-deps)"
"${PIP[@]}" -q --no-deps "waymo-open-dataset-tf-2-12-0==1.6.7"
log "test peers without their unused dependencies (--no-deps, see requirements/tests-nodeps.txt)"
"${PIP[@]}" -q --no-deps -r requirements/tests-nodeps.txt
log "graddrop_mtl (editable)"
"${PIP[@]}" -q --no-deps -e .

check_imports
echo "$STAMP_INPUT" > "$STAMP"
log "done; activate with: source $VENV/bin/activate"
