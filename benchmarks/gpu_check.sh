#!/usr/bin/env bash
# GPU check (on a machine with an NVIDIA GPU and the CUDA build of jaxlib: pip install -e '.[cuda]'):
# runs the fast physics and model tests on the device, then the engine benchmark at GPU sizes,
# and records the device. Meant to finish in under 8 minutes on one H100.
#   bash benchmarks/gpu_check.sh [PYTHON]        # default PYTHON: .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
unset JAX_PLATFORMS
out=benchmarks/results
mkdir -p "$out"
"$PY" - <<'PYEOF'
import jax, sys
print("jax", jax.__version__, "devices:", jax.devices())
if jax.default_backend() != "gpu":
    sys.exit("gpu_check: no GPU backend (install the CUDA build: pip install -e '.[cuda]')")
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_device.txt"
timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider tests/physics tests/model tests/test_linalg.py 2>&1 | tail -3
# train/mcmc at N = 6, 12, 24 (batch 256); local energy up to N = 48 with the jvp loop timed too;
# compiled memory at N = 48, batch 1024, with and without max_vmap_batch_size = 128
timeout 330 "$PY" benchmarks/bench_engine.py --sizes 6 12 24 --batch 256 --local-sizes 6 12 24 48 --local-batch 256 \
    --jvp-max-n 48 --memory-size 48 --memory-batch 1024 --memory-chunk 128 --steps 5 --out "$out/engine_gpu"
