"""End to end: the real workflow (real training) on a tiny sweep, through the snakemake command
line as a user runs it, from a copy of the repository whose paths are awkward (issue 15, item 5):

- the checkout, its results folder and the virtual environment's path hold a space and `ü`, and the
  sweep is named `on` (YAML reads it as true; written unquoted, as a user would: item 4);
- the run ends with phase_diagram.nc (the variables of DESIGN.md §4) and every figure; the jobs ran
  the copy's package;
- running it again does nothing; deleting one depth's outputs reruns only that depth's chain
  (and the per-sweep phase diagram and figures);
- then, on the same finished sweep (issue 15, item 2), edits that change nothing (a compute key, a
  default written out, an equivalent spelling) plan no pretraining and no evaluation, and
  `energy_unit_meV` (only shown) redraws the analysis only; a run key (the seed) is a new run;
- a pretraining job killed mid-run resumes from its checkpoint when the workflow is restarted.

One sweep is built once for all of the first four (they used to be two tests building the same
chain twice: issue 15 asks for tests that share builds).

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

import yaml

from smk import REPO, TINY_DEPTHS, TINY_MODEL, job_counts, snakemake, tiny_sweep, write_config

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


def chain_sweep() -> dict:
    """The workflow tests' tiny sweep (smk.tiny_sweep), with energy_unit_meV and
    evaluate.finetune_steps left to their defaults: the edits below write them out."""
    sweep = tiny_sweep(energy_unit_meV=None)
    del sweep["evaluate"]["finetune_steps"]
    return sweep


def odd_project(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the repository (workflow, package, profiles, environment file) at a path with a
    space and `ü`, and a virtual environment path with a space (a link to the one running the tests)."""
    base = tmp_path / "q ü"
    root = base / "repo copy"
    for name in ("workflow", "qernel", "profiles"):
        shutil.copytree(REPO / name, root / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "environment.yml", root / "environment.yml")
    venv = base / "venv dir"
    venv.symlink_to(Path(sys.prefix), target_is_directory=True)
    python = venv / "bin" / Path(sys.executable).name
    assert python.exists(), python
    return root, python


def run_in(root: Path, python: Path, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    """`snakemake ARGS` with the odd project's interpreter and package, in its root."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([str(python), "-m", "snakemake", *map(str, args)], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def write_on(cfg: Path, sweep: dict) -> None:
    """The config with the one sweep named `on`, written unquoted (YAML reads it as true)."""
    write_config(cfg, {"on": sweep})
    text = cfg.read_text()
    assert "'on':" in text
    cfg.write_text(text.replace("'on':", "on:"))


@requires_pipeline
def test_tiny_sweep_end_to_end_from_odd_paths_then_edits_that_change_nothing(tmp_path):
    xr = pytest.importorskip("xarray")
    from qernel.plots import FIGURES

    root, python = odd_project(tmp_path)
    cfg = root / "config" / "config.yaml"
    sweep = chain_sweep()
    write_on(cfg, sweep)
    res = run_in(root, python, "--cores", "2")
    assert res.returncode == 0, res.stdout[-6000:]

    results = root / "results" / "on"
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
    log = (results / "logs" / "pretrain.log").read_text()
    assert "devices:" in log and "sweep on from results/on/config/pretrain.yaml" in log
    plot_log = (results / "logs" / "plot.log").read_text()
    assert "qernel INFO: wrote" in plot_log and "fontTools" not in plot_log  # no library's INFO chatter
    where = subprocess.run([str(python), "-c", "import qernel; print(qernel.__file__)"], capture_output=True,
                           cwd=root, text=True, env={**os.environ, "PYTHONPATH": str(root)}, check=True).stdout.strip()
    assert where == str(root / "qernel" / "__init__.py")  # the jobs ran the copy's package

    # a finished workflow: nothing to do, nothing touched
    before = mtimes(results)
    res = run_in(root, python, "--cores", "2")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout, res.stdout[-3000:]
    assert mtimes(results) == before

    # deleting one depth's outputs reruns that depth's chain only
    shutil.rmtree(results / "depth" / DEPTHS[1])
    res = run_in(root, python, "--cores", "2")
    assert res.returncode == 0, res.stdout[-6000:]
    assert job_counts(res.stdout) == {"evaluate": 1, "observables": 1, "aggregate": 1, "plot": 1, "all": 1}
    after = mtimes(results)
    for path, mtime in before.items():
        if f"/depth/{DEPTHS[1]}/" not in str(path) and path.name != "phase_diagram.nc" and "figures" not in str(path):
            assert after[path] == mtime, f"{path} was rewritten"

    # edits that change nothing, on the finished sweep (issue 15, item 2)
    ckpts = results / "pretrain" / "checkpoints"
    ckpts_before = sorted(p.name for p in ckpts.iterdir())

    def plan(new_sweep) -> dict:
        cfg.write_text(yaml.safe_dump({"sweeps": {"on": new_sweep}}).replace("'on':", "on:"))
        res = run_in(root, python, "-n")
        assert res.returncode == 0, res.stdout[-4000:]
        return job_counts(res.stdout)

    # compute keys, defaults written out, equivalent spellings, resources, description: nothing reruns
    same = yaml.safe_load(yaml.safe_dump(sweep))
    same["model"] = {**TINY_MODEL, "n_layers": 1, "dtype": "float32"}  # a default written out
    same["pretrain"].update(optimizer="sr", log_every=1, max_vmap_batch_size=8, checkpoint_every=3, laplacian="jvp")
    same["evaluate"].update(max_vmap_batch_size=4, checkpoint_every=2, finetune_steps=0)
    same["depths"] = {"start": 0.0, "stop": 6.0, "num": 2}
    same["description"] = "the same run"
    same["resources"] = {"pretrain": {"runtime": 5, "mem_mb": 1000}}
    counts = plan(same)
    assert set(counts) <= {"sweep_compute_config"}, counts
    res = run_in(root, python, "--cores", "2")  # rewrites the compute snapshots only
    assert res.returncode == 0, res.stdout[-4000:]
    assert set(job_counts(res.stdout)) <= {"sweep_compute_config"}
    assert sorted(p.name for p in ckpts.iterdir()) == ckpts_before and not list(ckpts.parent.glob("checkpoints.*"))
    compute = yaml.safe_load((results / "config" / "pretrain.compute.yaml").read_text())["sweeps"]["on"]
    assert compute["pretrain"]["max_vmap_batch_size"] == 8  # the next job would use it

    # energy_unit_meV is only shown: the analysis is redrawn, nothing is retrained or re-measured
    shown = yaml.safe_load(yaml.safe_dump(same))
    shown["system"]["energy_unit_meV"] = 3.3756
    counts = plan(shown)
    assert "pretrain" not in counts and "evaluate" not in counts, counts
    assert counts["observables"] == 2 and counts["plot"] == 1

    # a run key (the seed) is a new run
    counts = plan({**shown, "seed": 1})
    assert counts["pretrain"] == 1 and counts["evaluate"] == 2


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
