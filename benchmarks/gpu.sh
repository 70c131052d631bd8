#!/usr/bin/env bash
# The speed figures on a GPU, in one go (about 10 minutes on an H100): the time-to-accuracy runs
# (default, speedrun, cnn, mlp_augmented) and `make bench`'s tensor loop against digitrec, into
# benchmarks/results/gpu/ (time_to_accuracy.md/.png with time to 99.5%, epoch time, GPU, CUDA and torch
# versions in the .json; bench.md). Run from the repository root on a machine with an NVIDIA GPU:
#     bash benchmarks/gpu.sh            (make bench-gpu)
# It needs only the package installed (make install, or pip install -e .) and MNIST: DIGITREC_MNIST_DIR
# or what `make data` downloaded. Nothing else in digitrec needs a GPU; this script refuses to run without one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-benchmarks/results/gpu}

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu.sh: no CUDA GPU visible to torch here; run it on a machine with one (CPU figures: make bench-time)" >&2
    exit 2
fi
mkdir -p "$OUT"
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")' | tee "$OUT/versions.txt"

# The recipes on the GPU (trainer=gpu); each run's threads setting only affects the CPU-side work.
"$PYTHON" -m benchmarks.time_to_accuracy --out "$OUT" --runs "$OUT/runs" \
    --recipe default --recipe speedrun --recipe cnn --recipe mlp_augmented trainer=gpu
# Epoch time of the tutorial's MLP: digitrec against the tensor-resident loop on the GPU.
"$PYTHON" -m benchmarks.bench --device cuda --variants tensor,digitrec --rounds 1 --scaling-epochs 0 --out "$OUT"
rm -rf "$OUT/runs"  # checkpoints: not results
echo "gpu.sh: results in $OUT"
