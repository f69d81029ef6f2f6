"""Engine benchmark (not a test): seconds per training step and walkers·steps/s, folx vs jvp.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_engine.py                 # N = 6, 12, 24
    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_engine.py --sizes 6 --batch 32 --steps 3
    make bench                                   # the default run, CSV in benchmarks/results/

For each electron count N (spin-polarised holes at ν = 2/3: N = 6, 12, 24 in 3×3, 3×6, 6×6
supercells) it builds the `tiny` network, jits one training step (MCMC block + local energies +
SPRING update) for each Laplacian method, runs `--steps` timed steps after one warm-up step, and
prints seconds per step, walkers·steps/s (walkers × MCMC moves per second), the compile time,
the folx/jvp time ratio and the peak resident memory of the process (resource.getrusage, which
only grows: read it per run, not per size). One JSON line per size goes to stdout at the end,
the fitted scaling exponent (seconds per step ∝ N^p, least squares in log-log) to stderr, and
`--csv FILE` writes the rows as CSV with the device named.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from qernel.lattice import Supercell
from qernel.mcmc import init_walkers
from qernel.model import make_wavefunction
from qernel.optim import sr_init
from qernel.system import System
from qernel.train import TrainConfig, TrainState, _place, make_train_step
from qernel import parallel

SUPERCELLS = {6: (3, 3), 12: (3, 6), 24: (6, 6)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def bench(n: int, batch: int, steps: int, mcmc_steps: int, laplacian: str, model: str) -> dict:
    n1, n2 = SUPERCELLS.get(n, (3, 3))
    system = System(Supercell.diagonal(n1, n2), n_up=n, n_down=0, coupling=10.62, phase=math.radians(45))
    depths = [2.0]
    wf = make_wavefunction(system, model, ((0.0, 4.0),))
    cfg = TrainConfig(batch_size=batch, mcmc_steps=mcmc_steps, laplacian=laplacian)
    mesh = parallel.make_mesh()
    params = wf.init(jax.random.PRNGKey(0))
    is_complex = jnp.iscomplexobj(jax.eval_shape(wf.log_psi, params, jnp.zeros((n, 2)), jnp.zeros(1)))
    group = np.zeros(batch, int)
    walkers = init_walkers(jax.random.PRNGKey(1), system, jnp.full((batch, 1), depths[0]), group, 1, 0.1)
    state = _place(TrainState(params, sr_init(params), walkers, jnp.zeros((), jnp.int32), jnp.zeros(1)), mesh)
    step = jax.jit(make_train_step(system, wf, cfg, 1, bool(is_complex), mesh), donate_argnums=(0,))
    poison = jnp.zeros(1)
    t0 = time.perf_counter()
    state, stats = step(state, jax.random.PRNGKey(2), poison)
    jax.block_until_ready(stats)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        state, stats = step(state, jax.random.PRNGKey(3 + i), poison)
    jax.block_until_ready(stats)
    per_step = (time.perf_counter() - t0) / steps
    return {"n_electrons": n, "laplacian": laplacian, "batch": batch, "mcmc_steps": mcmc_steps,
            "n_params": wf.n_params(params), "seconds_per_step": per_step,
            "walker_steps_per_s": batch * mcmc_steps / per_step, "compile_s": compile_s,
            "peak_rss_mb": peak_rss_mb()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--mcmc-steps", type=int, default=10)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--csv", default=None, help="write the rows to this CSV file")
    args = ap.parse_args(argv)
    print(f"devices: {jax.devices()}", file=sys.stderr)
    rows = []
    for n in args.sizes:
        res = {lap: bench(n, args.batch, args.steps, args.mcmc_steps, lap, args.model) for lap in ("folx", "jvp")}
        row = {**res["folx"], "seconds_per_step_jvp": res["jvp"]["seconds_per_step"],
               "compile_s_jvp": res["jvp"]["compile_s"],
               "folx_over_jvp": res["folx"]["seconds_per_step"] / res["jvp"]["seconds_per_step"],
               "peak_rss_mb": peak_rss_mb()}
        rows.append(row)
        print(f"N={n:3d}: {row['seconds_per_step']:.3f} s/step (folx), {row['seconds_per_step_jvp']:.3f} s/step (jvp), "
              f"folx/jvp {row['folx_over_jvp']:.2f}, {row['walker_steps_per_s']:.0f} walker·steps/s, "
              f"compile {row['compile_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr)
    if len(rows) > 1:
        n = np.log([r["n_electrons"] for r in rows])
        for key, name in (("seconds_per_step", "folx"), ("seconds_per_step_jvp", "jvp")):
            p = np.polyfit(n, np.log([r[key] for r in rows]), 1)[0]
            print(f"scaling ({name}): seconds per step ∝ N^{p:.2f} over N = {[r['n_electrons'] for r in rows]}",
                  file=sys.stderr)
    device = f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    for row in rows:
        row["device"] = device
        print(json.dumps(row))
    if args.csv:
        import csv
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
