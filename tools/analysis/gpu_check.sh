#!/usr/bin/env bash
# The CUDA path of graddrop-mtl in one go, for a machine with a GPU (the CI has none):
#   * the methods and MultiTaskOptimWrapper on cuda (every method trains; Sum == plain training; linear heads == loop),
#   * AMP float16 with the dynamic loss scaler (an overflow skips the step and halves the scale),
#   * task_grad_precision='tf32' against 'ieee',
#   * a world-size-1 NCCL process group with MMDistributedDataParallel and the statistics reducer,
#   * the CelebA net and the reduced PointPillars model per method: seconds per iteration and max_memory_allocated,
#   * the CPU test suites of the engine and the methods, which must stay green on the GPU machine too.
#
#   bash tools/analysis/gpu_check.sh                 # everything (a few minutes on one GPU)
#   bash tools/analysis/gpu_check.sh --quick         # fewer steps, smaller tensors, short benchmark
#   bash tools/analysis/gpu_check.sh --no-tests      # skip the pytest part
#   PYTHON=/path/to/python bash tools/analysis/gpu_check.sh
# The output also goes to work_dirs/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
QUICK=()
TESTS=1
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=(--quick) ;;
        --no-tests) TESTS=0 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (expected --quick, --no-tests)" >&2; exit 2 ;;
    esac
done
mkdir -p work_dirs
LOG=work_dirs/gpu_check.log
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch ' + torch.__version__ + ': CUDA is not available')"
    echo "== checks on cuda"
    "$PYTHON" tools/analysis/gpu_check.py --device cuda "${QUICK[@]}"
    if [ "$TESTS" = 1 ]; then
        echo "== CPU tests of the engine and the methods"
        "$PYTHON" -m pytest -q -p no:cacheprovider tests/methods tests/engine -m "not slow"
    fi
    echo "== gpu_check: all done"
} 2>&1 | tee "$LOG"
