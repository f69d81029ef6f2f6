"""Issue 15 in the workflow, as a user meets it (items 2, 4, 5, 6, 8's plan in test_slurm_profile):

- the whole chain of a tiny sweep named `on` (YAML reads it as true) from a checkout, a results
  folder and a virtual environment whose paths hold a space and `ü`; then edits that change
  nothing (a compute key, a default written out, an equivalent spelling) plan no pretraining and
  no evaluation, and `energy_unit_meV` (only shown) redraws the analysis only;
- sweeps named `2024`, `on`, `1e3` in dry runs;
- a --configfile merged into the workflow's config: the message says where each key comes
  from, and --replace-workflow-config replaces instead of merging.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from smk import REPO, SNAKEFILE, TINY_MODEL, dry_run_jobs, job_counts, small_sweep, snakemake, tiny_sweep, write_config

def chain_sweep() -> dict:
    """The workflow tests' tiny sweep (smk.tiny_sweep: its jobs load the programs test_end_to_end's
    compiled, this test running after those on the same worker, tests/conftest.py GROUPS), with
    energy_unit_meV and evaluate.finetune_steps left to their defaults: the edits below write
    them out."""
    sweep = tiny_sweep(steps=4, checkpoint_every=2, energy_unit_meV=None)
    del sweep["evaluate"]["finetune_steps"]
    return sweep


def odd_project(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the repository (workflow, package, environment file) at a path with a space and
    `ü`, and a virtual environment path with a space (a link to the one running the tests)."""
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


def run_in(root: Path, python: Path, *args, timeout: float = 900):
    import subprocess

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([str(python), "-m", "snakemake", *map(str, args)], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.mark.slow
def test_tiny_chain_from_paths_with_spaces_and_edits_that_change_nothing(tmp_path):
    root, python = odd_project(tmp_path)
    cfg = root / "config" / "config.yaml"
    sweep = chain_sweep()
    write_config(cfg, {"on": sweep})  # `on`: a name YAML reads as true
    text = cfg.read_text()
    assert "'on':" in text
    cfg.write_text(text.replace("'on':", "on:"))  # written unquoted, as a user would

    res = run_in(root, python, "--cores", "2")
    assert res.returncode == 0, res.stdout[-6000:]
    results = root / "results" / "on"
    assert (results / "phase_diagram.nc").stat().st_size > 0
    assert (results / "figures" / "density.png").stat().st_size > 0
    log = (results / "logs" / "pretrain.log").read_text()
    assert "sweep on from results/on/config/pretrain.yaml" in log
    import subprocess

    where = subprocess.run([str(python), "-c", "import qernel; print(qernel.__file__)"], capture_output=True, cwd=root,
                           text=True, env={**os.environ, "PYTHONPATH": str(root)}, check=True).stdout.strip()
    assert where == str(root / "qernel" / "__init__.py")  # the jobs ran the copy's package
    ckpts = results / "pretrain" / "checkpoints"
    before = sorted(p.name for p in ckpts.iterdir())

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
    assert sorted(p.name for p in ckpts.iterdir()) == before and not list(ckpts.parent.glob("checkpoints.*"))
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


NAMED = """\
sweeps:
  2024: &one
    system: {supercell: [[2, 0], [0, 2]], n_up: 2, n_down: 0, units: moire, coupling: 10.62, phase_deg: 45}
    depths: [0.0, 1.0]
    pretrain: {steps: 10, batch_size: 24}
  on: *one
  1e3: *one
"""


def test_sweep_names_yaml_reads_as_numbers_or_booleans(tmp_path):
    cfg = tmp_path / "named.yaml"
    cfg.write_text(NAMED)
    res = snakemake("-n", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", cfg,
                    "--config", "run_sweeps=[2024,on,1e3]")
    assert res.returncode == 0, res.stdout[-4000:]
    sweeps = {str(j["wildcards"]["sweep"]) for j in dry_run_jobs(res.stdout) if "sweep" in j["wildcards"]}
    assert sweeps == {"2024", "on", "1e3"}
    assert "results/on/pretrain/model.msgpack" in res.stdout
    # two names YAML reads alike: quote them
    cfg.write_text(NAMED.replace("1e3: *one", "yes: *one"))
    res = snakemake("-n", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", cfg)
    assert res.returncode != 0
    assert "invalid config: sweeps: the sweep names 'on', 'yes' are the same bool (True) to YAML: quote them" \
        in res.stdout


def test_a_merged_configfile_says_where_each_key_comes_from(tmp_path):
    """The workflow's config has `demo` in moiré units; a user's --configfile redefines `demo` in
    physical units. Snakemake merges them key by key, so `coupling` (which the user never wrote)
    stays: the message names the file of each key and the way to replace instead."""
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "config.yaml", {"demo": small_sweep(), "other": small_sweep(seed=2)})
    mine = write_config(tmp_path / "my.yaml", {"demo": {**small_sweep(), "system": {
        "supercell": [[2, 0], [0, 2]], "n_up": 2, "units": "physical", "effective_mass": 0.35, "epsilon": 5.0,
        "moire_length_nm": 8.031, "phase_deg": 45}}})
    args = ["-n", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", mine]
    res = snakemake(*args)
    assert res.returncode != 0
    line = next(line for line in res.stdout.splitlines() if "invalid config:" in line)
    assert "sweeps.demo.system.coupling: not allowed with units: physical" in line
    assert "sweeps.demo.system.coupling from config/config.yaml" in line
    assert f"sweeps.demo.system.units from {mine}" in line
    assert "--replace-workflow-config" in line
    # the documented way to replace rather than merge: only the user's file counts
    res = snakemake(*args, "--replace-workflow-config")
    assert res.returncode == 0, res.stdout[-4000:]
    assert {j["wildcards"].get("sweep") for j in dry_run_jobs(res.stdout) if j["rule"] != "all"} == {"demo"}
    snap = [j for j in dry_run_jobs(res.stdout) if j["rule"] == "pretrain"]
    assert len(snap) == 1 and job_counts(res.stdout)["evaluate"] == 2
