"""The first run of the tiny sweep through the workflow (not a test): its wall and CPU time.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_workflow.py --out benchmarks/results/workflow_cpu

The budget (issue 15): at most 3 minutes on a 2-core CPU for the first run of the tiny sweep of
tests/workflow/test_end_to_end.py (two depths, a very small model, a few steps of everything:
pretrain, evaluate, observables, aggregate, plot), as a user runs it: `snakemake --cores 2` in a
fresh copy of the workflow, every job compiling its programs itself (no JAX compilation cache:
JAX_ENABLE_COMPILATION_CACHE=false, the state of a first run on a user's machine). It is checked
as CPU time (all processes of the run, from getrusage of the finished children), at most
2 cores × 180 s, so that a busy machine does not fail it; the wall time is reported beside it.

The sweep and the copy of the workflow are those of the end-to-end test (imported from
tests/workflow/test_end_to_end.py, so the two never drift apart); the test itself runs the same
sweep with the test session's compilation cache and checks the outputs, not the time.

Writes `<out>.csv` (one row: wall_s, cpu_s, budget_cpu_s, within_budget, jobs) when --out is
given; prints a summary; exits 1 when over budget (or when the run fails).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORES = 2
BUDGET_WALL_S = 180  # per core: 2 cores × 180 s of CPU


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="write <out>.csv")
    p.add_argument("--cores", type=int, default=CORES, help="snakemake --cores (the budget is for 2)")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (printed)")
    return p


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "workflow"))
    from smk import job_counts  # noqa: E402
    from test_end_to_end import tiny_sweep, workflow_copy  # noqa: E402

    tmp = Path(tempfile.mkdtemp(prefix="qernel-bench-workflow-"))
    root = workflow_copy(tmp, tiny_sweep())
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # a first run: nothing compiled to reuse
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(args.cores), "--snakefile",
           str(root / "workflow" / "Snakefile")]
    t0, cpu0 = time.time(), children_cpu()
    res = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall, cpu = time.time() - t0, children_cpu() - cpu0
    if res.returncode != 0:
        print(res.stdout[-6000:], file=sys.stderr)
        print(f"the tiny sweep failed (exit {res.returncode}); folder {root}", file=sys.stderr)
        return 1
    jobs = sum(job_counts(res.stdout).values())
    budget = CORES * BUDGET_WALL_S
    ok = cpu < budget
    print(f"tiny sweep, first run (--cores {args.cores}, no compilation cache): {wall:.0f} s wall, "
          f"{cpu:.0f} s CPU, {jobs} jobs; budget {budget} CPU-s (2 cores × {BUDGET_WALL_S} s): "
          f"{'within' if ok else 'OVER'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{args.out}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["wall_s", "cpu_s", "budget_cpu_s", "within_budget", "jobs", "cores"])
            w.writerow([f"{wall:.1f}", f"{cpu:.1f}", budget, ok, jobs, args.cores])
    if args.keep:
        print(f"run folder: {root}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
