#!/usr/bin/env bash
# On a machine with a CUDA GPU: run the demo and the test suite with training on the GPU
# (`accelerator: auto` picks it), to check that nothing assumes a CPU.
# Usage: bash scripts/gpu_check.sh [OUT]   (OUT defaults to gpu-check)
set -euo pipefail
out=$(realpath -m "${1:-gpu-check}")  # before the cd: OUT is relative to where the user stands
cd "$(dirname "$0")/.."
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to PyTorch')"
python -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

start=$(date +%s)
ewaste demo --out "$out/demo"
echo "demo: $(( $(date +%s) - start )) s"

# With pytest-xdist, split the cores between workers: each worker's torch would otherwise take
# every core, and the oversubscribed workers run past any timeout.
if python -c "import xdist" 2>/dev/null; then
    workers=4
    export OMP_NUM_THREADS=$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))
    python -m pytest -q -n "$workers" tests
else
    python -m pytest -q tests
fi
