#!/usr/bin/env bash
# One command for a CUDA machine: build the ops, run every CUDA test, benchmark the
# default and the tiled upfirdn2d kernel (training at batch 4 and 16, fp32 and bf16; inference
# at batch 16 and 64, eager and compiled), write runs/gpu_check/gpu_check.{json,md}.
# Budget: about 5 minutes on one H100 / H200 (scripts/gpu_check.py has the steps).
#
#   scripts/gpu_check.sh                 # on the GPU machine, from a plain checkout
#   scripts/gpu_check.sh --dry-run       # the same plan on a CPU, tiny settings
#   scripts/gpu_check.sh --fetch-wheels  # on a machine with pip access: lpips, lmdb and
#                                        # pytorch-fid wheels into .whl/ for a GPU machine
#                                        # without them (README, "GPU check")
# Any other arguments go to scripts/gpu_check.py (--budget, --out, --skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [ "${1:-}" = "--fetch-wheels" ]; then
    # CPython 3.12 on x86-64 Linux, as on the GPU machines this check was written for; set
    # WHEEL_PYTHON_VERSION for another interpreter there.
    ver="${WHEEL_PYTHON_VERSION:-3.12}"
    mkdir -p .whl
    for spec in lpips==0.1.4 lmdb pytorch-fid; do
        "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$ver" \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$spec"
    done
    ls -l .whl
    exit 0
fi

export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py "$@"
