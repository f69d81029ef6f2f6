"""Hartree–Fock solves side by side: BLAS threads per process, the default against one.

The workflow's reference rule solves a sweep's depths in worker processes, one per core
(`qernel.reference.hartree_fock_sweep`, `--workers`), and Snakemake may run other jobs beside it.
Each process's OpenBLAS starts as many threads as the machine has cores (or as
OPENBLAS_NUM_THREADS says; Snakemake sets it to the rule's `threads`), so side by side they
oversubscribe the cores. `qernel.hartree_fock.hartree_fock` therefore runs on one BLAS thread.
This script measures why, on the demo system (6 holes, 3×3, λ = 10.62, φ = 45°; the reference's
options: 3 shells, starts searched at 2, 2 random starts plus the crystal seeds):

- one solve alone, BLAS threads = default and = 1;
- `--processes` solves side by side in spawned processes (depths 1.25, 2.5, ...), each process
  with the default BLAS threads, then each with one.

Each configuration runs the unlimited solver (`hartree_fock.__wrapped__`) under a process-wide
`threadpoolctl` limit. Prints wall seconds and writes `<out>.csv` (configuration, processes, BLAS
threads per process, wall seconds for all of them, the energies per hole in E_M to show the
solutions agree).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_hartree_fock.py --out benchmarks/results/hartree_fock_cpu
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

DEPTHS = (1.25, 2.5, 3.75, 5.0, 6.25, 7.5, 8.75, 10.0)


def _limit(threads):
    """Worker initializer: a process-wide BLAS thread limit (None: the library's default)."""
    global _LIMIT  # kept alive for the worker's life
    if threads is not None:
        from threadpoolctl import threadpool_limits

        _LIMIT = threadpool_limits(limits=threads, user_api="blas")


def _solve(depth: float) -> tuple[float, int]:
    """One reference solve at `depth` (E_M): (energy per hole, BLAS threads it ran with)."""
    from threadpoolctl import threadpool_info

    from qernel.hartree_fock import hartree_fock
    from qernel.lattice import Supercell
    from qernel.system import System

    system = System(Supercell.diagonal(3), n_up=6, n_down=0, coupling=10.62, phase=np.deg2rad(45.0))
    threads = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)
    r = hartree_fock.__wrapped__(system, depth, shells=3.0, n_starts=2, seed=0, max_iter=200, search_shells=2.0)
    return r.energy / system.n_electrons, threads


def run(processes: int, threads) -> dict:
    """`processes` solves at once (spawned processes), each under a BLAS limit of `threads`."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx, initializer=_limit,
                                                initargs=(threads,)) as pool:
        pool.submit(int, 0).result()  # processes started before the clock
        t0 = time.perf_counter()
        out = list(pool.map(_solve, DEPTHS[:processes]))
        wall = time.perf_counter() - t0
    return {"processes": processes, "blas_threads": out[0][1], "wall_s": round(wall, 2),
            "energies_per_hole": " ".join(f"{e:.6f}" for e, _ in out)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2,
                    help="solves side by side (default: the machine's cores)")
    ap.add_argument("--out", default="benchmarks/results/hartree_fock_cpu", help="CSV path without .csv")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = []
    for processes in (1, args.processes):
        for threads in (None, 1):
            row = {"configuration": f"{processes} side by side, BLAS threads {'default' if threads is None else 1}",
                   **run(processes, threads)}
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
