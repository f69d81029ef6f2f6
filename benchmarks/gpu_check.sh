#!/usr/bin/env bash
# GPU check, runnable on a lent GPU machine as it is (its preinstalled CUDA JAX 0.11.x, no network):
#   1. the fast physics and model tests on the device;
#   2. 200 SPRING steps of the `paper` preset on the demo system (no rejected step, falling energy);
#   3. the training step of every paper_* sweep at its walkers per GPU: compiled temporary memory,
#      FLOPs and seconds per step (N = 24, 54, 96, 150);
#   4. the engine benchmark's optimiser comparison at N = 24 (on-the-fly vs explicit Jacobian).
# Meant to finish in under 8 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [PYTHON]        # default: .venv/bin/python if present, else python3
#
# Wheels to carry (pure Python or manylinux, none of them pulls JAX): folx (and its dependency
# jaxtyping if absent), netCDF4 + cftime, jsonschema + referencing + rpds-py +
# jsonschema-specifications (+ attrs if absent). On a machine with network:
#   pip download --no-deps -d shared/wheels folx jaxtyping netCDF4 cftime jsonschema referencing \
#       rpds-py jsonschema-specifications --python-version 3.XX --platform manylinux2014_x86_64 --only-binary=:all:
# (the pins of pyproject.toml; the GPU machine's Python version). This script installs them with
#   pip install --no-deps --target "$DEPS" shared/wheels/*.whl
# into a private folder put first on PYTHONPATH, so the machine's JAX is used untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 1 ]]; then PY=$1; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
unset JAX_PLATFORMS
out=benchmarks/results
mkdir -p "$out"
WHEELS=${WHEELS:-shared/wheels}
DEPS=${DEPS:-/tmp/qernel_deps}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PY" -m pip install --quiet --no-deps --no-index --target "$DEPS" "$WHEELS"/*.whl
fi
export PYTHONPATH="$PWD:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import jax, sys
print("jax", jax.__version__, "devices:", jax.devices())
if jax.default_backend() != "gpu":
    sys.exit("gpu_check: no GPU backend (a CUDA build of jaxlib is needed)")
import folx, netCDF4, jsonschema  # noqa: F401  (the carried wheels)
PYEOF
set +e  # from here on, a timed-out or failed part does not stop the later ones
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_device.txt"
timeout 90 "$PY" -m pytest -q -x -p no:cacheprovider -m "not slow" tests/physics tests/model tests/test_linalg.py \
    tests/engine/test_optim.py > "$out/gpu_tests.txt" 2>&1; tail -3 "$out/gpu_tests.txt"
timeout 180 "$PY" benchmarks/bench_paper.py --train-steps 200 --train-batch 384 --sweeps --out "$out/paper_gpu"
timeout 150 "$PY" benchmarks/bench_paper.py --train-steps 0 --steps 3 --out "$out/paper_gpu"
timeout 60 "$PY" benchmarks/bench_engine.py --only optim --optim-size 24 --optim-batch 256 --optim-chunks 0 64 \
    --steps 3 --out "$out/engine_gpu"
