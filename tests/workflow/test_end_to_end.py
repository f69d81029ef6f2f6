"""End to end: the real workflow (real training) on a tiny sweep in a temporary copy of the
workflow, through the snakemake command line as a user runs it.

- the run ends with phase_diagram.nc (the variables of DESIGN.md §4) and every figure;
- running it again does nothing; deleting one depth's outputs reruns only that depth's chain
  (and the per-sweep phase diagram and figures);
- a pretraining job killed mid-run resumes from its checkpoint when the workflow is restarted.

The budget of a first run (at most 3 minutes on a 2-core CPU for the tiny sweep, smk.tiny_sweep, every job
compiling its programs itself) is a speed measurement: it is checked on demand by
benchmarks/bench_workflow.py (benchmarks/README.md), which runs this sweep with no compilation
cache. The tests here use the test session's JAX compilation cache (tests/conftest.py), which
changes no result, only compile time.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smk import REPO, TINY_DEPTHS, job_counts, snakemake, tiny_sweep, write_config

pytestmark = pytest.mark.slow

#: The modules the workflow's jobs import (each stage of the pipeline).
STAGES = {"qernel.model": "make_wavefunction", "qernel.train": "run_training", "qernel.evaluate": "evaluate_depth",
          "qernel.observables": "compute_observables", "qernel.aggregate": "aggregate", "qernel.plots": "plot_all"}


def _missing_stages() -> list[str]:
    missing = []
    for module, name in STAGES.items():
        try:
            if not hasattr(importlib.import_module(module), name):
                missing.append(f"{module}.{name}")
        except ModuleNotFoundError:
            missing.append(module)
    return missing


_MISSING = _missing_stages()
requires_pipeline = pytest.mark.skipif(
    bool(_MISSING), reason=f"the pipeline is not complete yet: missing {', '.join(_MISSING)}")
_MISSING_TRAINING = [m for m in _MISSING if m.startswith(("qernel.model", "qernel.train"))]
requires_training = pytest.mark.skipif(
    bool(_MISSING_TRAINING), reason=f"the engine is not there yet: missing {', '.join(_MISSING_TRAINING)}")

DEPTHS = TINY_DEPTHS


def workflow_copy(tmp_path: Path, sweep: dict) -> Path:
    """A temporary copy of the workflow (Snakefile, rules, schema, the rules' environment file)
    with a config of one sweep."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "workflow", root / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "environment.yml", root / "environment.yml")  # the rules' conda: environment
    write_config(root / "config" / "config.yaml", {"tiny": sweep})
    return root


def run(root: Path, *args, timeout: float = 600, env: dict | None = None):
    return snakemake("--cores", "2", "--snakefile", root / "workflow" / "Snakefile", *args, cwd=root,
                     timeout=timeout, env=env)


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "/logs/" not in str(p)
            and "/benchmarks/" not in str(p)}


@requires_pipeline
def test_tiny_sweep_end_to_end(tmp_path):
    xr = pytest.importorskip("xarray")
    from qernel.plots import FIGURES

    root = workflow_copy(tmp_path, tiny_sweep())
    res = run(root)
    assert res.returncode == 0, res.stdout[-6000:]

    results = root / "results" / "tiny"
    with xr.open_dataset(results / "phase_diagram.nc") as ds:
        assert ds.sizes["V"] == len(DEPTHS)
        for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy"):
            assert ds[name].dims == ("V",) and f"{name}_stderr" in ds
        assert set(ds["density"].dims) == {"V", "x", "y"}
        assert "V" in ds["structure_factor"].dims and "kx" in ds.coords and "ky" in ds.coords
        assert any("transition" in name for name in list(ds.attrs) + list(ds.variables))
        for attr in ("units", "energy_unit_meV", "config_hash", "qernel_version", "git_commit"):
            assert attr in ds.attrs
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{name}.{ext}").stat().st_size > 0
    for label in DEPTHS:
        assert (results / "depth" / label / "evaluation.nc").is_file()
        assert (results / "depth" / label / "observables.nc").is_file()
    assert "devices:" in (results / "logs" / "pretrain.log").read_text()

    # a finished workflow: nothing to do, nothing touched
    before = mtimes(results)
    res = run(root)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout, res.stdout[-3000:]
    assert mtimes(results) == before

    # deleting one depth's outputs reruns that depth's chain only
    shutil.rmtree(results / "depth" / DEPTHS[1])
    res = run(root)
    assert res.returncode == 0, res.stdout[-6000:]
    assert job_counts(res.stdout) == {"evaluate": 1, "observables": 1, "aggregate": 1, "plot": 1, "all": 1}
    after = mtimes(results)
    for path, mtime in before.items():
        if f"/depth/{DEPTHS[1]}/" not in str(path) and path.name != "phase_diagram.nc" and "figures" not in str(path):
            assert after[path] == mtime, f"{path} was rewritten"


@requires_training
def test_killed_pretraining_resumes_from_its_checkpoint(tmp_path):
    root = workflow_copy(tmp_path, tiny_sweep(steps=100, checkpoint_every=3))
    target = "results/tiny/pretrain/model.msgpack"
    ckpts = root / "results" / "tiny" / "pretrain" / "checkpoints"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", str(root / "workflow" / "Snakefile"),
           target]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(list(ckpts.glob("ckpt_*"))) < 2:
            time.sleep(0.5)
        assert proc.poll() is None, "the pretraining finished before it could be killed: raise `steps`"
        assert len(list(ckpts.glob("ckpt_*"))) >= 2, "no checkpoint within 300 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a node failure or a hard time limit
        proc.wait()
    kept = sorted(p.name for p in ckpts.glob("ckpt_*"))
    assert not (root / target).exists()

    # restart: unlock (the killed run left its lock), rerun the incomplete job
    assert run(root, "--unlock").returncode == 0
    res = run(root, target, "--rerun-incomplete")
    assert res.returncode == 0, res.stdout[-6000:]
    log = (root / "results" / "tiny" / "pretrain" / "train.log").read_text()
    m = re.search(r"resumed from (ckpt_\S+) at step (\d+)", log)
    assert m, log[-3000:]
    assert m.group(1) in kept and int(m.group(2)) > 0
    assert (root / target).is_file()
