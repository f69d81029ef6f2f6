"""Hartree–Fock solves side by side: BLAS threads per process, the default against one.

The workflow's reference rule solves a sweep's depths in worker processes, one per core
(`qernel.reference.hartree_fock_sweep`, `--workers`), and Snakemake may run other jobs beside it.
Each process's OpenBLAS starts as many threads as the machine has cores (or as
OPENBLAS_NUM_THREADS says; Snakemake sets it to the rule's `threads`), so side by side they
oversubscribe the cores. `qernel.hartree_fock.hartree_fock` therefore runs on one BLAS thread.
This script measures why, on the demo system (6 holes, 3×3, λ = 10.62, φ = 45°; the reference's
options: 3 shells, starts searched at 2, 2 random starts plus the crystal seeds):

- one solve alone, and `--processes` solves side by side (depths 1.25, 2.5, ...), each in its own
  Python process;
- each process solving with the library's default BLAS threads (`hartree_fock.__wrapped__`, the
  solver without its limit) and with the solver as it is (one thread).

Prints wall seconds (from starting the processes until the last one ends, imports included) and
writes `<out>.csv` (configuration, processes, BLAS threads seen inside the solve, wall seconds, the
energies per hole in E_M to show the solutions agree).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_hartree_fock.py --out benchmarks/results/hartree_fock_cpu
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEPTHS = (1.25, 2.5, 3.75, 5.0, 6.25, 7.5, 8.75, 10.0)


def solve(depth: float, limited: bool) -> dict:
    """One reference solve at `depth` (E_M): energy per hole and the BLAS threads inside the solve.
    JAX's CPU backend is started first, as in every `qernel` job (its thread pool is part of what
    the cores are shared with)."""
    import jax
    import numpy as np
    from threadpoolctl import threadpool_info

    from qernel import hartree_fock as hf
    from qernel.lattice import Supercell
    from qernel.system import System

    jax.devices()
    seen = []
    original = hf.HartreeFock.solve

    def recording(self, *args, **kwargs):
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return original(self, *args, **kwargs)

    hf.HartreeFock.solve = recording
    system = System(Supercell.diagonal(3), n_up=6, n_down=0, coupling=10.62, phase=np.deg2rad(45.0))
    run = hf.hartree_fock if limited else hf.hartree_fock.__wrapped__
    r = run(system, depth, shells=3.0, n_starts=2, seed=0, max_iter=200, search_shells=2.0)
    return {"energy_per_hole": r.energy / system.n_electrons, "blas_threads": max(seen)}


def run(processes: int, limited: bool) -> dict:
    """`processes` solves at once, each in a new Python process; wall seconds until the last ends."""
    cmd = [sys.executable, __file__, "--solve"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd + [str(v)] + ([] if limited else ["--unlimited"]), stdout=subprocess.PIPE, text=True)
             for v in DEPTHS[:processes]]
    out = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit("a solve failed")
    return {"processes": processes, "blas_threads": max(o["blas_threads"] for o in out), "wall_s": round(wall, 2),
            "energies_per_hole": " ".join(f"{o['energy_per_hole']:.6f}" for o in out)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2,
                    help="solves side by side (default: the machine's cores)")
    ap.add_argument("--out", default="benchmarks/results/hartree_fock_cpu", help="CSV path without .csv")
    ap.add_argument("--solve", type=float, help=argparse.SUPPRESS)  # one solve (a worker of `run`)
    ap.add_argument("--unlimited", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.solve is not None:
        print(json.dumps(solve(args.solve, limited=not args.unlimited)))
        return
    rows = []
    for processes in (1, args.processes):
        for limited in (False, True):
            row = {"configuration": f"{processes} side by side, BLAS threads {'1 (the solver)' if limited else 'default'}",
                   **run(processes, limited)}
            print(row, flush=True)
            rows.append(row)
    path = Path(args.out).with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
