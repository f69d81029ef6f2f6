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
