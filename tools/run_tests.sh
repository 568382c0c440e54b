#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this):
#
#   bash tools/run_tests.sh [pytest args]
#
# Sets up what the tests need (tools/setup_env.sh: .venv with the OpenMMLab 3D stack; tools/setup_waymo_env.sh: the
# official Waymo toolchain in .venv-waymo, used through subprocesses by the parity tests), then runs the whole suite,
# slow end-to-end tests included (`-m "not slow"` for the quick ones only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
bash tools/setup_waymo_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
