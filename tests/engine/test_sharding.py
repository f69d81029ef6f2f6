"""Data parallelism: the 2-device sharded run equals the 1-device run (CPU devices in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_device_step_equals_one_device_step():
    # two CPU devices, added to the suite's XLA options (tests/conftest.py)
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, OPENBLAS_NUM_THREADS="1")
    script = Path(__file__).with_name("sharded_run.py")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report)
    assert report["steps"] == [4, 4, 4, 4]
    assert report["logged_two_devices"]
    assert report["shards"] == 2 and report["shard_rows"] == [4, 4]  # walkers split over the devices
    assert report["params_replicated"]
    # float64: the same trajectory up to the order of the reductions
    assert report["two_vs_one"] < 1e-9 * max(1.0, report["params_scale"])
    assert report["energy_two_vs_one"] < 1e-9 * max(1.0, report["energy_scale"])
    # a checkpoint written on 2 devices restores on 1 and continues the same trajectory
    assert report["moved_vs_one"] < 1e-9 * max(1.0, report["params_scale"])
    # local energies in chunks of 4 walkers (max_vmap_batch_size) on 2 devices: the same trajectory
    assert report["chunked_vs_one"] < 1e-9 * max(1.0, report["params_scale"])
    assert "batch_size" in report["bad_batch_error"] and "(devices 2) × (depths 2)" in report["bad_batch_error"]
