"""Engine benchmark (not a test): training step, local energy, MCMC and memory, folx vs jvp.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_engine.py --out benchmarks/results/cpu
    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_engine.py --only train --sizes 24 --batch 256
    make bench                                   # the default run, CSVs in benchmarks/results/

Spin-polarised holes at ν = 2/3 (N = 6, 12, 24, 48 in 3×3, 3×6, 6×6, 6×12 supercells), the `tiny`
network, λ = 10.62, φ = 45°, one depth. Everything compared is measured in the same process:

- train: one jitted training step (an MCMC block of `--mcmc-steps` moves of every walker, local
  energies, per-depth gradient, SPRING update) with folx and with the jvp-of-grad loop: seconds
  per step, walkers·steps/s, compile time, folx/jvp, and the scaling exponent p of s/step ∝ N^p;
- local: the local energy alone (vmapped over `--local-batch` walkers), seconds per walker: folx
  as the engine uses it (sparsity propagation from N = 12 on), folx dense, and the jvp loop
  (skipped above `--jvp-max-n`, where it is too slow to be worth timing);
- mcmc: one MCMC block alone: walker·moves/s (each move is one network evaluation per walker);
- optim: the SPRING step without the walkers × parameters matrix (qernel.optim.sr, the training
  default) against the explicit-Jacobian step it replaced (qernel.optim.reference, Cholesky), in
  the same training step: seconds per step (interleaved) and compiled temporary memory;
- memory: XLA's compiled temporary memory (`memory_analysis().temp_size_in_bytes`, exact, not a
  sampled peak) of the training step per walker, and of the same step with the local energies
  in chunks (`max_vmap_batch_size`); plus the peak resident memory of the process
  (`getrusage`, which only grows).

Each section's rows go to `<out>_<section>.csv` with the device named; a summary goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import math
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from qernel import parallel
from qernel.hamiltonian import folx_sparsity, make_local_energy
from qernel.parallel import map_walkers
from qernel.lattice import Supercell
from qernel.mcmc import init_walkers, make_mcmc_step
from qernel.model import make_wavefunction
from qernel.optim import sr_init
from qernel.optim import reference as sr_reference
from qernel.system import System
from qernel.train import WALKER_AXES, TrainConfig, TrainState, make_train_step

SUPERCELLS = {6: (3, 3), 12: (3, 6), 24: (6, 6), 48: (6, 12)}
DEPTH = 2.0
SECTIONS = ("train", "local", "mcmc", "optim", "memory")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind}"


def setup(n: int, batch: int, model: str):
    """(system, wf, params, walkers) for N = n holes in the benchmark supercell."""
    if n not in SUPERCELLS:
        raise SystemExit(f"no benchmark supercell for N = {n}; choose from {sorted(SUPERCELLS)}")
    system = System(Supercell.diagonal(*SUPERCELLS[n]), n_up=n, n_down=0, coupling=10.62, phase=math.radians(45))
    wf = make_wavefunction(system, model, ((0.0, 4.0),))
    params = wf.init(jax.random.PRNGKey(0))
    walkers = init_walkers(jax.random.PRNGKey(1), system, jnp.full((batch, 1), DEPTH), np.zeros(batch, int), 1, 0.1)
    return system, wf, params, walkers


def interleaved_medians(calls: dict, repeats: int) -> dict:
    """Median seconds of each callable call(round) (which must block until its result is ready).

    The callables are run in turn, rounds 0 … repeats − 1 after one warm-up round (−1), so that a slow spell
    of a shared machine hits every variant alike; ratios of the medians are then fair.
    """
    for call in calls.values():
        call(-1)
    times = {name: [] for name in calls}
    for i in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(i)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def compile_train_step(n, batch, mcmc_steps, laplacian, model, chunk=0, explicit=False):
    """(one-step callable, row): the AOT-compiled training step and its compile time and temp memory.

    explicit: use the explicit-Jacobian SR step (qernel.optim.reference) instead of the default.
    """
    system, wf, params, walkers = setup(n, batch, model)
    cfg = TrainConfig(batch_size=batch, mcmc_steps=mcmc_steps, laplacian=laplacian, max_vmap_batch_size=chunk)
    mesh = parallel.make_mesh()
    is_complex = jnp.iscomplexobj(jax.eval_shape(wf.log_psi, params, jnp.zeros((n, 2)), jnp.zeros(1)))
    opt = sr_reference.from_config(cfg, wf.log_psi, 1, bool(is_complex)) if explicit else None
    holder = {"state": parallel.place(TrainState(params, sr_init(params), walkers, jnp.zeros((), jnp.int32),
                                                 jnp.zeros(1)), mesh, WALKER_AXES)}
    poison = jnp.zeros(1)
    t0 = time.perf_counter()
    compiled = jax.jit(make_train_step(system, wf, cfg, 1, bool(is_complex), mesh, optimizer=opt),
                       donate_argnums=(0,)).lower(
        holder["state"], jax.random.PRNGKey(2), poison).compile()
    compile_s = time.perf_counter() - t0
    temp = compiled.memory_analysis().temp_size_in_bytes

    def one_step(i):  # the state is donated: keep the returned one
        holder["state"], stats = compiled(holder["state"], jax.random.PRNGKey(10 + i), poison)
        jax.block_until_ready(stats)

    row = {"n_electrons": n, "batch": batch, "mcmc_steps": mcmc_steps, "max_vmap_batch_size": chunk,
           "n_params": wf.n_params(params), "compile_s": compile_s, "temp_mb": temp / 2**20,
           "temp_mb_per_walker": temp / 2**20 / batch, "peak_rss_mb": peak_rss_mb()}
    return one_step, row


def train_steps(n, batch, steps, mcmc_steps, model) -> dict:
    """Training step with folx and with the jvp loop, timed interleaved."""
    folx_step, row = compile_train_step(n, batch, mcmc_steps, "folx", model)
    jvp_step, jvp_row = compile_train_step(n, batch, mcmc_steps, "jvp", model)
    t = interleaved_medians({"folx": folx_step, "jvp": jvp_step}, steps)
    row.update(seconds_per_step=t["folx"], walker_steps_per_s=batch * mcmc_steps / t["folx"],
               seconds_per_step_jvp=t["jvp"], compile_s_jvp=jvp_row["compile_s"],
               temp_mb_jvp=jvp_row["temp_mb"], folx_over_jvp=t["folx"] / t["jvp"], peak_rss_mb=peak_rss_mb())
    return row


def optimiser_paths(n, batch, steps, mcmc_steps, model, chunk) -> dict:
    """The training step with the on-the-fly SPRING step and with the explicit-Jacobian one, timed
    interleaved, with their compiled temporary memory (both with max_vmap_batch_size = chunk)."""
    new_step, row = compile_train_step(n, batch, mcmc_steps, "folx", model, chunk=chunk)
    old_step, old_row = compile_train_step(n, batch, mcmc_steps, "folx", model, chunk=chunk, explicit=True)
    t = interleaved_medians({"new": new_step, "old": old_step}, steps)
    row.update(seconds_per_step=t["new"], seconds_per_step_explicit=t["old"], new_over_explicit=t["new"] / t["old"],
               compile_s_explicit=old_row["compile_s"], temp_mb_explicit=old_row["temp_mb"],
               temp_new_over_explicit=row["temp_mb"] / old_row["temp_mb"], peak_rss_mb=peak_rss_mb())
    return row


def local_energies(n, batch, repeats, model, with_jvp: bool) -> dict:
    """Seconds per walker of the local energy: folx as the engine uses it, folx dense, the jvp loop.

    Timed interleaved (`interleaved_medians`).
    """
    system, wf, params, walkers = setup(n, batch, model)
    x, cond = walkers.positions, walkers.cond
    variants = {"folx": ("folx", None), "folx_dense": ("folx", 0)}
    if with_jvp:
        variants["jvp"] = ("jvp", None)
    compiled, compile_s = {}, {}
    for name, (lap, sparsity) in variants.items():
        t0 = time.perf_counter()
        f = jax.jit(map_walkers(make_local_energy(system, wf.log_psi, lap, sparsity_threshold=sparsity)))
        compiled[name] = f.lower(params, x, cond).compile()
        compile_s[name] = time.perf_counter() - t0
    shifts = jax.random.uniform(jax.random.PRNGKey(5), (repeats,) + x.shape, minval=-0.1, maxval=0.1)
    times = interleaved_medians({name: (lambda i, c=c: jax.block_until_ready(c(params, x + shifts[i], cond)))
                                 for name, c in compiled.items()}, repeats)
    row = {"n_electrons": n, "batch": batch, "repeats": repeats, "folx_sparsity_threshold": folx_sparsity(n)}
    for name in variants:
        sfx = "" if name == "folx" else f"_{name.removeprefix('folx_')}"
        row[f"seconds_per_walker{sfx}"] = times[name] / batch
        row[f"compile_s{sfx}"] = compile_s[name]
        row[f"temp_mb_per_walker{sfx}"] = compiled[name].memory_analysis().temp_size_in_bytes / 2**20 / batch
    row["sparse_over_dense"] = row["seconds_per_walker"] / row["seconds_per_walker_dense"]
    row["folx_over_jvp"] = row["seconds_per_walker"] / row["seconds_per_walker_jvp"] if with_jvp else math.nan
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def mcmc_block(n, batch, repeats, mcmc_steps, model) -> dict:
    system, wf, params, walkers = setup(n, batch, model)
    compiled = jax.jit(make_mcmc_step(wf.log_psi, system, mcmc_steps)).lower(
        params, walkers, jax.random.PRNGKey(0)).compile()
    sec = interleaved_medians({"mcmc": lambda i: jax.block_until_ready(
        compiled(params, walkers, jax.random.PRNGKey(i + 1)))}, repeats)["mcmc"]
    return {"n_electrons": n, "batch": batch, "mcmc_steps": mcmc_steps, "seconds_per_block": sec,
            "walker_moves_per_s": batch * mcmc_steps / sec, "peak_rss_mb": peak_rss_mb()}


def add_scaling(rows: list[dict], key: str, name: str, section: str) -> None:
    """Fit rows[key] ∝ N^p (least squares in log-log) and store p as scaling_exponent_<name>."""
    if len(rows) < 2:
        return
    ns = [r["n_electrons"] for r in rows]
    p = float(np.polyfit(np.log(ns), np.log([r[key] for r in rows]), 1)[0])
    for r in rows:
        r[f"scaling_exponent_{name}"] = p
    say(f"{section} scaling ({name}): {key} ∝ N^{p:.2f} over N = {ns}")


def write_csv(path: str, rows: list[dict]) -> None:
    if not rows:
        return
    for row in rows:
        row["device"] = device_name()
    with open(path, "w", newline="") as f:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}", file=sys.stderr)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24], help="N for train and mcmc")
    ap.add_argument("--local-sizes", type=int, nargs="+", default=[6, 12, 24, 48], help="N for local")
    ap.add_argument("--batch", type=int, default=64, help="walkers of the train and mcmc sections")
    ap.add_argument("--local-batch", type=int, default=32)
    ap.add_argument("--local-repeats", type=int, default=9, help="rounds of the interleaved local-energy timing")
    ap.add_argument("--jvp-max-n", type=int, default=24, help="largest N at which the jvp loop is timed in local")
    ap.add_argument("--optim-size", type=int, default=24, help="N of the optim section")
    ap.add_argument("--optim-batch", type=int, default=64, help="walkers of the optim section")
    ap.add_argument("--optim-chunks", type=int, nargs="+", default=[0, 16],
                    help="max_vmap_batch_size values compared in the optim section")
    ap.add_argument("--memory-size", type=int, default=24, help="N of the memory section")
    ap.add_argument("--memory-batch", type=int, default=256)
    ap.add_argument("--memory-chunk", type=int, default=32, help="max_vmap_batch_size compared in memory")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds of train and mcmc")
    ap.add_argument("--mcmc-steps", type=int, default=10)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--out", default=None, help="CSV prefix: writes <out>_<section>.csv")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    say(f"devices: {jax.devices()}")
    results = {}

    if "train" in args.only:
        rows = []
        for n in args.sizes:
            row = train_steps(n, args.batch, args.steps, args.mcmc_steps, args.model)
            rows.append(row)
            say(f"train N={n:3d}: {row['seconds_per_step']:.3f} s/step folx, {row['seconds_per_step_jvp']:.3f} jvp "
                f"(folx/jvp {row['folx_over_jvp']:.2f}), {row['walker_steps_per_s']:.0f} walker·steps/s, "
                f"compile {row['compile_s']:.0f} s, temp {row['temp_mb']:.0f} MB")
        add_scaling(rows, "seconds_per_step", "folx", "train")
        add_scaling(rows, "seconds_per_step_jvp", "jvp", "train")
        results["train"] = rows

    if "local" in args.only:
        rows = []
        for n in args.local_sizes:
            row = local_energies(n, args.local_batch, args.local_repeats, args.model, n <= args.jvp_max_n)
            rows.append(row)
            say(f"local N={n:3d}: {1e3 * row['seconds_per_walker']:.2f} ms/walker folx (sparsity "
                f"{row['folx_sparsity_threshold']}), dense {1e3 * row['seconds_per_walker_dense']:.2f} "
                f"(sparse/dense {row['sparse_over_dense']:.2f}), jvp {1e3 * row.get('seconds_per_walker_jvp', math.nan):.2f} "
                f"(folx/jvp {row['folx_over_jvp']:.2f}); temp {row['temp_mb_per_walker']:.2f} MB/walker")
        add_scaling(rows, "seconds_per_walker", "folx", "local")
        results["local"] = rows

    if "mcmc" in args.only:
        rows = []
        for n in args.sizes:
            row = mcmc_block(n, args.batch, args.steps, args.mcmc_steps, args.model)
            rows.append(row)
            say(f"mcmc N={n:3d}: {row['walker_moves_per_s']:.0f} walker·moves/s ({row['seconds_per_block']:.3f} s "
                f"per block of {args.mcmc_steps} moves of {args.batch} walkers)")
        results["mcmc"] = rows

    if "optim" in args.only:
        rows = []
        for c in args.optim_chunks:
            row = optimiser_paths(args.optim_size, args.optim_batch, args.steps, args.mcmc_steps, args.model, c)
            rows.append(row)
            say(f"optim N={args.optim_size} batch {args.optim_batch} chunk {c}: on-the-fly {row['seconds_per_step']:.3f} "
                f"s/step, explicit {row['seconds_per_step_explicit']:.3f} (ratio {row['new_over_explicit']:.2f}); "
                f"temp {row['temp_mb']:.0f} MB vs {row['temp_mb_explicit']:.0f} MB "
                f"(ratio {row['temp_new_over_explicit']:.2f}); {row['n_params']} parameters")
        results["optim"] = rows

    if "memory" in args.only:
        rows = [compile_train_step(args.memory_size, args.memory_batch, args.mcmc_steps, "folx", args.model, chunk=c)[1]
                for c in (0, args.memory_chunk)]
        for r in rows:
            say(f"memory N={r['n_electrons']} batch {r['batch']} max_vmap_batch_size {r['max_vmap_batch_size']}: "
                f"compiled temp {r['temp_mb']:.0f} MB ({r['temp_mb_per_walker']:.2f} MB/walker)")
        say(f"memory: chunks of {args.memory_chunk} walkers need {rows[1]['temp_mb'] / rows[0]['temp_mb']:.2f}× "
            "the temporary memory of the full vmap")
        results["memory"] = rows

    if args.out:
        for name, rows in results.items():
            write_csv(f"{args.out}_{name}.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
