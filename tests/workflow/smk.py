"""Helpers of the workflow tests: run Snakemake as users do, and read its dry-run output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "workflow" / "Snakefile"
CONFIG = REPO / "config" / "config.yaml"
#: Environment variables of the SLURM profile (cleared unless a test sets them).
SLURM_ENV = ("QERNEL_SLURM_ACCOUNT", "SBATCH_ACCOUNT", "QERNEL_SLURM_PARTITION", "SBATCH_PARTITION",
             "QERNEL_SLURM_GPU_PARTITION", "QERNEL_SLURM_GPU_MODEL")


def snakemake(*args, cwd=REPO, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`snakemake ARGS` (this Python's) in `cwd`; stdout and stderr merged into .stdout."""
    full_env = {k: v for k, v in os.environ.items() if k not in SLURM_ENV}
    full_env.update(JAX_PLATFORMS="cpu", **(env or {}))
    return subprocess.run([sys.executable, "-m", "snakemake", *map(str, args)], cwd=cwd, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def in_dir(workdir, configfile=None, snakefile=SNAKEFILE) -> list[str]:
    """Arguments that run the repository's workflow in `workdir` with `configfile`."""
    args = ["--snakefile", str(snakefile), "--directory", str(workdir)]
    if configfile is not None:
        args += ["--configfile", str(configfile)]
    return args


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> number of jobs (without the total)."""
    if "Nothing to be done" in output:
        return {}
    m = re.search(r"Job stats:\s*\n\s*job\s+count\s*\n\s*-+\s+-+\s*\n(.*?)\n\s*total\s+(\d+)", output, re.S)
    assert m, f"no job stats in:\n{output[-3000:]}"
    counts = {}
    for line in m.group(1).strip().splitlines():
        rule, count = line.split()
        counts[rule] = int(count)
    assert sum(counts.values()) == int(m.group(2))
    return counts


def _value(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def dry_run_jobs(output: str) -> list[dict]:
    """Every job of a dry run: {"rule", "wildcards": {}, "threads", "resources": {}}."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", "\n" + output):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        if not m:
            continue
        job = {"rule": m.group(1), "wildcards": {}, "threads": 1, "resources": {}}
        for key in ("wildcards", "resources"):
            mm = re.search(rf"^\s+{key}: (.*)$", block, re.M)
            if mm:
                for item in mm.group(1).split(", "):
                    name, _, value = item.partition("=")
                    job[key][name] = _value(value)
        mm = re.search(r"^\s+threads: (\d+)$", block, re.M)
        if mm:
            job["threads"] = int(mm.group(1))
        jobs.append(job)
    return jobs


def write_config(path: Path, sweeps: dict, **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**top, "sweeps": sweeps}, sort_keys=False))
    return path


def small_sweep(depths=(0.0, 1.0), **changes) -> dict:
    """A small sweep (for dry runs and fake results only: no training happens with it)."""
    sweep = {
        "system": {"supercell": [[2, 0], [0, 2]], "n_up": 2, "n_down": 0, "units": "moire",
                   "coupling": 10.62, "phase_deg": 45},
        "depths": list(depths),
        "model": "tiny",
        "pretrain": {"steps": 10, "batch_size": 24},
        "evaluate": {},
        "seed": 0,
    }
    sweep.update(changes)
    return sweep


#: A very small network (the `tiny` preset made smaller): the workflow tests' real training.
TINY_MODEL = {"preset": "tiny", "d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "n_experts": 2,
              "top_k": 1, "d_ff": 16, "film_hidden": 8, "n_determinants": 1, "jastrow_hidden": 8}
#: Its depth labels.
TINY_DEPTHS = ["0.000", "6.000"]


def tiny_sweep(steps: int = 20, checkpoint_every: int = 5, energy_unit_meV: float | None = 3.3756) -> dict:
    """Two depths, a very small model, a few steps: the pipeline's plumbing, not its physics.

    The workflow tests that train for real (test_end_to_end) use this one sweep, whatever their
    steps and shown units: their jobs then compile the same JAX programs,
    and a test that follows another on the same xdist worker (tests/conftest.py GROUPS) loads
    them from the session's compilation cache instead of compiling them again."""
    system = {"supercell": [[2, 0], [0, 2]], "n_up": 2, "n_down": 0, "units": "moire", "coupling": 10.62,
              "phase_deg": 45}
    if energy_unit_meV is not None:
        system["energy_unit_meV"] = energy_unit_meV
    return {
        "system": system,
        "depths": [float(v) for v in TINY_DEPTHS],
        "model": dict(TINY_MODEL),
        "pretrain": {"steps": steps, "batch_size": 32, "pretrain_steps": 5, "burn_in": 10, "mcmc_steps": 2,
                     "checkpoint_every": checkpoint_every, "log_every": 5},
        "evaluate": {"finetune_steps": 0, "samples": 1280, "batch_size": 64, "mcmc_steps": 2, "burn_in": 20},
        "seed": 0,
    }
